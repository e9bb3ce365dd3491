//! Run code in a forked child under limits.

use std::os::fd::RawFd;

use crate::channel::Sender;
use crate::child::{setup_failed, step, CallProcess, ChildSetup};
use crate::error::{Error, Result};
use crate::guardian;
use crate::limits::Limits;
use crate::start::CallParts;
use crate::supervisor::{StartMark, Supervised};
use crate::sys::Pid;

pub use crate::child::{finish_child, EXIT_NO_FRAME, EXIT_SETUP_FAILED};

/// Calls made around `fork`, for embedders with state of their own to
/// protect. The Python binding runs `PyOS_BeforeFork`, `PyOS_AfterFork_Parent`
/// and `PyOS_AfterFork_Child` here, as `os.fork` does.
pub trait ForkHooks {
    /// In the parent, right before `fork`.
    fn before(&self) {}
    /// In the parent, right after `fork`.
    fn after_parent(&self) {}
    /// In the child, after the limits are set and before the body runs.
    fn after_child(&self) {}
}

/// No hooks.
pub struct NoHooks;
impl ForkHooks for NoHooks {}

/// Options of one call (forked, spawned or in a fresh interpreter) besides
/// its limits.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Process name shown by `ps` and in `/proc/<pid>/comm`.
    pub name: Option<String>,
    /// Kill every process the call started before it returns, even after a
    /// successful call.
    pub terminate_descendants: bool,
}

/// Forks a child that sets itself up under `limits` and runs `body`, which
/// reports through the [`Sender`]. Returns the running child, to be waited
/// for with [`Supervised::wait`] or [`Supervised::wait_with`].
///
/// The child exits with `_exit` once `body` returns, so no destructors,
/// `atexit` handlers or buffered output of the parent run in it. Rust's
/// stdout is flushed before the fork, so that a line the caller had started
/// is not written a second time by the child.
///
/// # Safety
/// The child is a copy of this process with only the calling thread. If
/// another thread held a lock at the moment of the fork (a `Mutex`, or the
/// allocator of a non-glibc malloc), `body` can deadlock on it; the limits
/// still end the call, but only the wall-time limit ends a deadlock. The
/// caller must make sure `body` is fit to run in such a child, as with
/// `fork(2)` itself.
///
/// # Errors
/// The limits are invalid, or the channel, the fork or the pidfd failed.
pub unsafe fn fork_with<H, F>(
    limits: &Limits,
    options: &CallOptions,
    hooks: &H,
    body: F,
) -> Result<Supervised>
where
    H: ForkHooks,
    F: FnOnce(&mut Sender),
{
    let parts = CallParts::new(limits)?;
    guardian::prepare()?;
    // The child inherits what this process's stdout still buffers (a line
    // not yet ended) and would write it again with its own first line.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let setup = parts.setup(limits, options.name.as_deref());
    let (result_fd, memfd, page_fd) = parts.child_fds();
    let mut sender = Sender::new(result_fd, memfd);

    // SAFETY: what the child may do is the caller's contract, documented
    // above.
    let forked =
        unsafe { fork_call_process(hooks, StartMark::now) }.map_err(|e| Error::os("fork", e))?;
    match forked {
        Forked::Child(process) => run_child(
            process,
            &setup,
            hooks,
            &mut sender,
            body,
            options.terminate_descendants,
            page_fd,
        ),
        Forked::Parent(pid, started) => {
            parts.supervise(pid, limits, started, options.terminate_descendants)
        }
    }
}

/// Which side of [`fork_call_process`] this is.
pub(crate) enum Forked<T> {
    /// The new call's process, at its first step.
    Child(CallProcess<step::Started>),
    /// The caller (or the forkserver), with the child's pid and what
    /// `just_before` made.
    Parent(Pid, T),
}

/// Forks a call's process, the one way both `fork_with` and the forkserver
/// do it: `hooks.before`, `just_before` (whose value only the parent keeps),
/// `fork`, then `hooks.after_parent` in the parent. The child gets its
/// [`CallProcess`] and must end with `_exit` (it calls `hooks.after_child`
/// at its own step).
///
/// # Safety
/// As [`fork_with`]: the child is a copy of this process with only the
/// calling thread.
///
/// # Errors
/// `fork` failed.
pub(crate) unsafe fn fork_call_process<H: ForkHooks, T>(
    hooks: &H,
    just_before: impl FnOnce() -> T,
) -> std::io::Result<Forked<T>> {
    hooks.before();
    let made = just_before();
    // SAFETY: fork has no memory-safety preconditions of its own; what the
    // child may do is the caller's contract.
    let pid = unsafe { libc::fork() };
    // Read before the hook can overwrite errno.
    let failed = (pid < 0).then(std::io::Error::last_os_error);
    if pid == 0 {
        // The parent's; the child ends with _exit and must not drop it.
        std::mem::forget(made);
        // SAFETY: the freshly forked call's process, with only this thread.
        return Ok(Forked::Child(unsafe { CallProcess::started() }));
    }
    hooks.after_parent();
    match failed {
        Some(err) => Err(err),
        None => Ok(Forked::Parent(pid, made)),
    }
}

/// The forked call's process: the steps of [`CallProcess`], then `body`.
fn run_child<H: ForkHooks, F: FnOnce(&mut Sender)>(
    process: CallProcess<step::Started>,
    setup: &ChildSetup,
    hooks: &H,
    sender: &mut Sender,
    body: F,
    terminate_descendants: bool,
    page: RawFd,
) -> ! {
    let steps = process
        .setup_early(setup)
        // This process becomes the call's guardian; the body runs in its
        // child.
        .and_then(|early| early.split_guardian(setup.parent(), terminate_descendants, page))
        .and_then(|split| split.apply_limits(setup));
    let _running = match steps {
        Ok(limited) => limited.run(),
        Err(err) => setup_failed(sender, err),
    };
    hooks.after_child();
    body(sender);
    finish_child(sender.has_sent())
}
