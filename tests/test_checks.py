"""trio_aio/_checks.py against built-in open, io.FileIO and os: no backend, no event loop.

Each property draws arguments, right and wrong, and compares what the check
does with what the built-in it claims to follow does with the same
arguments: the same exception class and message, or acceptance with the same
result.  Where trio_aio differs on purpose, the test says how, and checks
that difference.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import io
import mmap
import operator
import os
import sys
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

import trio_aio
from trio_aio import _checks

Outcome = tuple[Any, ...]
LIMIT = 1 << 63


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A file of 16 bytes, and an fd open on it for reading."""
    path = tmp_path_factory.mktemp("checks") / "small"
    path.write_bytes(b"0123456789abcdef")
    fd = os.open(path, os.O_RDONLY)
    yield path, fd
    os.close(fd)


def index(value: Any) -> int:
    """``operator.index``, the reference for what an integer argument is."""
    return operator.index(value)


def outcome_of(exc: BaseException) -> Outcome:
    return (type(exc), str(exc))


# -- integers: what operator.index, os.pread and io.FileIO.seek accept ------------


class Index:
    """An object with ``__index__``, as numpy's integers have."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value  # type: ignore[return-value]  # may be wrong on purpose

    def __repr__(self) -> str:
        return f"Index({self.value!r})"


class BadIndex:
    """An ``__index__`` that raises something other than TypeError."""

    def __index__(self) -> int:
        raise ArithmeticError("no index here")


huge = st.integers(min_value=LIMIT - 3, max_value=LIMIT + 3) | st.integers(
    min_value=-LIMIT - 3, max_value=-LIMIT + 3
)
ints = st.integers() | huge | st.sampled_from([0, 1, -1, (1 << 31) - 1, 1 << 31, -(1 << 31) - 1])
integer_like = ints | st.booleans() | ints.map(Index) | st.sampled_from([Index(1.5), Index("1")])
not_integers = (
    st.floats(allow_nan=True)
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.sampled_from([None, Decimal(1), Fraction(1, 2), 1j, object(), [1], (1,)])
)
anything = integer_like | not_integers


@given(anything)
def test_check_int_accepts_what_operator_index_accepts(value: object) -> None:
    try:
        expected = index(value)
    except TypeError:
        with pytest.raises(TypeError, match=r"^size must be an integer, not \w+$"):
            _checks.check_int(value, "size")
    else:
        result = _checks.check_int(value, "size")
        assert result == expected
        assert type(result) is int


def test_check_int_lets_other_errors_of_index_through() -> None:
    with pytest.raises(ArithmeticError, match="no index here"):
        _checks.check_int(BadIndex(), "size")


@given(anything)
@example(-1)
@example(LIMIT)
@example(LIMIT - 1)
@example(True)
def test_offsets_are_what_os_pread_takes(small_file: tuple[Path, int], value: object) -> None:
    """An offset: TypeError where ``os.pread`` says TypeError, ValueError where it cannot be one.

    ``os.pread`` refuses a negative offset with ``OSError(EINVAL)`` and one
    past a C long with ``OverflowError``; trio_aio says ``ValueError`` for
    both, before anything is submitted. (The kernel also refuses an offset
    whose end, offset + size, is past 2**63 - 1: that ``EINVAL`` is left to it.)
    """
    _, fd = small_file
    try:
        os.pread(fd, 1, value)  # type: ignore[arg-type]
    except TypeError:
        with pytest.raises(TypeError, match=r"^offset must be an integer"):
            _checks.check_nonnegative(value, "offset")
    except (OSError, OverflowError) as exc:
        if isinstance(exc, OSError) and index(value) >= 0:
            assert _checks.check_nonnegative(value, "offset") == index(value)
            return
        with pytest.raises(ValueError, match=r"^offset must be (non-negative|below 2\*\*63)"):
            _checks.check_nonnegative(value, "offset")
    else:
        assert _checks.check_nonnegative(value, "offset") == index(value)


@given(anything)
@example(-1)
@example(LIMIT)
def test_sizes_are_what_os_pread_takes(small_file: tuple[Path, int], value: object) -> None:
    """A size: TypeError where ``os.pread`` says TypeError; any integer in [0, 2**63) accepted."""
    _, fd = small_file
    try:
        size = index(value)
    except TypeError:
        with pytest.raises(TypeError):
            os.pread(fd, value, 0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^size must be an integer"):
            _checks.check_nonnegative(value, "size")
        return
    if 0 <= size < LIMIT:
        assert _checks.check_nonnegative(value, "size") == size
        if size < 1 << 20:  # (os.pread allocates what it is asked for)
            assert os.pread(fd, value, 0) == os.pread(fd, size, 0)  # type: ignore[arg-type]
    else:
        with pytest.raises((OSError, OverflowError)):  # EINVAL, or past a C ssize_t
            os.pread(fd, value, 0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^size must be"):
            _checks.check_nonnegative(value, "size")


@given(anything, anything)
@example(0, 1 << 31)
@example(LIMIT, 1 << 31)
@example(LIMIT, 0)
@example(-LIMIT - 1, 0)
@example(1.5, "x")
def test_seek_arguments_are_what_io_fileio_seek_takes(
    small_file: tuple[Path, int], offset: object, whence: object
) -> None:
    """``check_seek`` raises io.FileIO.seek's TypeError and OverflowError (for whence).

    For an offset outside ±2**63 io says ``OverflowError`` and trio_aio
    ``ValueError``; what io hands to ``lseek`` (``OSError`` for a negative
    position or an unknown whence) trio_aio accepts and leaves to the kernel.
    """
    path, _ = small_file
    with io.FileIO(path) as f:
        try:
            f.seek(offset, whence)  # type: ignore[arg-type]
        except TypeError:
            with pytest.raises(TypeError):
                _checks.check_seek(offset, whence)
            return
        except OverflowError as exc:
            if "C int" in str(exc):  # whence
                with pytest.raises(OverflowError) as ours:
                    _checks.check_seek(offset, whence)
                assert str(ours.value) == str(exc)
            else:  # the offset, a C long (off_t)
                with pytest.raises(ValueError, match=r"^offset must be within ±2\*\*63"):
                    _checks.check_seek(offset, whence)
            return
        except OSError:
            pass
    assert _checks.check_seek(offset, whence) == (
        index(offset),
        index(whence),
    )


@given(anything)
def test_truncate_size_is_none_or_an_offset(value: object) -> None:
    assert _checks.check_truncate_size(None) is None
    assume(value is not None)
    try:
        expected = _checks.check_nonnegative(value, "size")
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)) as ours:
            _checks.check_truncate_size(value)
        assert str(ours.value) == str(exc)
    else:
        assert _checks.check_truncate_size(value) == expected


@given(anything, anything)
def test_allocate_needs_an_offset_and_a_positive_length(offset: object, length: object) -> None:
    """As ``posix_fallocate``: an offset, a length above 0 (trio_aio: ValueError, not EINVAL)."""
    try:
        expected = (
            _checks.check_nonnegative(offset, "offset"),
            _checks.check_nonnegative(length, "length"),
        )
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)) as ours:
            _checks.check_allocate(offset, length)
        assert str(ours.value) == str(exc)
        return
    if expected[1] == 0:
        with pytest.raises(ValueError, match=r"^length must be positive, got 0$"):
            _checks.check_allocate(offset, length)
    else:
        assert _checks.check_allocate(offset, length) == expected


@given(anything)
def test_read_size_is_any_integer(value: object) -> None:
    """``read(size)``: any integer (negative: all), as ``io.FileIO.read``; no float, no str."""
    try:
        expected = index(value)
    except TypeError:
        with pytest.raises(TypeError):
            _checks.check_read_size(value)
    else:
        assert _checks.check_read_size(value) == expected


@given(anything)
def test_stream_start_and_max_bytes(value: object) -> None:
    try:
        n = index(value)
    except TypeError:
        with pytest.raises(TypeError, match=r"^start must be an integer"):
            _checks.check_start(value)
        with pytest.raises(TypeError, match=r"^max_bytes must be an integer"):
            _checks.check_max_bytes(value)
        return
    if n >= 0:
        assert _checks.check_start(value) == n
    else:
        with pytest.raises(ValueError, match=f"^start must be non-negative, got {n}$"):
            _checks.check_start(value)
    if n >= 1:
        assert _checks.check_max_bytes(value) == n
    else:
        with pytest.raises(ValueError, match=r"^max_bytes must be a positive integer$"):
            _checks.check_max_bytes(value)


# -- buffers: what io.FileIO.readinto and io.FileIO.write take --------------------


def _view_of(obj: Any, kind: int) -> memoryview:
    """A memoryview of ``obj``: whole, strided, sliced or read-only."""
    view = memoryview(obj)
    return (view, view[::2], view[1:], view.toreadonly())[kind]


def _buffers() -> st.SearchStrategy[object]:
    sizes = st.integers(min_value=0, max_value=12)
    plain = st.one_of(
        st.binary(max_size=12),
        st.binary(max_size=12).map(bytearray),
        sizes.map(lambda n: array.array("i", range(n))),
        sizes.map(lambda n: array.array("d", [0.5] * n)),
    )
    views = st.tuples(plain, st.integers(0, 3)).map(lambda args: _view_of(*args))
    shaped = st.sampled_from([(2, 4), (4, 2), (1, 8)]).map(
        lambda shape: memoryview(bytearray(8)).cast("B", shape)
    )
    others = st.sampled_from(["text", "", 5, None, 1.5, [b"x"], object()])
    return plain | views | shaped | others


@given(_buffers())
def test_readinto_buffers_are_what_io_fileio_readinto_takes(
    small_file: tuple[Path, int], obj: object
) -> None:
    """Accepted exactly when io accepts it, as a flat view of all its bytes.

    Refused with TypeError, as io does, except a buffer that is not
    C-contiguous: ValueError (io: TypeError).
    """
    path, _ = small_file
    with io.FileIO(path) as f:
        try:
            n = f.readinto(obj)  # type: ignore[arg-type]
        except TypeError as exc:
            theirs: BaseException | None = exc
        else:
            theirs = None
    contiguous = True
    with contextlib.suppress(TypeError):
        contiguous = memoryview(obj).c_contiguous  # type: ignore[arg-type]
    if theirs is None:
        view = _checks.writable_view(obj)
        assert view.format == "B" and view.ndim == 1
        assert len(view) == memoryview(obj).nbytes  # type: ignore[arg-type]
        assert n == min(len(view), 16)
    elif not contiguous and not memoryview(obj).readonly:  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="C-contiguous"):
            _checks.writable_view(obj)
    else:
        with pytest.raises(TypeError, match=r"^a writable bytes-like object is required"):
            _checks.writable_view(obj)


@given(_buffers())
def test_write_data_is_what_io_fileio_write_takes(tmp_path_factory: Any, obj: object) -> None:
    """Accepted exactly when io accepts it (with the same byte count); TypeError where io's.

    A buffer that is not C-contiguous: ValueError (io: ``BufferError``). A
    str: io's message, and that the file is binary.
    """
    path = tmp_path_factory.mktemp("write") / "out"
    with io.FileIO(path, "w") as f:
        try:
            n = f.write(obj)  # type: ignore[arg-type]
        except (TypeError, BufferError) as exc:
            theirs: BaseException | None = exc
        else:
            theirs = None
    if theirs is None:
        view = _checks.readable_view(obj)
        assert len(view) == n
        assert bytes(view) == path.read_bytes()
    elif isinstance(theirs, BufferError):
        with pytest.raises(ValueError, match="C-contiguous"):
            _checks.readable_view(obj)
    else:
        with pytest.raises(TypeError) as ours:
            _checks.readable_view(obj)
        assert str(ours.value).startswith(str(theirs))


@given(st.lists(_buffers(), max_size=4) | st.lists(_buffers(), max_size=4).map(tuple))
def test_a_list_of_buffers_is_checked_buffer_by_buffer(buffers: list[object]) -> None:
    """``readinto_at``/``write_at`` with a list or tuple: each one checked as alone."""
    for writable in (True, False):
        one = _checks.writable_view if writable else _checks.readable_view
        try:
            expected = [bytes(one(obj)) for obj in buffers]
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)) as ours:
                _checks.views_of(buffers, writable)
            assert str(ours.value) == str(exc)
        else:
            result = _checks.views_of(buffers, writable)
            assert isinstance(result, list)
            assert [bytes(view) for view in result] == expected


# -- batches ------------------------------------------------------------------------


batch_items = st.lists(
    st.tuples(integer_like, integer_like)
    | st.tuples(ints, ints)
    | st.sampled_from([(1,), (1, 2, 3), 5, None, "ab", [0, 1]]),
    max_size=5,
)


@given(batch_items)
def test_a_batch_of_ranges_checks_each_element_as_check_nonnegative(items: list[Any]) -> None:
    """The fast path for plain int pairs gives what the general path would, and no more."""
    expected: list[tuple[int, int]] = []
    error: Exception | None = None
    for i, item in enumerate(items):
        try:
            offset, size = item
        except (TypeError, ValueError):
            error = TypeError(
                f"read_many() element {i} must be an (offset, size) pair, not {item!r:.40}"
            )
            break
        try:
            expected.append(
                (
                    _checks.check_nonnegative(size, f"element {i}'s size"),
                    _checks.check_nonnegative(offset, f"element {i}'s offset"),
                )
            )
        except (TypeError, ValueError) as exc:
            error = exc
            break
    if error is None:
        assert _checks.batch(items, "read_many", "(offset, size)", _checks.size_of) == expected
    else:
        with pytest.raises(type(error)) as ours:
            _checks.batch(items, "read_many", "(offset, size)", _checks.size_of)
        assert str(ours.value) == str(error)


@pytest.mark.parametrize("items", ["ab", b"ab", bytearray(b"ab"), memoryview(b"ab")])
def test_a_batch_is_not_a_str_or_a_buffer(items: Any) -> None:
    with pytest.raises(TypeError, match=r"^write_many\(\) takes an iterable of"):
        _checks.batch(items, "write_many", "(offset, data)", _checks.readable_of)


@given(st.lists(st.tuples(ints, _buffers()), max_size=4))
def test_a_batch_of_buffers_checks_each_buffer(items: list[tuple[int, object]]) -> None:
    for convert, one in ((_checks.writable_of, True), (_checks.readable_of, False)):
        try:
            expected = [
                (bytes(_checks.view(obj, one) if one else _checks.readable_view(obj)), offset)
                for offset, obj in items
            ]
            for i, (offset, _) in enumerate(items):
                _checks.check_nonnegative(offset, f"element {i}'s offset")
        except (TypeError, ValueError) as exc:
            with pytest.raises((TypeError, ValueError)):
                _checks.batch(items, "m", "(offset, buffer)", convert)
            del exc
        else:
            result = _checks.batch(items, "m", "(offset, buffer)", convert)
            assert [(bytes(view), offset) for view, offset in result] == expected


# -- direct I/O ------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=1 << 40), st.integers(min_value=1, max_value=1 << 20))
def test_round_up(n: int, multiple: int) -> None:
    result = _checks.round_up(n, multiple)
    assert result % multiple == 0
    assert n <= result < n + multiple


def _ctypes_address(buffer: bytearray, start: int) -> int:
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer)) + start


@given(
    st.integers(min_value=0, max_value=1 << 20),
    st.lists(st.tuples(st.integers(0, 64), st.integers(0, 9000)), min_size=1, max_size=3),
    st.sampled_from([(1, 1), (512, 512), (4, 512), (4096, 4096), (512, 4096)]),
)
def test_direct_alignment_arithmetic(
    offset: int, shapes: list[tuple[int, int]], alignment: tuple[int, int]
) -> None:
    """Refused exactly when the offset, a size or an address is not a multiple."""
    mem, align = alignment
    backing = [bytearray(start + size + 1) for start, size in shapes]
    buffers = [
        memoryview(b)[start : start + size]
        for b, (start, size) in zip(backing, shapes, strict=True)
    ]
    addresses = [_ctypes_address(b, start) for b, (start, _) in zip(backing, shapes, strict=True)]
    misaligned = (
        offset % align != 0
        or any(len(view) % align for view in buffers)
        or any(address % mem for address in addresses)
    )
    for given_as in (buffers, buffers[0]) if len(buffers) == 1 else (buffers,):
        if misaligned:
            with pytest.raises(ValueError, match=r"^direct I/O on 'f' needs offsets"):
                _checks.check_direct(given_as, offset, alignment, "f")
        else:
            _checks.check_direct(given_as, offset, alignment, "f")
    assert [_checks.address(view) for view in buffers] == addresses


@given(anything, st.integers(min_value=-1, max_value=2 * mmap.PAGESIZE))
def test_aligned_buffer_arguments(size: object, alignment: int) -> None:
    try:
        n = index(size)
    except TypeError:
        with pytest.raises(TypeError, match=r"^size must be an integer"):
            _checks.check_aligned_buffer(size, alignment)
        return
    divides = alignment == 0 or (alignment > 0 and mmap.PAGESIZE % alignment == 0)
    if n <= 0:
        with pytest.raises(ValueError, match=r"^size must be positive"):
            _checks.check_aligned_buffer(size, alignment)
    elif not divides:
        with pytest.raises(ValueError, match=r"^alignment must divide the page size"):
            _checks.check_aligned_buffer(size, alignment)
    else:
        assert _checks.check_aligned_buffer(size, alignment) == (n, alignment)


def test_aligned_buffer() -> None:
    """The buffer itself: page-aligned, zero-filled (tests/test_file.py uses it with a file)."""
    import ctypes

    buf = trio_aio.aligned_buffer(10_000)
    assert len(buf) == 10_000 and buf[:] == bytes(10_000)
    assert ctypes.addressof(ctypes.c_char.from_buffer(buf)) % 4096 == 0
    with pytest.raises(ValueError):
        trio_aio.aligned_buffer(0)
    with pytest.raises(ValueError, match="divide the page size"):
        trio_aio.aligned_buffer(4096, alignment=8192)
    with pytest.raises(TypeError):
        trio_aio.aligned_buffer("4096")  # type: ignore[arg-type]


# -- open_file's arguments against built-in open --------------------------------------

_U_MODE = sys.version_info < (3, 11)  # Python 3.10 still takes 'U' (with a warning)

modes = st.one_of(
    st.lists(st.sampled_from(list("rwxab+t")), max_size=5).map("".join),
    st.permutations(list("rb+")).map("".join),
    st.permutations(list("wb")).map("".join),
    st.text(max_size=4),
    st.text(alphabet="rwab+'\\\n\0ü\ud800U", max_size=4),
)
str_arguments = st.sampled_from([5, b"x", "a\0b", "\ud800"])
encodings = st.sampled_from([None, "utf-8", "latin-1"]) | str_arguments
errors_arguments = st.sampled_from([None, "strict", "replace"]) | str_arguments
newlines = st.sampled_from([None, "", "\n", "\r\n"]) | str_arguments


class WeirdPath:
    """An ``os.PathLike`` whose ``__fspath__`` returns something of the wrong type."""

    def __fspath__(self) -> Any:
        return 5


def _files(path: Path, fd: int) -> st.SearchStrategy[object]:
    return st.one_of(
        st.sampled_from(
            [
                str(path),
                os.fsencode(path),
                path,
                str(path) + "\0",
                "bad\ud800",
                "",
                fd,
                -1,
                -(1 << 31),
                -(1 << 31) - 1,
                1 << 31,
                1 << 64,
                None,
                WeirdPath(),
                object(),
            ]
        ),
        st.text(max_size=3),
    )


class _Opened(Exception):
    pass


def builtin_open(
    file: object, mode: object, encoding: object, errors: object, newline: object, closefd: bool
) -> Outcome:
    """What built-in open does: ("opened", open flags or None for an fd, mode) or the error.

    Nothing is created or truncated: the opener records the flags and hands
    over a duplicate of an fd on the small file.
    """
    flags: list[int] = []
    fds: list[int] = []
    if isinstance(file, int) and file >= 0 and file < 1 << 31:
        file = os.dup(file)
        fds.append(file)

    def opener(name: object, open_flags: int) -> int:
        flags.append(open_flags)
        fds.append(os.dup(_FD[0]))
        return fds[-1]

    try:
        f = open(  # noqa: SIM115
            file,  # type: ignore[call-overload]
            mode,
            8192,
            encoding,
            errors,
            newline,
            closefd,
            opener,
        )
    except Exception as exc:
        return outcome_of(exc)
    finally:
        for one in fds:
            with contextlib.suppress(OSError):
                os.close(one)
    with contextlib.suppress(OSError):
        f.close()
    return ("opened", flags[0] if flags else None, f.mode)


_FD = [-1]  # the small file's fd, for the opener


def ours_open(
    file: object, mode: object, encoding: object, errors: object, newline: object, closefd: bool
) -> Outcome:
    try:
        checked = _checks.check_open_arguments(
            file, mode, 8192, encoding, errors, newline, closefd, None, False
        )
    except Exception as exc:
        return outcome_of(exc)
    return ("opened", checked.flags if checked.path is not None else None, checked.mode)


def expected_from_builtin(theirs: Outcome, mode: object) -> Outcome:
    """What trio_aio promises, given what built-in open did."""
    if theirs[0] == "opened":
        assert isinstance(mode, str)
        if "b" not in mode:  # a text mode open takes: not yet
            return (ValueError, _checks._TEXT_MODE.format(mode))
        return theirs
    kind, message = theirs
    if issubclass(kind, OSError):  # the kernel's answer: every check had passed
        raise AssertionError(f"the opener hands over an fd; open raised {theirs}")
    # open's argument parsing names open(); trio_aio's names open_file()
    return (kind, message.replace("open() argument", "open_file() argument"))


@given(st.data(), modes, encodings, errors_arguments, newlines, st.booleans())
@example(None, "rw", None, None, None, True)
@example(None, "rbb", None, None, None, True)
@example(None, "r'z", None, None, None, True)
@example(None, "", None, None, None, True)
@example(None, "t", "utf-8", None, None, True)
@example(None, "b", "utf-8", None, None, True)
@example(None, "r\0b", None, None, None, True)
@example(None, "\ud800", None, None, None, True)
@example(None, "r", None, None, None, False)
@example(None, "wb+", None, None, None, False)
def test_open_arguments_are_checked_as_builtin_open_checks_them(
    small_file: tuple[Path, int],
    data: st.DataObject | None,
    mode: object,
    encoding: object,
    errors: object,
    newline: object,
    closefd: bool,
) -> None:
    """For every mistake built-in open refuses before opening, the same class and message.

    What open accepts in a binary mode, trio_aio accepts with the same open
    flags and the same normalised mode; a text mode open accepts, trio_aio
    refuses with its "binary modes only" ValueError.
    """
    path, fd = small_file
    _FD[0] = fd
    file = str(path) if data is None else data.draw(_files(path, fd), label="file")
    if _U_MODE and isinstance(mode, str):
        assume("U" not in mode)
    theirs = builtin_open(file, mode, encoding, errors, newline, closefd)
    assert ours_open(file, mode, encoding, errors, newline, closefd) == expected_from_builtin(
        theirs, mode
    )


@given(st.sampled_from([None, 1, 1.5, b"rb", ["r"]]))
def test_a_mode_that_is_not_a_str(mode: object) -> None:
    with pytest.raises(TypeError) as theirs:
        open(os.devnull, mode)  # type: ignore[call-overload]  # noqa: SIM115
    with pytest.raises(TypeError) as ours:
        _checks.parse_mode(mode)
    assert str(ours.value) == str(theirs.value).replace("open()", "open_file()")


@given(modes)
def test_parse_mode_is_check_open_arguments_on_the_mode(mode: object) -> None:
    try:
        expected = ours_open(os.devnull, mode, None, None, None, True)
    finally:
        pass
    try:
        flags, normal = _checks.parse_mode(mode)
    except Exception as exc:
        assert outcome_of(exc) == expected
    else:
        assert ("opened", flags, normal) == expected


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"mode": "r"}, ValueError, "binary modes only"),
        ({"mode": "rt"}, ValueError, "binary modes only"),
        ({"mode": "w"}, ValueError, "binary modes only"),
        ({"mode": "rz"}, ValueError, "invalid mode"),
        ({"mode": "rwb"}, ValueError, "must have exactly one of create/read/write/append mode"),
        ({"mode": "rbb"}, ValueError, "invalid mode"),
        ({"mode": "b"}, ValueError, "Must have exactly one of create/read/write/append mode"),
        ({"mode": "rtb"}, ValueError, "text and binary"),
        ({"mode": 1}, TypeError, "mode"),
        ({"encoding": "utf-8"}, ValueError, "encoding"),
        ({"errors": "strict"}, ValueError, "errors"),
        ({"newline": ""}, ValueError, "newline"),
        ({"buffering": "big"}, TypeError, "buffering"),
        ({"closefd": False}, ValueError, "closefd=False"),
        ({"opener": 5}, TypeError, "opener"),
        ({"file": 3.5}, TypeError, "float"),
        ({"file": None}, TypeError, "NoneType"),
        ({"file": True}, TypeError, "bool"),
        ({"file": "no\0pe"}, ValueError, "embedded null byte"),
        ({"file": -1}, ValueError, "negative file descriptor"),
    ],
)
def test_bad_open_arguments(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    arguments: dict[str, Any] = {
        "file": os.devnull,
        "mode": "rb",
        "buffering": -1,
        "encoding": None,
        "errors": None,
        "newline": None,
        "closefd": True,
        "opener": None,
        "direct": False,
    }
    with pytest.raises(exc, match=match):
        _checks.check_open_arguments(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("file", "message"),
    [
        (True, "expected str, bytes or os.PathLike object, not bool"),  # open: fd 1
        (False, "expected str, bytes or os.PathLike object, not bool"),  # open: fd 0
        (1.5, "expected str, bytes or os.PathLike object, not float"),  # open: same class
    ],
)
def test_where_open_file_differs_from_open_on_purpose(file: object, message: str) -> None:
    """A bool is not an fd, and a float not a path (open: "integer argument expected")."""
    with pytest.raises(TypeError) as ours:
        _checks.check_open_arguments(file, "rb", -1, None, None, None, True, None, False)
    assert str(ours.value) == message


@pytest.mark.parametrize("buffering", ["big", 1.5, None, b"1"])
def test_buffering_must_be_an_integer(buffering: object) -> None:
    """open: TypeError with its own message; trio_aio: TypeError (and ignores the value)."""
    with pytest.raises(TypeError):
        open(os.devnull, "rb", buffering)  # type: ignore[call-overload]  # noqa: SIM115
    with pytest.raises(TypeError, match=r"^buffering must be an integer"):
        _checks.check_open_arguments(
            os.devnull, "rb", buffering, None, None, None, True, None, False
        )


def test_opener_must_be_callable_and_direct_needs_a_path() -> None:
    with pytest.raises(TypeError, match=r"^opener must be callable, not int$"):
        _checks.check_open_arguments(os.devnull, "rb", -1, None, None, None, True, 5, False)
    if hasattr(os, "O_DIRECT"):
        checked = _checks.check_open_arguments(
            os.devnull, "rb", -1, None, None, None, True, None, True
        )
        assert checked.flags & os.O_DIRECT
        with pytest.raises(ValueError, match=r"^direct=True needs a path"):
            _checks.check_open_arguments(0, "rb", -1, None, None, None, True, None, True)
    else:
        with pytest.raises(ValueError, match="not available"):
            _checks.check_open_arguments(os.devnull, "rb", -1, None, None, None, True, None, True)


@given(
    st.integers()
    | huge
    | st.sampled_from([-1, (1 << 31) - 1, 1 << 31, -(1 << 31) - 1, "3", None, 1.5, True])
)
def test_opener_results_are_checked_as_io_fileio_checks_them(
    small_file: tuple[Path, int], value: object
) -> None:
    path, _ = small_file
    if isinstance(value, int) and 0 <= value < 1 << 31:
        # A valid fd number: accepted as is (whether it is open is the kernel's business).
        assert _checks.check_opener_result(value) == value
        return
    with pytest.raises(Exception) as theirs:
        io.FileIO(path, "rb", opener=lambda name, flags: value)  # type: ignore[arg-type,return-value]
    with pytest.raises(Exception) as ours:
        _checks.check_opener_result(value)
    assert outcome_of(ours.value) == outcome_of(theirs.value)
