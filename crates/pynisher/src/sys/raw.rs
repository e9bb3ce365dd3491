//! System calls that never touch `errno` and need nothing but `core`.
//!
//! Two places use them. The guardian program (`crates/pynisher/guardian`,
//! see [`crate::guardian`]) is a `no_std` program without a C library, so it
//! has nothing else. And between the split and the guardian's exec, both
//! halves of a call share their memory, thread-local storage included: a libc
//! wrapper that failed there would write `errno` where the function's process
//! keeps its own. So these make the system call directly and return `-errno`
//! as a value. Nothing here allocates, locks or panics.
//!
//! This file is compiled twice, as `pynisher::sys::raw` and into the guardian
//! program, so it depends on nothing but `core`: the constants below are the
//! kernel's x86_64 ABI (a test checks them against the `libc` crate). Only
//! x86_64 is built and tested.

use core::arch::asm;

#[cfg(not(target_arch = "x86_64"))]
compile_error!("pynisher's guardian is built and tested on x86_64 Linux only");

#[allow(non_camel_case_types)]
pub type pid_t = i32;

/// System call numbers (x86_64).
pub mod nr {
    pub const READ: usize = 0;
    pub const CLOSE: usize = 3;
    pub const FCNTL: usize = 72;
    pub const MMAP: usize = 9;
    pub const MPROTECT: usize = 10;
    pub const MUNMAP: usize = 11;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const EXIT: usize = 60;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const GETRUSAGE: usize = 98;
    pub const GETPPID: usize = 110;
    pub const PRCTL: usize = 157;
    pub const FUTEX: usize = 202;
    pub const GETDENTS64: usize = 217;
    pub const SET_TID_ADDRESS: usize = 218;
    pub const CLOCK_GETTIME: usize = 228;
    pub const CLOCK_NANOSLEEP: usize = 230;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const PPOLL: usize = 271;
    pub const PRLIMIT64: usize = 302;
    pub const EXECVEAT: usize = 322;
    pub const RSEQ: usize = 334;
    pub const PIDFD_SEND_SIGNAL: usize = 424;
    pub const PIDFD_OPEN: usize = 434;
    pub const CLOSE_RANGE: usize = 436;
    pub const WAITID: usize = 247;
}

pub const EINTR: i32 = 4;
pub const ESRCH: i32 = 3;
pub const ECHILD: i32 = 10;
pub const EAGAIN: i32 = 11;
pub const EINVAL: i32 = 22;
pub const ENOSYS: i32 = 38;

pub const SIGKILL: i32 = 9;
pub const SIGCHLD: i32 = 17;
pub const SIGSTOP: i32 = 19;
pub const SIG_SETMASK: i32 = 2;
pub const SIG_UNBLOCK: i32 = 1;

pub const PR_SET_PDEATHSIG: i32 = 1;
pub const PR_SET_DUMPABLE: i32 = 4;
pub const PR_SET_NAME: i32 = 15;

pub const WNOHANG: i32 = 1;
pub const WSTOPPED: i32 = 2;
pub const WEXITED: i32 = 4;
pub const WCONTINUED: i32 = 8;
pub const WNOWAIT: i32 = 0x0100_0000;
pub const WALL: i32 = 0x4000_0000;
pub const P_ALL: i32 = 0;

pub const O_RDONLY: i32 = 0;
pub const O_DIRECTORY: i32 = 0o200000;
pub const O_CLOEXEC: i32 = 0o2000000;
pub const AT_FDCWD: i32 = -100;
pub const AT_EMPTY_PATH: i32 = 0x1000;

pub const PROT_NONE: usize = 0;
pub const PROT_READ: usize = 1;
pub const PROT_WRITE: usize = 2;
pub const MAP_SHARED: usize = 1;
pub const MAP_PRIVATE: usize = 2;
pub const MAP_ANONYMOUS: usize = 0x20;
pub const MAP_NORESERVE: usize = 0x4000;

pub const CLONE_VM: usize = 0x100;
pub const CLONE_CHILD_SETTID: usize = 0x0100_0000;

pub const FUTEX_WAIT: usize = 0;
pub const FUTEX_WAKE: usize = 1;

pub const RUSAGE_SELF: i32 = 0;
pub const RUSAGE_CHILDREN: i32 = -1;
pub const RLIMIT_NOFILE: i32 = 7;
pub const CLOCK_MONOTONIC: i32 = 1;
pub const POLLIN: i16 = 1;

