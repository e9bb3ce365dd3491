"""The fork and spawn contexts: pickling that just works, decorators,
daemonic workers, and failures that are reported instead of hanging."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from context_funcs import allocate, decorated_depth, double, limited_in_worker, sleeper, spin
from tree_funcs import parent_of

from pynisher import (
    CpuTimeoutException,
    MemoryLimitException,
    Pynisher,
    PynisherException,
    Status,
    WallTimeoutException,
    contexts,
)

CONTEXTS = ["fork", "spawn", "forkserver"]


def test_contexts_lists_the_usable_start_methods() -> None:
    assert contexts == CONTEXTS


@pytest.mark.parametrize("context", CONTEXTS)
def test_each_status_in_each_context(context: str) -> None:
    assert Pynisher(double, context=context)(4) == 8
    with pytest.raises(WallTimeoutException):
        Pynisher(sleeper, wall_time=0.3, context=context)(10)
    with pytest.raises(CpuTimeoutException):
        Pynisher(spin, cpu_time=0.3, context=context)(10)
    with pytest.raises(MemoryLimitException):
        Pynisher(allocate, memory="100MB", context=context)(500)


@pytest.mark.parametrize("context", CONTEXTS)
def test_lambdas_and_closures_work(context: str) -> None:
    offset = 10
    assert Pynisher(lambda x: x + offset, context=context)(5) == 15

    def closure(x: int) -> int:
        return x * offset

    assert Pynisher(closure, context=context)(3) == 30


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_multiprocessing_context_object_is_accepted(context: str) -> None:
    limited = Pynisher(double, context=multiprocessing.get_context(context))
    assert limited.context == context
    assert limited(2) == 4


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_main_module_functions_and_lambdas_run(context: str, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            from pynisher import Pynisher

            def triple(x):
                return 3 * x

            square = lambda x: x * x

            if __name__ == "__main__":
                import sys
                context = sys.argv[1]
                print(Pynisher(triple, context=context)(3), Pynisher(square, context=context)(4))
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script), context], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["9", "16"]


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_decorated_function_does_not_limit_itself_twice(context: str) -> None:
    # Called directly, the decorator forks exactly one child for the whole
    # recursion, not one per level.
    pids = decorated_depth(2)
    assert len(set(pids)) == 1
    assert pids[0] != os.getpid()
    # A plain Pynisher of the undecorated function is not the decorated
    # function's own child (the child knows the call, not the name): the
    # decorated function called inside it is limited once, by its own limits,
    # and its recursion runs directly in that one child.
    limited = Pynisher(decorated_depth.__wrapped__, context=context)  # type: ignore[attr-defined]
    pids = limited(3)
    assert pids[0] != os.getpid()
    assert len(set(pids[1:])) == 1
    assert pids[1] not in (pids[0], os.getpid())


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_usage_excludes_start_up(context: str) -> None:
    started = time.monotonic()
    outcome = Pynisher(double, context=context).run(1)
    elapsed = time.monotonic() - started
    assert outcome.status is Status.OK
    # Start-up (a fresh interpreter, unpickling) costs tens of ms of CPU;
    # none of it is charged to the call, which itself does nothing.
    assert outcome.cpu_time < 0.02, outcome
    if context == "spawn":
        # Most of the elapsed time is interpreter start-up, not the call.
        assert outcome.wall_time < elapsed / 2, (outcome.wall_time, elapsed)


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_cpu_limit_is_net_of_start_up(context: str) -> None:
    outcome = Pynisher(spin, cpu_time=0.2, context=context).run(0.1)
    assert outcome.status is Status.OK, outcome.detail


class Unpicklable:
    def __reduce__(self) -> str:
        raise TypeError("this object refuses to be pickled")


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_an_unpicklable_argument_is_named_before_any_child_starts(context: str) -> None:
    with pytest.raises(PynisherException, match=r"argument 1 .*cannot be pickled"):
        Pynisher(lambda a, b: None, context=context)(1, Unpicklable())


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_a_module_that_cannot_be_imported_in_the_child_is_reported(
    context: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "vanishing_module.py"
    module.write_text("def hello():\n    return 'hi'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import vanishing_module

        limited = Pynisher(vanishing_module.hello, context=context)
        assert limited() == "hi"
        module.unlink()
        if context == "forkserver":
            # The server keeps its first import of the function's module;
            # without it each child imports the module itself.
            assert limited() == "hi"
            monkeypatch.setenv("PYNISHER_FORKSERVER_IMPORT_FUNCTION_MODULE", "0")
        with pytest.raises(PynisherException, match="could not load the function in the child"):
            limited()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("vanishing_module", None)


@pytest.mark.parametrize("context", CONTEXTS)
def test_works_inside_a_daemonic_pool_worker(context: str) -> None:
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(limited_in_worker, (context,)) == (42, "wall_time")


@pytest.mark.parametrize("context", CONTEXTS)
def test_works_inside_a_process_pool_executor_worker(context: str) -> None:
    mp = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp) as pool:
        assert pool.submit(limited_in_worker, context).result(timeout=60) == (42, "wall_time")


def kill_my_server() -> None:
    """Runs in a forkserver child: kills the server mid-call. The child's
    parent is the call's guardian, whose parent is the server."""
    os.kill(parent_of(os.getppid()), 9)
    import time

    time.sleep(30)


def test_a_forkserver_that_dies_mid_call_is_reported_and_replaced() -> None:
    started = time.monotonic()
    outcome = Pynisher(kill_my_server, context="forkserver", wall_time=20).run()
    assert outcome.status is Status.CRASHED
    assert "forkserver" in outcome.detail
    # The tree died with its server (the guardian watches it), long before
    # the limit.
    assert time.monotonic() - started < 10
    assert Pynisher(double, context="forkserver")(5) == 10


def preloaded_modules() -> bool:
    return "colorsys" in sys.modules


def test_preloaded_modules_are_imported_once_in_the_server() -> None:
    assert Pynisher(preloaded_modules, context="forkserver", preload=["colorsys"])()
    with pytest.raises(ValueError, match="preload"):
        Pynisher(double, preload="colorsys")
