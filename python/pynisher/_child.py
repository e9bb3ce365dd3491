"""What the child runs, and how results and errors cross back to the caller.

A value travels as pickle protocol 5 with out-of-band buffers: the core
writes the buffers straight into the result channel (a memfd for large
results), and the caller unpickles them from one writable bytearray without
another copy. Errors travel as a dict of builtins, so the caller can always
read at least the type, the repr and the traceback, even when the exception
itself cannot be pickled or unpickled.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import traceback
import types
from typing import Any, Callable, Optional

_U64 = struct.Struct("<Q")


class _ChildState:
    """The function running in this process, when this process is a child.

    A decorated function that calls itself (or is called by name) inside its
    own child runs directly instead of starting a second limited child. Under
    spawn the function arrives as a copy, so functions are compared by module
    and qualified name, not by identity.
    """

    running: Optional[tuple[Any, Any]] = None

    def enter(self, func: Callable[..., Any]) -> None:
        self.running = function_key(func)

    def is_running(self, func: Callable[..., Any]) -> bool:
        return self.running is not None and self.running == function_key(func)


def function_key(func: Callable[..., Any]) -> tuple[Any, Any]:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if module is None or qualname is None:
        return ("id", id(func))
    return (module, qualname)


child_state = _ChildState()

# What the child printed to redirected stdout and stderr, if they were.
Streams = tuple[Optional[str], Optional[str]]

# A returned bytes object at least this large travels out-of-band like a
# numpy array: written straight from the object into the result channel
# instead of being copied into the pickle stream first. (Pickle offers no
# hook for nested bytes objects that would not slow every other object down.)
_OUT_OF_BAND_BYTES = 1 << 20
# The first header word holds the buffer count, and this flag when the value
# is such a bytes object (its one buffer is the value itself).
_RAW_BYTES = 1 << 32


def encode_value(
    value: Any, streams: Streams = (None, None), *, by_value: bool = False
) -> list[Any]:
    """Encode a return value (and captured output) as frame parts:
    a header of lengths, the pickle, then the out-of-band buffers."""
    buffers: list[Any] = []
    if type(value) is bytes and len(value) >= _OUT_OF_BAND_BYTES:
        main = pickle.dumps(streams, protocol=5)
        buffers.append(memoryview(value))
        flags = _RAW_BYTES
    else:
        pickled: list[pickle.PickleBuffer] = []
        dumps = pickle.dumps
        if by_value:
            import cloudpickle

            dumps = cloudpickle.dumps
        main = dumps((value, streams), protocol=5, buffer_callback=pickled.append)
        buffers.extend(buffer.raw() for buffer in pickled)
        flags = 0
    lengths = [len(main), *(buffer.nbytes for buffer in buffers)]
    header = struct.pack(f"<{len(lengths) + 1}Q", len(buffers) | flags, *lengths)
    return [header, main, *buffers]


def decode_value(payload: Any) -> tuple[Any, Optional[Streams]]:
    """Decode what :func:`encode_value` encoded: ``(value, streams)``.

    ``payload`` is the core's `Payload`. Out-of-band buffers (numpy arrays)
    are slices of a private, writable mapping of the result: not copied at
    all. The pickle itself and a large returned bytes object are read once,
    straight into the bytes object that keeps them.
    """
    (first,) = _U64.unpack(payload.read(0, _U64.size))
    count = first & (_RAW_BYTES - 1)
    lengths = struct.unpack(f"<{count + 1}Q", payload.read(_U64.size, _U64.size * (count + 1)))
    offset = _U64.size * (count + 2)
    main = payload.read(offset, lengths[0])
    offset += lengths[0]
    if first & _RAW_BYTES:
        return payload.read(offset, lengths[1]), pickle.loads(main)
    mapped = memoryview(payload) if payload.mappable and count else None
    buffers = []
    for length in lengths[1:]:
        if mapped is not None:
            buffers.append(mapped[offset : offset + length])
        else:
            buffers.append(payload.read(offset, length, writable=True))
        offset += length
    value, streams = pickle.loads(main, buffers=buffers)
    return value, streams


def encode_error(
    exc: BaseException, tb: str, problem: Optional[str] = None, streams: Streams = (None, None)
) -> list[Any]:
    """Encode an exception with its traceback; never raises for a bad exception."""
    try:
        pickled: Optional[bytes] = pickle.dumps(exc, protocol=5)
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
        "streams": streams,
    }
    return [pickle.dumps(info, protocol=5)]


def decode_error(payload: Any) -> Optional[dict[str, Any]]:
    """Decode what :func:`encode_error` encoded; None for an empty payload
    (the child ran out of memory even for the report)."""
    if payload is None or len(payload) == 0:
        return None
    info: dict[str, Any] = pickle.loads(payload.read(0, len(payload)))
    return info


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


class _Capture:
    """Captures ``sys.stdout``/``sys.stderr`` in the child when the caller has
    redirected them to Python objects (``contextlib.redirect_stdout``, pytest's
    capture): those objects live in the caller, so what the child writes is
    sent back with the result and written there. Streams still backed by the
    real file descriptors are left alone; their output goes straight to the
    fd and is flushed before the child exits."""

    def __init__(self, redirected: Optional[tuple[bool, bool]] = None) -> None:
        # A fresh interpreter cannot see the caller's redirection: it is told.
        out, err = redirected if redirected is not None else caller_redirects()
        self.out = io.StringIO() if out else None
        self.err = io.StringIO() if err else None
        if self.out is not None:
            sys.stdout = self.out
        if self.err is not None:
            sys.stderr = self.err

    def text(self) -> Streams:
        return (
            self.out.getvalue() if self.out is not None else None,
            self.err.getvalue() if self.err is not None else None,
        )


def caller_redirects() -> tuple[bool, bool]:
    """Whether ``sys.stdout`` and ``sys.stderr`` are redirected to Python
    objects in this process."""

    def redirected(stream: Any, original: Any) -> bool:
        return stream is not None and stream is not original

    return redirected(sys.stdout, sys.__stdout__), redirected(sys.stderr, sys.__stderr__)


def replay_streams(streams: Optional[Streams]) -> None:
    """In the caller: write what the child printed to the redirected streams."""
    if not streams:
        return
    out, err = streams
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)


def make_body(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    memory_limited: bool,
    redirected: Optional[tuple[bool, bool]] = None,
    by_value: bool = False,
) -> Callable[[], tuple[str, list[Any]]]:
    """Build the callable the child runs; it returns ``(frame tag, parts)``.

    ``redirected`` says whether the caller's stdout and stderr are redirected
    (a fresh interpreter cannot see it itself); ``by_value`` pickles the
    result with cloudpickle, so that a fresh interpreter can return lambdas
    and functions of its ``__main__``.

    Everything needed to report running out of memory is allocated here, in
    the caller, before the fork and before the memory limit applies.
    """
    out_of_memory: tuple[str, list[Any]] = ("memory", [])

    def body() -> tuple[str, list[Any]]:
        child_state.enter(func)
        try:
            capture = _Capture(redirected)
            try:
                value = func(*args, **kwargs)
                if isinstance(value, types.CoroutineType):
                    # A coroutine function is awaited in the child, on a
                    # fresh event loop, under the same limits.
                    import asyncio

                    value = asyncio.run(value)
            except BaseException as exc:
                tag = "memory" if memory_limited and isinstance(exc, MemoryError) else "error"
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                exc.__traceback__ = None
                return tag, encode_error(exc, tb, streams=capture.text())
            try:
                return "value", encode_value(value, capture.text(), by_value=by_value)
            except MemoryError:
                raise
            except BaseException as exc:
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                problem = (
                    f"the function returned a {type(value).__qualname__} that cannot be pickled"
                    f" ({type(exc).__name__}: {exc})"
                )
                return "error", encode_error(exc, tb, problem=problem, streams=capture.text())
        except MemoryError:
            return out_of_memory if memory_limited else ("error", encode_error(MemoryError(), ""))
        finally:
            flush_stdio()

    return body


__all__ = [
    "child_state",
    "decode_error",
    "decode_value",
    "flush_stdio",
    "make_body",
    "replay_streams",
]
