"""Every pure check the file layer makes before anything is submitted.

Each function here looks only at its arguments: no I/O, no event loop, no
file state beyond what it is given.  It returns the checked (and converted)
value, or raises the exception built-in ``open``, ``io.FileIO`` or ``os``
would raise for the same mistake, with the same class and, where
``tests/test_checks.py`` says so, the same message.  ``_file.py`` and
``streams.py`` call these and nothing else to check arguments, so each rule
is written once, and ``tests/test_checks.py`` tests each one once, with no
backend and no event loop.
"""

from __future__ import annotations

import io
import mmap
import operator
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import cffi

# Offsets and sizes are loff_t in the kernel: below 2**63.
LIMIT = 1 << 63
# What C's int holds (an fd; seek's whence, as io checks it).
INT_MAX = (1 << 31) - 1
INT_MIN = -(1 << 31)

# Every fd trio_aio opens is close-on-exec (O_NOINHERIT on Windows) and binary.
OPEN_FLAGS = (
    getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_BINARY", 0)
)


def _type_name(value: object) -> str:
    """A type's name as CPython's argument parsing says it (``None``, not ``NoneType``)."""
    return "None" if value is None else type(value).__name__


# -- integers -------------------------------------------------------------------


def check_int(value: object, what: str) -> int:
    """``value`` as an int, accepting what ``operator.index`` accepts (bool, ``__index__``).

    Raises:
      TypeError: ``value`` is not an integer (a float, a str, None...).

    """
    if type(value) is int:
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}") from None


def check_nonnegative(value: object, what: str) -> int:
    """``value`` as an int in ``[0, 2**63)``: an offset or a size (the kernel's ``loff_t``).

    Raises:
      TypeError: as :func:`check_int`.
      ValueError: negative, or 2**63 or more.

    """
    if type(value) is int and 0 <= value < LIMIT:
        return value
    value = check_int(value, what)
    if value < 0:
        raise ValueError(f"{what} must be non-negative, got {value}")
    if value >= LIMIT:
        raise ValueError(f"{what} must be below 2**63, got {value}")
    return value


def check_seek(offset: object, whence: object) -> tuple[int, int]:
    """``seek``'s arguments: an offset within ±2**63 and a whence that fits a C int.

    Which whence values the kernel knows is the kernel's to say (``EINVAL``,
    as ``io.FileIO.seek`` reports it).

    Raises:
      TypeError: a non-integer offset or whence (as ``io.FileIO.seek``).
      ValueError: the offset is outside ±2**63 (``io.FileIO.seek``: ``OverflowError``).
      OverflowError: whence does not fit a C int, with ``io.FileIO.seek``'s message.

    """
    # In io.FileIO.seek's order: whence (a C int) first, then the offset.
    whence = check_int(whence, "whence")
    if not INT_MIN <= whence <= INT_MAX:
        raise OverflowError("Python int too large to convert to C int")  # as io's seek
    offset = check_int(offset, "offset")
    if not -LIMIT <= offset < LIMIT:
        raise ValueError(f"offset must be within ±2**63, got {offset}")
    return offset, whence


def check_read_size(size: object) -> int:
    """``read``'s size: any integer (negative: everything to the end of the file).

    Raises:
      TypeError: as :func:`check_int`.

    """
    return check_int(size, "size")


def check_truncate_size(size: object) -> int | None:
    """``truncate``'s size: None (the current position) or an offset.

    Raises:
      TypeError, ValueError: as :func:`check_nonnegative`.

    """
    return None if size is None else check_nonnegative(size, "size")


def check_allocate(offset: object, length: object) -> tuple[int, int]:
    """``allocate``'s range: an offset, and a positive length (``posix_fallocate``'s rule).

    Raises:
      TypeError: as :func:`check_int`.
      ValueError: a negative or too large offset or length, or a length of 0.

    """
    offset = check_nonnegative(offset, "offset")
    length = check_nonnegative(length, "length")
    if length == 0:
        raise ValueError(f"length must be positive, got {length}")
    return offset, length


