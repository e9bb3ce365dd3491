//! Run a function under [`Limits`] in a fresh process of the current
//! program: safe in any program, however many threads it has (a `#[test]`,
//! tokio, rayon).
//!
//! [`call()`](crate::call()) forks, and a fork is only safe in a
//! single-threaded process. Here the child is instead a new process of the
//! same executable (`/proc/self/exe`), started with `execve`: it shares no
//! lock, thread or state with the caller. It cannot run a closure with
//! captures, so the function is one the program lists with [`spawnable!`](crate::spawnable),
//! and the argument and the value travel with serde, as for `call`.
//!
//! ```
//! use std::time::Duration;
//! use pynisher::{spawn, spawnable, Failure, Limits, Status};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn nap(seconds: u64) {
//!     std::thread::sleep(Duration::from_secs(seconds));
//! }
//!
//! // Once per program (at the top level of the crate root, or of a test
//! // file): the functions a spawned child may run.
//! spawnable!(square, nap);
//!
//! # fn main() -> Result<(), pynisher::Error> {
//! // Threads do not matter.
//! let helper = std::thread::spawn(|| 1);
//! let limits = Limits::new().wall_time(Duration::from_millis(500));
//! let outcome = spawn::call(&limits, square, 12)?;
//! assert_eq!(outcome.result, Ok(144));
//!
//! let outcome = spawn::call(&limits, nap, 10)?;
//! assert_eq!(outcome.status, Status::WallTime);
//! assert!(matches!(outcome.result, Err(Failure::Limit { .. })));
//! # helper.join().unwrap();
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! [`spawnable!`](crate::spawnable) adds a function to the program's `.init_array`, which the
//! dynamic loader runs before `main` (and before a test harness starts its
//! threads). In an ordinary run it only records the listed functions. In a
//! child that [`call()`] started, marked by the `PYNISHER_SPAWN` environment
//! variable, it reads the request (which function, the argument, the
//! limits), becomes the call's guardian and its child as a forked call does,
//! applies the limits, runs the function, sends its value and exits: the
//! program's `main`, or the test harness, never runs in the child.
//!
//! A function is named by its type, [`std::any::type_name`], which is the
//! same in the caller and the child because they are the same executable.
//! [`call()`] refuses a function that [`spawnable!`](crate::spawnable) does not list, with
//! [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
//!
//! # Compared with `call`
//!
//! - Memory in [`MemoryMode::AddressSpace`] is headroom on top of the
//!   child's size after its start-up, as for `call`, so the two modes mean
//!   the same for both.
//! - Start-up (the `execve` and the dynamic loader, typically a millisecond
//!   or two) is not charged to the call: the wall-time clock and the CPU
//!   time start when the child is ready.
//! - The child inherits stdin, stdout and stderr, and the environment, but
//!   none of the caller's memory: statics start from their initial values,
//!   and whatever `main` sets up has not happened. Pass what the function
//!   needs in its argument. The function runs before Rust's own start-up of
//!   `main`, so its thread has no name and SIGPIPE keeps its default action.
//! - A function's panic is [`Failure::Panic`](crate::Failure::Panic), as for `call`. The default
//!   panic hook prints it to the child's stderr, which a test harness does
//!   not capture.

use std::any::type_name;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::call::{self, CallOutcome};
use crate::channel::Sender;
use crate::child::{finish_child, setup_failed, CallProcess, ChildSetup, SetupError};
use crate::error::{Error, Result};
use crate::exec::{self, Program, INTERPRETER_MEMFD, INTERPRETER_REPORT_FD, INTERPRETER_RESULT_FD};
use crate::fork::CallOptions;
use crate::limits::{Limits, MemoryMode};
use crate::{guardian, sys};

/// Marks a process that [`call()`] started. Removed before the function runs,
/// so that what the function starts is an ordinary run of the program.
const SPAWN_VARIABLE: &str = "PYNISHER_SPAWN";
/// The descriptor on which a spawned child finds its request.
const REQUEST_FD: RawFd = 5;

/// Lists the functions that [`spawn::call`](crate::spawn::call()) may run in a
/// fresh process of this program. Each is a path to a `fn` of one argument
/// whose argument and value implement serde's traits (use `()` for none and
/// a tuple for several). Use it once per executable: at the top level of
/// `main.rs`, of `lib.rs` for the crate's unit tests, or of each file in
/// `tests/` that uses [`spawn::call`](crate::spawn::call()).
///
/// ```
/// fn add(pair: (i64, i64)) -> i64 {
///     pair.0 + pair.1
/// }
/// fn greet(name: String) -> String {
///     format!("hello, {name}")
/// }
/// pynisher::spawnable!(add, greet);
/// # fn main() {}
/// ```
///
/// See the [`spawn`](crate::spawn) module for how the child finds the
/// function.
#[macro_export]
macro_rules! spawnable {
    ($($function:path),+ $(,)?) => {
        const _: () = {
            extern "C" fn pynisher_spawnable() {
                $crate::spawn::__register(::std::vec![
                    $($crate::spawn::__Entry::new($function)),+
                ]);
            }
            // Runs before `main` and before any thread exists; see the
            // `pynisher::spawn` docs.
            #[used]
            #[link_section = ".init_array"]
            static PYNISHER_SPAWNABLE: extern "C" fn() = pynisher_spawnable;
        };
    };
}

