"""The spawn context: a fresh interpreter per call.

The caller sends the function, its arguments and the limits in a request
(by marshal where they are plain data and the function goes by reference,
else with plain pickle, or with cloudpickle where plain pickle would not
reproduce them, so lambdas, closures and functions defined in ``__main__``
work: see `_pickling`) and the core starts ``sys.executable`` running
:func:`main`. The child reads its request, restores the caller's
``sys.path`` and working directory, loads the function, applies the limits,
announces that start-up is over (so start-up is not charged to the call)
and runs the same child body as the fork context.

A child imports only what its call needs: this module, `_child`, `_pickling`
and the core (the package's ``__init__`` loads the API lazily), the C
pickler only for what is not plain data, and cloudpickle only for a pickle
that needs it.
"""

from __future__ import annotations

import os
import resource
import sys

from . import _child, _core, _pickling

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


def _describe(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    return text if len(text) <= 80 else text[:77] + "..."


# sys.executable, sys.warnoptions and the interpreter flags they were worked
# out from, then the flags: asked once, not on every call.
_flags: Optional[tuple[str, tuple[str, ...], list[str]]] = None


def interpreter_flags() -> list[str]:
    """The caller's interpreter flags (``-O``, ``-X``, ``-W``, ``-E``, ``-I``,
    ``-s``, ...) for a child interpreter, as multiprocessing passes them."""
    global _flags
    # The flags are fixed at start-up; warning options may be added later.
    if _flags is None or _flags[:2] != (sys.executable, tuple(sys.warnoptions)):
        import subprocess

        flags = list(subprocess._args_from_interpreter_flags())  # type: ignore[attr-defined]
        _flags = (sys.executable, tuple(sys.warnoptions), flags)
    return list(_flags[2])


def build_request(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    decorated: Any = None,
    limits: Any,
    name: Optional[str],
    memory_limited: bool,
    redirected: tuple[bool, bool],
    terminate_child_processes: bool,
) -> bytes:
    """Pickle one call for a fresh interpreter.

    The request itself is marshal data where it can be, and so is a call of
    a function importable by reference with plain-data arguments: the child
    then loads no pickler (see `_pickling`).

    Raises `PynisherException` naming the object that cannot be pickled,
    before any process starts.
    """
    call: Optional[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = None
    payload: Optional[bytes] = None
    if decorated is None and _pickling.by_reference(func) and _pickling.plain((args, kwargs)):
        call = (func.__module__, func.__qualname__, args, kwargs)
    else:
        payload = _pickle_call(func, args, kwargs, decorated)
    request = {
        "parent": os.getpid(),
        "sys_path": list(sys.path),
        "cwd": working_directory(),
        "limits": limits.__getnewargs_ex__()[1],
        "name": name,
        "memory_limited": memory_limited,
        "redirected": redirected,
        "terminate_child_processes": terminate_child_processes,
        "call": call,
        "payload": payload,
    }
    marshalled = _pickling.marshalled(request)
    return _MARSHALLED + marshalled if marshalled is not None else _pickling.dumps(request)


# The first byte of a request sent by marshal (a pickle starts with 0x80).
_MARSHALLED = b"M"


def _pickle_call(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], decorated: Any
) -> bytes:
    try:
        # One pickle, so a decorated function's wrapper and the name its
        # function calls it by stay one object in the child.
        return _pickling.dumps_for_interpreter((func, args, kwargs, decorated))
    except Exception as why:
        from ._exceptions import PynisherException

        culprit = "the function " + _describe(func)
        candidates = [("the function", func)]
        candidates += [(f"argument {i}", a) for i, a in enumerate(args)]
        candidates += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
        for label, obj in candidates:
            try:
                _pickling.dumps_for_interpreter(obj)
            except Exception:
                culprit = f"{label} {_describe(obj)}"
                break
        raise PynisherException(
            f"cannot send {culprit} to a spawned child: it cannot be pickled "
            f"({type(why).__name__}: {why})"
        ) from why


def working_directory() -> Optional[str]:
    """The caller's working directory, or None if it was deleted: the child
    then enters it through ``/proc/<caller>/cwd``, as a forked child would
    simply keep it."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


def command() -> list[str]:
    """The argv that starts a child interpreter running :func:`main`."""
    return interpreter_command("from pynisher._spawn import main\nmain()")


def interpreter_command(statement: str) -> list[str]:
    """The argv of a child interpreter that finds this package and runs ``statement``.

    Its start-up imports run from "/" when the caller's working directory was
    deleted: CPython 3.13.0-3.13.2 fail an import there with SystemError
    (CPython gh-130932). :func:`run_request` enters the caller's directory again
    before the function loads.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import os, sys\n"
        "try:\n    os.getcwd()\nexcept OSError:\n    os.chdir('/')\n"
        f"sys.path.insert(0, {package_root!r})\n"
        f"{statement}"
    )
    return [sys.executable, *interpreter_flags(), "-c", code]


