//! Child-side setup, done right after fork and before any user code, and
//! the one order of the steps a call's process goes through.
//!
//! [`ChildSetup`] is built in the parent, so that the child only runs
//! async-signal-safe system calls on data that already exists: no allocation,
//! no locks, no formatting.
//!
//! # The steps of a call's process
//!
//! Every call's process, forked (`fork`), forked by the forkserver, or a
//! fresh interpreter or program (`spawn`), goes through the same steps in
//! this order, and [`CallProcess`] lets it take them in no other:
//!
//! 1. [`Started`](step::Started) → [`CallProcess::setup_early`]: its own
//!    process group, the parent-death signal, child subreaper, the call's
//!    cgroup. A fresh interpreter takes this step before its exec, and its
//!    new image proves it with [`CallProcess::verified`] (so does Python in
//!    a forkserver's child).
//! 2. [`Early`](step::Early) → [`CallProcess::split_guardian`]: the call's
//!    guardian splits off; this process runs the function.
//! 3. [`Split`](step::Split): a fresh interpreter loads the function here
//!    (its code must not count against the limits of the caller's process,
//!    and its import errors are the call's). Then
//!    [`CallProcess::apply_limits`].
//! 4. [`Limited`](step::Limited) → [`CallProcess::ready`] (a fresh
//!    interpreter: start-up is over, so not charged) or
//!    [`CallProcess::run`] (a fork: nothing to announce).
//! 5. [`Running`](step::Running): the body runs and sends its frame, then
//!    [`finish_child`]. A failed step ends the process with
//!    [`setup_failed`] instead, and any step may end in [`finish_child`].
//!
//! The Python binding cannot carry these types across into Python; it keeps
//! the current step in a [`CheckedSteps`] and refuses a step out of order.

use std::ffi::CString;
use std::marker::PhantomData;

use crate::cgroup::CallCgroup;
use crate::channel::{Sender, Tag};
use crate::limits::{Limits, MemoryMode};
use crate::sys::{self, Pid};

/// Exit code of a call's process whose body returned without sending a frame.
pub const EXIT_NO_FRAME: i32 = 70;
/// Exit code of a call's process whose setup failed.
pub const EXIT_SETUP_FAILED: i32 = 71;

/// The steps of [`CallProcess`], as types.
pub mod step {
    /// Nothing done yet: right after the fork or clone.
    pub enum Started {}
    /// Own process group, parent-death signal, subreaper, cgroup.
    pub enum Early {}
    /// The guardian has split off; this process runs the function.
    pub enum Split {}
    /// The limits apply.
    pub enum Limited {}
    /// The body runs.
    pub enum Running {}
}

/// A call's process at step `S` (see [the module docs](self)). Zero-sized:
/// the order of the steps is checked by the compiler, at no cost.
#[must_use = "a step's result is the next step"]
pub struct CallProcess<S> {
    step: PhantomData<S>,
}

impl<S> CallProcess<S> {
    fn next<T>(self) -> CallProcess<T> {
        CallProcess { step: PhantomData }
    }
}

impl CallProcess<step::Started> {
    /// A call's process that has done nothing yet.
    ///
    /// # Safety
    /// The calling process is a call's process, freshly forked or cloned by
    /// pynisher, with a single thread; never the caller.
    pub unsafe fn started() -> Self {
        CallProcess { step: PhantomData }
    }

    /// Step 1: [`ChildSetup::apply_early`]. Async-signal-safe.
    ///
    /// # Errors
    /// The first setup step that failed.
    pub fn setup_early(self, setup: &ChildSetup) -> Result<CallProcess<step::Early>, SetupError> {
        setup.apply_early()?;
        Ok(self.next())
    }
}