def check_start(start: object) -> int:
    """``FileReadStream.from_path``'s start offset.

    Raises:
      TypeError: as :func:`check_int`.
      ValueError: ``start`` is negative.

    """
    start = check_int(start, "start")
    if start < 0:
        raise ValueError(f"start must be non-negative, got {start}")
    return start


def check_max_bytes(max_bytes: object) -> int:
    """``FileReadStream.receive``'s ``max_bytes``: a positive integer (anyio's rule).

    Raises:
      TypeError: as :func:`check_int`.
      ValueError: ``max_bytes`` is less than 1, with anyio's message.

    """
    max_bytes = check_int(max_bytes, "max_bytes")
    if max_bytes < 1:
        raise ValueError("max_bytes must be a positive integer")
    return max_bytes


# -- buffers --------------------------------------------------------------------


def view(obj: object, writable: bool) -> memoryview:
    """A flat byte view of ``obj`` (any C-contiguous buffer, of any item format).

    Raises:
      TypeError: ``obj`` is not a buffer, or is read-only where a writable
        one is needed.
      ValueError: the buffer is not C-contiguous.

    """
    kind = "a writable bytes-like object" if writable else "a bytes-like object"
    try:
        result = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{kind} is required, not {type(obj).__name__!r}") from None
    if writable and result.readonly:
        raise TypeError(f"{kind} is required, not a read-only {type(obj).__name__!r}")
    if not result.c_contiguous:
        raise ValueError(f"the {'buffer' if writable else 'data'} must be C-contiguous")
    return result.cast("B") if result.format != "B" or result.ndim != 1 else result


def writable_view(buffer: object) -> memoryview:
    """What ``readinto`` fills: a flat view of a writable buffer (see :func:`view`)."""
    return view(buffer, writable=True)


def readable_view(data: object) -> memoryview:
    """What ``write`` sends: a flat view of a buffer, never a str (see :func:`view`).

    Raises:
      TypeError: ``data`` is a str (the file is binary), or not a buffer.
      ValueError: as :func:`view`.

    """
    if isinstance(data, str):
        raise TypeError("a bytes-like object is required, not 'str' (the file is binary)")
    return view(data, writable=False)


def views_of(obj: object, writable: bool) -> memoryview | list[memoryview]:
    """One flat view, or a list of them for a list or tuple of buffers (``preadv``/``pwritev``)."""
    one = writable_view if writable else readable_view
    if isinstance(obj, (list, tuple)):
        return [one(item) for item in obj]
    return one(obj)


# -- batches --------------------------------------------------------------------


def size_of(size: object, i: int) -> int:
    """A ``read_many`` element's size (element ``i``)."""
    return check_nonnegative(size, f"element {i}'s size")


def writable_of(buffer: object, i: int) -> memoryview:
    """A ``readinto_many`` element's buffer (element ``i``)."""
    return writable_view(buffer)


def readable_of(data: object, i: int) -> memoryview:
    """A ``write_many`` element's data (element ``i``)."""
    return readable_view(data)


def batch(
    items: Iterable[tuple[int, Any]],
    method: str,
    shape: str,
    convert: Callable[[object, int], Any],
) -> list[tuple[Any, int]]:
    """Check every element of a batch: ``[(converted, offset), ...]``.

    ``items`` holds ``(offset, thing)`` pairs; ``convert(thing, i)`` checks
    element ``i``'s size or buffer (:func:`size_of`, :func:`writable_of`,
    :func:`readable_of`). The whole batch is checked before any of it is
    submitted.

    Raises:
      TypeError: ``items`` is a str or buffer, or not iterable; an element is
        not a pair; or as ``convert`` and :func:`check_nonnegative`.
      ValueError: as ``convert`` and :func:`check_nonnegative`.

    """
    if isinstance(items, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"{method}() takes an iterable of {shape} pairs")
    checked: list[tuple[Any, int]] = []
    append = checked.append
    sizes = convert is size_of
    for i, item in enumerate(items):
        if sizes and type(item) is tuple and len(item) == 2:  # the common case, fast
            offset, thing = item
            if (
                type(offset) is int
                and type(thing) is int
                and 0 <= offset < LIMIT
                and 0 <= thing < LIMIT
            ):
                append((thing, offset))
                continue
        try:
            offset, thing = item
        except (TypeError, ValueError):
            raise TypeError(
                f"{method}() element {i} must be an {shape} pair, not {item!r:.40}"
            ) from None
        append((convert(thing, i), check_nonnegative(offset, f"element {i}'s offset")))
    return checked


