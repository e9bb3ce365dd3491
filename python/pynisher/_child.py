"""What the child runs, and how results and errors cross back to the caller.

A value travels as pickle protocol 5 with out-of-band buffers: the core
writes the buffers straight into the result channel (a memfd for large
results), each at an aligned offset, and the caller maps each large buffer
on its own, without a copy, and copies the small ones. Errors travel as a
dict of builtins, so the caller can always read at least the type, the
repr and the traceback, even when the exception itself cannot be pickled or
unpickled.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import sys
import types

from . import _core, _pickling

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from _pickle import PickleBuffer
    from collections.abc import Sequence
    from typing import Any, Callable, Optional

# The most objects a forked child's result may have to travel by marshal
# (see `encode_value`).
_FORKED_MARSHAL_MOST = 64

# The header's first two words: the buffer count with its flags, and the
# pickle's length. A result with no out-of-band buffer (most of them) has no
# more, so it is packed and read with this one prepared struct.
_HEADER_START = struct.Struct("<2Q")


class _ChildState:
    """The decorated function whose own limited child this process is.

    A function decorated with `limit` or `restricted` that calls itself (or
    is called by name) inside its own child runs directly instead of starting
    a second limited child. The child is told which decorated function it
    runs (``decorated``: the wrapper object itself, never its name, so two
    wrappers with the same module and ``__qualname__``, as a factory makes
    them, stay apart). Under spawn and forkserver the wrapper arrives in the
    same pickle as the function, so the name the function calls it by
    resolves to this very object: by reference, the module's attribute; by
    value, the same copy.
    """

    # Set by the child's body as it starts.
    running: Any = None

    def is_running(self, decorated: Any) -> bool:
        return self.running is not None and self.running is decorated


child_state = _ChildState()

# A returned bytes object at least this large travels out-of-band like a
# numpy array: written straight from the object into the result channel
# instead of being copied into the pickle stream first. (Pickle offers no
# hook for nested bytes objects that would not slow every other object down.)
_OUT_OF_BAND_BYTES = 1 << 20
# The first header word holds the buffer count, and this flag when the value
# is such a bytes object (its one buffer is the value itself), or the other
# when the value is plain data sent by marshal (see _pickling.marshalled).
_RAW_BYTES = 1 << 32
_MARSHALLED = 1 << 33


# Each out-of-band buffer starts at a multiple of _BUFFER_ALIGN bytes, more
# than any numpy dtype needs. One of at least _OWN_PAGES bytes starts and ends
# on a page boundary instead: the caller maps it on its own, so an array kept
# from a result keeps only its own memory, and each page belongs to one buffer.
_BUFFER_ALIGN = 64
_OWN_PAGES = 1 << 20
_PAGE = resource.getpagesize()
_PADDING = memoryview(bytes(_PAGE))


def buffer_offsets(start: int, lengths: Sequence[int]) -> list[int]:
    """Where each out-of-band buffer of ``lengths`` starts in the payload,
    when the first may start at ``start``."""
    offsets = []
    at = start
    for length in lengths:
        align = _PAGE if length >= _OWN_PAGES else _BUFFER_ALIGN
        at = -(-at // align) * align
        offsets.append(at)
        at += length
        if length >= _OWN_PAGES:
            at = -(-at // _PAGE) * _PAGE
    return offsets


def encode_value(value: Any, *, by_value: bool = False) -> tuple[list[Any], bool]:
    """Encode a return value as frame parts: a header of lengths, the
    pickle, then the out-of-band buffers, each at its offset (zeros pad the
    gaps). Also says whether the last part is a large returned bytes object,
    to be lent rather than copied (see `make_body`).

    It runs in a forked child once per call, where each page it writes costs
    a copy-on-write fault, so the usual case (a plain pickle, no buffer) takes
    the fewest steps."""
    buffers: list[Any] = []
    if type(value) is bytes and len(value) >= _OUT_OF_BAND_BYTES:
        main = b""
        buffers.append(memoryview(value))
        flags = _RAW_BYTES
    elif (
        marshalled := _pickling.marshalled(value, None if by_value else _FORKED_MARSHAL_MOST)
    ) is not None:
        # Plain data goes by marshal. A fresh interpreter then needs no
        # pickler; a forked child writes fewer pages (each a copy-on-write
        # fault) than with a pickler, as long as the data is small: checking
        # that big data is plain would cost more than pickle saves.
        main = marshalled
        flags = _MARSHALLED
    else:
        pickled: list[PickleBuffer] = []
        if by_value:
            main = _pickling.dumps_for_interpreter(value, pickled, refuse_open_files=True)
        else:
            main = _pickling.dumps(value, pickled)
        buffers.extend(buffer.raw() for buffer in pickled)
        flags = 0
    if not buffers:
        return [_HEADER_START.pack(flags, len(main)), main], False
    lengths = [len(main), *(buffer.nbytes for buffer in buffers)]
    header = struct.pack(f"<{len(lengths) + 1}Q", len(buffers) | flags, *lengths)
    parts: list[Any] = [header, main]
    at = len(header) + len(main)
    for buffer, offset in zip(buffers, buffer_offsets(at, lengths[1:])):
        if offset > at:
            parts.append(_PADDING[: offset - at])
        parts.append(buffer)
        at = offset + buffer.nbytes
    return parts, bool(flags & _RAW_BYTES)


def decode_value(payload: Any) -> Any:
    """Decode what :func:`encode_value` encoded.

    ``payload`` is the core's `Payload`. A large out-of-band buffer (a numpy
    array) in a memfd is mapped on its own, page-aligned and writable, not
    copied at all; smaller ones are copied into a ``bytearray``. The pickle
    itself and a large returned bytes object are read once, straight into
    the bytes object that keeps them.
    """
    first, main_length = _HEADER_START.unpack(payload.read(0, _HEADER_START.size))
    count = first & (_RAW_BYTES - 1)
    start = _HEADER_START.size + 8 * count
    main = payload.read(start, main_length)
    if first & _MARSHALLED:
        return _pickling.unmarshal(main)
    if not count:
        return _pickling.loads(main)
    lengths = (
        main_length,
        *struct.unpack(f"<{count}Q", payload.read(_HEADER_START.size, 8 * count)),
    )
    offsets = buffer_offsets(start + lengths[0], lengths[1:])
    if first & _RAW_BYTES:
        return payload.read(offsets[0], lengths[1])
    buffers: list[Any] = []
    for offset, length in zip(offsets, lengths[1:]):
        if payload.mappable and length >= _OWN_PAGES:
            buffers.append(_map_range(payload, offset, length))
        else:
            buffers.append(payload.read(offset, length, writable=True))
    return _pickling.loads(main, buffers=buffers)


def _map_range(payload: Any, offset: int, length: int) -> mmap.mmap:
    """A private, writable mapping of one range of the payload, on its own:
    when the last view of it goes, its pages of the memfd are freed.

    Python's ``mmap`` exports the buffer, so this works with the abi3 wheel
    on every Python version (the buffer protocol joined the limited API only
    in 3.11)."""
    import mmap
    import weakref

    memfd = payload.claim(offset, length)
    try:
        mapped = mmap.mmap(
            memfd,
            length,
            flags=mmap.MAP_PRIVATE,
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=offset,
        )
    except BaseException:
        _core.release_range(memfd, offset, length)
        raise
    weakref.finalize(mapped, _core.release_range, memfd, offset, length)
    return mapped


def encode_error(
    exc: BaseException, tb: str, problem: Optional[str] = None, *, by_value: bool = False
) -> list[Any]:
    """Encode an exception with its traceback; never raises for a bad
    exception. The exception is pickled as a result would be (``by_value``:
    see :func:`make_body`)."""
    try:
        pickled: Optional[bytes] = (
            _pickling.dumps_for_interpreter(exc, refuse_open_files=True)
            if by_value
            else _pickling.dumps(exc)
        )
        pickle_error = None
    except Exception as why:
        pickled = None
        pickle_error = f"{type(why).__name__}: {why}"
    try:
        text = repr(exc)
    except Exception:
        text = f"<{type(exc).__qualname__} with a failing __repr__>"
    info = {
        "type": type(exc).__qualname__,
        "repr": text,
        "traceback": tb,
        "exception": pickled,
        "pickle_error": pickle_error,
        "problem": problem,
    }
    return [_pickling.dumps(info)]


def decode_error(payload: Any) -> Optional[dict[str, Any]]:
    """Decode what :func:`encode_error` encoded; None for an empty payload
    (the child ran out of memory even for the report)."""
    if payload is None or len(payload) == 0:
        return None
    info: dict[str, Any] = _pickling.loads(payload.read(0, len(payload)))
    return info


def format_traceback(exc: BaseException) -> str:
    """The traceback as Python prints it. Where even importing ``traceback``
    (imported only on this path: it costs a fresh interpreter several ms)
    runs out of memory under the call's memory limit, the frames' files,
    lines and names are listed without it, so the function's own exception
    is still the one reported."""
    try:
        import traceback

        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except MemoryError:
        return _bare_traceback(exc)


def _bare_traceback(exc: BaseException) -> str:
    lines = ["Traceback (most recent call last):\n"]
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n')
        tb = tb.tb_next
    lines.append(f"{type(exc).__qualname__}: {exc}\n")
    return "".join(lines)


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


# Output captured in the child goes to a file the caller reads once the call
# is over, however it ended: a call stopped by a limit keeps what it printed
# (everything up to its last line end or flush). The file starts with this
# mark, then holds one record per flush: the stream (b"1" or b"2"), the
# length (u32, little-endian) and the UTF-8 text.
_OUTPUT_MARK = b"pynisher output 1\n"
_RECORD = struct.Struct("<cI")
# A captured stream writes its buffer out once it holds this much text.
_CAPTURE_BUFFER = 1 << 13
# The most captured output a call keeps, both streams together: it is held in
# shared memory and then in the caller's redirected streams, so a call that
# prints without end must not fill the caller's memory. Past it, what the
# call prints is dropped, and a notice says so where the output stops.
OUTPUT_CAP = 64 << 20
_CAP_NOTICE = (
    "\n[pynisher: the call's captured output reached its cap of "
    f"{OUTPUT_CAP >> 20} MiB; what it printed after this point was dropped]\n"
).encode()


class _OutputFile:
    """The child's end of the output file. It appends records through an
    open file description of its own (``O_APPEND``), so records from every
    process of the call (a forked child inherits this object) land one after
    another, never over each other, and the caller's file offset is never
    used."""

    def __init__(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _OUTPUT_MARK, 0)
        self.fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.capped = False

    def append(self, stream: bytes, text: str) -> None:
        if self.capped:
            return
        data = text.encode("utf-8", "surrogateescape")
        room = OUTPUT_CAP - os.fstat(self.fd).st_size - _RECORD.size
        if len(data) > room:
            # Keep what fits, cut at a character boundary, then the notice.
            cut = max(room, 0)
            while cut > 0 and (data[cut] & 0xC0) == 0x80:
                cut -= 1
            data = data[:cut] + _CAP_NOTICE
            self.capped = True
        record = memoryview(_RECORD.pack(stream, len(data)) + data)
        while record:
            record = record[os.write(self.fd, record) :]


class _CapturedStream(io.TextIOBase):
    """A stand-in for ``sys.stdout`` or ``sys.stderr`` in the child, when the
    caller has redirected it to a Python object (``contextlib.redirect_stdout``,
    pytest's capture), which lives in the caller. Line-buffered, like a
    terminal: each complete line reaches the output file at once."""

    def __init__(self, output: _OutputFile, stream: bytes) -> None:
        super().__init__()
        self._output = output
        self._stream = stream
        self._pending: list[str] = []
        self._size = 0

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._pending.append(text)
        self._size += len(text)
        if "\n" in text or self._size >= _CAPTURE_BUFFER:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            self._output.append(self._stream, text)


def capture_output(redirected: tuple[bool, bool], fd: Optional[int]) -> None:
    """In the child: send what the function prints to the streams the caller
    redirected to the output file ``fd``, record by record. Streams still
    backed by the real file descriptors are left alone; their output goes
    straight to the fd and is flushed before the child exits."""
    if fd is None or not any(redirected):
        return
    output = _OutputFile(fd)
    if redirected[0]:
        sys.stdout = _CapturedStream(output, b"1")
    if redirected[1]:
        sys.stderr = _CapturedStream(output, b"2")


def caller_redirects() -> tuple[bool, bool]:
    """Whether ``sys.stdout`` and ``sys.stderr`` are redirected to Python
    objects in this process."""

    stdout, stderr = sys.stdout, sys.stderr
    return (
        stdout is not None and stdout is not sys.__stdout__,
        stderr is not None and stderr is not sys.__stderr__,
    )


def replay_output(fd: int) -> None:
    """In the caller: write what the child printed, in the order it printed
    it, to the streams this process has redirected. A record cut short (the
    child was killed while writing it) is replayed as far as it got."""
    size = os.fstat(fd).st_size
    data = bytearray(size)
    view = memoryview(data)
    got = 0
    while got < size:  # one read returns at most about 2 GiB
        n = os.preadv(fd, [view[got:]], got)
        if n == 0:
            break
        got += n
    view = view[:got]
    if view[: len(_OUTPUT_MARK)] != _OUTPUT_MARK:
        return  # the child never got as far as capturing
    at = len(_OUTPUT_MARK)
    while at + _RECORD.size <= got:
        stream, length = _RECORD.unpack_from(view, at)
        at += _RECORD.size
        text = str(view[at : at + length], "utf-8", "surrogateescape")
        at += length
        target = sys.stdout if stream == b"1" else sys.stderr
        if target is not None:
            target.write(text)


def make_body(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    memory_limited: bool,
    redirected: tuple[bool, bool] = (False, False),
    output_fd: Optional[int] = None,
    by_value: bool = False,
    decorated: Any = None,
) -> Callable[[], tuple[str, list[Any], bool]]:
    """Build the callable the child runs; it returns ``(frame tag, parts,
    lend)``: with ``lend``, the last part (a large returned bytes object) is
    lent to the caller, which copies it straight out of this process, rather
    than copied into the result channel (see `_core.ChildChannel.send`).

    ``redirected`` says whether the caller's stdout and stderr are redirected
    to Python objects; what the function prints to them goes to the output
    file ``output_fd`` (see :func:`capture_output`). ``by_value`` (a fresh
    interpreter) pickles the result with cloudpickle where plain pickle would
    not reproduce it (see `_pickling`), so that a fresh interpreter can
    return lambdas and functions of its ``__main__``. ``decorated`` is the
    decorated function (`limit`, `restricted`) this call runs, if any: it
    runs directly when called inside this child (see `_ChildState`).

    Everything needed to report running out of memory is allocated here,
    before the memory limit applies: in the caller before the fork, or in a
    fresh interpreter before it applies its limits.
    """
    out_of_memory: tuple[str, list[Any], bool] = ("memory", [], False)
    if not by_value:
        # Formatting an error's traceback needs the module traceback: a fork
        # caller imports it here once, not each failing child. A fresh
        # interpreter imports it only if the call fails (see
        # `format_traceback` for a call at its memory limit).
        import traceback  # noqa: F401

    captures = output_fd is not None and any(redirected)

    def body() -> tuple[str, list[Any], bool]:
        child_state.running = decorated
        try:
            if captures:
                capture_output(redirected, output_fd)
            try:
                value = func(*args, **kwargs)
                # (A coroutine's type cannot be subclassed.)
                if type(value) is types.CoroutineType:
                    # A coroutine function is awaited in the child, on a
                    # fresh event loop, under the same limits.
                    import asyncio

                    value = asyncio.run(value)
            except BaseException as exc:
                tag = "memory" if memory_limited and isinstance(exc, MemoryError) else "error"
                tb = format_traceback(exc)
                exc.__traceback__ = None
                return tag, encode_error(exc, tb, by_value=by_value), False
            try:
                parts, lend = encode_value(value, by_value=by_value)
                return "value", parts, lend
            except MemoryError:
                raise
            except BaseException as exc:
                tb = format_traceback(exc)
                problem = (
                    f"the function returned a {type(value).__qualname__} that cannot be pickled"
                    f" ({type(exc).__name__}: {exc})"
                )
                return "error", encode_error(exc, tb, problem=problem, by_value=by_value), False
        except MemoryError:
            if memory_limited:
                return out_of_memory
            return "error", encode_error(MemoryError(), ""), False
        finally:
            flush_stdio()

    return body


__all__ = [
    "child_state",
    "decode_error",
    "decode_value",
    "flush_stdio",
    "make_body",
    "replay_output",
]
