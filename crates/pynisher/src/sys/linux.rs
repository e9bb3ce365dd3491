//! Linux system calls used by the supervisor, the tree walker and the child.

use super::procfs::{NumberedEntries, ProcStat};
use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

pub type Pid = libc::pid_t;

/// Runs `f` until it does not fail with `EINTR`.
pub fn retry<T: PartialEq + From<i8>>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        let ret = f();
        if ret != T::from(-1) {
            return Ok(ret);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// `pidfd_open(2)`: a file descriptor that refers to `pid` and stays valid
/// even if the pid is reused. It polls readable once the process has exited.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = retry(|| unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`: signals the process behind `pidfd`, immune to pid
/// reuse. A process that already exited is not an error.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, a null siginfo and zero flags.
    let ret = retry(|| unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    });
    match ret {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(err) => Err(err),
    }
}

/// `kill(2)`; a process or group that no longer exists is not an error.
pub fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    match retry(|| unsafe { libc::kill(pid, signal) }) {
        Ok(_) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        Err(err) => Err(err),
    }
}

/// `poll(2)` over `fds`; `None` waits forever. Returns how many are ready.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    // A signal (a profiler's timer, say) interrupts the wait; it goes on for
    // what is left of the timeout, so that 0 always means the time is up.
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let millis = match deadline {
            None => -1,
            // Round up so that a deadline 0.3 ms away does not spin.
            Some(at) => at
                .saturating_duration_since(std::time::Instant::now())
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32,
        };
        // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ret >= 0 {
            return Ok(ret as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Ends `pid`, an unreaped child of this process that cannot be supervised
/// (its pidfd could not be opened), with its process group (a call's
/// process leads its own), and reaps it, so that it neither runs on
/// unwatched nor stays a zombie. A child that is already gone and reaped by
/// someone else (its pid may be reused by now) is left alone.
pub fn stop_unsupervised(pid: Pid) {
    // SAFETY: waitid with WNOWAIT only looks; `info` is valid for writes.
    let exists = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    };
    if !exists {
        return;
    }
    let _ = kill(-pid, libc::SIGKILL);
    let _ = kill(pid, libc::SIGKILL);
    let _ = wait4(pid, true);
}

/// A pidfd of `pid`, an unreaped child this process just started; where
/// none can be opened (a seccomp profile without `pidfd_open`), the child is
/// stopped and reaped ([`stop_unsupervised`]): it must never run on
/// unsupervised, nor stay a zombie.
///
/// # Errors
/// `pidfd_open` failed.
pub fn pidfd_of_new_child(pid: Pid) -> io::Result<OwnedFd> {
    pidfd_open(pid).inspect_err(|_| stop_unsupervised(pid))
}

/// `wait4(2)` on one child. With `block == false`, `Ok(None)` means it is
/// still running.
pub fn wait4(pid: Pid, block: bool) -> io::Result<Option<(libc::c_int, libc::rusage)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    // SAFETY: both out-pointers are valid for writes.
    let ret = retry(|| unsafe { libc::wait4(pid, &mut status, flags, &mut usage) })?;
    if ret == 0 {
        return Ok(None);
    }
    Ok(Some((status, usage)))
}

/// Reaps every child that has already exited, without blocking.
pub fn reap_exited_children() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is valid for writes; WNOHANG never blocks.
        let ret = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if ret <= 0 {
            if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
    }
}

