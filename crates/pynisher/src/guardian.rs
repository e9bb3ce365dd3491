//! The call's guardian: a small process that stays the parent of the call's
//! whole tree for as long as any of it lives.
//!
//! Each call is two processes. The guardian is the one the caller (or the
//! forkserver) started: a child subreaper in the call's own process group.
//! Its only child runs the function. Whatever that process starts, even a
//! descendant that calls `setsid` or double-forks, is reparented to the
//! guardian when its own parent dies, never to init, so it can always be
//! found. When the function's process ends, however it ends (a result, an
//! error, a crash, `os._exit`, SIGKILL), the guardian freezes and kills every
//! descendant left (unless the call delivered its result and the caller asked
//! to keep them), reaps them, and exits with the function's own exit status.
//! The supervisor sees the guardian's exit as the end of the call; its rusage
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
//! # Why it costs next to nothing
//!
//! The guardian is split off with `clone(CLONE_VM)`: the function's process
//! shares the guardian's memory instead of copying its page tables, which for
//! a forked caller of a few GB would double the cost of the call. The
//! function's process goes on from the split on the original stack, exactly
//! as after a fork; the guardian moves to a small stack of its own at once.
//! Because the memory (thread-local storage included) is shared, the guardian
//! never allocates, never takes a lock, never uses `errno`
//! ([`crate::sys::raw`]) and never runs Python. Its signals are blocked, so
//! no handler can run on the shared stack: the supervisor's SIGTERM, SIGXCPU
//! or SIGINT is meant for the function and reaches it through the process
//! group and the tree's pidfds. Only SIGKILL and SIGSTOP act on the guardian.
//!
//! One consequence: a core dump of the function's process kills every process
//! that shares its memory, the guardian too. Processes the function started
//! and that left its process group can then outlive the call, unless the
//! supervisor's scan had seen them.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use crate::child::SetupError;
use crate::sys::{self, raw};

/// Exit code of a guardian whose caller died: nobody reads it.
const EXIT_CALLER_GONE: i32 = 137;
const NAME: &[u8; 15] = b"pynisher-guard\0";
/// The guardian's own stack, in the memory it shares with the function.
const STACK_SIZE: usize = 256 << 10;
/// How many descendants the guardian can freeze and kill in one pass; more
/// are killed in further passes.
const MAX_DESCENDANTS: usize = 4096;
/// How long the guardian waits for SIGSTOP to take effect.
const STOP_SETTLE_MICROS: u64 = 100_000;
/// How long the guardian may spend killing the tree; the supervisor's own
/// kill is the backstop.
const CLEANUP_MICROS: u64 = 2_000_000;

/// Set by the function's process once its result frame is sent; read by the
/// guardian, which shares this memory.
static RESULT_SENT: AtomicBool = AtomicBool::new(false);
/// Where the guardian reports what it reaped, if its supervisor asked.
static REPORT: AtomicPtr<ReapedUsage> = AtomicPtr::new(std::ptr::null_mut());
/// Marks a filled [`ReapedUsage`].
const REPORT_FILLED: u64 = 0x7079_6e69_7368_6572;

/// The usage of the processes a guardian reaped (the function's and what it
/// left), without the guardian's own. A spawned interpreter's own peak
/// memory includes the caller's (Linux carries `ru_maxrss` across `execve`),
/// so its supervisor takes the peak from here instead.
#[repr(C)]
struct ReapedUsage {
    filled: AtomicU64,
    user_micros: AtomicU64,
    system_micros: AtomicU64,
    maxrss_kib: AtomicU64,
}

/// A page shared with a guardian in another program image (a spawned
/// interpreter), through which it reports the usage of what it reaped.
#[derive(Debug)]
pub struct UsageReport {
    memfd: OwnedFd,
    page: std::ptr::NonNull<ReapedUsage>,
}

// SAFETY: the page holds only atomics; the pointer is owned by this value.
unsafe impl Send for UsageReport {}

/// The usage a guardian reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub user: Duration,
    pub system: Duration,
    /// Peak resident memory of the largest process reaped, in bytes.
    pub peak_memory: u64,
}

