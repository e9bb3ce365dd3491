"""The forkserver context: one small server interpreter per caller process,
preload set and function module, which forks a fresh child for each call.

The server is started lazily on first use. It imports the modules named in
``preload`` and the module the function is defined in once, so each call is a
cheap fork of a process that already has them (unless the environment sets
``PYNISHER_FORKSERVER_IMPORT_FUNCTION_MODULE=0``). Results go straight from
the child to the caller; the server only forks, reaps and reports exit
statuses. If the server dies, the next call starts a new one; the server exits
when its caller does.

Before it serves, the server notes each module it imports in its import log,
so that a server killed by an import (``os._exit``, a crash, SIGKILL) is
reported with the module's name.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any, Optional

from . import _child, _core, _pickling, _spawn

_lock = threading.Lock()


class Server:
    """A running forkserver (`process`) and its import log: a file where the
    server writes the name of each module on a line of its own before it
    imports it, and an empty line once it serves."""

    def __init__(self, argv: list[str]) -> None:
        self.log = os.memfd_create("pynisher-forkserver-imports", os.MFD_CLOEXEC)
        try:
            self.process = _core.ForkServer.start(argv, imports_fd=self.log)
        except BaseException:
            os.close(self.log)
            raise
        weakref.finalize(self, os.close, self.log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def killed_by_import(self) -> Optional[str]:
        """If the server is dead and an import it had begun was never
        finished, which ended it: the module's name and how the server
        ended, as a sentence."""
        # The caller may see the server's sockets close a moment before the
        # kernel reports its exit.
        deadline = time.monotonic() + 1.0
        while self.process.is_alive():
            if time.monotonic() > deadline:
                return None
            time.sleep(0.001)
        lines = os.pread(self.log, os.fstat(self.log).st_size, 0).decode().split("\n")
        # "a\nb\n" ends while importing b; "a\nb\n\n" once it serves.
        if len(lines) < 2 or lines[-2] == "":
            return None
        return f"the forkserver died while importing {lines[-2]!r}{self._how_it_ended()}"

    def _how_it_ended(self) -> str:
        # The server is not reaped while its handle lives: the kernel keeps
        # its wait status in the last field of /proc/<pid>/stat (Linux 3.5+).
        try:
            with open(f"/proc/{self.pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return ""
        if fields[0] != "Z" or len(fields) < 50:
            return ""
        status = int(fields[49])
        if os.WIFSIGNALED(status):
            try:
                return f" (killed by {signal.Signals(os.WTERMSIG(status)).name})"
            except ValueError:
                return f" (killed by signal {os.WTERMSIG(status)})"
        return f" (exited with code {os.WEXITSTATUS(status)})"


# Keyed by the preload tuple and the function's module (name and file, or
# None), least recently used first.
_servers: dict[tuple[tuple[str, ...], Optional[tuple[str, str]]], Server] = {}
# Servers beyond this many are let go, least recently used first; one still
# running a call lives until that call returns (the call holds it).
MAX_SERVERS = 8
IMPORT_FUNCTION_MODULE = "PYNISHER_FORKSERVER_IMPORT_FUNCTION_MODULE"
_owner = os.getpid()
# Servers inherited through a fork of the caller belong to the parent: never
# touch them (dropping one would kill the parent's server).
_inherited: list[Server] = []


def function_module(func: Any) -> Optional[tuple[str, str]]:
    """The module (name, file) the server should import for ``func``, or
    None: the opt-out is set, or the function travels by value (``__main__``,
    a lambda's module registered by value) or has no importable module."""
    if os.environ.get(IMPORT_FUNCTION_MODULE, "1") == "0":
        return None
    target = getattr(func, "func", func)  # functools.partial
    name = getattr(target, "__module__", None)
    if not isinstance(name, str):
        name = type(target).__module__
    if name in ("__main__", "__mp_main__", "builtins"):
        return None
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is None or not isinstance(path, str) or _pickling.registered_by_value(name):
        return None
    return name, path


def command(preload: tuple[str, ...], module: Optional[str] = None) -> list[str]:
    sys_path = list(sys.path) if module is not None else None
    cwd = _spawn.working_directory()
    return _spawn.interpreter_command(
        "from pynisher._forkserver import serve\n"
        f"serve({preload!r}, {os.getpid()}, {module!r}, {sys_path!r}, {cwd!r})"
    )


def server_for(preload: tuple[str, ...], module: Optional[tuple[str, str]] = None) -> Server:
    """The running server for ``preload`` and ``module``, started if needed."""
    global _owner
    key = (preload, module)
    with _lock:
        if _owner != os.getpid():
            _inherited.extend(_servers.values())
            _servers.clear()
            _owner = os.getpid()
        server = _servers.pop(key, None)
        if server is None or not server.is_alive():
            server = Server(command(preload, module and module[0]))
        _servers[key] = server
        while len(_servers) > MAX_SERVERS:
            del _servers[next(iter(_servers))]
        return server


def discard(server: Server) -> None:
    """Forget a server that failed, so the next call starts a new one."""
    with _lock:
        for key, known in list(_servers.items()):
            if known is server:
                del _servers[key]


def serve(
    preload: tuple[str, ...],
    caller: int,
    module: Optional[str] = None,
    sys_path: Optional[list[str]] = None,
    cwd: Optional[str] = None,
) -> None:
    """Entry point of the server interpreter, started by ``caller``; it
    imports ``module`` (the function's) with the caller's ``sys_path``, and finds
    modules in the caller's working directory ``cwd`` (None if it was deleted)."""
    # The server lives in its own process group; it ends with its caller.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys_path is not None:
        # The caller's first, to find the function's module as the caller
        # does; then the server's own (its PYTHONPATH may name preload modules).
        sys.path[:] = sys_path + [entry for entry in sys.path if entry not in sys_path]
    if cwd is not None:
        sys.path.insert(0, cwd)
    log = _core.FORKSERVER_IMPORTS_FD

    def note(line: str) -> None:
        try:
            os.write(log, f"{line}\n".encode())
        except OSError:
            pass

    # Imported once here instead of in each child that needs it (a call whose
    # function, arguments or result travel by value): it would cost such a
    # call ~10 ms.
    note("cloudpickle")
    import cloudpickle  # noqa: F401

    for name in preload:
        note(name)
        try:
            importlib.import_module(name)
        except Exception as why:
            # The call that needs the module will report the import error.
            print(f"pynisher forkserver: could not preload {name}: {why}", file=sys.stderr)
    if module is not None:
        note(module)
        try:
            importlib.import_module(module)
        # Whatever the import raises (SystemExit too), each call imports the
        # module again in its child and reports the error with its traceback.
        except BaseException:
            pass
    note("")
    try:
        os.close(log)  # the calls' children must not inherit it
    except OSError:
        pass
    # What the imports printed and left in the buffers would otherwise be
    # written again by every child, which flushes them before it exits.
    _child.flush_stdio()
    _core.forkserver_serve(_core.FORKSERVER_CONTROL_FD, caller, _child_main)


def _child_main(request_fd: int, result_fd: int, memfd: int, page_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    channel = _core.ChildChannel(result_fd, memfd)
    _spawn.run_request(channel, request_fd, page_fd, parent=os.getppid())
