"""`Pynisher`, `limit`, `restricted` and the support queries."""

from __future__ import annotations

import functools
import os
import pickle
import signal
import sys
import warnings as _warnings
from collections.abc import Sequence
from typing import Any, Callable, Generic, Literal, Optional, Protocol, TypeVar, Union, overload

if sys.version_info >= (3, 10):
    from typing import ParamSpec
else:  # pragma: no cover
    from typing_extensions import ParamSpec

from . import _child, _core, _forkserver, _spawn
from ._exceptions import (
    CpuTimeoutException,
    ForkServerError,
    MemoryLimitException,
    PynisherException,
    RemoteTraceback,
    TimeoutException,
    WallTimeoutException,
)
from ._outcome import Outcome, Status

P = ParamSpec("P")
T = TypeVar("T")

# Every start method pynisher knows, and those that work in this build.
_START_METHODS = ("fork", "spawn", "forkserver")
contexts: list[str] = ["fork", "spawn", "forkserver"]

_WRAP_KEYS = {
    "memory": (MemoryLimitException, Status.MEMORY),
    "cpu_time": (CpuTimeoutException, Status.CPU_TIME),
    "wall_time": (WallTimeoutException, Status.WALL_TIME),
    "pynisher": (PynisherException, Status.ERROR),
}

# The core's status names, looked up without the Enum's call machinery, which
# writes to many more pages (each a copy-on-write fault after a fork).
_STATUS_BY_VALUE: dict[str, Status] = {status.value: status for status in Status}

_LIMIT_EXCEPTIONS: dict[Status, type[PynisherException]] = {
    Status.WALL_TIME: WallTimeoutException,
    Status.CPU_TIME: CpuTimeoutException,
    Status.MEMORY: MemoryLimitException,
    Status.CRASHED: PynisherException,
}


class _Empty:
    """pynisher 1.0's marker for "no result"; kept for old code."""

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()

WrapErrors = Union[bool, Sequence[Any], dict[str, Sequence[Any]]]


def _is_multiprocessing_context(context: Any) -> bool:
    # Imported here, not at the top: it costs a spawned child tens of ms.
    import multiprocessing.context

    return isinstance(context, multiprocessing.context.BaseContext)


def _resolve_context(context: Any) -> str:
    if context is None:
        return "fork"
    if isinstance(context, str):
        method = context
    elif _is_multiprocessing_context(context):
        method = context.get_start_method()
    else:
        raise ValueError(
            f"context: expected None, one of {list(_START_METHODS)} or a multiprocessing "
            f"context, got {context!r}"
        )
    if method not in _START_METHODS:
        raise ValueError(f"context: unknown start method {method!r}; use one of {contexts}")
    if method not in contexts:
        raise ValueError(
            f"context: {method!r} is not available yet in this version of pynisher; "
            f"use one of {contexts}"
        )
    return method


def _check_wrap_errors(wrap_errors: Any) -> None:
    if isinstance(wrap_errors, bool):
        return
    if isinstance(wrap_errors, dict):
        unknown = sorted(set(wrap_errors) - set(_WRAP_KEYS))
        if unknown:
            raise ValueError(
                f"wrap_errors: unknown key(s) {unknown}; each must be one of {sorted(_WRAP_KEYS)}"
            )
        for key, specs in wrap_errors.items():
            _check_specs(f"wrap_errors[{key!r}]", specs)
        return
    if isinstance(wrap_errors, (list, tuple)):
        _check_specs("wrap_errors", wrap_errors)
        return
    raise ValueError(f"wrap_errors: expected a bool, a list or a dict, got {wrap_errors!r}")


def _check_specs(where: str, specs: Any) -> None:
    if not isinstance(specs, (list, tuple)):
        raise ValueError(f"{where}: expected a list of exception types or names, got {specs!r}")
    for spec in specs:
        ok = (
            isinstance(spec, str)
            or (isinstance(spec, type) and issubclass(spec, BaseException))
            or (
                isinstance(spec, tuple)
                and len(spec) >= 2
                and isinstance(spec[0], type)
                and issubclass(spec[0], OSError)
            )
        )
        if not ok:
            raise ValueError(
                f"{where}: {spec!r} is not an exception type, an exception name "
                "or an (OSError, errno) tuple"
            )