impl CallProcess<step::Early> {
    /// A process that took step 1 out of sight of the types (before the
    /// exec of a fresh interpreter, or in Rust before a forkserver's child
    /// runs Python), proven by its effects: a child of `parent`, leader of its own
    /// process group, a child subreaper, with a single thread. Allocates.
    ///
    /// # Errors
    /// Why the calling process is not a call's own process.
    pub fn verified(parent: Pid) -> Result<Self, &'static str> {
        // SAFETY: plain queries with integer arguments or a valid out-pointer.
        unsafe {
            if libc::getppid() != parent {
                return Err("parent is not its parent");
            }
            if libc::getpgrp() != libc::getpid() {
                return Err("it does not lead its own process group");
            }
            let mut subreaper: libc::c_int = 0;
            if libc::prctl(
                libc::PR_GET_CHILD_SUBREAPER,
                &mut subreaper as *mut libc::c_int,
            ) != 0
                || subreaper == 0
            {
                return Err("it is not a child subreaper");
            }
        }
        match std::fs::read_dir("/proc/self/task").map(Iterator::count) {
            Ok(1) => Ok(CallProcess { step: PhantomData }),
            Ok(_) => Err("it has more than one thread"),
            Err(_) => Err("its threads cannot be counted"),
        }
    }

    /// As [`CallProcess::verified`], without the checks.
    ///
    /// # Safety
    /// The calling process is a fresh image of a call's process, started by
    /// [`exec::start`](crate::exec::start) (which took step 1), with a
    /// single thread.
    pub unsafe fn assume_after_exec() -> Self {
        CallProcess { step: PhantomData }
    }

    /// Step 2: splits off the call's guardian with
    /// [`guardian::split`](crate::guardian::split) (see there for
    /// `parent`, `terminate_descendants` and `page`).
    ///
    /// # Errors
    /// As [`guardian::split`](crate::guardian::split).
    pub fn split_guardian(
        self,
        parent: Pid,
        terminate_descendants: bool,
        page: std::os::fd::RawFd,
    ) -> Result<CallProcess<step::Split>, SetupError> {
        // SAFETY: a `CallProcess` is a single-threaded call's process, never
        // the caller (the contract of its constructors); the guardian program
        // is prepared by `guardian::split` itself or fails.
        unsafe { crate::guardian::split(parent, terminate_descendants, page) }?;
        Ok(self.next())
    }
}

impl CallProcess<step::Split> {
    /// Step 3: [`ChildSetup::apply_limits`]. Async-signal-safe.
    ///
    /// # Errors
    /// The first setup step that failed.
    pub fn apply_limits(
        self,
        setup: &ChildSetup,
    ) -> Result<CallProcess<step::Limited>, SetupError> {
        setup.apply_limits()?;
        Ok(self.next())
    }
}

impl CallProcess<step::Limited> {
    /// Step 4, in a fresh interpreter: announces that start-up is over
    /// (`user` and `system` CPU time it took, not charged to the call).
    ///
    /// # Errors
    /// The frame could not be sent.
    pub fn ready(
        self,
        sender: &mut Sender,
        user: std::time::Duration,
        system: std::time::Duration,
    ) -> std::io::Result<CallProcess<step::Running>> {
        sender.send_ready(user, system)?;
        Ok(self.next())
    }

    /// Step 4, in a fork: the body may run.
    pub fn run(self) -> CallProcess<step::Running> {
        self.next()
    }
}

/// Reports a failed setup step on the result channel (a
/// [`Tag::SetupFailed`] frame) and ends the process with
/// [`EXIT_SETUP_FAILED`]. Async-signal-safe: a stack buffer and `write`.
pub fn setup_failed(sender: &mut Sender, err: SetupError) -> ! {
    let mut buf = [0u8; 128];
    let _ = sender.send(Tag::SetupFailed, &[err.describe(&mut buf)]);
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(EXIT_SETUP_FAILED) }
}

/// Ends a call's process, at any step, once its result is sent (or not):
/// tells the guardian whether the result was sent, then `_exit`s with 0, or
/// [`EXIT_NO_FRAME`] if it sent nothing. The guardian kills what the call
/// started. Async-signal-safe.
pub fn finish_child(sent: bool) -> ! {
    if sent {
        crate::guardian::mark_result_sent();
    }
    let code = if sent { 0 } else { EXIT_NO_FRAME };
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or destructors, which belong to the parent.
    unsafe { libc::_exit(code) }
}

/// The steps of [`CallProcess`] checked at run time, for a process driven
/// from Python, where the types cannot follow: each method takes its step
/// only if the previous one was the last taken.
#[derive(Default)]
pub struct CheckedSteps {
    at: Option<AnyStep>,
}

enum AnyStep {
    Split(CallProcess<step::Split>),
    Limited(CallProcess<step::Limited>),
    Running(CallProcess<step::Running>),
}

