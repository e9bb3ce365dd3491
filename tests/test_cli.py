"""The ``pynisher`` command that ``pip install`` puts on the PATH: the same
command line as the Rust binary, run from the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pynisher


def installed_script() -> str:
    """The ``pynisher`` script of the installation that runs these tests."""
    places = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    if sys.platform != "win32":
        places.append(sysconfig.get_path("scripts", f"{os.name}_user"))
    for place in places:
        script = Path(place) / "pynisher"
        if script.is_file() and os.access(script, os.X_OK):
            return str(script)
    found = shutil.which("pynisher")
    assert found, f"no `pynisher` script in {places} or on PATH; is the package installed?"
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed_script(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    return value


def test_the_script_is_the_cli_of_this_version() -> None:
    done = run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pynisher", pynisher.__version__]
    done = run("--help")
    assert "--memory-mode" in done.stdout and "--foreground" in done.stdout


def test_time_limits_and_exit_codes() -> None:
    done = run("--wall-time", "300ms", "--json", "-", "--", "sleep", "10")
    assert done.returncode == 124, done.stderr
    assert report(done)["status"] == "wall_time"
    assert run("--", "sh", "-c", "exit 3").returncode == 3
    assert run("--", "pynisher-no-such-command").returncode == 127
    done = run("--wall-time", "soon", "--", "true")
    assert done.returncode == 125
    assert "--wall-time" in done.stderr


def test_a_python_memory_hog_gets_the_memory_code() -> None:
    # The default memory mode is the whole tree's resident memory.
    hog = "import time\nb = b'x' * (400 << 20)\ntime.sleep(30)"
    done = run(
        "--memory", "150MB", "--wall-time", "20", "--json", "-", "--", sys.executable, "-c", hog
    )
    assert done.returncode == 122, done.stderr
    result = report(done)
    assert result["status"] == "memory"
    assert result["limits"]["memory_mode"] == "resident"
    assert result["peak_memory"] > 150 << 20


def test_numpy_imports_under_100mb_of_resident_memory() -> None:
    code = "import numpy; print(numpy.arange(10).sum())"
    done = run("--memory", "100MB", "--json", "-", "--", sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("45\n")
    result = report(done)
    assert result["status"] == "ok"
    assert 0 < result["peak_memory"] < 100 << 20