# -- direct I/O -----------------------------------------------------------------

_FFI = cffi.FFI()  # ABI mode, no compiled module: buffer addresses on every platform


def address(buffer: memoryview) -> int:
    """The address of a buffer's first byte."""
    return int(_FFI.cast("uintptr_t", _FFI.from_buffer(buffer)))


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (positive)."""
    return -(-n // multiple) * multiple


def check_direct(
    buffers: memoryview | Sequence[memoryview],
    offset: int,
    alignment: tuple[int, int],
    name: object,
) -> None:
    """Refuse a direct-I/O transfer that the kernel would refuse (``EINVAL``) for misalignment.

    ``alignment`` is the file's (memory, offset) alignment
    (:attr:`AsyncFile.direct_alignment`); ``name`` the file's, for the message.

    Raises:
      ValueError: the offset, a buffer's size or a buffer's address is misaligned.

    """
    mem, align = alignment
    problem = None
    if offset % align:
        problem = f"offset {offset}"
    for one in [buffers] if type(buffers) is memoryview else buffers:
        if len(one) % align:
            problem = f"a buffer of {len(one)} bytes"
        elif address(one) % mem:
            problem = f"a buffer at an address that is not a multiple of {mem}"
    if problem is not None:
        raise ValueError(
            f"direct I/O on {name!r} needs offsets and sizes that are multiples "
            f"of {align} bytes and buffers aligned to {mem} bytes "
            f"(trio_aio.aligned_buffer() makes one); got {problem}"
        )


def check_aligned_buffer(size: object, alignment: object) -> tuple[int, int]:
    """``aligned_buffer``'s arguments: a positive size, an alignment dividing the page size.

    Raises:
      TypeError: as :func:`check_int`.
      ValueError: ``size`` is not positive, or ``alignment`` does not divide a page.

    """
    size = check_int(size, "size")
    alignment = check_int(alignment, "alignment")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if alignment < 0 or alignment > mmap.PAGESIZE or (alignment and mmap.PAGESIZE % alignment):
        raise ValueError(
            f"alignment must divide the page size ({mmap.PAGESIZE} bytes), got {alignment}"
        )
    return size, alignment


# -- opening --------------------------------------------------------------------


_TEXT_MODE = (
    "trio_aio.open_file() supports binary modes only for now (mode {!r} is a text mode); "
    "add 'b', for example 'rb' or 'wb', and decode the bytes yourself. Text modes come in "
    "a later release."
)


def check_str_argument(value: object, what: str, none: bool = False) -> str | None:
    """An ``open_file`` argument that must be a str (or None, if ``none``), as ``open`` checks it.

    These are the checks of ``open``'s argument parsing, with its messages
    (naming ``open_file()`` rather than ``open()``).

    Raises:
      TypeError: not a str (nor None, if allowed).
      UnicodeEncodeError: the str holds a lone surrogate (it has no UTF-8 form).
      ValueError: the str holds a NUL character.

    """
    if value is None and none:
        return None
    if not isinstance(value, str):
        kind = "str or None" if none else "str"
        raise TypeError(f"open_file() argument {what!r} must be {kind}, not {_type_name(value)}")
    value.encode("utf-8")  # raises UnicodeEncodeError for a lone surrogate, as open does
    if "\0" in value:
        raise ValueError("embedded null character")
    return value


def check_mode_letters(mode: str) -> None:
    """The letters of an ``open`` mode: what built-in ``open`` checks first, with its messages.

    Each of ``rwxab+t`` at most once, not both ``t`` and ``b``, and at most
    one of ``rwxa`` (that there is one is checked later, see
    :func:`check_mode_kind`, as ``io.FileIO`` does). ``U``, which Python
    3.10 still accepted with a warning, is refused as 3.11 refuses it.

    Raises:
      ValueError: with ``open``'s message.

    """
    if len(set(mode)) != len(mode) or not set(mode) <= set("rwxab+t"):
        raise ValueError(f"invalid mode: '{mode}'")
    if "t" in mode and "b" in mode:
        raise ValueError("can't have text and binary mode at once")
    if sum(letter in mode for letter in "rwxa") > 1:
        raise ValueError("must have exactly one of create/read/write/append mode")


def check_mode_kind(mode: str) -> None:
    """That a mode (its letters checked) has one of ``rwxa``, as ``io.FileIO`` checks it.

    Raises:
      ValueError: with ``io.FileIO``'s message.

    """
    if not any(letter in mode for letter in "rwxa"):
        raise ValueError(
            "Must have exactly one of create/read/write/append mode and at most one plus"
        )


def parse_mode(mode: object) -> tuple[int, str]:
    """Return (open flags, normalised mode), as built-in open would compute them.

    The flags are the ones ``io.FileIO`` passes to an ``opener`` (with
    ``O_CLOEXEC``); the normalised mode is ``io.FileIO.mode``.

    Raises:
      TypeError, UnicodeEncodeError, ValueError: what ``open`` raises for
        the mode, with its messages; ValueError for a text mode ``open``
        would accept (binary modes only, for now).

    """
    check_str_argument(mode, "mode")
    assert isinstance(mode, str)
    check_mode_letters(mode)
    check_mode_kind(mode)
    return _binary_mode(mode)


def _binary_mode(mode: str) -> tuple[int, str]:
    """(flags, normalised mode) of a mode whose letters and kind are checked."""
    if "b" not in mode:
        raise ValueError(_TEXT_MODE.format(mode))
    if "r" in mode:
        flags, normal = os.O_RDONLY, "rb"
    elif "w" in mode:
        flags, normal = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "wb"
    elif "a" in mode:
        flags, normal = os.O_WRONLY | os.O_CREAT | os.O_APPEND, "ab"
    else:
        flags, normal = os.O_WRONLY | os.O_CREAT | os.O_EXCL, "xb"
    if "+" in mode:
        flags = (flags & ~(os.O_WRONLY | os.O_RDONLY)) | os.O_RDWR
        normal = "rb+" if normal in ("rb", "wb") else normal + "+"
    return flags | OPEN_FLAGS, normal


class OpenArguments(NamedTuple):
    """What :func:`check_open_arguments` found: how to open, and what."""

    flags: int
    """The ``open(2)`` flags (with ``O_CLOEXEC``, and ``O_DIRECT`` if asked for)."""
    mode: str
    """The mode, normalised as ``io.FileIO.mode`` is."""
    fd: int | None
    """The fd to wrap, or None to open ``path``."""
    name: object
    """The file's name: the path as given (``str`` or ``bytes``), or the fd."""
    path: bytes | None
    """The path to open, encoded, or None for an fd."""


