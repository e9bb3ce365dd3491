"""Compare our pynisher with pynisher 1.0.10 and with the raw floor.

Both implementations import as ``pynisher``, so every measurement runs in a
separate worker process (``worker.py``) started with the interpreter of that
implementation's virtualenv.  The driver itself never imports pynisher.

Each group of cases runs in rounds; within a round every configuration is
measured once per implementation, and the order of the implementations
rotates from round to round, so slow drift of the machine hits all of them
alike.  Results are medians over all rounds, and ratios against 1.0.10 and
against the floor.  A worker that fails or hangs is recorded (each run has a
timeout) and never stops the run.

Usage (``run.sh`` normally does this):

    python benches/driver.py [--quick] [--out DIR] [--only GROUP[,GROUP]]
        [--old-python PY] [--new-python PY] [--floor-python PY] [--new-note TEXT]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
RESULT_PREFIX = "BENCH-RESULT "

OLD, NEW, FLOOR, BUILD = "old", "new", "floor", "build"
IMPL_LABEL = {OLD: "pynisher 1.0.10", NEW: "ours", FLOOR: "floor", BUILD: "build only"}
CONTEXTS = ("fork", "forkserver", "spawn")
GROUPS = ("overhead", "heavy", "overshoot", "cpu", "memory", "large", "rss", "throughput")
MIB = 1 << 20
GIB = 1 << 30

# How much to measure.  "quick" is a smoke run that must finish in well under
# a minute: it skips the 1 GiB result and the 1 and 4 GiB callers.
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "overhead": {
            "rounds": 5,
            "calls": 20,
            "warmup": 3,
            "floor_fork_calls": 100,
            # Ours and its floor in turn, in one worker (per round).
            "paired": {"fork": 100, "forkserver": 100, "spawn": 30},
            "paired_warmup": 20,
        },
        # A trial function whose module imports numpy and scipy (issue 16).
        "heavy": {
            "rounds": 1,
            "calls": 8,
            "warmup": 1,
            # In turns with the goal's base, in one worker.
            "paired": {"forkserver": 40, "spawn": 8},
        },
        "overshoot": {
            "rounds": 5,
            "calls": {"sleep": 4, "ignore_term": 2},
            "sleep": 10.0,
        },
        "large": {
            # 1 GiB of fresh memory costs 0.4 to 1.1 s on this VM from moment to
            # moment, for every implementation: five rounds for a steadier median.
            "rounds": 5,
            "sizes": [MIB, 100 * MIB, GIB],
            "calls": {MIB: 10, 100 * MIB: 3, GIB: 1},
        },
        # One call per worker, so RUSAGE_CHILDREN sees nothing else: rounds = samples.
        "cpu": {"rounds": 15, "limits": [1.0, 0.2]},
        # rates in MB/s; None is as fast as the function can touch pages.
        "memory": {"rounds": 4, "calls": 3, "rates": [100, 1000, None]},
        "rss": {"rounds": 3, "calls": 10, "warmup": 2, "levels_gib": [0.1, 1.0, 4.0]},
        "throughput": {
            "rounds": 3,
            "calls": 40,
            "threads": [1, 2, 4],
            # Ours and its floor with 1 and 2 threads in turns, in one worker.
            "paired_calls": {"fork": 150, "forkserver": 150, "spawn": 30},
            "paired_cycles": 6,
        },
    },
    "quick": {
        "overhead": {
            "rounds": 1,
            "calls": 3,
            "warmup": 1,
            "floor_fork_calls": 10,
            "paired": {"fork": 5, "forkserver": 5, "spawn": 2},
            "paired_warmup": 1,
        },
        "heavy": {
            "rounds": 1,
            "calls": 2,
            "warmup": 1,
            "paired": {"forkserver": 2, "spawn": 1},
        },
        # 1.0.10 takes ~6 s per overshoot sample: quick mode keeps one of them.
        "overshoot": {
            "rounds": 1,
            "calls": {"sleep": 1, "ignore_term": 0},
            "sleep": 10.0,
        },
        "large": {
            "rounds": 1,
            "sizes": [MIB, 100 * MIB],
            "calls": {MIB: 2, 100 * MIB: 1},
        },
        "cpu": {"rounds": 2, "limits": [1.0, 0.2]},
        # 100 MB/s takes 2 s per call; quick mode keeps the fast rates only.
        "memory": {"rounds": 1, "calls": 2, "rates": [1000, None]},
        "rss": {"rounds": 1, "calls": 2, "warmup": 1, "levels_gib": [0.1]},
        "throughput": {
            "rounds": 1,
            "calls": 5,
            "threads": [1, 2],
            "paired_calls": {"fork": 5, "forkserver": 5, "spawn": 2},
            "paired_cycles": 1,
        },
    },
}

# The limits used by the overshoot case.  pynisher 1.0.10 refuses a wall
# time below one second, so both implementations get exactly one second.
OVERSHOOT_WALL = 1.0
GRACE_PERIOD = 1.0  # the default grace period in API.md

# The CPU-time case. 1.0.10 accepts only whole seconds of at least 1, so both
# implementations get 1 s; ours also runs at CPU_OURS_ONLY (a row of its own).
CPU_BOTH = 1.0
CPU_CAP = 30.0  # the busy loop gives up after this many CPU seconds
# The memory case: limit, and where the function stops if nothing stops it.
# Both implementations count MB as 2**20 bytes. Half a MiB more, so that
# the function's count (its private memory at start, about 1 MiB, and 257
# pages a chunk) crosses the limit inside a chunk, not at its very start,
# where the interpreter's own writes could cross it first and leave nothing
# in the log to place the crossing by.
MEMORY_LIMIT = 200 * MIB + MIB // 2
MEMORY_CAP_FACTOR = 3
MEMORY_MODES = ("resident", "address_space")
NO_RESIDENT_OLD = "pynisher 1.0.10 has no resident memory mode"

# Targets from DESIGN.md.  "flat" for forkserver against caller RSS is not
# given as a number there; this harness calls it flat when the time at the
# largest caller is at most FLAT_LIMIT times the time at the smallest.
TARGET_FORK = 1.3
# DESIGN.md allows fork up to this, if the guardian's design needs it and the
# reason is written down (RESULTS.md's history block).
TARGET_FORK_WITH_GUARDIAN = 1.5
TARGET_FORKSERVER = 2.0
TARGET_SPAWN = 1.5
TARGET_HEAVY_FORKSERVER = 1.5  # times our own fork on the heavy module
TARGET_HEAVY_SPAWN = 1.2  # times `python -c "import heavy_module"`
# "Scale to the 2 cores": 2 caller threads gain at least this share of what
# raw forks (or `python -c pass` runs) gain from 2 threads on the same machine.
TARGET_SCALING_SHARE = 0.9
TARGET_OVERSHOOT_P99 = 0.020
TARGET_LARGE_SPEEDUP = 5.0
FLAT_LIMIT = 1.25


# --------------------------------------------------------------------------
# statistics and formatting


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: list[float]) -> float:
    return percentile(values, 50.0)


def summary_stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {}
    return {
        "n": len(values),
        "median": median(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "min": min(values),
        "max": max(values),
    }


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    if abs(ms) >= 100:
        return f"{ms:.0f} ms"
    if abs(ms) >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def short(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------
# entries: one configuration of one case for one implementation


@dataclass
class Entry:
    group: str
    config: str  # e.g. "fork/limits"; shared by the implementations compared
    impl: str  # OLD, NEW or FLOOR
    case: str  # worker case name
    params: dict[str, Any]
    timeout: float
    samples: list[float] = field(default_factory=list)
    # More named figures per sample (for example the wall time next to the
    # CPU overshoot); each list grows with the samples, round after round.
    series: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None  # set once the entry is given up
    status: str = "pending"  # ok | error | timeout | not installed | unsupported | pending
    seconds: float = 0.0  # wall time spent in workers for this entry

    @property
    def key(self) -> str:
        return f"{self.group}/{self.config}/{self.impl}"

    def med(self) -> float | None:
        return median(self.samples) if self.samples else None

    def cell(self, value: str | None = None) -> str:
        """Table cell: the value, or why there is none."""
        if self.samples:
            return value if value is not None else fmt_ms(self.med())
        if self.status == "not installed":
            return "not installed"
        if self.status == "unsupported":
            return f"n/a: {md_escape(self.failure or 'unsupported')}"
        if self.status == "timeout":
            return f"n/a (timeout: {md_escape(short(self.failure or '', 60))})"
        return f"n/a ({md_escape(short(self.failure or 'no data', 90))})"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        """An entry as `to_json` saved it, to render a report again."""
        return cls(
            group=data["group"],
            config=data["config"],
            impl=data["impl"],
            case=data["case"],
            params=data["params"],
            timeout=0.0,
            samples=list(data["samples"]),
            series={name: list(v) for name, v in data.get("series", {}).items()},
            errors=dict(data.get("errors", {})),
            meta=dict(data.get("meta", {})),
            failure=data.get("failure"),
            status=data.get("status", "ok"),
            seconds=float(data.get("worker_seconds", 0.0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "config": self.config,
            "impl": self.impl,
            "case": self.case,
            "params": self.params,
            "status": self.status,
            "failure": self.failure,
            "errors": self.errors,
            "stats": summary_stats(self.samples),
            "samples": self.samples,
            "series_stats": {name: summary_stats(v) for name, v in self.series.items()},
            "series": self.series,
            "meta": self.meta,
            "worker_seconds": round(self.seconds, 3),
        }


def build_entries(profile: dict[str, Any], groups: list[str]) -> list[Entry]:
    entries: list[Entry] = []

    def add(group: str, config: str, impl: str, case: str, params: dict, timeout: float) -> None:
        entries.append(Entry(group, config, impl, case, params, timeout))

    if "overhead" in groups:
        p = profile["overhead"]
        per_call = p["calls"] + p["warmup"]
        for ctx in CONTEXTS:
            for limits in (False, True):
                config = f"{ctx}/{'limits' if limits else 'none'}"
                params = {
                    "context": ctx,
                    "limits": limits,
                    "calls": p["calls"],
                    "warmup": p["warmup"],
                }
                for impl in (OLD, NEW):
                    add("overhead", config, impl, "noop", params, 60 + 3 * per_call)
                paired = {
                    **params,
                    "calls": p["paired"][ctx],
                    "warmup": p["paired_warmup"],
                }
                pairs = p["paired"][ctx] + p["paired_warmup"]
                add("overhead", f"{config}/paired", NEW, "noop-paired", paired, 60 + 6 * pairs)
        fork_params = {"calls": p["floor_fork_calls"], "warmup": p["warmup"]}
        add("overhead", "floor/raw-fork", FLOOR, "floor-fork", fork_params, 60)
        exec_params = {"calls": p["calls"], "warmup": p["warmup"]}
        add(
            "overhead",
            "floor/python-c-pass",
            FLOOR,
            "floor-exec",
            exec_params,
            60 + per_call,
        )

    if "heavy" in groups:
        p = profile["heavy"]
        params = {"calls": p["calls"], "warmup": p["warmup"]}
        # Up to ~3 s per call for a cold import on a loaded machine.
        timeout = 60 + 5 * (p["calls"] + p["warmup"])
        for ctx in CONTEXTS:
            # Fork and warm forkserver calls take milliseconds: more of them
            # make their ratio steadier (1.0.10's forkserver still imports).
            calls = p["calls"] * (1 if ctx == "spawn" else 3)
            ctx_params = {**params, "calls": calls, "context": ctx}
            for impl in (OLD, NEW):
                add("heavy", ctx, impl, "heavy", ctx_params, 60 + 5 * (calls + p["warmup"]))
        add("heavy", "floor/import", FLOOR, "floor-import", params, timeout)
        for ctx, pairs in p["paired"].items():
            paired = {"calls": pairs, "warmup": p["warmup"], "context": ctx}
            add("heavy", f"{ctx}/paired", NEW, "heavy-paired", paired, 60 + 10 * (pairs + 1))

    if "overshoot" in groups:
        p = profile["overshoot"]
        for target in ("sleep", "ignore_term"):
            calls = p["calls"][target]
            if calls <= 0:
                continue
            params = {
                "context": "fork",
                "target": target,
                "wall_time": OVERSHOOT_WALL,
                "sleep": p["sleep"],
                "calls": calls,
            }
            for impl in (OLD, NEW):
                add(
                    "overshoot",
                    target,
                    impl,
                    "overshoot",
                    params,
                    30 + calls * (p["sleep"] + 15),
                )

    if "cpu" in groups:
        p = profile["cpu"]
        for limit in p["limits"]:
            params = {
                "context": "fork",
                # 1.0.10 takes whole seconds only as an int (a float 1.0 is a TypeError).
                "cpu_time": int(limit) if float(limit).is_integer() else limit,
                "cap": CPU_CAP,
                "calls": 1,
                "warmup": 1,
            }
            # 1.0.10 rounds the limit to whole seconds and rejects less than 1.
            impls = (OLD, NEW) if limit == CPU_BOTH else (NEW,)
            for impl in impls:
                add("cpu", f"{limit:g}s", impl, "cpu-overshoot", params, 60 + 3 * CPU_CAP)

    if "memory" in groups:
        p = profile["memory"]
        for mode in MEMORY_MODES:
            for rate in p["rates"]:
                params = {
                    "context": "fork",
                    "memory": MEMORY_LIMIT,
                    "memory_mode": mode,
                    "rate": rate,
                    "cap_factor": MEMORY_CAP_FACTOR,
                    "calls": p["calls"],
                }
                # Time to reach the cap at the slowest plausible speed, per call.
                per_call = MEMORY_CAP_FACTOR * MEMORY_LIMIT / MIB / (rate or 200) + 10
                timeout = 60 + p["calls"] * per_call
                config = f"{mode}/{rate_label(rate)}"
                for impl in (OLD, NEW):
                    if impl == OLD and mode == "resident":
                        entries.append(
                            Entry(
                                "memory",
                                config,
                                impl,
                                "memory-delay",
                                params,
                                timeout,
                                failure=NO_RESIDENT_OLD,
                                status="unsupported",
                            )
                        )
                        continue
                    add("memory", config, impl, "memory-delay", params, timeout)

    if "large" in groups:
        p = profile["large"]
        for size in p["sizes"]:
            calls = p["calls"][size]
            per_call = max(5.0, 60.0 * size / GIB)
            timeout = 60 + (calls + 1) * per_call
            for kind in ("bytes", "numpy"):
                config = f"{size_label(size)}/{kind}"
                params = {
                    "context": "fork",
                    "size": size,
                    "kind": kind,
                    "calls": calls,
                    "warmup": 1 if size < GIB else 0,
                }
                add("large", config, OLD, "large", params, timeout)
                add("large", config, NEW, "large", params, timeout)
                add("large", config, FLOOR, "floor-large", params, timeout)
                add("large", config, BUILD, "floor-build", params, timeout)

    if "rss" in groups:
        p = profile["rss"]
        per_call = p["calls"] + p["warmup"]
        for gib in p["levels_gib"]:
            timeout = 90 + 20 * gib + 3 * per_call
            base = {"rss_gb": gib, "calls": p["calls"], "warmup": p["warmup"]}
            for ctx in CONTEXTS:
                params = {**base, "context": ctx}
                for impl in (OLD, NEW):
                    add("rss", f"{gib:g}/{ctx}", impl, "noop", params, timeout)
            add("rss", f"{gib:g}/raw-fork", FLOOR, "floor-fork", base, timeout)

    if "throughput" in groups:
        p = profile["throughput"]
        for ctx in CONTEXTS:
            # A spawn call takes tens of ms (1.0.10's forkserver too): fewer calls.
            calls = p["calls"] if ctx == "fork" else max(2, p["calls"] // 4)
            for threads in p["threads"]:
                deadline = 60 + calls * threads * (1 if ctx == "fork" else 3)
                params = {
                    "context": ctx,
                    "threads": threads,
                    "calls": calls,
                    "deadline": deadline,
                }
                config = f"{ctx}/{threads}"
                add("throughput", config, OLD, "throughput", params, deadline + 60)
                add("throughput", config, NEW, "throughput", params, deadline + 60)
                # The floor of fork and forkserver is the raw fork, of spawn
                # `python -c pass`, from the same number of threads.
                if ctx != "forkserver":
                    floor_case = "floor-throughput" if ctx == "fork" else "floor-exec-throughput"
                    add("throughput", config, FLOOR, floor_case, params, deadline + 60)
            paired = {
                "context": ctx,
                "calls": p["paired_calls"][ctx],
                "cycles": p["paired_cycles"],
            }
            # Per cycle: 1 + 2 threads' calls, each for ours and the floor.
            pair_calls = 6 * paired["calls"] * paired["cycles"]
            timeout = 120 + pair_calls * (0.05 if ctx == "spawn" else 0.02)
            add("throughput", f"{ctx}/scaling-paired", NEW, "scaling-paired", paired, timeout)

    return entries


def rate_label(rate: float | None) -> str:
    return "max" if rate is None else f"{rate:g}"


def size_label(size: int) -> str:
    if size >= GIB:
        return f"{size // GIB} GiB"
    return f"{size // MIB} MiB"


# --------------------------------------------------------------------------
# running workers


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # A PYTHONPATH pointing at the source tree would make the old venv import
    # our package (or the reverse); each venv must see only its own pynisher.
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):
        env.pop(name, None)
    # Workers import their modules from bytecode caches, as on any usual
    # install (a machine may set PYTHONDONTWRITEBYTECODE; then every spawn
    # or forkserver child would compile the targets module from source).
    # The targets module's cache goes to benches/__pycache__, which git
    # ignores.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def run_worker(python: str, case: str, params: dict, timeout: float) -> dict[str, Any]:
    """Run one worker; never raises, never waits longer than ``timeout``."""
    command = [python, str(WORKER), case, json.dumps(params)]
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(HERE),
            env=worker_env(),
            start_new_session=True,  # its own process group, so it can be cleaned up
        )
    except OSError as exc:
        return {"ok": False, "error": f"cannot start worker: {exc}"}
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.communicate()
        return {
            "ok": False,
            "timeout": True,
            "error": f"no result within {timeout:.0f} s",
        }
    finally:
        # Whatever the worker left behind (a hung child, a forkserver) goes too.
        kill_group(proc.pid)
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX) :])
            except json.JSONDecodeError as exc:
                return {"ok": False, "error": f"unreadable worker output: {exc}"}
    tail = short(stderr.strip().splitlines()[-1] if stderr.strip() else "", 200)
    return {
        "ok": False,
        "error": f"worker exited {proc.returncode} with no result: {tail}",
    }


class Runner:
    def __init__(self, pythons: dict[str, str | None], log_start: float) -> None:
        self.pythons = pythons
        self.log_start = log_start

    def log(self, text: str) -> None:
        elapsed = time.monotonic() - self.log_start
        print(f"[{elapsed:7.1f}s] {text}", file=sys.stderr, flush=True)

    def run_entry(self, entry: Entry, round_no: int, rounds: int) -> None:
        if entry.failure is not None:
            return
        python = self.pythons.get(FLOOR if entry.impl == BUILD else entry.impl)
        if python is None:
            entry.status = "not installed"
            entry.failure = "not installed"
            return
        params = dict(entry.params)
        start = time.monotonic()
        report = run_worker(python, entry.case, params, entry.timeout)
        entry.seconds += time.monotonic() - start
        where = f"{entry.key} round {round_no + 1}/{rounds}"
        if report.get("ok"):
            entry.samples.extend(float(x) for x in report.get("samples", []))
            for name, values in report.get("series", {}).items():
                entry.series.setdefault(name, []).extend(float(x) for x in values)
            for message in report.get("errors", []):
                entry.errors[message] = entry.errors.get(message, 0) + 1
            for name, value in report.get("meta", {}).items():
                entry.meta[name] = value
            entry.status = "ok"
            errs = f", {len(report.get('errors', []))} errors" if report.get("errors") else ""
            self.log(f"{where}: median {summary_value(entry)}{errs}")
        else:
            # Errors are deterministic enough (an unsupported context, a hang)
            # that repeating them only wastes time: give the entry up.
            entry.failure = str(report.get("error", "unknown failure"))
            if not entry.samples:
                entry.status = "timeout" if report.get("timeout") else "error"
            entry.errors[entry.failure] = entry.errors.get(entry.failure, 0) + 1
            self.log(f"{where}: FAILED: {short(entry.failure, 150)}")

    def run_group(self, entries: list[Entry], rounds: int) -> None:
        configs: list[str] = []
        for entry in entries:
            if entry.config not in configs:
                configs.append(entry.config)
        for round_no in range(rounds):
            for config in configs:
                batch = [e for e in entries if e.config == config]
                shift = round_no % len(batch)
                for entry in batch[shift:] + batch[:shift]:
                    self.run_entry(entry, round_no, rounds)
        for entry in entries:
            if entry.status == "pending":
                entry.status = "error"


def summary_value(entry: Entry) -> str:
    value = entry.med()
    if value is None:
        return "-"
    if entry.case == "scaling-paired":
        return f"gain {fmt_ratio(value)}"
    if entry.group == "throughput":
        return f"{value:.0f} calls/s"
    return fmt_ms(value)


# --------------------------------------------------------------------------
# machine and implementation description


def command_output(command: list[str]) -> str:
    try:
        return subprocess.run(  # a missing tool gives an empty string
            command, check=False, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def read_proc_field(path: str, name: str) -> str:
    try:
        with open(path) as fh:
            for line in fh:
                if line.split(":")[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, to judge how idle the machine was."""
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    mem_kib = read_proc_field("/proc/meminfo", "MemTotal").split()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": command_output(["date", "-u"]) or datetime.datetime.now(datetime.UTC).isoformat(),
        "uname": command_output(["uname", "-a"]) or " ".join(platform.uname()),
        "cpu_model": read_proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gib": round(int(mem_kib[0]) / (1 << 20), 1) if mem_kib else None,
    }


