//! System calls that never touch `errno`, for the call's guardian.
//!
//! The guardian shares its memory, thread-local storage included, with the
//! process that runs the function (see [`crate::guardian`]). A libc wrapper
//! that fails writes `errno` in that shared storage, where it could overwrite
//! the function's own `errno` between a failed call and its check. So the
//! guardian makes its system calls directly and gets `-errno` back as the
//! return value. Nothing here allocates, locks or panics.

use core::arch::asm;

/// Makes system call `n` with up to six arguments; returns the kernel's
/// result, a negative errno on failure.
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall(n: libc::c_long, args: [usize; 6]) -> isize {
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

/// Makes system call `n` with up to six arguments; returns the kernel's
/// result, a negative errno on failure.
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall(n: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes valid arguments; `svc 0` returns in x0.
    unsafe {
        asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") args[0] => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("pynisher's guardian supports x86_64 and aarch64 only for now");

/// The entry point of a guardian: `(parent, terminate_descendants, child)`.
pub type GuardianEntry = extern "C" fn(libc::pid_t, usize, libc::pid_t) -> !;

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
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone_vm_split(
    stack_top: *mut u8,
    entry: GuardianEntry,
    parent: libc::pid_t,
    terminate: usize,
    child_tid: *mut libc::pid_t,
) -> isize {
    let ret: isize;
    let flags = clone_flags(child_tid);
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
            inlateout("rax") libc::SYS_clone as isize => ret,
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

/// See the x86_64 version.
///
/// # Safety
/// As for x86_64.
#[cfg(target_arch = "aarch64")]
pub unsafe fn clone_vm_split(
    stack_top: *mut u8,
    entry: GuardianEntry,
    parent: libc::pid_t,
    terminate: usize,
    child_tid: *mut libc::pid_t,
) -> isize {
    let ret: isize;
    let flags = clone_flags(child_tid);
    // SAFETY: as for x86_64; `svc 0` returns in x0 and clobbers nothing else.
    unsafe {
        asm!(
            "svc 0",
            "cmp x0, #0",
            "b.le 2f",
            "mov sp, {stack}",
            "mov x2, x0",
            "mov x0, {parent}",
            "mov x1, {terminate}",
            "blr {entry}",
            "brk #1",
            "2:",
            stack = in(reg) stack_top,
            parent = in(reg) parent as isize,
            terminate = in(reg) terminate,
            entry = in(reg) entry,
            in("x8") libc::SYS_clone,
            inlateout("x0") flags => ret,
            in("x1") 0usize,
            in("x2") 0usize,
            in("x3") 0usize,
            in("x4") child_tid,
        );
    }
    ret
}

fn clone_flags(child_tid: *mut libc::pid_t) -> usize {
    let mut flags = libc::CLONE_VM | libc::SIGCHLD;
    if !child_tid.is_null() {
        flags |= libc::CLONE_CHILD_SETTID;
    }
    flags as usize
}

/// A negative errno as a Result.
#[inline(always)]
fn check(ret: isize) -> Result<usize, i32> {
    if ret < 0 {
        Err(ret.wrapping_neg() as i32)
    } else {
        Ok(ret as usize)
    }
}

pub fn getpid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { syscall(libc::SYS_getpid, [0; 6]) as libc::pid_t }
}

pub fn getppid() -> libc::pid_t {
    // SAFETY: no arguments.
    unsafe { syscall(libc::SYS_getppid, [0; 6]) as libc::pid_t }
}

pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group takes an integer and never returns.
    unsafe { syscall(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]) };
    // The kernel does not return from exit_group.
    loop {
        core::hint::spin_loop();
    }
}

pub fn kill(pid: libc::pid_t, signal: i32) -> Result<usize, i32> {
    // SAFETY: integer arguments only.
    check(unsafe { syscall(libc::SYS_kill, [pid as usize, signal as usize, 0, 0, 0, 0]) })
}

pub fn prctl(option: i32, arg: usize) -> Result<usize, i32> {
    // SAFETY: integer arguments, or (PR_SET_NAME) a NUL-terminated string.
    check(unsafe { syscall(libc::SYS_prctl, [option as usize, arg, 0, 0, 0, 0]) })
}

pub fn pidfd_open(pid: libc::pid_t) -> Result<i32, i32> {
    // SAFETY: integer arguments only.
    check(unsafe { syscall(libc::SYS_pidfd_open, [pid as usize, 0, 0, 0, 0, 0]) })
        .map(|fd| fd as i32)
}

pub fn close(fd: i32) {
    // SAFETY: integer argument only.
    unsafe { syscall(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]) };
}

