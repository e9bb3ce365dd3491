//! Supervision on a thread of its own, so that nothing the calling thread
//! waits for can delay a kill.
//!
//! An embedder such as the Python binding must stop now and then to check
//! for its own interrupts (Ctrl-C, a cancelled future), and that check may
//! block: in Python it needs the GIL, which another thread of the caller can
//! hold for seconds inside a C call. So the supervisor never runs that check.
//! It runs on a thread of its own and enforces every limit on time, while the
//! calling thread waits for it and runs the check in between. When the check
//! fails, the calling thread raises an [`Interrupt`], which wakes the
//! supervisor at once; the supervisor kills and reaps the tree, and only then
//! does [`run_beside`] return.
//!
//! The first check is due [`CHECK_INTERVAL`](crate::supervisor::CHECK_INTERVAL)
//! into the call, so until then the calling thread can supervise the call
//! itself ([`Supervised::wait_until_first_check`](crate::Supervised::wait_until_first_check)),
//! and hand it to `run_beside` ([`Paused::wait_interruptible`](crate::Paused::wait_interruptible))
//! only if it runs longer: a short call then costs no thread.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::supervisor::Stop;
use crate::sys;

/// A request, from another thread, to stop a supervised call: the tree is
/// killed and reaped and the supervisor returns [`Stop::Interrupted`].
///
/// It is a pipe that becomes readable when raised, so the supervisor sees it
/// in the same `poll` as the child and its channel, with no delay.
#[derive(Debug)]
pub struct Interrupt {
    raised: AtomicBool,
    read_end: OwnedFd,
    write_end: OwnedFd,
}

impl Interrupt {
    /// A new, unraised interrupt.
    ///
    /// # Errors
    /// The pipe could not be created.
    pub fn new() -> Result<Interrupt, Error> {
        let (read_end, write_end) =
            sys::pipe().map_err(|e| Error::os("creating the interrupt pipe", e))?;
        Ok(Interrupt {
            raised: AtomicBool::new(false),
            read_end,
            write_end,
        })
    }

    /// Asks the supervisor to stop the call. Raising it twice is harmless.
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::SeqCst) {
            // One byte, never read: the pipe stays readable from now on.
            let _ = sys::write_all(self.write_end.as_raw_fd(), &[1]);
        }
    }

    /// Whether [`raise`](Interrupt::raise) was called.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    /// The descriptor that polls readable once the interrupt is raised.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read_end.as_fd()
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.read_end.as_raw_fd()
    }
}

