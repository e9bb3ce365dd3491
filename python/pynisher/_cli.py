"""The ``pynisher`` command that ``pip install pynisher`` puts on the PATH.

It runs the command line of the Rust crate ``pynisher-cli`` (the same
options, limits and exit codes as the binary ``cargo install`` builds),
inside this Python process. See docs/cli.md.
"""

from __future__ import annotations

import sys

from pynisher import _core


def main() -> None:
    """Entry point of the ``pynisher`` script. Never returns."""
    sys.exit(_core.cli_main(["pynisher", *sys.argv[1:]]))
