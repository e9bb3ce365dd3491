"""pynisher 1.0's module path for `Pynisher`, `limit`, `restricted` and
`EMPTY` (``from pynisher.pynisher import Pynisher``); the same objects as
``pynisher.*``."""

from ._api import EMPTY, Pynisher, limit, restricted

__all__ = ["EMPTY", "Pynisher", "limit", "restricted"]
