//! Run an external command under [`Limits`] and get back an [`Outcome`].
//!
//! ```
//! use std::time::Duration;
//! use pynisher::{Command, Limits, Status};
//!
//! let limits = Limits::new().wall_time(Duration::from_millis(300));
//! let outcome = Command::new("sleep").arg("10").run(&limits)?;
//! assert_eq!(outcome.status, Status::WallTime);
//! assert!(outcome.usage.wall_time < Duration::from_secs(5));
//!
//! let outcome = Command::new("sh").args(["-c", "exit 3"]).run(&Limits::new())?;
//! assert_eq!(outcome.status, Status::Error);
//! assert_eq!(outcome.exit.and_then(|e| e.code()), Some(3));
//! # Ok::<(), pynisher::Error>(())
//! ```
//!
//! # How a command is started
//!
//! Everything the child needs is built first, in the caller: the argument and
//! environment arrays, the program's path (searched in `PATH`), the child's
//! setup and a close-on-exec pipe for reporting a failed `execve`. The child
//! is then created with `clone(CLONE_VFORK)`: a copy of the caller, like
//! `fork`, except that the calling thread waits until the child has called
//! `execve` or exited. Between the two the child only makes async-signal-safe
//! system calls on memory that already exists:
//!
//! 1. [`ChildSetup::apply_early`] and [`ChildSetup::apply_limits`]: its own
//!    process group, SIGKILL when the caller dies, child subreaper,
//!    `RLIMIT_CPU`;
//! 2. `RLIMIT_AS` in address-space memory mode (see below);
//! 3. every catchable signal back to its default action and an empty signal
//!    mask, so that the command is not started with what the caller ignored
//!    or blocked (the Rust runtime ignores SIGPIPE, for example);
//! 4. `chdir` if a working directory was set, then `execve`.
//!
//! An executable file that `execve` refuses with `ENOEXEC` (a script
//! without a `#!` line) is run again with `/bin/sh`, as `execvp` and the
//! shell do.
//!
//! If a step fails, the child writes the step and `errno` to the pipe and
//! exits. Because the caller resumes only after `execve` or exit, what is in
//! the pipe at that moment is the whole answer: the caller never waits for
//! the pipe to close, so another thread forking at the same time (and so
//! holding a copy of the pipe) cannot delay it.
//!
//! # Limits for commands
//!
//! - **Wall and CPU time** are enforced by the supervisor
//!   on the whole tree, as for closures: SIGTERM (wall) or SIGXCPU (CPU), then
//!   SIGKILL after the grace period.
//! - **Memory, address-space mode** sets `RLIMIT_AS` to the limit in the
//!   command's process (and every process it starts inherits it). A fresh
//!   program image starts from nothing, so the limit is the command's whole
//!   address space: the caller's own size never counts. The command sees the
//!   failed allocation itself (Python raises `MemoryError`, `malloc` returns
//!   NULL) and ends as it chooses, so the status is that of its exit: pynisher
//!   cannot see an allocation fail inside another program. Runtimes that
//!   reserve large address ranges up front (the JVM, Go, V8) need a generous
//!   limit or resident mode.
//! - **Memory, resident mode** is sampled by the supervisor over the whole
//!   tree; past the limit the tree is killed and the status is
//!   [`Status::Memory`].
//!
//! # Status
//!
//! Exit code 0 is [`Status::Ok`] and any other code is [`Status::Error`]; a
//! limit the supervisor enforced, or kernel evidence of one (SIGXCPU, CPU
//! time at the limit), gives that limit's status; a death by a signal without
//! such evidence is [`Status::Crashed`].
//!
//! # Descendants
//!
//! With [`Command::terminate_descendants`] on (the default), nothing the
//! command started survives the call: the supervisor finds the tree through
//! parent links and the process group, holds a pidfd on every process it has
//! seen, and freezes and kills them all when the command ends. A process that
//! is started after the supervisor's last scan *and* leaves both the group
//! and the tree (`setsid` plus a double fork within ~100 ms of the command's
//! exit) is reparented to the nearest subreaper. Make the caller one with
//! [`become_subreaper`](crate::become_subreaper) and kill what it
//! inherits with [`kill_own_descendants`](crate::kill_own_descendants)
//! to close that gap, as the `pynisher` CLI does.
//!
//! The command runs as a child subreaper itself (the attribute survives
//! `execve`), so orphans inside its tree are reparented to it and stay
//! findable. It also gets SIGKILL when the *thread* that started it exits, so
//! keep that thread alive while the command runs.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::child::ChildSetup;
use crate::error::{Error, Result};
use crate::exec::{self, Program};
use crate::limits::{Limits, MemoryMode};
use crate::outcome::{Exit, Outcome, Status};
use crate::supervisor::{Stop, Supervised};
use crate::sys::{self, Pid};
use crate::tree::Tree;

/// The shell that runs an executable script without a `#!` line.
const SHELL: &str = "/bin/sh";

