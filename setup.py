"""Build the io_uring ring extension where the platform has io_uring."""

import sys

from setuptools import setup

# The ring is Linux-only; elsewhere trio_aio installs as pure Python.
cffi_modules = ["trio_aio/_ring/_build.py:ffibuilder"] if sys.platform == "linux" else []

setup(cffi_modules=cffi_modules)
