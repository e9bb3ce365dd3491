//! A forkserver: one small, long-lived process that forks a fresh child for
//! each call, so a call costs a fork of the server instead of a fork of a
//! large caller or the start of a new interpreter.
//!
//! The caller passes each call's result channel to the server with
//! `SCM_RIGHTS`, so the result goes straight to the caller and never through
//! the server. The server sends back the child's pid and a pidfd it opened
//! before it could reap the child (so the pidfd cannot name a reused pid);
//! the caller supervises the child through that pidfd. The server, a
//! subreaper, reaps the child and reports its exit status and rusage on the
//! call's own socket.
//!
//! The server dies with its caller, and every call's tree dies with the
//! server (the call's guardian watches it), so nothing outlives the caller.
//! The server watches its caller through a pidfd, not a parent-death
//! signal: that signal belongs to the thread that started the server, which
//! may end long before the caller does. A forked child of the caller
//! inherits the handle but never stops the server (see [`ForkServer`]'s
//! `Drop`).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::background::Interrupt;
use crate::channel::Sender;
use crate::child::{finish_child, setup_failed, step, CallProcess, ChildSetup};
use crate::error::{Error, ErrorKind, Result};
use crate::exec::{self, Program};
use crate::fork::{fork_call_process, ForkHooks, Forked};
use crate::limits::Limits;
use crate::outcome::{Outcome, Status, Usage};
use crate::start::CallParts;
use crate::supervisor::{
    startup_budget, Finished, RemoteExit, StartMark, Supervised, STARTUP_BUDGET,
};
use crate::sys::{self, Pid};

/// The descriptor at which the server finds its control socket.
pub const CONTROL_FD: RawFd = 3;
const CALL_MESSAGE: &[u8] = b"call";

/// The caller's handle on a running forkserver. Dropping it in the process
/// that started the server kills the server; in a forked child of that
/// process it only closes the child's copies of the descriptors.
#[derive(Debug)]
pub struct ForkServer {
    pid: Pid,
    /// Names the server for as long as this handle lives: the server is not
    /// reaped before `Drop`, so neither signal nor wait can hit another
    /// process that got its pid. Shared with the calls still waiting for it
    /// to start them ([`PendingCall`]), which may have to stop it.
    pidfd: Arc<OwnedFd>,
    control: OwnedFd,
    /// The process that started the server, its parent.
    owner: Pid,
}