impl UsageReport {
    /// A fresh, empty report page.
    ///
    /// # Errors
    /// The memfd or the mapping failed.
    pub fn new() -> std::io::Result<UsageReport> {
        let memfd = sys::memfd(c"pynisher-usage")?;
        let len = std::mem::size_of::<ReapedUsage>();
        // SAFETY: a fresh memfd we own; sized before it is mapped.
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let page = map_shared(memfd.as_fd())?;
        Ok(UsageReport { memfd, page })
    }

    /// The descriptor to hand to the guardian's program.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// What the guardian reported, if it got that far.
    pub fn read(&self) -> Option<Reaped> {
        // SAFETY: the page stays mapped while `self` lives.
        let usage = unsafe { self.page.as_ref() };
        if usage.filled.load(Ordering::Acquire) != REPORT_FILLED {
            return None;
        }
        Some(Reaped {
            user: Duration::from_micros(usage.user_micros.load(Ordering::Relaxed)),
            system: Duration::from_micros(usage.system_micros.load(Ordering::Relaxed)),
            peak_memory: usage
                .maxrss_kib
                .load(Ordering::Relaxed)
                .saturating_mul(1024),
        })
    }
}

impl Drop for UsageReport {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(
                self.page.as_ptr().cast(),
                std::mem::size_of::<ReapedUsage>(),
            )
        };
    }
}

fn map_shared(fd: BorrowedFd<'_>) -> std::io::Result<std::ptr::NonNull<ReapedUsage>> {
    // SAFETY: a shared mapping of a file at least this large; the result is
    // checked before use.
    let page = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            std::mem::size_of::<ReapedUsage>(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    std::ptr::NonNull::new(page.cast::<ReapedUsage>()).ok_or_else(std::io::Error::last_os_error)
}

/// Tells the guardian that the call delivered its result, so that with
/// `terminate_descendants` off its descendants may outlive it. Harmless
/// outside a guarded call. Async-signal-safe.
pub fn mark_result_sent() {
    RESULT_SENT.store(true, Ordering::Release);
}

/// Splits the calling process in two: the child returns `Ok` and runs the
/// call; the parent becomes the call's guardian and never returns.
///
/// Call it in a freshly started call process, after
/// [`ChildSetup::apply_early`](crate::child::ChildSetup::apply_early) (own
/// process group, child subreaper) and before the limits, which apply to the
/// function's process only. `parent` is the process to watch (the caller, or
/// the forkserver), the parent of the calling process. `report`, if given,
/// is the descriptor of a [`UsageReport`] to fill before the guardian exits;
/// it is closed here.
///
/// # Safety
/// The calling process must have a single thread, and must not be the
/// caller's own process: it becomes the guardian.
///
/// # Errors
/// The guardian's stack or the clone failed; the process is then unchanged.
pub unsafe fn split(
    parent: libc::pid_t,
    terminate_descendants: bool,
    report: Option<RawFd>,
) -> Result<(), SetupError> {
    // A call nested in a spawned call inherits its report page: it must not
    // report there.
    let mut page = std::ptr::null_mut();
    if let Some(fd) = report {
        // SAFETY: the caller hands over this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        page = map_shared(fd.as_fd())
            .map_err(|err| SetupError {
                step: "mmap (the usage report)",
                errno: err.raw_os_error().unwrap_or(0),
            })?
            .as_ptr();
    }
    REPORT.store(page, Ordering::Release);
    // SAFETY: an anonymous private mapping with no address hint; the result
    // is checked before use.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(SetupError {
            step: "mmap (the guardian's stack)",
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    RESULT_SENT.store(false, Ordering::Release);
    // SAFETY: getpid has no preconditions.
    let guardian = unsafe { libc::getpid() };
    // No signal handler may run in the guardian: it would run on the stack
    // the child goes on using. The child restores the mask. Raw, not
    // `sys::SignalsBlocked`: glibc's pthread_sigmask leaves its internal
    // signals unblocked, and even those must not reach the guardian.
    let previous = raw::sigprocmask(libc::SIG_SETMASK, u64::MAX);
    // SAFETY: the stack was just mapped for the guardian alone and its top is
    // page-aligned; every signal is blocked; `guard` never returns and keeps
    // to raw system calls on its own stack.
    let ret = unsafe {
        raw::clone_vm_split(
            stack.cast::<u8>().add(STACK_SIZE),
            guard,
            parent,
            usize::from(terminate_descendants),
            cached_tid_slot(),
        )
    };
    raw::sigprocmask(libc::SIG_SETMASK, previous);
    if ret < 0 {
        // SAFETY: the mapping made above, used by nobody.
        unsafe { libc::munmap(stack, STACK_SIZE) };
        return Err(SetupError {
            step: "clone (the call's process)",
            errno: (-ret) as i32,
        });
    }
    // The function's process, on the original stack.
    // SAFETY: prctl and getppid with integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(SetupError {
                step: "prctl(PR_SET_PDEATHSIG)",
                errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            });
        }
        // The guardian may have been killed before the signal was armed.
        if libc::getppid() != guardian {
            libc::_exit(EXIT_CALLER_GONE);
        }
    }
    Ok(())
}