/// An external command to run under limits: a program, its arguments, its
/// environment and working directory.
///
/// The builder methods follow [`std::process::Command`]. The command inherits
/// the caller's stdin, stdout and stderr.
#[derive(Debug, Clone)]
pub struct Command {
    program: OsString,
    args: Vec<OsString>,
    env_clear: bool,
    /// Variables to set (`Some`) or remove (`None`).
    env: BTreeMap<OsString, Option<OsString>>,
    cwd: Option<PathBuf>,
    terminate_descendants: bool,
}

impl Command {
    /// A command that runs `program`. A name without a `/` is searched in
    /// `PATH` (the command's own if it sets one, else the caller's).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env_clear: false,
            env: BTreeMap::new(),
            cwd: None,
            terminate_descendants: true,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Removes an environment variable for the command.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Starts the command with an empty environment (plus what
    /// [`Command::env`] sets afterwards).
    pub fn env_clear(&mut self) -> &mut Command {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Runs the command in `dir`.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Whether every process the command started is killed when it ends,
    /// even after a successful run. On by default. After a limit hit the
    /// whole tree is always killed.
    pub fn terminate_descendants(&mut self, on: bool) -> &mut Command {
        self.terminate_descendants = on;
        self
    }

    /// The program as given.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments, without the program.
    pub fn get_args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// Runs the command under `limits` and waits for it.
    ///
    /// # Errors
    /// The limits are invalid ([`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)), the program
    /// was not found ([`ErrorKind::CommandNotFound`](crate::ErrorKind::CommandNotFound)) or cannot be executed
    /// ([`ErrorKind::CommandNotExecutable`](crate::ErrorKind::CommandNotExecutable)), or a system call of pynisher
    /// failed. Everything the command itself does, limits included, is an
    /// [`Outcome`].
    pub fn run(&self, limits: &Limits) -> Result<Outcome> {
        self.spawn(limits)?.wait()
    }

    /// Starts the command under `limits`. Wait for it with
    /// [`RunningCommand::wait`] or [`RunningCommand::wait_with`]; until then
    /// the limits are not watched (`RLIMIT_CPU` and `RLIMIT_AS` already
    /// apply).
    ///
    /// # Errors
    /// As for [`Command::run`].
    pub fn spawn(&self, limits: &Limits) -> Result<RunningCommand> {
        limits.validate()?;
        let args: Vec<&OsStr> = self.args.iter().map(OsString::as_os_str).collect();
        let env = self.environment();
        let program = Program::build(&self.program, &args, &env, self.cwd.as_deref())?;
        // A new program image starts from nothing: in address-space mode the
        // limit is its whole address space, not headroom on top of the
        // caller's size.
        let (setup, cgroup) = ChildSetup::for_call(limits, None);
        let setup = setup.absolute_memory();
        let (pid, started) = match exec::start(&program, &setup, true) {
            // An executable file that the kernel cannot run (a script
            // without a `#!` line) is a shell script, as for `execvp` and
            // the shell: run it with /bin/sh.
            Err(err) if err.is_exec_format_error() => {
                let mut script_args = vec![program.path()];
                script_args.extend(args.iter().copied());
                let shell =
                    Program::build(OsStr::new(SHELL), &script_args, &env, self.cwd.as_deref())?;
                exec::start(&shell, &setup, true)?
            }
            other => other?,
        };
        let supervised = Supervised::new(
            pid,
            None,
            limits.clone(),
            started,
            self.terminate_descendants,
        )?
        .with_cgroup(cgroup);
        Ok(RunningCommand {
            supervised,
            limits: limits.clone(),
        })
    }
}

/// A command that has been started and is not yet waited for.
///
/// Dropping it without waiting leaves the command running without
/// supervision (its `RLIMIT_CPU` and `RLIMIT_AS` still apply) and unreaped.
pub struct RunningCommand {
    supervised: Supervised,
    limits: Limits,
}

impl RunningCommand {
    /// The command's process id. It is also the id of its process group.
    pub fn pid(&self) -> Pid {
        self.supervised.pid()
    }

    /// Supervises the command to its end.
    ///
    /// # Errors
    /// Only if supervision itself fails.
    pub fn wait(self) -> Result<Outcome> {
        let limits = self.limits;
        let finished = self.supervised.wait()?;
        Ok(command_outcome(finished.outcome, &limits))
    }

    /// Supervises the command to its end, calling `check` about every 50 ms
    /// with a [`Signaller`] that can signal the whole tree, for example to
    /// forward a signal the caller received. If `check` returns an error, the
    /// tree is killed at once and the error comes back as
    /// [`Stop::Interrupted`].
    ///
    /// # Errors
    /// [`Stop::Interrupted`] as above, or [`Stop::Failed`] if supervision
    /// itself fails.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use pynisher::{Command, Exit, Limits};
    ///
    /// // A script that exits with 7 when it gets SIGUSR1.
    /// let running = Command::new("sh")
    ///     .args(["-c", "trap 'exit 7' USR1; while :; do sleep 0.05; done"])
    ///     .spawn(&Limits::new().wall_time(Duration::from_secs(10)))?;
    /// let started = Instant::now();
    /// let mut sent = false;
    /// let outcome = running
    ///     .wait_with(|tree| {
    ///         if !sent && started.elapsed() > Duration::from_millis(200) {
    ///             tree.signal(libc::SIGUSR1); // the shell and its `sleep`
    ///             sent = true;
    ///         }
    ///         Ok::<(), std::convert::Infallible>(())
    ///     })
    ///     .map_err(|stop| match stop {
    ///         pynisher::Stop::Failed(err) => err,
    ///         pynisher::Stop::Interrupted(never) => match never {},
    ///     })?;
    /// assert_eq!(outcome.exit, Some(Exit::Code(7)));
    /// # Ok::<(), pynisher::Error>(())
    /// ```
    pub fn wait_with<E>(
        self,
        mut check: impl FnMut(&mut Signaller) -> std::result::Result<(), E>,
    ) -> std::result::Result<Outcome, Stop<E>> {
        let pid = self.pid();
        let pidfd = sys::pidfd_open(pid).map_err(|e| Stop::Failed(Error::os("pidfd_open", e)))?;
        let mut signaller = Signaller {
            root: pid,
            root_pidfd: pidfd,
            tree: Tree::new(pid),
        };
        let limits = self.limits;
        let finished = self.supervised.wait_with(|| check(&mut signaller))?;
        Ok(command_outcome(finished.outcome, &limits))
    }
}

/// Sends signals to every process of a running command's tree. Only
/// available inside [`RunningCommand::wait_with`], while the command is
/// unreaped, so its pid and process group cannot have been reused.
pub struct Signaller {
    root: Pid,
    root_pidfd: OwnedFd,
    tree: Tree,
}

impl Signaller {
    /// Sends `signal` to the command and to every descendant that can be
    /// found: its process group, the processes below it, and every process
    /// seen before (through a pidfd, so even one that called `setsid` and
    /// lost its parent).
    pub fn signal(&mut self, signal: i32) {
        self.tree.discover();
        self.tree.signal(Some(&self.root_pidfd), signal);
        let _ = sys::kill(-self.root, signal);
    }

    /// The command's process id.
    pub fn pid(&self) -> Pid {
        self.root
    }
}

/// Turns the supervisor's classification into the one for commands: a
/// command has no result frame, so an exit code is its status.
fn command_outcome(mut outcome: Outcome, limits: &Limits) -> Outcome {
    if outcome.status != Status::Crashed {
        return outcome;
    }
    match outcome.exit {
        Some(Exit::Code(0)) => {
            outcome.status = Status::Ok;
            outcome.detail = "exited with code 0".into();
        }
        Some(exit @ Exit::Code(_)) => {
            outcome.status = Status::Error;
            outcome.detail = exit.to_string();
            if limits.memory.is_some() && limits.memory_mode == MemoryMode::AddressSpace {
                outcome.detail.push_str(
                    " (an address-space memory limit was set; if an allocation failed, \
                     the command itself reported it)",
                );
            }
        }
        Some(Exit::Signal(_)) | None => {
            outcome.detail = outcome.detail.replacen(" without a result", "", 1);
        }
    }
    outcome
}

impl Command {
    /// The environment the command will get.
    fn environment(&self) -> BTreeMap<OsString, OsString> {
        let mut env: BTreeMap<OsString, OsString> = if self.env_clear {
            BTreeMap::new()
        } else {
            std::env::vars_os().collect()
        };
        for (key, value) in &self.env {
            match value {
                Some(value) => env.insert(key.clone(), value.clone()),
                None => env.remove(key),
            };
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exit_codes_become_statuses() {
        let outcome = |exit| Outcome {
            status: Status::Crashed,
            exit: Some(exit),
            usage: Default::default(),
            detail: "killed by SIGSEGV without a result".into(),
        };
        let limits = Limits::new();
        let ok = command_outcome(outcome(Exit::Code(0)), &limits);
        assert_eq!(ok.status, Status::Ok);
        let error = command_outcome(outcome(Exit::Code(2)), &limits);
        assert_eq!(error.status, Status::Error);
        assert_eq!(error.detail, "exited with code 2");
        let crashed = command_outcome(outcome(Exit::Signal(libc::SIGSEGV)), &limits);
        assert_eq!(crashed.status, Status::Crashed);
        assert_eq!(crashed.detail, "killed by SIGSEGV");
        // A limit the supervisor found stays.
        let mut limited = outcome(Exit::Signal(libc::SIGTERM));
        limited.status = Status::WallTime;
        let limited = command_outcome(limited, &limits.wall_time(Duration::from_secs(1)));
        assert_eq!(limited.status, Status::WallTime);
    }

    #[test]
    fn rejects_nul_bytes_before_starting() {
        let err = Command::new("sh")
            .arg("a\0b")
            .run(&Limits::new())
            .unwrap_err();
        assert_eq!(err.argument(), Some("args"));
    }
}
