"""Forkserver start-up with a preload module that is slow or never finishes
importing: the wait for the server is part of the call's start-up budget
(the wall-time limit or 10 s, whichever is longer), and cancellation ends
it at once."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import caller_funcs as funcs
import pytest

from pynisher import Pynisher, Status

#: The start-up budget for a wall-time limit under 10 s (STARTUP_BUDGET).
BUDGET = 10.0


def preload_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    """Writes module ``name`` and makes it importable by a new forkserver."""
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return name


def test_a_preload_that_never_finishes_ends_the_call_at_its_start_up_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = preload_module(
        tmp_path, monkeypatch, "hangs_on_import", "import time\ntime.sleep(3600)\n"
    )
    started = time.monotonic()
    outcome = Pynisher(funcs.returns_one, context="forkserver", preload=[module], wall_time=2).run()
    took = time.monotonic() - started
    assert outcome.status is Status.WALL_TIME, outcome.detail
    assert "preload" in outcome.detail, outcome.detail
    assert BUDGET - 0.5 < took < BUDGET + 3, took


def test_cancelling_a_call_waiting_for_its_forkserver_ends_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = preload_module(tmp_path, monkeypatch, "hangs_too", "import time\ntime.sleep(3600)\n")
    limited = Pynisher(funcs.returns_one, context="forkserver", preload=[module])
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(concurrent.futures.CancelledError):
        limited._run((), {}, cancel=cancel)
    assert time.monotonic() - started < 0.5 + 2


def test_a_slow_preload_within_the_budget_is_not_charged_to_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = preload_module(tmp_path, monkeypatch, "slow_import", "import time\ntime.sleep(1.5)\n")
    limited = Pynisher(funcs.returns_one, context="forkserver", preload=[module], wall_time=0.5)
    first = limited.run()
    assert first.status is Status.OK, first.detail
    # The server is warm now: the next call does not wait for the import.
    started = time.monotonic()
    assert limited.run().status is Status.OK
    assert time.monotonic() - started < 1.5


def test_a_call_its_forkserver_starts_late_is_still_held_to_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The caller waits for the server on its own thread for the first 50 ms
    # only; this start takes longer, so the supervision is handed to another
    # thread before the call even runs, and must still stop it.
    module = preload_module(tmp_path, monkeypatch, "slow_too", "import time\ntime.sleep(1.0)\n")
    limited = Pynisher(funcs.sleeps, context="forkserver", preload=[module], wall_time=0.5)
    started = time.monotonic()
    outcome = limited.run()
    took = time.monotonic() - started
    assert outcome.status is Status.WALL_TIME, outcome.detail
    assert 1.0 + 0.5 <= took < 1.0 + 0.5 + 2, took