/// A step refused, or failed.
#[derive(Debug)]
pub enum StepError {
    /// Taken out of order: what must come first.
    OutOfOrder(&'static str),
    /// The process is not a call's own process (see
    /// [`CallProcess::verified`]).
    NotACallProcess(&'static str),
    /// The guardian program could not be made ready.
    Prepare(crate::Error),
    /// The step itself failed.
    Failed(SetupError),
    /// The ready frame could not be sent.
    Io(std::io::Error),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::OutOfOrder(why) => write!(f, "out of order: {why}"),
            StepError::NotACallProcess(why) => {
                write!(f, "this is not a call's own process ({why})")
            }
            StepError::Prepare(err) => write!(f, "{err}"),
            StepError::Failed(err) => {
                let mut buf = [0u8; 128];
                f.write_str(&String::from_utf8_lossy(err.describe(&mut buf)))
            }
            StepError::Io(err) => write!(f, "sending the start-up frame: {err}"),
        }
    }
}

impl CheckedSteps {
    /// Nothing taken yet in this program image.
    pub const fn new() -> CheckedSteps {
        CheckedSteps { at: None }
    }

    /// Step 2, in a process whose step 1 [`CallProcess::verified`] proves
    /// (it is refused anywhere else); prepares the guardian program first
    /// (which allocates).
    ///
    /// # Errors
    /// Not a call's process, a step already taken, or the split failed.
    pub fn split_guardian(
        &mut self,
        parent: Pid,
        terminate_descendants: bool,
        page: std::os::fd::RawFd,
    ) -> Result<(), StepError> {
        if self.at.is_some() {
            return Err(StepError::OutOfOrder(
                "the guardian has already split off in this process",
            ));
        }
        let early = CallProcess::verified(parent).map_err(StepError::NotACallProcess)?;
        crate::guardian::prepare().map_err(StepError::Prepare)?;
        let split = early
            .split_guardian(parent, terminate_descendants, page)
            .map_err(StepError::Failed)?;
        self.at = Some(AnyStep::Split(split));
        Ok(())
    }

    /// Step 3.
    ///
    /// # Errors
    /// The guardian has not split off yet, the limits already apply, or
    /// applying them failed.
    pub fn apply_limits(&mut self, setup: &ChildSetup) -> Result<(), StepError> {
        let split = match self.at.take() {
            Some(AnyStep::Split(split)) => split,
            other => {
                let why = match other {
                    None => "the guardian must split off before the limits apply",
                    Some(_) => "the limits already apply",
                };
                self.at = other;
                return Err(StepError::OutOfOrder(why));
            }
        };
        match split.apply_limits(setup) {
            Ok(limited) => {
                self.at = Some(AnyStep::Limited(limited));
                Ok(())
            }
            Err(err) => {
                // The limits may apply in part: never again from the start.
                self.at = Some(AnyStep::Running(CallProcess { step: PhantomData }));
                Err(StepError::Failed(err))
            }
        }
    }

    /// Step 4: start-up is over.
    ///
    /// # Errors
    /// The limits do not apply yet, start-up was already announced, or the
    /// frame could not be sent.
    pub fn ready(
        &mut self,
        sender: &mut Sender,
        user: std::time::Duration,
        system: std::time::Duration,
    ) -> Result<(), StepError> {
        let limited = match self.at.take() {
            Some(AnyStep::Limited(limited)) => limited,
            other => {
                let why = match other {
                    Some(AnyStep::Running(_)) => "start-up is already over",
                    _ => "the limits must apply before start-up is over",
                };
                self.at = other;
                return Err(StepError::OutOfOrder(why));
            }
        };
        let running = limited.ready(sender, user, system);
        // Sent or not, start-up is over.
        self.at = Some(AnyStep::Running(CallProcess { step: PhantomData }));
        running.map(drop).map_err(StepError::Io)
    }

    /// Ends the process ([`finish_child`]), at any step after the split: a
    /// process that has not split off is not a call's own.
    ///
    /// # Errors
    /// The guardian has not split off in this process.
    pub fn finish(&self, sent: bool) -> Result<std::convert::Infallible, StepError> {
        if self.at.is_none() {
            return Err(StepError::OutOfOrder(
                "only a call's process ends this way, after its guardian split off",
            ));
        }
        finish_child(sent)
    }
}

