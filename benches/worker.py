"""Run one benchmark measurement inside the current interpreter.

The driver starts this script with the interpreter of one implementation's
virtualenv, because pynisher 1.0.10 and ours share the import name
``pynisher`` and cannot live in one environment:

    <venv>/bin/python benches/worker.py <case> '<json params>'

The script prints exactly one line that starts with ``RESULT_PREFIX``,
followed by a JSON object.  On success it holds ``"ok": true`` and the
measured ``samples`` (seconds, or calls per second for throughput), and
for some cases ``series``: more named figures, one per sample; on
failure ``"ok": false`` and an ``error`` string.  Anything else on stdout
(for example output of a child process) is ignored by the driver.

Cases:
    info              versions of python, pynisher and numpy
    noop              per-call time of a no-op function under pynisher
    noop-paired       the same, alternating call by call with its floor
                      (a raw fork, or ``python -c pass`` for spawn) in
                      this one process
    heavy             per-call time of the heavy-import trial
    heavy-paired      the same, alternating with its goal's base (our
                      fork, or ``python -c "import heavy_module"``)
    floor-import      per-call time of ``python -c "import heavy_module"``
    floor-fork        per-call time of raw os.fork + pipe + waitpid
    floor-exec        per-call time of ``python -c pass``
    overshoot         how long past its wall-time limit a call returns
    large             per-call time of returning a large bytes/numpy value
    floor-large       the same value through raw fork + pipe + pickle
    floor-build       build that value in a forked child and return only its length
    throughput        calls per second from N caller threads
    floor-throughput  the same with raw forks
    floor-exec-throughput  the same with ``python -c pass`` runs
    scaling-paired    the gain from a second caller thread, ours and its
                      floor's, measured in turns in this one process
    cpu-overshoot     CPU time a busy loop burns past its CPU-time limit
    memory-delay      how late and how far past the limit a growing
                      allocation is stopped, at a given allocation rate

Every case accepts ``rss_gb``: the caller first allocates and fills that
many GiB, so that the cost of a call can be measured against caller size.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

# This script's own folder is sys.path[0], so the targets import by name here
# and, through the inherited sys.path, in spawn and forkserver children too.
import bench_targets as targets

RESULT_PREFIX = "BENCH-RESULT "
GIB = 1 << 30
ALL_LIMITS = {"wall_time": 10, "cpu_time": 10, "memory": (2, "GB")}
_HEADER = struct.Struct("<Q")


class CaseError(Exception):
    """A measurement that could not be made; reported as ``ok: false``."""


def describe(exc: BaseException) -> str:
    """One line naming the exception type and the first line of its message."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    line = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return line[:300]


# --------------------------------------------------------------------------
# caller ballast


def allocate_ballast(gib: float) -> bytearray | None:
    """Allocate and write ``gib`` GiB so that every page is resident."""
    size = int(gib * GIB)
    if size <= 0:
        return None
    ballast = bytearray(size)
    chunk = b"\x5a" * (64 << 20)
    for start in range(0, size, len(chunk)):
        stop = min(start + len(chunk), size)
        ballast[start:stop] = chunk[: stop - start]
    return ballast


