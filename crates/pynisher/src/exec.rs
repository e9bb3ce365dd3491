//! Start a program in a child process: fork, the early child setup, `execv`.
//!
//! Everything the child needs (the resolved path, `argv`, the descriptor
//! plan) is built by [`Program::new`] before the fork; between fork and exec
//! the child makes only async-signal-safe system calls. A failure in the
//! child is reported through a close-on-exec pipe, so the parent can tell
//! "not found" from "cannot execute" from a failed setup.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::channel;
use crate::child::ChildSetup;
use crate::error::{Error, ErrorKind, Result};
use crate::fork::ForkOptions;
use crate::limits::Limits;
use crate::supervisor::Supervised;
use crate::sys::{self, Pid};

/// The lowest descriptor used to park inherited descriptors while they are
/// moved to their targets, so that no move clobbers another's source.
const PARK_FD: RawFd = 100;

const FAILED_SETUP: u32 = 1;
const FAILED_EXEC: u32 = 2;

/// A program ready to be started: path resolved, arguments converted.
#[derive(Debug)]
pub struct Program {
    display: String,
    path: CString,
    argv: Vec<CString>,
    /// (inherited descriptor in the parent, its number in the child)
    fds: Vec<(RawFd, RawFd)>,
}

impl Program {
    /// Resolves `program` (searched in `PATH` unless it contains a `/`) and
    /// prepares `argv` = `program` followed by `args`.
    ///
    /// # Errors
    /// [`ErrorKind::CommandNotFound`] if it cannot be found;
    /// invalid-argument if an argument contains a NUL byte.
    pub fn new<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Result<Program> {
        let program = program.as_ref();
        let display = program.to_string_lossy().into_owned();
        let path = resolve(program).ok_or_else(|| {
            Error::from(ErrorKind::CommandNotFound {
                program: display.clone(),
            })
        })?;
        let cstring = |s: &OsStr| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::invalid("command", format!("{s:?} contains a NUL byte")))
        };
        let mut argv = vec![cstring(program)?];
        for arg in args {
            argv.push(cstring(arg.as_ref())?);
        }
        Ok(Program {
            display,
            path: cstring(path.as_os_str())?,
            argv,
            fds: Vec::new(),
        })
    }

    /// Passes `fd` of this process to the child as descriptor `target`.
    /// Every other descriptor opened with `O_CLOEXEC` stays behind.
    pub fn pass_fd(mut self, fd: RawFd, target: RawFd) -> Program {
        self.fds.push((fd, target));
        self
    }

    /// The program as given, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// Finds `program` like `execvp` would, but before the fork.
fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    if program.is_empty() {
        return None;
    }
    let path =
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is NUL-terminated; access only reads it.
    let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
    ok && path.is_file()
}

/// Forks and executes `program`. The child first runs
/// [`ChildSetup::apply_early`], then [`ChildSetup::apply_limits`] too if
/// `limits_before_exec` (a command), or leaves that to the program (a fresh
/// interpreter applies them after its start-up). Signal dispositions and the
/// signal mask are reset to their defaults before the exec.
///
/// Returns the child's pid and when it was forked.
///
/// # Errors
/// [`ErrorKind::CommandNotFound`] or [`ErrorKind::CommandNotExecutable`] if
/// the exec failed, an OS error if the fork or the setup failed. The child
/// has been reaped in every error case.
pub fn start(
    program: &Program,
    setup: &ChildSetup,
    limits_before_exec: bool,
) -> Result<(Pid, Instant)> {
    let (report_read, report_write) =
        sys::pipe().map_err(|e| Error::os("creating the exec report pipe", e))?;
    let mut argv: Vec<*const libc::c_char> = program.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut parked: Vec<RawFd> = vec![-1; program.fds.len()];
    let report_fd = report_write.as_raw_fd();

    let started = Instant::now();
    // SAFETY: the child below only makes async-signal-safe calls on memory
    // allocated before the fork, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of a fork; see `exec_child`'s contract.
        unsafe {
            exec_child(
                program,
                setup,
                limits_before_exec,
                &argv,
                &mut parked,
                report_fd,
            )
        }
    }
    if pid < 0 {
        return Err(Error::last_os("fork"));
    }
    drop(report_write);

    let mut report = [0u8; 8];
    let mut got = 0;
    while got < report.len() {
        match sys::read(std::os::fd::AsFd::as_fd(&report_read), &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok((pid, started));
    }
    let _ = sys::wait4(pid, true);
    let word = |at: usize| {
        u32::from_le_bytes([report[at], report[at + 1], report[at + 2], report[at + 3]])
    };
    let errno = std::io::Error::from_raw_os_error(word(4) as i32);
    Err(match (word(0), word(4) as i32) {
        (FAILED_EXEC, libc::ENOENT) => ErrorKind::CommandNotFound {
            program: program.display.clone(),
        }
        .into(),
        (FAILED_EXEC, _) => ErrorKind::CommandNotExecutable {
            program: program.display.clone(),
            source: errno,
        }
        .into(),
        _ => Error::os("setting up the child", errno),
    })
}

/// Descriptor numbers at which a fresh interpreter finds the result channel.
pub const INTERPRETER_RESULT_FD: RawFd = 3;
/// See [`INTERPRETER_RESULT_FD`]: the memfd for large results.
pub const INTERPRETER_MEMFD: RawFd = 4;