/// Everything the child needs to set itself up, computed before the fork.
#[derive(Debug, Clone)]
pub struct ChildSetup {
    parent: Pid,
    name: Option<CString>,
    /// The CPU limit in microseconds and the grace period in whole seconds,
    /// for `RLIMIT_CPU`.
    cpu_rlimit: Option<(u64, u64)>,
    /// The `RLIMIT_AS` to apply, in address-space memory mode.
    address_space: Option<AddressSpace>,
    page_size: u64,
    /// `cgroup.procs` of the call's own cgroup, if it has one.
    cgroup_procs: Option<CString>,
    /// Arm SIGKILL as the parent-death signal.
    parent_death: bool,
}

/// How the memory limit becomes `RLIMIT_AS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressSpace {
    /// On top of the process's own address space when the limit is applied:
    /// a forked child or a started interpreter must not be charged for what
    /// it already had.
    Headroom(u64),
    /// The whole address space: a new program image (a command) starts from
    /// nothing, so the caller's size never counts.
    Absolute(u64),
}

/// A setup step that failed: which one, and `errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupError {
    pub step: &'static str,
    pub errno: i32,
}

impl SetupError {
    /// Writes "step failed: errno N" into `buf` without allocating; returns the
    /// used part.
    pub fn describe<'a>(&self, buf: &'a mut [u8; 128]) -> &'a [u8] {
        let mut at = 0;
        for part in [self.step.as_bytes(), b" failed: errno "] {
            let n = part.len().min(buf.len() - at);
            buf[at..at + n].copy_from_slice(&part[..n]);
            at += n;
        }
        let mut digits = [0u8; 12];
        let mut value = self.errno.unsigned_abs();
        let mut len = 0;
        loop {
            digits[len] = b'0' + (value % 10) as u8;
            len += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        for i in (0..len).rev() {
            if at < buf.len() {
                buf[at] = digits[i];
                at += 1;
            }
        }
        &buf[..at]
    }
}

