//! The guardian program's whole life, after it has left the function's
//! memory: wait for the function's process or the caller, whichever ends
//! first, kill what the call left, report, and exit as the function did.
//!
//! This file is compiled into the guardian program (`no_std`, no C library:
//! see `crates/pynisher/guardian/main.rs`) and, for its tests and the layout
//! of [`Page`], into the library. It uses nothing but `core` and
//! [`raw`](super::raw). The guardian program allocates nothing: every buffer
//! lives on its stack.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::procfs::{parse_decimal, NumberedEntries, ProcStat};
use super::raw::{self, pid_t};

/// Exit code of a guardian whose caller died: nobody reads it.
pub const EXIT_CALLER_GONE: i32 = 137;
const NAME: &[u8; 15] = b"pynisher-guard\0";
/// How many descendants the guardian can freeze and kill in one pass; more
/// are killed in further passes.
const MAX_DESCENDANTS: usize = 4096;
/// How long the guardian waits for SIGSTOP to take effect.
const STOP_SETTLE_MICROS: u64 = 100_000;
/// How long the guardian may spend killing the tree; the supervisor's own
/// kill is the backstop.
const CLEANUP_MICROS: u64 = 2_000_000;
/// Marks a filled [`Page`].
pub const PAGE_FILLED: u64 = 0x7079_6e69_7368_6572;

/// The page one call's three parties share (a memfd of its own): the
/// function's process says there whether it sent its result; the guardian
/// reports there how the function ended and what the processes it reaped
/// used, so the caller needs neither to reap the guardian itself nor to
/// trust the guardian's own rusage.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Page {
    /// 1 once the function's process has sent its result frame.
    pub result_sent: AtomicU32,
    /// 1 once the caller holds a pidfd of the guardian: until then the
    /// guardian does not exit, so that a caller whose children someone else
    /// reaps (SIGCHLD ignored, a `waitpid(-1)` thread) can always open it.
    pub supervised: AtomicU32,
    /// `PAGE_FILLED` once the guardian has written what follows.
    pub filled: AtomicU64,
    /// The function's wait status.
    pub status: AtomicU64,
    /// `RUSAGE_CHILDREN` of the guardian: the function and all it reaped.
    pub reaped_user_micros: AtomicU64,
    pub reaped_system_micros: AtomicU64,
    pub reaped_maxrss_kib: AtomicU64,
    /// `RUSAGE_SELF` of the guardian, start-up of a fresh interpreter
    /// included.
    pub own_user_micros: AtomicU64,
    pub own_system_micros: AtomicU64,
    pub own_maxrss_kib: AtomicU64,
}

/// What the guardian program is told on its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Args {
    /// The process to watch: the caller, or the forkserver.
    pub parent: pid_t,
    pub terminate: bool,
    /// The function's process, the guardian's only child.
    pub function: pid_t,
    /// The call's [`Page`], or -1.
    pub page_fd: i32,
}

impl Args {
    /// Parses `parent terminate function page_fd` (decimal; the page may be
    /// -1).
    pub fn parse<'a>(mut words: impl Iterator<Item = &'a [u8]>) -> Option<Args> {
        let parent = parse_decimal(words.next()?)?;
        let terminate = parse_decimal(words.next()?)? != 0;
        let function = parse_decimal(words.next()?)?;
        let page = words.next()?;
        let page_fd = if page == b"-1" {
            -1
        } else {
            parse_decimal(page)?
        };
        Some(Args {
            parent,
            terminate,
            function,
            page_fd,
        })
    }
}

