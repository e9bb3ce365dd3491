"""What pynisher 1.0's clients rely on beyond the names in ``pynisher``: its
public module paths (``pynisher.exceptions``, ``pynisher.support``,
``pynisher.pynisher``) and the details of its argument handling."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from compat_funcs import opens_a_file, sleeper

import pynisher
from pynisher import Pynisher, PynisherException, Status

# Each module path of pynisher 1.0.10 and the public names it held.
MODULES_1_0 = {
    "pynisher.exceptions": [
        "CpuTimeoutException",
        "MemoryLimitException",
        "PynisherException",
        "TimeoutException",
        "WallTimeoutException",
    ],
    "pynisher.support": [
        "contexts",
        "supports",
        "supports_cputime",
        "supports_limit_decorator",
        "supports_memory",
        "supports_walltime",
    ],
    "pynisher.pynisher": ["EMPTY", "Pynisher", "limit", "restricted"],
}


def run_client(code: str) -> str:
    """Runs ``code`` in a fresh interpreter, as a client's module would be
    imported, and returns its stdout; fails with its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("module", sorted(MODULES_1_0))
def test_a_module_path_of_1_0_imports_and_holds_its_names(module: str) -> None:
    names = MODULES_1_0[module]
    out = run_client(
        f"""
        import {module}
        import pynisher
        m = {module}
        for name in {names!r}:
            assert getattr(m, name) is getattr(pynisher, name), name
        print(sorted(m.__all__))
        """
    )
    assert out.strip() == str(sorted(names))


def test_an_amltk_style_client_catches_through_pynisher_exceptions() -> None:
    # amltk's plugin: `import pynisher; import pynisher.exceptions`, then
    # catches the limit exceptions through that module.
    out = run_client(
        """
        import time

        import pynisher
        import pynisher.exceptions
        from pynisher.pynisher import Pynisher
        from pynisher.support import supports

        def slow():
            time.sleep(5)

        assert supports("wall_time")
        try:
            Pynisher(slow, wall_time=0.3, terminate_child_processes=True, context=None)()
        except pynisher.exceptions.WallTimeoutException as e:
            print("caught", type(e).__name__)
        """
    )
    assert out.strip() == "caught WallTimeoutException"


def test_restricted_without_arguments_says_to_pass_arguments() -> None:
    with pytest.raises(ValueError, match=r"^Please pass arguments to decorator `@restricted`"):

        @pynisher.restricted  # type: ignore[arg-type]
        def f() -> None:
            pass


def test_restricted_takes_the_name_first_as_in_1_0() -> None:
    decorated = pynisher.restricted("worker", wall_time=10)(sleeper)
    assert decorated.__pynisher__.name == "worker"  # type: ignore[attr-defined]
    assert decorated(0) == 0


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_an_executor_without_a_positive_number_of_workers_is_refused(workers: object) -> None:
    with pytest.raises(ValueError, match="max_workers"):
        pynisher.PynisherExecutor(max_workers=workers)  # type: ignore[arg-type]


@pytest.mark.parametrize("grace", [0, 0.0, "0", "0s", "0ms", (0, "s")])
def test_a_zero_grace_period_in_any_form_is_zero(grace: object) -> None:
    assert Pynisher(sleeper, grace_period=grace).grace_period == 0.0


def test_a_string_grace_period_is_parsed() -> None:
    assert Pynisher(sleeper, grace_period="250ms").grace_period == 0.25


def test_a_returned_open_file_is_the_same_error_in_every_context(
    context: str, tmp_path: Path
) -> None:
    path = tmp_path / "data.txt"
    path.write_text("contents")
    outcome = Pynisher(opens_a_file, context=context).run(str(path))
    assert outcome.status is Status.ERROR
    assert isinstance(outcome.error, PynisherException)
    assert "TextIOWrapper" in str(outcome.error)
    assert "cannot be pickled" in str(outcome.error)