/// What the supervisor's thread hands back.
struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    fn new() -> Slot<T> {
        Slot {
            value: Mutex::new(None),
            ready: Condvar::new(),
        }
    }

    fn put(&self, value: T) {
        *self.value.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
        self.ready.notify_all();
    }

    /// Waits up to `timeout` (forever with `None`) and says whether the
    /// value is there.
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let guard = self.value.lock().unwrap_or_else(PoisonError::into_inner);
        let guard = match timeout {
            Some(timeout) => {
                self.ready
                    .wait_timeout_while(guard, timeout, |v| v.is_none())
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .ready
                .wait_while(guard, |v| v.is_none())
                .unwrap_or_else(PoisonError::into_inner),
        };
        guard.is_some()
    }

    fn take(&self) -> Option<T> {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// How the calling thread waits for the supervisor: `pause` gets a function
/// that blocks for at most the given time (forever with `None`) and returns
/// whether the supervisor has finished, and must call it and return its
/// answer. The Python binding releases the GIL around it.
pub type Wait<'a> = &'a (dyn Fn(Option<Duration>) -> bool + Sync);

/// Runs `work` (which starts and supervises a call, watching the
/// [`Interrupt`] it is given) on a new thread, and waits for it on the
/// calling thread. Each time `pause` returns before the supervisor is done,
/// the calling thread runs `check`; if it fails, the interrupt is raised, the supervisor kills and reaps the
/// tree, and the check's error is returned as [`Stop::Interrupted`] once
/// nothing of the call is left.
///
/// A slow `check` (one that waits for a lock) only delays the return, never
/// the supervisor: the kill of a limit happens on time whatever the calling
/// thread is doing.
///
/// # Errors
/// [`Stop::Interrupted`] as above; [`Stop::Failed`] if `work` failed, the
/// thread could not be started, or the supervisor's thread panicked (the
/// panic is caught and reported, never resumed).
pub fn run_beside<T, E, I>(
    work: impl FnOnce(&Interrupt) -> Result<T, Stop<I>> + Send,
    pause: impl FnMut(Wait<'_>) -> bool,
    check: impl FnMut() -> Result<(), E>,
) -> Result<T, Stop<E>>
where
    T: Send,
    I: Send,
{
    let interrupt = Interrupt::new().map_err(Stop::Failed)?;
    let slot: Slot<Result<T, Stop<I>>> = Slot::new();
    std::thread::scope(|scope| {
        let started = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn_scoped(scope, || {
                let result = catch_unwind(AssertUnwindSafe(|| work(&interrupt)))
                    .unwrap_or_else(|panic| Err(Stop::Failed(panicked(panic.as_ref()))));
                slot.put(result);
            });
        let thread = match started {
            Ok(thread) => thread,
            Err(err) => {
                return Err(Stop::Failed(Error::os(
                    "starting the supervisor thread",
                    err,
                )))
            }
        };
        let interrupted = wait_beside(&slot, &interrupt, pause, check);
        // Joined, not left to the scope, so that the thread is gone (not
        // just done) when the call returns.
        let _ = thread.join();
        conclude(interrupted, slot.take())
    })
}

const THREAD_NAME: &str = "pynisher-supervisor";

/// A supervision already running on a thread of its own, which owns all it
/// needs: the [`run_beside`] of work that started on the calling thread (as
/// a [`Paused`](crate::Paused) supervision) and can be handed over without
/// any lock of the caller. [`Beside::wait`] waits for it as `run_beside`
/// does. Dropped without a wait, it raises the interrupt and joins the
/// thread, so that no supervisor outlives it.
pub struct Beside<T> {
    shared: Arc<Shared<T>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the calling thread and the supervisor's thread of a [`Beside`] share.
struct Shared<T> {
    interrupt: Interrupt,
    answer: Slot<Result<T, Stop<()>>>,
}

impl<T: Send + 'static> Beside<T> {
    /// Starts `work` on a new thread.
    ///
    /// # Errors
    /// The interrupt or the thread could not be made.
    pub fn start(
        work: impl FnOnce(&Interrupt) -> Result<T, Stop<()>> + Send + 'static,
    ) -> Result<Beside<T>, Error> {
        let shared = Arc::new(Shared {
            interrupt: Interrupt::new()?,
            answer: Slot::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(|| work(&theirs.interrupt)))
                    .unwrap_or_else(|panic| Err(Stop::Failed(panicked(panic.as_ref()))));
                theirs.answer.put(result);
            })
            .map_err(|err| Error::os("starting the supervisor thread", err))?;
        Ok(Beside {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits for the work as [`run_beside`] does: `pause` and `check` in
    /// turn, the interrupt raised if `check` fails, and the thread joined.
    ///
    /// # Errors
    /// As [`run_beside`].
    pub fn wait<E>(
        mut self,
        pause: impl FnMut(Wait<'_>) -> bool,
        check: impl FnMut() -> Result<(), E>,
    ) -> Result<T, Stop<E>> {
        let Shared { interrupt, answer } = &*self.shared;
        let interrupted = wait_beside(answer, interrupt, pause, check);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        conclude(interrupted, answer.take())
    }
}

impl<T> Drop for Beside<T> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.shared.interrupt.raise();
            let _ = thread.join();
        }
    }
}

/// The calling thread's side of a supervision on another thread: `pause`
/// until the answer is in `slot`, running `check` in between; a failed check
/// raises `interrupt` and waits for the answer all the same (the supervisor
/// kills and reaps the tree before it answers). Returns the failed check's
/// error.
fn wait_beside<V: Send, E>(
    slot: &Slot<V>,
    interrupt: &Interrupt,
    mut pause: impl FnMut(Wait<'_>) -> bool,
    mut check: impl FnMut() -> Result<(), E>,
) -> Option<E> {
    let wait = |timeout: Option<Duration>| slot.wait(timeout);
    while !pause(&wait) {
        if let Err(err) = check() {
            interrupt.raise();
            while !pause(&wait) {}
            return Some(err);
        }
    }
    None
}

/// The answer of a supervision on another thread, given what
/// [`wait_beside`] returned.
fn conclude<T, E, I>(
    interrupted: Option<E>,
    answer: Option<Result<T, Stop<I>>>,
) -> Result<T, Stop<E>> {
    let answer = answer.unwrap_or_else(|| {
        Err(Stop::Failed(Error::os(
            "the supervisor thread ended without an answer",
            std::io::Error::other("no result"),
        )))
    });
    match (interrupted, answer) {
        (Some(err), _) => Err(Stop::Interrupted(err)),
        (None, Ok(value)) => Ok(value),
        (None, Err(Stop::Failed(err))) => Err(Stop::Failed(err)),
        // Only the waiting side raises the interrupt, and only after a
        // failed check, so this cannot happen; report it all the same.
        (None, Err(Stop::Interrupted(_))) => Err(Stop::Failed(ErrorKind::Interrupted.into())),
    }
}

fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::os(
        "the supervisor thread panicked",
        std::io::Error::other(message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_failed_check_raises_the_interrupt_and_waits_for_the_worker() {
        let stopped = AtomicBool::new(false);
        let result: Result<(), Stop<&str>> = run_beside(
            |interrupt| {
                wait_raised(interrupt);
                stopped.store(true, Ordering::SeqCst);
                Err(Stop::<()>::Interrupted(()))
            },
            |wait| wait(Some(Duration::from_millis(10))),
            || Err("stop"),
        );
        assert!(matches!(result, Err(Stop::Interrupted("stop"))));
        assert!(stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_blocked_checker_does_not_delay_the_worker() {
        let began = Instant::now();
        let finished_at = Mutex::new(None);
        let result: Result<u32, Stop<()>> = run_beside(
            |_| {
                std::thread::sleep(Duration::from_millis(20));
                *finished_at.lock().unwrap() = Some(began.elapsed());
                Ok::<_, Stop<()>>(7)
            },
            |wait| wait(Some(Duration::from_millis(1))),
            || {
                // A check that blocks far longer than the work takes.
                std::thread::sleep(Duration::from_millis(300));
                Ok(())
            },
        );
        assert_eq!(result.unwrap(), 7);
        let finished_at = finished_at.lock().unwrap().unwrap();
        assert!(finished_at < Duration::from_millis(250), "{finished_at:?}");
    }

    #[test]
    fn a_supervision_already_beside_is_waited_for_and_interrupted_as_run_beside() {
        let done = Beside::start(|_| Ok::<_, Stop<()>>(7)).unwrap();
        let value: Result<u32, Stop<()>> = done.wait(|wait| wait(None), || Ok(()));
        assert_eq!(value.unwrap(), 7);

        let stopped = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&stopped);
        let blocked = Beside::start(move |interrupt| {
            wait_raised(interrupt);
            seen.store(true, Ordering::SeqCst);
            Err::<(), _>(Stop::Interrupted(()))
        })
        .unwrap();
        let result = blocked.wait(|wait| wait(Some(Duration::from_millis(10))), || Err("stop"));
        assert!(matches!(result, Err(Stop::Interrupted("stop"))));
        assert!(stopped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_supervision_beside_dropped_unwaited_is_interrupted_and_joined() {
        let stopped = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&stopped);
        let beside = Beside::start(move |interrupt| {
            wait_raised(interrupt);
            seen.store(true, Ordering::SeqCst);
            Ok::<_, Stop<()>>(())
        })
        .unwrap();
        drop(beside);
        // Joined: the work saw the interrupt and returned before the drop did.
        assert!(stopped.load(Ordering::SeqCst));
    }

    /// Blocks until `interrupt` is raised (10 s at most).
    fn wait_raised(interrupt: &Interrupt) {
        let mut fds = [libc::pollfd {
            fd: interrupt.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        sys::poll(&mut fds, Some(Duration::from_secs(10))).unwrap();
        assert!(interrupt.is_raised());
    }

    #[test]
    fn a_panic_in_the_worker_is_an_error() {
        let result: Result<(), Stop<()>> = run_beside(
            |_| -> Result<(), Stop<()>> { panic!("boom") },
            |wait| wait(None),
            || Ok(()),
        );
        match result {
            Err(Stop::Failed(err)) => assert!(err.to_string().contains("boom"), "{err}"),
            _ => panic!("expected a failure"),
        }
    }
}