def check_open_arguments(
    file: object,
    mode: object,
    buffering: object,
    encoding: object,
    errors: object,
    newline: object,
    closefd: object,
    opener: object,
    direct: object,
) -> OpenArguments:
    """Check every argument of :func:`trio_aio.open_file`, before anything is opened.

    The checks built-in ``open`` makes come in its order, with its exception
    classes and messages (``tests/test_checks.py`` compares them): its
    argument parsing (mode, buffering, encoding, errors, newline), then the
    file (``os.fspath``), the mode's letters, what a binary mode does not
    take, then ``io.FileIO``'s (the fd or the path, the mode's kind,
    ``closefd``). Then trio_aio's own: binary modes only, ``direct``, and
    a callable ``opener``. Where trio_aio differs from ``open`` on purpose:
    a bool is not an fd, a float is not a path or an fd (``open``:
    "integer argument expected, got float"), a ``buffering`` that is not an
    integer is refused with a message of trio_aio's (any integer is
    accepted, and ignored), and an ``opener`` that is not callable is
    refused even with an fd.

    Raises:
      TypeError: ``mode``, ``encoding``, ``errors`` or ``newline`` of the
        wrong type; ``buffering`` is not an integer; ``file`` is not a path
        or an fd; ``opener`` is not callable.
      ValueError: a bad or text mode; an encoding, errors or newline
        argument (binary mode takes none); a negative fd; a NUL in a path
        or a str argument; ``closefd=False`` with a path; ``direct`` where
        ``O_DIRECT`` does not exist, or with an fd.
      UnicodeEncodeError: a lone surrogate in a str argument or a path.

    """
    # open()'s argument parsing, in the order of its parameters.
    check_str_argument(mode, "mode")
    assert isinstance(mode, str)
    check_int(buffering, "buffering")
    for value, what in ((encoding, "encoding"), (errors, "errors"), (newline, "newline")):
        check_str_argument(value, what, none=True)
    # open() itself: the file's type, the mode's letters, what binary mode takes.
    fd: int | None = None
    if isinstance(file, bool):
        raise TypeError("expected str, bytes or os.PathLike object, not bool")
    if isinstance(file, int):
        fd = file
        name: object = file
    else:
        name = os.fspath(file)  # type: ignore[call-overload]
    check_mode_letters(mode)
    if "b" in mode:
        for value, what in (
            (encoding, "an encoding"),
            (errors, "an errors"),
            (newline, "a newline"),
        ):
            if value is not None:
                raise ValueError(f"binary mode doesn't take {what} argument")
    # io.FileIO: the fd or the path, the mode's kind, closefd.
    path: bytes | None = None
    if fd is not None:
        if not INT_MIN <= fd <= INT_MAX:  # what FileIO says of an fd no C int holds
            raise TypeError("expected str, bytes or os.PathLike object, not int")
        if fd < 0:
            raise ValueError("negative file descriptor")
        fd = int(fd)
    else:
        path = os.fsencode(name)  # type: ignore[arg-type]
        if b"\0" in path:
            raise ValueError("embedded null byte")
    check_mode_kind(mode)
    if path is not None and not closefd:
        raise ValueError("Cannot use closefd=False with file name")
    # trio_aio's own.
    flags, normal_mode = _binary_mode(mode)
    if direct:
        o_direct = getattr(os, "O_DIRECT", 0)
        if not o_direct:
            raise ValueError(f"direct I/O (O_DIRECT) is not available on {sys.platform}")
        if path is None:
            raise ValueError("direct=True needs a path; an fd opened with O_DIRECT is detected")
        flags |= o_direct
    if opener is not None and not callable(opener):
        raise TypeError(f"opener must be callable, not {type(opener).__name__}")
    return OpenArguments(flags, normal_mode, fd, name, path)


def check_opener_result(fd: object) -> int:
    """What a custom ``opener`` returned: an fd, checked as ``io.FileIO`` checks it.

    Raises:
      TypeError: not an int.
      OverflowError: an int no C int holds.
      ValueError: a negative int.

    """
    if not isinstance(fd, int):
        raise TypeError("expected integer from opener")
    if not INT_MIN <= fd <= INT_MAX:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(f"opener returned {fd}")
    return int(fd)


def unsupported(name: object, mode: str, what: str) -> io.UnsupportedOperation:
    """The error for an operation the file's mode does not allow (``what``: "not readable")."""
    return io.UnsupportedOperation(f"File {name!r} is {what} (mode {mode!r})")
