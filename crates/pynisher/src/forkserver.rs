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
//! The server dies with its caller (parent-death signal, and end of file on
//! its control socket), and every call's tree dies with the server (the
//! call's guardian watches it), so nothing outlives the caller.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::channel;
use crate::child::ChildSetup;
use crate::error::{Error, ErrorKind, Result};
use crate::exec::{self, Program};
use crate::fork::{self, ForkHooks};
use crate::limits::Limits;
use crate::supervisor::{RemoteExit, Supervised};
use crate::sys::{self, Pid};

/// The descriptor at which the server finds its control socket.
pub const CONTROL_FD: RawFd = 3;
/// How long the caller waits for the server to start a call.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_MESSAGE: &[u8] = b"call";

/// The caller's handle on a running forkserver. Dropping it kills the server.
#[derive(Debug)]
pub struct ForkServer {
    pid: Pid,
    control: OwnedFd,
}

impl ForkServer {
    /// Starts `program` as a forkserver. It receives the control socket as
    /// descriptor [`CONTROL_FD`], runs in its own process group (so a
    /// terminal's Ctrl-C does not reach it) and dies with the caller.
    ///
    /// # Errors
    /// The socket, the fork or the exec failed.
    pub fn start(program: Program) -> Result<ForkServer> {
        let (control, theirs) =
            sys::seqpacket_pair().map_err(|e| Error::os("creating the forkserver socket", e))?;
        let program = program.pass_fd(theirs.as_raw_fd(), CONTROL_FD);
        let setup = ChildSetup::new(&Limits::new(), None);
        let (pid, _) = exec::start(&program, &setup, false)?;
        drop(theirs);
        Ok(ForkServer { pid, control })
    }

    /// The server's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Whether the server is still running. Reaps it if it has exited.
    pub fn is_alive(&self) -> bool {
        matches!(sys::wait4(self.pid, false), Ok(None))
    }

    /// Asks the server to run one call. `request` is handed to the child;
    /// the child applies `limits` itself after start-up (see
    /// [`Tag::Ready`](crate::channel::Tag::Ready)).
    ///
    /// # Errors
    /// [`ErrorKind::ForkServer`] if the server is gone or did not answer; the
    /// call has then not started and may be retried with a new server.
    pub fn start_call(
        &self,
        request: BorrowedFd<'_>,
        limits: &Limits,
        terminate_descendants: bool,
    ) -> Result<Supervised> {
        limits.validate()?;
        let gone = |why: String| Error::from(ErrorKind::ForkServer(why));
        let (receiver, write_end, memfd) =
            channel::pair().map_err(|e| Error::os("creating the result channel", e))?;
        let (mine, theirs) =
            sys::seqpacket_pair().map_err(|e| Error::os("creating the call socket", e))?;
        let fds = [
            theirs.as_raw_fd(),
            write_end.as_raw_fd(),
            memfd.as_raw_fd(),
            request.as_raw_fd(),
        ];
        sys::send_with_fds(self.control.as_fd(), CALL_MESSAGE, &fds)
            .map_err(|e| gone(format!("the forkserver is gone ({e})")))?;
        let started = Instant::now();
        drop((theirs, write_end, memfd));

        let mut poll = [libc::pollfd {
            fd: mine.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if sys::poll(&mut poll, Some(START_TIMEOUT)).map_err(|e| Error::os("poll", e))? == 0 {
            return Err(gone("the forkserver did not start the call in time".into()));
        }
        let mut buf = [0u8; 4];
        let (n, mut passed) = sys::recv_with_fds(mine.as_fd(), &mut buf)
            .map_err(|e| gone(format!("the forkserver failed ({e})")))?;
        if n != 4 || passed.len() != 1 {
            return Err(gone("the forkserver died before starting the call".into()));
        }
        let pid = Pid::from_le_bytes(buf);
        let pidfd = passed.remove(0);
        let mut supervised = Supervised::remote(
            pid,
            pidfd,
            mine,
            receiver,
            limits.clone(),
            started,
            terminate_descendants,
        );
        supervised.expect_startup();
        supervised.expect_guardian();
        Ok(supervised)
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        let _ = sys::kill(self.pid, libc::SIGKILL);
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
}

struct Running {
    pidfd: OwnedFd,
    socket: OwnedFd,
}

/// The server's loop: for each call request on `control`, forks a child that
/// runs `child_main` (which must end the process, for example with
/// [`fork::finish_child`]), and reports each child's exit. Returns when the
/// caller closes the control socket.
///
/// # Safety
/// As [`fork::fork_with`]: the children are forks of this process, so it
/// should be single-threaded.
///
/// # Errors
/// Polling or receiving on the control socket failed.
pub unsafe fn serve<H: ForkHooks>(
    control: OwnedFd,
    hooks: &H,
    mut child_main: impl FnMut(CallFds),
) -> Result<()> {
    let setup = ChildSetup::new(&Limits::new(), None);
    let mut running: HashMap<Pid, Running> = HashMap::new();
    loop {
        let mut fds = vec![libc::pollfd {
            fd: control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let pids: Vec<Pid> = running.keys().copied().collect();
        fds.extend(pids.iter().map(|pid| libc::pollfd {
            fd: running[pid].pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        sys::poll(&mut fds, None).map_err(|e| Error::os("poll", e))?;

        for (pid, fd) in pids.iter().zip(&fds[1..]) {
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
        let mut buf = [0u8; 16];
        let (n, passed) =
            sys::recv_with_fds(control.as_fd(), &mut buf).map_err(|e| Error::os("recvmsg", e))?;
        if n == 0 {
            return Ok(());
        }
        let [socket, result, memfd, request]: [OwnedFd; 4] = match passed.try_into() {
            Ok(fds) if &buf[..n] == CALL_MESSAGE => fds,
            _ => continue,
        };
        // A server started with its standard descriptors closed receives
        // these on 0, 1 or 2, where the call's output would go.
        let (Ok(result), Ok(memfd), Ok(request)) = (
            sys::off_stdio(result),
            sys::off_stdio(memfd),
            sys::off_stdio(request),
        ) else {
            continue;
        };
        let call = CallFds {
            request: request.as_raw_fd(),
            result: result.as_raw_fd(),
            memfd: memfd.as_raw_fd(),
        };
        hooks.before();
        // SAFETY: the caller of `serve` upholds fork's contract.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // The child keeps only its own call's descriptors.
            drop(running);
            drop(control);
            drop(socket);
            if let Err(err) = setup.apply_early() {
                let mut buf = [0u8; 128];
                let mut sender = channel::Sender::new(call.result, call.memfd);
                let _ = sender.send(channel::Tag::SetupFailed, &[err.describe(&mut buf)]);
                fork::finish_child(true);
            }
            hooks.after_child();
            // `child_main` splits off the call's guardian (see
            // [`guardian::split`](crate::guardian::split)) once it knows the
            // call's options.
            child_main(call);
            fork::finish_child(false);
        }
        hooks.after_parent();
        if pid < 0 {
            continue;
        }
        // Opened before the child can be reaped, so it names this child only.
        let Ok(pidfd) = sys::pidfd_open(pid) else {
            continue;
        };
        if sys::send_with_fds(socket.as_fd(), &pid.to_le_bytes(), &[pidfd.as_raw_fd()]).is_ok() {
            running.insert(pid, Running { pidfd, socket });
        } else {
            // The caller gave up on this call: stop the child.
            let _ = sys::pidfd_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = sys::wait4(pid, true);
        }
        drop((result, memfd, request));
    }
}