/// Where glibc keeps the calling thread's id, which it caches (in `struct
/// pthread`) and uses for `pthread_self()`-based calls such as
/// `pthread_getcpuclockid` or `pthread_setaffinity_np`. `fork` updates it in
/// the child; a raw `clone` does not, so the kernel is asked to write the new
/// id there (`CLONE_CHILD_SETTID`). glibc does not publish the field's
/// offset: it is found as the only slot near the start of the structure that
/// holds the thread's id. Null if it is not exactly one, or not glibc.
fn cached_tid_slot() -> *mut libc::pid_t {
    #[cfg(target_env = "gnu")]
    {
        // glibc's struct pthread is larger than this on every architecture.
        const SEARCH: usize = 1024;
        // SAFETY: gettid and pthread_self have no preconditions.
        let (me, base) = unsafe { (libc::gettid(), libc::pthread_self() as *mut u8) };
        let mut slot = std::ptr::null_mut();
        let mut matches = 0;
        for offset in (0..SEARCH).step_by(std::mem::size_of::<libc::pid_t>()) {
            // SAFETY: within the calling thread's struct pthread, aligned
            // like its int fields.
            let candidate = unsafe { base.add(offset) }.cast::<libc::pid_t>();
            // SAFETY: as above; a read of plain data.
            if unsafe { candidate.read_volatile() } == me {
                slot = candidate;
                matches += 1;
            }
        }
        if matches == 1 {
            return slot;
        }
    }
    std::ptr::null_mut()
}

/// The guardian's life: wait for the function's process or the caller,
/// whichever ends first, clean up, and exit. Runs on its own stack, in
/// memory shared with the function's process.
extern "C" fn guard(parent: libc::pid_t, terminate: usize, function: libc::pid_t) -> ! {
    let _ = raw::prctl(libc::PR_SET_NAME, NAME.as_ptr() as usize);
    // The descriptors inherited from the caller belong to the function's
    // process: holding them here would keep pipes open and sockets alive
    // longer than the call, and use up the fd limit.
    raw::close_range(3, u32::MAX);
    let parent_fd = match raw::pidfd_open(parent) {
        Ok(fd) => fd,
        Err(libc::ESRCH) => caller_gone(),
        // The parent-death signal stays armed instead: it kills the guardian,
        // and with it the function's process, when the caller dies.
        Err(_) => -1,
    };
    // The parent may have died before its pidfd was opened; then this
    // process was reparented and the pidfd names another process.
    if raw::getppid() != parent {
        caller_gone();
    }
    if parent_fd >= 0 {
        // From here on the pidfd watches the parent, and the guardian cleans
        // up before it exits; the parent-death signal would kill it first.
        let _ = raw::prctl(libc::PR_SET_PDEATHSIG, 0);
    }
    let terminate = terminate != 0;
    let Ok(function_fd) = raw::pidfd_open(function) else {
        // Not expected for an unreaped child: wait for it alone.
        function_ended(function, terminate);
    };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: function_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is skipped.
                fd: parent_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        if raw::poll_forever(&mut fds).is_err() {
            function_ended(function, terminate);
        }
        if fds[0].revents != 0 {
            function_ended(function, terminate);
        }
        if fds[1].revents != 0 {
            caller_gone();
        }
    }
}