/// The guardian's life. Its signals are blocked (they were when it split off
/// and the mask survives exec): only SIGKILL and SIGSTOP act on it.
pub fn run(args: Args) -> ! {
    let _ = raw::prctl(raw::PR_SET_NAME, NAME.as_ptr() as usize);
    let page = map_page(args.page_fd);
    // The descriptors inherited from the caller belong to the function's
    // process: holding them here would keep pipes open and sockets alive
    // longer than the call, and use up the fd limit.
    close_inherited();
    raw::raise_fd_limit();
    let parent_fd = match raw::pidfd_open(args.parent) {
        Ok(fd) => fd,
        Err(raw::ESRCH) => caller_gone(),
        // The parent-death signal stays armed instead: it kills the guardian,
        // and with it the function's process, when the caller dies.
        Err(_) => -1,
    };
    // The parent may have died before its pidfd was opened; then this
    // process was reparented and the pidfd names another process.
    if raw::getppid() != args.parent {
        caller_gone();
    }
    if parent_fd >= 0 {
        // From here on the pidfd watches the parent, and the guardian cleans
        // up before it exits; the parent-death signal would kill it first.
        let _ = raw::prctl(raw::PR_SET_PDEATHSIG, 0);
    }
    let Ok(function_fd) = raw::pidfd_open(args.function) else {
        // Not expected for an unreaped child: wait for it alone.
        function_ended(args, page, parent_fd);
    };
    loop {
        let mut fds = [
            raw::PollFd {
                fd: function_fd,
                events: raw::POLLIN,
                revents: 0,
            },
            raw::PollFd {
                // A negative descriptor is skipped.
                fd: parent_fd,
                events: raw::POLLIN,
                revents: 0,
            },
        ];
        if raw::poll_forever(&mut fds).is_err() || fds[0].revents != 0 {
            function_ended(args, page, parent_fd);
        }
        if fds[1].revents != 0 {
            caller_gone();
        }
    }
}

fn map_page(fd: i32) -> Option<&'static Page> {
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is the call's page, as the guardian was told.
    unsafe { map_call_page(fd) }.ok()
}

/// Maps the call's [`Page`] (shared, read-write) for the rest of the
/// process's life: the guardian's view, and the function's process's.
///
/// # Safety
/// `fd` must be the call's page, which its creator sized to hold a [`Page`].
///
/// # Errors
/// `mmap`'s errno.
pub unsafe fn map_call_page(fd: i32) -> Result<&'static Page, i32> {
    // SAFETY: a shared mapping of `fd`, which the caller promises is sized
    // for a Page; it is never unmapped.
    let addr = unsafe {
        raw::mmap(
            core::mem::size_of::<Page>(),
            raw::PROT_READ | raw::PROT_WRITE,
            raw::MAP_SHARED,
            fd,
        )
    }?;
    // SAFETY: the mapping is page-aligned, large enough and holds only
    // atomics, for which any bytes are valid.
    Ok(unsafe { &*(addr as *const Page) })
}

/// Closes every descriptor above stderr. `close_range` first; where it
/// fails (a kernel before 5.9, or a seccomp filter), one by one as
/// `/proc/self/fd` lists them, until a listing shows none left.
fn close_inherited() {
    if raw::close_range(3, u32::MAX).is_ok() {
        return;
    }
    for _ in 0..64 {
        let Ok(entries) = NumberedEntries::<4096>::open(b"/proc/self/fd\0") else {
            // Without /proc: every number up to a generous bound.
            (3..65_536).for_each(raw::close);
            return;
        };
        let dir = entries.fd();
        let mut closed = 0;
        for fd in entries {
            if fd > 2 && fd != dir {
                raw::close(fd);
                closed += 1;
            }
        }
        if closed == 0 {
            return;
        }
    }
}

/// The function's process has exited: reap it, clean up, report, and exit
/// as it did.
fn function_ended(args: Args, page: Option<&Page>, parent_fd: i32) -> ! {
    let mut status = 1 << 8;
    if raw::wait4(args.function, &mut status, raw::WALL, None).is_err() {
        status = 1 << 8;
    }
    let sent = page.is_some_and(|p| p.result_sent.load(Ordering::Acquire) != 0);
    let keep = sent && !args.terminate;
    // A subreaper without children has no descendants at all: the scan of
    // /proc, the costly part, is only needed if something was left.
    if !keep && raw::has_children() {
        kill_descendants();
    }
    // Reaping what exited folds its CPU time into this process's rusage.
    reap_exited();
    if let Some(page) = page {
        report(page, status);
        wait_until_supervised(page, parent_fd);
    }
    exit_like(status)
}