/// A pipe whose both ends are close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    retry(|| unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are new and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `fd`, moved to a number above the standard descriptors if it landed on
/// 0, 1 or 2 (which happens when the caller has closed them): a child's
/// `print` must never write into a descriptor of pynisher's.
pub fn off_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd or -1.
    let moved = retry(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a fresh fd from the kernel; `fd` is closed when dropped here.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL on a valid fd.
    let flags = retry(|| unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    let flags = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: F_SETFL with flags derived from F_GETFL.
    retry(|| unsafe { libc::fcntl(raw, libc::F_SETFL, flags) })?;
    Ok(())
}

/// An anonymous, close-on-exec memory file (`memfd_create(2)`).
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated.
    let fd = retry(|| unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: a fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `read(2)` once, retrying `EINTR`. `Ok(0)` is end of file.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = retry(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// Backs the whole pages of `buf` with memory in one call
/// (`MADV_POPULATE_WRITE`), before a copy of gigabytes into fresh memory
/// would fault them in one by one: about 20% less time for the copy here.
/// A kernel older than 5.14 refuses it, and the copy faults as before.
///
/// Huge pages (`MADV_HUGEPAGE` first) back a GiB in 0.1 s instead of 0.35 s
/// when the memory was recently in use, but on a VM whose free memory goes
/// back to the host (free page reporting hands over whole free 2 MiB blocks,
/// exactly what a huge page takes) the first touch of each one costs the
/// host's fault: a 1 GiB result took 1.6-4.2 s with them and 1.3-1.4 s
/// without. So they are not asked for.
pub fn populate_for_write(buf: &mut [u8]) {
    let page = page_size() as usize;
    let start = (buf.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (buf.as_mut_ptr() as usize + buf.len()) / page * page;
    if end > start {
        // SAFETY: the range lies inside `buf`, memory this process owns and
        // may write; populating it changes no byte of it.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }
}

/// Copies `dest.len()` bytes from address `remote` of process `pid` into
/// `dest` (`process_vm_readv(2)`): one copy, straight from the other
/// process's pages. It needs the right to trace that process (the same
/// user, and Yama's `ptrace_scope` allows a parent), and a seccomp profile
/// may forbid the system call.
///
/// # Errors
/// The system call failed (`EPERM`, `ESRCH`, `EFAULT`, `ENOSYS`), or the
/// range ended early.
pub fn read_process_memory(pid: Pid, remote: u64, dest: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < dest.len() {
        let rest = &mut dest[done..];
        let local = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let from = libc::iovec {
            iov_base: (remote as usize + done) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` describes `rest`, memory this process may write;
        // the remote range is only read, by the kernel, which checks it.
        let n = retry(|| unsafe { libc::process_vm_readv(pid, &local, 1, &from, 1, 0) })?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n as usize;
    }
    Ok(())
}

/// `pread(2)` until `buf` is full or end of file. Returns the bytes read.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of its length.
        let n = retry(|| unsafe {
            libc::pread(
                fd.as_raw_fd(),
                rest.as_mut_ptr().cast(),
                rest.len(),
                (offset + done as u64) as libc::off_t,
            )
        })?;
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

/// Writes all of `buf`, retrying `EINTR` and short writes. Async-signal-safe.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = retry(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// `pwrite(2)` all of `buf` at `offset`. Async-signal-safe.
pub fn pwrite_all(fd: RawFd, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = retry(|| unsafe {
            libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as libc::off_t)
        })?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
        offset += n as u64;
    }
    Ok(())
}

/// Frees the pages of the file behind `fd` in `offset..offset + len`
/// (`fallocate` with `FALLOC_FL_PUNCH_HOLE`); the file keeps its size and
/// reads zeros there.
pub fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate only acts on the file; no memory is passed.
    retry(|| unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })?;
    Ok(())
}

/// Size of the file behind `fd`.
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    retry(|| unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_size as u64)
}

/// Clock ticks per second, the unit of CPU times in `/proc/<pid>/stat`.
pub fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *TICKS.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    })
}

/// The memory page size in bytes.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

/// Converts a `timeval` to a [`Duration`].
pub fn to_timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

pub fn timeval(tv: libc::timeval) -> Duration {
    Duration::new(tv.tv_sec.max(0) as u64, (tv.tv_usec.max(0) as u32) * 1000)
}

/// CPU time of every thread of `pid` so far, to the nanosecond, from the
/// process's CPU-time clock (`clock_getcpuclockid(3)`); `None` if the process
/// is gone. `/proc/<pid>/stat` counts in clock ticks (10 ms), too coarse for
/// a CPU limit of a few milliseconds.
pub fn process_cpu_time(pid: Pid) -> Option<Duration> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is valid for writes.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    // SAFETY: timespec is plain data; all-zero is valid.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `now` is valid for writes.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

/// Converts clock ticks to a [`Duration`].
pub fn ticks(n: u64) -> Duration {
    let per_second = clock_ticks();
    Duration::from_secs(n / per_second)
        + Duration::from_nanos((n % per_second) * 1_000_000_000 / per_second)
}

/// The children of `pid`, from the kernel's list of each of its threads
/// (`/proc/<pid>/task/<tid>/children`): a few reads per process, where
/// [`all_processes`] reads every process on the machine. `None` if the
/// process is gone or the kernel keeps no such lists (built without
/// `CONFIG_PROC_CHILDREN`). A child that is being reparented while the
/// lists are read may be missing from them.
pub fn children_of(pid: Pid) -> Option<Vec<Pid>> {
    static KEPT: OnceLock<bool> = OnceLock::new();
    if !*KEPT.get_or_init(|| fs::metadata("/proc/thread-self/children").is_ok()) {
        return None;
    }
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        // A thread that exited since the listing has handed its children to
        // another thread, whose list has them.
        if let Ok(list) = fs::read(task.path().join("children")) {
            children.extend(
                list.split(u8::is_ascii_whitespace)
                    .filter_map(super::procfs::parse_decimal),
            );
        }
    }
    Some(children)
}

/// Every process visible in `/proc`.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(pids) = NumberedEntries::<{ 16 << 10 }>::open(b"/proc\0") else {
        return Vec::new();
    };
    pids.filter_map(ProcStat::read).collect()
}

/// The memory one process of a call is charged for, in bytes: its private
/// resident pages plus swap, plus its proportional share of the shared
/// memory pages it maps together with other processes (see
/// `shared_memory_share`). Pages still shared copy-on-write with the
/// caller do not count.
///
/// Cheap in the usual case: one read of `/proc/<pid>/smaps_rollup`.
/// `/proc/<pid>/status` is read only when the process has shared memory
/// resident, and the full `/proc/<pid>/smaps` only when some of it is
/// mapped by another process too.
pub fn charged_memory(pid: Pid) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut private_kib = 0;
    let mut shmem_pss_kib = 0;
    for line in rollup.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        match key {
            "Private_Clean:" | "Private_Dirty:" | "Swap:" => {
                private_kib += value.parse::<u64>().ok()?
            }
            "Pss_Shmem:" => shmem_pss_kib = value.parse::<u64>().ok()?,
            _ => {}
        }
    }
    // A process whose shared-memory pages are all its own has a proportional
    // share equal to what it maps, and those pages are private: counted.
    let shared_kib = if shmem_pss_kib > 0
        && status_kib(pid, "RssShmem:").is_some_and(|rss| rss > shmem_pss_kib)
    {
        shared_memory_share(pid).unwrap_or(0)
    } else {
        0
    };
    Some((private_kib + shared_kib) * 1024)
}

/// One field of `/proc/<pid>/status` given in kB.
fn status_kib(pid: Pid, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The proportional share, in kB, of the pages of shared memory mappings
/// (`MAP_SHARED` anonymous memory, memfd, `/dev/shm`, System V) that the
/// process maps together with other processes: a page mapped by k processes
/// counts 1/k to each, so a page shared only by the call's processes counts
/// once in the tree's total. Pages that are the process's own are left out:
/// they are among its private pages already. Private file mappings are left
/// out too, so the caller's memory that a forked child reads (a returned
/// array of an earlier call, mapped copy-on-write) is not charged.
fn shared_memory_share(pid: Pid) -> Option<u64> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut total = 0;
    let mut counted = false;
    let (mut pss, mut private) = (0u64, 0u64);
    for line in smaps.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        if !first.ends_with(':') {
            // A mapping's header: "start-end perms offset dev inode path".
            if counted {
                total += pss.saturating_sub(private);
            }
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            counted = perms.as_bytes().get(3) == Some(&b's') && is_shared_memory(path);
            (pss, private) = (0, 0);
            continue;
        }
        if counted {
            let value = words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            match first {
                "Pss:" => pss = value,
                "Private_Clean:" | "Private_Dirty:" => private += value,
                _ => {}
            }
        }
    }
    if counted {
        total += pss.saturating_sub(private);
    }
    Some(total)
}

/// Whether a mapping's path names shared memory rather than a file on disk,
/// whose shared pages are the page cache's.
fn is_shared_memory(path: &str) -> bool {
    ["/dev/zero", "/memfd:", "/SYSV", "/dev/shm/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

/// The conventional name of a signal, such as "SIGSEGV".
pub fn signal_name(signal: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGQUIT, "SIGQUIT"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGTRAP, "SIGTRAP"),
        (libc::SIGABRT, "SIGABRT"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGKILL, "SIGKILL"),
        (libc::SIGUSR1, "SIGUSR1"),
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGUSR2, "SIGUSR2"),
        (libc::SIGPIPE, "SIGPIPE"),
        (libc::SIGALRM, "SIGALRM"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGSTKFLT, "SIGSTKFLT"),
        (libc::SIGCHLD, "SIGCHLD"),
        (libc::SIGCONT, "SIGCONT"),
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTTIN, "SIGTTIN"),
        (libc::SIGTTOU, "SIGTTOU"),
        (libc::SIGURG, "SIGURG"),
        (libc::SIGXCPU, "SIGXCPU"),
        (libc::SIGXFSZ, "SIGXFSZ"),
        (libc::SIGVTALRM, "SIGVTALRM"),
        (libc::SIGPROF, "SIGPROF"),
        (libc::SIGWINCH, "SIGWINCH"),
        (libc::SIGIO, "SIGIO"),
        (libc::SIGPWR, "SIGPWR"),
        (libc::SIGSYS, "SIGSYS"),
    ];
    match NAMES.iter().find(|(n, _)| *n == signal) {
        Some((_, name)) => (*name).to_owned(),
        None if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) => {
            format!("SIGRTMIN+{}", signal - libc::SIGRTMIN())
        }
        None => format!("signal {signal}"),
    }
}

/// A connected pair of close-on-exec `AF_UNIX` `SOCK_SEQPACKET` sockets:
/// reliable, ordered, with message boundaries, and able to carry descriptors.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    retry(|| unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair succeeded; both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The most descriptors one message carries.
pub const MAX_PASSED_FDS: usize = 8;

/// Sends one message with `data` and the descriptors `fds` (`SCM_RIGHTS`).
pub fn send_with_fds(socket: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(
        fds.len() <= MAX_PASSED_FDS,
        "too many descriptors for one message"
    );
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for the control message, aligned as cmsghdr requires.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let fd_bytes = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is a pure size computation.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: msg_control points at `control`, which is large enough for
        // one cmsghdr with MAX_PASSED_FDS descriptors; CMSG_FIRSTHDR and
        // CMSG_DATA stay inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: `msg` describes valid buffers.
    let sent = retry(|| unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })?;
    if sent as usize != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short message"));
    }
    Ok(())
}

/// Receives one message into `buf`, with any descriptors it carries (made
/// close-on-exec). Returns the data length (0 at end of stream) and the
/// descriptors.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer set below outlives recvmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` describes valid, writable buffers.
    let n =
        retry(|| unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `control` with msg_controllen bytes of
    // well-formed control messages; the CMSG macros walk inside it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors were truncated",
        ));
    }
    Ok((n as usize, fds))
}

/// Blocks every signal in the calling thread until the guard is dropped,
/// which restores the previous mask. A thread spawned (or a process cloned)
/// meanwhile starts with every signal blocked.
pub struct SignalsBlocked {
    previous: libc::sigset_t,
}

impl SignalsBlocked {
    /// Blocks every signal in the calling thread.
    pub fn new() -> SignalsBlocked {
        // SAFETY: sigset_t is plain data, filled by sigfillset;
        // pthread_sigmask only reads `all` and writes `previous`.
        let previous = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            previous
        };
        SignalsBlocked { previous }
    }
}

impl Default for SignalsBlocked {
    fn default() -> Self {
        SignalsBlocked::new()
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut()) };
    }
}

/// Makes the calling process a child subreaper (`PR_SET_CHILD_SUBREAPER`):
/// orphaned descendants are reparented to it instead of to init, so they stay
/// findable. Async-signal-safe.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    retry(|| unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn passes_descriptors_over_a_socket() {
        let (a, b) = seqpacket_pair().unwrap();
        let (read, write) = pipe().unwrap();
        send_with_fds(a.as_fd(), b"hello", &[write.as_raw_fd()]).unwrap();
        drop(write);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        write_all(fds[0].as_raw_fd(), b"through").unwrap();
        drop(fds);
        let mut out = [0u8; 16];
        let got = read_fd(read.as_fd(), &mut out);
        assert_eq!(&out[..got], b"through");
        drop(a);
        assert_eq!(recv_with_fds(b.as_fd(), &mut buf).unwrap().0, 0);
    }

    fn read_fd(fd: BorrowedFd<'_>, out: &mut [u8]) -> usize {
        read(fd, out).unwrap()
    }

    #[test]
    fn poll_waits_out_its_timeout_through_signals() {
        extern "C" fn on_alarm(_: libc::c_int) {}
        // SAFETY: a handler that does nothing, then an interval timer of
        // 1 ms; both are undone below.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_alarm as *const () as usize;
            libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
            let tick = libc::timeval {
                tv_sec: 0,
                tv_usec: 1000,
            };
            let timer = libc::itimerval {
                it_interval: tick,
                it_value: tick,
            };
            libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut());
        }
        let (read_end, _write_end) = pipe().unwrap();
        let mut fds = [libc::pollfd {
            fd: read_end.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let started = std::time::Instant::now();
        let ready = poll(&mut fds, Some(Duration::from_millis(100)));
        let waited = started.elapsed();
        // SAFETY: stops the timer; SIGALRM back to its default.
        unsafe {
            let off: libc::itimerval = std::mem::zeroed();
            libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut());
            libc::signal(libc::SIGALRM, libc::SIG_IGN);
        }
        assert_eq!(ready.unwrap(), 0);
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
    }

    #[test]
    fn populating_backs_fresh_memory_and_keeps_what_is_written() {
        const LEN: usize = 8 << 20;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: the mapping is `LEN` bytes, readable and writable, and
        // nothing else refers to it.
        let buf = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), LEN) };
        let page = page_size() as usize;
        buf[page + 3] = 7;
        let resident = || {
            let mut pages = vec![0u8; LEN / page];
            // SAFETY: `pages` has one byte for each page of the mapping.
            let rc = unsafe { libc::mincore(base, LEN, pages.as_mut_ptr()) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            pages.iter().filter(|p| **p & 1 == 1).count()
        };
        assert!(resident() < LEN / page / 2);
        // An unaligned slice: only its whole pages are populated.
        populate_for_write(&mut buf[1..LEN - 1]);
        assert!(resident() >= LEN / page - 2, "{}", resident());
        assert_eq!(buf[page + 3], 7);
        assert_eq!(buf.iter().map(|b| *b as usize).sum::<usize>(), 7);
        // SAFETY: unmaps the mapping made above; `buf` is not used again.
        unsafe { libc::munmap(base, LEN) };
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGXCPU), "SIGXCPU");
        assert_eq!(signal_name(200), "signal 200");
    }
}
