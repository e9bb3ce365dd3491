//! What happened to one call, measured: [`Status`], [`Exit`], [`Usage`] and
//! [`Outcome`].

use std::fmt;
use std::time::Duration;

use crate::sys;

/// Why a call ended. Each call gets exactly one status; see the crate docs for
/// the order in which causes win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The call finished and returned a value (or, for a command, exited 0).
    Ok,
    /// The function raised or panicked, or the command exited non-zero.
    Error,
    /// The wall-time limit was hit.
    WallTime,
    /// The CPU-time limit was hit.
    CpuTime,
    /// The memory limit was hit.
    Memory,
    /// The child died without a result and without evidence of a limit.
    Crashed,
}

impl Status {
    /// Every status, in the order they are documented.
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Error,
        Status::WallTime,
        Status::CpuTime,
        Status::Memory,
        Status::Crashed,
    ];

    /// The name used by the Python `Status` enum, the CLI and the JSON report.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::WallTime => "wall_time",
            Status::CpuTime => "cpu_time",
            Status::Memory => "memory",
            Status::Crashed => "crashed",
        }
    }

    /// True for the three statuses that mean a limit stopped the call.
    pub const fn is_limit(self) -> bool {
        matches!(self, Status::WallTime | Status::CpuTime | Status::Memory)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the child process ended, from `wait4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Exit {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    pub(crate) fn from_wait_status(status: libc::c_int) -> Exit {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }

    /// The exit code, if the process exited.
    pub fn code(self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(code),
            Exit::Signal(_) => None,
        }
    }

    /// The signal number, if a signal killed the process.
    pub fn signal(self) -> Option<i32> {
        match self {
            Exit::Signal(signal) => Some(signal),
            Exit::Code(_) => None,
        }
    }

    /// The name of the signal that killed the process, such as `"SIGKILL"`.
    pub fn signal_name(self) -> Option<String> {
        self.signal().map(sys::signal_name)
    }

    /// The shell's convention: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            Exit::Code(code) => code,
            Exit::Signal(signal) => 128 + signal,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => write!(f, "killed by {}", sys::signal_name(signal)),
        }
    }
}

/// Resources the call used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Wall-clock time from fork to the end of the call.
    pub wall_time: Duration,
    /// User CPU time of the whole tree.
    pub cpu_user: Duration,
    /// System CPU time of the whole tree.
    pub cpu_system: Duration,
    /// Peak memory in bytes. In address-space mode this is the largest
    /// resident set of any one process of the tree (`ru_maxrss`), which under
    /// fork includes pages still shared with the caller. In resident mode it is
    /// the sampled peak of the whole tree's private memory, or cgroup
    /// `memory.peak`.
    pub peak_memory: u64,
}

impl Usage {
    /// User plus system CPU time.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_user + self.cpu_system
    }
}

/// What one call did: its status, how it exited and what it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Why the call ended.
    pub status: Status,
    /// How the child process ended. `None` only if it could not be reaped.
    pub exit: Option<Exit>,
    /// Resources used.
    pub usage: Usage,
    /// A human-readable account of the status and its evidence, for example
    /// "CPU time 1.02 s reached the limit of 1 s; stopped with SIGXCPU".
    pub detail: String,
}
