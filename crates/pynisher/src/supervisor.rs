//! The wait loop: deadline, sampling, kill, reap, classify.
//!
//! The supervisor waits on three things at once with `poll`: the child's pidfd
//! (readable when it exits), the result channel (read as data arrives, so a
//! large result never fills the pipe) and the nearest deadline. Between them
//! it wakes on a short tick to sample the tree and to run the caller's
//! interrupt check, so Ctrl-C in a Python caller is noticed within
//! [`CHECK_INTERVAL`].
//!
//! The loop's shape (`Supervised::supervise`): `Clocks` holds when each
//! timed duty is next due (the wall deadline, the hard kill after a grace
//! period, the discovery scan, the tree sample, the caller's check). Each
//! turn runs what is due (`on_due_timers`), sleeps in `poll` until the next
//! clock or an event (`wait_for_event`), and handles the event: data on the
//! channel (`on_channel`: the start-up's end, a result), an interrupt (the
//! check runs at once), or the child's exit, after which `finish` kills what
//! is left, reaps, measures and classifies the call (`classify`). A failed
//! check or `poll` kills and reaps the tree and returns [`Stop`].

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::background::Interrupt;
use crate::cgroup::{CallCgroup, OomCounter, OomKills};
use crate::channel::{self, Frame, LentSink, Ready, Received, Receiver, Tag};
use crate::error::Error;
use crate::guardian::CallPage;
use crate::limits::{Limits, MemoryMode};
use crate::outcome::{Exit, Outcome, Status, Usage};
use crate::sys::{self, Pid};
use crate::tree::{Sample, Tree};

/// How often the caller's interrupt check runs.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// How often the tree is scanned when no tree limit needs closer watching;
/// the scan remembers descendants so that orphans can still be killed.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);
/// The finest sampling interval, used close to the CPU limit and in resident
/// memory mode.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);
const MIB: f64 = 1024.0 * 1024.0;
/// How long killing the tree may take before the supervisor gives up waiting.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the supervisor stopped early.
#[derive(Debug)]
pub enum Stop<E> {
    /// The caller's check returned this error; the tree has been killed.
    Interrupted(E),
    /// Supervision itself failed; the tree has been killed.
    Failed(Error),
}

/// The end of a supervised call: its outcome and the frame it sent, if any.
#[derive(Debug)]
pub struct Finished {
    pub outcome: Outcome,
    /// The complete frame the child sent, if it sent one.
    pub frame: Option<Frame>,
}

/// A running child under supervision.
pub struct Supervised {
    pid: Pid,
    pidfd: OwnedFd,
    reaper: Reaper,
    receiver: Option<Receiver>,
    limits: Limits,
    /// When the call's wall time started: at the start mark, or for a fresh
    /// interpreter at the end of its start-up.
    started: Instant,
    terminate_descendants: bool,
    interrupt_signal: Option<i32>,
    /// The child is a fresh interpreter that announces the end of its
    /// start-up with a `Ready` frame.
    expects_ready: bool,
    /// The call's own cgroup, when the kernel enforces the resident limit.
    cgroup: Option<CallCgroup>,
    /// The child is a call's [guardian](crate::guardian), which kills what
    /// the call left behind before it exits.
    guarded: bool,
    /// The call's page, on which its guardian reports how the function
    /// ended and what it used.
    page: Option<CallPage>,
    /// Take the peak memory from the page (a spawned interpreter's own peak
    /// includes the caller's, since Linux carries it across `execve`).
    peak_from_page: bool,
    /// The mark taken before the child started; its OOM-kill count is the
    /// evidence of a memory cap outside pynisher.
    start: StartMark,
    /// Where a buffer the child lends goes (see [`crate::channel`]); without
    /// one the child is asked to copy it into the memfd.
    lent_sink: Option<Box<dyn LentSink>>,
}

/// Who reaps the child and so knows its exit status and rusage.
enum Reaper {
    /// The child is ours: `wait4`.
    Parent,
    /// A forkserver reaps it and sends its exit status and rusage over this
    /// socket (see [`RemoteExit`]).
    Remote(OwnedFd),
}

/// The least time a fresh interpreter gets to start up (start the
/// interpreter, import and unpickle the function; for a forkserver call, also
/// wait for the server, which may still be importing its preload modules)
/// under a wall-time limit.
pub const STARTUP_BUDGET: Duration = Duration::from_secs(10);

/// How long start-up may take under `limits`: the wall-time limit or
/// [`STARTUP_BUDGET`], whichever is longer; `None` without a wall-time limit.
pub fn startup_budget(limits: &Limits) -> Option<Duration> {
    limits.wall_time.map(|t| t.max(STARTUP_BUDGET))
}

/// How long to wait for a forkserver to report an exit it has seen.
const REMOTE_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exit report a forkserver sends for a child it reaped: the wait status,
/// then user and system CPU in microseconds and `ru_maxrss` in KiB, each a
/// little-endian i64.
pub struct RemoteExit;

impl RemoteExit {
    /// Size of one report.
    pub const LEN: usize = 32;