/// Waits until the caller holds a pidfd of this process (at once, but for
/// a call that ends before its caller got that far) or the caller is gone.
fn wait_until_supervised(page: &Page, parent_fd: i32) {
    while page.supervised.load(Ordering::Acquire) == 0 {
        let mut fds = [raw::PollFd {
            fd: parent_fd,
            events: raw::POLLIN,
            revents: 0,
        }];
        if parent_fd < 0 {
            raw::sleep_micros(1000);
        } else if raw::poll_timeout(&mut fds, 1) != Ok(0) {
            return;
        }
    }
}

/// Fills the call's page: the function's status and the usage of the
/// guardian and of everything it reaped.
fn report(page: &Page, status: i32) {
    let slots = [
        (
            raw::RUSAGE_CHILDREN,
            [
                &page.reaped_user_micros,
                &page.reaped_system_micros,
                &page.reaped_maxrss_kib,
            ],
        ),
        (
            raw::RUSAGE_SELF,
            [
                &page.own_user_micros,
                &page.own_system_micros,
                &page.own_maxrss_kib,
            ],
        ),
    ];
    for (who, [user, system, maxrss]) in slots {
        if let Some(usage) = raw::getrusage(who) {
            user.store(usage.utime.micros(), Ordering::Relaxed);
            system.store(usage.stime.micros(), Ordering::Relaxed);
            maxrss.store(usage.maxrss.max(0) as u64, Ordering::Relaxed);
        }
    }
    page.status.store(status as u32 as u64, Ordering::Relaxed);
    page.filled.store(PAGE_FILLED, Ordering::Release);
}

/// The caller (or the forkserver) is gone: kill the whole tree and exit.
fn caller_gone() -> ! {
    kill_descendants();
    reap_exited();
    raw::exit_group(EXIT_CALLER_GONE)
}

/// Ends this process the way `status` (from `wait4`) says the function's
/// process ended: with its exit code, or killed by its signal.
fn exit_like(status: i32) -> ! {
    if raw::wifsignaled(status) {
        let signal = raw::wtermsig(status);
        // No core dump of the guardian: the function's process made its own,
        // if allowed.
        let _ = raw::prctl(raw::PR_SET_DUMPABLE, 0);
        raw::default_action(signal);
        raw::sigprocmask(raw::SIG_UNBLOCK, raw::sigbit(signal));
        let _ = raw::kill(raw::getpid(), signal);
        // Only a signal whose default is to ignore gets here.
        raw::exit_group(128 + signal);
    }
    let code = if raw::wifexited(status) {
        raw::wexitstatus(status)
    } else {
        1
    };
    raw::exit_group(code)
}

/// Reaps every child that has exited, without blocking.
fn reap_exited() {
    let mut status = 0;
    while let Ok(pid) = raw::wait4(-1, &mut status, raw::WNOHANG | raw::WALL, None) {
        if pid == 0 {
            return;
        }
    }
}

/// A fixed set of descendants, on the guardian's stack: each pid with a
/// pidfd (or -1 where none could be opened).
struct Found {
    pids: [pid_t; MAX_DESCENDANTS],
    pidfds: [i32; MAX_DESCENDANTS],
    len: usize,
}

impl Found {
    fn contains(&self, pid: pid_t) -> bool {
        self.pids.iter().take(self.len).any(|p| *p == pid)
    }

