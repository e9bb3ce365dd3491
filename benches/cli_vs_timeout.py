#!/usr/bin/env python3
"""Compare the `pynisher` CLI with GNU `timeout` and util-linux `prlimit`.

Workloads, each run the same way for every tool (a fresh process started
from this script, timed with a monotonic clock around start and reap):

1. overhead: `true` under a generous limit, against `true` alone;
2. wall-time precision: `sleep 10` under a 0.5 s wall limit (pynisher,
   timeout); prlimit has no wall-clock limit;
3. CPU-time precision: a busy shell loop under a 1 s CPU limit (pynisher,
   prlimit); timeout has no CPU limit. CPU time is taken from the rusage of
   the reaped children.

Prints medians (and p90 or max) per tool. Nothing is written to disk; this
is not run in CI.

    python3 benches/cli_vs_timeout.py                 # builds the release binary
    PYNISHER_BIN=target/release/pynisher python3 benches/cli_vs_timeout.py --quick
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY = ["sh", "-c", "while :; do :; done"]


def pynisher_binary() -> str:
    given = os.environ.get("PYNISHER_BIN")
    if given:
        return given
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "-p", "pynisher-cli"],
        cwd=ROOT,
        check=True,
    )
    return str(ROOT / "target" / "release" / "pynisher")


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Runs argv; returns (wall seconds, CPU seconds of all reaped children,
    return code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    code = proc.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, code


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0]
    return (
        f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"load average {load:.2f} at start"
    )


def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "missing"
    return out.splitlines()[0] if out else "unknown"


def overhead(pynisher: str, runs: int) -> None:
    tools = {
        "true (bare)": ["true"],
        "timeout 60 true": ["timeout", "60", "true"],
        "prlimit --cpu=60 true": ["prlimit", "--cpu=60", "true"],
        "pynisher -- true": [pynisher, "--", "true"],
        "pynisher --wall-time 60 -- true": [pynisher, "--wall-time", "60", "--", "true"],
        "pynisher --cpu-time 60 --memory 1GB -- true": [
            pynisher,
            "--cpu-time",
            "60",
            "--memory",
            "1GB",
            "--",
            "true",
        ],
    }
    samples: dict[str, list[float]] = {name: [] for name in tools}
    cpu: dict[str, list[float]] = {name: [] for name in tools}
    for _ in range(3):  # warm up caches
        for argv in tools.values():
            timed(argv)
    for _ in range(runs):  # interleaved, so drifting load hits every tool alike
        for name, argv in tools.items():
            wall, used, _ = timed(argv)
            samples[name].append(wall * 1000)
            cpu[name].append(used * 1000)
    bare = statistics.median(samples["true (bare)"])
    print(f"\n1. overhead on `true` ({runs} runs each, ms per run)")
    print(f"   {'command':<46} {'median':>8} {'p90':>8} {'over bare':>10} {'CPU mean':>9}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"   {name:<46} {median:8.2f} {percentile(values, 0.9):8.2f} {median - bare:+10.2f} "
            f"{statistics.mean(cpu[name]):9.2f}"
        )
    ratio = statistics.median(samples["pynisher -- true"]) / statistics.median(
        samples["timeout 60 true"]
    )
    # CPU time (of the tool and the `true` it reaps) does not count the time
    # spent waiting for a CPU, so on a loaded machine it shows the cost of the
    # tool itself better than the wall time does.
    cpu_ratio = statistics.mean(cpu["pynisher -- true"]) / statistics.mean(cpu["timeout 60 true"])
    print(
        f"   pynisher -- true / timeout 60 true: {ratio:.2f}x wall (median), "
        f"{cpu_ratio:.2f}x CPU (mean) (target: 1.2x or less)"
    )


def wall_precision(pynisher: str, runs: int) -> None:
    limit = 0.5
    tools = {
        "timeout 0.5 sleep 10": ["timeout", str(limit), "sleep", "10"],
        "pynisher --wall-time 0.5 -- sleep 10": [
            pynisher,
            "--wall-time",
            str(limit),
            "--",
            "sleep",
            "10",
        ],
    }
    samples: dict[str, list[float]] = {name: [] for name in tools}
    codes: dict[str, set[int]] = {name: set() for name in tools}
    for _ in range(runs):
        for name, argv in tools.items():
            wall, _, code = timed(argv)
            samples[name].append((wall - limit) * 1000)
            codes[name].add(code)
    print(f"\n2. wall-time precision: overshoot past the 0.5 s limit ({runs} runs each, ms)")
    print(f"   {'command':<46} {'median':>8} {'max':>8}  exit codes")
    for name, values in samples.items():
        print(
            f"   {name:<46} {statistics.median(values):8.2f} {max(values):8.2f}  "
            f"{sorted(codes[name])}"
        )


def cpu_precision(pynisher: str, runs: int) -> None:
    limit = 1.0
    tools = {
        "prlimit --cpu=1 sh -c 'busy loop'": ["prlimit", "--cpu=1", *BUSY],
        "pynisher --cpu-time 1 -- sh -c 'busy loop'": [
            pynisher,
            "--cpu-time",
            "1",
            "--",
            *BUSY,
        ],
    }
    wall: dict[str, list[float]] = {name: [] for name in tools}
    cpu: dict[str, list[float]] = {name: [] for name in tools}
    codes: dict[str, set[int]] = {name: set() for name in tools}
    for _ in range(runs):
        for name, argv in tools.items():
            w, c, code = timed(argv)
            wall[name].append(w)
            cpu[name].append((c - limit) * 1000)
            codes[name].add(code)
    print(f"\n3. CPU-time precision: CPU used past the 1 s limit ({runs} runs each)")
    print(f"   {'command':<46} {'median ms':>10} {'max ms':>8} {'wall s':>8}  exit codes")
    for name in tools:
        print(
            f"   {name:<46} {statistics.median(cpu[name]):10.2f} {max(cpu[name]):8.2f} "
            f"{statistics.median(wall[name]):8.3f}  {sorted(codes[name])}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    for tool in ("timeout", "prlimit", "sleep", "true", "sh"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    pynisher = pynisher_binary()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"pynisher CLI vs GNU timeout and prlimit, {now}")
    print(f"machine: {machine()}")
    print(
        f"tools: {version([pynisher, '--version'])}; {version(['timeout', '--version'])}; "
        f"{version(['prlimit', '--version'])}"
    )
    overhead(pynisher, 30 if args.quick else 200)
    wall_precision(pynisher, 5 if args.quick else 20)
    cpu_precision(pynisher, 3 if args.quick else 10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