/// Runs `function(argument)` under `limits` in a fresh process of this
/// program and returns its value or why there is none. Every process the
/// function starts is killed before this returns.
///
/// # Errors
/// The limits are invalid; `function` is not listed in [`spawnable!`](crate::spawnable)
/// ([`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument), naming
/// `function`); the argument cannot be encoded; or a system call failed.
/// Everything the function does, limits and panics included, is a
/// [`CallOutcome`].
pub fn call<F, A, T>(limits: &Limits, function: F, argument: A) -> Result<CallOutcome<T>>
where
    F: Fn(A) -> T + Copy + Send + Sync + 'static,
    A: Serialize + DeserializeOwned,
    T: Serialize + DeserializeOwned,
{
    let options = CallOptions {
        name: None,
        terminate_descendants: true,
    };
    call_with(limits, &options, function, argument)
}

/// [`call()`] with a process name and a choice about the function's
/// descendants.
///
/// # Errors
/// As for [`call()`].
pub fn call_with<F, A, T>(
    limits: &Limits,
    options: &CallOptions,
    function: F,
    argument: A,
) -> Result<CallOutcome<T>>
where
    F: Fn(A) -> T + Copy + Send + Sync + 'static,
    A: Serialize + DeserializeOwned,
    T: Serialize + DeserializeOwned,
{
    // The function is named by its type, which the child finds in its own
    // list; the value itself carries nothing.
    let _ = function;
    let name = function_name::<F>();
    limits.validate()?;
    if !registered(name) {
        return Err(Error::invalid(
            "function",
            format!(
                "`{name}` is not listed in pynisher::spawnable! in this program, so a spawned \
                 child cannot run it"
            ),
        ));
    }
    let argument = postcard::to_allocvec(&argument)
        .map_err(|err| Error::invalid("argument", format!("cannot encode it: {err}")))?;
    let request = Request {
        function: name.to_owned(),
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        terminate_descendants: options.terminate_descendants,
        name: options.name.clone(),
        limits: WireLimits::from(limits),
        argument,
    };
    let request = postcard::to_allocvec(&request)
        .map_err(|err| Error::invalid("argument", format!("cannot encode the request: {err}")))?;
    let file = sys::memfd(c"pynisher-spawn-request")
        .map_err(|e| Error::os("creating the request file", e))?;
    sys::write_all(file.as_raw_fd(), &request)
        .map_err(|e| Error::os("writing the request file", e))?;

    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    env.insert(SPAWN_VARIABLE.into(), "1".into());
    let no_args: [&OsStr; 0] = [];
    let program = Program::build(OsStr::new("/proc/self/exe"), &no_args, &env, None)?
        .pass_fd(file.as_raw_fd(), REQUEST_FD);
    let running = exec::start_interpreter(program, limits, options)?;
    drop(file);
    let finished = running.wait()?;
    Ok(call::decode(limits, finished.outcome, finished.frame))
}

/// The limits as they travel to the child.
#[derive(Serialize, Deserialize)]
struct WireLimits {
    wall_time: Option<Duration>,
    cpu_time: Option<Duration>,
    memory: Option<u64>,
    resident: bool,
    grace_period: Duration,
}

impl From<&Limits> for WireLimits {
    fn from(limits: &Limits) -> Self {
        WireLimits {
            wall_time: limits.wall_time,
            cpu_time: limits.cpu_time,
            memory: limits.memory,
            resident: limits.memory_mode == MemoryMode::Resident,
            grace_period: limits.grace_period,
        }
    }
}

impl From<WireLimits> for Limits {
    fn from(wire: WireLimits) -> Self {
        Limits {
            wall_time: wire.wall_time,
            cpu_time: wire.cpu_time,
            memory: wire.memory,
            memory_mode: if wire.resident {
                MemoryMode::Resident
            } else {
                MemoryMode::AddressSpace
            },
            grace_period: wire.grace_period,
        }
    }
}

/// What a spawned child is asked to do.
#[derive(Serialize, Deserialize)]
struct Request {
    function: String,
    /// The caller, which the call's guardian watches.
    parent: libc::pid_t,
    terminate_descendants: bool,
    name: Option<String>,
    limits: WireLimits,
    argument: Vec<u8>,
}

/// Runs one listed function in a spawned child: decodes the argument, runs
/// the function and sends its value.
type Runner = Arc<dyn Fn(&[u8], &mut Sender, bool) + Send + Sync>;