/// The signature glibc registers its rseq areas with (x86_64).
pub const RSEQ_SIG: u32 = 0x5305_3053;
/// The size of the original rseq ABI, the least a registration may give.
pub const RSEQ_MIN_SIZE: u32 = 32;
/// What glibc stores in `cpu_id` when its thread has no rseq registration:
/// `sched_getcpu` then asks the kernel instead.
pub const RSEQ_CPU_ID_REGISTRATION_FAILED: i32 = -2;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PollFd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

impl Timeval {
    pub fn micros(self) -> u64 {
        (self.tv_sec.max(0) as u64)
            .wrapping_mul(1_000_000)
            .wrapping_add(self.tv_usec.max(0) as u64)
    }
}

/// The kernel's `struct rusage` on x86_64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Rusage {
    pub utime: Timeval,
    pub stime: Timeval,
    pub maxrss: i64,
    pub rest: [i64; 13],
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// Makes system call `n` with up to six arguments; returns the kernel's
/// result, a negative errno on failure.
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[inline(always)]
pub unsafe fn syscall(n: usize, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes valid arguments; `syscall` clobbers only rcx
    // and r11 besides rax.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The entry point of the guardian's half of a split:
/// `(parent, terminate_descendants, child)`.
pub type GuardianEntry = extern "C" fn(pid_t, usize, pid_t) -> !;

/// Clones the calling process with `CLONE_VM`: the child shares this memory
/// and goes on from here on the current stack, and `clone_vm_split` returns 0
/// in it. The parent never returns: it moves to `stack_top` at once, before
/// it touches the shared stack, and runs `entry(parent, terminate, child)`.
/// On failure it returns the negative errno in the calling process. If
/// `child_tid` is not null the kernel writes the child's thread id there, in
/// the child, before it runs (`CLONE_CHILD_SETTID`).
///
/// # Safety
/// `stack_top` must be the 16-byte aligned top of a stack that nothing else
/// uses, large enough for `entry`; every signal must be blocked (a handler
/// would run on the shared stack); `entry` must not return, allocate, or use
/// thread-local storage (it shares it with the child).
pub unsafe fn clone_vm_split(
    stack_top: *mut u8,
    entry: GuardianEntry,
    parent: pid_t,
    terminate: usize,
    child_tid: *mut pid_t,
) -> isize {
    let ret: isize;
    let mut flags = CLONE_VM | SIGCHLD as usize;
    if !child_tid.is_null() {
        flags |= CLONE_CHILD_SETTID;
    }
    // SAFETY: the caller upholds the contract above. clone(flags, 0, ...)
    // keeps the stack pointer in the child; the parent branch never touches
    // the old stack: it loads the new one and calls `entry`, which does not
    // return. rcx and r11 are clobbered by `syscall` and may hold no input.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jle 2f",
            "mov rsp, {stack}",
            "mov rdi, {parent}",
            "mov rsi, {terminate}",
            "mov rdx, rax",
            "call {entry}",
            "ud2",
            "2:",
            stack = in(reg) stack_top,
            parent = in(reg) parent as isize,
            terminate = in(reg) terminate,
            entry = in(reg) entry,
            inlateout("rax") nr::CLONE as isize => ret,
            in("rdi") flags,
            in("rsi") 0usize,
            in("rdx") 0usize,
            in("r10") child_tid,
            in("r8") 0usize,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// The calling thread's thread pointer (`%fs` base), where glibc's TLS and
/// its rseq area are found.
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86_64 Linux the first word of the TCB points to itself
    // (the psABI's TLS layout); reading it has no side effects.
    unsafe { asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags)) };
    tp
}

/// A negative errno as a Result.
#[inline(always)]
pub fn check(ret: isize) -> Result<usize, i32> {
    if ret < 0 {
        Err(ret.wrapping_neg() as i32)
    } else {
        Ok(ret as usize)
    }
}

/// Runs a system call until it does not fail with EINTR.
#[inline(always)]
fn retrying(mut call: impl FnMut() -> isize) -> Result<usize, i32> {
    loop {
        match check(call()) {
            Err(EINTR) => continue,
            other => return other,
        }
    }
}

