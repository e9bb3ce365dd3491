"""Limits hold whatever else the calling process is doing: another thread
holding the GIL in a long C call, in every context.

Each test runs a separate caller process. Its limited function writes its pid
and start time to a file; the caller's main thread then holds the GIL for
``HOLD`` seconds in one C call (``usleep`` through ``ctypes.PyDLL``, which
never releases the GIL). This test process, which does not share that GIL,
watches the function's process and notes when it dies. The kill must happen
on time, while the GIL is still held; only the return may wait for it.
``time.monotonic`` is system-wide on Linux, so both processes share a clock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import alive, kill_quietly, read_line, start_caller

#: How long the caller's main thread holds the GIL.
HOLD = 5.0

CALLER = """
    import ctypes, json, os, threading, time
    from pynisher import Pynisher

    def limited(path):
        with open(path + ".tmp", "w") as handle:
            handle.write(f"{{os.getpid()}} {{time.monotonic()}}")
        os.rename(path + ".tmp", path)
        {workload}

    path = {path!r}
    done = {{}}

    def call():
        outcome = Pynisher(limited, context={context!r}, {options}).run(path)
        done["returned"] = time.monotonic()
        done["outcome"] = outcome

    thread = threading.Thread(target=call)
    thread.start()
    while not os.path.exists(path):
        time.sleep(0.005)
    print(open(path).read(), flush=True)
    hold = ctypes.PyDLL(None).usleep  # PyDLL: the GIL stays held during the call
    hold.argtypes = [ctypes.c_uint]
    print("holding", time.monotonic(), flush=True)
    hold(int({hold} * 1e6))
    print("released", time.monotonic(), flush=True)
    thread.join()
    outcome = done["outcome"]
    print(json.dumps({{
        "status": outcome.status.value,
        "detail": outcome.detail,
        "cpu_time": outcome.cpu_time,
        "peak_memory": outcome.peak_memory,
        "returned": done["returned"],
    }}), flush=True)
"""

SLEEP = "time.sleep(60)"
SPIN = "while True: pass"
# Touches 10 MiB every 10 ms, up to 1 GiB, then waits.
GROW = """chunks = []
        for _ in range(100):
            chunks.append(bytearray(10 << 20))
            time.sleep(0.01)
        time.sleep(60)"""


def run_while_the_gil_is_held(
    tmp_path: Path, context: str, workload: str, options: str
) -> tuple[float, float, float, dict[str, Any]]:
    """Runs the caller; returns when the function started, when its process
    died, when the GIL was released, and the outcome."""
    script = CALLER.format(
        workload=workload,
        path=str(tmp_path / "started"),
        context=context,
        options=options,
        hold=HOLD,
    )
    caller = start_caller(script)
    pid = 0
    try:
        words = read_line(caller, timeout=20).split()
        pid, started = int(words[0]), float(words[1])
        deadline = time.monotonic() + HOLD + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        died = time.monotonic()
        assert not alive(pid), "the limited function outlived the test"
        assert read_line(caller).split()[0] == "holding"
        released = float(read_line(caller, timeout=HOLD + 10).split()[1])
        outcome = json.loads(read_line(caller, timeout=20))
        caller.communicate(timeout=10)
        assert caller.returncode == 0
        return started, died, released, outcome
    finally:
        if pid:
            kill_quietly(pid)
        caller.kill()
        caller.communicate()


def test_the_wall_time_limit_kills_while_another_thread_holds_the_gil(
    tmp_path: Path, context: str
) -> None:
    wall = 0.5
    started, died, released, outcome = run_while_the_gil_is_held(
        tmp_path, context, SLEEP, f"wall_time={wall}, grace_period=0.2"
    )
    assert outcome["status"] == "wall_time", outcome
    # Killed on time (the function obeys SIGTERM), while the GIL was held.
    assert died - started < wall + 0.5, (died - started, outcome)
    assert died < released
    # The call returns as soon as the GIL is free (it may take the GIL
    # before the main thread reads the clock).
    assert outcome["returned"] - released < 1.0


def test_the_cpu_time_limit_kills_while_another_thread_holds_the_gil(
    tmp_path: Path, context: str
) -> None:
    cpu = 0.3
    _, died, released, outcome = run_while_the_gil_is_held(
        tmp_path, context, SPIN, f"cpu_time={cpu}, grace_period=0.2"
    )
    assert outcome["status"] == "cpu_time", outcome
    # Stopped by the supervisor's sampling near the limit, not by the
    # RLIMIT_CPU backstop at 1 s.
    assert outcome["cpu_time"] < cpu + 0.25, outcome
    assert died < released
    assert outcome["returned"] - released < 1.0


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_the_resident_limit_kills_while_another_thread_holds_the_gil(
    tmp_path: Path, context: str
) -> None:
    limit = 100 << 20
    started, died, released, outcome = run_while_the_gil_is_held(
        tmp_path, context, GROW, f'memory={limit}, memory_mode="resident"'
    )
    assert outcome["status"] == "memory", outcome
    # Sampled and killed near the limit, long before the function reaches
    # 1 GiB (about 1 s after it starts).
    assert outcome["peak_memory"] < limit + (150 << 20), outcome
    assert died < released
    assert died - started < 1.0
    assert outcome["returned"] - released < 1.0
