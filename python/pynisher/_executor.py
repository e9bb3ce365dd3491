"""Concurrent limited calls: `PynisherExecutor` for threads, `arun` for asyncio.

Each submitted call runs as its own limited child, supervised from a thread
of a thread pool: the core releases the GIL while it waits, so threads are
enough to run many calls at once.

Cancelling a call that is already running kills its whole process tree: each
call carries a `threading.Event` that the core's supervisor polls on the same
tick as Python signals (every 50 ms). Once it is set, the supervisor freezes
and kills the tree, reaps the child, and the call raises `CancelledError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, RUNNING
from contextlib import suppress
from typing import Any, Callable, Generic, Optional, TypeVar

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover
    from typing_extensions import ParamSpec

from ._api import Pynisher
from ._outcome import Outcome

P = ParamSpec("P")
T = TypeVar("T")

# How long `LimitedFuture.cancel()` waits for a cancelled call to end; the
# supervisor kills the tree within one 50 ms tick, this only bounds a stuck one.
_CANCEL_WAIT = 30.0


class _Call(Generic[T]):
    """One limited call that can be cancelled before or while it runs."""

    def __init__(self, limited: Pynisher[Any, T], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.limited = limited
        self.args = args
        self.kwargs = kwargs
        self.cancel_event = threading.Event()
        self.done = threading.Event()
        self.started = False
        self._lock = threading.Lock()

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_event.is_set()

    def run(self) -> Outcome[T]:
        """Runs the call in this thread; raises `CancelledError` if it was
        cancelled before it started or while it ran."""
        with self._lock:
            if self.cancel_event.is_set():
                self.done.set()
                raise concurrent.futures.CancelledError()
            self.started = True
        try:
            return self.limited._run(self.args, self.kwargs, cancel=self.cancel_event)
        finally:
            self.done.set()

    def stop(self) -> bool:
        """Cancels the call: it will not start, or its tree is killed on the
        supervisor's next tick. Returns True if the call had started and has
        not finished yet (so the caller may wait for `done`)."""
        with self._lock:
            self.cancel_event.set()
            return self.started and not self.done.is_set()


# --------------------------------------------------------------------------
# Futures and the executor.


def _as_pynisher(func: Any, options: Optional[dict[str, Any]]) -> Pynisher[Any, Any]:
    """The `Pynisher` a submitted callable runs as.

    A `Pynisher` object and a function decorated with `limit`/`restricted`
    bring their own limits; any other callable gets ``options``."""
    if isinstance(func, Pynisher):
        return func
    own = getattr(func, "__pynisher__", None)
    if isinstance(own, Pynisher):
        return own
    if options is None:
        raise TypeError(
            f"expected a Pynisher or a function decorated with pynisher.limit or "
            f"pynisher.restricted, got {func!r}"
        )
    return Pynisher(func, **options)


class LimitedFuture(concurrent.futures.Future[T]):
    """The future of a call submitted to `PynisherExecutor`.

    ``result()`` returns the function's value or raises what calling the
    `Pynisher` would raise (with ``raises=False``, a failed call gives
    ``None``). ``outcome()`` gives the call's `Outcome`. ``cancel()`` also
    works on a running call: it kills the call's whole process tree and
    returns once it is dead.
    """

    def __init__(self) -> None:
        super().__init__()
        self._call: Optional[_Call[T]] = None
        self._outcome: Optional[Outcome[T]] = None
        self._settling = False

    def cancel(self) -> bool:
        with self._condition:
            if self._state != RUNNING:
                return super().cancel()
            if self._settling or self._call is None:
                return False
            call = self._call
        if call.stop():
            call.done.wait(_CANCEL_WAIT)
        with self._condition:
            if self._state != RUNNING:
                return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def outcome(self, timeout: Optional[float] = None) -> Outcome[T]:
        """The call's `Outcome`; waits like ``result()``. Raises
        `CancelledError` if the call was cancelled and `TimeoutError` if it is
        not done within ``timeout`` seconds."""
        failure = self.exception(timeout)  # waits; raises if cancelled
        if self._outcome is None:
            # The call could not be run at all (the core itself failed).
            assert failure is not None
            raise failure
        return self._outcome

    def _settle(self, outcome: Optional[Outcome[T]], failure: Optional[BaseException]) -> None:
        """In the worker: completes the future unless a cancel got there first."""
        with self._condition:
            call = self._call
            if self._state != RUNNING or (call is not None and call.cancel_requested):
                return
            self._settling = True
        if failure is not None:
            self.set_exception(failure)
            return
        assert outcome is not None and call is not None
        self._outcome = outcome
        if outcome.error is None:
            self.set_result(outcome.value)  # type: ignore[arg-type]
        elif call.limited.raises:
            self.set_exception(outcome.error)
        else:
            self.set_result(None)  # type: ignore[arg-type]


class PynisherExecutor(concurrent.futures.Executor):
    """A `concurrent.futures` executor whose calls each run in a limited child.

    ``PynisherExecutor(max_workers=4, wall_time=10, memory="2GB")`` runs up to
    four calls at once, each under the given limits (any `Pynisher` option).
    ``submit(f, *args, **kwargs)`` returns a `LimitedFuture`; ``map`` works as
    for any executor. A `Pynisher` object, or a function decorated with
    `limit`/`restricted`, may be submitted too and keeps its own limits.

    ``cancel()`` on a running future kills its process tree. Leaving a
    ``with`` block because of an exception (Ctrl-C included) cancels every
    call that has not finished; ``shutdown(cancel_futures=True)`` does too.
    """

    def __init__(
        self,
        max_workers: Optional[int] = None,
        *,
        thread_name_prefix: str = "pynisher",
        **options: Any,
    ) -> None:
        # Bad options raise ValueError here, before anything runs, and their
        # warnings are given once, here, instead of at every submit.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Pynisher(_nothing, **options)
        for warning in caught:
            warnings.warn(warning.message, warning.category, stacklevel=2)
        self.options = {**options, "warnings": False}
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers: expected a positive int, got {max_workers!r}")
        self._max_workers = max_workers
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._max_workers, thread_name_prefix=thread_name_prefix
        )
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._pending_lock = threading.Lock()

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> LimitedFuture[T]:
        call: _Call[T] = _Call(_as_pynisher(fn, self.options), args, kwargs)
        future: LimitedFuture[T] = LimitedFuture()
        future._call = call
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        try:
            self._pool.submit(_work, future, call)
        except BaseException:
            future.cancel()
            raise
        return future

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Like `Executor.map`; on a timeout or an error, the calls still
        pending or running are cancelled and their trees killed, the one
        being waited for included (Python 3.9's own `Executor.map` leaves
        that one running)."""
        end = None if timeout is None else time.monotonic() + timeout
        futures = [self.submit(fn, *args) for args in zip(*iterables)]

        def results() -> Iterator[T]:
            try:
                futures.reverse()
                while futures:
                    future = futures.pop()
                    try:
                        value = future.result(None if end is None else end - time.monotonic())
                    except BaseException:
                        future.cancel()
                        raise
                    yield value
            finally:
                for future in futures:
                    future.cancel()

        return results()

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def cancel_all(self) -> None:
        """Cancels every call that has not finished, killing running trees."""
        with self._pending_lock:
            futures = list(self._pending)
        # Stop every call before waiting for any: a worker freed by the first
        # cancel must not start a call that is about to be cancelled too.
        for future in futures:
            call = getattr(future, "_call", None)
            if call is not None:
                call.cancel_event.set()
        for future in futures:
            future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As for `ThreadPoolExecutor`, except that ``cancel_futures=True``
        also cancels running calls, killing their trees."""
        if cancel_futures:
            self.cancel_all()
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        self.shutdown(wait=True, cancel_futures=exc_type is not None)


def _nothing() -> None:
    return None


def _work(future: LimitedFuture[T], call: _Call[T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        outcome = call.run()
    except BaseException as failure:
        future._settle(None, failure)
        return
    future._settle(outcome, None)


# --------------------------------------------------------------------------
# asyncio


async def arun_outcome(limited: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Outcome[T]:
    """Awaitable ``limited.run(*args, **kwargs)``: the call's `Outcome`.

    ``limited`` is a `Pynisher` or a function decorated with `limit` or
    `restricted`. The call runs in the event loop's default executor, so the
    loop keeps running meanwhile. Cancelling the awaiting task kills the
    call's process tree; the `CancelledError` propagates once it is dead.
    """
    call: _Call[T] = _Call(_as_pynisher(limited, None), args, kwargs)
    loop = asyncio.get_running_loop()
    running = loop.run_in_executor(None, call.run)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if call.stop():
            # Wait until the supervisor has reaped the killed child.
            while not running.done():
                with suppress(asyncio.CancelledError):
                    await asyncio.wait({running})
        else:
            running.cancel()
        if running.done() and not running.cancelled():
            running.exception()  # retrieved, so asyncio does not log it
        raise


async def arun(limited: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Awaitable ``limited(*args, **kwargs)``: the value, or the exception
    calling it would raise (``None`` for a failure with ``raises=False``).
    Cancelling the awaiting task kills the call's process tree."""
    outcome = await arun_outcome(limited, *args, **kwargs)
    if outcome.error is None:
        return outcome.value  # type: ignore[return-value]
    if _as_pynisher(limited, None).raises:
        raise outcome.error
    return None  # type: ignore[return-value]


__all__ = ["LimitedFuture", "PynisherExecutor", "arun", "arun_outcome"]