/// The function's process has exited: reap it, clean up, and exit as it did.
fn function_ended(function: libc::pid_t, terminate: bool) -> ! {
    let mut status = 1 << 8;
    if raw::wait4(function, &mut status, libc::__WALL).is_err() {
        status = 1 << 8;
    }
    let keep = RESULT_SENT.load(Ordering::Acquire) && !terminate;
    // A subreaper without children has no descendants at all: the scan of
    // /proc, the costly part, is only needed if something was left.
    if !keep && raw::has_children() {
        kill_descendants();
    }
    // Reaping what exited folds its CPU time into this process's rusage,
    // which the supervisor reads.
    reap_exited();
    report_reaped();
    exit_like(status)
}

/// Fills the supervisor's [`UsageReport`], if it asked for one, with the
/// usage of every child reaped so far.
fn report_reaped() {
    let page = REPORT.load(Ordering::Acquire);
    if page.is_null() {
        return;
    }
    let Some(usage) = raw::children_usage() else {
        return;
    };
    let micros = |tv: libc::timeval| {
        (tv.tv_sec.max(0) as u64)
            .wrapping_mul(1_000_000)
            .wrapping_add(tv.tv_usec.max(0) as u64)
    };
    // SAFETY: the shared page mapped in `split`, never unmapped here.
    let page = unsafe { &*page };
    page.user_micros
        .store(micros(usage.ru_utime), Ordering::Relaxed);
    page.system_micros
        .store(micros(usage.ru_stime), Ordering::Relaxed);
    page.maxrss_kib
        .store(usage.ru_maxrss.max(0) as u64, Ordering::Relaxed);
    page.filled.store(REPORT_FILLED, Ordering::Release);
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
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        // No core dump of the guardian: it would dump the function's memory
        // again (the function's process made its own, if allowed). The
        // function's process is gone, so nothing else uses this memory.
        let _ = raw::prctl(libc::PR_SET_DUMPABLE, 0);
        raw::default_action(signal);
        raw::sigprocmask(libc::SIG_UNBLOCK, raw::sigbit(signal));
        let _ = raw::kill(raw::getpid(), signal);
        // Only a signal whose default is to ignore gets here.
        raw::exit_group(128 + signal);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    };
    raw::exit_group(code)
}

/// Reaps every child that has exited, without blocking.
fn reap_exited() {
    let mut status = 0;
    while let Ok(pid) = raw::wait4(-1, &mut status, libc::WNOHANG | libc::__WALL) {
        if pid == 0 {
            return;
        }
    }
}

/// A fixed set of pids, on the guardian's stack.
struct PidSet {
    pids: [libc::pid_t; MAX_DESCENDANTS],
    len: usize,
}

impl PidSet {
    fn contains(&self, pid: libc::pid_t) -> bool {
        self.pids.iter().take(self.len).any(|p| *p == pid)
    }

