//! Start a program in a child process: the one implementation behind
//! commands, spawned interpreters and the forkserver.
//!
//! Everything the child needs is built first, in the caller: the argument and
//! environment arrays, the program's path (searched in `PATH`), the
//! descriptor plan and a close-on-exec pipe for reporting a failure. The child
//! is then created with `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn`
//! does: it shares the caller's memory (so no page table is copied, and a
//! huge caller starts a program as fast as a small one) but runs on a stack
//! of its own, and the calling thread waits until the child has called
//! `execve` or exited. Between the two the child only makes
//! async-signal-safe system calls on memory that already exists:
//!
//! 1. [`ChildSetup::apply_early`] (own process group, parent-death signal,
//!    subreaper, the call's cgroup), and [`ChildSetup::apply_limits`] too if
//!    the limits apply from the start (a command; a fresh interpreter applies
//!    them itself after start-up);
//! 2. every catchable signal back to its default action and an empty signal
//!    mask, so that the program does not start with what the caller ignored
//!    or blocked (the Rust runtime ignores SIGPIPE, for example);
//! 3. the descriptors it should inherit moved to their numbers;
//! 4. `chdir` if a working directory was set, then `execve`.
//!
//! If a step fails, the child writes the step and `errno` to the pipe and
//! exits. Because the caller resumes only after `execve` or exit, what is in
//! the pipe at that moment is the whole answer: the caller never waits for
//! the pipe to close, so another thread forking at the same time (and so
//! holding a copy of the pipe) cannot delay it.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::child::ChildSetup;
use crate::error::{Error, ErrorKind, Result};
use crate::fork::CallOptions;
use crate::limits::Limits;
use crate::start::CallParts;
use crate::supervisor::{StartMark, Supervised};
use crate::sys::{self, Pid};

/// Where `PATH` is searched when neither the program nor the caller sets it.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Exit code of a child whose start failed; the caller reads the real reason
/// from the pipe.
const EXIT_EXEC_FAILED: i32 = 127;

/// Which step of starting the program failed, as written to the pipe.
const STAGE_SETUP: u8 = 1;
const STAGE_CHDIR: u8 = 2;
const STAGE_EXEC: u8 = 3;

/// A program ready to be started: everything the child needs, built before
/// the clone.
#[derive(Debug)]
pub struct Program {
    /// The program as given, for error messages.
    display: String,
    /// The program as it will be passed to `execve`.
    path: CString,
    // The pointer arrays point into these; they must live as long.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: Option<CString>,
    /// (descriptor in the caller, its number in the child)
    fds: Vec<(RawFd, RawFd)>,
    /// The highest signal number, for resetting dispositions.
    max_signal: i32,
}

fn c_string(argument: &str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| Error::invalid(argument, "contains a NUL byte"))
}

