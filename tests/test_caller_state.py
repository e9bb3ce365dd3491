"""The caller's own state: closed standard descriptors, a low descriptor
limit and a deleted working directory, in every context. Each test runs a
separate caller process whose state it changes first, and which reports one
JSON line per context on a descriptor of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

PROBE = """
    import json, os, resource, sys, tempfile
    from pynisher import Pynisher

    def probe():
        # Output must never reach pynisher's descriptors.
        try:
            print("printed by the function", flush=True)
        except OSError:
            pass
        try:
            os.write(1, b"written to fd 1 by the function\\n")
        except OSError:
            pass
        fds = {{}}
        for fd in (0, 1):
            try:
                fds[fd] = os.readlink(f"/proc/self/fd/{{fd}}")
            except OSError:
                fds[fd] = "closed"
        return {{"fds": fds, "cwd": os.readlink("/proc/self/cwd")}}

    report = os.dup(2)
    {setup}
    for context in ("fork", "spawn", "forkserver"):
        try:
            outcome = Pynisher(probe, context=context).run()
            line = {{"status": outcome.status.value, "value": outcome.value,
                     "detail": outcome.detail}}
        except BaseException as exc:
            line = {{"raised": f"{{type(exc).__name__}}: {{exc}}"}}
        os.write(report, (json.dumps({{context: line}}) + "\\n").encode())
"""


def run_probe(setup: str) -> dict[str, Any]:
    script = textwrap.dedent(PROBE).format(setup=setup)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = {}
    for line in done.stderr.splitlines():
        if line.startswith("{"):
            results.update(json.loads(line))
    assert set(results) == {"fork", "spawn", "forkserver"}, done.stderr
    return results


def test_closed_standard_descriptors_stay_closed_in_the_child() -> None:
    results = run_probe("os.close(0)\nos.close(1)")
    for context, result in results.items():
        assert result.get("status") == "ok", (context, result)
        # The result channel did not land on fd 0 or 1, so the function's
        # output could not corrupt it.
        assert result["value"]["fds"] == {"0": "closed", "1": "closed"}, (context, result)


def test_a_low_descriptor_limit_is_enough() -> None:
    results = run_probe("resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))")
    for context, result in results.items():
        assert result.get("status") == "ok", (context, result)


def test_a_deleted_working_directory_is_kept_as_fork_keeps_it() -> None:
    setup = "gone = tempfile.mkdtemp()\nos.chdir(gone)\nos.rmdir(gone)"
    results = run_probe(setup)
    for context, result in results.items():
        assert result.get("status") == "ok", (context, result)
    cwds = {context: result["value"]["cwd"] for context, result in results.items()}
    assert cwds["fork"].endswith(" (deleted)"), cwds
    assert cwds["spawn"] == cwds["forkserver"] == cwds["fork"], cwds
