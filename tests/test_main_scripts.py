"""Calls made from a real main script (``python script.py``), as users run
them: functions and exception classes defined in ``__main__``, the same from
inside ``multiprocessing`` pools started by fork, spawn and forkserver (where
the script is the module ``__mp_main__``), and the caller's interpreter
flags, in every pynisher context."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import pynisher

# Defines, in the script's __main__, what every call below runs.
MAIN_DEFINITIONS = """
import json
import sys
import time
from typing import TypeVar

import pynisher

# An argument of the script that plain pickle would send by reference (its
# reduction is its name): it must travel by value, even with a function that
# travels by reference (getattr).
T = TypeVar("T")


class MainError(Exception):
    pass


def double(x):
    return 2 * x


def fails(x):
    raise MainError("bad input", x)


def returns_main_error():
    return MainError("as a value")


def sleeps(seconds):
    time.sleep(seconds)


def spins():
    while True:
        pass


def allocates(mb):
    return len(bytearray(mb << 20))


def calls_in(context):
    \"\"\"Every kind of outcome of a limited call, as plain data.\"\"\"
    report = {}
    limited = pynisher.Pynisher(double, context=context)
    report["value"] = limited(21)
    report["TypeVar"] = pynisher.Pynisher(getattr, context=context)(T, "__name__")
    try:
        pynisher.Pynisher(fails, context=context)(7)
    except MainError as e:
        report["error"] = ["MainError caught", list(e.args), type(e) is MainError]
    except Exception as e:
        report["error"] = [f"missed: {type(e).__name__}: {e}"]
    returned = pynisher.Pynisher(returns_main_error, context=context)()
    report["returned class"] = type(returned) is MainError
    sleeper = pynisher.Pynisher(sleeps, wall_time=0.3, context=context)
    report["wall_time"] = str(sleeper.run(10).status)
    spinner = pynisher.Pynisher(spins, cpu_time=0.3, context=context)
    report["cpu_time"] = str(spinner.run().status)
    allocator = pynisher.Pynisher(allocates, memory=(50, "MB"), context=context)
    report["memory"] = str(allocator.run(200).status)
    return report
"""

EXPECTED_REPORT = {
    "value": 42,
    "TypeVar": "T",
    "error": ["MainError caught", ["bad input", 7], True],
    "returned class": True,
    "wall_time": "wall_time",
    "cpu_time": "cpu_time",
    "memory": "memory",
}


def run_script(tmp_path: Path, body: str, *flags: str, timeout: float = 120) -> Any:
    """Runs a script made of MAIN_DEFINITIONS and ``body`` as ``python
    [flags] script.py``; returns the JSON it prints last."""
    script = tmp_path / "main_script.py"
    script.write_text(MAIN_DEFINITIONS + textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, *flags, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_functions_and_exceptions_of_the_main_script_in_every_context(tmp_path: Path) -> None:
    # The README's custom-exception example: a class defined in __main__ is
    # caught as itself, whichever context ran the call.
    reports = run_script(
        tmp_path,
        """
        if __name__ == "__main__":
            print(json.dumps({c: calls_in(c) for c in pynisher.contexts}))
        """,
    )
    assert reports == {context: EXPECTED_REPORT for context in pynisher.contexts}


@pytest.mark.parametrize("pool_method", ["fork", "spawn", "forkserver"])
def test_calls_inside_a_multiprocessing_pool_worker_in_every_context(
    tmp_path: Path, pool_method: str
) -> None:
    # Under a spawn or forkserver pool the script is `__mp_main__` in the
    # worker, which no fresh interpreter can import.
    reports = run_script(
        tmp_path,
        f"""
        import multiprocessing

        if __name__ == "__main__":
            with multiprocessing.get_context({pool_method!r}).Pool(1) as pool:
                reports = {{c: pool.apply(calls_in, (c,)) for c in pynisher.contexts}}
                module = pool.apply(getattr, (double, "__module__"))
            print(json.dumps({{"module": module, "reports": reports}}))
        """,
    )
    assert reports["module"] == ("__main__" if pool_method == "fork" else "__mp_main__")
    assert reports["reports"] == {context: EXPECTED_REPORT for context in pynisher.contexts}


FLAGS = ["-O", "-E", "-s", "-X", "utf8", "-W", "ignore::UserWarning"]


def test_the_callers_interpreter_flags_reach_the_child_in_every_context(tmp_path: Path) -> None:
    report = run_script(
        tmp_path,
        """
        def flags():
            assert False, "asserts are off under -O"
            f = sys.flags
            return [f.optimize, f.ignore_environment, f.no_user_site, f.utf8_mode, sys.warnoptions]

        if __name__ == "__main__":
            report = {c: pynisher.Pynisher(flags, context=c)() for c in pynisher.contexts}
            print(json.dumps({"caller": flags(), **report}))
        """,
        *FLAGS,
    )
    expected = [1, 1, 1, 1, ["ignore::UserWarning"]]
    assert report == {"caller": expected, **{c: expected for c in pynisher.contexts}}
