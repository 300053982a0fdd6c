"""Build the io_uring ring extension where the platform has io_uring, if it can be built.

The extension is optional: without a C compiler or the kernel's headers the
build warns in one line and installs trio_aio without it, and trio_aio then
runs on its thread backend (``trio_aio.available_backends()`` says why, and
how to get io_uring).
"""

import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The ring is Linux-only; elsewhere trio_aio installs as pure Python.
cffi_modules = ["trio_aio/_ring/_build.py:ffibuilder"] if sys.platform == "linux" else []

HOW_TO_GET_IO_URING = (
    "install a C compiler and the kernel's headers (Debian/Ubuntu: apt install gcc "
    "linux-libc-dev; Fedora: dnf install gcc kernel-headers; Alpine: apk add gcc musl-dev "
    "linux-headers), then reinstall trio_aio (pip install --force-reinstall --no-binary "
    "trio_aio trio_aio)"
)  # (the words of trio_aio/_ring/_ring.py's HOW_TO_GET_IO_URING: setup.py cannot import it)


class OptionalBuildExt(build_ext):
    """``build_ext`` whose failure leaves the extension out instead of failing the install."""

    def run(self) -> None:
        """Build, or warn and leave the extension out."""
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError, ...)
            self._skipped(exc)

    def build_extension(self, ext: object) -> None:
        """Build one extension, or warn and leave it out."""
        try:
            super().build_extension(ext)  # type: ignore[arg-type]
        except Exception as exc:  # CompileError, LinkError, a missing header, ...
            self._skipped(exc)

    @staticmethod
    def _skipped(exc: Exception) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"WARNING: trio_aio's io_uring extension was not built ({first}); trio_aio will "
            f"use its thread backend. To get io_uring: {HOW_TO_GET_IO_URING}.",
            file=sys.stderr,
        )


setup(
    cffi_modules=cffi_modules,
    cmdclass={"build_ext": OptionalBuildExt},
    # The extension uses the limited API (``_build.py``): the wheel is abi3.
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if cffi_modules else {},
)