def describe_impls(
    pythons: dict[str, str | None], new_note: str | None
) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Check each interpreter with the worker's ``info`` case."""
    usable: dict[str, str | None] = {}
    info: dict[str, Any] = {}
    for impl, python in pythons.items():
        if python is None or not Path(python).exists():
            usable[impl] = None
            info[impl] = {"status": "not installed", "reason": "no interpreter"}
            continue
        report = run_worker(python, "info", {}, 120)
        meta = report.get("meta", {})
        if impl == FLOOR:
            ok = bool(report.get("ok"))
            reason = None if ok else report.get("error")
        else:
            ok = bool(report.get("ok")) and meta.get("has_Pynisher") is True
            reason = meta.get("pynisher_error") or report.get("error")
            if ok and impl == OLD and meta.get("pynisher_version") != "1.0.10":
                reason = f"expected pynisher 1.0.10, found {meta.get('pynisher_version')}"
                ok = False
        usable[impl] = python if ok else None
        info[impl] = {
            "status": "ok" if ok else "not installed",
            "python": python,
            **meta,
        }
        if not ok:
            info[impl]["reason"] = reason
    if new_note and usable.get(NEW) is None:
        info[NEW]["reason"] = f"{new_note}; {info[NEW].get('reason')}"
    return usable, info


