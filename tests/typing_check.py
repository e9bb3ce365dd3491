"""Static typing of the public API, checked with ``mypy --strict tests/typing_check.py``.

Nothing here runs under pytest. Each ``assert_type`` pins the type a checker
must infer; each ``# type: ignore[...]`` marks a call the checker must reject
(``--strict`` includes ``--warn-unused-ignores``, so a call that is wrongly
accepted fails the check).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Callable, Optional

from typing_extensions import assert_type

import pynisher
from pynisher import (
    LimitedFuture,
    Outcome,
    Pynisher,
    PynisherExecutor,
    Status,
    arun,
    arun_outcome,
    limit,
    restricted,
)


def train(n_rows: int, *, scale: float = 1.0) -> list[float]:
    return [scale] * n_rows


# --- Pynisher ---------------------------------------------------------------

limited = Pynisher(train, wall_time=10, memory=(500, "MB"))
rows: list[float] = limited(3)
assert_type(limited(3, scale=2.0), list[float])
limited("three")  # type: ignore[arg-type]
limited(3, scale="big")  # type: ignore[arg-type]
limited(3, unknown=1)  # type: ignore[call-arg]

outcome = limited.run(3)
assert_type(outcome, Outcome[list[float]])
assert_type(outcome.status, Status)
assert_type(outcome.value, Optional[list[float]])
assert_type(outcome.result(), list[float])
assert_type(outcome.error, Optional[BaseException])
assert_type(outcome.wall_time, float)
assert_type(outcome.peak_memory, int)
limited.run("three")  # type: ignore[arg-type]

with Pynisher(train, cpu_time=1.5) as in_context:
    assert_type(in_context(1), list[float])

assert_type(limited.memory, Optional[int])
assert_type(limited.wall_time, Optional[float])

# --- limit: the 1.0 form returns a Pynisher ---------------------------------

by_limit = limit(train, wall_time=1)
assert_type(by_limit(2), list[float])
assert_type(by_limit.run(2), Outcome[list[float]])
by_limit("two")  # type: ignore[arg-type]

# With raises=False a failed call returns None, and the types say so.
assert_type(limit(train, raises=False, wall_time=1)(2), Optional[list[float]])
assert_type(limit(train, raises=True)(2), list[float])

# --- limit and restricted as decorators keep the signature ------------------


@limit(wall_time=1)
def decorated(x: int, y: str = "") -> bool:
    return bool(x)


assert_type(decorated(1), bool)
assert_type(decorated(1, y="a"), bool)
decorated("1")  # type: ignore[arg-type]
decorated(1, z=2)  # type: ignore[call-arg]


@restricted(memory="1GB")
def restricted_fn(values: list[int]) -> int:
    return sum(values)


assert_type(restricted_fn([1, 2]), int)
restricted_fn(["a"])  # type: ignore[list-item]


@limit(wall_time=1, raises=False)
def notify_remote_server() -> str:
    return "notified"


assert_type(notify_remote_server(), Optional[str])
if (response := notify_remote_server()) is None:  # fine under --strict-equality
    pass


@restricted(raises=False)
def maybe(x: int) -> int:
    return x


assert_type(maybe(1), Optional[int])

keeps_signature: Callable[[int, str], bool] = decorated
wrong_signature: Callable[[str], bool] = decorated  # type: ignore[assignment]

# --- executor and asyncio ---------------------------------------------------

with PynisherExecutor(max_workers=2, wall_time=5) as executor:
    future = executor.submit(train, 3, scale=0.5)
    assert_type(future, LimitedFuture[list[float]])
    assert_type(future.result(), list[float])
    assert_type(future.outcome(), Outcome[list[float]])
    executor.submit(train, "3")  # type: ignore[arg-type]
    mapped = executor.map(train, [1, 2])
    assert_type(mapped, Iterator[list[float]])


async def use_asyncio() -> None:
    value = await arun(limited, 3)
    assert_type(value, list[float])
    assert_type(await arun(decorated, 1), bool)
    assert_type(await arun_outcome(limited, 3), Outcome[list[float]])
    await arun(limited, "3")  # type: ignore[arg-type]


asyncio.run(use_asyncio())

# --- support queries and the 0.6 shim ---------------------------------------

assert_type(pynisher.supports("wall_time"), bool)
assert_type(pynisher.contexts, list[str])
old_style = pynisher.enforce_limits(wall_time_in_s=10, mem_in_mb=100)(train)
old_style(3)
if old_style.exit_status is pynisher.TimeoutException:
    pass
assert_type(old_style.wall_clock_time, Optional[float])
assert_type(old_style.exitcode, Optional[int])