def resident_bytes() -> int:
    """Resident set size of this process, from /proc (0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# --------------------------------------------------------------------------
# the floor: a limiter that does nothing but fork, pipe, pickle and wait


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError(f"pipe closed after {got} of {size} bytes")
        got += n
    return buf


def raw_fork_call(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(*args)`` in a forked child and return its pickled result.

    This is the least a fork-based limiter has to do: one pipe, one fork,
    a length-prefixed pickle frame, one waitpid.  No limits, no supervision.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(read_fd)
            payload = pickle.dumps(func(*args), protocol=pickle.HIGHEST_PROTOCOL)
            _write_all(write_fd, _HEADER.pack(len(payload)))
            _write_all(write_fd, payload)
        except BaseException:  # the child must never return to the caller
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        header = _read_exact(read_fd, _HEADER.size)
        payload = _read_exact(read_fd, _HEADER.unpack(header)[0])
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise CaseError(f"raw fork child failed with status {status}")
    return pickle.loads(payload)


# --------------------------------------------------------------------------
# helpers for timing repeated calls


def time_calls(call: Callable[[], Any], check: Callable[[Any], None], params: dict) -> dict:
    """Warm up, then time ``calls`` calls; a failing warm-up fails the case."""
    for _ in range(int(params.get("warmup", 1))):
        check(call())
    samples: list[float] = []
    errors: list[str] = []
    for _ in range(int(params["calls"])):
        start = time.perf_counter()
        try:
            value = call()
        except Exception as exc:  # recorded, the run goes on
            errors.append(describe(exc))
            continue
        samples.append(time.perf_counter() - start)
        try:
            check(value)
        except CaseError as exc:
            errors.append(describe(exc))
    if not samples:
        raise CaseError(errors[0] if errors else "no call succeeded")
    return {"samples": samples, "errors": errors}


def check_noop(value: Any) -> None:
    if value != targets.NOOP_RESULT:
        raise CaseError(f"no-op returned {value!r}, expected {targets.NOOP_RESULT}")


def large_maker(kind: str) -> Callable[[int], Any]:
    if kind == "bytes":
        return targets.make_bytes
    if kind == "numpy":
        try:
            import numpy  # noqa: F401 - only checking that it is there
        except ImportError as exc:
            raise CaseError("numpy is not installed in this venv") from exc
        return targets.make_array
    raise CaseError(f"unknown kind {kind!r}")


def large_checker(size: int) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if len(value) != size or value[-1] != targets.FILL_BYTE:
            raise CaseError("large result came back wrong")

    return check


def make_limiter(func: Callable[..., Any], params: dict) -> Any:
    import pynisher

    options: dict[str, Any] = {"context": params.get("context", "fork")}
    if params.get("limits"):
        options.update(ALL_LIMITS)
    options.update(params.get("options", {}))
    return pynisher.Pynisher(func, **options)


# --------------------------------------------------------------------------
# cases


def case_info(params: dict) -> dict:
    meta: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
    }
    try:
        import pynisher

        meta["pynisher_version"] = getattr(pynisher, "__version__", None)
        meta["pynisher_file"] = getattr(pynisher, "__file__", None)
        meta["has_Pynisher"] = hasattr(pynisher, "Pynisher")
        meta["contexts"] = [str(c) for c in getattr(pynisher, "contexts", [])]
    except Exception as exc:  # a broken build is reported, not raised
        meta["pynisher_error"] = describe(exc)
    if meta.get("pynisher_version") is None and "pynisher_error" not in meta:
        try:
            from importlib.metadata import version

            meta["pynisher_version"] = version("pynisher")
        except ImportError as exc:  # PackageNotFoundError is an ImportError
            meta["pynisher_version_error"] = describe(exc)
    try:
        import numpy

        meta["numpy_version"] = numpy.__version__
    except ImportError:
        meta["numpy_version"] = None
    return {"samples": [], "meta": meta}


def case_noop(params: dict) -> dict:
    limiter = make_limiter(targets.noop, params)
    return time_calls(limiter, check_noop, params)


def case_floor_fork(params: dict) -> dict:
    return time_calls(lambda: raw_fork_call(targets.noop), check_noop, params)


def run_python_pass() -> int:
    return subprocess.run([sys.executable, "-c", "pass"], check=True).returncode


def check_exit_zero(code: int) -> None:
    if code != 0:
        raise CaseError(f"python -c pass exited {code}")


def case_floor_exec(params: dict) -> dict:
    return time_calls(run_python_pass, check_exit_zero, params)


def alternate(
    ours: Callable[[], Any],
    check_ours: Callable[[Any], None],
    base: Callable[[], Any],
    check_base: Callable[[Any], None],
    params: dict,
) -> dict:
    """Ours and a base, one call each in turn, in this one process.

    Separate workers measure each at a different moment, and this VM's
    speed moves by a third between moments; a pair sees the same machine.
    Which of the two goes first alternates. The samples are our times; the
    series ``floor`` holds the base's and ``ratio`` ours / base, per pair.
    """
    for _ in range(int(params.get("warmup", 1))):
        check_ours(ours())
        check_base(base())
    mine: list[float] = []
    bases: list[float] = []
    for i in range(int(params["calls"])):
        pair = [(ours, check_ours, mine), (base, check_base, bases)]
        for call, check, into in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            value = call()
            into.append(time.perf_counter() - start)
            check(value)
    return {
        "samples": mine,
        "series": {"floor": bases, "ratio": [a / b for a, b in zip(mine, bases)]},
        "errors": [],
    }


def case_noop_paired(params: dict) -> dict:
    """A no-op call and its floor in turns (see `alternate`). The raw fork
    forks this same process (pynisher imported), which is what a raw fork
    of the caller costs."""
    limiter = make_limiter(targets.noop, params)
    if params.get("context") == "spawn":
        return alternate(limiter, check_noop, run_python_pass, check_exit_zero, params)
    return alternate(limiter, check_noop, lambda: raw_fork_call(targets.noop), check_noop, params)


def heavy_trial(params: dict) -> Callable[[], Any]:
    """``trial(1)`` of the heavy module under our limiter for ``params``."""
    try:
        import heavy_module
    except ImportError as exc:
        raise CaseError(f"the heavy-import scenario needs numpy and scipy ({exc})") from exc
    limiter = make_limiter(heavy_module.trial, params)
    return lambda: limiter(1)


def check_trial(value: Any) -> None:
    if value != 2:
        raise CaseError(f"trial(1) returned {value!r}, expected 2")


def case_heavy(params: dict) -> dict:
    return time_calls(heavy_trial(params), check_trial, params)


def run_import_heavy() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, "-c", "import heavy_module"]
    return subprocess.run(command, check=True, cwd=here).returncode


def check_import_heavy(code: int) -> None:
    if code != 0:
        raise CaseError(f"python -c 'import heavy_module' exited {code}")


def case_heavy_paired(params: dict) -> dict:
    """The heavy trial in ``context`` and its goal's base in turns, in this
    one process (see `case_noop_paired`): our fork for forkserver,
    ``python -c "import heavy_module"`` for spawn."""
    ours = heavy_trial(params)
    if params["context"] == "spawn":
        base: Callable[[], Any] = run_import_heavy
        check_base: Callable[[Any], None] = check_import_heavy
    else:
        base, check_base = heavy_trial({**params, "context": "fork"}), check_trial
    return alternate(ours, check_trial, base, check_base, params)


def case_floor_import(params: dict) -> dict:
    """``python -c "import heavy_module"``: what any fresh interpreter pays."""
    return time_calls(run_import_heavy, check_import_heavy, params)


def case_overshoot(params: dict) -> dict:
    func = {"sleep": targets.sleeper, "ignore_term": targets.stubborn_sleeper}[params["target"]]
    wall = float(params["wall_time"])
    limiter = make_limiter(func, {**params, "options": {"wall_time": params["wall_time"]}})
    samples: list[float] = []
    errors: list[str] = []
    raised: list[str] = []
    for _ in range(int(params["calls"])):
        start = time.perf_counter()
        try:
            limiter(float(params["sleep"]))
        except Exception as exc:  # the timeout exception is the point
            elapsed = time.perf_counter() - start
            raised.append(type(exc).__name__)
            if "Timeout" in type(exc).__name__:
                samples.append(elapsed - wall)
            else:
                errors.append(describe(exc))
        else:
            errors.append("call returned normally; the wall-time limit was not enforced")
    if not samples:
        raise CaseError(errors[0] if errors else "no call timed out")
    return {
        "samples": samples,
        "errors": errors,
        "meta": {"raised": sorted(set(raised))},
    }


def case_large(params: dict) -> dict:
    size = int(params["size"])
    limiter = make_limiter(large_maker(params["kind"]), params)
    return time_calls(lambda: limiter(size), large_checker(size), params)


def case_floor_large(params: dict) -> dict:
    size = int(params["size"])
    maker = large_maker(params["kind"])
    return time_calls(lambda: raw_fork_call(maker, size), large_checker(size), params)


def case_floor_build(params: dict) -> dict:
    size = int(params["size"])
    large_maker(params["kind"])  # fails early when numpy is missing

    def check(value: int) -> None:
        if value != size:
            raise CaseError(f"built {value} bytes, expected {size}")

    return time_calls(
        lambda: raw_fork_call(targets.build_only, params["kind"], size), check, params
    )


def run_threads(make_call: Callable[[], Callable[[], Any]], params: dict) -> dict:
    """Each of ``threads`` threads makes ``calls`` calls; report calls/s."""
    n_threads = int(params["threads"])
    per_thread = int(params["calls"])
    deadline = float(params.get("deadline", 120))
    done = [0] * n_threads
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads + 1)

    def body(index: int) -> None:
        try:
            call = make_call()
            call()  # warm-up, outside the timed window
        except Exception as exc:  # recorded per thread
            with lock:
                errors.append(describe(exc))
            barrier.wait()
            return
        barrier.wait()
        for _ in range(per_thread):
            try:
                check_noop(call())
            except Exception as exc:  # recorded per thread
                with lock:
                    errors.append(describe(exc))
            else:
                done[index] += 1

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=deadline)
    except threading.BrokenBarrierError as exc:
        raise CaseError(f"threads did not finish their warm-up call within {deadline} s") from exc
    start = time.perf_counter()
    end_by = time.monotonic() + deadline
    for thread in threads:
        thread.join(timeout=max(0.0, end_by - time.monotonic()))
    elapsed = time.perf_counter() - start
    total = sum(done)
    hung = sum(thread.is_alive() for thread in threads)
    meta = {
        "calls_done": total,
        "calls_planned": n_threads * per_thread,
        "seconds": elapsed,
    }
    if hung:
        raise CaseError(
            f"{hung} of {n_threads} threads hung: {total} of "
            f"{n_threads * per_thread} calls done after {elapsed:.1f} s"
        )
    if total == 0:
        raise CaseError(errors[0] if errors else "no call succeeded")
    return {"samples": [total / elapsed], "errors": errors, "meta": meta}


def case_throughput(params: dict) -> dict:
    return run_threads(lambda: make_limiter(targets.noop, params), params)


def case_floor_throughput(params: dict) -> dict:
    return run_threads(lambda: lambda: raw_fork_call(targets.noop), params)


def burst(
    make_call: Callable[[], Callable[[], Any]],
    check: Callable[[Any], None],
    threads: int,
    calls: int,
) -> float:
    """Calls per second of ``threads`` threads making ``calls`` calls each
    (each thread makes its own callable and one untimed call first)."""
    barrier = threading.Barrier(threads + 1)
    failures: list[BaseException] = []

    def body() -> None:
        try:
            call = make_call()
            check(call())
        except BaseException as exc:  # reported below; the others go on
            failures.append(exc)
            barrier.abort()
            return
        barrier.wait()
        for _ in range(calls):
            check(call())

    workers = [threading.Thread(target=body, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError as exc:
        raise CaseError(f"a warm-up call failed: {failures[:1]}") from exc
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    return threads * calls / (time.perf_counter() - start)


def case_scaling_paired(params: dict) -> dict:
    """The gain from a second caller thread (rate with 2 / rate with 1),
    ours and the floor's, in turns in this one process.

    Separate workers measure the rates at moments far apart, and this VM's
    speed moves by a fifth between them, more than the margin judged here.
    One cycle runs ours with 1 and 2 threads and the floor with 1 and 2
    threads, in an order that rotates from cycle to cycle; the samples are
    our gains, and ``share`` is our gain over the floor's, per cycle.
    """
    if params["context"] == "spawn":
        floor_call: Callable[[], Any] = run_python_pass
        check_floor: Callable[[Any], None] = check_exit_zero
    else:
        floor_call, check_floor = (lambda: raw_fork_call(targets.noop)), check_noop
    kinds = {
        "ours": (lambda: make_limiter(targets.noop, params), check_noop),
        "floor": (lambda: floor_call, check_floor),
    }
    plan = [(kind, threads) for kind in kinds for threads in (1, 2)]
    calls = int(params["calls"])
    ours: list[float] = []
    floors: list[float] = []
    for cycle in range(int(params["cycles"])):
        shift = cycle % len(plan)
        rates = {}
        for kind, threads in plan[shift:] + plan[:shift]:
            make_call, check = kinds[kind]
            rates[kind, threads] = burst(make_call, check, threads, calls)
        ours.append(rates["ours", 2] / rates["ours", 1])
        floors.append(rates["floor", 2] / rates["floor", 1])
    return {
        "samples": ours,
        "series": {"floor": floors, "share": [a / b for a, b in zip(ours, floors)]},
        "errors": [],
    }


def case_floor_exec_throughput(params: dict) -> dict:
    command = [sys.executable, "-c", "pass"]

    def call() -> Any:
        subprocess.run(command, check=True)
        return targets.NOOP_RESULT  # the exit status was checked

    return run_threads(lambda: call, params)


# --------------------------------------------------------------------------
# precision of the CPU-time and memory limits


def is_ours() -> bool:
    import pynisher

    return hasattr(pynisher, "Outcome")


def run_limited(limiter: Any, *args: Any) -> tuple[str, Any]:
    """Call ``limiter``; return how it ended and, for ours, the ``Outcome``.

    The name is ``"ok"`` or the class name of the exception raised (1.0.10),
    or the ``Outcome.status`` (ours: ``"cpu_time"``, ``"memory"``, ...).
    """
    if is_ours():
        outcome = limiter.run(*args)
        return str(outcome.status), outcome
    try:
        limiter(*args)
    except Exception as exc:  # the limit exceptions are the expected result
        return type(exc).__name__, None
    return "ok", None


def children_cpu() -> float:
    """CPU seconds of all reaped children of this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap_stragglers(deadline: float) -> int:
    """Wait (up to ``deadline`` s) for any child the limiter left unreaped."""
    reaped = 0
    end = time.monotonic() + deadline
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            if time.monotonic() > end:
                return reaped
            time.sleep(0.01)
        else:
            reaped += 1