# --------------------------------------------------------------------------
# the report


class Report:
    def __init__(self, entries: list[Entry]) -> None:
        self.by_key = {entry.key: entry for entry in entries}

    def get(self, group: str, config: str, impl: str) -> Entry | None:
        return self.by_key.get(f"{group}/{config}/{impl}")

    def has_group(self, group: str) -> bool:
        return any(key.startswith(group + "/") for key in self.by_key)


def ratio(a: Entry | None, b: Entry | None) -> float | None:
    if a is None or b is None:
        return None
    ma, mb = a.med(), b.med()
    if ma is None or mb is None or mb == 0:
        return None
    return ma / mb


def paired_ratio(entry: Entry | None) -> float | None:
    """The median of ours / floor over the pairs of a ``noop-paired`` entry."""
    ratios = entry.series.get("ratio") if entry is not None else None
    return median(ratios) if ratios else None


def verdict(value: float | None, limit: float, unit: str = "x", entry: Entry | None = None) -> str:
    if value is None:
        if entry is not None and entry.failure:
            return f"not measured: {md_escape(short(entry.failure, 70))}"
        return "not measured"
    if value <= limit:
        return "met"
    if unit == "x":
        return f"missed by {value / limit:.2f}x"
    return f"missed by {fmt_ms(value - limit)}"


