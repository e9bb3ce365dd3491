//! Run a Rust closure in a forked child under [`Limits`] and get its value
//! back.
//!
//! ```
//! use std::time::Duration;
//! use pynisher::{call, Failure, Limits, Status};
//!
//! let limits = Limits::new().wall_time(Duration::from_secs(5));
//! let outcome = call(&limits, || (1..=10u64).product::<u64>())?;
//! assert_eq!(outcome.status, Status::Ok);
//! assert_eq!(outcome.into_result(), Ok(3_628_800));
//!
//! // A limit, a panic or a crash is an `Err` inside the outcome.
//! let limits = Limits::new().wall_time(Duration::from_millis(200));
//! let outcome = call(&limits, || std::thread::sleep(Duration::from_secs(10)))?;
//! assert_eq!(outcome.status, Status::WallTime);
//! assert!(matches!(outcome.result, Err(Failure::Limit { status: Status::WallTime, .. })));
//! # Ok::<(), pynisher::Error>(())
//! ```
//!
//! The value travels back as [postcard](https://docs.rs/postcard), so `T`
//! must implement serde's `Serialize` and `DeserializeOwned`. Values of any
//! size work: large ones go through shared memory, not the pipe.
//!
//! # What the child does
//!
//! The child is a `fork` of the caller. Before the closure runs it sets up
//! the limits (as described in [`Limits`]), restores the
//! default action of SIGTERM and SIGXCPU and unblocks them, so that the
//! supervisor's soft stop works even if the caller handles those signals.
//! It then runs the closure inside `catch_unwind`, encodes its value, sends
//! it, kills whatever the closure started, and leaves with `_exit`: no
//! destructors, `atexit` handlers or buffered output of the caller run in the
//! child. Flush your own buffered writers inside the closure.
//!
//! # Memory
//!
//! In address-space mode (the default) the child may add `memory` bytes of
//! address space on top of its size at the fork. When an allocation fails,
//! Rust's default handler aborts the process. The child recognises an abort
//! that follows a failed allocation (SIGABRT while `errno` is still `ENOMEM`)
//! and reports [`Status::Memory`]. Printing a backtrace (`RUST_BACKTRACE`)
//! can overwrite `errno` first; then the child just dies by SIGABRT, and
//! because panics are caught, such a death under an address-space limit is
//! still reported as [`Status::Memory`], with the weaker evidence named in
//! the detail. Allocations whose failure the closure handles itself
//! (`try_reserve`) are the closure's business. In resident mode the
//! supervisor samples the tree's private memory and kills it past the limit.
//!
//! # Panics
//!
//! A panic in the closure comes back as [`Failure::Panic`] with its message;
//! the default panic hook also prints it to the child's stderr. With
//! `panic = "abort"` a panic ends the child with SIGABRT instead, which is
//! [`Failure::Crashed`] (or, under an address-space memory limit, taken for
//! a failed allocation as described above).
//!
//! # Fork safety and threads
//!
//! A forked child contains only the thread that forked. If another thread
//! held a lock at that moment (a `Mutex`, the stdout lock, a lock inside a C
//! library or a non-glibc allocator), the lock stays held forever in the
//! child and the closure deadlocks if it takes it. POSIX goes further and
//! allows only async-signal-safe functions in the child of a multi-threaded
//! process. So:
//!
//! - [`call`] and [`call_with`] are safe functions: they check that the
//!   calling process has exactly one thread (from `/proc/self/task`) and
//!   refuse with [`ErrorKind::MultiThreaded`]
//!   otherwise. With one thread nothing else can hold a lock or start a
//!   thread while the fork happens, so the child is a faithful copy and the
//!   closure may do anything.
//! - [`call_unchecked`] skips the check and is `unsafe`: the caller promises
//!   that the closure only uses what no other thread can hold at the moment
//!   of the fork. A deadlock is then ended by the wall-time limit, if one is
//!   set, and nothing worse than that happens with glibc's allocator.
//! - In a multi-threaded program (a test harness, tokio, rayon) use
//!   [`spawn::call`](crate::spawn::call()) instead: it runs a listed function
//!   in a fresh process of the program, with no `unsafe` and no fork.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::{Frame, Sender, Tag};
use crate::error::{ErrorKind, Result};
use crate::fork::{fork_with, CallOptions, NoHooks};
use crate::limits::{Limits, MemoryMode};
use crate::outcome::{Exit, Outcome, Status, Usage};

