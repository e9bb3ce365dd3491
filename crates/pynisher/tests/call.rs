//! Closures in a forked child under limits.
//!
//! The test harness runs each test on a thread of its own, so these tests use
//! `call_unchecked`; the safe `call` is exercised by the doctests and the
//! examples, which run single-threaded.

mod common;

use std::time::{Duration, Instant};

use common::{alive_with_marker, eventually, marker};
use pynisher::{
    call_unchecked, CallOptions, CallOutcome, Exit, Failure, Limits, MemoryMode, Status,
};
use serde::{Deserialize, Serialize};

const SLACK: Duration = Duration::from_secs(1);

fn run<T, F>(limits: &Limits, f: F) -> CallOutcome<T>
where
    T: Serialize + serde::de::DeserializeOwned,
    F: FnOnce() -> T,
{
    let options = CallOptions {
        name: None,
        terminate_descendants: true,
    };
    // SAFETY: the closures in these tests take no lock that another test
    // thread could hold (no stdout, no environment, no shared Mutex), and
    // every test sets a wall-time limit as a backstop.
    unsafe { call_unchecked(limits, &options, f) }.unwrap()
}

fn limits() -> Limits {
    Limits::new().wall_time(Duration::from_secs(20))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    name: String,
    values: Vec<f64>,
    pid: u32,
}

#[test]
fn a_value_comes_back() {
    let outcome = run(&limits(), || Report {
        name: "squares".into(),
        values: (0..5).map(|i| f64::from(i * i)).collect(),
        pid: std::process::id(),
    });
    assert_eq!(outcome.status, Status::Ok);
    assert_eq!(outcome.exit, Some(Exit::Code(0)));
    let report = outcome.into_result().unwrap();
    assert_eq!(report.values, [0.0, 1.0, 4.0, 9.0, 16.0]);
    assert_ne!(report.pid, std::process::id(), "it ran in another process");
}

#[test]
fn a_large_value_comes_back() {
    let outcome = run(&limits(), || vec![7u8; 20 << 20]);
    let value = outcome.into_result().unwrap();
    assert_eq!(value.len(), 20 << 20);
    assert!(value.iter().all(|b| *b == 7));
}

#[test]
fn a_panic_comes_back_with_its_message() {
    let outcome: CallOutcome<u32> = run(&limits(), || panic!("bad input: {}", 42));
    assert_eq!(outcome.status, Status::Error);
    assert_eq!(
        outcome.result,
        Err(Failure::Panic {
            message: "bad input: 42".into()
        })
    );
    assert!(outcome.detail.contains("bad input: 42"));
}

#[test]
fn the_wall_limit_stops_a_sleeping_closure() {
    let limits = Limits::new()
        .wall_time(Duration::from_millis(300))
        .grace_period(Duration::from_millis(500));
    let started = Instant::now();
    let outcome = run(&limits, || std::thread::sleep(Duration::from_secs(30)));
    assert_eq!(outcome.status, Status::WallTime);
    let failure = outcome.result.as_ref().unwrap_err();
    assert_eq!(failure.limit(), Some(Status::WallTime));
    assert!(failure.to_string().contains("wall-time"), "{failure}");
    assert!(started.elapsed() < Duration::from_millis(800) + SLACK);
}

