//! The call's guardian: a small process that stays the parent of the call's
//! whole tree for as long as any of it lives.
//!
//! Each call is two processes. The guardian is the one the caller (or the
//! forkserver) started: a child subreaper in the call's own process group.
//! Its only child runs the function. Whatever that process starts, even a
//! descendant that calls `setsid` or double-forks, is reparented to the
//! guardian when its own parent dies, never to init, so it can always be
//! found. When the function's process ends, however it ends (a result, an
//! error, a crash, `os._exit`, SIGKILL), the guardian kills every descendant
//! left (unless the call delivered its result and the caller asked to keep
//! them), reaps them, and exits with the function's own exit status. The
//! supervisor sees the guardian's exit as the end of the call; its rusage
//! covers the function and everything the guardian reaped.
//!
//! Without the guardian, a descendant that left the process group and whose
//! parent died before a scan of `/proc` saw it escaped for good.
//!
//! The guardian also watches the caller: it waits on a pidfd and kills the
//! tree when the caller exits, even by SIGKILL. The function's process gets
//! SIGKILL as its parent-death signal, which is exact because its parent,
//! the guardian, has a single thread. So no watchdog thread runs inside the
//! function's process.
//!
//! The guardian blocks every signal: the supervisor's SIGTERM, SIGXCPU or
//! SIGINT is meant for the function, and reaches it through the process
//! group and the tree's pidfds. Only SIGKILL and SIGSTOP, which freeze and
//! kill the whole tree at once, act on it.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

use crate::child::SetupError;
use crate::fork::ForkHooks;
use crate::sys::{self, Pid};
use crate::tree;

/// How long the guardian may spend killing the tree; the supervisor's own
/// kill is the backstop.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Exit code of a guardian whose caller died: nobody reads it.
const EXIT_CALLER_GONE: i32 = 137;
const NAME: &std::ffi::CStr = c"pynisher-guard";

/// In the function's process: the flag, shared with the guardian, that says
/// the result frame was sent. Null outside a guarded call.
static RESULT_SENT: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

/// Tells the guardian that the call delivered its result, so that with
/// `terminate_descendants` off its descendants may outlive it. Does nothing
/// outside a guarded call. Async-signal-safe.
pub fn mark_result_sent() {
    let flag = RESULT_SENT.load(Ordering::Acquire);
    if !flag.is_null() {
        // SAFETY: a non-null pointer is the shared page mapped in `split`,
        // which stays mapped for the life of the process.
        unsafe { (*flag).store(true, Ordering::Release) };
    }
}

/// Splits the calling process in two: the child returns `Ok` and runs the
/// call; the parent becomes the call's guardian and never returns.
///
/// Call it in a freshly started call process, after
/// [`ChildSetup::apply_early`](crate::child::ChildSetup::apply_early) (own
/// process group, child subreaper) and before the limits, which apply to the
/// function's process only. `parent` is the process to watch (the caller, or
/// the forkserver), the parent of the calling process. `hooks.before` runs
/// before the fork and `hooks.after_child` in the child; the guardian runs no
/// hook, since it never returns to the embedder's code.
///
/// # Safety
/// As `fork(2)`: the calling process should have a single thread.
///
/// # Errors
/// The shared page or the fork failed; the process is then unchanged.
pub unsafe fn split<H: ForkHooks>(
    parent: Pid,
    terminate_descendants: bool,
    hooks: &H,
) -> Result<(), SetupError> {
    // SAFETY: an anonymous shared mapping with no address hint; the result is
    // checked before use.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<AtomicBool>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(SetupError {
            step: "mmap (the guardian's flag)",
            errno: errno(),
        });
    }
    // A fresh anonymous page is zeroed: the flag starts false.
    let sent = page.cast::<AtomicBool>();
    // SAFETY: getpid has no preconditions.
    let guardian = unsafe { libc::getpid() };
    // The guardian must never act on a signal meant for the function, not
    // even in the instant after the fork; the child restores the mask.
    let blocked = sys::SignalsBlocked::new();
    hooks.before();
    // SAFETY: the caller upholds fork's contract (see above).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = errno();
        hooks.after_parent();
        drop(blocked);
        return Err(SetupError {
            step: "fork (the call's process)",
            errno: err,
        });
    }
    if pid == 0 {
        drop(blocked);
        // SAFETY: prctl and getppid with integer arguments only.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(SetupError {
                    step: "prctl(PR_SET_PDEATHSIG)",
                    errno: errno(),
                });
            }
            // The guardian may have been killed before the signal was armed.
            if libc::getppid() != guardian {
                libc::_exit(EXIT_CALLER_GONE);
            }
        }
        RESULT_SENT.store(sent, Ordering::Release);
        hooks.after_child();
        return Ok(());
    }
    // SAFETY: `sent` points into the shared page mapped above, which is never
    // unmapped.
    guard(pid, parent, terminate_descendants, unsafe { &*sent })
}