/// Exit code of a child that reported running out of memory.
const EXIT_OUT_OF_MEMORY: i32 = 72;

/// What a closure call produced: its value or why there is none, plus the
/// same `status`, `exit`, `usage` and `detail` fields as an [`Outcome`].
#[derive(Debug, Clone)]
pub struct CallOutcome<T> {
    /// The closure's value, or why there is none.
    pub result: std::result::Result<T, Failure>,
    /// Why the call ended: [`Status::Ok`] exactly when `result` is `Ok`.
    pub status: Status,
    /// How the child process ended. `None` only if it could not be reaped.
    pub exit: Option<Exit>,
    /// Resources used.
    pub usage: Usage,
    /// A readable account of the status and its evidence.
    pub detail: String,
}

impl<T> CallOutcome<T> {
    fn new(result: std::result::Result<T, Failure>, outcome: Outcome) -> Self {
        CallOutcome {
            result,
            status: outcome.status,
            exit: outcome.exit,
            usage: outcome.usage,
            detail: outcome.detail,
        }
    }

    /// The value, if the closure returned one.
    pub fn value(&self) -> Option<&T> {
        self.result.as_ref().ok()
    }

    /// The value, or why there is none.
    ///
    /// # Errors
    /// The [`Failure`] that stopped the call.
    pub fn into_result(self) -> std::result::Result<T, Failure> {
        self.result
    }

    /// Everything but the value, as the [`Outcome`] a command gives.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            status: self.status,
            exit: self.exit,
            usage: self.usage,
            detail: self.detail.clone(),
        }
    }
}

/// Why a closure call gave no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A limit stopped the call. `status` is [`Status::WallTime`],
    /// [`Status::CpuTime`] or [`Status::Memory`]; `detail` gives the evidence.
    Limit { status: Status, detail: String },
    /// The closure panicked with this message.
    Panic { message: String },
    /// The value could not be encoded in the child or decoded in the caller.
    Encoding { message: String },
    /// The child died without a value and without evidence of a limit.
    Crashed { exit: Option<Exit>, detail: String },
}

impl Failure {
    /// The limit that stopped the call, if one did.
    pub fn limit(&self) -> Option<Status> {
        match self {
            Failure::Limit { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Limit { status, detail } => {
                let name = match status {
                    Status::WallTime => "wall-time",
                    Status::CpuTime => "CPU-time",
                    Status::Memory => "memory",
                    _ => status.as_str(),
                };
                write!(f, "the {name} limit stopped the call: {detail}")
            }
            Failure::Panic { message } => write!(f, "the closure panicked: {message}"),
            Failure::Encoding { message } => write!(f, "the value could not be sent: {message}"),
            Failure::Crashed { detail, .. } => write!(f, "the child crashed: {detail}"),
        }
    }
}

impl std::error::Error for Failure {}

/// The payload of an error frame.
#[derive(Serialize, Deserialize)]
enum ChildError {
    Panic(String),
    Encoding(String),
}

/// Runs `f` in a forked child under `limits` and returns its value or why
/// there is none. Every process the closure starts is killed before this
/// returns.
///
/// # Errors
/// The limits are invalid; the process has more than one thread (see the
/// [module docs](self)); or a system call failed. Everything the closure
/// does, limits and panics included, is a [`CallOutcome`].
///
/// ```
/// use std::time::Duration;
/// use pynisher::{call, Limits, Status};
///
/// // Burns CPU until the CPU-time limit stops it.
/// let limits = Limits::new().cpu_time(Duration::from_millis(300));
/// let outcome = call(&limits, || {
///     let mut x = 0u64;
///     for i in 0u64.. {
///         x = std::hint::black_box(x ^ i);
///     }
///     x
/// })?;
/// assert_eq!(outcome.status, Status::CpuTime);
/// assert!(outcome.usage.cpu_time() >= Duration::from_millis(300));
///
/// // Tries to allocate 4 GiB with 64 MiB of headroom.
/// let limits = Limits::new().memory(64 << 20);
/// let outcome = call(&limits, || vec![1u8; 4 << 30].len())?;
/// assert_eq!(outcome.status, Status::Memory);
/// # Ok::<(), pynisher::Error>(())
/// ```
pub fn call<T, F>(limits: &Limits, f: F) -> Result<CallOutcome<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let options = CallOptions {
        name: None,
        terminate_descendants: true,
    };
    call_with(limits, &options, f)
}

