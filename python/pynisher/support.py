"""pynisher 1.0's module path for the support queries; the same functions as
``pynisher.*``."""

from ._api import (
    contexts,
    supports,
    supports_cputime,
    supports_limit_decorator,
    supports_memory,
    supports_walltime,
)

__all__ = [
    "contexts",
    "supports",
    "supports_cputime",
    "supports_limit_decorator",
    "supports_memory",
    "supports_walltime",
]
