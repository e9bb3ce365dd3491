"""Functions that test_outside_cap.py runs in every context: they allocate
until the kernel's OOM killer acts on the caller's cgroup. They live outside
the test module so that a spawn or forkserver child imports only this module."""

from __future__ import annotations

import subprocess
from pathlib import Path

CHUNK = 16 << 20


def allocate_until_killed() -> int:
    """Fills memory (every page written) until the OOM killer ends the process."""
    blocks = []
    while True:
        blocks.append(b"x" * CHUNK)
        if len(blocks) > 1024:  # 16 GiB: no cap here; do not take the machine down
            return len(blocks)


def escape_then_allocate(pid_file: str) -> int:
    """Starts a sleep in a session of its own (out of the call's process
    group), names it in ``pid_file``, then fills memory."""
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    Path(pid_file).write_text(str(sleeper.pid))
    return allocate_until_killed()
