//! Run a closure or a command in a child process under limits on wall time,
//! CPU time and memory, and learn exactly why it stopped and what it used.
//!
//! # What it guarantees
//!
//! - **Exactly one status per call.** A complete result frame wins; then the
//!   supervisor's own reason for killing the tree; then the kernel's evidence
//!   (SIGXCPU, or CPU time at or over the limit); otherwise the call crashed,
//!   and the exit code or signal name says how.
//! - **No process left behind.** Each forked call is two processes: a
//!   [guardian](guardian), a subreaper in the call's own process group, and
//!   its child, which runs the function. Whatever the function starts stays
//!   below the guardian, even after a `setsid` or a double fork, and the
//!   guardian kills it all once the function's process ends, however it
//!   ends. Every descendant the supervisor sees gets a pidfd, which is immune
//!   to pid reuse, and the tree is frozen with SIGSTOP before it is killed, so
//!   nothing can fork behind the kill.
//! - **No deadlock on large results.** Payloads up to 60 KiB go through a pipe
//!   that the supervisor drains as it waits; larger ones through a memfd.
//! - **The caller dies, the tree dies.** The guardian waits on a pidfd of the
//!   caller and kills the tree when it exits; its child has a parent-death
//!   signal of SIGKILL.
//!
//! # Why the design holds
//!
//! The supervisor never reaps the child before the tree is dead, so neither
//! its pid nor its process group id can be reused during the kill. It waits on
//! the pidfd, the channel and the deadline with one `poll`, so the wall-time
//! limit is precise to the millisecond and no thread is needed.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod call;
pub mod cgroup;
pub mod channel;
pub mod child;
pub mod command;
mod error;
pub mod exec;
pub mod fork;
pub mod forkserver;
pub mod guardian;
mod limits;
mod outcome;
pub mod supervisor;
pub mod sys;
pub mod tree;

pub use call::{call, call_unchecked, call_with, CallOutcome, Failure};
pub use command::{Command, RunningCommand, Signaller};
pub use error::{Error, ErrorKind, Result};
pub use fork::{fork_with, ForkHooks, ForkOptions, NoHooks};
pub use limits::{
    bytes_from_number, duration_from_number, grace_period_from_number, parse_bytes, parse_duration,
    parse_grace_period, Limits, MemoryMode,
};
pub use outcome::{Exit, Outcome, Status, Usage};
pub use supervisor::{Finished, Stop, Supervised};
pub use sys::become_subreaper;
pub use tree::kill_own_descendants;
