"""A call's outcome as data: `Status` and `Outcome`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class Status(str, enum.Enum):
    """Why a call ended. The values are the core's status names."""

    OK = "ok"
    ERROR = "error"
    WALL_TIME = "wall_time"
    CPU_TIME = "cpu_time"
    MEMORY = "memory"
    CRASHED = "crashed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one limited call did, measured.

    ``error`` is exactly the exception that calling the `Pynisher` would
    raise, and ``result()`` raises it; ``run()`` itself never raises for a
    failure of the call.
    """

    status: Status
    value: Optional[T]
    error: Optional[BaseException]
    traceback: Optional[str]
    wall_time: float
    """Seconds from the start of the child to its end."""
    cpu_time: float
    """User plus system CPU seconds of the whole process tree."""
    cpu_user: float
    cpu_system: float
    peak_memory: int
    """Peak memory in bytes (see the README for how each mode counts it)."""
    exitcode: Optional[int]
    signal: Optional[int]
    detail: str
    """A human-readable account of the status and its evidence."""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def result(self) -> T:
        """Return the value, or raise exactly what calling the `Pynisher` would."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]
