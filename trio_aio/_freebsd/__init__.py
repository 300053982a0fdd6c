"""Everything FreeBSD: POSIX AIO control blocks completed on trio's kqueue.

This package is **trio-only**, and the declared exception to the rule of
``trio_aio/_backends/_base.py`` that nothing above ``trio_aio/_loops/`` knows
which event loop runs: FreeBSD posts AIO completions to a kqueue, and of the
two loops only trio waits on a kqueue of its own (asyncio's selector has no
``EVFILT_AIO`` filter).  So the modules here use trio directly, and under
asyncio a posix_aio file does what the thread backend does (it holds a
thread-backend file for that, see ``_backend.py``).  None of them imports
trio when it is imported (only once a trio task uses them), so that an
asyncio program on FreeBSD never imports trio.

* ``_kqueue.py``: the only module that calls trio's kqueue API (FreeBSD).
* ``_aio.py``: :class:`trio_aio.lowlevel.Aio`, waiting for AIO control blocks
  on that kqueue (public, through :mod:`trio_aio.lowlevel`).
* ``_aiocb.py``: FreeBSD's control blocks (cffi ABI mode), lists, results;
  nothing of trio.
* ``_backend.py``: the ``posix_aio`` backend: file operations as AIO jobs,
  with a thread-backend file for everything else.
"""