#[test]
fn the_cpu_limit_stops_a_spinning_closure() {
    let limits = Limits::new()
        .cpu_time(Duration::from_millis(400))
        .wall_time(Duration::from_secs(20));
    let outcome = run(&limits, || {
        let mut x = 0u64;
        for i in 0u64.. {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        x
    });
    assert_eq!(outcome.status, Status::CpuTime, "{:?}", outcome.detail);
    assert!(matches!(
        outcome.result,
        Err(Failure::Limit {
            status: Status::CpuTime,
            ..
        })
    ));
    assert!(outcome.usage.cpu_time() >= Duration::from_millis(400));
    // CPU time, not wall time, is what the limit bounds (a loaded machine stretches the latter).
    assert!(outcome.usage.cpu_time() < Duration::from_millis(400) + limits.grace_period + SLACK);
}

#[test]
fn a_failed_allocation_is_a_memory_limit() {
    let limits = Limits::new()
        .memory(64 << 20)
        .wall_time(Duration::from_secs(20));
    let outcome = run(&limits, || vec![1u8; 4 << 30].len());
    assert_eq!(outcome.status, Status::Memory, "{:?}", outcome.detail);
    assert_eq!(
        outcome.result.as_ref().unwrap_err().limit(),
        Some(Status::Memory)
    );
    // Within the headroom, allocating works.
    let outcome = run(&limits, || vec![1u8; 16 << 20].len());
    assert_eq!(outcome.into_result(), Ok(16 << 20));
}

#[test]
fn the_resident_limit_stops_a_growing_closure() {
    let limits = Limits::new()
        .memory(100 << 20)
        .memory_mode(MemoryMode::Resident)
        .wall_time(Duration::from_secs(20));
    let outcome = run(&limits, || {
        let mut chunks = Vec::new();
        for _ in 0..40 {
            chunks.push(vec![3u8; 10 << 20]);
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_secs(30));
        chunks.len()
    });
    assert_eq!(outcome.status, Status::Memory, "{:?}", outcome.detail);
}

#[test]
fn a_crash_names_the_signal() {
    let outcome: CallOutcome<()> = run(&limits(), || {
        // SAFETY: raising a signal in the child only ends the child. (Not
        // SIGSEGV: Rust's own handler ignores a raised one.)
        unsafe { libc::raise(libc::SIGUSR1) };
    });
    assert_eq!(outcome.status, Status::Crashed);
    match outcome.result {
        Err(Failure::Crashed { exit, detail }) => {
            assert_eq!(exit, Some(Exit::Signal(libc::SIGUSR1)));
            assert!(detail.contains("SIGUSR1"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    let outcome: CallOutcome<()> = run(&limits(), || std::process::exit(3));
    assert!(matches!(
        outcome.result,
        Err(Failure::Crashed {
            exit: Some(Exit::Code(3)),
            ..
        })
    ));
}

struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this type refuses to be encoded"))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

#[test]
fn a_value_that_cannot_be_encoded_is_reported() {
    let outcome = run(&limits(), || Unencodable);
    assert_eq!(outcome.status, Status::Error);
    match outcome.result {
        Err(Failure::Encoding { message }) => {
            // postcard does not keep a custom error's text.
            assert!(message.contains("encoding the value"), "{message}")
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("encoded"),
    }
}

#[test]
fn processes_the_closure_starts_do_not_survive() {
    let marker = marker();
    let outcome = run(&limits(), || {
        // Left running on purpose: the call must kill it.
        #[allow(clippy::zombie_processes)]
        let child = std::process::Command::new("setsid")
            .args(["sleep", &marker])
            .spawn()
            .unwrap();
        child.id()
    });
    let pid = outcome.into_result().unwrap() as i32;
    assert!(eventually(Duration::from_secs(2), || !alive_with_marker(
        pid, &marker
    )));
}

#[test]
fn a_process_that_left_the_group_dies_with_a_child_that_exits_at_once() {
    // The closure's process exits without a result a moment after starting
    // a process in a new session: no scan of the tree can have seen it yet,
    // and the process-group kill does not reach it. The call's guardian,
    // which inherits it as an orphan, must kill it before the call returns.
    for terminate_descendants in [true, false] {
        let marker = marker();
        let options = CallOptions {
            name: None,
            terminate_descendants,
        };
        let closure = || {
            #[allow(clippy::zombie_processes)]
            let _child = std::process::Command::new("setsid")
                .args(["sleep", &marker])
                .spawn()
                .unwrap();
            // SAFETY: _exit ends the child at once; nothing else runs.
            unsafe { libc::_exit(3) }
        };
        // SAFETY: as in `run`.
        let outcome: CallOutcome<()> =
            unsafe { call_unchecked(&limits(), &options, closure) }.unwrap();
        assert!(matches!(
            outcome.result,
            Err(Failure::Crashed {
                exit: Some(Exit::Code(3)),
                ..
            })
        ));
        assert_eq!(common::live_with_marker(&marker), Vec::<i32>::new());
    }
}

#[test]
fn the_closure_process_knows_its_own_thread_id() {
    // The closure runs in a process split off the guardian with a raw clone;
    // glibc's cached thread id must still be the process's own, or
    // pthread_self()-based calls would act on the guardian.
    let (cached, real): (i64, i64) = run(&limits(), || {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: a valid thread handle and a valid out-pointer.
        unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        // The clock id encodes the thread id as ~tid << 3.
        let cached = !(i64::from(clock) >> 3);
        // SAFETY: gettid has no preconditions.
        (cached, i64::from(unsafe { libc::gettid() }))
    })
    .into_result()
    .unwrap();
    assert_eq!(cached, real);
}

#[test]
fn the_safe_call_refuses_a_multi_threaded_process() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || rx.recv());
    let err = pynisher::call(&limits(), || 1).unwrap_err();
    assert!(
        matches!(err.kind(), pynisher::ErrorKind::MultiThreaded { threads: Some(n) } if *n >= 2),
        "{err}"
    );
    drop(tx);
    let _ = other.join();
}

/// Set in the copy of this test binary that
/// `a_line_the_caller_had_not_ended_is_written_once` starts.
const PRINTS: &str = "PYNISHER_TEST_PRINTS";

#[test]
fn a_line_the_caller_had_not_ended_is_written_once() {
    if std::env::var_os(PRINTS).is_some() {
        // In the copy, with the real stdout (a pipe): a line started and not
        // ended sits in stdout's buffer, which the child inherits.
        print!("before-");
        let printed = run(&limits(), || {
            println!("child");
            1
        });
        assert_eq!(printed.into_result().unwrap(), 1);
        println!("after");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_line_the_caller_had_not_ended_is_written_once",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PRINTS, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("before-child\nafter\n"), "{stdout}");
    assert_eq!(stdout.matches("before-").count(), 1, "{stdout}");
}

/// Forks `body` (which sleeps `sleep`, then sends one value frame) under
/// `limits`, and supervises it as the Python binding does: on the calling
/// thread until the first check is due, then on a thread of its own.
fn fork_and_wait_in_two_steps(
    limits: &Limits,
    sleep: Duration,
) -> (Result<pynisher::Finished, pynisher::Error>, bool) {
    let options = CallOptions {
        name: None,
        terminate_descendants: true,
    };
    // SAFETY: the body only sleeps and writes its frame; it takes no lock
    // another test thread could hold.
    let running = unsafe {
        pynisher::fork_with(limits, &options, &pynisher::NoHooks, |sender| {
            std::thread::sleep(sleep);
            let _ = sender.send(pynisher::channel::Tag::Value, &[b"done"]);
        })
    }
    .unwrap();
    match running.wait_until_first_check() {
        Ok(ended) => (ended, false),
        Err(paused) => {
            let beside =
                pynisher::Beside::start(move |interrupt| paused.wait_interruptible(interrupt))
                    .unwrap();
            let finished = beside
                .wait(
                    |wait| wait(Some(Duration::from_millis(50))),
                    || Ok::<(), ()>(()),
                )
                .map_err(|stop| match stop {
                    pynisher::Stop::Failed(err) => err,
                    pynisher::Stop::Interrupted(()) => unreachable!("the check never fails"),
                });
            (finished, true)
        }
    }
}

#[test]
fn a_short_call_ends_within_the_first_wait_and_a_long_one_goes_on_beside() {
    let (short, handed_over) = fork_and_wait_in_two_steps(&limits(), Duration::ZERO);
    assert!(!handed_over, "a call of no time outlived the first wait");
    assert_eq!(short.unwrap().outcome.status, Status::Ok);

    let (long, handed_over) = fork_and_wait_in_two_steps(&limits(), Duration::from_millis(300));
    assert!(handed_over, "a call of 0.3 s ended within the first 50 ms");
    let long = long.unwrap();
    assert_eq!(long.outcome.status, Status::Ok);
    assert!(long.outcome.usage.wall_time >= Duration::from_millis(300));
    assert_eq!(long.frame.unwrap().tag, pynisher::channel::Tag::Value);
}

#[test]
fn a_limit_due_before_the_first_check_is_enforced_by_the_first_wait() {
    let limits = Limits::new()
        .wall_time(Duration::from_millis(20))
        .grace_period(Duration::ZERO);
    let began = Instant::now();
    let (ended, handed_over) = fork_and_wait_in_two_steps(&limits, Duration::from_secs(20));
    assert!(!handed_over);
    assert_eq!(ended.unwrap().outcome.status, Status::WallTime);
    assert!(began.elapsed() < SLACK, "{:?}", began.elapsed());
}