def case_cpu_overshoot(params: dict) -> dict:
    """A busy loop under ``cpu_time``; the CPU it really used, seen from here.

    The caller's ``RUSAGE_CHILDREN`` before and after the call gives the CPU
    time of the child (and of anything it started that was reaped), whatever
    the implementation reports. The driver runs one call per worker so that
    nothing else is ever reaped in between; after the call, any child the
    limiter left behind is waited for and its CPU time reported separately.
    """
    limit = float(params["cpu_time"])
    options = {"cpu_time": params["cpu_time"]}
    # Warm-up: the first call of a process pays one-off costs (imports, the
    # first fork). Its child is reaped before the measured call starts.
    warm = make_limiter(targets.noop, {**params, "options": options})
    for _ in range(int(params.get("warmup", 1))):
        check_noop(warm())
    reap_stragglers(0.0)  # a warm-up child still unreaped would count below
    limiter = make_limiter(targets.busy_loop, {**params, "options": options})
    samples: list[float] = []
    series: dict[str, list[float]] = {"wall": [], "consumed": [], "reported": []}
    errors: list[str] = []
    ended: list[str] = []
    late_cpu = 0.0
    for _ in range(int(params["calls"])):
        cpu_before = children_cpu()
        start = time.perf_counter()
        status, outcome = run_limited(limiter, float(params["cap"]))
        wall = time.perf_counter() - start
        consumed = children_cpu() - cpu_before
        after_return = children_cpu()
        reap_stragglers(float(params.get("reap_wait", 10.0)))
        late_cpu += children_cpu() - after_return
        ended.append(status)
        if status not in ("cpu_time", "CpuTimeoutException"):
            errors.append(f"call ended with {status}, not a CPU timeout")
            continue
        samples.append(consumed - limit)
        series["wall"].append(wall)
        series["consumed"].append(consumed)
        if outcome is not None:
            series["reported"].append(outcome.cpu_time)
    if not samples:
        raise CaseError(errors[0] if errors else "no call was stopped by the CPU limit")
    if not series["reported"]:
        del series["reported"]
    return {
        "samples": samples,
        "series": series,
        "errors": errors,
        "meta": {"ended": sorted(set(ended)), "cpu_of_unreaped_children": late_cpu},
    }


