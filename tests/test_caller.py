"""What happens to the caller: Ctrl-C, the caller's death, and the child's
output on the real stdout; in every context. Each test runs a separate caller
process, whose limited function is defined in its ``__main__``.

The limited function prints its pids as one line, so the test can check them
after the caller is gone. ``time.monotonic`` is system-wide on Linux, so the
caller can report when it saw the KeyboardInterrupt on the test's own clock.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import alive, kill_quietly, read_line, start_caller, wait_dead

# A caller started from a background job inherits SIGINT ignored, and Python
# then keeps it ignored: each caller script installs the default handler.
LONG_CALL = """
    import os, signal, subprocess, sys, time
    from pynisher import Pynisher
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def long_call():
        grandchild = subprocess.Popen(["sleep", "60"], start_new_session=True)
        print(os.getpid(), grandchild.pid, flush=True)
        time.sleep(60)

    try:
        Pynisher(long_call, wall_time=60, {options})()
    except KeyboardInterrupt:
        print("KeyboardInterrupt", time.monotonic(), flush=True)
        raise
    print("returned", flush=True)
"""


def start_long_call(**options: object) -> tuple[subprocess.Popen[str], int, int]:
    text = ", ".join(f"{key}={value!r}" for key, value in options.items())
    caller = start_caller(LONG_CALL.format(options=text))
    child, grandchild = (int(word) for word in read_line(caller).split())
    assert alive(child) and alive(grandchild)
    return caller, child, grandchild


def cleanup(caller: subprocess.Popen[str], *pids: int) -> None:
    """Kills whatever a failed test left behind; the pids first, since they
    may hold the caller's pipes open."""
    for pid in pids:
        kill_quietly(pid)
    caller.kill()
    caller.communicate()


def run_caller(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_ctrl_c_raises_keyboard_interrupt_and_kills_the_tree(context: str) -> None:
    caller, child, grandchild = start_long_call(context=context)
    try:
        sent = time.monotonic()
        caller.send_signal(signal.SIGINT)
        seen = read_line(caller).split()
        out, err = caller.communicate(timeout=10)
        assert seen[0] == "KeyboardInterrupt", (seen, err)
        # API: about 0.1 s; the bound is generous for a loaded machine.
        assert float(seen[1]) - sent < 0.5
        # An unhandled KeyboardInterrupt ends Python with SIGINT.
        assert caller.returncode == -signal.SIGINT, err
        assert "KeyboardInterrupt" in err
        assert "returned" not in out
        # The caller killed the tree before it raised.
        assert not alive(child)
        assert not alive(grandchild)
    finally:
        cleanup(caller, child, grandchild)


def test_ctrl_c_without_forceful_interrupt_first_sends_sigint_to_the_tree(
    context: str, tmp_path: Path
) -> None:
    marker = tmp_path / "got-sigint"
    script = f"""
        import os, signal, sys, time
        from pynisher import Pynisher
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def polite():
            def on_sigint(signum, frame):
                with open({str(marker)!r}, "w") as handle:
                    handle.write("SIGINT")
                os._exit(0)
            signal.signal(signal.SIGINT, on_sigint)
            print(os.getpid(), flush=True)
            time.sleep(60)

        try:
            Pynisher(
                polite, forceful_keyboard_interrupt=False, grace_period=5, context={context!r}
            )()
        except KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
    """
    caller = start_caller(script)
    child = int(read_line(caller))
    try:
        caller.send_signal(signal.SIGINT)
        assert read_line(caller) == "KeyboardInterrupt"
        caller.communicate(timeout=10)
        assert caller.returncode == 0
        assert marker.read_text() == "SIGINT"
        assert not alive(child)
    finally:
        cleanup(caller, child)


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGTERM])
def test_the_child_dies_with_its_caller(death: int, context: str) -> None:
    caller, child, grandchild = start_long_call(context=context)
    try:
        caller.send_signal(death)
        # Not communicate(): the orphans may still hold the caller's stdout.
        assert caller.wait(timeout=10) == -death
        # PR_SET_PDEATHSIG: the kernel kills the child when its caller dies.
        assert wait_dead(child, 2.0), "the limited child outlived its caller"
    finally:
        cleanup(caller, child, grandchild)


@pytest.mark.parametrize("death", [signal.SIGKILL, signal.SIGTERM])
def test_a_setsid_grandchild_dies_with_its_caller(death: int, context: str) -> None:
    caller, child, grandchild = start_long_call(context=context)
    try:
        caller.send_signal(death)
        assert caller.wait(timeout=10) == -death
        assert wait_dead(child, 2.0)
        assert wait_dead(grandchild, 2.0), "the grandchild outlived the caller"
    finally:
        cleanup(caller, child, grandchild)


def test_output_on_the_real_stdout_is_flushed_exactly_once(context: str) -> None:
    # stdout is a pipe, so Python buffers it in blocks: nothing is written until
    # a flush. The caller's unflushed text must not be written twice (once by
    # the child that inherited the buffer), and the child's unflushed text must
    # reach the pipe before the call returns.
    script = """
        import sys
        from pynisher import Pynisher

        def child():
            print("from-the-child", end="")
            sys.stderr.write("child-stderr")
            return 7

        print("before-the-call", end="")
        assert Pynisher(child, context=CONTEXT)() == 7
        print("|after-the-call", end="")
        sys.stdout.flush()
        import os
        os._exit(0)  # no flush at exit: anything still buffered would be lost
    """
    done = run_caller(script.replace("CONTEXT", repr(context)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "before-the-callfrom-the-child|after-the-call"
    assert done.stderr.count("child-stderr") == 1


def test_what_a_module_prints_on_import_in_the_forkserver_comes_out_once(
    tmp_path: Path,
) -> None:
    # The forkserver imports the function's module once; what the import
    # printed stays in the server's buffer unless the server flushes it, and
    # each call's child, forked from the server, would flush it again.
    (tmp_path / "noisy_module.py").write_text(
        "print('noisy-import', end='')\n\ndef double(x):\n    return 2 * x\n"
    )
    script = f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from pynisher import Pynisher
        from noisy_module import double

        limited = Pynisher(double, context="forkserver")
        assert [limited(i) for i in range(3)] == [0, 2, 4]
        sys.stdout.flush()
    """
    done = run_caller(script)
    assert done.returncode == 0, done.stderr
    # Once in the caller's import, once in the server's; never in a call.
    assert done.stdout == "noisy-import" * 2


def test_output_of_a_child_killed_at_the_wall_limit_that_was_flushed_arrives(
    context: str,
) -> None:
    script = """
        import sys, time
        from pynisher import Pynisher

        def child():
            print("flushed-before-the-limit", flush=True)
            time.sleep(60)

        outcome = Pynisher(child, wall_time=WALL, context=CONTEXT).run()
        print(outcome.status.value)
    """
    wall = 0.3
    done = run_caller(script.replace("WALL", repr(wall)).replace("CONTEXT", repr(context)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "flushed-before-the-limit\nwall_time\n"
