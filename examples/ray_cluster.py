"""Limited calls on a Ray cluster: tasks and an actor.

Build the limited callable on the driver and pass it to a task or an actor:
Ray pickles it (by value, with cloudpickle), the worker runs the call under
its limits, and the result, the function's exception, or the `Outcome`
comes back through Ray. The same code runs against a running cluster:
replace the local `ray.init(...)` with `ray.init(address="auto")`.

Run it with:  python3 examples/ray_cluster.py   (needs: pip install ray)
"""

from __future__ import annotations

import time

import ray

from pynisher import Outcome, Pynisher, WallTimeoutException


def train(seconds: float) -> float:
    time.sleep(seconds)
    return seconds * 10


@ray.remote
def evaluate(limited: Pynisher[[float], float], seconds: float) -> Outcome[float]:
    # run() never raises for a failed call: the Outcome says what happened.
    return limited.run(seconds)


@ray.remote
def call(limited: Pynisher[[float], float], seconds: float) -> float:
    # Calling raises what the call raised; Ray re-raises it on the driver.
    return limited(seconds)


@ray.remote
class Trainer:
    """An actor that keeps one limited callable and runs calls with it."""

    def __init__(self, wall_time: float) -> None:
        self.limited = Pynisher(train, wall_time=wall_time)

    def evaluate(self, seconds: float) -> Outcome[float]:
        return self.limited.run(seconds)


def main() -> None:
    # A local instance: two worker CPUs, no dashboard.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        limited = Pynisher(train, wall_time=1.0, memory="1GB")

        outcomes = ray.get([evaluate.remote(limited, s) for s in (0.1, 3.0)])
        for seconds, outcome in zip((0.1, 3.0), outcomes):
            print(f"task train({seconds}) -> {outcome.status.value} value={outcome.value}")

        try:
            ray.get(call.remote(limited, 5.0))
        except WallTimeoutException:
            # Ray re-raises it as a subclass of the call's own exception.
            print("task raised WallTimeoutException")

        trainer = Trainer.remote(1.0)
        for seconds in (0.2, 3.0):
            outcome = ray.get(trainer.evaluate.remote(seconds))
            print(f"actor train({seconds}) -> {outcome.status.value} value={outcome.value}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