impl Program {
    /// `program` with `args`, the caller's environment and working
    /// directory. A name without a `/` is searched in `PATH`.
    ///
    /// # Errors
    /// [`ErrorKind::CommandNotFound`] if it cannot be found; invalid-argument
    /// if an argument contains a NUL byte.
    pub fn new<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S]) -> Result<Program> {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        Program::build(
            program.as_ref(),
            &args,
            &std::env::vars_os().collect(),
            None,
        )
    }

    /// `program` with `args`, exactly the environment `env`, and `cwd` as
    /// its working directory if given.
    ///
    /// # Errors
    /// As [`Program::new`], and invalid-argument for a bad variable name.
    pub fn build(
        program: &OsStr,
        args: &[&OsStr],
        env: &BTreeMap<OsString, OsString>,
        cwd: Option<&Path>,
    ) -> Result<Program> {
        let path = resolve_program(program, env, cwd)?;
        let path = c_string("program", path.as_os_str().as_bytes())?;
        let mut argv = vec![c_string("program", program.as_bytes())?];
        for arg in args {
            argv.push(c_string("args", arg.as_bytes())?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (key, value) in env {
            if key.is_empty() || key.as_bytes().contains(&b'=') {
                return Err(Error::invalid(
                    "env",
                    format!("invalid variable name {key:?}"),
                ));
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(c_string("env", &entry)?);
        }
        let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
            strings
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let cwd = match cwd {
            Some(dir) => Some(c_string("current_dir", dir.as_os_str().as_bytes())?),
            None => None,
        };
        Ok(Program {
            display: program.to_string_lossy().into_owned(),
            path,
            argv_ptrs: pointers(&argv),
            _argv: argv,
            envp_ptrs: pointers(&envp),
            _envp: envp,
            cwd,
            fds: Vec::new(),
            max_signal: libc::SIGRTMAX(),
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

    /// The file `execve` runs: the program as given if it has a `/`, else
    /// the one found in `PATH`.
    pub fn path(&self) -> &OsStr {
        OsStr::from_bytes(self.path.as_bytes())
    }
}

/// Finds the file `execve` should run, as `execvp` would: a name with a `/`
/// is used as it is; otherwise the first executable regular file of that name
/// in `PATH`. A file that exists but is not executable is returned only if
/// no executable one does, so that `execve` reports why it cannot run it.
fn resolve_program(
    program: &OsStr,
    env: &BTreeMap<OsString, OsString>,
    cwd: Option<&Path>,
) -> Result<PathBuf> {
    let not_found = || -> Error {
        ErrorKind::CommandNotFound {
            program: program.to_string_lossy().into_owned(),
        }
        .into()
    };
    if program.is_empty() {
        return Err(not_found());
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let search = env
        .get(OsStr::new("PATH"))
        .cloned()
        .unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    let mut not_executable = None;
    for dir in search.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            // An empty entry means the current directory, which is the
            // command's if it has one.
            cwd.map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        } else {
            PathBuf::from(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 != 0 {
            return Ok(candidate);
        }
        not_executable.get_or_insert(candidate);
    }
    not_executable.ok_or_else(not_found)
}

/// Starts `program`. The child runs [`ChildSetup::apply_early`], and
/// [`ChildSetup::apply_limits`] too if `limits_before_exec` (a command; a
/// fresh interpreter applies them itself after its start-up).
///
/// Returns the child's pid and the [`StartMark`] taken just before it started.
///
/// # Errors
/// [`ErrorKind::CommandNotFound`] or [`ErrorKind::CommandNotExecutable`] if
/// the exec failed, an OS error if the clone or the setup failed. The child
/// has been reaped in every error case.
pub fn start(
    program: &Program,
    setup: &ChildSetup,
    limits_before_exec: bool,
) -> Result<(Pid, StartMark)> {
    let (read_end, write_end) = sys::pipe().map_err(|e| Error::os("creating a pipe", e))?;
    let mut parked: Vec<RawFd> = vec![-1; program.fds.len()];
    let mut args = ChildArgs {
        program,
        setup,
        limits_before_exec,
        parked: &mut parked,
        report: write_end.as_raw_fd(),
    };
    let stack = ChildStack::new().map_err(|e| Error::os("allocating the child's stack", e))?;
    // Block every signal around the clone: the child shares this memory until
    // it execs, so no handler of the caller may run in it. It resets every
    // disposition and then sets its own mask.
    let blocked = sys::SignalsBlocked::new();
    let started = StartMark::now();
    // SAFETY: CLONE_VM | CLONE_VFORK is what posix_spawn does: the child
    // shares this address space but runs on its own stack, and this thread
    // is suspended until the child has called execve or exited, so nothing
    // here changes under it. The child runs `child_entry`, which makes only
    // async-signal-safe system calls on memory prepared above (writing only
    // to `parked` and its own stack). No page table is copied, so starting
    // a program costs the same from a small or a huge caller.
    let pid = unsafe {
        libc::clone(
            child_entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of_mut!(args).cast(),
        )
    };
    drop(blocked);
    drop(stack);
    if pid < 0 {
        return Err(Error::last_os("clone"));
    }
    let pid = pid as Pid;
    drop(write_end);
    if let Some(err) = read_start_failure(&read_end, program) {
        // The child has exited (it wrote its report first); reap it.
        let _ = sys::wait4(pid, true);
        return Err(err);
    }
    Ok((pid, started))
}

/// Writes the failed stage, `errno` and the step's name to the pipe, then
/// exits. Async-signal-safe: a stack buffer and `write`.
fn report_and_exit(fd: RawFd, stage: u8, errno: i32, step: &str) -> ! {
    let mut buf = [0u8; 128];
    buf[0] = stage;
    buf[1..5].copy_from_slice(&errno.to_le_bytes());
    let n = step.len().min(buf.len() - 5);
    buf[5..5 + n].copy_from_slice(&step.as_bytes()[..n]);
    let _ = sys::write_all(fd, &buf[..5 + n]);
    // SAFETY: _exit is async-signal-safe and ends the child without running
    // anything that belongs to the caller.
    unsafe { libc::_exit(EXIT_EXEC_FAILED) }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// What the child needs, handed to [`child_entry`] through `clone`.
struct ChildArgs<'a> {
    program: &'a Program,
    setup: &'a ChildSetup,
    limits_before_exec: bool,
    parked: &'a mut [RawFd],
    report: RawFd,
}

/// The child's own stack: with `CLONE_VM` it must not run on the caller's.
struct ChildStack {
    base: *mut libc::c_void,
}

impl ChildStack {
    /// Enough for `exec_child`, which keeps only small buffers on the stack.
    const SIZE: usize = 256 * 1024;

    fn new() -> io::Result<ChildStack> {
        // SAFETY: a fresh anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ChildStack { base })
    }

    /// The initial stack pointer: stacks grow down on every Linux target
    /// pynisher builds for.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which is where a
        // downward-growing stack starts.
        unsafe { self.base.cast::<u8>().add(Self::SIZE).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the child has
        // exec'd or exited by now (CLONE_VFORK), so nothing runs on it.
        unsafe { libc::munmap(self.base, Self::SIZE) };
    }
}

/// The child's entry point on its own stack.
extern "C" fn child_entry(args: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `args` is the `ChildArgs` that `start` passed to clone; it
    // lives on the caller's stack, which is intact while the caller is
    // suspended by CLONE_VFORK.
    let args = unsafe { &mut *args.cast::<ChildArgs<'_>>() };
    exec_child(
        args.program,
        args.setup,
        args.limits_before_exec,
        args.parked,
        args.report,
    )
}

/// The child, between clone and execve. Only async-signal-safe calls.
fn exec_child(
    program: &Program,
    setup: &ChildSetup,
    limits_before_exec: bool,
    parked: &mut [RawFd],
    report: RawFd,
) -> ! {
    if let Err(err) = setup.apply_early() {
        report_and_exit(report, STAGE_SETUP, err.errno, err.step);
    }
    if limits_before_exec {
        if let Err(err) = setup.apply_limits() {
            report_and_exit(report, STAGE_SETUP, err.errno, err.step);
        }
    }
    // SAFETY: sigaction, sigemptyset and sigprocmask are async-signal-safe;
    // `default` and `empty` are valid, initialised values on this stack.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=program.max_signal {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                // Fails harmlessly for the numbers libc keeps for itself.
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // Park every source first, so that moving one to its target cannot
    // overwrite another source. The parking spots lie above every target
    // (and so below a low RLIMIT_NOFILE, which a fixed high number is not).
    let park_above = program.fds.iter().map(|(_, to)| *to).max().unwrap_or(2);
    for (slot, (from, _)) in parked.iter_mut().zip(&program.fds) {
        // SAFETY: fcntl on a descriptor inherited through the clone.
        *slot = unsafe { libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, park_above + 1) };
        if *slot < 0 {
            report_and_exit(report, STAGE_SETUP, errno(), "fcntl(F_DUPFD_CLOEXEC)");
        }
    }
    for (slot, (_, to)) in parked.iter().zip(&program.fds) {
        // SAFETY: dup2 onto the target clears its close-on-exec flag.
        if unsafe { libc::dup2(*slot, *to) } < 0 {
            report_and_exit(report, STAGE_SETUP, errno(), "dup2");
        }
    }
    if let Some(dir) = &program.cwd {
        // SAFETY: `dir` is a NUL-terminated string built before the clone.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            report_and_exit(report, STAGE_CHDIR, errno(), "chdir");
        }
    }
    // SAFETY: the path and both NULL-terminated pointer arrays were built
    // before the clone and outlive this call; execve only returns on failure.
    unsafe {
        libc::execve(
            program.path.as_ptr(),
            program.argv_ptrs.as_ptr(),
            program.envp_ptrs.as_ptr(),
        );
    }
    report_and_exit(report, STAGE_EXEC, errno(), "execve")
}

/// Reads the child's report, if it wrote one. Called after the clone
/// returned, so the child has already called `execve` or exited: whatever it
/// wrote is in the pipe now.
fn read_start_failure(read_end: &OwnedFd, program: &Program) -> Option<Error> {
    if sys::set_nonblocking(read_end.as_fd(), true).is_err() {
        return None;
    }
    let mut buf = [0u8; 128];
    let mut len = 0;
    while len < buf.len() {
        match sys::read(read_end.as_fd(), &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    if len < 5 {
        return None;
    }
    let stage = buf[0];
    let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let step = String::from_utf8_lossy(&buf[5..len]).into_owned();
    let source = io::Error::from_raw_os_error(errno);
    let program = program.display.clone();
    Some(match stage {
        STAGE_EXEC if errno == libc::ENOENT => ErrorKind::CommandNotFound { program }.into(),
        STAGE_EXEC => ErrorKind::CommandNotExecutable { program, source }.into(),
        STAGE_CHDIR => Error::os(
            "changing to the command's working directory",
            io::Error::new(source.kind(), format!("chdir: {source}")),
        ),
        _ => Error::os(
            "setting up the command's process",
            io::Error::new(source.kind(), format!("{step}: {source}")),
        ),
    })
}

/// Descriptor numbers at which a fresh interpreter finds the result channel.
pub const INTERPRETER_RESULT_FD: RawFd = 3;
/// See [`INTERPRETER_RESULT_FD`]: the memfd for large results.
pub const INTERPRETER_MEMFD: RawFd = 4;
/// See [`INTERPRETER_RESULT_FD`]: the page on which the call's guardian
/// reports the usage of what it reaped (see
/// [`CallPage`](crate::guardian::CallPage)), and on which the process that
/// runs the call says whether it sent its result.
pub const INTERPRETER_REPORT_FD: RawFd = 6;

/// Starts `program`, a fresh interpreter that runs one call, and returns it
/// under supervision. It receives the result channel as descriptors
/// [`INTERPRETER_RESULT_FD`] and [`INTERPRETER_MEMFD`] (plus whatever
/// `program` passes itself). Only the early setup runs before the exec; the
/// interpreter applies the limits itself once started and then sends a
/// [`Tag::Ready`](crate::channel::Tag::Ready) frame, so start-up is not
/// charged to the call. It has taken step 1 of
/// [`CallProcess`](crate::child::CallProcess) before its exec, and must take
/// the others in their order: split off the call's guardian (handing it
/// [`INTERPRETER_REPORT_FD`]) before it runs any of the call's code.
///
/// # Errors
/// As [`start`], plus failures to create the channel or the pidfd.
pub fn start_interpreter(
    program: Program,
    limits: &Limits,
    options: &CallOptions,
) -> Result<Supervised> {
    let parts = CallParts::new(limits)?;
    let setup = parts.setup(limits, options.name.as_deref());
    let (result, memfd, page) = parts.child_fds();
    let program = program
        .pass_fd(result, INTERPRETER_RESULT_FD)
        .pass_fd(memfd, INTERPRETER_MEMFD)
        .pass_fd(page, INTERPRETER_REPORT_FD);
    let (pid, started) = start(&program, &setup, false)?;
    let mut supervised = parts.supervise(pid, limits, started, options.terminate_descendants)?;
    supervised.take_peak_from_page();
    supervised.expect_startup();
    Ok(supervised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with_path(path: &str) -> BTreeMap<OsString, OsString> {
        BTreeMap::from([(OsString::from("PATH"), OsString::from(path))])
    }

    #[test]
    fn resolves_names_through_path() {
        let env = env_with_path("/nonexistent:/bin:/usr/bin");
        let found = resolve_program(OsStr::new("sh"), &env, None).unwrap();
        assert!(found.ends_with("sh") && found.is_absolute(), "{found:?}");
        for missing in ["no-such-program-pynisher", ""] {
            let err = resolve_program(OsStr::new(missing), &env, None).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::CommandNotFound { .. }),
                "{err}"
            );
        }
        // A path is used as it is; execve decides.
        assert_eq!(
            resolve_program(OsStr::new("./x"), &env, None).unwrap(),
            PathBuf::from("./x")
        );
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
