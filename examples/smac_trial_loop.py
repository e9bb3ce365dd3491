"""An SMAC-style trial loop: each configuration is evaluated in a limited
child, and the way the call ended becomes the trial's status.

SMAC3 calls ``limit(f, memory=..., wall_time=..., wrap_errors=True)`` and
catches `WallTimeoutException` and `MemoryLimitException`; everything else
the target function raises counts as a crash.

Run it with:  python3 examples/smac_trial_loop.py
"""

from __future__ import annotations

import enum
import math
import os
import signal
import time
from typing import Any

from pynisher import MemoryLimitException, TimeoutException, limit


class StatusType(enum.Enum):
    SUCCESS = "SUCCESS"
    TIMEOUT = "TIMEOUT"
    MEMOUT = "MEMOUT"
    CRASHED = "CRASHED"


def target(config: dict[str, Any]) -> float:
    """A stand-in for training a model: the configuration decides how it behaves."""
    kind = config["kind"]
    if kind == "slow":
        time.sleep(60)
    elif kind == "spin":
        while True:
            pass
    elif kind == "hungry":
        features = bytearray(5 << 30)  # a 5 GB feature matrix
        return float(len(features))
    elif kind == "buggy":
        raise ValueError(f"unsupported learning rate {config['lr']}")
    elif kind == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    return (math.log10(config["lr"]) + 2) ** 2


def run_trial(
    config: dict[str, Any], memory_mb: int, wall_s: float, cpu_s: float
) -> tuple[StatusType, float, float, str]:
    """Returns (status, cost, runtime, additional info) as a runner would."""
    limited = limit(
        target,
        memory=(memory_mb, "MB"),
        wall_time=wall_s,
        cpu_time=cpu_s,
        wrap_errors=True,
    )
    started = time.perf_counter()
    try:
        cost = limited(config)
        status, info = StatusType.SUCCESS, ""
    except TimeoutException as e:  # wall time or CPU time
        status, cost, info = StatusType.TIMEOUT, math.inf, type(e).__name__
    except MemoryLimitException as e:
        status, cost, info = StatusType.MEMOUT, math.inf, type(e).__name__
    except Exception as e:  # the target's own errors (wrapped) and crashes
        status, cost, info = StatusType.CRASHED, math.inf, str(e).split(":", 1)[-1].strip()
    return status, cost, time.perf_counter() - started, info


def main() -> None:
    configs = [
        {"kind": "ok", "lr": 0.01},
        {"kind": "ok", "lr": 0.3},
        {"kind": "slow", "lr": 0.1},
        {"kind": "spin", "lr": 0.1},
        {"kind": "hungry", "lr": 0.1},
        {"kind": "buggy", "lr": 7.0},
        {"kind": "segfault", "lr": 0.1},
    ]
    print(f"{'trial':<5} {'kind':<9} {'status':<8} {'cost':>7} {'runtime s':>9}  info")
    for trial, config in enumerate(configs):
        status, cost, runtime, info = run_trial(config, memory_mb=300, wall_s=1.0, cpu_s=0.5)
        print(
            f"{trial:<5} {config['kind']:<9} {status.value:<8} {cost:>7.3f} {runtime:>9.3f}  "
            f"{info[:60]}"
        )


if __name__ == "__main__":
    main()