    /// Encodes a report from `wait4`'s results.
    pub fn encode(status: libc::c_int, usage: &libc::rusage) -> [u8; Self::LEN] {
        let micros = |tv: libc::timeval| tv.tv_sec * 1_000_000 + tv.tv_usec;
        let words = [
            status as i64,
            micros(usage.ru_utime),
            micros(usage.ru_stime),
            usage.ru_maxrss,
        ];
        let mut out = [0u8; Self::LEN];
        for (chunk, word) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<(libc::c_int, libc::rusage)> {
        if bytes.len() != Self::LEN {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            i64::from_le_bytes(w)
        };
        let timeval = |micros: i64| libc::timeval {
            tv_sec: micros / 1_000_000,
            tv_usec: micros % 1_000_000,
        };
        // SAFETY: rusage is plain data; all-zero is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        usage.ru_utime = timeval(word(1));
        usage.ru_stime = timeval(word(2));
        usage.ru_maxrss = word(3);
        Some((word(0) as libc::c_int, usage))
    }
}

/// The tree's CPU time against the CPU limit when the result arrived.
enum CpuAtResult {
    Over(KillReason),
    Under,
    /// Not measured when the result arrived: the kernel's account at the
    /// exit decides (the processes had already exited, or their guardian
    /// accounts for all of them).
    Unmeasured,
}

/// The reason the supervisor stopped the tree, if it did.
#[derive(Debug, Clone)]
struct KillReason {
    status: Status,
    detail: String,
    /// Whether the result frame was already complete when the kill began. A
    /// frame that completes afterwards is a consequence of the kill (say, a
    /// SIGTERM handler that raises) and does not win over it.
    after_result: bool,
}

/// What the wait loop keeps from one wake-up to the next.
struct Watch {
    tree: Tree,
    clocks: Clocks,
    /// A fresh interpreter's `Ready` frame, once it arrived: start-up is not
    /// charged to the call.
    startup: Option<Ready>,
    /// Why the supervisor stopped the tree, once it did; from then on the
    /// wall deadline no longer counts.
    kill_reason: Option<KillReason>,
    /// The memory limit when it is enforced by sampling.
    resident_limit: Option<u64>,
    /// The last tree sample.
    sample: Sample,
    /// The highest private memory any sample saw.
    peak_private: u64,
    /// The tree's CPU time against the CPU limit when the result arrived,
    /// once measured.
    result_cpu: Option<CpuAtResult>,
}

/// The call's clocks: when each timed duty of the wait loop is next due.
struct Clocks {
    /// When the wall-time limit runs out (before a fresh interpreter's
    /// `Ready` frame: its start-up budget); `None` if never.
    wall_deadline: Option<Instant>,
    /// When the grace period after a soft stop ends and the tree is killed.
    hard_kill_at: Option<Instant>,
    /// When the tree is next sampled against the tree limits.
    next_sample: Instant,
    /// The scans that remember descendants between samples; `None` if the
    /// call needs none.
    discovery: Option<Discovery>,
    /// When the caller's check next runs.
    next_check: Instant,
}

/// Scans for descendants, at first often, then every [`SNAPSHOT_INTERVAL`].
struct Discovery {
    interval: Duration,
    next: Instant,
}

impl Clocks {
    /// The next moment the loop must wake up. The wall deadline counts only
    /// while `deadline_armed` (no kill has begun).
    fn next_wake(&self, deadline_armed: bool) -> Instant {
        [
            Some(self.next_sample),
            Some(self.next_check),
            self.discovery.as_ref().map(|d| d.next),
            self.wall_deadline.filter(|_| deadline_armed),
            self.hard_kill_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.next_check)
    }
}

/// What woke the loop.
struct Events {
    /// The child exited (its pidfd is readable).
    exited: bool,
    /// The result channel has data (or was closed).
    channel: bool,
    /// Another thread raised the interrupt.
    interrupt: bool,
}

/// Where [`Supervised::supervise`] stopped.
enum Ran<E> {
    /// The call ended, or the supervision failed or was interrupted.
    Ended(Result<Finished, Stop<E>>),
    /// The wait reached its end instant first. (Boxed: that is the rare
    /// case, and the state is large.)
    Paused(Box<Paused>),
}

/// A call under supervision whose wait was paused before the call ended
/// ([`Supervised::wait_until_first_check`]): every clock and every sample so
/// far, ready to go on, on any thread.
pub struct Paused {
    supervised: Supervised,
    watch: Watch,
}

impl Paused {
    /// Goes on supervising the call to its end, as
    /// [`Supervised::wait_interruptible`] (whose clocks started with the call).
    ///
    /// # Errors
    /// As [`Supervised::wait_interruptible`].
    pub fn wait_interruptible(self, interrupt: &Interrupt) -> Result<Finished, Stop<()>> {
        let check = || {
            if interrupt.is_raised() {
                Err(())
            } else {
                Ok(())
            }
        };
        let Paused { supervised, watch } = self;
        supervised.supervise_to_end(watch, check, Some(interrupt.raw_fd()))
    }
}

/// The mark of a call's start, taken right *before* its process is started
/// (the fork, the clone or the forkserver's request), and required to take
/// charge of it ([`Supervised::new`], [`Supervised::remote`]): when its wall
/// time starts, and the first read of the caller's OOM-kill counter, the
/// evidence of a memory cap outside pynisher. Read after the start, that
/// count could already include an OOM kill of the call's first microseconds,
/// which would then not count as the call's and leave it `crashed`.
#[derive(Debug)]
pub struct StartMark {
    at: Instant,
    outside_oom: Option<OomCounter>,
}

impl StartMark {
    /// Takes the mark: call it before the process exists.
    pub fn now() -> StartMark {
        let outside_oom = OomCounter::start();
        StartMark {
            at: Instant::now(),
            outside_oom,
        }
    }

    /// When the call started.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The OOM kills the caller's memory cgroup counted since the mark, if
    /// it has a readable counter.
    pub fn oom_kills_since(&self) -> Option<OomKills> {
        self.outside_oom.as_ref().and_then(OomCounter::since_start)
    }
}

impl Supervised {
    /// Takes charge of `pid`, an unreaped child of this process started
    /// just after `start` was taken.
    ///
    /// # Errors
    /// The pidfd could not be opened; the child is then stopped and reaped.
    pub fn new(
        pid: Pid,
        receiver: Option<Receiver>,
        limits: Limits,
        start: StartMark,
        terminate_descendants: bool,
    ) -> Result<Supervised, Error> {
        let pidfd = sys::pidfd_of_new_child(pid).map_err(|e| Error::os("pidfd_open", e))?;
        Ok(Supervised::build(
            pid,
            pidfd,
            Reaper::Parent,
            receiver,
            limits,
            start,
            terminate_descendants,
        ))
    }

    fn build(
        pid: Pid,
        pidfd: OwnedFd,
        reaper: Reaper,
        receiver: Option<Receiver>,
        limits: Limits,
        start: StartMark,
        terminate_descendants: bool,
    ) -> Supervised {
        Supervised {
            pid,
            pidfd,
            reaper,
            receiver,
            limits,
            started: start.at,
            terminate_descendants,
            interrupt_signal: None,
            expects_ready: false,
            cgroup: None,
            guarded: false,
            page: None,
            peak_from_page: false,
            start,
            lent_sink: None,
        }
    }

    /// Puts the call's cgroup (which the child joined) under this
    /// supervisor: it kills through it, reads its peak and OOM kills, and
    /// removes it at the end.
    pub fn with_cgroup(mut self, cgroup: Option<CallCgroup>) -> Supervised {
        self.cgroup = cgroup;
        self
    }

    /// Takes charge of `pid`, a child of a forkserver, named by `pidfd` (which
    /// the server opened before it could reap the child, so it cannot name a
    /// reused pid). The server reports the exit on `exit_socket`.
    pub fn remote(
        pid: Pid,
        pidfd: OwnedFd,
        exit_socket: OwnedFd,
        receiver: Receiver,
        limits: Limits,
        start: StartMark,
        terminate_descendants: bool,
    ) -> Supervised {
        Supervised::build(
            pid,
            pidfd,
            Reaper::Remote(exit_socket),
            Some(receiver),
            limits,
            start,
            terminate_descendants,
        )
    }