def throughput_floor_context(ctx: str) -> str:
    """The context whose throughput floor a context is compared with: the
    forkserver's is the raw fork's (the floor runs no server)."""
    return "fork" if ctx == "forkserver" else ctx


def floor_for(report: Report, ctx: str) -> Entry | None:
    if ctx == "spawn":
        return report.get("overhead", "floor/python-c-pass", FLOOR)
    return report.get("overhead", "floor/raw-fork", FLOOR)


def targets_table(report: Report) -> list[str]:
    rows: list[tuple[str, str, str]] = []
    if report.has_group("overhead"):
        for ctx, limit, floor_name in (
            ("fork", TARGET_FORK, "raw fork"),
            ("forkserver", TARGET_FORKSERVER, "raw fork"),
            ("spawn", TARGET_SPAWN, "`python -c pass`"),
        ):
            for lim in ("none", "limits"):
                ours = report.get("overhead", f"{ctx}/{lim}", NEW)
                separate = ratio(ours, floor_for(report, ctx))
                paired_entry = report.get("overhead", f"{ctx}/{lim}/paired", NEW)
                paired = paired_ratio(paired_entry)
                limits_text = "all limits" if lim == "limits" else "no limits"
                what = f"{ctx} overhead ({limits_text})"
                goal = f"≤ {limit:g}x {floor_name}"
                if paired is None:
                    text = f"{fmt_ratio(separate)} → {verdict(separate, limit, entry=ours)}"
                else:
                    text = (
                        f"{fmt_ratio(paired)} call by call (separate workers: "
                        f"{fmt_ratio(separate)}) → {verdict(paired, limit, entry=paired_entry)}"
                    )
                    if ctx == "fork" and limit < paired <= TARGET_FORK_WITH_GUARDIAN:
                        allowed = TARGET_FORK_WITH_GUARDIAN
                        text += f", within the {allowed:g}x allowed for the guardian"
                rows.append((what, goal, text))
    if report.has_group("heavy"):
        our_fork = report.get("heavy", "fork", NEW)
        for ctx, limit, base, base_name in (
            ("forkserver", TARGET_HEAVY_FORKSERVER, our_fork, "our fork"),
            (
                "spawn",
                TARGET_HEAVY_SPAWN,
                report.get("heavy", "floor/import", FLOOR),
                '`python -c "import heavy_module"`',
            ),
        ):
            ours = report.get("heavy", ctx, NEW)
            separate = ratio(ours, base)
            text = f"{fmt_ratio(separate)} → {verdict(separate, limit, entry=ours)}"
            paired_entry = report.get("heavy", f"{ctx}/paired", NEW)
            paired = paired_ratio(paired_entry)
            if paired is not None:
                text = (
                    f"{fmt_ratio(paired)} in turns (separate workers: {fmt_ratio(separate)}) "
                    f"→ {verdict(paired, limit, entry=paired_entry)}"
                )
            rows.append((f"heavy-import trial, {ctx}", f"≤ {limit:g}x {base_name}", text))
    if report.has_group("throughput"):
        for ctx in CONTEXTS:
            floor_ctx = throughput_floor_context(ctx)

            def gain(impl: str, of_ctx: str) -> float | None:
                return ratio(
                    report.get("throughput", f"{of_ctx}/2", impl),
                    report.get("throughput", f"{of_ctx}/1", impl),
                )

            ours, floor = gain(NEW, ctx), gain(FLOOR, floor_ctx)
            share = None if ours is None or floor is None else ours / floor
            judged = report.get("throughput", f"{ctx}/2", NEW)
            text = f"ours {fmt_ratio(ours)}, floor {fmt_ratio(floor)}"
            paired_entry = report.get("throughput", f"{ctx}/scaling-paired", NEW)
            shares = paired_entry.series.get("share") if paired_entry is not None else None
            if paired_entry is not None and shares:
                floor_gains = paired_entry.series.get("floor", [])
                text = (
                    f"in turns: ours {fmt_ratio(paired_entry.med())}, floor "
                    f"{fmt_ratio(median(floor_gains) if floor_gains else None)}, "
                    f"share {median(shares):.2f} (separate workers: {text})"
                )
                share, judged = median(shares), paired_entry
            # verdict() wants "lower is better": compare the inverse.
            inverse = None if share is None or share == 0 else TARGET_SCALING_SHARE / share
            rows.append(
                (
                    f"throughput scaling, {ctx}, 2 threads",
                    f"≥ {TARGET_SCALING_SHARE:g}x the floor's gain from 2 threads",
                    f"{text} → {verdict(inverse, 1.0, entry=judged)}",
                )
            )
    if report.has_group("overshoot"):
        ours = report.get("overshoot", "sleep", NEW)
        p99 = percentile(ours.samples, 99) if ours and ours.samples else None
        rows.append(
            (
                "wall-time overshoot, p99",
                f"≤ {fmt_ms(TARGET_OVERSHOOT_P99)}",
                f"{fmt_ms(p99)} → {verdict(p99, TARGET_OVERSHOOT_P99, 's', ours)}",
            )
        )
        ours = report.get("overshoot", "ignore_term", NEW)
        p99 = percentile(ours.samples, 99) if ours and ours.samples else None
        limit = GRACE_PERIOD + 0.050
        rows.append(
            (
                "overshoot when SIGTERM is ignored, p99",
                f"≤ grace period + 50 ms = {fmt_ms(limit)}",
                f"{fmt_ms(p99)} → {verdict(p99, limit, 's', ours)}",
            )
        )
    if report.has_group("large"):
        for kind in ("bytes", "numpy"):
            config = f"{size_label(GIB)}/{kind}"
            old = report.get("large", config, OLD)
            ours = report.get("large", config, NEW)
            if old is None:
                continue
            speedup = ratio(old, ours)
            inverse = None if speedup is None else TARGET_LARGE_SPEEDUP / speedup
            text = f"{fmt_ratio(speedup)} → "
            text += verdict(inverse, 1.0, entry=ours)
            rows.append(
                (
                    f"1 GiB {kind} result",
                    f"≥ {TARGET_LARGE_SPEEDUP:g}x faster than 1.0.10",
                    text,
                )
            )
    if report.has_group("rss"):
        levels = sorted(
            {float(e.config.split("/")[0]) for e in report.by_key.values() if e.group == "rss"}
        )
        if len(levels) > 1:
            small = report.get("rss", f"{levels[0]:g}/forkserver", NEW)
            big = report.get("rss", f"{levels[-1]:g}/forkserver", NEW)
            r = ratio(big, small)
            rows.append(
                (
                    "forkserver overhead vs caller RSS",
                    (
                        f"flat: at {levels[-1]:g} GiB ≤ {FLAT_LIMIT:g}x "
                        f"the time at {levels[0]:g} GiB"
                    ),
                    f"{fmt_ratio(r)} → {verdict(r, FLAT_LIMIT, entry=big)}",
                )
            )
    if not rows:
        return []
    lines = ["| target | goal | ours |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def overhead_tables(report: Report) -> list[str]:
    lines = [
        "Median time of one call of a no-op function, measured in the caller.",
        "The floor is a raw `os.fork` + pipe + `waitpid` in Python for fork and",
        "forkserver, and `python -c pass` for spawn. *All limits* means",
        '`wall_time=10, cpu_time=10, memory=(2, "GB")`.',
        "",
        (
            "| context | limits | pynisher 1.0.10 | ours | ours / 1.0.10 | floor "
            "| ours / floor | 1.0.10 / floor |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ctx in CONTEXTS:
        for lim in ("none", "limits"):
            old = report.get("overhead", f"{ctx}/{lim}", OLD)
            new = report.get("overhead", f"{ctx}/{lim}", NEW)
            floor = floor_for(report, ctx)
            if old is None:
                continue
            limits_text = "all" if lim == "limits" else "none"
            lines.append(
                f"| {ctx} | {limits_text} | {old.cell()} | {new.cell()} "
                f"| {fmt_ratio(ratio(new, old))} | {floor.cell() if floor else '-'} "
                f"| {fmt_ratio(ratio(new, floor))} | {fmt_ratio(ratio(old, floor))} |"
            )
    lines += [
        "",
        "The same calls with the floor measured call by call: one worker makes",
        "one call of ours and one of the floor in turn (which goes first",
        "alternates), so that each pair sees the machine in the same state; the",
        "floor then forks (or runs `python -c pass` from) a process with pynisher",
        "imported. *ours / floor* is the median of the pairs' ratios; the targets",
        "above are judged on it.",
        "",
        "| context | limits | pairs | ours | floor | ours / floor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for ctx in CONTEXTS:
        for lim in ("none", "limits"):
            paired_entry = report.get("overhead", f"{ctx}/{lim}/paired", NEW)
            if paired_entry is None:
                continue
            floor_times = paired_entry.series.get("floor")
            limits_text = "all" if lim == "limits" else "none"
            lines.append(
                f"| {ctx} | {limits_text} | {len(paired_entry.samples)} "
                f"| {paired_entry.cell()} | {fmt_ms(median(floor_times) if floor_times else None)} "
                f"| {fmt_ratio(paired_ratio(paired_entry))} |"
            )
    lines += ["", "| floor | median | calls |", "|---|---:|---:|"]
    for config, name in (
        ("floor/raw-fork", "raw `os.fork` + pipe + `waitpid`"),
        ("floor/python-c-pass", "`python -c pass` (subprocess)"),
    ):
        floor = report.get("overhead", config, FLOOR)
        if floor is not None:
            lines.append(f"| {name} | {floor.cell()} | {len(floor.samples)} |")
    return lines


def heavy_table(report: Report) -> list[str]:
    lines = [
        "Median time of one call of `trial(1)` from `benches/heavy_module.py`,",
        "a module that imports numpy, scipy.optimize, scipy.stats and",
        "scipy.signal, after one warm-up call. The floor is",
        '`python -c "import heavy_module"`, what any fresh interpreter pays.',
        "",
        "| context | pynisher 1.0.10 | ours | ours / 1.0.10 | ours / our fork | ours / floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    our_fork = report.get("heavy", "fork", NEW)
    floor = report.get("heavy", "floor/import", FLOOR)
    for ctx in CONTEXTS:
        old = report.get("heavy", ctx, OLD)
        new = report.get("heavy", ctx, NEW)
        if old is None:
            continue
        lines.append(
            f"| {ctx} | {old.cell()} | {new.cell()} | {fmt_ratio(ratio(new, old))} "
            f"| {fmt_ratio(ratio(new, our_fork))} | {fmt_ratio(ratio(new, floor))} |"
        )
    if floor is not None:
        lines += ["", f'`python -c "import heavy_module"`: {floor.cell()}']
    paired_rows = []
    for ctx, base_name in (("forkserver", "our fork"), ("spawn", "the import")):
        entry = report.get("heavy", f"{ctx}/paired", NEW)
        if entry is None:
            continue
        bases = entry.series.get("floor")
        paired_rows.append(
            f"| {ctx} | {base_name} | {len(entry.samples)} | {entry.cell()} "
            f"| {fmt_ms(median(bases) if bases else None)} "
            f"| {fmt_ratio(paired_ratio(entry))} |"
        )
    if paired_rows:
        lines += [
            "",
            "The same calls in turns with their goal's base, in one worker (see",
            "*Per-call overhead*); the targets are judged on the median of the",
            "pairs' ratios.",
            "",
            "| context | base | pairs | ours | base | ours / base |",
            "|---|---|---:|---:|---:|---:|",
            *paired_rows,
        ]
    return lines


def overshoot_table(report: Report) -> list[str]:
    lines = [
        f"A call sleeps 10 s under `wall_time={OVERSHOOT_WALL:g}` (fork context;",
        "1.0.10 accepts no wall time below 1 s). Overshoot = elapsed - limit.",
        "*sleep* obeys SIGTERM; *ignore_term* sets SIGTERM to `SIG_IGN` first, so",
        "only the hard kill stops it (ours sends it after `grace_period`, default",
        f"{GRACE_PERIOD:g} s).",
        "",
        "| function | implementation | n | p50 | p99 | max |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for target in ("sleep", "ignore_term"):
        for impl in (OLD, NEW):
            entry = report.get("overshoot", target, impl)
            if entry is None:
                continue
            if entry.samples:
                cells = [
                    str(len(entry.samples)),
                    fmt_ms(percentile(entry.samples, 50)),
                    fmt_ms(percentile(entry.samples, 99)),
                    fmt_ms(max(entry.samples)),
                ]
            else:
                cells = ["0", entry.cell(), "-", "-"]
            lines.append(f"| {target} | {IMPL_LABEL[impl]} | " + " | ".join(cells) + " |")
    return lines


def series_cell(entry: Entry | None, name: str, q: float, fmt: Any = None) -> str:
    """The ``q`` percentile of one series of an entry, formatted, or "-"."""
    values = entry.series.get(name) if entry is not None else None
    if not values:
        return "-"
    value = percentile(values, q)
    return fmt(value) if fmt is not None else fmt_ms(value)


def fmt_mib(value: float) -> str:
    return f"{value:+.1f} MB"


def fmt_rate(value: float) -> str:
    return f"{value:.0f} MB/s"


def cpu_table(report: Report) -> list[str]:
    lines = [
        "A pure-Python busy loop runs under `cpu_time` (fork context). *Overshoot* is",
        "the CPU time the child really consumed minus the limit, measured in the",
        "caller as the change of `getrusage(RUSAGE_CHILDREN)` around the call, in a",
        "fresh worker process per sample (after one no-op warm-up call), so it counts",
        "the same thing for both implementations whatever they report. *Returned",
        "after* is the caller's wall time until the call returned. 1.0.10 accepts",
        f"only whole seconds of at least 1, so both run at {CPU_BOTH:g} s; ours also runs",
        "at the extra limit(s) below. *Outcome.cpu_time* is what ours reports.",
        "",
        (
            "| CPU limit | implementation | n | overshoot p50 | overshoot p99 | max "
            "| returned after p50 | returned after p99 | Outcome.cpu_time p50 |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report.by_key.values():
        if entry.group != "cpu":
            continue
        label = IMPL_LABEL[entry.impl]
        if entry.samples:
            cells = [
                str(len(entry.samples)),
                fmt_ms(percentile(entry.samples, 50)),
                fmt_ms(percentile(entry.samples, 99)),
                fmt_ms(max(entry.samples)),
                series_cell(entry, "wall", 50),
                series_cell(entry, "wall", 99),
                series_cell(entry, "reported", 50),
            ]
        else:
            cells = ["0", entry.cell(), "-", "-", "-", "-", "-"]
        lines.append(f"| {entry.config} | {label} | " + " | ".join(cells) + " |")
    for entry in report.by_key.values():
        late = entry.meta.get("cpu_of_unreaped_children") if entry.group == "cpu" else None
        if late:
            lines += [
                "",
                f"Note: `{entry.key}` left children that were reaped only after the call",
                f"returned; they used {late:.3f} s more CPU (not in the table).",
            ]
    return lines


def memory_tables(report: Report) -> list[str]:
    limit_mb = MEMORY_LIMIT / MIB
    lines = [
        "A function allocates memory in 1 MB chunks, writing every page, at a set",
        f'rate (or as fast as it can) until a `memory=({limit_mb:g}, "MB")` limit',
        "stops it (fork context; MB = 2^20 bytes, as both implementations count it).",
        "It logs a timestamp (`CLOCK_MONOTONIC`) after each chunk to a file, since",
        "it may be killed at any moment, and its own private memory",
        "(`smaps_rollup`, as the resident mode counts it) once at the start; its",
        "count adds 257 pages a chunk (a 1 MB `bytearray` and malloc's header). If",
        f"nothing stops it at {MEMORY_CAP_FACTOR}x the limit it returns, and the call",
        "counts as a failure. *Achieved* is the allocation rate the function",
        "really reached. Figures are p50 / p99 over all calls of all rounds.",
        "",
        "### Resident mode",
        "",
        '`memory_mode="resident"`: the tree is sampled and killed once its private',
        "memory passes the limit. *Crossing* is the end of the first chunk that took",
        "the function's own count (private memory at start + allocated since) past",
        "the limit (its beginning, if the kill came in the middle of that chunk).",
        "*Delay* runs from the crossing to the moment the call returned in",
        "the caller. *Overshoot* is how far past the limit the tree got: by",
        "`Outcome.peak_memory` (what the sampler saw), and by the function's log (the",
        "last chunk it finished before the kill). *Ran on* is crossing → that last",
        "chunk.",
        "",
        (
            "| rate | implementation | n | achieved | delay p50 | delay p99 "
            "| overshoot (peak_memory) p50 | p99 | overshoot (log) p50 | p99 | ran on p50 |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report.by_key.values():
        if entry.group != "memory" or entry.params["memory_mode"] != "resident":
            continue
        rate = rate_label(entry.params["rate"])
        rate = rate if rate == "max" else f"{rate} MB/s"
        label = IMPL_LABEL[entry.impl]
        if entry.samples:
            cells = [
                str(len(entry.samples)),
                series_cell(entry, "rate_mib_s", 50, fmt_rate),
                fmt_ms(percentile(entry.samples, 50)),
                fmt_ms(percentile(entry.samples, 99)),
                series_cell(entry, "overshoot_peak_mib", 50, fmt_mib),
                series_cell(entry, "overshoot_peak_mib", 99, fmt_mib),
                series_cell(entry, "overshoot_log_mib", 50, fmt_mib),
                series_cell(entry, "overshoot_log_mib", 99, fmt_mib),
                series_cell(entry, "ran_past_s", 50),
            ]
        else:
            cells = ["-" if entry.status == "unsupported" else "0", entry.cell()] + ["-"] * 7
        lines.append(f"| {rate} | {label} | " + " | ".join(cells) + " |")
    backends = {
        e.meta.get("cgroup_v2")
        for e in report.by_key.values()
        if e.group == "memory" and e.impl == NEW and "cgroup_v2" in e.meta
    }
    if backends:
        how = {
            frozenset({True}): "cgroup v2 `memory.max`",
            frozenset({False}): "sampling (no delegated cgroup v2)",
        }.get(frozenset(backends), "cgroup v2 in some workers, sampling in others")
        lines += ["", f"Ours enforced the resident limit by {how} on this machine."]
    lines += [
        "",
        "### Address-space mode, for comparison",
        "",
        'The same function under the default `memory_mode="address_space"`',
        "(`RLIMIT_AS`): the allocation itself fails with `MemoryError`, which becomes",
        "`MemoryLimitException`. Ours sets the limit to the child's address space",
        "when the limit is applied *plus* the limit; 1.0.10 sets it to the limit,",
        "absolute. *Failed at* is the function's private memory when the allocation",
        "failed, minus the limit (negative: it got less than the limit). *Delay* runs",
        "from the failed allocation to the return in the caller.",
        "",
        (
            "| rate | implementation | n | achieved | failed at p50 | failed at p99 "
            "| delay p50 | delay p99 | peak_memory - limit p50 |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report.by_key.values():
        if entry.group != "memory" or entry.params["memory_mode"] != "address_space":
            continue
        rate = rate_label(entry.params["rate"])
        rate = rate if rate == "max" else f"{rate} MB/s"
        label = IMPL_LABEL[entry.impl]
        if entry.samples:
            cells = [
                str(len(entry.samples)),
                series_cell(entry, "rate_mib_s", 50, fmt_rate),
                series_cell(entry, "overshoot_log_mib", 50, fmt_mib),
                series_cell(entry, "overshoot_log_mib", 99, fmt_mib),
                fmt_ms(percentile(entry.samples, 50)),
                fmt_ms(percentile(entry.samples, 99)),
                series_cell(entry, "overshoot_peak_mib", 50, fmt_mib),
            ]
        else:
            cells = ["0", entry.cell()] + ["-"] * 5
        lines.append(f"| {rate} | {label} | " + " | ".join(cells) + " |")
    return lines


def gib_per_s(entry: Entry | None, size: int) -> float | None:
    if entry is None or not entry.samples:
        return None
    return size / GIB / entry.med()


def net_speedup(old: Entry | None, new: Entry | None, build: Entry | None) -> float | None:
    """Speed-up of ours over 1.0.10 once the time to build the value is taken out."""
    if old is None or new is None or build is None:
        return None
    mo, mn, mb = old.med(), new.med(), build.med()
    if mo is None or mn is None or mb is None or mn <= mb or mo <= mb:
        return None
    return (mo - mb) / (mn - mb)


def large_table(report: Report) -> list[str]:
    lines = [
        "Median time of one call that builds the value in the child and returns it",
        "(fork context), and the rate in GiB/s (value size / that time). The floor",
        "pickles the value through a raw fork + pipe, read into one buffer. *Build",
        "only* is a raw fork whose child builds the value and returns just its",
        "length: every implementation pays this before it can send anything, and",
        "*net* speed-up takes it out of both times.",
        "",
        (
            "| size | kind | pynisher 1.0.10 | ours | floor | build only "
            "| ours speed-up vs 1.0.10 | net speed-up | 1.0.10 / floor |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report.by_key.values():
        if entry.group != "large" or entry.impl != OLD:
            continue
        size = int(entry.params["size"])
        kind = entry.params["kind"]
        old = entry
        new = report.get("large", entry.config, NEW)
        floor = report.get("large", entry.config, FLOOR)
        build = report.get("large", entry.config, BUILD)

        def cell(e: Entry | None, size: int = size) -> str:
            if e is None:
                return "-"
            rate = gib_per_s(e, size)
            return e.cell(f"{fmt_ms(e.med())} ({rate:.2f} GiB/s)" if rate else None)

        lines.append(
            f"| {size_label(size)} | {kind} | {cell(old)} | {cell(new)} "
            f"| {cell(floor)} | {build.cell() if build else '-'} "
            f"| {fmt_ratio(ratio(old, new))} | {fmt_ratio(net_speedup(old, new, build))} "
            f"| {fmt_ratio(ratio(old, floor))} |"
        )
    return lines


def rss_table(report: Report) -> list[str]:
    lines = [
        "The caller first allocates a bytearray of the given size and writes every",
        "byte, then times no-op calls without limits. The floor (fork rows only) is",
        "the raw fork at the same caller size.",
        "",
        (
            "| caller | context | pynisher 1.0.10 | ours | ours / 1.0.10 "
            "| raw fork floor | ours / floor | measured caller RSS |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report.by_key.values():
        if entry.group != "rss" or entry.impl != OLD:
            continue
        level = entry.config.split("/")[0]
        ctx = entry.params["context"]
        new = report.get("rss", entry.config, NEW)
        floor = report.get("rss", f"{level}/raw-fork", FLOOR)
        if ctx != "fork":
            floor = None  # the raw fork is the floor of the fork context only
        rss = entry.meta.get("caller_rss_bytes")
        rss_text = f"{rss / GIB:.2f} GiB" if rss else "-"
        lines.append(
            f"| {level} GiB | {ctx} | {entry.cell()} | {new.cell() if new else '-'} "
            f"| {fmt_ratio(ratio(new, entry))} | {floor.cell() if floor else '-'} "
            f"| {fmt_ratio(ratio(new, floor))} | {rss_text} |"
        )
    return lines


def throughput_table(report: Report) -> list[str]:
    lines = [
        "Each caller thread builds its own limiter and makes the same number of",
        "no-op calls, in each context; calls per second over all threads, median",
        "over rounds. The floor is raw forks (fork and forkserver rows) or",
        "`python -c pass` runs (spawn rows) from the same threads. With 2 cores,",
        "2 threads can at best double the rate of 1 (*scaling* = rate / rate",
        "with 1 thread).",
        "",
        "| context | threads | pynisher 1.0.10 | ours | floor | ours / 1.0.10 | ours / floor "
        "| ours scaling | floor scaling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in report.by_key.values():
        if entry.group != "throughput" or entry.impl != OLD or "/" not in entry.config:
            continue  # (a run before 2026-12-01 measured the fork context only)
        new = report.get("throughput", entry.config, NEW)
        floor = report.get("throughput", entry.config, FLOOR)

        def cell(e: Entry | None) -> str:
            if e is None:
                return "-"
            return e.cell(f"{e.med():.0f}/s" if e.samples else None)

        ctx, threads = entry.config.split("/")
        floor_ctx = throughput_floor_context(ctx)
        if floor is None:
            floor = report.get("throughput", f"{floor_ctx}/{threads}", FLOOR)

        def scaling(impl: str, of_ctx: str, threads: str = threads) -> str:
            many = report.get("throughput", f"{of_ctx}/{threads}", impl)
            one = report.get("throughput", f"{of_ctx}/1", impl)
            return fmt_ratio(ratio(many, one))

        lines.append(
            f"| {ctx} | {threads} | {cell(entry)} | {cell(new)} | {cell(floor)} "
            f"| {fmt_ratio(ratio(new, entry))} | {fmt_ratio(ratio(new, floor))} "
            f"| {scaling(NEW, ctx)} | {scaling(FLOOR, floor_ctx)} |"
        )
    paired_rows = []
    for ctx in CONTEXTS:
        entry = report.get("throughput", f"{ctx}/scaling-paired", NEW)
        if entry is None:
            continue
        floor_gains = entry.series.get("floor", [])
        shares = entry.series.get("share", [])
        paired_rows.append(
            f"| {ctx} | {len(entry.samples)} | {entry.cell(fmt_ratio(entry.med()))} "
            f"| {fmt_ratio(median(floor_gains) if floor_gains else None)} "
            f"| {f'{median(shares):.2f}' if shares else '-'} |"
        )
    if paired_rows:
        lines += [
            "",
            "The gain from a second thread measured in turns: one worker runs ours",
            "with 1 and 2 threads and the floor with 1 and 2 threads, one burst each",
            "per cycle, in an order that rotates from cycle to cycle, so that both",
            "gains come from the same moments. *Share* is the median over cycles of",
            "our gain over the floor's; the targets above are judged on it.",
            "",
            "| context | cycles | ours: 2 threads / 1 | floor: 2 threads / 1 | share |",
            "|---|---:|---:|---:|---:|",
            *paired_rows,
        ]
    return lines


def errors_section(entries: list[Entry]) -> list[str]:
    lines: list[str] = []
    for entry in entries:
        for message, count in entry.errors.items():
            times = f" (x{count})" if count > 1 else ""
            lines.append(f"- `{entry.key}`: {md_escape(short(message, 200))}{times}")
    return lines or ["None."]


HISTORY_START = "<!-- history:start -->"
HISTORY_END = "<!-- history:end -->"
HISTORY_PLACEHOLDER = (
    "Before/after figures for each speed change go here, by hand; the driver keeps this block."
)


def kept_history(path: Path) -> str:
    """The hand-written history block of an earlier RESULTS.md, if any."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    if HISTORY_START in text and HISTORY_END in text:
        body = text.split(HISTORY_START, 1)[1].split(HISTORY_END, 1)[0]
        return body.strip("\n")
    return ""


def impl_line(info: dict[str, Any], impl: str) -> str:
    data = info.get(impl, {})
    label = IMPL_LABEL[impl]
    if data.get("status") != "ok":
        reason = md_escape(short(str(data.get("reason")), 200))
        return f"- **{label}**: not installed ({reason})"
    version = data.get("pynisher_version") or "unknown version"
    python = data.get("python")
    numpy = data.get("numpy_version") or "no numpy"
    if impl == FLOOR:
        return f"- **floor**: Python {python} (`{data.get('executable')}`), numpy {numpy}"
    return f"- **{label}**: pynisher {version}, Python {python}, numpy {numpy}"


def write_markdown(
    path: Path,
    report: Report,
    entries: list[Entry],
    meta: dict[str, Any],
    plots: list[str],
) -> None:
    machine = meta["machine"]
    info = meta["implementations"]
    out: list[str] = [
        "# pynisher benchmark: ours vs pynisher 1.0.10 vs the floor",
        "",
        "Written by `benches/driver.py` (run it with `bash benches/run.sh`); do not",
        "edit the tables by hand, they are replaced on every run. Only the history",
        "block at the end is kept.",
        "",
        f"- **date**: {machine['date']}",
        f"- **machine**: `{machine['uname']}`",
        (
            f"- **CPU**: {machine['cpu_model']}, {machine['cores']} cores "
            f"({machine['cores_usable']} usable)"
        ),
        f"- **RAM**: {machine['ram_gib']} GiB",
        (
            f"- **load average** (1/5/15 min): {meta['load_start']} at the start, "
            f"{meta['load_end']} at the end; above {machine['cores_usable']} the "
            "machine was busy and the figures are noisy"
        ),
        (
            f"- **mode**: {meta['mode']} ({meta['total_seconds']:.0f} s); every "
            "figure is a median over all rounds unless it says otherwise"
        ),
        (
            "- **bytecode**: workers and their children import modules from their "
            "bytecode caches (`__pycache__`), as on a usual install; runs before "
            "2026-11-26 02:00 UTC compiled the benchmark's targets module from "
            "source in every spawn and forkserver child"
        ),
        impl_line(info, OLD),
        impl_line(info, NEW),
        impl_line(info, FLOOR),
        "",
        "Ratios of times: below 1x means the first one is faster.",
    ]
    targets = targets_table(report)
    if targets:
        out += ["", "## Targets (DESIGN.md)", "", *targets]
    sections = (
        ("overhead", "Per-call overhead", overhead_tables),
        ("heavy", "A trial function with heavy imports", heavy_table),
        ("overshoot", "Wall-time overshoot", overshoot_table),
        ("cpu", "CPU-time overshoot", cpu_table),
        ("memory", "Memory limit: detection delay and overshoot", memory_tables),
        ("large", "Large results", large_table),
        ("rss", "Overhead against caller RSS", rss_table),
        ("throughput", "Throughput with caller threads", throughput_table),
    )
    for group, title, make in sections:
        if report.has_group(group):
            out += ["", f"## {title}", "", *make(report)]
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{name}]({name})" for name in plots]
    out += ["", "## Errors and failures", "", *errors_section(entries)]
    history = kept_history(path)
    out += [
        "",
        "## History",
        "",
        HISTORY_START,
        history or HISTORY_PLACEHOLDER,
        HISTORY_END,
        "",
    ]
    path.write_text("\n".join(out))


# --------------------------------------------------------------------------
# plots


def make_plots(report: Report, out_dir: Path) -> tuple[list[str], str | None]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.transforms import blended_transform_factory
    except ImportError as exc:
        return [], f"matplotlib is not available ({exc})"

    colors = {OLD: "#999999", NEW: "#1f77b4", FLOOR: "#2ca02c"}
    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    def bar_group(ax: Any, labels: list[str], series: dict[str, list[float | None]]) -> None:
        width = 0.8 / max(1, len(series))
        # x in data units, y in axes units: the "n/a" marks sit on the x axis
        # whatever the y scale.
        at_bottom = blended_transform_factory(ax.transData, ax.transAxes)
        for i, (impl, values) in enumerate(series.items()):
            xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
            heights = [v if v is not None else float("nan") for v in values]
            ax.bar(xs, heights, width, label=IMPL_LABEL[impl], color=colors[impl])
            for x, v in zip(xs, values, strict=True):
                if v is None:
                    ax.text(
                        x,
                        0.02,
                        "n/a",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        rotation=90,
                        color=colors[impl],
                        transform=at_bottom,
                    )
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.legend(fontsize=8)

    if report.has_group("overhead"):
        labels: list[str] = []
        series: dict[str, list[float | None]] = {OLD: [], NEW: []}
        for ctx in CONTEXTS:
            for lim in ("none", "limits"):
                labels.append(f"{ctx}\n{'all limits' if lim == 'limits' else 'no limits'}")
                for impl in (OLD, NEW):
                    entry = report.get("overhead", f"{ctx}/{lim}", impl)
                    value = entry.med() if entry else None
                    series[impl].append(value * 1e3 if value is not None else None)
        fig, ax = plt.subplots(figsize=(9, 4.5))
        bar_group(ax, labels, series)
        for config, name, style in (
            ("floor/raw-fork", "raw fork floor", "--"),
            ("floor/python-c-pass", "python -c pass floor", ":"),
        ):
            floor = report.get("overhead", config, FLOOR)
            if floor and floor.samples:
                ax.axhline(floor.med() * 1e3, color=colors[FLOOR], ls=style, lw=1, label=name)
        ax.set_yscale("log")
        shown = [v for values in series.values() for v in values if v is not None]
        shown += [
            e.med() * 1e3
            for e in (floor_for(report, "fork"), floor_for(report, "spawn"))
            if e is not None and e.samples
        ]
        if shown:
            ax.set_ylim(bottom=min(shown) / 2)
        ax.set_ylabel("median time per no-op call (ms, log scale)")
        ax.set_title("Per-call overhead by context")
        ax.legend(fontsize=8)
        save(fig, "overhead.png")

    if report.has_group("rss"):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        styles = {"fork": "o", "forkserver": "s", "spawn": "^", "raw-fork": "x"}
        lines_drawn = 0
        points: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for entry in report.by_key.values():
            if entry.group != "rss" or not entry.samples:
                continue
            level, what = entry.config.split("/")
            points.setdefault((entry.impl, what), []).append((float(level), entry.med() * 1e3))
        for (impl, what), pts in sorted(points.items()):
            pts.sort()
            label = f"{IMPL_LABEL[impl]} {what}" if impl != FLOOR else "raw fork floor"
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=styles.get(what, "o"),
                color=colors[impl],
                ls="-" if impl == NEW else ("--" if impl == OLD else ":"),
                label=label,
            )
            lines_drawn += 1
        ax.set_xlabel("caller RSS before the call (GiB)")
        ax.set_ylabel("median time per no-op call (ms)")
        ax.set_title("Overhead against caller RSS")
        if lines_drawn:
            ax.legend(fontsize=7)
        save(fig, "overhead_vs_rss.png")

    if report.has_group("large"):
        labels = []
        series = {OLD: [], NEW: [], FLOOR: []}
        for entry in report.by_key.values():
            if entry.group != "large" or entry.impl != OLD:
                continue
            size = int(entry.params["size"])
            labels.append(f"{size_label(size)}\n{entry.params['kind']}")
            for impl in (OLD, NEW, FLOOR):
                series[impl].append(gib_per_s(report.get("large", entry.config, impl), size))
        fig, ax = plt.subplots(figsize=(8, 4.5))
        bar_group(ax, labels, series)
        ax.set_ylabel("GiB/s (value size / median call time)")
        ax.set_title("Large-result throughput (fork context)")
        save(fig, "large_results.png")

    if report.has_group("heavy"):
        labels = list(CONTEXTS)
        series = {OLD: [], NEW: []}
        for ctx in CONTEXTS:
            for impl in (OLD, NEW):
                entry = report.get("heavy", ctx, impl)
                value = entry.med() if entry else None
                series[impl].append(value * 1e3 if value is not None else None)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        bar_group(ax, labels, series)
        floor = report.get("heavy", "floor/import", FLOOR)
        if floor and floor.samples:
            ax.axhline(
                floor.med() * 1e3,
                color=colors[FLOOR],
                ls="--",
                lw=1,
                label='python -c "import heavy_module"',
            )
        ax.set_yscale("log")
        ax.set_ylabel("median time per call (ms, log scale)")
        ax.set_title("A trial function whose module imports numpy and scipy")
        ax.legend(fontsize=8)
        save(fig, "heavy.png")

    if report.has_group("throughput"):
        fig, axes = plt.subplots(1, len(CONTEXTS), figsize=(11, 4), sharey=False)
        for ax, ctx in zip(axes, CONTEXTS, strict=True):
            floor_ctx = throughput_floor_context(ctx)
            drawn = False
            for impl, of_ctx, label in (
                (OLD, ctx, IMPL_LABEL[OLD]),
                (NEW, ctx, IMPL_LABEL[NEW]),
                (FLOOR, floor_ctx, "raw fork" if floor_ctx == "fork" else "python -c pass"),
            ):
                pts = []
                for entry in report.by_key.values():
                    if (
                        entry.group != "throughput"
                        or entry.impl != impl
                        or not entry.samples
                        or "/" not in entry.config
                        or entry.case == "scaling-paired"
                    ):
                        continue
                    entry_ctx, threads = entry.config.split("/")
                    if entry_ctx == of_ctx:
                        pts.append((int(threads), entry.med()))
                pts.sort()
                if pts:
                    drawn = True
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        marker="o",
                        color=colors[impl],
                        ls=":" if impl == FLOOR else "-",
                        label=label,
                    )
            ax.set_title(ctx)
            ax.set_xlabel("caller threads")
            ax.set_xticks([1, 2, 4])
            ax.set_ylim(bottom=0)
            if drawn:
                ax.legend(fontsize=7)
        axes[0].set_ylabel("no-op calls per second")
        fig.suptitle("Throughput with caller threads (2 cores)")
        save(fig, "throughput.png")

    return written, None


# --------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, no 1/4 GiB")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="output directory")
    parser.add_argument("--only", default="", help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, default=None, help="override rounds for every group")
    parser.add_argument("--old-python", default=str(HERE / ".venv-old" / "bin" / "python"))
    parser.add_argument("--new-python", default=str(HERE / ".venv-new" / "bin" / "python"))
    parser.add_argument("--floor-python", default=None, help="default: the old venv's python")
    parser.add_argument("--new-note", default=None, help="why ours may be missing (from run.sh)")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="measure nothing: write RESULTS.md and the plots again from this results.json",
    )
    return parser.parse_args(argv)


def render(saved: Path, out: Path) -> int:
    """Writes the report of an earlier run again, with this driver's tables
    and plots; the measurements and their metadata are the saved ones."""
    data = json.loads(saved.read_text())
    entries = [Entry.from_json(e) for e in data["entries"]]
    meta = data["meta"]
    out.mkdir(parents=True, exist_ok=True)
    report = Report(entries)
    plots, plot_problem = make_plots(report, out)
    meta["plots"], meta["plot_problem"] = plots, plot_problem
    if saved.resolve() != (out / "results.json").resolve():
        (out / "results.json").write_text(json.dumps(data, indent=1))
    write_markdown(out / "RESULTS.md", report, entries, meta, plots)
    print(f"wrote {out / 'RESULTS.md'} ({len(plots)} plots) from {saved}")
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return render(args.render, args.out)
    started = time.monotonic()
    load_start = load_average()
    groups = [g.strip() for g in args.only.split(",") if g.strip()] or list(GROUPS)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        print(f"unknown group(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    mode = "quick" if args.quick else "full"
    profile = copy.deepcopy(PROFILES[mode])
    if args.rounds is not None:
        for group in profile.values():
            group["rounds"] = args.rounds

    floor_python = args.floor_python
    if floor_python is None:
        floor_python = args.old_python if Path(args.old_python).exists() else sys.executable
    pythons: dict[str, str | None] = {
        OLD: args.old_python,
        NEW: args.new_python,
        FLOOR: floor_python,
    }
    runner = Runner({}, started)
    runner.log(f"{mode} run; checking interpreters")
    usable, impl_info = describe_impls(pythons, args.new_note)
    for impl in (OLD, NEW, FLOOR):
        data = impl_info[impl]
        state = data["status"] if data["status"] == "ok" else f"not installed: {data.get('reason')}"
        runner.log(f"{IMPL_LABEL[impl]}: {state}")
    runner.pythons = usable

    entries = build_entries(profile, groups)
    for group in groups:
        runner.run_group([e for e in entries if e.group == group], profile[group]["rounds"])

    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(entries)
    plots, plot_problem = make_plots(report, args.out)
    meta = {
        "mode": mode,
        "profile": {g: profile[g] for g in groups},
        "machine": machine_info(),
        "implementations": impl_info,
        "total_seconds": time.monotonic() - started,
        "load_start": load_start,
        "load_end": load_average(),
        "plots": plots,
        "plot_problem": plot_problem,
    }
    with open(args.out / "results.json", "w") as fh:
        json.dump({"meta": meta, "entries": [e.to_json() for e in entries]}, fh, indent=1)
    write_markdown(args.out / "RESULTS.md", report, entries, meta, plots)
    if plot_problem:
        runner.log(f"no plots: {plot_problem}")
    runner.log(f"wrote {args.out / 'RESULTS.md'} and results.json ({len(plots)} plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
