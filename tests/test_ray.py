"""pynisher inside a local Ray instance: tasks and actors run limited calls
in every context, and values, the function's exceptions and each limit's
status come back through Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

import ray_funcs  # noqa: E402
import remote_funcs  # noqa: E402

from pynisher import (  # noqa: E402
    CpuTimeoutException,
    MemoryLimitException,
    Outcome,
    Status,
    WallTimeoutException,
    contexts,
)

STATUSES = [Status.OK, Status.ERROR, Status.WALL_TIME, Status.CPU_TIME, Status.MEMORY]
# What calling (not run()) raises for each failing call of ray_funcs.calls.
RAISES = {
    1: remote_funcs.RemoteError,
    2: WallTimeoutException,
    3: CpuTimeoutException,
    4: MemoryLimitException,
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # Two worker CPUs, no dashboard, only the loopback interface; the workers
    # import ray_funcs from this folder.
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        job_config=ray.job_config.JobConfig(code_search_path=[str(Path(__file__).parent)]),
    )
    try:
        yield
    finally:
        ray.shutdown()


def check_outcomes(outcomes: list[Outcome[Any]]) -> None:
    assert [outcome.status for outcome in outcomes] == STATUSES
    assert outcomes[0].value == 0.01
    assert isinstance(outcomes[1].error, remote_funcs.RemoteError)
    assert outcomes[1].error.args == ("bad input", 7)
    for index, exception in RAISES.items():
        assert isinstance(outcomes[index].error, exception)


@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("context", contexts)
def test_tasks_bring_back_every_outcome(context: str) -> None:
    calls = remote_funcs.calls(context)
    check_outcomes(ray.get([ray_funcs.evaluate.remote(limited, args) for limited, args in calls]))
    limited, args = calls[0]
    assert ray.get(ray_funcs.call.remote(limited, args)) == 0.01
    for index, exception in RAISES.items():
        limited, args = calls[index]
        with pytest.raises(exception):
            ray.get(ray_funcs.call.remote(limited, args))


@pytest.fixture(scope="module")
def evaluator(local_ray: None) -> Iterator[Any]:
    actor = ray_funcs.Evaluator.remote()
    try:
        yield actor
    finally:
        ray.kill(actor)


@pytest.mark.parametrize("context", contexts)
def test_an_actor_brings_back_every_outcome(evaluator: Any, context: str) -> None:
    check_outcomes(ray.get([evaluator.outcome.remote(context, i) for i in range(len(STATUSES))]))
    assert ray.get(evaluator.call.remote(context, 0)) == 0.01
    for index, exception in RAISES.items():
        with pytest.raises(exception):
            ray.get(evaluator.call.remote(context, index))