pub fn getpid() -> pid_t {
    // SAFETY: no arguments.
    unsafe { syscall(nr::GETPID, [0; 6]) as pid_t }
}

pub fn getppid() -> pid_t {
    // SAFETY: no arguments.
    unsafe { syscall(nr::GETPPID, [0; 6]) as pid_t }
}

pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes an integer and never returns.
    unsafe { syscall(nr::EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]) };
    // The kernel does not return from exit_group.
    loop {
        core::hint::spin_loop();
    }
}

pub fn kill(pid: pid_t, signal: i32) -> Result<usize, i32> {
    // SAFETY: integer arguments only.
    check(unsafe { syscall(nr::KILL, [pid as usize, signal as usize, 0, 0, 0, 0]) })
}

/// Sends `signal` to the process behind `pidfd`.
pub fn pidfd_send_signal(pidfd: i32, signal: i32) -> Result<usize, i32> {
    // SAFETY: integer arguments and a null siginfo.
    check(unsafe {
        syscall(
            nr::PIDFD_SEND_SIGNAL,
            [pidfd as usize, signal as usize, 0, 0, 0, 0],
        )
    })
}

pub fn prctl(option: i32, arg: usize) -> Result<usize, i32> {
    // SAFETY: integer arguments, or (PR_SET_NAME) a NUL-terminated string.
    check(unsafe { syscall(nr::PRCTL, [option as usize, arg, 0, 0, 0, 0]) })
}

pub fn pidfd_open(pid: pid_t) -> Result<i32, i32> {
    // SAFETY: integer arguments only.
    check(unsafe { syscall(nr::PIDFD_OPEN, [pid as usize, 0, 0, 0, 0, 0]) }).map(|fd| fd as i32)
}

pub fn close(fd: i32) {
    // SAFETY: integer argument only.
    unsafe { syscall(nr::CLOSE, [fd as usize, 0, 0, 0, 0, 0]) };
}

pub fn close_range(first: u32, last: u32) -> Result<usize, i32> {
    // SAFETY: integer arguments only.
    check(unsafe { syscall(nr::CLOSE_RANGE, [first as usize, last as usize, 0, 0, 0, 0]) })
}

/// Clears `FD_CLOEXEC` on `fd`.
pub fn clear_cloexec(fd: i32) {
    const F_SETFD: usize = 2;
    // SAFETY: integer arguments only.
    unsafe { syscall(nr::FCNTL, [fd as usize, F_SETFD, 0, 0, 0, 0]) };
}

/// Waits, without a timeout, until one of `fds` is ready. Retries EINTR.
pub fn poll_forever(fds: &mut [PollFd]) -> Result<usize, i32> {
    // SAFETY: `fds` is valid for reads and writes; a null timeout waits
    // forever and a null mask keeps the current one.
    retrying(|| unsafe {
        syscall(
            nr::PPOLL,
            [fds.as_mut_ptr() as usize, fds.len(), 0, 0, 0, 0],
        )
    })
}

/// Waits at most `millis` ms until one of `fds` is ready; returns how many
/// are (0 on timeout, or when interrupted).
pub fn poll_timeout(fds: &mut [PollFd], millis: u64) -> Result<usize, i32> {
    let time = Timespec {
        tv_sec: (millis / 1000) as i64,
        tv_nsec: ((millis % 1000) * 1_000_000) as i64,
    };
    // SAFETY: `fds` is valid for reads and writes, `time` for reads; a null
    // mask keeps the current one.
    match check(unsafe {
        syscall(
            nr::PPOLL,
            [
                fds.as_mut_ptr() as usize,
                fds.len(),
                &time as *const Timespec as usize,
                0,
                0,
                0,
            ],
        )
    }) {
        Err(EINTR) => Ok(0),
        other => other,
    }
}

/// `wait4` on `pid` (-1 for any child); returns the pid reaped (0 if none
/// with WNOHANG), fills `status` and, if given, `usage`.
pub fn wait4(
    pid: pid_t,
    status: &mut i32,
    options: i32,
    usage: Option<&mut Rusage>,
) -> Result<usize, i32> {
    let usage = usage.map_or(0, |u| u as *mut Rusage as usize);
    // SAFETY: `status` and `usage` (or null) are valid for writes.
    retrying(|| unsafe {
        syscall(
            nr::WAIT4,
            [
                pid as usize,
                status as *mut i32 as usize,
                options as usize,
                usage,
                0,
                0,
            ],
        )
    })
}

