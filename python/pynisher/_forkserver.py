"""The forkserver context: one small server interpreter per caller process
and preload set, which forks a fresh child for each call.

The server is started lazily on first use. Modules named in ``preload`` are
imported once in the server, so each call is a cheap fork of a small process
that already has them. Results go straight from the child to the caller; the
server only forks, reaps and reports exit statuses. If the server dies, the
next call starts a new one; the server exits when its caller does.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading

from . import _core, _spawn

_lock = threading.Lock()
_servers: dict[tuple[str, ...], _core.ForkServer] = {}
_owner = os.getpid()
# Servers inherited through a fork of the caller belong to the parent: never
# touch them (dropping one would kill the parent's server).
_inherited: list[_core.ForkServer] = []


def command(preload: tuple[str, ...]) -> list[str]:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        f"import sys; sys.path.insert(0, {package_root!r}); "
        f"from pynisher._forkserver import serve; serve({preload!r}, {os.getpid()})"
    )
    return [sys.executable, *_spawn.interpreter_flags(), "-c", code]


def server_for(preload: tuple[str, ...]) -> _core.ForkServer:
    """The running server for ``preload``, started if needed."""
    global _owner
    with _lock:
        if _owner != os.getpid():
            _inherited.extend(_servers.values())
            _servers.clear()
            _owner = os.getpid()
        server = _servers.get(preload)
        if server is None or not server.is_alive():
            server = _core.ForkServer.start(command(preload))
            _servers[preload] = server
        return server


def discard(server: _core.ForkServer) -> None:
    """Forget a server that failed, so the next call starts a new one."""
    with _lock:
        for key, known in list(_servers.items()):
            if known is server:
                del _servers[key]


def serve(preload: tuple[str, ...], caller: int) -> None:
    """Entry point of the server interpreter, started by ``caller``."""
    # The server lives in its own process group; it ends with its caller.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sys.path.insert(0, os.getcwd())
    except FileNotFoundError:  # started from a deleted directory
        pass
    # What every call needs, imported once here instead of in each child:
    # cloudpickle alone would cost each call ~10 ms.
    import cloudpickle  # noqa: F401

    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as why:
            # The call that needs the module will report the import error.
            print(f"pynisher forkserver: could not preload {name}: {why}", file=sys.stderr)
    _core.forkserver_serve(_core.FORKSERVER_CONTROL_FD, caller, _child_main)


def _child_main(request_fd: int, result_fd: int, memfd: int, page_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    channel = _core.ChildChannel(result_fd, memfd)
    _spawn.run_request(channel, request_fd, page_fd, parent=os.getppid())
