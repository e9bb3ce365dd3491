"""Type stubs for `pynisher._core`, the PyO3 binding of the Rust core
(crates/pynisher-python/src/lib.rs)."""

from typing import Any, Callable, Literal, NoReturn, Optional, Protocol, Union, final

__version__: str
#: Every status name the core can report, in the core's order.
STATUSES: list[str]
#: Every memory mode the core knows.
MEMORY_MODES: list[str]

class _Cancel(Protocol):
    """Polled by the supervisor every 50 ms; once true, the call is killed."""

    def is_set(self) -> bool: ...

# A number (seconds or bytes), a unit string such as "1.5h" or "500MB", or a
# (number, unit) tuple. Booleans are rejected.
_Quantity = Union[int, float, str, tuple[Union[int, float], str]]

@final
class Limits:
    """Validated limits, built once per `Pynisher`. Bad values raise
    ValueError naming the argument."""

    def __new__(
        cls,
        *,
        wall_time: Optional[_Quantity] = None,
        cpu_time: Optional[_Quantity] = None,
        memory: Optional[_Quantity] = None,
        memory_mode: str = "address_space",
        grace_period: Optional[_Quantity] = None,
    ) -> Limits: ...
    @property
    def wall_time(self) -> Optional[float]:
        """Seconds, or None."""
    @property
    def cpu_time(self) -> Optional[float]:
        """Seconds, or None."""
    @property
    def memory(self) -> Optional[int]:
        """Bytes, or None."""
    @property
    def memory_mode(self) -> str: ...
    @property
    def grace_period(self) -> float:
        """Seconds; 1 unless given, 0 means SIGKILL at once."""
    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, Any]]: ...