/// Whether the calling process has any child, live or zombie (none is
/// reaped).
pub fn has_children() -> bool {
    let mut info = [0u64; 16]; // a siginfo_t is 128 bytes
    let options = WEXITED | WSTOPPED | WCONTINUED | WNOHANG | WNOWAIT | WALL;
    // SAFETY: `info` is valid for writes of a siginfo_t; a null rusage is
    // allowed.
    let ret = unsafe {
        syscall(
            nr::WAITID,
            [
                P_ALL as usize,
                0,
                info.as_mut_ptr() as usize,
                options as usize,
                0,
                0,
            ],
        )
    };
    ret != -(ECHILD as isize)
}

/// `getrusage(who)`.
pub fn getrusage(who: i32) -> Option<Rusage> {
    let mut usage = Rusage::default();
    // SAFETY: `usage` is valid for writes of a struct rusage.
    let ret = unsafe {
        syscall(
            nr::GETRUSAGE,
            [who as usize, &mut usage as *mut Rusage as usize, 0, 0, 0, 0],
        )
    };
    (ret == 0).then_some(usage)
}

/// Opens the NUL-terminated `path` read-only.
pub fn open_read(path: &[u8], directory: bool) -> Result<i32, i32> {
    if path.last() != Some(&0) {
        return Err(EINVAL);
    }
    let mut flags = O_RDONLY | O_CLOEXEC;
    if directory {
        flags |= O_DIRECTORY;
    }
    // SAFETY: `path` is NUL-terminated (checked above).
    check(unsafe {
        syscall(
            nr::OPENAT,
            [
                AT_FDCWD as usize,
                path.as_ptr() as usize,
                flags as usize,
                0,
                0,
                0,
            ],
        )
    })
    .map(|fd| fd as i32)
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    retrying(|| unsafe {
        syscall(
            nr::READ,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

pub fn getdents64(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    check(unsafe {
        syscall(
            nr::GETDENTS64,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// Maps `len` bytes: of `fd` shared, or (`fd` < 0) anonymous and private.
///
/// # Safety
/// As `mmap(2)`: the caller owns the returned mapping.
pub unsafe fn mmap(len: usize, prot: usize, flags: usize, fd: i32) -> Result<usize, i32> {
    // SAFETY: no address hint; the kernel checks the rest.
    check(unsafe { syscall(nr::MMAP, [0, len, prot, flags, fd as usize, 0]) })
}

/// # Safety
/// Nothing may use the mapping afterwards.
pub unsafe fn munmap(addr: usize, len: usize) {
    // SAFETY: the caller's contract.
    unsafe { syscall(nr::MUNMAP, [addr, len, 0, 0, 0, 0]) };
}

/// # Safety
/// As `mprotect(2)`: nothing may use the pages against the new protection.
pub unsafe fn mprotect(addr: usize, len: usize, prot: usize) -> Result<usize, i32> {
    // SAFETY: the caller's contract.
    check(unsafe { syscall(nr::MPROTECT, [addr, len, prot, 0, 0, 0]) })
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: runs the program open at
/// `fd`. Returns only on failure.
///
/// # Safety
/// `argv` and `envp` must be null-terminated arrays of NUL-terminated
/// strings.
pub unsafe fn execveat(fd: i32, argv: *const *const u8, envp: *const *const u8) -> i32 {
    // SAFETY: the caller's contract; the path is an empty C string.
    let ret = unsafe {
        syscall(
            nr::EXECVEAT,
            [
                fd as usize,
                c"".as_ptr() as usize,
                argv as usize,
                envp as usize,
                AT_EMPTY_PATH as usize,
                0,
            ],
        )
    };
    ret.wrapping_neg() as i32
}

/// Asks the kernel to write 0 to `word` and wake its futex waiters when the
/// calling thread exits or execs while it shares its memory.
pub fn set_tid_address(word: *const u32) {
    // SAFETY: the kernel only writes there on exit or exec; the callers keep
    // `word` valid for as long as this thread runs in this memory.
    unsafe { syscall(nr::SET_TID_ADDRESS, [word as usize, 0, 0, 0, 0, 0]) };
}

/// Sleeps while `*word == expected` (or until a signal or a spurious wake).
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: `word` is a valid, aligned u32; a null timeout waits forever.
    unsafe {
        syscall(
            nr::FUTEX,
            [
                word.as_ptr() as usize,
                FUTEX_WAIT,
                expected as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Wakes every waiter on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32.
    unsafe {
        syscall(
            nr::FUTEX,
            [
                word.as_ptr() as usize,
                FUTEX_WAKE,
                i32::MAX as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Registers `area` as the calling thread's rseq area.
///
/// # Safety
/// `area` must be a valid rseq area of `len` bytes that lives as long as the
/// thread, aligned to 32 bytes.
pub unsafe fn rseq_register(area: usize, len: u32) -> Result<usize, i32> {
    // SAFETY: the caller's contract.
    check(unsafe { syscall(nr::RSEQ, [area, len as usize, 0, RSEQ_SIG as usize, 0, 0]) })
}

/// Sleeps for `micros` microseconds.
pub fn sleep_micros(micros: u64) {
    let time = Timespec {
        tv_sec: (micros / 1_000_000) as i64,
        tv_nsec: ((micros % 1_000_000) * 1000) as i64,
    };
    // SAFETY: `time` is valid for reads; a null remainder is allowed.
    unsafe {
        syscall(
            nr::CLOCK_NANOSLEEP,
            [
                CLOCK_MONOTONIC as usize,
                0,
                &time as *const Timespec as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Microseconds on the monotonic clock.
pub fn now_micros() -> u64 {
    let mut time = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is valid for writes.
    unsafe {
        syscall(
            nr::CLOCK_GETTIME,
            [
                CLOCK_MONOTONIC as usize,
                &mut time as *mut Timespec as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    (time.tv_sec as u64)
        .wrapping_mul(1_000_000)
        .wrapping_add(time.tv_nsec as u64 / 1000)
}

/// Raises the soft limit on open descriptors to the hard limit.
pub fn raise_fd_limit() {
    let mut limit = [0u64; 2];
    // SAFETY: `limit` is a valid struct rlimit64 for reads and writes.
    unsafe {
        if syscall(
            nr::PRLIMIT64,
            [
                0,
                RLIMIT_NOFILE as usize,
                0,
                limit.as_mut_ptr() as usize,
                0,
                0,
            ],
        ) != 0
        {
            return;
        }
        limit[0] = limit[1];
        syscall(
            nr::PRLIMIT64,
            [0, RLIMIT_NOFILE as usize, limit.as_ptr() as usize, 0, 0, 0],
        );
    }
}

/// The kernel's signal set: one bit per signal, 64 signals.
const KERNEL_SIGSET_SIZE: usize = 8;

/// Changes the calling thread's signal mask (`how` is SIG_BLOCK,
/// SIG_UNBLOCK or SIG_SETMASK); returns the previous mask.
pub fn sigprocmask(how: i32, set: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: both sets are valid 8-byte kernel sigsets.
    unsafe {
        syscall(
            nr::RT_SIGPROCMASK,
            [
                how as usize,
                &set as *const u64 as usize,
                &mut old as *mut u64 as usize,
                KERNEL_SIGSET_SIZE,
                0,
                0,
            ],
        )
    };
    old
}

/// Restores the default action of `signal`.
pub fn default_action(signal: i32) {
    // The kernel's struct sigaction starts with the handler; all zeros is
    // SIG_DFL with no flags and an empty mask.
    let action = [0u64; 4];
    // SAFETY: `action` is a valid, large enough kernel sigaction; a null old
    // action is allowed.
    unsafe {
        syscall(
            nr::RT_SIGACTION,
            [
                signal as usize,
                action.as_ptr() as usize,
                0,
                KERNEL_SIGSET_SIZE,
                0,
                0,
            ],
        )
    };
}

/// The bit of `signal` in a kernel signal set.
pub fn sigbit(signal: i32) -> u64 {
    1u64.wrapping_shl((signal as u32).wrapping_sub(1))
}

/// The wait status macros.
pub fn wifsignaled(status: i32) -> bool {
    ((status & 0x7f) + 1) as i8 >= 2
}

pub fn wtermsig(status: i32) -> i32 {
    status & 0x7f
}

pub fn wifexited(status: i32) -> bool {
    status & 0x7f == 0
}

pub fn wexitstatus(status: i32) -> i32 {
    (status >> 8) & 0xff
}
