"""The ecosystem examples in examples/ run and show what they promise."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(output: str) -> dict[str, list[str]]:
    """The example's table, keyed by the first two columns."""
    table = {}
    for line in output.splitlines()[1:]:
        words = line.split()
        table[" ".join(words[:2])] = words[2:]
    return table


def test_smac_trial_loop(tmp_path: Path) -> None:
    table = rows(run_example("smac_trial_loop.py", tmp_path))
    statuses = {key.split()[1]: values[0] for key, values in table.items()}
    assert table["0 ok"][0] == "SUCCESS"
    assert statuses == {
        "ok": "SUCCESS",
        "slow": "TIMEOUT",
        "spin": "TIMEOUT",
        "hungry": "MEMOUT",
        "buggy": "CRASHED",
        "segfault": "CRASHED",
    }
    assert "unsupported learning rate" in " ".join(table["5 buggy"])
    assert "SIGSEGV" in " ".join(table["6 segfault"])


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="needs numpy")
def test_numpy_memory(tmp_path: Path) -> None:
    output = run_example("numpy_memory.py", tmp_path)
    status = {
        (words[0], words[1] + words[2]): words[3]
        for words in (line.split() for line in output.splitlines()[1:])
    }
    assert status == {
        ("address_space", "fill(50MB)"): "ok",
        ("address_space", "reserve(2048MB)"): "memory",
        ("address_space", "fill(600MB)"): "memory",
        ("resident", "fill(50MB)"): "ok",
        ("resident", "reserve(2048MB)"): "ok",
        ("resident", "fill(600MB)"): "memory",
    }


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None, reason="needs distributed (Dask)"
)
def test_dask_cluster(tmp_path: Path) -> None:
    output = run_example("dask_cluster.py", tmp_path)
    assert "remote call stopped: train: wall time" in output
    assert "train(0.1) -> ok" in output
    assert "train(3.0) -> wall_time" in output


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")
def test_ray_cluster(tmp_path: Path) -> None:
    output = run_example("ray_cluster.py", tmp_path)
    assert "task train(0.1) -> ok value=1.0" in output
    assert "task train(3.0) -> wall_time value=None" in output
    assert "task raised WallTimeoutException" in output
    assert "actor train(0.2) -> ok value=2.0" in output
    assert "actor train(3.0) -> wall_time value=None" in output