@final
class RawOutcome:
    """What one forked call did, as plain data."""

    @property
    def status(self) -> str: ...
    @property
    def detail(self) -> str: ...
    @property
    def exitcode(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[int]: ...
    @property
    def signal_name(self) -> Optional[str]: ...
    @property
    def wall_time(self) -> float: ...
    @property
    def cpu_user(self) -> float: ...
    @property
    def cpu_system(self) -> float: ...
    @property
    def peak_memory(self) -> int: ...
    @property
    def frame(self) -> Optional[Literal["value", "error", "memory"]]:
        """The tag of the frame the child sent, or None if it sent none."""
    @property
    def payload(self) -> Optional[Payload]:
        """The frame's bytes, or None if the child sent no frame."""
    @property
    def terminal(self) -> bool:
        """Whether the call had the caller's terminal while it ran (so Ctrl-C
        went to the call, not to the caller)."""

@final
class Payload:
    """The bytes of a result frame. ``read`` copies a range into a new
    ``bytes`` (or ``bytearray``); a payload in a memfd (``mappable``) also
    hands out page-aligned ranges for the caller to map on its own
    (``claim``), freed with `release_range` once unmapped."""

    def __len__(self) -> int: ...
    @property
    def mappable(self) -> bool: ...
    def read(
        self, offset: int, length: int, *, writable: bool = False
    ) -> Union[bytes, bytearray]: ...
    def claim(self, offset: int, length: int) -> int:
        """A new descriptor of the memfd, owned by the caller, to map
        ``length`` bytes from ``offset`` (a page multiple; no two ranges on
        one page); hand it to `release_range` when the mapping is gone."""

def release_range(memfd: int, offset: int, length: int) -> None:
    """Frees the memfd pages of a claimed range and closes ``memfd``."""

def run_fork(
    body: Callable[[], tuple[str, list[Any], bool]],
    limits: Limits,
    *,
    name: Optional[str] = None,
    terminate_child_processes: bool = True,
    forceful_keyboard_interrupt: bool = True,
    cancel: Optional[_Cancel] = None,
) -> RawOutcome:
    """Forks, runs ``body`` in the child under ``limits`` and supervises it
    on a thread of its own, which needs the GIL only once the result has
    arrived, to make the ``bytes`` object a lent result is copied into; this
    thread waits with the GIL released and takes it every 50 ms to check
    signals and ``cancel``. ``body`` returns ``(tag, parts, lend)``: a frame
    tag ("value", "error" or "memory"), buffers sent as one frame, and
    whether the last buffer is lent (see `ChildChannel.send`)."""

# The spawn and forkserver contexts (keep in step with lib.rs).

#: The descriptor on which a fresh interpreter finds its call's file (the
#: request; then, if the caller's streams are redirected, the output).
REQUEST_FD: int
#: The descriptor of the page on which a spawned call's guardian reports.
REPORT_FD: int

def run_spawn(
    call_file: int,
    limits: Limits,
    *,
    argv: list[str],
    name: Optional[str] = None,
    terminate_child_processes: bool = True,
    forceful_keyboard_interrupt: bool = True,
    cancel: Optional[_Cancel] = None,
) -> RawOutcome:
    """Starts ``argv`` (a fresh interpreter), hands it the call's file
    (holding the request) on `REQUEST_FD` and the result channel, and
    supervises it as `run_fork` does."""

class ChildChannel:
    """The child's end of the result channel, in a fresh interpreter."""

    def __init__(self, result_fd: int = 3, memfd: int = 4) -> None: ...
    def ready(self, user: float, system: float) -> None:
        """Start-up is over; its CPU seconds are not charged to the call.
        Refused before `child_apply_limits`, and a second time."""
    def send(self, tag: str, parts: list[Any], lend: bool = False) -> None:
        """Sends the one result frame; with ``lend``, a large last part is
        lent (read straight out of this process) rather than copied."""
    @property
    def sent(self) -> bool: ...

# The steps of a call's process, in their only order (pynisher::child::
# CallProcess): child_split, [load the function], child_apply_limits,
# ChildChannel.ready, the body, child_exit. A step out of order raises
# PynisherException.
def child_split(parent: int, terminate_child_processes: bool, page_fd: int) -> None:
    """Splits off the call's guardian, which watches ``parent`` and reports
    on the call's page ``page_fd``; returns in the process that runs the call.
    Refused outside a call's own process, and a second time."""

def child_apply_limits(limits: Limits, name: Optional[str] = None) -> None:
    """Applies the rlimits and the process name; refused before
    `child_split`, and a second time."""

def child_exit(sent: bool) -> NoReturn:
    """Ends the call's process; refused before `child_split`."""

def cli_main(argv: list[str]) -> int: ...

@final
class ForkServer:
    """A running forkserver; dropping it kills the server."""

    @staticmethod
    def start(argv: list[str], imports_fd: Optional[int] = None) -> ForkServer:
        """Starts a forkserver running ``argv``; ``imports_fd``, if given, is
        passed to it as descriptor `FORKSERVER_IMPORTS_FD`."""
    @property
    def pid(self) -> int: ...
    def is_alive(self) -> bool: ...

#: The descriptor on which the forkserver finds its control socket.
FORKSERVER_CONTROL_FD: int
#: The descriptor on which the forkserver finds the file where it notes the
#: modules it imports before it serves.
FORKSERVER_IMPORTS_FD: int

def run_forkserver(
    server: ForkServer,
    call_file: int,
    limits: Limits,
    *,
    terminate_child_processes: bool = True,
    forceful_keyboard_interrupt: bool = True,
    cancel: Optional[_Cancel] = None,
) -> RawOutcome:
    """Runs one call in a child of ``server`` and supervises it as `run_fork`
    does (the wait for the server to start the call included); raises
    `ForkServerError` if the server is gone before the call started."""

def forkserver_serve(
    control_fd: int, caller: int, child_main: Callable[[int, int, int, int], object]
) -> None:
    """The forkserver's loop: forks a child per call, which runs
    ``child_main(request_fd, result_fd, memfd, page_fd)``; returns when
    ``caller`` exits or closes the control socket."""

def cgroup_v2_unavailable() -> Optional[str]:
    """Why the cgroup v2 backend cannot be used here, or None if it can."""
