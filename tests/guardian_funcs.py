"""Functions that test_guardian.py runs in limited children, in every
context. They live outside the test module so that a spawn or forkserver
child imports only this module (no pytest)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
SYS_KCMP = 312
KCMP_VM = 1
SYS_GETCPU = 309


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[1])


def shares_memory(a: int, b: int) -> bool:
    """Whether processes ``a`` and ``b`` share one address space (kcmp(2))."""
    result = _libc.syscall(SYS_KCMP, a, b, KCMP_VM, 0, 0)
    if result < 0:
        raise OSError(ctypes.get_errno(), "kcmp")
    return bool(result == 0)


def processes_sharing_my_memory() -> list[int]:
    """Every other process that shares this one's address space."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                if shares_memory(me, int(entry)):
                    found.append(int(entry))
            except OSError:
                pass
    return found


def memory_sharers_and_guardian() -> tuple[list[int], int, str]:
    """Who shares this process's memory, its guardian's pid, and the
    guardian's command name."""
    guardian = parent_of(os.getpid())
    sharers = processes_sharing_my_memory()
    # This process goes on as soon as the guardian's exec has let go of the
    # shared memory, a moment before the kernel gives the guardian its new
    # name: wait for the name, for a while.
    comm_file = Path(f"/proc/{guardian}/comm")
    deadline = time.monotonic() + 2.0
    comm = comm_file.read_text().strip()
    while comm != "pynisher-guard" and time.monotonic() < deadline:
        time.sleep(0.001)
        comm = comm_file.read_text().strip()
    return sharers, guardian, comm


def glibc_and_kernel_cpus() -> list[tuple[int, int, int]]:
    """For each CPU this process may use: pinned to it, what glibc's
    ``sched_getcpu`` (read from its rseq area) and the ``getcpu`` system
    call say."""
    allowed = sorted(os.sched_getaffinity(0))
    seen = []
    for cpu in allowed * 3:
        os.sched_setaffinity(0, {cpu})
        time.sleep(0.002)
        glibc = _libc.sched_getcpu()
        kernel = ctypes.c_uint(0)
        if _libc.syscall(SYS_GETCPU, ctypes.byref(kernel), None, None) != 0:
            raise OSError(ctypes.get_errno(), "getcpu")
        seen.append((cpu, glibc, kernel.value))
    os.sched_setaffinity(0, allowed)
    return seen


def start_sleeper_then_die_like_the_oom_killer(pids: Path) -> None:
    """Starts a ``sleep`` in a session of its own, then does what the OOM
    killer does to a victim: SIGKILL to every process that shares its
    memory, itself included."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    with open(pids, "w") as handle:
        handle.write(f"{proc.pid}\n")
    for pid in processes_sharing_my_memory():
        os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def add(a: int, b: int) -> int:
    return a + b


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


def repeat_the_call_process_steps() -> list[str]:
    """Inside a call: tries each step of a call's process again, and returns
    what each refusal said."""
    from pynisher import PynisherException, _core

    said = []
    for step in (
        lambda: _core.child_split(os.getppid(), True, -1),
        lambda: _core.child_apply_limits(_core.Limits()),
        lambda: _core.ChildChannel(-1, -1).ready(0.0, 0.0),
    ):
        try:
            step()
            said.append("taken")
        except PynisherException as refused:
            said.append(str(refused))
    return said