/// Arms SIGKILL as the calling process's parent-death signal, then exits at
/// once (code 137, as if killed) if `parent` is no longer its parent: it
/// died before the signal was armed. The one place both a call's first
/// process and the function's process (below its guardian) do this.
/// Async-signal-safe.
///
/// # Errors
/// `prctl` failed.
pub fn die_with_parent(parent: Pid) -> Result<(), SetupError> {
    // SAFETY: prctl, getppid and _exit with integer arguments only.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(SetupError {
                step: "prctl(PR_SET_PDEATHSIG)",
                errno: errno(),
            });
        }
        if libc::getppid() != parent {
            libc::_exit(137);
        }
    }
    Ok(())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl ChildSetup {
    /// The caller's pid, which the call's guardian watches.
    pub fn parent(&self) -> Pid {
        self.parent
    }

    /// Prepares the setup for `limits`. `name` becomes the process name seen
    /// in `ps` and `/proc/<pid>/comm` (the kernel keeps 15 bytes).
    pub fn new(limits: &Limits, name: Option<&str>) -> ChildSetup {
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let name = name.map(|n| {
            let bytes: Vec<u8> = n.bytes().filter(|b| *b != 0).take(15).collect();
            CString::new(bytes).expect("NUL bytes were filtered out")
        });
        let cpu_rlimit = limits.cpu_time.map(|cpu| {
            let grace = limits.grace_period.as_secs_f64().ceil().max(1.0) as u64;
            (u64::try_from(cpu.as_micros()).unwrap_or(u64::MAX), grace)
        });
        let address_space = match limits.memory_mode {
            MemoryMode::AddressSpace => limits.memory.map(AddressSpace::Headroom),
            MemoryMode::Resident => None,
        };
        ChildSetup {
            parent,
            name,
            cpu_rlimit,
            address_space,
            page_size: sys::page_size(),
            cgroup_procs: None,
            parent_death: true,
        }
    }

    /// The setup for one call under `limits`, and the call's own cgroup if
    /// the limits ask for resident memory and a delegated cgroup exists (the
    /// child joins it first thing).
    pub fn for_call(limits: &Limits, name: Option<&str>) -> (ChildSetup, Option<CallCgroup>) {
        let cgroup = crate::cgroup::for_limits(limits);
        let mut setup = ChildSetup::new(limits, name);
        if let Some(cgroup) = &cgroup {
            setup = setup.with_cgroup(cgroup.procs_path());
        }
        (setup, cgroup)
    }

    /// Makes the memory limit the whole address space of the process rather
    /// than headroom on top of its size: for a new program image.
    pub fn absolute_memory(mut self) -> ChildSetup {
        if let Some(AddressSpace::Headroom(limit)) = self.address_space {
            self.address_space = Some(AddressSpace::Absolute(limit));
        }
        self
    }

    /// Arms no parent-death signal: for a process that watches its parent
    /// itself and must outlive the thread that started it (the signal fires
    /// when that thread ends, not the process).
    pub fn without_parent_death_signal(mut self) -> ChildSetup {
        self.parent_death = false;
        self
    }

    /// Makes the child join the cgroup whose `cgroup.procs` is `procs` before
    /// anything else, so that every process it starts is in it too.
    pub fn with_cgroup(mut self, procs: &std::ffi::CStr) -> ChildSetup {
        self.cgroup_procs = Some(procs.to_owned());
        self
    }

    /// The part of the setup that must happen at once, before anything can
    /// go wrong: its own process group; SIGKILL when the parent dies (then a
    /// check that the parent has not died already); child subreaper, so that
    /// orphans stay in its tree. All three survive `execve`.
    /// Async-signal-safe.
    ///
    /// # Errors
    /// The first step that failed. If the parent is already gone the child
    /// exits at once instead.
    pub fn apply_early(&self) -> Result<(), SetupError> {
        if let Some(procs) = &self.cgroup_procs {
            crate::cgroup::join(procs).map_err(|errno| SetupError {
                step: "joining the call's cgroup",
                errno,
            })?;
        }
        // SAFETY: plain system calls with integer arguments only; all are
        // async-signal-safe.
        unsafe {
            if libc::setpgid(0, 0) != 0 {
                return Err(SetupError {
                    step: "setpgid",
                    errno: errno(),
                });
            }
        }
        if self.parent_death {
            die_with_parent(self.parent)?;
        }
        if sys::become_subreaper().is_err() {
            return Err(SetupError {
                step: "prctl(PR_SET_CHILD_SUBREAPER)",
                errno: errno(),
            });
        }
        Ok(())
    }

    /// The process name, `RLIMIT_CPU`, and `RLIMIT_AS` as the current address
    /// space plus the headroom. A child that starts a fresh interpreter calls
    /// this once start-up is done, so start-up is not charged to the call.
    /// Async-signal-safe.
    ///
    /// # Errors
    /// The first step that failed.
    pub fn apply_limits(&self) -> Result<(), SetupError> {
        if let Some(name) = &self.name {
            // SAFETY: `name` is a valid NUL-terminated string of at most 16 bytes.
            if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) } != 0 {
                return Err(SetupError {
                    step: "prctl(PR_SET_NAME)",
                    errno: errno(),
                });
            }
        }
        if let Some((limit, grace)) = self.cpu_rlimit {
            let (soft, hard) = cpu_rlimit(limit, grace, own_cpu_micros());
            set_rlimit(libc::RLIMIT_CPU, soft, hard, "setrlimit(RLIMIT_CPU)")?;
        }
        let limit = match self.address_space {
            None => None,
            Some(AddressSpace::Absolute(limit)) => Some(limit),
            Some(AddressSpace::Headroom(headroom)) => {
                let base = current_address_space(self.page_size).ok_or(SetupError {
                    step: "reading /proc/self/statm",
                    errno: errno(),
                })?;
                Some(base.saturating_add(headroom))
            }
        };
        if let Some(limit) = limit {
            set_rlimit(libc::RLIMIT_AS, limit, limit, "setrlimit(RLIMIT_AS)")?;
        }
        Ok(())
    }
}

/// `RLIMIT_CPU` (soft, hard) in whole seconds for a CPU limit of `limit`
/// microseconds, a grace period of `grace` seconds, and `spent` microseconds
/// the process has already used (start-up of a fresh interpreter), which the
/// kernel counts too. The supervisor enforces fractional limits on the whole
/// tree; this per-process backstop fires at the first whole second at or past
/// the limit, exactly at it for whole-second limits.
///
/// Saturates: a limit too large for the kernel becomes `RLIM_INFINITY`.
fn cpu_rlimit(limit: u64, grace: u64, spent: u64) -> (u64, u64) {
    let soft = limit.saturating_add(spent).div_ceil(1_000_000).max(1);
    (soft, soft.saturating_add(grace))
}