    /// Adds `pid`; false if the set is full.
    fn insert(&mut self, pid: libc::pid_t) -> bool {
        match self.pids.get_mut(self.len) {
            Some(slot) => {
                *slot = pid;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    fn iter(&self) -> impl Iterator<Item = libc::pid_t> + '_ {
        self.pids.iter().take(self.len).copied()
    }
}

/// Freezes every descendant of this process (SIGSTOP as soon as it is found,
/// so none can fork behind the scan), scans until nothing new turns up, then
/// kills them all and reaps its own children. As a subreaper, the guardian
/// is the parent of every orphan of the call, so the scan misses nothing.
///
/// Pids rather than pidfds: a frozen process cannot exit, and the pid of a
/// child that exited stays reserved until the guardian reaps it.
fn kill_descendants() {
    let me = raw::getpid();
    let deadline = raw::now_micros().wrapping_add(CLEANUP_MICROS);
    loop {
        let mut found = PidSet {
            pids: [0; MAX_DESCENDANTS],
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
        for pid in found.iter() {
            let _ = raw::kill(pid, libc::SIGKILL);
        }
        wait_children_gone(deadline);
        // A full set may have left some behind; so may a deadline.
        if found.len < MAX_DESCENDANTS || raw::now_micros() > deadline {
            return;
        }
    }
}

/// One pass over /proc: adds (and stops) every process whose parent is
/// `root` or already in `found`. Returns how many it added.
fn scan_descendants(root: libc::pid_t, found: &mut PidSet) -> usize {
    let Ok(dir) = raw::open_read(b"/proc\0", true) else {
        return 0;
    };
    let mut added = 0;
    let mut entries = [0u8; 16 << 10];
    'read: while let Ok(n) = raw::getdents64(dir, &mut entries) {
        if n == 0 {
            break;
        }
        for pid in dirent_pids(entries.get(..n).unwrap_or(&[])) {
            if pid == root || found.contains(pid) {
                continue;
            }
            let Some(stat) = read_stat(pid) else {
                continue;
            };
            if stat.ppid == root || found.contains(stat.ppid) {
                let _ = raw::kill(pid, libc::SIGSTOP);
                if !found.insert(pid) {
                    break 'read;
                }
                added += 1;
            }
        }
    }
    raw::close(dir);
    added
}

/// Waits until every process in `found` is stopped or dead, at most
/// [`STOP_SETTLE_MICROS`]. One in uninterruptible sleep may never stop; it
/// is killed regardless.
fn wait_stopped(found: &PidSet) {
    let until = raw::now_micros().wrapping_add(STOP_SETTLE_MICROS);
    while raw::now_micros() < until {
        let running = found.iter().any(|pid| {
            read_stat(pid).is_some_and(|s| !matches!(s.state, b'T' | b't' | b'Z' | b'X'))
        });
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
        match raw::wait4(-1, &mut status, libc::WNOHANG | libc::__WALL) {
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

/// The fields of `/proc/<pid>/stat` the guardian needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    state: u8,
    ppid: libc::pid_t,
}

/// Reads `/proc/<pid>/stat` into a stack buffer.
fn read_stat(pid: libc::pid_t) -> Option<Stat> {
    let mut path = [0u8; 32];
    let len = stat_path(pid, &mut path);
    let fd = raw::open_read(path.get(..len)?, false).ok()?;
    let mut buf = [0u8; 512];
    let n = raw::read(fd, &mut buf);
    raw::close(fd);
    parse_stat(buf.get(..n.ok()?)?)
}

/// Writes `"/proc/<pid>/stat\0"` into `out`; returns its length with the NUL.
fn stat_path(pid: libc::pid_t, out: &mut [u8; 32]) -> usize {
    let mut digits = [0u8; 12];
    let mut value = pid.unsigned_abs();
    let mut count = 0;
    loop {
        if let Some(d) = digits.get_mut(count) {
            *d = b'0' + (value % 10) as u8;
        }
        count += 1;
        value /= 10;
        if value == 0 || count >= digits.len() {
            break;
        }
    }
    let mut at = 0;
    let mut push = |byte: u8| {
        if let Some(slot) = out.get_mut(at) {
            *slot = byte;
            at += 1;
        }
    };
    b"/proc/".iter().for_each(|b| push(*b));
    (0..count)
        .rev()
        .for_each(|i| push(digits.get(i).copied().unwrap_or(b'0')));
    b"/stat\0".iter().for_each(|b| push(*b));
    at
}

/// Parses "pid (comm) state ppid ...". The command name may hold spaces and
/// parentheses, so the fields start after the last ')'.
fn parse_stat(text: &[u8]) -> Option<Stat> {
    let close = text.iter().rposition(|b| *b == b')')?;
    let mut fields = text
        .get(close + 1..)?
        .split(|b| *b == b' ')
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let ppid = parse_decimal(fields.next()?)?;
    Some(Stat { state, ppid })
}

fn parse_decimal(text: &[u8]) -> Option<libc::pid_t> {
    if text.is_empty() || text.len() > 10 {
        return None;
    }
    let mut value: i64 = 0;
    for b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    libc::pid_t::try_from(value).ok()
}

/// The pids among the `linux_dirent64` records in `buf`: the entries whose
/// names are all digits.
fn dirent_pids(buf: &[u8]) -> impl Iterator<Item = libc::pid_t> + '_ {
    // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
    const NAME_AT: usize = 19;
    let mut at = 0usize;
    std::iter::from_fn(move || loop {
        let record = buf.get(at..)?;
        let reclen = usize::from(u16::from_ne_bytes([*record.get(16)?, *record.get(17)?]));
        if reclen < NAME_AT {
            return None;
        }
        at += reclen;
        let name = record.get(NAME_AT..reclen)?;
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        if let Some(pid) = parse_decimal(name) {
            return Some(pid);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        assert_eq!(
            parse_stat(b"42 (a b) c)) S 17 42 42 0 -1"),
            Some(Stat {
                state: b'S',
                ppid: 17
            })
        );
        assert_eq!(
            parse_stat(b"42 (x) Z 1"),
            Some(Stat {
                state: b'Z',
                ppid: 1
            })
        );
        assert_eq!(parse_stat(b"42 (x)"), None);
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b"1 (x) R 99999999999"), None);
    }

    #[test]
    fn builds_stat_paths() {
        let mut out = [0u8; 32];
        let len = stat_path(123_456, &mut out);
        assert_eq!(&out[..len], b"/proc/123456/stat\0");
        let len = stat_path(0, &mut out);
        assert_eq!(&out[..len], b"/proc/0/stat\0");
    }

    #[test]
    fn reads_own_stat_without_allocating_a_path() {
        let me = std::process::id() as libc::pid_t;
        let stat = read_stat(me).unwrap();
        // SAFETY: getppid has no preconditions.
        assert_eq!(stat.ppid, unsafe { libc::getppid() });
        assert!(read_stat(libc::pid_t::MAX - 1).is_none());
    }

    #[test]
    fn lists_proc_like_the_standard_library() {
        let dir = raw::open_read(b"/proc\0", true).unwrap();
        let mut pids = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = raw::getdents64(dir, &mut buf) {
            if n == 0 {
                break;
            }
            pids.extend(dirent_pids(&buf[..n]));
        }
        raw::close(dir);
        assert!(pids.contains(&(std::process::id() as libc::pid_t)));
        assert!(pids.contains(&1));
        // Entries such as "self" and "meminfo" are not pids.
        let names = std::fs::read_dir("/proc").unwrap().count();
        assert!(pids.len() < names, "{} of {names}", pids.len());
    }

    #[test]
    fn a_report_is_empty_until_the_guardian_fills_it() {
        let report = UsageReport::new().unwrap();
        assert_eq!(report.read(), None);
        // The guardian's program maps the same memfd on its side.
        let theirs = map_shared(report.fd()).unwrap();
        let status = std::process::Command::new("true").status().unwrap();
        assert!(status.success());
        REPORT.store(theirs.as_ptr(), Ordering::Release);
        report_reaped();
        REPORT.store(std::ptr::null_mut(), Ordering::Release);
        let reaped = report.read().expect("filled");
        // At least the `true` just reaped; the figures are this process's
        // RUSAGE_CHILDREN.
        assert!(reaped.peak_memory >= 1024, "{reaped:?}");
    }

    #[test]
    fn raw_calls_report_errors_as_values() {
        assert_eq!(raw::kill(i32::MAX - 1, 0), Err(libc::ESRCH));
        assert_eq!(raw::pidfd_open(-7), Err(libc::EINVAL));
        assert_eq!(raw::getpid(), std::process::id() as libc::pid_t);
    }
}