/// Starts `program`, a fresh interpreter that runs one call, and returns it
/// under supervision. It receives the result channel as descriptors
/// [`INTERPRETER_RESULT_FD`] and [`INTERPRETER_MEMFD`] (plus whatever
/// `program` passes itself). Only the early setup runs before the exec; the
/// interpreter applies the limits itself once started and then sends a
/// [`Tag::Ready`](crate::channel::Tag::Ready) frame, so start-up is not
/// charged to the call.
///
/// # Errors
/// As [`start`], plus failures to create the channel or the pidfd.
pub fn start_interpreter(
    program: Program,
    limits: &Limits,
    options: &ForkOptions,
) -> Result<Supervised> {
    limits.validate()?;
    let cgroup = crate::cgroup::for_limits(limits);
    let mut setup = ChildSetup::new(limits, options.name.as_deref());
    if let Some(cgroup) = &cgroup {
        setup = setup.with_cgroup(cgroup.procs_path());
    }
    let (receiver, write_end, memfd) =
        channel::pair().map_err(|e| Error::os("creating the result channel", e))?;
    let program = program
        .pass_fd(write_end.as_raw_fd(), INTERPRETER_RESULT_FD)
        .pass_fd(memfd.as_raw_fd(), INTERPRETER_MEMFD);
    let (pid, started) = start(&program, &setup, false)?;
    drop(write_end);
    drop(memfd);
    Ok(Supervised::new(
        pid,
        Some(receiver),
        limits.clone(),
        started,
        options.terminate_descendants,
    )?
    .with_cgroup(cgroup))
}

/// The child side of [`start`]. Never returns.
///
/// # Safety
/// Must only be called in the child right after `fork`; `argv` must be a
/// NULL-terminated array of pointers into `program.argv`.
unsafe fn exec_child(
    program: &Program,
    setup: &ChildSetup,
    limits_before_exec: bool,
    argv: &[*const libc::c_char],
    parked: &mut [RawFd],
    report_fd: RawFd,
) -> ! {
    let fail = |kind: u32, errno: i32| -> ! {
        let mut report = [0u8; 8];
        report[..4].copy_from_slice(&kind.to_le_bytes());
        report[4..].copy_from_slice(&errno.to_le_bytes());
        let _ = sys::write_all(report_fd, &report);
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(127) }
    };
    if let Err(err) = setup.apply_early() {
        fail(FAILED_SETUP, err.errno);
    }
    if limits_before_exec {
        if let Err(err) = setup.apply_limits() {
            fail(FAILED_SETUP, err.errno);
        }
    }
    // SAFETY: sigset and signal calls are async-signal-safe; SIGKILL and
    // SIGSTOP cannot be changed and simply fail.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        for signal in 1..libc::SIGRTMAX() {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    // Park every source first, so that moving one to its target cannot
    // overwrite another source.
    for (slot, (from, _)) in parked.iter_mut().zip(&program.fds) {
        // SAFETY: fcntl on a descriptor inherited through fork.
        *slot = unsafe { libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, PARK_FD) };
        if *slot < 0 {
            fail(FAILED_SETUP, errno());
        }
    }
    for (slot, (_, to)) in parked.iter().zip(&program.fds) {
        // SAFETY: dup2 onto the target clears its close-on-exec flag.
        if unsafe { libc::dup2(*slot, *to) } < 0 {
            fail(FAILED_SETUP, errno());
        }
    }
    // SAFETY: `path` and `argv` are valid and NULL-terminated; on success
    // execv does not return.
    unsafe { libc::execv(program.path.as_ptr(), argv.as_ptr()) };
    fail(FAILED_EXEC, errno())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_programs_in_path() {
        assert!(resolve(OsStr::new("sh")).is_some());
        assert!(resolve(OsStr::new("no-such-program-pynisher")).is_none());
        let err = Program::new("no-such-program-pynisher", &["x"]).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::CommandNotFound { .. }),
            "{err}"
        );
    }

    #[test]
    fn starts_a_program_and_passes_descriptors() {
        let (read, write) = sys::pipe().unwrap();
        let program = Program::new("sh", &["-c", "echo passed >&7"])
            .unwrap()
            .pass_fd(write.as_raw_fd(), 7);
        let setup = ChildSetup::new(&Limits::new(), None);
        let (pid, _) = start(&program, &setup, true).unwrap();
        drop(write);
        let (status, _) = sys::wait4(pid, true).unwrap().unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        let mut buf = [0u8; 16];
        let n = sys::read(std::os::fd::AsFd::as_fd(&read), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"passed\n");
    }

    #[test]
    fn reports_a_file_that_cannot_be_executed() {
        let path =
            std::env::temp_dir().join(format!("pynisher-not-executable-{}", std::process::id()));
        std::fs::write(&path, "not a program").unwrap();
        let program = Program::new(&path, &[] as &[&str]).unwrap();
        let setup = ChildSetup::new(&Limits::new(), None);
        let err = start(&program, &setup, true).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(err.kind(), ErrorKind::CommandNotExecutable { .. }),
            "{err}"
        );
    }
}
