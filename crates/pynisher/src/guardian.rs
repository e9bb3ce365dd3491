//! The call's guardian: a small process that stays the parent of the call's
//! whole tree for as long as any of it lives, and shares no memory with it.
//!
//! Each call is two processes. The guardian is the one the caller (or the
//! forkserver) started: a child subreaper in the call's own process group.
//! Its only child runs the function. Whatever that process starts, even a
//! descendant that calls `setsid` or double-forks, is reparented to the
//! guardian when its own parent dies, never to init, so it can always be
//! found. When the function's process ends, however it ends (a result, an
//! error, a crash, `os._exit`, SIGKILL, the OOM killer), the guardian freezes
//! and kills every descendant left (unless the call delivered its result and
//! the caller asked to keep them), reaps them, reports on the call's
//! [`CallPage`] how the function ended and what it used, and exits with the
//! function's own exit status.
//!
//! The guardian also watches the caller: it waits on a pidfd and kills the
//! tree when the caller exits, even by SIGKILL. The function's process gets
//! SIGKILL as its parent-death signal, which is exact because its parent,
//! the guardian, has a single thread.
//!
//! # The split, and why the guardian execs a program of its own
//!
//! [`split`] divides the call's process with `clone(CLONE_VM)`: the function's
//! process keeps the memory instead of copying its page tables, which for a
//! forked caller of a few GB would double the cost of the call. But while two
//! processes share memory, the kernel treats them as one: its OOM killer
//! (say, of a container's memory cap) kills every process that shares the
//! victim's memory, and the function's process loses its rseq registration
//! to the other one. So the guardian leaves at once: it execs the guardian
//! program (`guardian/main.rs`; the module `watch` does the work), a `no_std`,
//! statically linked binary of a few KB that `build.rs` compiles and the
//! crate embeds, and from then on it is an ordinary small program. The
//! function's process waits until the guardian has left (the kernel zeroes a
//! word and wakes it when the guardian's exec drops the shared memory: see
//! `set_tid_address(2)`), registers glibc's rseq area for itself, and only
//! then runs the caller's code. So while user code runs, nothing of ours
//! shares its memory.
//!
//! The guardian program and the supervisor read `/proc` with the same code
//! (`sys::procfs`: one stat parser, one directory scanner, both without
//! allocating). The freeze-and-kill loop is written twice, here in `watch`
//! and in `tree::Tree::kill_all`, and must be: the guardian runs without a C
//! library or an allocator, so it keeps a fixed-size set of pidfds on its
//! stack and kills only its own descendants, while the supervisor keeps a
//! growing map of pidfds, start times and CPU times of a tree it does not
//! parent, found through the call's process group too.
//!
//! The program is written once per process, before the first fork
//! ([`prepare`]), into a memfd; the guardian execs that descriptor. Where
//! `vm.memfd_noexec` is 2 a memfd cannot be executed, and the program goes
//! to an unlinked file in the first directory that allows execution instead.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicIsize, AtomicPtr, AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::child::SetupError;
use crate::sys::{self, procfs, raw};

#[allow(dead_code)] // the program uses all of it; the library its page layout
mod watch;

pub use watch::{Page, EXIT_CALLER_GONE};

/// The guardian program, built by `build.rs`.
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pynisher-guard"));
/// Exit code of a guardian that could not exec its program.
const EXIT_EXEC_FAILED: i32 = 71;
/// The stack the guardian uses between the split and its exec.
const STACK_SIZE: usize = 64 << 10;
const PAGE_SIZE: usize = 4096;

/// The descriptor of the guardian program, once [`prepare`]d.
static PROGRAM_FD: AtomicI32 = AtomicI32::new(-1);
/// Where glibc keeps each thread's rseq area (offset from the thread
/// pointer) and its size; 0 if glibc registers none.
static RSEQ_OFFSET: AtomicIsize = AtomicIsize::new(0);
static RSEQ_SIZE: AtomicU32 = AtomicU32::new(0);
/// The call's page, in the function's process.
static PAGE: AtomicPtr<Page> = AtomicPtr::new(std::ptr::null_mut());
/// Non-zero while the guardian still shares the function's memory; the
/// kernel zeroes it when the guardian's exec leaves (`set_tid_address`).
static SHARING: AtomicU32 = AtomicU32::new(0);
/// The errno of a failed exec of the guardian program.
static EXEC_ERRNO: AtomicI32 = AtomicI32::new(0);
/// The page descriptor to hand to the guardian program (-1: none).
static PAGE_FD: AtomicI32 = AtomicI32::new(-1);