pub fn close_range(first: u32, last: u32) {
    // SAFETY: integer arguments only.
    unsafe {
        syscall(
            libc::SYS_close_range,
            [first as usize, last as usize, 0, 0, 0, 0],
        )
    };
}

/// Waits, without a timeout, until one of `fds` is ready. Retries EINTR.
pub fn poll_forever(fds: &mut [libc::pollfd]) -> Result<usize, i32> {
    loop {
        // SAFETY: `fds` is valid for reads and writes; a null timeout waits
        // forever and a null mask keeps the current one.
        let ret = unsafe {
            syscall(
                libc::SYS_ppoll,
                [fds.as_mut_ptr() as usize, fds.len(), 0, 0, 0, 0],
            )
        };
        match check(ret) {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// `wait4` on `pid` (-1 for any child); returns the pid reaped (0 if none
/// with WNOHANG) and fills `status`.
pub fn wait4(pid: libc::pid_t, status: &mut i32, options: i32) -> Result<usize, i32> {
    loop {
        // SAFETY: `status` is valid for writes; a null rusage is allowed.
        let ret = unsafe {
            syscall(
                libc::SYS_wait4,
                [
                    pid as usize,
                    status as *mut i32 as usize,
                    options as usize,
                    0,
                    0,
                    0,
                ],
            )
        };
        match check(ret) {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// Whether the calling process has any child, live or zombie (none is
/// reaped).
pub fn has_children() -> bool {
    let mut info = [0u64; 16]; // a siginfo_t is 128 bytes
    let options = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid for writes of a siginfo_t; a null rusage is
    // allowed.
    let ret = unsafe {
        syscall(
            libc::SYS_waitid,
            [
                libc::P_ALL as usize,
                0,
                info.as_mut_ptr() as usize,
                (options | libc::__WALL) as usize,
                0,
                0,
            ],
        )
    };
    ret != -(libc::ECHILD as isize)
}

/// `getrusage(RUSAGE_CHILDREN)`: the usage of every child reaped so far.
pub fn children_usage() -> Option<libc::rusage> {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: `usage` is valid for writes.
    let ret = unsafe {
        syscall(
            libc::SYS_getrusage,
            [
                libc::RUSAGE_CHILDREN as usize,
                &mut usage as *mut libc::rusage as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    (ret == 0).then_some(usage)
}

/// Opens the NUL-terminated `path` read-only.
pub fn open_read(path: &[u8], directory: bool) -> Result<i32, i32> {
    let mut flags = libc::O_RDONLY | libc::O_CLOEXEC;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    // SAFETY: `path` is NUL-terminated (checked by the callers' construction).
    check(unsafe {
        syscall(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
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
    check(unsafe {
        syscall(
            libc::SYS_read,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

pub fn getdents64(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    check(unsafe {
        syscall(
            libc::SYS_getdents64,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    })
}

/// Sleeps for `micros` microseconds.
pub fn sleep_micros(micros: u64) {
    let time = libc::timespec {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_nsec: ((micros % 1_000_000) * 1000) as libc::c_long,
    };
    // SAFETY: `time` is valid for reads; a null remainder is allowed.
    unsafe {
        syscall(
            libc::SYS_clock_nanosleep,
            [
                libc::CLOCK_MONOTONIC as usize,
                0,
                &time as *const libc::timespec as usize,
                0,
                0,
                0,
            ],
        )
    };
}

/// Microseconds on the monotonic clock.
pub fn now_micros() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is valid for writes.
    unsafe {
        syscall(
            libc::SYS_clock_gettime,
            [
                libc::CLOCK_MONOTONIC as usize,
                &mut time as *mut libc::timespec as usize,
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

/// The kernel's signal set: one bit per signal, 64 signals.
const KERNEL_SIGSET_SIZE: usize = 8;

/// Changes the calling thread's signal mask (`how` is SIG_BLOCK,
/// SIG_UNBLOCK or SIG_SETMASK); returns the previous mask.
pub fn sigprocmask(how: i32, set: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: both sets are valid 8-byte kernel sigsets.
    unsafe {
        syscall(
            libc::SYS_rt_sigprocmask,
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
    // SIG_DFL with no flags and an empty mask on every architecture.
    let action = [0u64; 4];
    // SAFETY: `action` is a valid, large enough kernel sigaction; a null old
    // action is allowed.
    unsafe {
        syscall(
            libc::SYS_rt_sigaction,
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