impl ForkServer {
    /// Starts `program` as a forkserver. It receives the control socket as
    /// descriptor [`CONTROL_FD`], runs in its own process group (so a
    /// terminal's Ctrl-C does not reach it) and must run [`serve`], which
    /// ends it with the caller.
    ///
    /// # Errors
    /// The socket, the fork or the exec failed.
    pub fn start(program: Program) -> Result<ForkServer> {
        let (control, theirs) =
            sys::seqpacket_pair().map_err(|e| Error::os("creating the forkserver socket", e))?;
        let program = program.pass_fd(theirs.as_raw_fd(), CONTROL_FD);
        // No parent-death signal: it would fire when this thread ends.
        let setup = ChildSetup::new(&Limits::new(), None).without_parent_death_signal();
        let (pid, _) = exec::start(&program, &setup, false)?;
        drop(theirs);
        let pidfd = sys::pidfd_of_new_child(pid)
            .map_err(|err| Error::os("pidfd_open (the forkserver)", err))?;
        Ok(ForkServer {
            pid,
            pidfd: Arc::new(pidfd),
            control,
            owner: std::process::id() as Pid,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Whether the server is still running. Never reaps it.
    pub fn is_alive(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        matches!(sys::poll(&mut fds, Some(Duration::ZERO)), Ok(0))
    }

    /// Asks the server to run one call. `request` is handed to the child;
    /// the child applies `limits` itself after start-up (see
    /// [`Tag::Ready`](crate::channel::Tag::Ready)).
    ///
    /// The server may still be importing its preload modules. The wait for
    /// it belongs to the call's start-up and shares its
    /// [`startup_budget`](crate::supervisor::startup_budget), counted from
    /// the start of this call: past it the server is killed (its queue holds
    /// this call, which must never start late) and the call ends as
    /// [`CallStart::NotStarted`] with status wall_time. Without a wall-time
    /// limit the wait ends only with the server, or with `interrupt`.
    ///
    /// # Errors
    /// [`ErrorKind::ForkServer`] if the server is gone or failed; the call
    /// has then not started and may be retried with a new server.
    /// [`ErrorKind::Interrupted`] if `interrupt` was raised first.
    pub fn start_call(
        &self,
        request: BorrowedFd<'_>,
        limits: &Limits,
        terminate_descendants: bool,
        interrupt: Option<&Interrupt>,
    ) -> Result<CallStart> {
        self.send_call(request, limits, terminate_descendants)?
            .wait_to_start(interrupt)
    }

    /// The first half of [`ForkServer::start_call`]: sends the call to the
    /// server and returns at once. [`PendingCall::wait`] waits for the
    /// server to start it, in one go or in parts (a caller can wait on its
    /// own thread for a moment, then hand the rest to another).
    ///
    /// # Errors
    /// As [`ForkServer::start_call`], but never `Interrupted`.
    pub fn send_call(
        &self,
        request: BorrowedFd<'_>,
        limits: &Limits,
        terminate_descendants: bool,
    ) -> Result<PendingCall> {
        let mut parts = CallParts::new(limits)?;
        let started = StartMark::now();
        // The request names the call's cgroup, if it has one; the child joins
        // it first thing.
        let mut message = CALL_MESSAGE.to_vec();
        if let Some(procs) = parts.cgroup_procs() {
            message.extend_from_slice(procs.to_bytes());
        }
        let (socket, theirs) =
            sys::seqpacket_pair().map_err(|e| Error::os("creating the call socket", e))?;
        let (result, memfd, page) = parts.child_fds();
        let fds = [theirs.as_raw_fd(), result, memfd, request.as_raw_fd(), page];
        sys::send_with_fds(self.control.as_fd(), &message, &fds)
            .map_err(|e| gone(format!("the forkserver is gone ({e})")))?;
        drop(theirs);
        parts.close_child_ends();
        let deadline = startup_budget(limits).and_then(|budget| started.at().checked_add(budget));
        Ok(PendingCall {
            server: StopServer(Some(Arc::clone(&self.pidfd))),
            parts,
            started,
            socket,
            deadline,
            limits: limits.clone(),
            terminate_descendants,
        })
    }

    /// Kills the server; the next call sees it dead and starts a new one.
    fn kill(&self) {
        kill_server(&self.pidfd);
    }
}

fn kill_server(pidfd: &OwnedFd) {
    let _ = sys::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
}

fn gone(why: String) -> Error {
    Error::from(ErrorKind::ForkServer(why))
}

/// A call sent to a forkserver ([`ForkServer::send_call`]) that the server
/// has not been seen to start yet. It owns all it needs, so the wait can go
/// on on any thread. Given up (dropped, or its wait interrupted or out of
/// start-up budget) before the start is seen, it stops the server: the call
/// may start behind its back, and would run unsupervised; the server's
/// death ends it (its guardian watches the server), and the next call
/// starts a new server.
pub struct PendingCall {
    server: StopServer,
    parts: CallParts,
    started: StartMark,
    socket: OwnedFd,
    /// The end of the start-up budget, if the call has one.
    deadline: Option<Instant>,
    limits: Limits,
    terminate_descendants: bool,
}

/// Kills the server when dropped, unless disarmed.
struct StopServer(Option<Arc<OwnedFd>>);

impl StopServer {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopServer {
    fn drop(&mut self) {
        if let Some(pidfd) = self.0.take() {
            kill_server(&pidfd);
        }
    }
}

/// How [`PendingCall::wait`] ended.
// One per call, moved once or twice (as `CallStart`): boxing would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Starting {
    /// The server answered: the call runs, or never will.
    Started(CallStart),
    /// The wait reached its end instant first; wait again later.
    Waiting(PendingCall),
}

impl PendingCall {
    /// [`PendingCall::wait`] with no end instant: until the server has
    /// started the call (or never will), or `interrupt` is raised.
    ///
    /// # Errors
    /// As [`ForkServer::start_call`].
    pub fn wait_to_start(self, interrupt: Option<&Interrupt>) -> Result<CallStart> {
        match self.wait(interrupt, None)? {
            Starting::Started(start) => Ok(start),
            Starting::Waiting(_) => unreachable!("a wait without an end instant never pauses"),
        }
    }

    /// Waits for the server to start the call: until it has (or its
    /// start-up budget ran out, see [`ForkServer::start_call`]), until
    /// `interrupt` is raised, or until `until`, whichever comes first.
    ///
    /// # Errors
    /// As [`ForkServer::start_call`].
    pub fn wait(self, interrupt: Option<&Interrupt>, until: Option<Instant>) -> Result<Starting> {
        let ends = [self.deadline, until].into_iter().flatten().min();
        loop {
            let mut poll = [
                libc::pollfd {
                    fd: self.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: interrupt.map_or(-1, |i| i.fd().as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = ends.map(|end| end.saturating_duration_since(Instant::now()));
            sys::poll(&mut poll, timeout).map_err(|e| Error::os("poll", e))?;
            if poll[0].revents != 0 {
                break;
            }
            // Giving up drops `self`, which stops the server.
            if interrupt.is_some_and(Interrupt::is_raised) {
                return Err(ErrorKind::Interrupted.into());
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                let finished = not_started(&self.limits, self.started.at());
                return Ok(Starting::Started(CallStart::NotStarted(finished)));
            }
            if until.is_some_and(|u| now >= u) {
                return Ok(Starting::Waiting(self));
            }
        }
        let mut buf = [0u8; 4];
        let (n, mut passed) = sys::recv_with_fds(self.socket.as_fd(), &mut buf)
            .map_err(|e| gone(format!("the forkserver failed ({e})")))?;
        if n != 4 || passed.len() != 1 {
            return Err(gone("the forkserver died before starting the call".into()));
        }
        let pid = Pid::from_le_bytes(buf);
        let pidfd = passed.remove(0);
        let PendingCall {
            server,
            parts,
            started,
            socket,
            limits,
            terminate_descendants,
            ..
        } = self;
        server.disarm();
        let mut supervised =
            parts.supervise_remote(pid, pidfd, socket, &limits, started, terminate_descendants);
        supervised.expect_startup();
        Ok(Starting::Started(CallStart::Running(supervised)))
    }
}

/// What [`ForkServer::start_call`] started.
// One per call, moved once or twice: boxing the supervisor would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
pub enum CallStart {
    /// The call runs; supervise it.
    Running(Supervised),
    /// The server did not start the call within its start-up budget.
    NotStarted(Finished),
}

/// The outcome of a call the server never started in time.
fn not_started(limits: &Limits, started: Instant) -> Finished {
    let waited = started.elapsed();
    let budget = startup_budget(limits).unwrap_or_default();
    Finished {
        outcome: Outcome {
            status: Status::WallTime,
            exit: None,
            usage: Usage {
                wall_time: waited,
                ..Usage::default()
            },
            detail: format!(
                "the forkserver did not start the call within its start-up budget of {} s \
                 (the wall-time limit or {} s, whichever is longer; is a preload module \
                 still importing?); the server was stopped and the next call starts a new one",
                budget.as_secs_f64(),
                STARTUP_BUDGET.as_secs()
            ),
        },
        frame: None,
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        // A forked child of the owner (one that exits through `sys.exit`,
        // say) holds a copy of this handle: the server is not its to stop.
        if std::process::id() as Pid != self.owner {
            return;
        }
        self.kill();
        let _ = sys::wait4(self.pid, true);
    }
}

/// The descriptors of one call, as the child sees them.
#[derive(Debug, Clone, Copy)]
pub struct CallFds {
    /// The request the caller wrote (a memfd; read it from offset 0).
    pub request: RawFd,
    /// The write end of the result pipe.
    pub result: RawFd,
    /// The memfd for large results.
    pub memfd: RawFd,
    /// The call's page (see [`CallPage`](crate::guardian::CallPage)), for
    /// [`guardian::split`](crate::guardian::split).
    pub page: RawFd,
}

struct Running {
    pidfd: OwnedFd,
    socket: OwnedFd,
}

/// The server's loop: for each call request on `control`, forks a child that
/// has taken step 1 of [`CallProcess`] and runs `child_main` (which takes
/// the next ones and must end the process, for example with
/// [`finish_child`]), and reports each child's exit. Returns when the
/// caller closes the control socket or `caller`, the server's parent, exits.
/// A server whose parent is no longer `caller` returns at once.
///
/// # Safety
/// As [`fork_with`](crate::fork::fork_with): the children are forks of this process, so it
/// should be single-threaded.
///
/// # Errors
/// Polling or receiving on the control socket failed.
pub unsafe fn serve<H: ForkHooks>(
    control: OwnedFd,
    caller: Pid,
    hooks: &H,
    mut child_main: impl FnMut(CallFds, CallProcess<step::Early>),
) -> Result<()> {
    // Watch the caller, whichever of its threads started this server.
    let caller_fd = match sys::pidfd_open(caller) {
        Ok(fd) => fd,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(err) => return Err(Error::os("pidfd_open (the forkserver's caller)", err)),
    };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != caller {
        // The caller died before its pidfd was opened (this process was
        // reparented), so the pidfd may name another process.
        return Ok(());
    }
    // Every call's guardian execs the same program: write it once, here.
    crate::guardian::prepare()?;
    let setup = ChildSetup::new(&Limits::new(), None);
    let mut running: HashMap<Pid, Running> = HashMap::new();
    loop {
        let mut fds = vec![
            libc::pollfd {
                fd: control.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: caller_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let pids: Vec<Pid> = running.keys().copied().collect();
        fds.extend(pids.iter().map(|pid| libc::pollfd {
            fd: running[pid].pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        sys::poll(&mut fds, None).map_err(|e| Error::os("poll", e))?;

        if fds[1].revents != 0 {
            return Ok(());
        }
        for (pid, fd) in pids.iter().zip(&fds[2..]) {
            if fd.revents == 0 {
                continue;
            }
            if let Some(call) = running.remove(pid) {
                if let Ok(Some((status, usage))) = sys::wait4(*pid, true) {
                    let _ = sys::send_with_fds(
                        call.socket.as_fd(),
                        &RemoteExit::encode(status, &usage),
                        &[],
                    );
                }
            }
        }
        if fds[0].revents == 0 {
            continue;
        }
        let mut buf = [0u8; CALL_MESSAGE.len() + libc::PATH_MAX as usize];
        let (n, passed) =
            sys::recv_with_fds(control.as_fd(), &mut buf).map_err(|e| Error::os("recvmsg", e))?;
        if n == 0 {
            return Ok(());
        }
        let [socket, result, memfd, request, page]: [OwnedFd; 5] = match passed.try_into() {
            Ok(fds) if buf[..n].starts_with(CALL_MESSAGE) => fds,
            _ => continue,
        };
        // A server started with its standard descriptors closed receives
        // these on 0, 1 or 2, where the call's output would go.
        let (Ok(result), Ok(memfd), Ok(request), Ok(page)) = (
            sys::off_stdio(result),
            sys::off_stdio(memfd),
            sys::off_stdio(request),
            sys::off_stdio(page),
        ) else {
            continue;
        };
        // Built before the fork: the child must not allocate.
        let call_setup = match std::ffi::CString::new(&buf[CALL_MESSAGE.len()..n]) {
            Ok(procs) if !procs.is_empty() => setup.clone().with_cgroup(&procs),
            _ => setup.clone(),
        };
        let call = CallFds {
            request: request.as_raw_fd(),
            result: result.as_raw_fd(),
            memfd: memfd.as_raw_fd(),
            page: page.as_raw_fd(),
        };
        // SAFETY: the caller of `serve` upholds fork's contract.
        let pid = match unsafe { fork_call_process(hooks, || ()) } {
            Ok(Forked::Parent(pid, ())) => pid,
            Err(_) => continue,
            Ok(Forked::Child(process)) => {
                // The child keeps only its own call's descriptors.
                drop(running);
                drop(control);
                drop(caller_fd);
                drop(socket);
                run_call_child(process, &call_setup, call, hooks, &mut child_main)
            }
        };
        // Opened before the child can be reaped, so it names this child only.
        // Unsupervised, the call must not run: the caller's `start_call`
        // sees the socket close and reports it.
        let Ok(pidfd) = sys::pidfd_of_new_child(pid) else {
            continue;
        };
        if sys::send_with_fds(socket.as_fd(), &pid.to_le_bytes(), &[pidfd.as_raw_fd()]).is_ok() {
            running.insert(pid, Running { pidfd, socket });
        } else {
            // The caller gave up on this call: stop the child.
            let _ = sys::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::wait4(pid, true);
        }
        drop((result, memfd, request, page));
    }
}

/// A forkserver's child for one call: step 1 of [`CallProcess`], then
/// `child_main`, which takes the others. Never returns.
fn run_call_child<H: ForkHooks>(
    process: CallProcess<step::Started>,
    setup: &ChildSetup,
    call: CallFds,
    hooks: &H,
    child_main: &mut impl FnMut(CallFds, CallProcess<step::Early>),
) -> ! {
    let early = match process.setup_early(setup) {
        Ok(early) => early,
        Err(err) => setup_failed(&mut Sender::new(call.result, call.memfd), err),
    };
    hooks.after_child();
    // `child_main` splits off the call's guardian once it knows the call's
    // options.
    child_main(call, early);
    finish_child(false)
}
