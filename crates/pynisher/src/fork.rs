//! Run code in a forked child under limits.

use std::os::fd::AsRawFd;

use crate::channel::{self, Sender, Tag};
use crate::child::ChildSetup;
use crate::error::{Error, Result};
use crate::guardian;
use crate::limits::Limits;
use crate::supervisor::{StartMark, Supervised};
use crate::sys;

/// Exit code of a child whose body returned without sending a frame.
pub const EXIT_NO_FRAME: i32 = 70;
/// Exit code of a child whose setup failed.
pub const EXIT_SETUP_FAILED: i32 = 71;

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
/// `atexit` handlers or buffered output of the parent run in it.
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
    limits.validate()?;
    guardian::prepare()?;
    let (setup, cgroup) = ChildSetup::for_call(limits, options.name.as_deref());
    let page = guardian::CallPage::new().map_err(|e| Error::os("creating the call's page", e))?;
    let page_fd = page.fd().as_raw_fd();
    let (receiver, write_end, child_memfd) =
        channel::pair().map_err(|e| Error::os("creating the result channel", e))?;
    let mut sender = Sender::new(write_end.as_raw_fd(), child_memfd.as_raw_fd());

    hooks.before();
    let started = StartMark::now();
    // SAFETY: fork has no memory-safety preconditions of its own; what the
    // child may do is the caller's contract, documented above.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        run_child(
            &setup,
            hooks,
            &mut sender,
            body,
            options.terminate_descendants,
            page_fd,
        );
    }
    hooks.after_parent();
    if pid < 0 {
        return Err(Error::last_os("fork"));
    }
    drop(write_end);
    drop(child_memfd);
    let mut supervised = Supervised::new(
        pid,
        Some(receiver),
        limits.clone(),
        started,
        options.terminate_descendants,
    )
    .inspect_err(|_| sys::stop_unsupervised(pid))?
    .with_cgroup(cgroup)
    .with_call_page(page);
    supervised.expect_guardian();
    Ok(supervised)
}

fn run_child<H: ForkHooks, F: FnOnce(&mut Sender)>(
    setup: &ChildSetup,
    hooks: &H,
    sender: &mut Sender,
    body: F,
    terminate_descendants: bool,
    page: std::os::fd::RawFd,
) -> ! {
    let fail = |sender: &mut Sender, err: crate::child::SetupError| -> ! {
        let mut buf = [0u8; 128];
        let _ = sender.send(Tag::SetupFailed, &[err.describe(&mut buf)]);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(EXIT_SETUP_FAILED) }
    };
    if let Err(err) = setup.apply_early() {
        fail(sender, err);
    }
    // This process becomes the call's guardian; the body runs in its child.
    // SAFETY: this freshly forked child has a single thread and is not the
    // caller; `prepare` ran in the caller before the fork.
    if let Err(err) = unsafe { guardian::split(setup.parent(), terminate_descendants, page) } {
        fail(sender, err);
    }
    if let Err(err) = setup.apply_limits() {
        fail(sender, err);
    }
    hooks.after_child();
    body(sender);
    finish_child(sender.has_sent())
}

/// Ends the process that ran a call once its result is sent (or not):
/// tells the guardian whether the result was sent, then `_exit`s with 0, or
/// [`EXIT_NO_FRAME`] if it sent nothing. The guardian kills what the call
/// started. Used by forked children and by fresh interpreters alike.
pub fn finish_child(sent: bool) -> ! {
    if sent {
        guardian::mark_result_sent();
    }
    let code = if sent { 0 } else { EXIT_NO_FRAME };
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or destructors, which belong to the parent.
    unsafe { libc::_exit(code) }
}