def read_memory_log(path: str) -> dict[str, Any]:
    """Parse the progress lines that ``allocate_at_rate`` wrote."""
    log: dict[str, Any] = {"chunks": []}
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "S" and len(parts) >= 4:
                log["start"] = float(parts[1])
                log["baseline"] = int(parts[2])
            elif parts[0] == "B" and len(parts) >= 3:
                log["begun"] = (float(parts[1]), int(parts[2]))
            elif parts[0] == "A" and len(parts) >= 3:
                log["chunks"].append((float(parts[1]), int(parts[2])))
            elif parts[0] == "E" and len(parts) >= 3:
                log["failed"] = (float(parts[1]), int(parts[2]))
            elif parts[0] == "D" and len(parts) >= 3:
                log["done"] = (float(parts[1]), int(parts[2]))
    return log


def footprint(allocated: int) -> int:
    """The private memory that ``allocated`` bytes of ``allocate_at_rate``'s
    1 MiB chunks take: one page more per chunk, for malloc's header."""
    return allocated + (allocated // targets.MIB) * targets.PAGE


def case_memory_delay(params: dict) -> dict:
    """A function grows its memory at a set rate until the limit stops it.

    Resident mode (ours): the *crossing* is the first moment the function's
    private memory (its private memory at start + what it allocated since)
    passed the limit, by its own log (the beginning of the crossing chunk if
    the kill came in the middle of it). The figures are the delay from there to
    the moment the call returned here, and how far past the limit the tree got:
    by ``Outcome.peak_memory`` (what the sampler saw) and by the function's
    log (the last chunk it finished before it was killed).

    Address-space mode (ours and 1.0.10): the allocation fails; the delay is
    from the failed allocation to the return, and "reached" is how much private
    memory the function had when it failed, relative to the limit.
    """
    limit = int(params["memory"])
    rate = params.get("rate")
    mode = params["memory_mode"]
    options: dict[str, Any] = {"memory": limit}
    if mode != "address_space":
        options["memory_mode"] = mode
    limiter = make_limiter(targets.allocate_at_rate, {**params, "options": options})
    cap = int(params.get("cap_factor", 3) * limit)
    samples: list[float] = []
    series: dict[str, list[float]] = {
        "overshoot_log_mib": [],
        "overshoot_peak_mib": [],
        "rate_mib_s": [],
        "ran_past_s": [],
    }
    errors: list[str] = []
    ended: list[str] = []
    baselines: list[int] = []
    for _ in range(int(params["calls"])):
        fd, path = tempfile.mkstemp(prefix="pynisher-bench-mem-")
        os.close(fd)
        try:
            status, outcome = run_limited(limiter, limit, rate, path, cap)
            returned = time.monotonic()
            log = read_memory_log(path)
        finally:
            os.unlink(path)
        ended.append(status)
        if "start" not in log:
            errors.append(f"call ended with {status} before the function started")
            continue
        if "done" in log:
            errors.append(f"allocated {cap >> 20} MiB and was not stopped (ended: {status})")
            continue
        if status not in ("memory", "MemoryLimitException"):
            errors.append(f"call ended with {status}, not a memory limit")
            continue
        baseline = log["baseline"]
        baselines.append(baseline)
        # What each chunk adds to the function's private memory: its MiB, and
        # the page of malloc's header in front of it (a 1 MiB bytearray is a
        # mapping of 257 pages, all written when it is zeroed).
        chunks = [(t, footprint(a)) for t, a in log["chunks"]]
        if chunks and len(chunks) > 1:
            span = chunks[-1][0] - log["start"]
            if span > 0:
                series["rate_mib_s"].append(log["chunks"][-1][1] / (1 << 20) / span)
        reached = baseline + (chunks[-1][1] if chunks else 0)
        if mode == "address_space":
            if "failed" not in log:
                errors.append(f"{status} without a failed allocation in the log")
                continue
            failed_at, allocated = log["failed"]
            samples.append(returned - failed_at)
            overshoot = baseline + footprint(allocated) - limit
            series["overshoot_log_mib"].append(overshoot / (1 << 20))
        else:
            crossed = next((t for t, a in chunks if baseline + a > limit), None)
            begun_at, begun_total = log.get("begun", (None, 0))
            begun_total = footprint(begun_total)
            if crossed is None and baseline + begun_total > limit:
                # Killed in the middle of the chunk that crosses the limit
                # (the sampler saw it partly touched): it crossed at most
                # when that chunk began.
                crossed = begun_at
            if crossed is None:
                errors.append(f"{status} before the function's own count passed the limit")
                continue
            samples.append(returned - crossed)
            series["overshoot_log_mib"].append((reached - limit) / (1 << 20))
            series["ran_past_s"].append(chunks[-1][0] - crossed)
        if outcome is not None:
            series["overshoot_peak_mib"].append((outcome.peak_memory - limit) / (1 << 20))
    if not samples:
        raise CaseError(errors[0] if errors else "no call was stopped by the memory limit")
    meta: dict[str, Any] = {"ended": sorted(set(ended))}
    if baselines:
        meta["baseline_private_mib"] = sorted(b / (1 << 20) for b in baselines)
    if is_ours():
        import pynisher

        meta["cgroup_v2"] = bool(pynisher.supports("cgroup_v2"))
    return {
        "samples": samples,
        "series": {k: v for k, v in series.items() if v},
        "errors": errors,
        "meta": meta,
    }


CASES: dict[str, Callable[[dict], dict]] = {
    "info": case_info,
    "noop": case_noop,
    "noop-paired": case_noop_paired,
    "floor-fork": case_floor_fork,
    "floor-exec": case_floor_exec,
    "overshoot": case_overshoot,
    "large": case_large,
    "floor-large": case_floor_large,
    "floor-build": case_floor_build,
    "throughput": case_throughput,
    "scaling-paired": case_scaling_paired,
    "floor-throughput": case_floor_throughput,
    "floor-exec-throughput": case_floor_exec_throughput,
    "cpu-overshoot": case_cpu_overshoot,
    "memory-delay": case_memory_delay,
    "heavy": case_heavy,
    "heavy-paired": case_heavy_paired,
    "floor-import": case_floor_import,
}


def main(argv: list[str]) -> dict:
    if len(argv) != 3 or argv[1] not in CASES:
        names = ", ".join(CASES)
        return {
            "ok": False,
            "error": f"usage: worker.py <case> <json-params>; cases: {names}",
        }
    params = json.loads(argv[2])
    try:
        ballast = allocate_ballast(float(params.get("rss_gb", 0)))
        rss = resident_bytes()
        result = CASES[argv[1]](params)
        del ballast
    except CaseError as exc:
        return {"ok": False, "error": str(exc)[:300]}
    except Exception as exc:  # any failure becomes a result line
        return {
            "ok": False,
            "error": describe(exc),
            "traceback": traceback.format_exc(),
        }
    result.setdefault("errors", [])
    result.setdefault("meta", {})
    result["meta"]["caller_rss_bytes"] = rss
    result["ok"] = True
    return result


if __name__ == "__main__":
    report = main(sys.argv)
    sys.stdout.write(RESULT_PREFIX + json.dumps(report) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: a hung thread or a limiter's exit hook must not keep
    # this process alive after the result has been written.
    os._exit(0)
