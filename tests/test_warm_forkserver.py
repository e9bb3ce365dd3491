"""The warm forkserver: the server imports the function's module once, so each
call is a fork of a process that already has it; a module that fails or hangs
on import there is the call's error, within its limits; one whose import ends
the server is tried once more in a fresh server, then named in a
ForkServerError."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

from pynisher import Pynisher, Status, WallTimeoutException
from pynisher._exceptions import ForkServerError

CALLS = 4
OPT_OUT = "PYNISHER_FORKSERVER_IMPORT_FUNCTION_MODULE"


def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> ModuleType:
    """A module of its own name (sys.modules is shared by the whole run)
    whose import, outside this process, runs ``body``; each import appends
    the importing pid to ``imports.log``."""
    name = f"warm_{tmp_path.name.replace('-', '_')}"
    log = tmp_path / "imports.log"
    source = f"""
        import os, time

        with open({str(log)!r}, "a") as log:
            log.write(f"{{os.getpid()}}\\n")
        if os.getpid() != {os.getpid()}:
            {body}


        def trial(x):
            return (x + 1, os.getpid())
    """
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def importers(tmp_path: Path) -> list[int]:
    """The pids that imported the module, other than this process."""
    pids = [int(line) for line in (tmp_path / "imports.log").read_text().split()]
    return [pid for pid in pids if pid != os.getpid()]


def test_the_server_imports_the_function_module_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = make_module(tmp_path, monkeypatch, "pass")
    limited = Pynisher(module.trial, context="forkserver", wall_time=30)
    children = {limited(i)[1] for i in range(CALLS)}
    assert [limited(i)[0] for i in range(2)] == [1, 2]
    assert len(children) == CALLS
    # One import, in the server, and none in the calls' children.
    assert len(importers(tmp_path)) == 1
    assert not children & set(importers(tmp_path))


def test_the_opt_out_imports_the_module_in_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OPT_OUT, "0")
    module = make_module(tmp_path, monkeypatch, "pass")
    limited = Pynisher(module.trial, context="forkserver", wall_time=30)
    children = {limited(i)[1] for i in range(CALLS)}
    # Each call's process imported the module itself.
    assert set(importers(tmp_path)) == children
    assert len(importers(tmp_path)) == CALLS


def test_an_import_error_in_the_server_is_the_call_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = make_module(tmp_path, monkeypatch, "raise RuntimeError('broken at import')")
    started = time.monotonic()
    outcome = Pynisher(module.trial, context="forkserver", wall_time=5).run(1)
    assert time.monotonic() - started < 5 + 10
    assert outcome.status is Status.ERROR
    assert outcome.traceback is not None and "broken at import" in outcome.traceback
    # The server goes on serving.
    assert Pynisher(round, context="forkserver", wall_time=5)(2.4) == 2


def test_a_hanging_import_in_the_server_is_bounded_and_the_server_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = tmp_path / "server.pid"
    body = f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(3600)"
    module = make_module(tmp_path, monkeypatch, body)
    started = time.monotonic()
    outcome = Pynisher(module.trial, context="forkserver", wall_time=2).run(1)
    # Start-up may take the wall-time limit or 10 s, whichever is longer.
    assert time.monotonic() - started < 10 + 5
    assert outcome.status is Status.WALL_TIME
    assert isinstance(outcome.error, WallTimeoutException)
    assert "importing" in outcome.detail
    # The hung server was killed (it is gone, or a zombie until the next call
    # for this module reaps it), and calls go on.
    server = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while is_running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(server)
    assert Pynisher(round, context="forkserver", wall_time=5)(2.6) == 3


# Imports that end the process instead of raising. (No core file for the crash.)
KILLING_IMPORTS = {
    "os._exit": "os._exit(3)",
    "segfault": "import ctypes, resource; "
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0)); ctypes.string_at(0)",
    "SIGKILL": "import signal; os.kill(os.getpid(), signal.SIGKILL)",
}
HOW_IT_ENDED = {
    "os._exit": "exited with code 3",
    "segfault": "killed by SIGSEGV",
    "SIGKILL": "killed by SIGKILL",
}


@pytest.mark.parametrize("how", sorted(KILLING_IMPORTS))
def test_an_import_that_kills_the_server_is_retried_once_then_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    module = make_module(tmp_path, monkeypatch, KILLING_IMPORTS[how])
    started = time.monotonic()
    with pytest.raises(ForkServerError) as caught:
        Pynisher(module.trial, context="forkserver", wall_time=5).run(1)
    assert time.monotonic() - started < 5 + 10
    message = str(caught.value)
    assert repr(module.__name__) in message and HOW_IT_ENDED[how] in message, message
    # Two servers imported it: the first, and one fresh server.
    assert len(set(importers(tmp_path))) == 2
    # Other calls go on.
    assert Pynisher(round, context="forkserver", wall_time=5)(2.4) == 2


def test_a_preload_module_that_kills_the_server_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = make_module(tmp_path, monkeypatch, KILLING_IMPORTS["os._exit"])
    # The server finds preload modules on its own path.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(ForkServerError, match=repr(module.__name__)):
        Pynisher(round, context="forkserver", preload=[module.__name__])(2.4)
    assert len(set(importers(tmp_path))) == 2


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_lambdas_and_main_functions_still_travel_by_value(tmp_path: Path) -> None:
    assert Pynisher(lambda x: x * 3, context="forkserver", wall_time=30)(2) == 6
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            """
            import pynisher

            def triple(x):
                return 3 * x

            if __name__ == "__main__":
                limited = pynisher.Pynisher(triple, context="forkserver", wall_time=30)
                print(limited(5), pynisher.Pynisher(lambda: 7, context="forkserver")())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["15", "7"]