/// Gets the guardian program ready in this process: written to an
/// executable memfd (or file), and glibc's rseq layout looked up. Call it
/// before forking a call (it allocates); later calls return at once.
///
/// # Errors
/// No executable copy of the program could be made.
pub fn prepare() -> crate::Result<()> {
    static PREPARED: OnceLock<Result<(), String>> = OnceLock::new();
    PREPARED
        .get_or_init(|| {
            // Kept for the life of the process, so never on 0-2, which a
            // caller with closed standard descriptors means to stay closed.
            let fd = materialise()
                .and_then(sys::off_stdio)
                .map_err(|e| e.to_string())?;
            PROGRAM_FD.store(fd.as_raw_fd(), Ordering::Release);
            // The descriptor lives as long as the process.
            std::mem::forget(fd);
            look_up_rseq();
            Ok(())
        })
        .clone()
        .map_err(|why| {
            crate::Error::os(
                "preparing the call's guardian program",
                io::Error::other(why),
            )
        })
}

/// An executable copy of [`PROGRAM`]: a sealed memfd, or where the kernel
/// forbids executing memfds (`vm.memfd_noexec` = 2), an unlinked file.
fn materialise() -> io::Result<OwnedFd> {
    let noexec = std::fs::read_to_string("/proc/sys/vm/memfd_noexec")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if noexec < 2 {
        match memfd_program() {
            Ok(fd) => return Ok(fd),
            Err(err) if noexec == 0 => return Err(err),
            Err(_) => {}
        }
    }
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    dirs.extend(std::env::var_os("XDG_RUNTIME_DIR").map(Into::into));
    dirs.push(std::env::temp_dir());
    dirs.push("/dev/shm".into());
    dirs.extend(std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")));
    let mut last = io::Error::other("no directory to write it to");
    for dir in dirs {
        match file_program(&dir) {
            Ok(fd) => return Ok(fd),
            Err(err) => {
                last = io::Error::new(err.kind(), format!("{}: {err}", dir.display()));
            }
        }
    }
    Err(io::Error::new(
        last.kind(),
        format!(
            "vm.memfd_noexec is {noexec}, so the guardian program cannot run from memory, and no \
             file copy could be executed ({last})"
        ),
    ))
}

fn memfd_program() -> io::Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a valid C string and flags; the result is checked.
    let mut fd = unsafe { libc::memfd_create(c"pynisher-guard".as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel before 6.3 knows no MFD_EXEC; its memfds are executable.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"pynisher-guard".as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(PROGRAM)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own descriptor with integer arguments.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

fn file_program(dir: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!(
        "pynisher-guard-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)?;
        file.write_all(PROGRAM)?;
        drop(file);
        // Read-only: a descriptor open for writing cannot be executed.
        let file = std::fs::OpenOptions::new().read(true).open(&path)?;
        let mut stat: libc::statvfs = unsafe_zeroed_statvfs();
        let c_dir = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
            .map_err(io::Error::other)?;
        // SAFETY: a valid C string and a statvfs to fill.
        if unsafe { libc::statvfs(c_dir.as_ptr(), &mut stat) } == 0
            && stat.f_flag & libc::ST_NOEXEC != 0
        {
            return Err(io::Error::other("mounted noexec"));
        }
        Ok(OwnedFd::from(file))
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn unsafe_zeroed_statvfs() -> libc::statvfs {
    // SAFETY: statvfs is plain data; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Finds glibc's rseq layout (glibc 2.35 and later publish it), so that the
/// function's process can register its own rseq area after the split.
fn look_up_rseq() {
    // SAFETY: dlsym with the default handle and valid C strings; the
    // symbols, where present, are glibc's read-only data of these types.
    unsafe {
        let offset = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr());
        let size = libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr());
        if offset.is_null() || size.is_null() {
            return;
        }
        RSEQ_OFFSET.store(*offset.cast::<isize>(), Ordering::Relaxed);
        RSEQ_SIZE.store(*size.cast::<u32>(), Ordering::Release);
    }
}

/// A page shared by one call's caller, guardian and function (see
/// [`Page`]), on a memfd of its own.
#[derive(Debug)]
pub struct CallPage {
    memfd: OwnedFd,
    page: std::ptr::NonNull<Page>,
}

// SAFETY: the page holds only atomics; the pointer is owned by this value.
unsafe impl Send for CallPage {}

/// What the guardian reported at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The function's wait status.
    pub status: i32,
    /// The usage of the processes the guardian reaped (the function's and
    /// what it left), without the guardian's own.
    pub reaped: Reaped,
    /// The guardian's own usage added, as `wait4` on the guardian gives it.
    pub total: Reaped,
}

/// Usage in a [`Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    pub user: Duration,
    pub system: Duration,
    /// Peak resident memory of the largest process, in bytes.
    pub peak_memory: u64,
}

impl CallPage {
    /// A fresh, empty page.
    ///
    /// # Errors
    /// The memfd or the mapping failed.
    pub fn new() -> io::Result<CallPage> {
        let memfd = sys::off_stdio(sys::memfd(c"pynisher-call")?)?;
        let len = std::mem::size_of::<Page>();
        // SAFETY: a fresh memfd we own; sized before it is mapped.
        if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a shared mapping of a file at least this large.
        let addr = unsafe {
            raw::mmap(
                len,
                raw::PROT_READ | raw::PROT_WRITE,
                raw::MAP_SHARED,
                memfd.as_raw_fd(),
            )
        }
        .map_err(io::Error::from_raw_os_error)?;
        let page = std::ptr::NonNull::new(addr as *mut Page)
            .ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(CallPage { memfd, page })
    }

    /// The descriptor to hand to the call's process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.memfd.as_fd()
    }

    /// Tells the guardian that its caller now holds a pidfd of it, so it
    /// may exit (and be reaped by anyone) once the call is over.
    pub fn mark_supervised(&self) {
        // SAFETY: the page stays mapped while `self` lives.
        let page = unsafe { self.page.as_ref() };
        page.supervised.store(1, Ordering::Release);
    }

    /// What the guardian reported, if it got that far.
    pub fn read(&self) -> Option<Report> {
        // SAFETY: the page stays mapped while `self` lives.
        let page = unsafe { self.page.as_ref() };
        if page.filled.load(Ordering::Acquire) != watch::PAGE_FILLED {
            return None;
        }
        let micros =
            |v: &std::sync::atomic::AtomicU64| Duration::from_micros(v.load(Ordering::Relaxed));
        let kib = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed).saturating_mul(1024);
        let reaped = Reaped {
            user: micros(&page.reaped_user_micros),
            system: micros(&page.reaped_system_micros),
            peak_memory: kib(&page.reaped_maxrss_kib),
        };
        let total = Reaped {
            user: reaped.user + micros(&page.own_user_micros),
            system: reaped.system + micros(&page.own_system_micros),
            peak_memory: reaped.peak_memory.max(kib(&page.own_maxrss_kib)),
        };
        Some(Report {
            status: page.status.load(Ordering::Relaxed) as u32 as i32,
            reaped,
            total,
        })
    }
}