def _read_request(fd: int) -> dict[str, Any]:
    size = os.fstat(fd).st_size
    data = bytearray()
    while len(data) < size and (chunk := os.pread(fd, size - len(data), len(data))):
        data += chunk
    request: dict[str, Any]
    if data[:1] == _MARSHALLED:
        request = _pickling.unmarshal(data[1:])
    else:
        request = _pickling.loads(data)
    return request


def run_request(channel: Any, request_fd: int, page_fd: int, *, parent: Optional[int]) -> None:
    """Run the call described by the request at ``request_fd`` in this fresh
    process and report on ``channel``. Never returns.

    First this process splits in two: it becomes the call's guardian (the
    parent of the call's whole tree, which watches ``parent``: the forkserver
    for its children, or ``None`` for the caller named in the request, and
    reports on the call's page ``page_fd``) and its child runs the call.

    The steps (split, load the function, apply the limits, ready, body, exit)
    are those of ``pynisher::child::CallProcess``, the one definition of
    their order; ``_core`` refuses a step out of order.
    """
    request = _read_request(request_fd)
    terminate = request["terminate_child_processes"]
    # The request's file carries the captured output back, if any.
    output_fd: Optional[int] = request_fd
    if not any(request["redirected"]):
        os.close(request_fd)
        output_fd = None
    # Start-up so far (the interpreter's, in a spawned child) stays with the
    # guardian; the call's process starts from zero CPU time.
    startup = resource.getrusage(resource.RUSAGE_SELF)
    _core.child_split(request["parent"] if parent is None else parent, terminate, page_fd)
    sys.path[:] = request["sys_path"]
    try:
        cwd = request["cwd"]
        os.chdir(cwd if cwd is not None else f"/proc/{request['parent']}/cwd")
        if request["call"] is not None:
            module, qualname, args, kwargs = request["call"]
            func, decorated = _pickling.find(module, qualname), None
        else:
            func, args, kwargs, decorated = _pickling.loads(request["payload"])
    except BaseException as exc:
        tb = _child.format_traceback(exc)
        problem = f"could not load the function in the child ({type(exc).__name__}: {exc})"
        channel.send("error", _child.encode_error(exc, tb, problem=problem, by_value=True))
        _child.flush_stdio()
        _core.child_exit(channel.sent)
    del request["payload"]
    body = _child.make_body(
        func,
        args,
        kwargs,
        memory_limited=request["memory_limited"],
        redirected=request["redirected"],
        output_fd=output_fd,
        by_value=True,
        decorated=decorated,
    )
    _core.child_apply_limits(_core.Limits(**request["limits"]), request["name"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    channel.ready(startup.ru_utime + usage.ru_utime, startup.ru_stime + usage.ru_stime)
    tag, parts, lend = body()
    try:
        channel.send(tag, parts, lend)
    except Exception:
        # The function closed or broke the result channel: exit without a
        # frame, which the caller reports as such.
        _core.child_exit(False)
    del parts
    _child.flush_stdio()
    _core.child_exit(channel.sent)


def main() -> None:
    """Entry point of a spawned child interpreter. Never returns."""
    run_request(_core.ChildChannel(), _core.REQUEST_FD, _core.REPORT_FD, parent=None)
