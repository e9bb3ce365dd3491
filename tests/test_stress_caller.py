"""The busy caller of issue 13, all at once: eight threads of one caller
process, in which one keeps the GIL busy in C, one reaps every child it can
(``waitpid(-1)``), one forks children that exit through ``sys.exit``, and
five make limited calls of every kind in every context. Every call must get
the right status within its wall-time limit plus 1 s (plus the start-up that
a fresh interpreter is not charged for, as everywhere in these tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import START_UP

CALLER = """
    import ctypes, json, os, sys, threading, time
    from pynisher import Pynisher

    sys.path.insert(0, {tests!r})
    import caller_funcs as funcs

    stop = threading.Event()
    hold = ctypes.PyDLL(None).usleep  # keeps the GIL for the whole C call
    hold.argtypes = [ctypes.c_uint]

    def gil_holder():
        while not stop.is_set():
            hold(200_000)
            time.sleep(0.01)

    def reaper():
        while not stop.is_set():
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.002)

    def forker():
        while not stop.is_set():
            pid = os.fork()
            if pid == 0:
                time.sleep(0.01)
                sys.exit(0)  # atexit handlers and finalizers run here
            time.sleep(0.05)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass  # the reaper got it

    # kind: (function, args, options, expected status)
    KINDS = {{
        "ok": (funcs.returns_one, (), {{"wall_time": 2}}, "ok"),
        "error": (funcs.raises_value_error, (), {{"wall_time": 2}}, "error"),
        "wall_time": (funcs.sleeps, (), {{"wall_time": 0.5, "grace_period": 0.2}}, "wall_time"),
        # Five busy loops at once on two loaded cores get little CPU each:
        # the wall-time limit here is only a safety net.
        "cpu_time": (funcs.burns, (60,), {{"cpu_time": 0.3, "wall_time": 30}}, "cpu_time"),
        "memory": (funcs.allocates, (1 << 30,), {{"memory": 200 << 20, "wall_time": 5}}, "memory"),
    }}
    CONTEXTS = ("fork", "spawn", "forkserver")
    START_UP = {start_up!r}
    GIL_WAIT = 2.0
    problems = []
    calls = []

    def caller(index):
        kinds = list(KINDS)
        for step in range({calls_per_thread}):
            kind = kinds[(index + step) % len(kinds)]
            context = CONTEXTS[(index + step // len(kinds)) % len(CONTEXTS)]
            func, args, options, expected = KINDS[kind]
            started = time.monotonic()
            try:
                outcome = Pynisher(func, context=context, **options).run(*args)
                status, detail = outcome.status.value, outcome.detail
            except BaseException as exc:
                status, detail = "raised", f"{{type(exc).__name__}}: {{exc}}"
            took = time.monotonic() - started
            calls.append(kind)
            # The kill is on time whatever the GIL does: the call's own
            # clock ends within its limit plus 1 s.
            ran = outcome.wall_time if status != "raised" else took
            limit = options["wall_time"] + 1
            # The caller's clock also counts its own Python work around the
            # call, which waits for the GIL like any Python code (here behind
            # 200 ms holds), and a fresh interpreter's start-up.
            bound = limit + START_UP[context] + GIL_WAIT
            if status != expected or ran > limit or took > bound:
                problems.append(
                    f"{{kind}} in {{context}}: {{status}}, ran {{ran:.2f}} s (limit {{limit}}), "
                    f"returned after {{took:.2f}} s (bound {{bound}}); expected {{expected}}: "
                    f"{{detail}}"
                )

    # Start the forkserver first: its own start-up is not what is tested.
    for context in CONTEXTS:
        assert Pynisher(funcs.returns_one, context=context)() == 1
    helpers = [threading.Thread(target=target) for target in (gil_holder, reaper, forker)]
    callers = [threading.Thread(target=caller, args=(i,)) for i in range(8 - len(helpers))]
    for thread in helpers + callers:
        thread.start()
    for thread in callers:
        thread.join()
    stop.set()
    for thread in helpers:
        thread.join()
    print(json.dumps({{"calls": len(calls), "callers": len(callers), "problems": problems}}))
"""

CALLS_PER_THREAD = 6


@pytest.mark.slow
def test_every_call_of_a_busy_caller_gets_its_status_on_time() -> None:
    script = CALLER.format(
        tests=str(Path(__file__).parent),
        start_up=START_UP,
        calls_per_thread=CALLS_PER_THREAD,
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["callers"] == 5
    assert report["calls"] == 5 * CALLS_PER_THREAD
    assert not report["problems"], "\n".join(report["problems"])