/// CPU time the calling process has used so far, in microseconds.
/// Async-signal-safe.
fn own_cpu_micros() -> u64 {
    // SAFETY: rusage is plain data; getrusage only writes to it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is valid for writes.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    let micros = |tv: libc::timeval| tv.tv_sec.max(0) as u64 * 1_000_000 + tv.tv_usec.max(0) as u64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

/// Lowers a limit to `soft`/`hard`, never above an existing hard limit (a
/// nested call cannot raise what its own caller imposed).
fn set_rlimit(
    resource: libc::__rlimit_resource_t,
    soft: u64,
    hard: u64,
    step: &'static str,
) -> Result<(), SetupError> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `current` is valid for writes.
    if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
        return Err(SetupError {
            step,
            errno: errno(),
        });
    }
    let hard = hard.min(current.rlim_max);
    let new = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid rlimit.
    if unsafe { libc::setrlimit(resource, &new) } != 0 {
        return Err(SetupError {
            step,
            errno: errno(),
        });
    }
    Ok(())
}

/// The calling process's virtual size in bytes, from `/proc/self/statm`,
/// read into a stack buffer. Async-signal-safe.
pub fn current_address_space(page_size: u64) -> Option<u64> {
    let mut buf = [0u8; 128];
    // SAFETY: a static NUL-terminated path; open/read/close are
    // async-signal-safe and `buf` is valid for writes.
    let n = unsafe {
        let fd = libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    let mut pages: u64 = 0;
    for &b in &buf[..n as usize] {
        if !b.is_ascii_digit() {
            break;
        }
        pages = pages * 10 + u64::from(b - b'0');
    }
    Some(pages * page_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_errors_without_allocating() {
        let mut buf = [0u8; 128];
        let err = SetupError {
            step: "setrlimit(RLIMIT_AS)",
            errno: 22,
        };
        assert_eq!(
            err.describe(&mut buf),
            b"setrlimit(RLIMIT_AS) failed: errno 22"
        );
    }

    #[test]
    fn checked_steps_refuse_what_comes_later() {
        let mut steps = CheckedSteps::new();
        let setup = ChildSetup::new(&Limits::new(), None);
        let mut sender = Sender::new(-1, -1);
        let refused = |result: Result<(), StepError>| match result {
            Err(StepError::OutOfOrder(why)) => why,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(
            refused(steps.apply_limits(&setup)),
            "the guardian must split off before the limits apply"
        );
        let zero = std::time::Duration::ZERO;
        assert_eq!(
            refused(steps.ready(&mut sender, zero, zero)),
            "the limits must apply before start-up is over"
        );
        assert!(matches!(steps.finish(true), Err(StepError::OutOfOrder(_))));
        // The test process is no call's process: the split is refused too.
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert!(matches!(
            steps.split_guardian(parent, true, -1),
            Err(StepError::NotACallProcess(_))
        ));
    }

    #[test]
    fn reads_own_address_space() {
        let size = current_address_space(sys::page_size()).unwrap();
        assert!(size > 1 << 20, "{size}");
    }

    #[test]
    fn cpu_backstop_rounds_up() {
        let limits = Limits::new().cpu_time(std::time::Duration::from_millis(200));
        let setup = ChildSetup::new(&limits, Some("a-very-long-process-name"));
        assert_eq!(setup.cpu_rlimit, Some((200_000, 1)));
        // A fresh fork has spent next to nothing: the backstop is 1 s, not 2.
        assert_eq!(cpu_rlimit(200_000, 1, 300), (1, 2));
        assert_eq!(cpu_rlimit(1_000_000, 1, 0), (1, 2));
        // Start-up of an interpreter counts toward RLIMIT_CPU.
        assert_eq!(cpu_rlimit(1_000_000, 2, 40_000), (2, 4));
        // Too large for the kernel: saturates to RLIM_INFINITY, never wraps.
        assert_eq!(cpu_rlimit(u64::MAX, u64::MAX, 40_000).1, u64::MAX);
        assert_eq!(setup.name.unwrap().as_bytes().len(), 15);
    }
}