impl Drop for CallPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { raw::munmap(self.page.as_ptr() as usize, std::mem::size_of::<Page>()) };
    }
}

/// Tells the guardian that the call delivered its result, so that with
/// `terminate_descendants` off its descendants may outlive it. Harmless
/// outside a guarded call. Async-signal-safe.
pub fn mark_result_sent() {
    let page = PAGE.load(Ordering::Acquire);
    if !page.is_null() {
        // SAFETY: the call's page, mapped in `split` for the rest of this
        // process's life.
        unsafe { &*page }.result_sent.store(1, Ordering::Release);
    }
}

/// Splits the calling process in two: the child returns `Ok` and runs the
/// call; the parent becomes the call's guardian and never returns.
///
/// Call it in a freshly started call process, after
/// [`ChildSetup::apply_early`](crate::child::ChildSetup::apply_early) (own
/// process group, child subreaper) and before the limits, which apply to the
/// function's process only. `parent` is the process to watch (the caller, or
/// the forkserver), the parent of the calling process. `page` is the
/// descriptor of the call's [`CallPage`]; the function's process closes it.
/// [`prepare`] must have run in this process or before the fork that made it.
///
/// # Safety
/// The calling process must have a single thread, and must not be the
/// caller's own process: it becomes the guardian.
///
/// # Errors
/// The guardian could not be started; the process is then unchanged. Or the
/// guardian program could not be executed; the guardian then waits for this
/// process to exit.
pub unsafe fn split(
    parent: libc::pid_t,
    terminate_descendants: bool,
    page: RawFd,
) -> Result<(), SetupError> {
    let fail = |step: &'static str, errno: i32| SetupError { step, errno };
    if PROGRAM_FD.load(Ordering::Acquire) < 0 {
        return Err(fail("preparing the guardian program", raw::EINVAL));
    }
    // SAFETY: the call's page, which its creator sized; it stays mapped for
    // the life of this process.
    let mapped = unsafe { watch::map_call_page(page) }
        .map_err(|errno| fail("mmap (the call's page)", errno))?;
    PAGE.store(std::ptr::from_ref(mapped).cast_mut(), Ordering::Release);
    PAGE_FD.store(page, Ordering::Release);
    let stack = guarded_stack().map_err(|(step, errno)| fail(step, errno))?;
    EXEC_ERRNO.store(0, Ordering::Relaxed);
    SHARING.store(1, Ordering::Release);
    let tid_slot = cached_tid_slot();
    // SAFETY: getpid has no preconditions.
    let guardian = unsafe { libc::getpid() };
    // When this thread (the guardian-to-be) execs while the memory is still
    // shared, the kernel zeroes SHARING and wakes its waiters.
    raw::set_tid_address(SHARING.as_ptr());
    // No signal handler may run in the guardian: it would run on the stack
    // the child goes on using. Raw, not `sys::SignalsBlocked`: glibc's
    // pthread_sigmask leaves its internal signals unblocked, and even those
    // must not reach the guardian. The mask stays blocked in the guardian
    // program, so that only SIGKILL and SIGSTOP act on it.
    let previous = raw::sigprocmask(raw::SIG_SETMASK, u64::MAX);
    // SAFETY: the stack was just mapped for the guardian alone and its top is
    // page-aligned; every signal is blocked; `leave` never returns and keeps
    // to raw system calls on its own stack until it execs.
    let ret = unsafe {
        raw::clone_vm_split(
            (stack as *mut u8).add(STACK_SIZE + PAGE_SIZE),
            leave,
            parent,
            usize::from(terminate_descendants),
            tid_slot,
        )
    };
    if ret < 0 {
        // Glibc's own address again, as it set it at start-up.
        raw::set_tid_address(tid_slot.cast());
        raw::sigprocmask(raw::SIG_SETMASK, previous);
        // SAFETY: the mapping made above, used by nobody.
        unsafe { raw::munmap(stack, STACK_SIZE + PAGE_SIZE) };
        return Err(fail("clone (the call's process)", (-ret) as i32));
    }
    // The function's process, on the original stack.
    // The guardian may be killed before the signal is armed.
    crate::child::die_with_parent(guardian)?;
    // Nothing of the caller's runs until the guardian has left this memory.
    while SHARING.load(Ordering::Acquire) != 0 {
        raw::futex_wait(&SHARING, 1);
    }
    // Glibc clears this word when the thread exits, as after its own fork.
    raw::set_tid_address(tid_slot.cast());
    // SAFETY: the guardian has left; nothing uses its stack any more.
    unsafe { raw::munmap(stack, STACK_SIZE + PAGE_SIZE) };
    raw::close(page);
    let errno = EXEC_ERRNO.load(Ordering::Acquire);
    if errno != 0 {
        raw::sigprocmask(raw::SIG_SETMASK, previous);
        return Err(fail("execveat (the guardian program)", errno));
    }
    register_rseq();
    raw::sigprocmask(raw::SIG_SETMASK, previous);
    Ok(())
}