/// [`call`] with a process name and a choice about the closure's
/// descendants.
///
/// # Errors
/// As for [`call`].
///
/// ```
/// use pynisher::{call_with, CallOptions, Limits};
///
/// let options = CallOptions { name: Some("worker".into()), terminate_descendants: true };
/// let outcome = call_with(&Limits::new(), &options, || {
///     std::fs::read_to_string("/proc/self/comm").unwrap()
/// })?;
/// assert_eq!(outcome.into_result().unwrap().trim(), "worker");
/// # Ok::<(), pynisher::Error>(())
/// ```
pub fn call_with<T, F>(limits: &Limits, options: &CallOptions, f: F) -> Result<CallOutcome<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let threads = thread_count();
    if threads != Some(1) {
        return Err(ErrorKind::MultiThreaded { threads }.into());
    }
    // SAFETY: the process has exactly one thread (this one), so no other
    // thread can hold a lock or be halfway through anything at the fork.
    unsafe { call_unchecked(limits, options, f) }
}

/// [`call_with`] without the single-thread check.
///
/// # Safety
/// The child is a copy of the process with only the calling thread. The
/// caller must make sure that `f`, and the encoding of its value, only take
/// locks and use state that no other thread can hold or be changing at the
/// moment of the fork, as with `fork(2)` itself. Taking a lock that another
/// thread held deadlocks the child until the wall-time limit, if any, ends
/// it.
///
/// # Errors
/// As for [`call`], except that the thread count is not checked.
pub unsafe fn call_unchecked<T, F>(
    limits: &Limits,
    options: &CallOptions,
    f: F,
) -> Result<CallOutcome<T>>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let report_oom = limits.memory.is_some() && limits.memory_mode == MemoryMode::AddressSpace;
    // SAFETY: the caller upholds the contract of fork_with, which is the one
    // documented above.
    let running = unsafe {
        fork_with(limits, options, &NoHooks, |sender: &mut Sender| {
            run_in_child(sender, report_oom, f)
        })
    }?;
    let finished = running.wait()?;
    Ok(decode(limits, finished.outcome, finished.frame))
}

/// The child's side: runs `f`, encodes and sends its value. Never unwinds:
/// an unwind out of here would run the caller's code in the child.
pub(crate) fn run_in_child<T, F>(sender: &mut Sender, report_oom: bool, f: F)
where
    T: Serialize,
    F: FnOnce() -> T,
{
    restore_stop_signals();
    if report_oom {
        install_oom_reporter(sender);
    }
    let encoded = panic::catch_unwind(AssertUnwindSafe(|| {
        let value = f();
        let encoded = postcard::to_allocvec(&value);
        // The value is not needed any more, and a destructor that panics or
        // blocks must not keep the result from being sent.
        std::mem::forget(value);
        encoded
    }));
    let (tag, bytes) = match encoded {
        Ok(Ok(bytes)) => (Tag::Value, bytes),
        Ok(Err(err)) => (
            Tag::Error,
            error_payload(ChildError::Encoding(err.to_string())),
        ),
        Err(payload) => {
            let message = panic_message(&payload);
            // Dropping a panic payload may itself panic; leak it.
            std::mem::forget(payload);
            (Tag::Error, error_payload(ChildError::Panic(message)))
        }
    };
    let _ = sender.send(tag, &[&bytes]);
}

