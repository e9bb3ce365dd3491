"""A caller in the foreground of a real terminal (a pseudo-terminal made by
``pty.fork``, which gives the caller a session of its own with the terminal
as its controlling terminal): the call gets the terminal while it runs, so
``input()`` in the function works, and the caller gets it back afterwards."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import textwrap
import time

CALLER = """
    import sys
    from pynisher import Pynisher

    def ask():
        return input("name? ")

    for context in ("fork", "spawn", "forkserver"):
        outcome = Pynisher(ask, context=context, wall_time=5).run()
        print("RESULT", context, outcome.status.value, repr(outcome.value), flush=True)
        # The caller has the terminal back: it can read from it itself.
        print("CALLER", context, repr(input("again? ")), flush=True)
"""


def drive(script: str, answers: dict[bytes, bytes], timeout: float) -> str:
    """Runs ``script`` on a new pseudo-terminal, answering each prompt in
    ``answers`` as it appears; returns everything the terminal showed."""
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - the caller, on the terminal
        os.execv(sys.executable, [sys.executable, "-c", textwrap.dedent(script)])
    shown = b""
    answered = 0
    until = time.monotonic() + timeout
    try:
        while time.monotonic() < until:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the caller has exited
                    break
                if not chunk:
                    break
                shown += chunk
            # Answer every prompt seen so far, in order.
            prompts = sorted((at, prompt) for prompt in answers for at in _all(shown, prompt))
            for _, prompt in prompts[answered:]:
                os.write(master, answers[prompt])
            answered = len(prompts)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(master)
    return shown.decode(errors="replace")


def _all(text: bytes, part: bytes) -> list[int]:
    found, at = [], text.find(part)
    while at >= 0:
        found.append(at)
        at = text.find(part, at + 1)
    return found


def test_input_in_the_function_reads_from_the_callers_terminal() -> None:
    shown = drive(CALLER, {b"name? ": b"alice\n", b"again? ": b"bob\n"}, timeout=60)
    lines = [line.strip() for line in shown.splitlines()]
    for context in ("fork", "spawn", "forkserver"):
        assert f"RESULT {context} ok 'alice'" in lines, shown
        assert f"CALLER {context} 'bob'" in lines, shown


CTRL_C = """
    import time
    from pynisher import Pynisher

    def wait():
        print("waiting", flush=True)
        # Short sleeps, not one long one: a SIGINT that lands after the
        # interpreter's last check but before the sleep's system call starts
        # only raises once that call returns (CPython's own race, seen about
        # once in 35 runs when the Ctrl-C follows "waiting" at once).
        for _ in range(300):
            time.sleep(0.1)

    for context in ("fork", "spawn", "forkserver"):
        try:
            Pynisher(wait, context=context, wall_time=20)()
            print("RETURNED", context, flush=True)
        except KeyboardInterrupt:
            print("INTERRUPTED", context, flush=True)
        print("CALLER", context, repr(input("again? ")), flush=True)
"""


def test_ctrl_c_at_the_terminal_interrupts_the_caller_while_the_call_has_it() -> None:
    # Ctrl-C goes to the terminal's foreground group, which is the call's
    # while it runs; the caller still sees its KeyboardInterrupt.
    shown = drive(CTRL_C, {b"waiting": b"\x03", b"again? ": b"bob\n"}, timeout=60)
    for context in ("fork", "spawn", "forkserver"):
        # (The terminal echoes Ctrl-C as ^C, on the same line.)
        assert f"INTERRUPTED {context}\r\n" in shown, shown
        assert f"CALLER {context} 'bob'\r\n" in shown, shown


BACKGROUND = """
    import os, signal, subprocess
    from pynisher import Pynisher

    def ask():
        return input("name? ")

    # Another group takes the terminal's foreground: the caller is now in the
    # background, as a shell's background job is.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    holder = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: os.setpgid(0, 0))
    try:
        os.setpgid(holder.pid, holder.pid)
    except OSError:
        pass  # the child did it first
    os.tcsetpgrp(0, holder.pid)
    outcome = Pynisher(ask, context=CONTEXT, wall_time=1).run()
    says = "SIGTTIN" in outcome.detail
    print("RESULT", outcome.status.value, says, flush=True)
    holder.kill()
"""


def test_a_call_that_reads_the_terminal_from_the_background_says_why_it_stopped() -> None:
    for context in ("fork", "spawn", "forkserver"):
        shown = drive(BACKGROUND.replace("CONTEXT", repr(context)), {}, timeout=60)
        assert "RESULT wall_time True\r\n" in shown, (context, shown)