def _matches(err: BaseException, spec: Any) -> bool:
    """Exact-type match, as in pynisher 1.0: a subclass does not match."""
    if isinstance(spec, str):
        return type(err).__name__ == spec or type(err).__qualname__ == spec
    if isinstance(spec, tuple):
        return type(err) is spec[0] and getattr(err, "errno", None) == spec[1]
    return type(err) is spec


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside
    pynisher, however many of our own frames (decorators, ``limit``) are in
    between."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while (
        frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package
    ):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _callable_name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None:
        name = type(func).__name__
    return str(name)


class Pynisher(Generic[P, T]):
    """Run ``func`` in a child process under limits.

    See the README for every option. Calling the object runs ``func`` and
    returns its result, or raises the function's own exception or one of the
    limit exceptions; :meth:`run` returns an :class:`Outcome` instead.
    """

    WallTimeoutException = WallTimeoutException
    CpuTimeoutException = CpuTimeoutException
    MemoryLimitException = MemoryLimitException
    PynisherException = PynisherException
    TimeoutException = TimeoutException

    def __init__(
        self,
        func: Callable[P, T],
        *,
        name: Optional[str] = None,
        memory: Any = None,
        cpu_time: Any = None,
        wall_time: Any = None,
        grace_period: Any = 1,
        context: Any = None,
        raises: bool = True,
        warnings: bool = True,
        wrap_errors: WrapErrors = False,
        terminate_child_processes: bool = True,
        forceful_keyboard_interrupt: bool = True,
        memory_mode: str = "address_space",
        preload: Sequence[str] = (),
    ) -> None:
        if not callable(func):
            raise ValueError(f"func: expected a callable, got {func!r}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"name: expected a str or None, got {name!r}")
        self.func = func
        self.name = name
        # The function decorated with `limit`/`restricted` whose limits these
        # are; set by the decorator (see _child._ChildState).
        self._decorated: Optional[Callable[..., Any]] = None
        self._limits = _core.Limits(
            wall_time=wall_time,
            cpu_time=cpu_time,
            memory=memory,
            memory_mode=memory_mode,
            grace_period=grace_period,
        )
        if self._limits.memory_mode != "address_space" and not supports(
            f"memory_mode:{self._limits.memory_mode}"
        ):
            raise ValueError(
                f"memory_mode: {memory_mode!r} is not available yet in this version of "
                "pynisher; use 'address_space'"
            )
        self.context = _resolve_context(context)
        if isinstance(preload, str) or not all(isinstance(m, str) for m in preload):
            raise ValueError(f"preload: expected a list of module names, got {preload!r}")
        self.preload = tuple(preload)
        _check_wrap_errors(wrap_errors)
        self.raises = raises
        self.warnings = warnings
        self.wrap_errors = wrap_errors
        self.terminate_child_processes = terminate_child_processes
        self.forceful_keyboard_interrupt = forceful_keyboard_interrupt
        if warnings and self._limits.memory is not None and self._limits.memory < 1 << 20:
            _warnings.warn(
                f"memory limit of {self._limits.memory} bytes is below 1 MB; did you forget a "
                'unit? Plain numbers are bytes: use (300, "MB") or "300MB"',
                UserWarning,
                stacklevel=_user_stacklevel(),
            )

    # The limits, in seconds and bytes, after unit conversion.
    @property
    def memory(self) -> Optional[int]:
        return self._limits.memory

    @property
    def cpu_time(self) -> Optional[float]:
        return self._limits.cpu_time

    @property
    def wall_time(self) -> Optional[float]:
        return self._limits.wall_time

    @property
    def grace_period(self) -> float:
        return self._limits.grace_period

    @property
    def memory_mode(self) -> str:
        return self._limits.memory_mode

    def __enter__(self) -> Pynisher[P, T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"Pynisher({_callable_name(self.func)}, {self._limits!r}, context={self.context!r})"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        outcome = self.run(*args, **kwargs)
        if outcome.error is None:
            return outcome.value  # type: ignore[return-value]
        if self.raises:
            raise outcome.error
        return None  # type: ignore[return-value]

    def run(self, *args: P.args, **kwargs: P.kwargs) -> Outcome[T]:
        """Run the call and return its :class:`Outcome`; never raises for its failure."""
        return self._run(args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any], cancel: Any = None) -> Outcome[T]:
        """`run`, plus ``cancel``: an object whose ``is_set()`` the supervisor
        polls; once it is true the tree is killed and
        `concurrent.futures.CancelledError` raised."""
        memory_limited = self._limits.memory is not None
        name = self._label()
        redirected = _child.caller_redirects()
        # What the caller printed before the call comes out before what the
        # call prints; and a forked child, which inherits the buffers of the
        # caller's streams and flushes them before it exits, must not find the
        # caller's text there and write it a second time. (multiprocessing
        # flushes before it starts a process too.)
        _child.flush_stdio()
        # One file per call: it carries the request to a fresh interpreter,
        # and the child's captured output back (see _child.capture_output).
        call_file: Optional[int] = None
        if self.context != "fork" or any(redirected):
            call_file = os.memfd_create("pynisher-call", os.MFD_CLOEXEC)
        try:
            raw = self._start_and_wait(
                args, kwargs, cancel, memory_limited, name, redirected, call_file
            )
        finally:
            if call_file is not None:
                if any(redirected):
                    _child.replay_output(call_file)
                os.close(call_file)
        return self._outcome(raw)

    def _start_and_wait(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cancel: Any,
        memory_limited: bool,
        name: str,
        redirected: tuple[bool, bool],
        call_file: Optional[int],
    ) -> Any:
        if self.context == "fork":
            body = _child.make_body(
                self.func,
                args,
                kwargs,
                memory_limited=memory_limited,
                redirected=redirected,
                output_fd=call_file,
                decorated=self._decorated,
            )
            return _core.run_fork(
                body,
                self._limits,
                name=name,
                terminate_child_processes=self.terminate_child_processes,
                forceful_keyboard_interrupt=self.forceful_keyboard_interrupt,
                cancel=cancel,
            )
        assert call_file is not None
        request = _spawn.build_request(
            self.func,
            args,
            kwargs,
            decorated=self._decorated,
            limits=self._limits,
            name=name,
            memory_limited=memory_limited,
            redirected=redirected,
            terminate_child_processes=self.terminate_child_processes,
        )
        view = memoryview(request)
        while view:
            view = view[os.write(call_file, view) :]
        del view, request
        if self.context == "spawn":
            return _core.run_spawn(
                call_file,
                self._limits,
                argv=_spawn.command(),
                name=name,
                terminate_child_processes=self.terminate_child_processes,
                forceful_keyboard_interrupt=self.forceful_keyboard_interrupt,
                cancel=cancel,
            )
        return self._run_forkserver(call_file, cancel)

    def _run_forkserver(self, call_file: int, cancel: Any) -> Any:
        module = _forkserver.function_module(self.func)
        # A server that died between calls, or while importing its modules,
        # is replaced once; the call had not started, so retrying it is safe.
        for attempt in range(2):
            server = _forkserver.server_for(self.preload, module)
            try:
                return _core.run_forkserver(
                    server.process,
                    call_file,
                    self._limits,
                    terminate_child_processes=self.terminate_child_processes,
                    forceful_keyboard_interrupt=self.forceful_keyboard_interrupt,
                    cancel=cancel,
                )
            except ForkServerError as error:
                _forkserver.discard(server)
                if attempt == 1:
                    # An import that ends the server process (os._exit, a
                    # crash, SIGKILL) instead of raising killed the fresh
                    # server too: name it.
                    killed = server.killed_by_import()
                    if killed is not None:
                        raise ForkServerError(
                            f"{killed}, and so did a fresh server; the call did not start"
                        ) from error
                    raise
        raise AssertionError("unreachable")

    def _outcome(self, raw: Any) -> Outcome[T]:
        status = _STATUS_BY_VALUE[raw.status]
        if raw.terminal and status is Status.CRASHED and raw.signal == signal.SIGINT:
            # Ctrl-C went to the call, which had the terminal: it was the
            # caller's Ctrl-C all the same.
            raise KeyboardInterrupt
        value: Any = None
        error: Optional[BaseException] = None
        tb: Optional[str] = None
        if status is Status.OK:
            try:
                value = _child.decode_value(raw.payload)
            # BaseException: unpickling can run any code, and a SystemExit
            # or KeyboardInterrupt it raises is the call's failure, not the
            # caller's; run() never raises for a failure of the call.
            except BaseException as why:
                status = Status.ERROR
                error = PynisherException(
                    f"{self._label()}: the result could not be unpickled in the caller "
                    f"({type(why).__name__}: {why})"
                )
                error.__cause__ = why
        else:
            # Only a failed call needs its name (an error message names it).
            label = self._label()
            if raw.frame == "error" and status is Status.ERROR:
                error, tb = self._remote_error(raw, label)
                status, error = self._wrap(status, error, label)
            elif raw.frame == "memory" and status is Status.MEMORY:
                cause, tb = self._remote_error(raw, label)
                error = MemoryLimitException(f"{label}: {raw.detail}")
                error.__cause__ = cause
            else:
                error = _LIMIT_EXCEPTIONS[status](f"{label}: {raw.detail}")
                if raw.frame == "error":
                    # The function raised because the supervisor stopped it (a
                    # SIGTERM handler that raises): the limit is the status,
                    # the function's error its cause.
                    error.__cause__, tb = self._remote_error(raw, label)
        return Outcome(
            status=status,
            value=value,
            error=error,
            traceback=tb,
            wall_time=raw.wall_time,
            cpu_time=raw.cpu_user + raw.cpu_system,
            cpu_user=raw.cpu_user,
            cpu_system=raw.cpu_system,
            peak_memory=raw.peak_memory,
            exitcode=raw.exitcode,
            signal=raw.signal,
            detail=raw.detail,
        )

    def _label(self) -> str:
        """How errors name this call: its name, or the function's."""
        return self.name or _callable_name(self.func)

    def _remote_error(self, raw: Any, label: str) -> tuple[BaseException, Optional[str]]:
        """Rebuild the child's exception, with its traceback as ``__cause__``."""
        try:
            info = _child.decode_error(raw.payload)
        except BaseException as why:  # as in _outcome: unpickling runs any code
            return PynisherException(f"{label}: the error report was unreadable ({why})"), None
        if info is None:
            return MemoryError("the child ran out of memory while reporting the error"), None
        tb = info["traceback"] or None
        exc: Optional[BaseException] = None
        problem = info.get("problem")
        if problem is None and info["exception"] is not None:
            try:
                exc = pickle.loads(info["exception"])
            except BaseException as why:  # as in _outcome
                problem = (
                    f"raised {info['repr']}, which could not be unpickled in the caller "
                    f"({type(why).__name__}: {why})"
                )
        elif problem is None:
            problem = f"raised {info['repr']}, which cannot be pickled ({info['pickle_error']})"
        if isinstance(exc, KeyboardInterrupt) and raw.terminal:
            raise KeyboardInterrupt  # as in _outcome: Ctrl-C at the terminal
        if exc is not None and not isinstance(exc, Exception):
            # SystemExit, KeyboardInterrupt and other BaseExceptions from the
            # child must not exit or interrupt the caller.
            problem = f"raised {info['repr']}"
            exc = None
        if exc is None:
            exc = PynisherException(f"{label}: {problem}")
        if tb:
            exc.__cause__ = RemoteTraceback(tb)
        return exc, tb

    def _wrap(
        self, status: Status, error: BaseException, label: str
    ) -> tuple[Status, BaseException]:
        """Apply ``wrap_errors`` to the function's own exception."""
        spec = self.wrap_errors
        if spec is True or (
            isinstance(spec, (list, tuple)) and any(_matches(error, s) for s in spec)
        ):
            wrapped = PynisherException(f"{label}: {type(error).__name__}: {error}")
            wrapped.__cause__ = error
            return status, wrapped
        if isinstance(spec, dict):
            limits = {
                "memory": self._limits.memory,
                "cpu_time": self._limits.cpu_time,
                "wall_time": self._limits.wall_time,
                "pynisher": True,
            }
            for key, specs in spec.items():
                if limits[key] is None or not any(_matches(error, s) for s in specs):
                    continue
                exc_type, new_status = _WRAP_KEYS[key]
                wrapped = exc_type(
                    f"{label}: {type(error).__name__}: {error} (wrap_errors[{key!r}])"
                )
                wrapped.__cause__ = error
                return new_status, wrapped
        return status, error


def _decorate(func: Callable[P, T], options: dict[str, Any]) -> Callable[P, T]:
    limited = Pynisher(func, **options)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        if _child.child_state.is_running(wrapper):
            # Already inside this very function's own limited child.
            return func(*args, **kwargs)
        return limited(*args, **kwargs)

    limited._decorated = wrapper
    wrapper.__pynisher__ = limited  # type: ignore[attr-defined]
    return wrapper


class _Decorator(Protocol):
    """What ``@limit(**options)`` and ``@restricted(**options)`` return: a
    decorator that keeps the function's parameters and return type."""

    def __call__(self, func: Callable[P, T], /) -> Callable[P, T]: ...


class _OptionalDecorator(Protocol):
    """The same with ``raises=False``: a failed call returns ``None``."""

    def __call__(self, func: Callable[P, T], /) -> Callable[P, Optional[T]]: ...


@overload
def limit(
    func: Callable[P, T], /, *, raises: Literal[False], **options: Any
) -> Pynisher[P, Optional[T]]: ...
@overload
def limit(func: Callable[P, T], /, **options: Any) -> Pynisher[P, T]: ...
@overload
def limit(
    func: None = None, /, *, raises: Literal[False], **options: Any
) -> _OptionalDecorator: ...
@overload
def limit(func: None = None, /, **options: Any) -> _Decorator: ...
def limit(func: Optional[Callable[P, T]] = None, /, **options: Any) -> Any:
    """``limit(f, **options)`` returns a :class:`Pynisher` (the pynisher 1.0 form);
    ``@limit(**options)`` decorates a function."""
    if func is None:
        return functools.partial(_decorate, options=options)
    return Pynisher(func, **options)


@overload
def restricted(
    name: Optional[str] = None, /, *, raises: Literal[False], **options: Any
) -> _OptionalDecorator: ...
@overload
def restricted(name: Optional[str] = None, /, **options: Any) -> _Decorator: ...
def restricted(name: Any = None, /, **options: Any) -> Any:
    """The pynisher 1.0 decorator: ``@restricted(wall_time=1)``; as in 1.0, the
    child's name may also be given first, ``@restricted("trainer", ...)``."""
    if callable(name):
        # `@restricted` without parentheses hands over the function itself.
        raise ValueError(
            "Please pass arguments to decorator `@restricted`, for example "
            "`@restricted(wall_time=10)`, or use `limit(func, ...)`"
        )
    if name is not None:
        options["name"] = name
    return functools.partial(_decorate, options=options)


_SUPPORT_ALIASES = {"walltime": "wall_time", "cputime": "cpu_time"}


def _support_table() -> dict[str, bool]:
    linux = sys.platform.startswith("linux")
    table = {
        "wall_time": linux,
        "cpu_time": linux,
        "memory": linux,
        "decorator": linux,
        "memory_mode:address_space": linux,
        "memory_mode:resident": linux,
        "cgroup_v2": linux and _core.cgroup_v2_unavailable() is None,
    }
    for method in _START_METHODS:
        table[f"context:{method}"] = method in contexts
    return table


def supports(kind: str) -> bool:
    """Whether ``kind`` works on this machine.

    Kinds: ``"wall_time"``, ``"cpu_time"``, ``"memory"``, ``"decorator"``
    (``"walltime"`` and ``"cputime"`` too), ``"memory_mode:address_space"``,
    ``"memory_mode:resident"``, ``"context:fork"``, ``"context:spawn"``,
    ``"context:forkserver"`` and ``"cgroup_v2"``.
    """
    table = _support_table()
    key = _SUPPORT_ALIASES.get(kind.lower(), kind.lower()) if isinstance(kind, str) else kind
    if key not in table:
        raise ValueError(f"kind: unknown kind {kind!r}; expected one of {sorted(table)}")
    return table[key]


def supports_walltime() -> bool:
    return supports("wall_time")


def supports_cputime() -> bool:
    return supports("cpu_time")


def supports_memory() -> bool:
    return supports("memory")


def supports_limit_decorator() -> bool:
    return supports("decorator")
