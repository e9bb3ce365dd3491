"""The short soak, as CI runs it: ``scripts/soak.py --calls 300 --threads 4``
in a fresh interpreter must pass every call and leave the caller's fds,
threads, zombie children and RSS flat (the script checks those itself and
exits non-zero otherwise). The full soak is ``python3 scripts/soak.py``; see
docs/reliability.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"
CALLS = 300


@pytest.mark.slow
def test_the_short_soak_passes() -> None:
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--calls", str(CALLS), "--threads", "4"],
        cwd=SOAK.parent.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report
    lines = proc.stdout.splitlines()
    assert f"{CALLS} passed, 0 failed" in lines, report
    assert not any(line.startswith("PROBLEM:") for line in lines), report
    statuses = next(line for line in lines if line.startswith("statuses:"))
    for status in ("ok", "error", "wall_time", "cpu_time", "memory", "crashed"):
        assert re.search(rf"'{status}': \d+", statuses), report
