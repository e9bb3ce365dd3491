//! The `pynisher` command line, `pynisher [OPTIONS] -- COMMAND [ARGS...]`:
//! run a command under limits on wall time, CPU time and memory, with the
//! exit codes of GNU `timeout` and an optional JSON report. See `docs/cli.md`.
//!
//! The logic lives in this library so that two front ends share it: the
//! `pynisher` binary of this crate, and the `pynisher` script that
//! `pip install pynisher` puts on the PATH (through the Python binding).
//! Both call [`main`].

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::error::ErrorKind as ClapErrorKind;
use clap::Parser;
use pynisher::terminal::Terminal;
use pynisher::{Command, Error, ErrorKind, Exit, Limits, MemoryMode, Outcome, Status};
use serde::Serialize;

/// A time limit (wall or CPU) was hit. As GNU `timeout`.
const EXIT_TIMEOUT: u8 = 124;
/// pynisher itself failed, or an option was bad. As GNU `timeout`.
const EXIT_FAILED: u8 = 125;
/// The command was found but cannot be executed. As GNU `timeout`.
const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The command was not found. As GNU `timeout`.
const EXIT_NOT_FOUND: u8 = 127;
/// The memory limit was hit. Not 137 (128 + SIGKILL), which any SIGKILL and
/// the kernel's OOM killer also produce; not 123–127 (xargs, timeout, the
/// shell); below 128, so never a signal code; outside sysexits.h (64–78).
const EXIT_MEMORY: u8 = 122;

/// How long pynisher waits for what is left of the tree after the command.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

const AFTER_HELP: &str = "\
Durations take ms, s, m or h (a bare number is seconds); sizes take B, KB, MB,
GB or TB, multiples of 1024 (a bare number is bytes).

Exit status:
  124  a time limit (--wall-time or --cpu-time) was hit
  122  the memory limit was hit (in address-space mode the command sees its
       allocation fail instead, and exits as it chooses)
  125  pynisher itself failed, or an option was bad
  126  the command was found but cannot be executed
  127  the command was not found
  otherwise the command's own exit status, or 128+N if signal N killed it

SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to pynisher are forwarded to the
whole process tree; if it is still running after the grace period, or on a
second such signal, the tree is killed.";

/// Run a command under limits on wall time, CPU time and memory.
#[derive(Parser, Debug)]
#[command(
    name = "pynisher",
    version,
    after_help = AFTER_HELP,
    override_usage = "pynisher [OPTIONS] [--] COMMAND [ARGS]..."
)]
struct Cli {
    /// Wall-clock limit for the command, e.g. 10s, 1.5m or 250ms
    #[arg(long, value_name = "TIME", value_parser = wall_time, allow_hyphen_values = true)]
    wall_time: Option<Duration>,

    /// CPU-time limit (user + system) for the whole process tree
    #[arg(long, value_name = "TIME", value_parser = cpu_time, allow_hyphen_values = true)]
    cpu_time: Option<Duration>,

    /// Memory limit for the whole process tree, e.g. 512MB or 2GB; see
    /// --memory-mode
    #[arg(long, value_name = "SIZE", value_parser = memory, allow_hyphen_values = true)]
    memory: Option<u64>,

    /// How --memory is counted: `resident` (the default) is the resident
    /// memory plus swap of the whole process tree, sampled; `address-space`
    /// caps the virtual size of each process (RLIMIT_AS), and the command
    /// sees its allocations fail
    #[arg(
        long,
        value_name = "MODE",
        default_value = "resident",
        value_parser = memory_mode
    )]
    memory_mode: MemoryMode,

    /// Time between the soft stop (SIGTERM at the wall limit, SIGXCPU at the
    /// CPU limit) and SIGKILL
    #[arg(
        long,
        value_name = "TIME",
        default_value = "1s",
        value_parser = grace_period,
        allow_hyphen_values = true
    )]
    grace_period: Duration,

    /// Write a JSON report of the run to PATH, or to stdout with `-`
    #[arg(long, value_name = "PATH|-")]
    json: Option<PathBuf>,

    /// Print why the command stopped to stderr
    #[arg(short, long)]
    verbose: bool,

    /// When pynisher runs in the foreground of a terminal, hand the terminal
    /// to the command, so that it can read from it and gets the terminal's
    /// signals (Ctrl-C, Ctrl-Z) directly
    #[arg(long)]
    foreground: bool,

    /// The command to run, and its arguments
    #[arg(
        value_name = "COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    command: Vec<OsString>,
}