/// The guardian's life: wait for the function's process or the caller,
/// whichever ends first, clean up, and exit.
fn guard(function: Pid, parent: Pid, terminate_descendants: bool, sent: &AtomicBool) -> ! {
    // SAFETY: plain system calls; NAME is a NUL-terminated string of at most
    // 16 bytes. The descriptors inherited from the caller belong to the
    // function's process: holding them here would keep pipes open and
    // sockets alive longer than the call, and use up the caller's fd limit.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr(), 0, 0, 0);
        libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
    }
    let parent_fd = match sys::pidfd_open(parent) {
        Ok(fd) => Some(fd),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => caller_gone(),
        // The parent-death signal stays armed instead: it kills the guardian,
        // and with it the function's process, when the caller dies.
        Err(_) => None,
    };
    // The parent may have died before its pidfd was opened; then this
    // process was reparented and the pidfd names another process.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        caller_gone();
    }
    if parent_fd.is_some() {
        // From here on the pidfd watches the parent, and the guardian cleans
        // up before it exits; the parent-death signal would kill it first.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    }
    let function_fd = match sys::pidfd_open(function) {
        Ok(fd) => fd,
        // Not expected for an unreaped child; waiting for it alone still
        // guards everything but the caller's death.
        Err(_) => function_ended(function, terminate_descendants, sent),
    };
    use std::os::fd::AsRawFd;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: function_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is skipped by poll.
                fd: parent_fd.as_ref().map_or(-1, |fd| fd.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if sys::poll(&mut fds, None).is_err() {
            // Cannot wait on both: wait for the function alone.
            function_ended(function, terminate_descendants, sent);
        }
        if fds[0].revents != 0 {
            function_ended(function, terminate_descendants, sent);
        }
        if fds[1].revents != 0 {
            caller_gone();
        }
    }
}

/// The function's process has exited: reap it, clean up, and exit as it did.
fn function_ended(function: Pid, terminate_descendants: bool, sent: &AtomicBool) -> ! {
    let status = match sys::wait4(function, true) {
        Ok(Some((status, _))) => status,
        // Cannot happen for an unreaped child; report a plain failure.
        _ => 1 << 8,
    };
    let keep = sent.load(Ordering::Acquire) && !terminate_descendants;
    if !keep && has_children() {
        tree::kill_own_descendants(CLEANUP_TIMEOUT);
    }
    // Reaping what exited folds its CPU time into this process's rusage,
    // which the supervisor reads.
    sys::reap_exited_children();
    exit_like(status)
}

/// The caller (or the forkserver) is gone: kill the whole tree and exit.
fn caller_gone() -> ! {
    tree::kill_own_descendants(CLEANUP_TIMEOUT);
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(EXIT_CALLER_GONE) }
}

/// Ends this process the way `status` (from `wait4`) says the function's
/// process ended: with its exit code, or killed by its signal.
fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // SAFETY: plain system calls on local data. No core dump: the
        // function's process made its own, if the caller allowed one.
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(signal, libc::SIG_DFL);
            let mut only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut only);
            libc::sigaddset(&mut only, signal);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
            // Only a signal whose default is to ignore gets here.
            libc::_exit(128 + signal)
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    };
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Whether the calling process has any child, live or zombie. A subreaper
/// without children has no descendants at all, so the costly scan of
/// `/proc` can be skipped.
fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data; waitid only writes to it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid for writes; WNOWAIT leaves any child unreaped.
    let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    !(ret == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