    /// Adds `pid`; false if the set is full.
    fn insert(&mut self, pid: pid_t, pidfd: i32) -> bool {
        match (self.pids.get_mut(self.len), self.pidfds.get_mut(self.len)) {
            (Some(slot), Some(fd_slot)) => {
                *slot = pid;
                *fd_slot = pidfd;
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (pid_t, i32)> + '_ {
        self.pids
            .iter()
            .copied()
            .zip(self.pidfds.iter().copied())
            .take(self.len)
    }

    fn close_all(&self) {
        self.iter()
            .filter(|(_, fd)| *fd >= 0)
            .for_each(|(_, fd)| raw::close(fd));
    }
}

/// Signals a found descendant through its pidfd, which cannot name another
/// process; by pid only where no pidfd could be opened (then it is frozen,
/// and a child of ours or of a frozen process, which cannot reap it).
fn signal(pid: pid_t, pidfd: i32, sig: i32) {
    if pidfd >= 0 {
        let _ = raw::pidfd_send_signal(pidfd, sig);
    } else {
        let _ = raw::kill(pid, sig);
    }
}

/// Freezes every descendant of this process (SIGSTOP as soon as it is found,
/// so none can fork behind the scan), scans until nothing new turns up, then
/// kills them all and reaps its own children. As a subreaper, the guardian
/// is the parent of every orphan of the call, so the scan misses nothing.
fn kill_descendants() {
    let me = raw::getpid();
    let deadline = raw::now_micros().wrapping_add(CLEANUP_MICROS);
    loop {
        let mut found = Found {
            pids: [0; MAX_DESCENDANTS],
            pidfds: [-1; MAX_DESCENDANTS],
            len: 0,
        };
        // Passes over /proc until one finds nothing new: a pass can meet a
        // child before its parent.
        while scan_descendants(me, &mut found) > 0 && found.len < MAX_DESCENDANTS {
            wait_stopped(&found);
            if raw::now_micros() > deadline {
                break;
            }
        }
        if found.len == 0 {
            return;
        }
        for (pid, pidfd) in found.iter() {
            signal(pid, pidfd, raw::SIGKILL);
        }
        found.close_all();
        wait_children_gone(deadline);
        // A full set may have left some behind; so may a deadline.
        if found.len < MAX_DESCENDANTS || raw::now_micros() > deadline {
            return;
        }
    }
}

/// One pass over /proc: adds (and stops) every process whose parent is
/// `root` or already in `found`. Returns how many it added.
fn scan_descendants(root: pid_t, found: &mut Found) -> usize {
    let Ok(pids) = NumberedEntries::<{ 16 << 10 }>::open(b"/proc\0") else {
        return 0;
    };
    let mut added = 0;
    let ours = |found: &Found, pid: pid_t| {
        ProcStat::read(pid).is_some_and(|s| s.ppid == root || found.contains(s.ppid))
    };
    for pid in pids {
        if pid == root || found.contains(pid) || !ours(found, pid) {
            continue;
        }
        // The pidfd names whatever has this pid now; a second look at its
        // parent after opening it makes sure that is our descendant.
        let pidfd = match raw::pidfd_open(pid) {
            Ok(fd) if ours(found, pid) => fd,
            Ok(fd) => {
                raw::close(fd);
                continue;
            }
            Err(_) => -1,
        };
        signal(pid, pidfd, raw::SIGSTOP);
        if !found.insert(pid, pidfd) {
            if pidfd >= 0 {
                raw::close(pidfd);
            }
            break;
        }
        added += 1;
    }
    added
}

/// Waits until every process in `found` is stopped or dead, at most
/// [`STOP_SETTLE_MICROS`]. One in uninterruptible sleep may never stop; it
/// is killed regardless.
fn wait_stopped(found: &Found) {
    let until = raw::now_micros().wrapping_add(STOP_SETTLE_MICROS);
    while raw::now_micros() < until {
        let running = found
            .iter()
            .any(|(pid, _)| ProcStat::read(pid).is_some_and(|s| !s.is_stopped_or_exited()));
        if !running {
            return;
        }
        raw::sleep_micros(200);
    }
}

/// Reaps children until none is left or `deadline` (microseconds) passes.
fn wait_children_gone(deadline: u64) {
    let mut status = 0;
    loop {
        match raw::wait4(-1, &mut status, raw::WNOHANG | raw::WALL, None) {
            Err(_) => return, // ECHILD: none left
            Ok(0) => {
                if raw::now_micros() > deadline {
                    return;
                }
                raw::sleep_micros(500);
            }
            Ok(_) => {}
        }
    }
}