    /// Collects the exit status and rusage of the exited child. If someone
    /// else reaped it (a caller that ignores SIGCHLD, or reaps with a handler
    /// or a `waitpid(-1)` thread), its guardian's report stands in.
    fn reap(&self) -> std::io::Result<Option<(libc::c_int, libc::rusage)>> {
        match &self.reaper {
            Reaper::Parent => match sys::wait4(self.pid, true) {
                Err(err) if err.raw_os_error() == Some(libc::ECHILD) => {
                    Ok(self.page.as_ref().and_then(CallPage::read).map(|report| {
                        // SAFETY: rusage is plain data; all-zero is valid.
                        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
                        usage.ru_utime = sys::to_timeval(report.total.user);
                        usage.ru_stime = sys::to_timeval(report.total.system);
                        usage.ru_maxrss = (report.total.peak_memory / 1024) as libc::c_long;
                        (report.status, usage)
                    }))
                }
                other => other,
            },
            Reaper::Remote(socket) => {
                let mut fds = [libc::pollfd {
                    fd: socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                if sys::poll(&mut fds, Some(REMOTE_EXIT_TIMEOUT))? == 0 {
                    return Ok(None);
                }
                let mut buf = [0u8; RemoteExit::LEN];
                let (n, _) = sys::recv_with_fds(socket.as_fd(), &mut buf)?;
                Ok(RemoteExit::decode(&buf[..n]))
            }
        }
    }

    /// Tells the supervisor that the child starts a fresh interpreter and
    /// sends a [`Tag::Ready`] frame once start-up is over: until then neither
    /// the wall-time nor the CPU-time limit applies, only the
    /// [`startup_budget`], counted from the start of the call.
    pub fn expect_startup(&mut self) {
        self.expects_ready = true;
    }

    /// The call's page, which its guardian fills (see
    /// [`CallPage`]): how the function ended, should someone else reap the
    /// guardian, and what it used.
    pub fn with_call_page(mut self, page: CallPage) -> Supervised {
        // `self` holds the pidfd already.
        page.mark_supervised();
        self.page = Some(page);
        self
    }

    /// Takes the peak memory from the call's page instead of from the
    /// child's own rusage: a spawned interpreter's own peak includes the
    /// caller's, since Linux carries it across `execve`.
    pub fn take_peak_from_page(&mut self) {
        self.peak_from_page = true;
    }

    /// Tells the supervisor that the child is a call's
    /// [guardian](crate::guardian): once it has exited, whatever the call
    /// started is dead already (or was meant to survive), so no scan of the
    /// tree is needed unless the supervisor itself stopped the call.
    pub fn expect_guardian(&mut self) {
        self.guarded = true;
    }

    /// Copies a buffer the child lends straight into `sink`'s buffer, once
    /// the result frame that lends it is complete.
    pub fn lend_into(&mut self, sink: Box<dyn LentSink>) {
        self.lent_sink = Some(sink);
    }

    /// On an interrupt, first send `signal` to the tree and give it the grace
    /// period to exit before killing it. `None` (the default) kills at once.
    pub fn set_interrupt_signal(&mut self, signal: Option<i32>) {
        self.interrupt_signal = signal;
    }

    /// The child's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Supervises the call to its end.
    ///
    /// # Errors
    /// Only if supervision itself fails; every outcome of the call, limits
    /// included, is an `Ok`.
    pub fn wait(self) -> Result<Finished, Error> {
        self.wait_with(|| Ok::<(), std::convert::Infallible>(()))
            .map_err(|stop| match stop {
                Stop::Failed(err) => err,
                Stop::Interrupted(never) => match never {},
            })
    }

    /// Supervises the call to its end, running `check` every
    /// [`CHECK_INTERVAL`]. If `check` fails, the whole tree is killed and
    /// reaped and its error is returned as [`Stop::Interrupted`].
    ///
    /// # Errors
    /// [`Stop::Interrupted`] as above, or [`Stop::Failed`] if supervision
    /// itself fails.
    pub fn wait_with<E>(self, check: impl FnMut() -> Result<(), E>) -> Result<Finished, Stop<E>> {
        let watch = self.start_watch();
        self.supervise_to_end(watch, check, None)
    }

    /// Supervises the call to its end, or until another thread raises
    /// `interrupt`: then the whole tree is killed and reaped at once and
    /// [`Stop::Interrupted`] returned. This is the wait of
    /// [`run_beside`](crate::run_beside), which needs no lock of the caller.
    ///
    /// # Errors
    /// [`Stop::Interrupted`] as above, or [`Stop::Failed`] if supervision
    /// itself fails.
    pub fn wait_interruptible(self, interrupt: &Interrupt) -> Result<Finished, Stop<()>> {
        let watch = self.start_watch();
        Paused {
            supervised: self,
            watch,
        }
        .wait_interruptible(interrupt)
    }

    /// Supervises the call on the calling thread until it ends, but no
    /// longer than until the caller's first check is due ([`CHECK_INTERVAL`]
    /// from now), which this wait never runs: a call that ends sooner needs
    /// no other thread and no lock of the caller. Every limit is enforced
    /// meanwhile. Otherwise the supervision is [`Paused`], to go on (on
    /// another thread, say) with [`Paused::wait_interruptible`].
    ///
    /// # Errors
    /// `Ok(Err(_))` if supervision itself failed; the tree is then killed
    /// and reaped.
    pub fn wait_until_first_check(self) -> Result<Result<Finished, Error>, Box<Paused>> {
        self.wait_until(Instant::now() + CHECK_INTERVAL)
    }

    /// As [`Supervised::wait_until_first_check`], with the first check due
    /// at `until`: for a call whose start already took part of the time
    /// before it (a forkserver's).
    ///
    /// # Errors
    /// As [`Supervised::wait_until_first_check`].
    pub fn wait_until(self, until: Instant) -> Result<Result<Finished, Error>, Box<Paused>> {
        let watch = self.start_watch();
        match self.supervise(
            watch,
            || Ok::<(), std::convert::Infallible>(()),
            None,
            Some(until),
        ) {
            Ran::Ended(ended) => Ok(ended.map_err(|stop| match stop {
                Stop::Failed(err) => err,
                Stop::Interrupted(never) => match never {},
            })),
            Ran::Paused(paused) => Err(paused),
        }
    }

    /// [`Supervised::supervise`] with no end instant, which never pauses.
    fn supervise_to_end<E>(
        self,
        watch: Watch,
        check: impl FnMut() -> Result<(), E>,
        interrupt_fd: Option<std::os::fd::RawFd>,
    ) -> Result<Finished, Stop<E>> {
        match self.supervise(watch, check, interrupt_fd, None) {
            Ran::Ended(ended) => ended,
            Ran::Paused(_) => unreachable!("a wait without an end instant never pauses"),
        }
    }

    /// The wait loop. `interrupt_fd`, when readable, makes it run `check` at
    /// once. With `until`, it pauses at that instant if the call has not
    /// ended.
    fn supervise<E>(
        mut self,
        mut watch: Watch,
        mut check: impl FnMut() -> Result<(), E>,
        interrupt_fd: Option<std::os::fd::RawFd>,
        until: Option<Instant>,
    ) -> Ran<E> {
        loop {
            if until.is_some_and(|until| Instant::now() >= until) {
                return Ran::Paused(Box::new(Paused {
                    supervised: self,
                    watch,
                }));
            }
            if let Err(err) = self.on_due_timers(&mut watch, &mut check) {
                self.stop_interrupted(&mut watch.tree);
                return Ran::Ended(Err(Stop::Interrupted(err)));
            }
            let events = match self.wait_for_event(&watch, interrupt_fd, until) {
                Ok(events) => events,
                Err(err) => {
                    self.kill_tree(&mut watch.tree);
                    let _ = self.reap();
                    return Ran::Ended(Err(Stop::Failed(Error::os("poll", err))));
                }
            };
            if events.channel {
                self.on_channel(&mut watch);
            }
            if events.interrupt {
                watch.clocks.next_check = Instant::now();
            }
            if events.exited {
                return Ran::Ended(self.finish(watch));
            }
        }
    }

    /// The wait's state at its start: every clock set from the start of the
    /// call.
    fn start_watch(&self) -> Watch {
        let mut tree = Tree::new(self.pid);
        if self.guarded {
            tree = tree.without_root_memory();
        }
        // Until a fresh interpreter's `Ready` frame, only its start-up budget
        // applies (so that a hung import still ends).
        let budget = if self.expects_ready {
            startup_budget(&self.limits)
        } else {
            self.limits.wall_time
        };
        let resident_limit = self.resident_limit();
        // Without a guardian, discover early and often at first, then every
        // SNAPSHOT_INTERVAL: a descendant that escapes the process group and
        // outlives a crashing child can only be killed if a scan saw it
        // first. A guardian holds every orphan itself, so its call is only
        // scanned to sample tree limits (and when it is stopped).
        let discovers = !self.guarded || self.limits.cpu_time.is_some() || resident_limit.is_some();
        let clocks = Clocks {
            // A deadline the clock cannot represent (say, `Duration::MAX`) is
            // never reached: `checked_add` makes it `None`.
            wall_deadline: budget.and_then(|t| self.started.checked_add(t)),
            hard_kill_at: None,
            next_sample: self.started + self.first_sample_delay(),
            discovery: discovers.then(|| Discovery {
                interval: MIN_SAMPLE_INTERVAL,
                next: self.started + MIN_SAMPLE_INTERVAL,
            }),
            next_check: Instant::now() + CHECK_INTERVAL,
        };
        Watch {
            tree,
            clocks,
            startup: None,
            kill_reason: None,
            resident_limit,
            sample: Sample::default(),
            peak_private: 0,
            result_cpu: None,
        }
    }

    /// Runs whatever is due, in this order: the wall deadline, the hard kill
    /// after a grace period, the discovery scan, the tree sample and the
    /// caller's check (whose error it returns).
    fn on_due_timers<E>(
        &self,
        watch: &mut Watch,
        check: &mut impl FnMut() -> Result<(), E>,
    ) -> Result<(), E> {
        let now = Instant::now();
        if watch.kill_reason.is_none() {
            if let Some(deadline) = watch.clocks.wall_deadline.filter(|d| now >= *d) {
                self.on_wall_deadline(watch, deadline, now);
            }
        }
        if watch.clocks.hard_kill_at.is_some_and(|at| now >= at) {
            self.kill_tree(&mut watch.tree);
            watch.clocks.hard_kill_at = None;
        }
        if let Some(discovery) = watch.clocks.discovery.as_mut().filter(|d| now >= d.next) {
            watch.tree.follow();
            discovery.interval = (discovery.interval * 2).min(SNAPSHOT_INTERVAL);
            discovery.next = now + discovery.interval;
        }
        if now >= watch.clocks.next_sample {
            self.on_sample(watch, now);
        }
        if now >= watch.clocks.next_check {
            check()?;
            watch.clocks.next_check = now + CHECK_INTERVAL;
        }
        Ok(())
    }

    /// The wall-time limit (or the start-up budget) ran out at `deadline`:
    /// the soft stop, and the hard kill after the grace period.
    fn on_wall_deadline(&self, watch: &mut Watch, deadline: Instant, now: Instant) {
        let elapsed = (now - self.started).as_secs_f64();
        let detail = if self.expects_ready && watch.startup.is_none() {
            format!(
                "the child did not finish starting up (starting the interpreter, importing and \
                 unpickling the function) within {elapsed:.3} s; stopped with SIGTERM"
            )
        } else {
            format!(
                "wall time {elapsed:.3} s reached the limit of {}; stopped with SIGTERM",
                fmt_secs(self.limits.wall_time.unwrap_or_default())
            )
        };
        // A call that waits in a stopped process never ends by itself; say
        // so, since the usual cause is the terminal.
        watch.tree.discover();
        let detail = match watch.tree.stopped() {
            0 => detail,
            n => format!(
                "{detail}; {n} of its processes had been stopped by a signal: a process that \
                 reads from its terminal while in the background (the caller was not in the \
                 terminal's foreground) is stopped by SIGTTIN"
            ),
        };
        watch.kill_reason = Some(KillReason {
            status: Status::WallTime,
            detail,
            after_result: self.has_result(),
        });
        self.soft_stop(&mut watch.tree, libc::SIGTERM);
        watch.clocks.hard_kill_at = deadline.max(now).checked_add(self.limits.grace_period);
    }

    /// Samples the tree, stops it if it broke a tree limit, and sets the
    /// next sample.
    fn on_sample(&self, watch: &mut Watch, now: Instant) {
        let measure_started = Instant::now();
        watch.sample = watch.tree.measure(watch.resident_limit.is_some());
        let sample_cost = measure_started.elapsed();
        watch.peak_private = watch.peak_private.max(watch.sample.memory);
        let net = net_of_startup(watch.sample, watch.startup);
        // Before start-up is over the CPU limit does not apply yet.
        let started_up = !self.expects_ready || watch.startup.is_some();
        if watch.kill_reason.is_none() && started_up {
            if let Some(mut reason) = self.check_tree_limits(&net) {
                reason.after_result = self.has_result();
                let status = reason.status;
                watch.kill_reason = Some(reason);
                if status == Status::Memory {
                    // Over the memory limit the machine itself is at risk: no
                    // grace period.
                    self.kill_tree(&mut watch.tree);
                } else {
                    self.soft_stop(&mut watch.tree, libc::SIGXCPU);
                    watch.clocks.hard_kill_at = now.checked_add(self.limits.grace_period);
                }
            }
        }
        watch.clocks.next_sample = now + self.sample_interval(net.cpu, sample_cost);
    }

    /// The caller's check failed: stop the tree (with the interrupt signal
    /// and its grace period first, if one is set), kill and reap it.
    fn stop_interrupted(&self, tree: &mut Tree) {
        if let Some(signal) = self.interrupt_signal {
            self.soft_stop(tree, signal);
            let mut fd = [libc::pollfd {
                fd: self.pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let _ = sys::poll(&mut fd, Some(self.limits.grace_period));
        }
        self.kill_tree(tree);
        let _ = self.reap();
    }

    /// Sleeps in `poll` until the child exits, the channel or the interrupt
    /// descriptor is readable, or the next clock is due.
    fn wait_for_event(
        &self,
        watch: &Watch,
        interrupt_fd: Option<std::os::fd::RawFd>,
        until: Option<Instant>,
    ) -> std::io::Result<Events> {
        let wake = watch.clocks.next_wake(watch.kill_reason.is_none());
        let wake = until.map_or(wake, |until| wake.min(until));
        let channel = self
            .receiver
            .as_ref()
            .filter(|rx| !rx.is_done())
            .map_or(-1, |rx| rx.fd().as_raw_fd());
        let mut fds =
            [self.pidfd.as_raw_fd(), channel, interrupt_fd.unwrap_or(-1)].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        sys::poll(
            &mut fds,
            Some(wake.saturating_duration_since(Instant::now())),
        )?;
        Ok(Events {
            exited: fds[0].revents != 0,
            channel: fds[1].revents != 0,
            interrupt: fds[2].revents != 0,
        })
    }

    /// Data arrived on the result channel: a fresh interpreter's `Ready`
    /// frame restarts the clock, and a complete result is checked against
    /// the CPU limit.
    fn on_channel(&mut self, watch: &mut Watch) {
        if let Some(rx) = self.receiver.as_mut() {
            rx.pump();
            if let (None, Some(ready)) = (watch.startup, rx.ready()) {
                watch.startup = Some(ready);
                self.started = ready.at;
                watch.clocks.wall_deadline =
                    self.limits.wall_time.and_then(|t| ready.at.checked_add(t));
            }
        }
        if watch.kill_reason.is_none() && watch.result_cpu.is_none() && self.has_result() {
            let at_result = self.cpu_at_result(&mut watch.tree, watch.startup);
            if let CpuAtResult::Over(reason) = &at_result {
                watch.kill_reason = Some(reason.clone());
                self.soft_stop(&mut watch.tree, libc::SIGXCPU);
                watch.clocks.hard_kill_at = Instant::now().checked_add(self.limits.grace_period);
            }
            watch.result_cpu = Some(at_result);
        }
        if watch.kill_reason.is_none() && !self.take_lent() {
            // A child told nothing would wait for ever.
            self.kill_tree(&mut watch.tree);
        }
    }

    /// The result frame lends a buffer, and the child waits for it to be
    /// read: into the sink's buffer if it has one and the copy works, else
    /// the child is told to write it into the memfd. The child only waits
    /// while this runs (its other processes and threads, if any, are
    /// checked again right after). False if the child could not be
    /// answered.
    fn take_lent(&mut self) -> bool {
        let Some(rx) = self.receiver.as_mut() else {
            return true;
        };
        let Some(lent) = rx.lent() else {
            return true;
        };
        let read = self.lent_sink.as_mut().is_some_and(|sink| {
            let read = sink
                .buffer(lent.len)
                .is_some_and(|dest| channel::read_lent(&lent, dest).is_ok());
            if !read {
                sink.discard();
            }
            read
        });
        rx.answer_lent(read).is_ok()
    }

    /// The child has exited: clean up what is left, reap it, measure and
    /// classify the call.
    fn finish<E>(mut self, mut watch: Watch) -> Result<Finished, Stop<E>> {
        // The child has exited but is not reaped yet, so its pid (and its
        // process group) cannot be reused while the rest is cleaned up.
        let ended = Instant::now();
        if let Some(rx) = self.receiver.as_mut() {
            rx.pump();
        }
        let has_result = self.has_result();
        if watch.kill_reason.is_none() && watch.result_cpu.is_none() && has_result {
            let at_result = self.cpu_at_result(&mut watch.tree, watch.startup);
            if let CpuAtResult::Over(reason) = &at_result {
                watch.kill_reason = Some(reason.clone());
            }
            watch.result_cpu = Some(at_result);
        }
        self.kill_what_is_left(&mut watch, has_result);
        let reaped = self
            .reap()
            .map_err(|e| Stop::Failed(Error::os("collecting the exit status", e)))?;
        let (exit, rusage) = match reaped {
            Some((status, usage)) => (Some(Exit::from_wait_status(status)), Some(usage)),
            None => (None, None),
        };
        let mut usage = self.usage(&watch, ended, rusage);
        if !self.terminate_descendants {
            if let Some(cgroup) = self.cgroup.as_mut() {
                cgroup.keep_survivors();
            }
        }
        let oom_killed = self.cgroup.as_ref().is_some_and(|cgroup| {
            if let Some(peak) = cgroup.peak() {
                usage.peak_memory = peak;
            }
            cgroup.oom_kills() > 0
        });
        let (frame, corrupt) = self.take_frame();
        let returned = frame
            .as_ref()
            .is_some_and(|f| matches!(f.tag, Tag::Value | Tag::Error));
        // A kill that began after the result (a sample over the CPU limit,
        // say) does not win over it; the account at the exit still can.
        let result_may_win = watch.kill_reason.as_ref().is_none_or(|r| r.after_result);
        if result_may_win && returned {
            if let Some(CpuAtResult::Unmeasured) = watch.result_cpu {
                if let Some(reason) = self.cpu_at_exit(&usage) {
                    watch.kill_reason = Some(reason);
                }
            }
        }
        // Only a SIGKILL can be the OOM killer's.
        let outside_oom = match exit {
            Some(Exit::Signal(libc::SIGKILL)) if frame.is_none() => self.start.oom_kills_since(),
            _ => None,
        };
        let evidence = Evidence {
            exit,
            oom_killed,
            outside_oom,
        };
        let (status, detail) = classify(
            &self.limits,
            frame.as_ref(),
            watch.kill_reason,
            evidence,
            &usage,
            corrupt,
        );
        Ok(Finished {
            outcome: Outcome {
                status,
                exit,
                usage,
                detail,
            },
            frame,
        })
    }

    /// Kills what the call left once its child exited. A guardian has
    /// already killed it (unless it was meant to survive); only a limit or a
    /// command needs the (costlier) scan here. The group kill is one cheap
    /// backstop.
    fn kill_what_is_left(&self, watch: &mut Watch, has_result: bool) {
        let must_scan = !self.guarded
            && self.terminate_descendants
            && (!has_result || watch.tree.members_seen() > 0);
        if watch.kill_reason.is_some() || must_scan {
            self.kill_tree(&mut watch.tree);
        } else if self.terminate_descendants {
            let _ = sys::kill(-self.pid, libc::SIGKILL);
        }
    }

    /// What the call used, from the child's rusage, the last sample and the
    /// guardian's page.
    fn usage(&self, watch: &Watch, ended: Instant, rusage: Option<libc::rusage>) -> Usage {
        let mut usage = measure(
            ended.saturating_duration_since(self.started),
            rusage,
            net_of_startup(watch.sample, watch.startup),
            watch.startup,
        );
        if let Some(report) = self
            .page
            .as_ref()
            .filter(|_| self.peak_from_page)
            .and_then(CallPage::read)
        {
            usage.peak_memory = report.reaped.peak_memory;
        }
        if watch.resident_limit.is_some() {
            usage.peak_memory = watch.peak_private;
        }
        usage
    }

    /// The complete frame the child sent, or why what it sent is unusable.
    fn take_frame(&mut self) -> (Option<Frame>, Option<String>) {
        let Some(rx) = self.receiver.as_mut() else {
            return (None, None);
        };
        match rx.state().clone() {
            Received::Complete(_) => match rx.take_frame() {
                Ok(frame) => (frame, None),
                Err(err) => (None, Some(format!("could not read the result: {err}"))),
            },
            Received::Corrupt(why) => (None, Some(why)),
            Received::Pending => (None, None),
        }
    }

    /// For a call whose processes were gone before they could be measured
    /// at its result: only the kernel's account at its end (which includes
    /// the little CPU time spent exiting) can tell whether it reached the
    /// CPU limit. The tree is dead by now, unless `terminate_descendants` is
    /// off.
    fn cpu_at_exit(&self, usage: &Usage) -> Option<KillReason> {
        let limit = self.limits.cpu_time?;
        let cpu = usage.cpu_time();
        (cpu >= limit).then(|| KillReason {
            status: Status::CpuTime,
            detail: format!(
                "CPU time {:.3} s of the process tree reached the limit of {} before the call \
                 ended (it returned between two samples)",
                cpu.as_secs_f64(),
                fmt_secs(limit)
            ),
            after_result: false,
        })
    }

    /// Freezes and kills the whole tree, and everything in the call's cgroup.
    fn kill_tree(&self, tree: &mut Tree) {
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
        tree.kill_all(Some(&self.pidfd), KILL_TIMEOUT);
    }

    /// Sends the soft-stop signal to the whole tree.
    fn soft_stop(&self, tree: &mut Tree, signal: i32) {
        tree.discover();
        tree.signal(Some(&self.pidfd), signal);
        let _ = sys::kill(-self.pid, signal);
        // A stopped process would never act on the signal.
        tree.signal(Some(&self.pidfd), libc::SIGCONT);
        let _ = sys::kill(-self.pid, libc::SIGCONT);
    }

    /// Whether a complete result frame has arrived.
    fn has_result(&self) -> bool {
        self.receiver
            .as_ref()
            .is_some_and(|rx| matches!(rx.state(), Received::Complete(_)))
    }

    /// Whether the call had used up its CPU limit by the time its result
    /// arrived. A call that ends between two samples (a tiny limit, or a
    /// short burst) is only caught here: its result does not win over a
    /// limit it had already reached.
    fn cpu_at_result(&self, tree: &mut Tree, startup: Option<Ready>) -> CpuAtResult {
        let Some(limit) = self.limits.cpu_time else {
            return CpuAtResult::Under;
        };
        if self.expects_ready && startup.is_none() {
            return CpuAtResult::Under;
        }
        if self.guarded && self.terminate_descendants {
            // The guardian reaps every process of the call before it exits,
            // so its account at the end covers the whole tree, to the
            // microsecond: `cpu_at_exit` decides then, and this call is
            // spared a scan of every process on the machine.
            return CpuAtResult::Unmeasured;
        }
        tree.follow();
        let sample = net_of_startup(tree.measure(false), startup);
        // Below a guardian, the function's own process must still be alive
        // to be measured to the nanosecond: once reaped, its time is only
        // known in clock ticks.
        let function_alive = sample.alive >= if self.guarded { 2 } else { 1 };
        if sample.cpu < limit {
            return if function_alive {
                CpuAtResult::Under
            } else {
                CpuAtResult::Unmeasured
            };
        }
        CpuAtResult::Over(KillReason {
            status: Status::CpuTime,
            detail: format!(
                "CPU time {:.3} s of the process tree had reached the limit of {} when its \
                 result arrived",
                sample.cpu.as_secs_f64(),
                fmt_secs(limit)
            ),
            after_result: false,
        })
    }

    /// The memory limit when it is enforced by sampling the tree.
    fn resident_limit(&self) -> Option<u64> {
        match self.limits.memory_mode {
            MemoryMode::Resident if self.cgroup.is_none() => self.limits.memory,
            _ => None,
        }
    }

    /// The CPU-time or resident-memory limit the sample breaks, if any.
    fn check_tree_limits(&self, sample: &Sample) -> Option<KillReason> {
        if let Some(limit) = self.limits.cpu_time.filter(|limit| sample.cpu >= *limit) {
            return Some(KillReason {
                status: Status::CpuTime,
                detail: format!(
                    "CPU time {:.3} s of the process tree reached the limit of {}; \
                     stopped with SIGXCPU",
                    sample.cpu.as_secs_f64(),
                    fmt_secs(limit)
                ),
                after_result: false,
            });
        }
        if let Some(limit) = self.resident_limit().filter(|limit| sample.memory > *limit) {
            return Some(KillReason {
                status: Status::Memory,
                detail: format!(
                    "resident memory of the process tree reached {} bytes ({:.1} MiB), over \
                     the limit of {limit} bytes ({:.1} MiB); killed with SIGKILL",
                    sample.memory,
                    sample.memory as f64 / MIB,
                    limit as f64 / MIB
                ),
                after_result: false,
            });
        }
        None
    }

    fn first_sample_delay(&self) -> Duration {
        let mut delay = SNAPSHOT_INTERVAL;
        if let Some(limit) = self.limits.cpu_time {
            delay = delay.min(limit / 2);
        }
        if self.resident_limit().is_some() {
            delay = MIN_SAMPLE_INTERVAL;
        }
        delay.max(MIN_SAMPLE_INTERVAL)
    }

    /// How long until the next sample. Near the CPU limit it samples more
    /// often (the tree cannot burn more than one CPU-second per second per
    /// core); in resident mode it samples as often as the sampling cost
    /// allows, keeping the supervisor under about 5% of one core.
    fn sample_interval(&self, cpu: Duration, cost: Duration) -> Duration {
        let mut interval = SNAPSHOT_INTERVAL;
        if let Some(limit) = self.limits.cpu_time {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            interval = interval.min(limit.saturating_sub(cpu) / cores);
        }
        if self.resident_limit().is_some() {
            interval = interval.min(cost * 20);
        }
        interval.max(MIN_SAMPLE_INTERVAL)
    }

    /// The pidfd, for callers that poll several children.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// The sample without the CPU time a fresh interpreter spent starting up.
fn net_of_startup(mut sample: Sample, startup: Option<Ready>) -> Sample {
    if let Some(ready) = startup {
        sample.cpu = sample
            .cpu
            .saturating_sub(ready.startup_user + ready.startup_system);
    }
    sample
}

/// Combines `wait4`'s rusage (the child plus every descendant it reaped) with
/// the last tree sample (live descendants, and orphans reaped elsewhere).
fn measure(
    wall: Duration,
    rusage: Option<libc::rusage>,
    sample: Sample,
    startup: Option<Ready>,
) -> Usage {
    let (mut user, mut system, peak) = match rusage {
        Some(ru) => (
            sys::timeval(ru.ru_utime),
            sys::timeval(ru.ru_stime),
            (ru.ru_maxrss.max(0) as u64) * 1024,
        ),
        None => (Duration::ZERO, Duration::ZERO, 0),
    };
    if let Some(ready) = startup {
        user = user.saturating_sub(ready.startup_user);
        system = system.saturating_sub(ready.startup_system);
    }
    // The sample (already net of start-up) may have seen CPU time that rusage
    // does not cover, such as orphans reaped elsewhere; attribute the
    // difference to user time, where busy descendants spend it.
    if sample.cpu > user + system {
        user += sample.cpu - (user + system);
    }
    Usage {
        wall_time: wall,
        cpu_user: user,
        cpu_system: system,
        peak_memory: peak,
    }
}

/// What the kernel says about how the child ended.
#[derive(Debug, Clone, Default)]
struct Evidence {
    exit: Option<Exit>,
    /// The call's cgroup recorded an OOM kill.
    oom_killed: bool,
    /// For a SIGKILL without a result: the OOM kills in the caller's memory
    /// cgroup during the call, where they could be read.
    outside_oom: Option<OomKills>,
}

/// The kill reason's account of a time limit says which soft stop was sent;
/// if the call then died by SIGKILL, the soft stop did not end it within the
/// grace period, and the account says so.
fn kill_detail(reason: &KillReason, exit: Option<Exit>, grace: Duration) -> String {
    if exit == Some(Exit::Signal(libc::SIGKILL)) {
        for soft in ["SIGTERM", "SIGXCPU"] {
            if let Some(head) = reason.detail.strip_suffix(&format!("stopped with {soft}")) {
                return format!(
                    "{head}sent {soft}, still running after the grace period of {}; \
                     killed with SIGKILL",
                    fmt_secs(grace)
                );
            }
        }
    }
    reason.detail.clone()
}

/// Gives the call exactly one status. The first cause wins: a complete result
/// frame (unless it only completed after the supervisor began a kill), then
/// the supervisor's own kill reason, then the kernel's evidence (an OOM kill
/// in the call's cgroup, a SIGKILL while the caller's memory cgroup counted an
/// OOM kill, SIGXCPU or CPU time over the limit), and otherwise a crash with
/// the exit code or signal.
fn classify(
    limits: &Limits,
    frame: Option<&Frame>,
    kill_reason: Option<KillReason>,
    evidence: Evidence,
    usage: &Usage,
    corrupt: Option<String>,
) -> (Status, String) {
    let exit = evidence.exit;
    if let Some(reason) = kill_reason.as_ref().filter(|r| !r.after_result) {
        return (
            reason.status,
            kill_detail(reason, exit, limits.grace_period),
        );
    }
    if let Some(frame) = frame {
        return match frame.tag {
            Tag::Value => (Status::Ok, "returned a value".into()),
            Tag::Error => (Status::Error, "raised an exception".into()),
            Tag::OutOfMemory => (
                Status::Memory,
                match limits.memory {
                    Some(m) => format!("ran out of memory under the memory limit of {m} bytes"),
                    None => "ran out of memory".into(),
                },
            ),
            Tag::Ready => (
                Status::Crashed,
                "the child sent no result after starting".into(),
            ),
            Tag::SetupFailed => (
                Status::Crashed,
                format!(
                    "setting up the child failed: {}",
                    match &frame.payload {
                        crate::channel::Payload::Inline(text) =>
                            String::from_utf8_lossy(text).into_owned(),
                        _ => "(no message)".into(),
                    }
                ),
            ),
        };
    }
    if let Some(reason) = kill_reason {
        return (
            reason.status,
            kill_detail(&reason, exit, limits.grace_period),
        );
    }
    if evidence.oom_killed {
        let limit = limits.memory.unwrap_or_default();
        return (
            Status::Memory,
            format!(
                "resident memory of the call's cgroup reached the limit of {limit} bytes \
                 ({:.1} MiB); the kernel's OOM killer ended the whole call (memory.events oom_kill)",
                limit as f64 / MIB
            ),
        );
    }
    let sigkilled = exit == Some(Exit::Signal(libc::SIGKILL));
    if let Some(kills) = evidence
        .outside_oom
        .as_ref()
        .filter(|k| sigkilled && k.rose())
    {
        return (Status::Memory, outside_oom_detail(kills));
    }
    let exit_text = exit.map_or_else(
        || "ended, and its exit status was lost (did its forkserver die?)".to_owned(),
        |e| e.to_string(),
    );
    if let Some(limit) = limits.cpu_time {
        let cpu = usage.cpu_time();
        if exit == Some(Exit::Signal(libc::SIGXCPU)) || cpu >= limit {
            return (
                Status::CpuTime,
                format!(
                    "{exit_text}; CPU time {:.3} s against a limit of {} (evidence: {})",
                    cpu.as_secs_f64(),
                    fmt_secs(limit),
                    if exit == Some(Exit::Signal(libc::SIGXCPU)) {
                        "SIGXCPU from RLIMIT_CPU"
                    } else {
                        "CPU time at or over the limit"
                    }
                ),
            );
        }
    }
    let mut detail = match corrupt {
        Some(why) => format!("{exit_text}; {why}"),
        None if exit == Some(Exit::Code(crate::fork::EXIT_NO_FRAME)) => {
            format!(
                "{exit_text}: the child could not send its result (was the result channel closed?)"
            )
        }
        None => format!("{exit_text} without a result"),
    };
    if sigkilled {
        detail.push_str(&sigkill_cause(evidence.outside_oom.as_ref()));
    } else if limits.memory.is_some() && exit.and_then(Exit::signal).is_some() {
        detail.push_str(
            " (a memory limit was set; running out of memory inside native code can end this way)",
        );
    }
    (Status::Crashed, detail)
}

/// The detail of a call that the OOM killer of a cap outside pynisher ended.
fn outside_oom_detail(kills: &OomKills) -> String {
    let cap = match &kills.cap {
        Some((dir, bytes)) => format!(
            "the memory cap outside pynisher, memory.max of {} = {bytes} bytes ({:.1} MiB)",
            dir.display(),
            *bytes as f64 / MIB
        ),
        None => "a memory cap outside pynisher (no memory.max found)".to_owned(),
    };
    format!(
        "killed by SIGKILL without a result: the kernel's OOM killer ended the call at {cap}; \
         {} counted {} OOM kill(s) during the call",
        kills.counter.display(),
        kills.after - kills.before
    )
}

/// Why a call might have been SIGKILLed, given what the caller's memory
/// cgroup says.
fn sigkill_cause(kills: Option<&OomKills>) -> String {
    let evidence = match kills {
        Some(kills) => format!(
            "{} counted no OOM kill during the call",
            kills.counter.display()
        ),
        None => "the OOM-kill count of the caller's cgroup could not be read".to_owned(),
    };
    format!(
        "; SIGKILL comes from outside the call: most likely the kernel's OOM killer (the \
         machine ran out of memory) or another process ({evidence})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: Tag) -> Frame {
        Frame {
            tag,
            payload: crate::channel::Payload::Inline(Vec::new()),
        }
    }

    #[test]
    fn a_result_frame_wins_over_everything() {
        let limits = Limits::new().cpu_time(Duration::from_secs(1));
        let reason = KillReason {
            status: Status::WallTime,
            detail: String::new(),
            after_result: true,
        };
        let usage = Usage {
            cpu_user: Duration::from_secs(5),
            ..Usage::default()
        };
        let (status, _) = classify(
            &limits,
            Some(&frame(Tag::Value)),
            Some(reason),
            ended_with(Exit::Signal(libc::SIGXCPU)),
            &usage,
            None,
        );
        assert_eq!(status, Status::Ok);
    }

    #[test]
    fn a_frame_caused_by_the_kill_does_not_win() {
        let reason = KillReason {
            status: Status::WallTime,
            detail: "wall".into(),
            after_result: false,
        };
        let (status, detail) = classify(
            &Limits::new(),
            Some(&frame(Tag::Error)),
            Some(reason),
            ended_with(Exit::Code(0)),
            &Usage::default(),
            None,
        );
        assert_eq!((status, detail.as_str()), (Status::WallTime, "wall"));
    }

    #[test]
    fn kernel_evidence_maps_to_cpu_time() {
        let limits = Limits::new().cpu_time(Duration::from_secs(1));
        let (status, detail) = classify(
            &limits,
            None,
            None,
            ended_with(Exit::Signal(libc::SIGXCPU)),
            &Usage::default(),
            None,
        );
        assert_eq!(status, Status::CpuTime);
        assert!(detail.contains("SIGXCPU"), "{detail}");
        // Without a CPU limit the same signal is just a crash.
        let (status, detail) = classify(
            &Limits::new(),
            None,
            None,
            ended_with(Exit::Signal(libc::SIGXCPU)),
            &Usage::default(),
            None,
        );
        assert_eq!(status, Status::Crashed);
        assert!(detail.contains("killed by SIGXCPU"), "{detail}");
    }

    #[test]
    fn crashes_name_the_exit() {
        let (status, detail) = classify(
            &Limits::new(),
            None,
            None,
            ended_with(Exit::Code(3)),
            &Usage::default(),
            None,
        );
        assert_eq!(status, Status::Crashed);
        assert!(detail.contains("exited with code 3"), "{detail}");
        let (_, detail) = classify(
            &Limits::new(),
            None,
            None,
            ended_with(Exit::Signal(libc::SIGSEGV)),
            &Usage::default(),
            Some("garbage on the result channel".into()),
        );
        assert!(
            detail.contains("SIGSEGV") && detail.contains("garbage"),
            "{detail}"
        );
    }

    /// What the kernel showed for a process that ended with `exit` and nothing else.
    fn ended_with(exit: Exit) -> Evidence {
        Evidence {
            exit: Some(exit),
            oom_killed: false,
            outside_oom: None,
        }
    }

    fn sigkill(outside_oom: Option<OomKills>) -> (Status, String) {
        classify(
            &Limits::new(),
            None,
            None,
            Evidence {
                outside_oom,
                ..ended_with(Exit::Signal(libc::SIGKILL))
            },
            &Usage::default(),
            None,
        )
    }

    fn kills(before: u64, after: u64) -> OomKills {
        OomKills {
            counter: "/sys/fs/cgroup/job/memory.events".into(),
            before,
            after,
            cap: Some(("/sys/fs/cgroup/job".into(), 512 << 20)),
        }
    }

    #[test]
    fn an_oom_kill_under_an_outside_cap_is_a_memory_outcome() {
        let (status, detail) = sigkill(Some(kills(1, 2)));
        assert_eq!(status, Status::Memory);
        for part in [
            "OOM killer",
            "outside pynisher",
            "memory.max of /sys/fs/cgroup/job = 536870912 bytes",
            "/sys/fs/cgroup/job/memory.events counted 1 OOM kill",
        ] {
            assert!(detail.contains(part), "{part:?} not in {detail:?}");
        }
    }

    #[test]
    fn a_sigkill_without_an_oom_kill_is_a_crash_that_names_the_likely_cause() {
        let (status, detail) = sigkill(Some(kills(2, 2)));
        assert_eq!(status, Status::Crashed);
        assert!(
            detail.contains("killed by SIGKILL without a result"),
            "{detail}"
        );
        assert!(detail.contains("OOM killer"), "{detail}");
        assert!(
            detail.contains("memory.events counted no OOM kill"),
            "{detail}"
        );
        let (status, detail) = sigkill(None);
        assert_eq!(status, Status::Crashed);
        assert!(detail.contains("could not be read"), "{detail}");
        // A risen count says nothing about another signal.
        let (status, _) = classify(
            &Limits::new(),
            None,
            None,
            Evidence {
                outside_oom: Some(kills(1, 2)),
                ..ended_with(Exit::Signal(libc::SIGSEGV))
            },
            &Usage::default(),
            None,
        );
        assert_eq!(status, Status::Crashed);
    }
}
