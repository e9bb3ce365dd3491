//! Run a closure or a command in a child process under limits on wall time,
//! CPU time and memory, and learn exactly why it stopped and what it used.
//!
//! ```
//! use std::time::Duration;
//! use pynisher::{call, Command, Failure, Limits, Status};
//!
//! let limits = Limits::new().wall_time(Duration::from_millis(500));
//!
//! // A command: its whole process tree is limited and cleaned up.
//! let outcome = Command::new("sleep").arg("10").run(&limits)?;
//! assert_eq!(outcome.status, Status::WallTime);
//! println!("{}: {}", outcome.status, outcome.detail);
//!
//! // A closure in a forked child; its value comes back through serde.
//! let outcome = call(&limits, || (1..=10u64).product::<u64>())?;
//! assert_eq!(outcome.status, Status::Ok);
//! assert_eq!(outcome.result, Ok(3_628_800));
//!
//! // A limit, a panic or a crash is an `Err` in `result`, with the same
//! // `status` and `detail` fields as for a command.
//! let outcome = call(&limits, || std::thread::sleep(Duration::from_secs(10)))?;
//! assert_eq!(outcome.status, Status::WallTime);
//! assert!(matches!(outcome.result, Err(Failure::Limit { .. })));
//! # Ok::<(), pynisher::Error>(())
//! ```
//!
//! # Where to start
//!
//! - [`Limits`]: wall time, CPU time (of the whole tree), memory and how it is
//!   counted ([`MemoryMode`]), and the grace period between the soft stop and
//!   SIGKILL. [`parse_duration`] and [`parse_bytes`] read `"1.5s"`, `"2GB"`.
//! - [`Command`] runs a program, like [`std::process::Command`], and gives an
//!   [`Outcome`]: [`Status`], [`Exit`], [`Usage`] and a readable `detail`.
//!   See [`command`] for how it is started and what the limits mean there.
//! - [`call()`] runs a closure in a `fork` of the calling process and gives a
//!   [`CallOutcome`]: the value or a [`Failure`], plus the same fields as an
//!   [`Outcome`]. A fork is only safe in a single-threaded process, so `call`
//!   refuses in a multi-threaded one; see [the `call` module](mod@call).
//! - [`spawn::call()`] runs a function in a fresh process of the same program
//!   instead, safe with any number of threads: in a `#[test]`, under tokio or
//!   rayon. List the functions with [`spawnable!`]; see [`spawn`].
//! - Every failure of pynisher itself (a bad limit, a missing program, a
//!   refused system call) is an [`Error`]; its [`ErrorKind`] says which.
//!
//! The `pynisher` command line (crate `pynisher-cli`) and the Python package
//! are built on this crate.
//!
//! # What it guarantees
//!
//! - **Exactly one status per call.** A complete result frame wins; then the
//!   supervisor's own reason for killing the tree; then the kernel's evidence
//!   (SIGXCPU, or CPU time at or over the limit); otherwise the call crashed,
//!   and the exit code or signal name says how.
//! - **No process left behind.** Each forked call is two processes: a
//!   guardian, a subreaper in the call's own process group, and
//!   its child, which runs the function. Whatever the function starts stays
//!   below the guardian, even after a `setsid` or a double fork, and the
//!   guardian kills it all once the function's process ends, however it
//!   ends. The guardian shares no memory with the function's process (it
//!   execs a small program of its own right after the split), so nothing
//!   the function does to its memory, an OOM kill included, takes the
//!   guardian down. Every descendant the supervisor sees gets a pidfd, which is immune
//!   to pid reuse, and the tree is frozen with SIGSTOP before it is killed, so
//!   nothing can fork behind the kill.
//! - **No deadlock on large results.** Payloads up to 60 KiB go through a pipe
//!   that the supervisor drains as it waits; larger ones through a memfd. A
//!   large buffer can instead be lent: the supervisor copies it straight out
//!   of the waiting child ([`channel::Sender::send_lent`]), and answers the
//!   child in every case, so the child never waits for ever.
//! - **The caller dies, the tree dies.** The guardian waits on a pidfd of the
//!   caller and kills the tree when it exits; its child has a parent-death
//!   signal of SIGKILL.
//!
//! # Why the design holds
//!
//! The supervisor never reaps the child before the tree is dead, so neither
//! its pid nor its process group id can be reused during the kill. It waits on
//! the pidfd, the channel and the deadline with one `poll`, so the wall-time
//! limit is precise to the millisecond. An embedder whose own interrupt
//! check can block (Python's needs the GIL) runs the supervisor on a thread
//! of its own, so no lock of the caller can delay a kill.

#![deny(unsafe_op_in_unsafe_fn)]

mod background;
pub mod call;
pub mod command;
mod error;
mod limits;
mod outcome;
pub mod spawn;
mod start;

// Internals shared with the Python binding (`pynisher-python`), the CLI and
// this crate's tests. They are hidden from the documentation and carry no
// stability promise; use the items re-exported below.
#[doc(hidden)]
pub mod cgroup;
#[doc(hidden)]
pub mod channel;
#[doc(hidden)]
pub mod child;
#[doc(hidden)]
pub mod exec;
#[doc(hidden)]
pub mod fork;
#[doc(hidden)]
pub mod forkserver;
#[doc(hidden)]
pub mod guardian;
#[doc(hidden)]
pub mod supervisor;
#[doc(hidden)]
pub mod sys;
#[doc(hidden)]
pub mod terminal;
#[doc(hidden)]
pub mod tree;

pub use call::{call, call_unchecked, call_with, CallOutcome, Failure};
pub use command::{Command, RunningCommand, Signaller};
pub use error::{Error, ErrorKind, Result};
pub use fork::CallOptions;
pub use limits::{
    bytes_from_number, duration_from_number, grace_period_from_number, parse_bytes, parse_duration,
    parse_grace_period, Limits, MemoryMode,
};
pub use outcome::{Exit, Outcome, Status, Usage};
pub use supervisor::Stop;
pub use sys::become_subreaper;
pub use tree::kill_own_descendants;

#[doc(hidden)]
pub use background::{run_beside, Beside, Interrupt, Wait};
#[doc(hidden)]
pub use fork::{fork_with, ForkHooks, NoHooks};
#[doc(hidden)]
pub use supervisor::{Finished, Paused, Supervised};