/// The message of a limit-parsing error, without the argument name that
/// clap prints itself.
fn message(err: Error) -> String {
    match err.kind() {
        ErrorKind::InvalidArgument { message, .. } => message.clone(),
        _ => err.to_string(),
    }
}

fn wall_time(text: &str) -> Result<Duration, String> {
    pynisher::parse_duration("--wall-time", text).map_err(message)
}

fn cpu_time(text: &str) -> Result<Duration, String> {
    pynisher::parse_duration("--cpu-time", text).map_err(message)
}

fn memory(text: &str) -> Result<u64, String> {
    pynisher::parse_bytes("--memory", text).map_err(message)
}

fn memory_mode(text: &str) -> Result<MemoryMode, String> {
    text.parse::<MemoryMode>().map_err(message)
}

/// A duration, where zero (no grace at all: SIGKILL at once) is allowed.
fn grace_period(text: &str) -> Result<Duration, String> {
    pynisher::parse_grace_period("--grace-period", text).map_err(message)
}

/// The last signal pynisher received, and how many it has received.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
static RECEIVED_COUNT: AtomicU32 = AtomicU32::new(0);

/// The signals that are forwarded to the tree.
const FORWARDED: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn on_signal(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
    RECEIVED_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Catches the forwarded signals. Without SA_RESTART, so that the
/// supervisor's `poll` wakes up at once.
fn install_signal_handlers() -> io::Result<()> {
    for signal in FORWARDED {
        // SAFETY: `on_signal` is an extern "C" fn taking the signal number,
        // and only touches atomics; the struct is fully initialised.
        let ret = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if ret != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where the JSON report goes.
enum ReportSink {
    Stdout,
    File(File),
}

#[derive(Serialize)]
struct LimitsReport {
    wall_time: Option<f64>,
    cpu_time: Option<f64>,
    memory: Option<u64>,
    memory_mode: &'static str,
    grace_period: f64,
}

/// The JSON report. Field names are documented in docs/cli.md.
#[derive(Serialize)]
struct Report {
    status: Option<&'static str>,
    detail: Option<String>,
    error: Option<String>,
    command: Vec<String>,
    limits: LimitsReport,
    exit_code: Option<i32>,
    signal: Option<i32>,
    signal_name: Option<String>,
    wall_time: Option<f64>,
    cpu_user: Option<f64>,
    cpu_system: Option<f64>,
    cpu_time: Option<f64>,
    peak_memory: Option<u64>,
    pynisher_exit_code: u8,
}

impl Report {
    fn new(cli: &Cli, limits: &Limits, code: u8) -> Report {
        Report {
            status: None,
            detail: None,
            error: None,
            command: cli
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            limits: LimitsReport {
                wall_time: limits.wall_time.map(|d| d.as_secs_f64()),
                cpu_time: limits.cpu_time.map(|d| d.as_secs_f64()),
                memory: limits.memory,
                memory_mode: limits.memory_mode.as_str(),
                grace_period: limits.grace_period.as_secs_f64(),
            },
            exit_code: None,
            signal: None,
            signal_name: None,
            wall_time: None,
            cpu_user: None,
            cpu_system: None,
            cpu_time: None,
            peak_memory: None,
            pynisher_exit_code: code,
        }
    }

    fn with_outcome(mut self, outcome: &Outcome) -> Report {
        self.status = Some(outcome.status.as_str());
        self.detail = Some(outcome.detail.clone());
        self.exit_code = outcome.exit.and_then(Exit::code);
        self.signal = outcome.exit.and_then(Exit::signal);
        self.signal_name = outcome.exit.and_then(Exit::signal_name);
        let usage = &outcome.usage;
        self.wall_time = Some(usage.wall_time.as_secs_f64());
        self.cpu_user = Some(usage.cpu_user.as_secs_f64());
        self.cpu_system = Some(usage.cpu_system.as_secs_f64());
        self.cpu_time = Some(usage.cpu_time().as_secs_f64());
        self.peak_memory = Some(usage.peak_memory);
        self
    }

    fn write(&self, sink: ReportSink) -> io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        text.push('\n');
        match sink {
            ReportSink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }
            ReportSink::File(mut file) => {
                file.write_all(text.as_bytes())?;
                file.sync_all()
            }
        }
    }
}

/// pynisher's exit status for an outcome.
fn exit_code(outcome: &Outcome) -> u8 {
    match outcome.status {
        Status::WallTime | Status::CpuTime => EXIT_TIMEOUT,
        Status::Memory => EXIT_MEMORY,
        _ => match outcome.exit {
            Some(exit) => exit.shell_code().clamp(0, 255) as u8,
            None => EXIT_FAILED,
        },
    }
}

/// pynisher's exit status for an error that kept the command from running.
fn error_code(err: &Error) -> u8 {
    match err.kind() {
        ErrorKind::CommandNotFound { .. } => EXIT_NOT_FOUND,
        ErrorKind::CommandNotExecutable { .. } => EXIT_CANNOT_EXECUTE,
        _ => EXIT_FAILED,
    }
}

fn fail(text: impl std::fmt::Display) -> u8 {
    eprintln!("pynisher: {text}");
    EXIT_FAILED
}

/// Whether this process has any child, live or zombie.
fn has_children() -> bool {
    // SAFETY: siginfo_t is plain data; waitid only writes to it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid for writes; WNOWAIT leaves any child unreaped.
    let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) };
    !(ret == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Runs the `pynisher` command line with `args` (the first is the program
/// name, as in `std::env::args_os`) and returns its exit status. Installs
/// signal handlers and makes this process a child subreaper, so call it
/// from a process that exists to run it, as `main` does.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                ClapErrorKind::DisplayHelp | ClapErrorKind::DisplayVersion => 0,
                _ => EXIT_FAILED,
            };
        }
    };
    let limits = Limits {
        wall_time: cli.wall_time,
        cpu_time: cli.cpu_time,
        memory: cli.memory,
        memory_mode: cli.memory_mode,
        grace_period: cli.grace_period,
    };
    if let Some(bytes) = limits.memory.filter(|bytes| *bytes < 1 << 20) {
        eprintln!(
            "pynisher: warning: --memory is {bytes} bytes, less than 1 MB; did you forget a unit?"
        );
    }
    // Open the report first: a bad path must not cost a whole run.
    let sink = match &cli.json {
        None => None,
        Some(path) if path.as_os_str() == "-" => Some(ReportSink::Stdout),
        Some(path) => match File::create(path) {
            Ok(file) => Some(ReportSink::File(file)),
            Err(err) => {
                return fail(format_args!(
                    "--json: cannot write {}: {err}",
                    path.display()
                ))
            }
        },
    };
    if let Err(err) = install_signal_handlers() {
        return fail(format_args!("installing signal handlers: {err}"));
    }
    // Orphans of the command are reparented to pynisher instead of init, so
    // that none can escape the cleanup below.
    if let Err(err) = pynisher::become_subreaper() {
        return fail(format_args!("becoming a child subreaper: {err}"));
    }
    let terminal = if cli.foreground {
        Terminal::foreground()
    } else {
        None
    };

    let mut command = Command::new(&cli.command[0]);
    command.args(&cli.command[1..]);
    // pynisher is a subreaper, so whatever the command leaves behind when it
    // exits becomes pynisher's child and is killed below; the supervisor
    // need not scan the process table for it. (After a limit or a forwarded
    // signal the supervisor still kills the whole tree itself.)
    command.terminate_descendants(false);
    let result = command.spawn(&limits).and_then(|running| {
        let grace = limits.grace_period;
        let mut forwarded = false;
        let mut seen = 0;
        let mut kill_at: Option<Instant> = None;
        if let Some(terminal) = &terminal {
            terminal.hand_over(running.pid());
        }
        running
            .wait_with(|tree| {
                if let Some(terminal) = &terminal {
                    terminal.relay_stop(tree.pid());
                }
                let count = RECEIVED_COUNT.load(Ordering::SeqCst);
                if count != seen {
                    seen = count;
                    if forwarded {
                        tree.signal(libc::SIGKILL);
                    } else {
                        forwarded = true;
                        tree.signal(RECEIVED.load(Ordering::SeqCst));
                        // None: a grace period the clock cannot represent.
                        kill_at = Instant::now().checked_add(grace);
                    }
                }
                if kill_at.is_some_and(|at| Instant::now() >= at) {
                    tree.signal(libc::SIGKILL);
                    kill_at = None;
                }
                Ok::<(), Infallible>(())
            })
            .map_err(|stop| match stop {
                pynisher::Stop::Failed(err) => err,
                pynisher::Stop::Interrupted(never) => match never {},
            })
    });
    // Take the terminal back before anything is printed.
    drop(terminal);
    // Whatever the command left behind is now a child of pynisher.
    if has_children() {
        pynisher::kill_own_descendants(CLEANUP_TIMEOUT);
    }

    let (code, report) = match result {
        Ok(outcome) => {
            let code = exit_code(&outcome);
            if cli.verbose && outcome.status != Status::Ok {
                eprintln!("pynisher: {}: {}", outcome.status, outcome.detail);
            }
            (
                code,
                Report::new(&cli, &limits, code).with_outcome(&outcome),
            )
        }
        Err(err) => {
            let code = error_code(&err);
            eprintln!("pynisher: {err}");
            let mut report = Report::new(&cli, &limits, code);
            report.error = Some(err.to_string());
            (code, report)
        }
    };
    if let Some(sink) = sink {
        if let Err(err) = report.write(sink) {
            return fail(format_args!("--json: writing the report: {err}"));
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn outcome(status: Status, exit: Exit) -> Outcome {
        Outcome {
            status,
            exit: Some(exit),
            usage: Default::default(),
            detail: String::new(),
        }
    }

    #[test]
    fn statuses_map_to_exit_codes() {
        assert_eq!(
            exit_code(&outcome(Status::WallTime, Exit::Signal(15))),
            EXIT_TIMEOUT
        );
        assert_eq!(
            exit_code(&outcome(Status::CpuTime, Exit::Signal(24))),
            EXIT_TIMEOUT
        );
        assert_eq!(
            exit_code(&outcome(Status::Memory, Exit::Signal(9))),
            EXIT_MEMORY
        );
        assert_eq!(exit_code(&outcome(Status::Ok, Exit::Code(0))), 0);
        assert_eq!(exit_code(&outcome(Status::Error, Exit::Code(3))), 3);
        assert_eq!(
            exit_code(&outcome(Status::Crashed, Exit::Signal(libc::SIGSEGV))),
            128 + libc::SIGSEGV as u8
        );
    }

    #[test]
    fn grace_period_may_be_zero() {
        assert_eq!(grace_period("0"), Ok(Duration::ZERO));
        assert_eq!(grace_period("0s"), Ok(Duration::ZERO));
        assert_eq!(grace_period("250ms"), Ok(Duration::from_millis(250)));
        assert!(grace_period("-1").is_err());
        assert!(grace_period("soon").is_err());
    }
}