/// Sends an encoding error as the call's result.
pub(crate) fn send_encoding_error(sender: &mut Sender, message: String) {
    let _ = sender.send(Tag::Error, &[&error_payload(ChildError::Encoding(message))]);
}

fn error_payload(error: ChildError) -> Vec<u8> {
    postcard::to_allocvec(&error).unwrap_or_default()
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

/// Gives SIGTERM and SIGXCPU their default action and unblocks them, so the
/// supervisor's soft stop ends the child even if the caller handled,
/// ignored or blocked them.
fn restore_stop_signals() {
    // SAFETY: sigaction and sigprocmask with valid, initialised arguments.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGXCPU] {
            libc::sigaction(signal, &default, std::ptr::null_mut());
            libc::sigaddset(&mut set, signal);
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The channel the SIGABRT handler reports on, set once in the child.
static OOM_PIPE: AtomicI32 = AtomicI32::new(-1);
static OOM_MEMFD: AtomicI32 = AtomicI32::new(-1);

/// Installs a SIGABRT handler that reports running out of memory when the
/// abort follows a failed allocation.
fn install_oom_reporter(sender: &Sender) {
    let (pipe, memfd) = sender.raw_fds();
    OOM_PIPE.store(pipe, Ordering::SeqCst);
    OOM_MEMFD.store(memfd, Ordering::SeqCst);
    // SAFETY: `on_abort` is an extern "C" fn with the signature sigaction
    // expects; the struct is fully initialised.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &action, std::ptr::null_mut());
    }
}

/// SIGABRT in the child. Rust aborts when an allocation fails, and a failed
/// allocation leaves `errno` at `ENOMEM`: then report running out of memory
/// and exit. Otherwise return; `abort` then ends the process with SIGABRT as
/// usual (SA_RESETHAND has restored the default action). Async-signal-safe.
extern "C" fn on_abort(_signal: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    if errno != libc::ENOMEM {
        return;
    }
    let mut sender = Sender::new(
        OOM_PIPE.load(Ordering::SeqCst),
        OOM_MEMFD.load(Ordering::SeqCst),
    );
    let _ = sender.send(Tag::OutOfMemory, &[]);
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(EXIT_OUT_OF_MEMORY) }
}

/// Turns the supervisor's outcome and frame into a [`CallOutcome`].
pub(crate) fn decode<T: DeserializeOwned>(
    limits: &Limits,
    mut outcome: Outcome,
    frame: Option<Frame>,
) -> CallOutcome<T> {
    if outcome.status == Status::Crashed
        && frame.is_none()
        && outcome.exit == Some(Exit::Signal(libc::SIGABRT))
        && limits.memory_mode == MemoryMode::AddressSpace
    {
        if let Some(memory) = limits.memory {
            outcome.status = Status::Memory;
            outcome.detail = format!(
                "killed by SIGABRT under an address-space limit of {memory} bytes of headroom; \
                 Rust aborts this way when an allocation fails (panics are caught, so a \
                 failed allocation is the usual cause; errno was no longer ENOMEM to confirm it)"
            );
        }
    }
    if frame.as_ref().is_some_and(|f| f.tag == Tag::OutOfMemory) {
        outcome
            .detail
            .push_str(" (evidence: an allocation failed with ENOMEM and Rust aborted)");
    }
    let result = match (outcome.status, frame) {
        (Status::Ok, Some(frame)) if frame.tag == Tag::Value => {
            let bytes = frame.payload.into_vec().unwrap_or_default();
            postcard::from_bytes::<T>(&bytes).map_err(|err| Failure::Encoding {
                message: format!("decoding the value: {err}"),
            })
        }
        (Status::Error, Some(frame)) if frame.tag == Tag::Error => {
            let bytes = frame.payload.into_vec().unwrap_or_default();
            match postcard::from_bytes::<ChildError>(&bytes) {
                Ok(ChildError::Panic(message)) => Err(Failure::Panic { message }),
                Ok(ChildError::Encoding(message)) => Err(Failure::Encoding {
                    message: format!("encoding the value: {message}"),
                }),
                Err(err) => Err(Failure::Encoding {
                    message: format!("decoding the error report: {err}"),
                }),
            }
        }
        (status, _) if status.is_limit() => Err(Failure::Limit {
            status,
            detail: outcome.detail.clone(),
        }),
        _ => Err(Failure::Crashed {
            exit: outcome.exit,
            detail: outcome.detail.clone(),
        }),
    };
    match &result {
        Ok(_) => {}
        Err(Failure::Panic { message }) => {
            outcome.status = Status::Error;
            outcome.detail = format!("panicked: {message}");
        }
        Err(Failure::Encoding { message }) => {
            outcome.status = Status::Error;
            outcome.detail = message.clone();
        }
        Err(Failure::Crashed { .. }) => outcome.status = Status::Crashed,
        Err(Failure::Limit { .. }) => {}
    }
    CallOutcome::new(result, outcome)
}