/// A function listed in [`spawnable!`](crate::spawnable). Used by the macro only.
#[doc(hidden)]
pub struct __Entry {
    name: &'static str,
    run: Runner,
}

impl __Entry {
    pub fn new<F, A, T>(function: F) -> __Entry
    where
        F: Fn(A) -> T + Copy + Send + Sync + 'static,
        A: DeserializeOwned,
        T: Serialize,
    {
        __Entry {
            name: function_name::<F>(),
            run: Arc::new(move |argument, sender, report_oom| {
                match postcard::from_bytes::<A>(argument) {
                    Ok(argument) => {
                        call::run_in_child(sender, report_oom, move || function(argument))
                    }
                    Err(err) => call::send_encoding_error(
                        sender,
                        format!("decoding the argument in the child: {err}"),
                    ),
                }
            }),
        }
    }
}

/// The name of the function whose type is `F`. A `fn` item has a type of
/// its own, with no data, so its type names it; a function pointer (data, a
/// type shared by every function of that signature) would not.
fn function_name<F>() -> &'static str {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "pynisher::spawn needs a fn item (a path such as `square`), not a function pointer"
        )
    };
    type_name::<F>()
}

/// The functions [`spawnable!`](crate::spawnable) listed in this program.
static REGISTRY: Mutex<Vec<__Entry>> = Mutex::new(Vec::new());

fn registered(name: &str) -> bool {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .any(|entry| entry.name == name)
}

/// Called by [`spawnable!`](crate::spawnable) before `main`: records the functions and, in a
/// child that [`call()`] started, runs the requested one and exits.
#[doc(hidden)]
pub fn __register(entries: Vec<__Entry>) {
    let mut registry = REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    registry.extend(entries);
    if std::env::var_os(SPAWN_VARIABLE).is_none() {
        return;
    }
    let Some(request) = read_request() else {
        return;
    };
    // With several `spawnable!` lists, a later one may hold the function.
    let Some(run) = registry
        .iter()
        .find(|e| e.name == request.function)
        .map(|e| Arc::clone(&e.run))
    else {
        return;
    };
    // The function may itself spawn calls, which look the registry up.
    drop(registry);
    serve(&run, request)
}

/// The request on [`REQUEST_FD`], left in place for another list.
fn read_request() -> Option<Request> {
    // SAFETY: the descriptor is only borrowed here; `call` passed it.
    let fd = unsafe { BorrowedFd::borrow_raw(REQUEST_FD) };
    // SAFETY: stat is plain data that fstat fills.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is valid for writes.
    if unsafe { libc::fstat(REQUEST_FD, &mut stat) } != 0 {
        return None;
    }
    let mut bytes = vec![0u8; usize::try_from(stat.st_size).ok()?];
    let read = sys::pread_full(fd, &mut bytes, 0).ok()?;
    bytes.truncate(read);
    postcard::from_bytes(&bytes).ok()
}

/// The child's side of a call. Never returns.
fn serve(run: &Runner, request: Request) -> ! {
    // What the function starts is an ordinary run of the program.
    std::env::remove_var(SPAWN_VARIABLE);
    // SAFETY: this process owns the request descriptor and is done with it.
    drop(unsafe { OwnedFd::from_raw_fd(REQUEST_FD) });
    let mut sender = Sender::new(INTERPRETER_RESULT_FD, INTERPRETER_MEMFD);
    let startup = own_cpu_time();
    if let Err(err) = guardian::prepare() {
        let errno = match err.kind() {
            crate::ErrorKind::Os { source, .. } => source.raw_os_error(),
            _ => None,
        };
        setup_failed(
            &mut sender,
            SetupError {
                step: "preparing the guardian program",
                errno: errno.unwrap_or(libc::ENOEXEC),
            },
        );
    }
    // SAFETY: this runs before `main`, from `.init_array`, so the process has
    // a single thread; and it is a fresh image of a call's process that
    // `exec::start` started (step 1 taken), not the caller.
    let early = unsafe { CallProcess::assume_after_exec() };
    let limits = Limits::from(request.limits);
    let steps = early
        .split_guardian(
            request.parent,
            request.terminate_descendants,
            INTERPRETER_REPORT_FD,
        )
        .and_then(|split| split.apply_limits(&ChildSetup::new(&limits, request.name.as_deref())));
    let limited = match steps {
        Ok(limited) => limited,
        Err(err) => setup_failed(&mut sender, err),
    };
    let (user, system) = startup;
    let Ok(_running) = limited.ready(&mut sender, user, system) else {
        finish_child(false);
    };
    let report_oom = limits.memory.is_some() && limits.memory_mode == MemoryMode::AddressSpace;
    run(&request.argument, &mut sender, report_oom);
    finish_child(sender.has_sent())
}

/// User and system CPU time this process has used so far.
fn own_cpu_time() -> (Duration, Duration) {
    // SAFETY: rusage is plain data that getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let duration = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    (duration(usage.ru_utime), duration(usage.ru_stime))
}