/// The guardian's stack: [`STACK_SIZE`] bytes above a guard page, so that
/// an overflow faults instead of writing over whatever lies below. Returns
/// the base of the mapping, `STACK_SIZE + PAGE_SIZE` bytes.
fn guarded_stack() -> Result<usize, (&'static str, i32)> {
    // SAFETY: an anonymous private mapping; the result is checked.
    let stack = unsafe {
        raw::mmap(
            STACK_SIZE + PAGE_SIZE,
            raw::PROT_READ | raw::PROT_WRITE,
            raw::MAP_PRIVATE | raw::MAP_ANONYMOUS | raw::MAP_NORESERVE,
            -1,
        )
    }
    .map_err(|errno| ("mmap (the guardian's stack)", errno))?;
    // SAFETY: the lowest page of the mapping just made.
    if let Err(errno) = unsafe { raw::mprotect(stack, PAGE_SIZE, raw::PROT_NONE) } {
        // SAFETY: the mapping made above, used by nobody.
        unsafe { raw::munmap(stack, STACK_SIZE + PAGE_SIZE) };
        return Err(("mprotect (the guardian's stack guard)", errno));
    }
    Ok(stack)
}

/// The guardian's half of the split, on its own stack, in memory it still
/// shares with the function's process: exec the guardian program at once.
extern "C" fn leave(parent: libc::pid_t, terminate: usize, function: libc::pid_t) -> ! {
    let page = PAGE_FD.load(Ordering::Acquire);
    // The page's descriptor may be close-on-exec; the program needs it. Only
    // this process's descriptor table changes (no CLONE_FILES).
    raw::clear_cloexec(page);
    // A caller that ignores SIGCHLD passes that on through fork and exec;
    // the guardian would then never see its children's exit statuses. Its
    // signal actions are its own (no CLONE_SIGHAND), and this happens before
    // the function's process may run on.
    raw::default_action(raw::SIGCHLD);
    let mut bufs = [[0u8; 12]; 4];
    let [b_parent, b_terminate, b_function, b_page] = &mut bufs;
    let words = [
        procfs::format_decimal(parent, b_parent).as_ptr(),
        procfs::format_decimal(terminate as i32, b_terminate).as_ptr(),
        procfs::format_decimal(function, b_function).as_ptr(),
        procfs::format_decimal(page, b_page).as_ptr(),
    ];
    let argv = [
        c"pynisher-guard".as_ptr().cast::<u8>(),
        words[0],
        words[1],
        words[2],
        words[3],
        std::ptr::null(),
    ];
    let envp = [std::ptr::null::<u8>()];
    // SAFETY: null-terminated arrays of NUL-terminated strings on this stack.
    let errno = unsafe {
        raw::execveat(
            PROGRAM_FD.load(Ordering::Acquire),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    };
    // Still here, so still sharing: tell the function's process, which
    // reports the failure as the call's setup error, and wait for it.
    EXEC_ERRNO.store(errno.max(1), Ordering::Release);
    SHARING.store(0, Ordering::Release);
    raw::futex_wake(&SHARING);
    let mut status = 0;
    let _ = raw::wait4(function, &mut status, raw::WALL, None);
    raw::exit_group(EXIT_EXEC_FAILED)
}

/// Registers glibc's rseq area for the function's process, which lost the
/// registration in the split (the kernel drops it for a `CLONE_VM` child).
/// Where the kernel refuses, glibc is told that there is none, so that
/// `sched_getcpu` and rseq users fall back to system calls instead of
/// reading a stale CPU number.
fn register_rseq() {
    let size = RSEQ_SIZE.load(Ordering::Acquire);
    if size == 0 {
        return;
    }
    let area = raw::thread_pointer().wrapping_add_signed(RSEQ_OFFSET.load(Ordering::Relaxed));
    // SAFETY: glibc's rseq area of the calling thread, in its TCB, which
    // lives as long as the thread; glibc registered it with this size.
    if unsafe { raw::rseq_register(area, size.max(raw::RSEQ_MIN_SIZE)) }.is_err() {
        // SAFETY: `cpu_id` is the second u32 of the area.
        unsafe {
            (area as *mut i32)
                .add(1)
                .write_volatile(raw::RSEQ_CPU_ID_REGISTRATION_FAILED)
        };
    }
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

#[cfg(test)]
mod tests {
    use super::watch::*;
    use super::*;

    #[test]
    fn parses_the_guardians_arguments() {
        let words: [&[u8]; 4] = [b"17", b"1", b"4242", b"-1"];
        assert_eq!(
            Args::parse(words.into_iter()),
            Some(Args {
                parent: 17,
                terminate: true,
                function: 4242,
                page_fd: -1
            })
        );
        let short: [&[u8]; 2] = [b"17", b"1"];
        assert_eq!(Args::parse(short.into_iter()), None);
    }

    #[test]
    fn a_page_is_empty_until_the_guardian_fills_it() {
        let page = CallPage::new().unwrap();
        assert_eq!(page.read(), None);
    }

    #[test]
    fn the_program_is_a_small_static_executable() {
        assert_eq!(&PROGRAM[..4], b"\x7fELF");
        assert!(PROGRAM.len() < 64 << 10, "{} bytes", PROGRAM.len());
        prepare().unwrap();
        // Run with bad arguments, it says so by its exit code.
        let fd = PROGRAM_FD.load(Ordering::Acquire);
        let status = std::process::Command::new(format!("/proc/self/fd/{fd}"))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2));
    }

    #[test]
    fn the_file_fallback_can_be_executed() {
        // Where vm.memfd_noexec forbids executable memfds.
        let fd = file_program(&std::env::temp_dir()).unwrap();
        let status = std::process::Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2));
    }

    #[test]
    fn raw_constants_match_the_c_library() {
        assert_eq!(raw::nr::PIDFD_OPEN as libc::c_long, libc::SYS_pidfd_open);
        assert_eq!(raw::nr::EXECVEAT as libc::c_long, libc::SYS_execveat);
        assert_eq!(raw::nr::RSEQ as libc::c_long, libc::SYS_rseq);
        assert_eq!(raw::nr::CLOSE_RANGE as libc::c_long, libc::SYS_close_range);
        assert_eq!(raw::nr::WAITID as libc::c_long, libc::SYS_waitid);
        assert_eq!(raw::nr::FUTEX as libc::c_long, libc::SYS_futex);
        assert_eq!(raw::nr::PRLIMIT64 as libc::c_long, libc::SYS_prlimit64);
        assert_eq!(raw::nr::FCNTL as libc::c_long, libc::SYS_fcntl);
        assert_eq!(
            raw::nr::PIDFD_SEND_SIGNAL as libc::c_long,
            libc::SYS_pidfd_send_signal
        );
        assert_eq!(raw::WALL, libc::__WALL);
        assert_eq!(raw::WNOWAIT, libc::WNOWAIT);
        assert_eq!(raw::O_DIRECTORY, libc::O_DIRECTORY);
        assert_eq!(raw::O_CLOEXEC, libc::O_CLOEXEC);
        assert_eq!(raw::AT_EMPTY_PATH, libc::AT_EMPTY_PATH);
        assert_eq!(raw::MAP_NORESERVE as i32, libc::MAP_NORESERVE);
        assert_eq!(raw::CLONE_CHILD_SETTID as i32, libc::CLONE_CHILD_SETTID);
        assert_eq!(
            std::mem::size_of::<raw::Rusage>(),
            std::mem::size_of::<libc::rusage>()
        );
        assert_eq!(raw::wexitstatus(3 << 8), 3);
        assert!(raw::wifsignaled(libc::SIGKILL) && !raw::wifexited(libc::SIGKILL));
    }

    #[test]
    fn raw_calls_report_errors_as_values() {
        assert_eq!(raw::kill(i32::MAX - 1, 0), Err(libc::ESRCH));
        assert_eq!(raw::pidfd_open(-7), Err(libc::EINVAL));
        assert_eq!(raw::getpid(), std::process::id() as libc::pid_t);
    }

    #[test]
    fn the_guardian_stack_has_a_guard_page() {
        let stack = guarded_stack().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let guard = format!("{stack:x}-{:x} ---p ", stack + PAGE_SIZE);
        let usable = format!(
            "{:x}-{:x} rw-p ",
            stack + PAGE_SIZE,
            stack + PAGE_SIZE + STACK_SIZE
        );
        // SAFETY: unmaps exactly that mapping.
        unsafe { raw::munmap(stack, STACK_SIZE + PAGE_SIZE) };
        assert!(maps.contains(&guard), "{guard} not in\n{maps}");
        assert!(maps.contains(&usable), "{usable} not in\n{maps}");
    }
}
