"""Limits and results at their edges, in every context: limits too large for
any clock, a CPU limit smaller than one sample, and results whose unpickling
raises ``SystemExit`` or ``KeyboardInterrupt``."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import caller_funcs as funcs
import pytest

from pynisher import Pynisher, PynisherException, Status

HUGE_LIMITS = [
    {"wall_time": sys.maxsize},
    {"wall_time": 1e19},
    {"cpu_time": sys.maxsize},
    {"cpu_time": 1e19},
    {"memory": sys.maxsize},
    {"memory": sys.maxsize, "memory_mode": "resident"},
    {"grace_period": sys.maxsize},
    {"grace_period": 1e19},
    {"wall_time": 1e19, "cpu_time": 1e19, "grace_period": 1e19, "memory": sys.maxsize},
]


@pytest.mark.parametrize("options", HUGE_LIMITS, ids=lambda o: ",".join(o))
def test_limits_beyond_the_clock_let_the_call_finish(context: str, options: dict[str, Any]) -> None:
    outcome = Pynisher(funcs.returns_one, context=context, **options).run()
    assert outcome.status is Status.OK, outcome.detail
    assert outcome.value == 1


@pytest.mark.parametrize(
    ("argument", "value"),
    [("memory", 2**64), ("memory", 1e30), ("wall_time", (1e17, "h")), ("cpu_time", "1e300h")],
)
def test_limits_no_number_can_hold_are_refused(argument: str, value: Any) -> None:
    with pytest.raises(ValueError, match=argument):
        Pynisher(funcs.returns_one, **{argument: value})


@pytest.mark.parametrize("grace", [sys.maxsize, 1e19])
def test_a_grace_period_beyond_the_clock_still_stops_at_the_wall_limit(
    context: str, grace: float
) -> None:
    # The function obeys SIGTERM, so the endless grace period is never needed.
    started = time.monotonic()
    outcome = Pynisher(funcs.sleeps, context=context, wall_time=0.2, grace_period=grace).run()
    assert outcome.status is Status.WALL_TIME, outcome.detail
    assert time.monotonic() - started < 0.2 + 5


def test_a_cpu_limit_smaller_than_a_sample_is_enforced(context: str) -> None:
    # 5 ms of CPU ends before the supervisor's first sample of the tree.
    for burn in [0.005] * 5 + [0.05]:
        outcome = Pynisher(funcs.burns, context=context, cpu_time=0.001).run(burn)
        assert outcome.status is Status.CPU_TIME, (burn, outcome.detail)
        assert outcome.cpu_time >= 0.001
        assert isinstance(outcome.error, PynisherException)


def test_a_call_under_its_cpu_limit_is_ok(context: str) -> None:
    outcome = Pynisher(funcs.burns, context=context, cpu_time=5).run(0.005)
    assert outcome.status is Status.OK, outcome.detail


@pytest.mark.parametrize(
    "func",
    [
        funcs.returns_exiting,
        funcs.returns_interrupting,
        funcs.raises_exiting,
        funcs.raises_interrupting,
    ],
    ids=lambda f: f.__name__,
)
def test_unpickling_that_exits_or_interrupts_never_escapes(
    context: str, func: Callable[[], Any]
) -> None:
    limited = Pynisher(func, context=context)
    outcome = limited.run()
    assert outcome.status is Status.ERROR, outcome.detail
    assert isinstance(outcome.error, PynisherException)
    assert "unpickled" in str(outcome.error), outcome.error
    with pytest.raises(PynisherException):
        limited()