/// How many threads this process has, from `/proc/self/task`.
fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Payload;

    fn outcome(status: Status) -> Outcome {
        Outcome {
            status,
            exit: Some(Exit::Code(0)),
            usage: Usage::default(),
            detail: String::new(),
        }
    }

    #[test]
    fn decodes_values_and_errors() {
        let frame = Frame {
            tag: Tag::Value,
            payload: Payload::Inline(postcard::to_allocvec(&(7u32, "x".to_owned())).unwrap()),
        };
        let call: CallOutcome<(u32, String)> =
            decode(&Limits::new(), outcome(Status::Ok), Some(frame));
        assert_eq!(call.result, Ok((7, "x".to_owned())));

        let frame = Frame {
            tag: Tag::Error,
            payload: Payload::Inline(error_payload(ChildError::Panic("boom".into()))),
        };
        let call: CallOutcome<u8> = decode(&Limits::new(), outcome(Status::Error), Some(frame));
        assert_eq!(
            call.result,
            Err(Failure::Panic {
                message: "boom".into()
            })
        );
        assert_eq!(call.detail, "panicked: boom");
    }

    #[test]
    fn a_value_that_does_not_decode_is_an_error() {
        let frame = Frame {
            tag: Tag::Value,
            payload: Payload::Inline(vec![0xff; 3]),
        };
        let call: CallOutcome<String> = decode(&Limits::new(), outcome(Status::Ok), Some(frame));
        assert!(matches!(call.result, Err(Failure::Encoding { .. })));
        assert_eq!(call.status, Status::Error);
    }

    #[test]
    fn an_abort_under_an_address_space_limit_is_memory() {
        let mut aborted = outcome(Status::Crashed);
        aborted.exit = Some(Exit::Signal(libc::SIGABRT));
        let limited = Limits::new().memory(1 << 20);
        let call: CallOutcome<u8> = decode(&limited, aborted.clone(), None);
        assert_eq!(call.status, Status::Memory);
        assert!(call.detail.contains("SIGABRT"), "{}", call.detail);
        // Without a memory limit, or in resident mode, it is a crash.
        let call: CallOutcome<u8> = decode(&Limits::new(), aborted.clone(), None);
        assert_eq!(call.status, Status::Crashed);
        let resident = limited.memory_mode(MemoryMode::Resident);
        let call: CallOutcome<u8> = decode(&resident, aborted, None);
        assert_eq!(call.status, Status::Crashed);
    }

    #[test]
    fn limits_and_crashes_keep_their_status() {
        let call: CallOutcome<u8> = decode(&Limits::new(), outcome(Status::CpuTime), None);
        assert_eq!(
            call.result.as_ref().unwrap_err().limit(),
            Some(Status::CpuTime)
        );
        let call: CallOutcome<u8> = decode(&Limits::new(), outcome(Status::Crashed), None);
        assert!(matches!(call.result, Err(Failure::Crashed { .. })));
        assert_eq!(call.status, Status::Crashed);
    }
}
