//! `pynisher::spawn` as a user crate's own `cargo test` uses it: plain
//! `#[test]` functions in a multi-threaded process, no `unsafe`, each limit,
//! a panic and a value.

#![forbid(unsafe_code)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use pynisher::{spawn, spawnable, ErrorKind, Failure, Limits, MemoryMode, Status};

/// Margin for a loaded machine on top of an invariant time bound.
const SLACK: Duration = Duration::from_secs(2);

fn square(x: u64) -> u64 {
    x * x
}

fn describe(pair: (String, Vec<u32>)) -> String {
    format!("{}: {}", pair.0, pair.1.iter().sum::<u32>())
}

fn nap(seconds: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(seconds));
    seconds
}

fn burn(_: ()) -> u64 {
    let mut x = 0u64;
    for i in 0u64.. {
        x = std::hint::black_box(x ^ i);
    }
    x
}

/// Allocates and touches `mib` MiB, then holds it for a while.
fn hog(mib: usize) -> usize {
    let block = vec![1u8; mib << 20];
    std::thread::sleep(Duration::from_secs(5));
    std::hint::black_box(&block).len()
}

fn fail(message: String) -> u8 {
    panic!("{message}")
}

/// Runs threads of its own inside the child, which is fine there too.
fn threaded_sum(n: u64) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| std::thread::spawn(move || i)).collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// Calls `spawn::call` from inside a spawned child.
fn nested(x: u64) -> u64 {
    let outcome = spawn::call(&Limits::new(), square, x).unwrap();
    outcome.result.unwrap() + 1
}

fn not_listed(x: u64) -> u64 {
    x
}

spawnable!(square, describe, nap, burn, hog, fail, threaded_sum, nested);

/// Keeps a second thread alive, so that the process is multi-threaded
/// whatever the test harness does (nextest runs each test in a process of
/// its own), and checks that `pynisher::call` would refuse to fork here.
fn with_a_second_thread<R>(body: impl FnOnce() -> R) -> R {
    let barrier = Arc::new(Barrier::new(2));
    let waiting = Arc::clone(&barrier);
    let helper = std::thread::spawn(move || waiting.wait());
    let refused = pynisher::call(&Limits::new(), || 1u8).unwrap_err();
    assert!(
        matches!(refused.kind(), ErrorKind::MultiThreaded { .. }),
        "{refused}"
    );
    let result = body();
    barrier.wait();
    helper.join().unwrap();
    result
}

#[test]
fn a_value_comes_back() {
    with_a_second_thread(|| {
        let outcome = spawn::call(&Limits::new(), square, 12).unwrap();
        assert_eq!(outcome.status, Status::Ok, "{}", outcome.detail);
        assert_eq!(outcome.result, Ok(144));
        let outcome = spawn::call(
            &Limits::new(),
            describe,
            ("total".to_owned(), vec![1, 2, 3]),
        )
        .unwrap();
        assert_eq!(outcome.result.unwrap(), "total: 6");
        let outcome = spawn::call(&Limits::new(), threaded_sum, 8).unwrap();
        assert_eq!(outcome.result, Ok(28));
        let outcome = spawn::call(&Limits::new(), nested, 5).unwrap();
        assert_eq!(outcome.result, Ok(26));
    });
}

#[test]
fn calls_from_many_threads_at_once() {
    let threads: Vec<_> = (0..4u64)
        .map(|i| std::thread::spawn(move || spawn::call(&Limits::new(), square, i).unwrap()))
        .collect();
    for (i, thread) in threads.into_iter().enumerate() {
        let outcome = thread.join().unwrap();
        assert_eq!(outcome.result, Ok((i * i) as u64));
    }
}

#[test]
fn the_wall_time_limit_stops_the_function() {
    with_a_second_thread(|| {
        let limits = Limits::new().wall_time(Duration::from_millis(300));
        let started = Instant::now();
        let outcome = spawn::call(&limits, nap, 30).unwrap();
        assert_eq!(outcome.status, Status::WallTime, "{}", outcome.detail);
        assert!(matches!(
            outcome.result,
            Err(Failure::Limit {
                status: Status::WallTime,
                ..
            })
        ));
        assert!(started.elapsed() < Duration::from_millis(300) + SLACK);
    });
}

#[test]
fn the_cpu_time_limit_stops_the_function() {
    with_a_second_thread(|| {
        let limits = Limits::new()
            .cpu_time(Duration::from_millis(400))
            .wall_time(Duration::from_secs(30));
        let outcome = spawn::call(&limits, burn, ()).unwrap();
        assert_eq!(outcome.status, Status::CpuTime, "{}", outcome.detail);
        assert!(outcome.usage.cpu_time() >= Duration::from_millis(400));
        assert!(outcome.usage.cpu_time() < Duration::from_millis(400) + SLACK);
    });
}

#[test]
fn the_memory_limit_stops_the_function_in_both_modes() {
    with_a_second_thread(|| {
        // Address space: headroom on top of the child's size; the
        // allocation fails and the child reports it.
        let limits = Limits::new()
            .memory(64 << 20)
            .wall_time(Duration::from_secs(30));
        let outcome = spawn::call(&limits, hog, 512).unwrap();
        assert_eq!(outcome.status, Status::Memory, "{}", outcome.detail);
        assert_eq!(
            outcome.result.as_ref().unwrap_err().limit(),
            Some(Status::Memory)
        );

        // Resident: sampled and killed past the limit.
        let limits = limits.memory_mode(MemoryMode::Resident);
        let outcome = spawn::call(&limits, hog, 256).unwrap();
        assert_eq!(outcome.status, Status::Memory, "{}", outcome.detail);
        assert!(outcome.usage.peak_memory > 64 << 20, "{:?}", outcome.usage);

        // Within the limit the same function returns.
        let limits = Limits::new().memory(256 << 20);
        let outcome = spawn::call(&limits, square, 3).unwrap();
        assert_eq!(outcome.result, Ok(9));
    });
}

#[test]
fn a_panic_is_a_failure_with_its_message() {
    with_a_second_thread(|| {
        let outcome = spawn::call(&Limits::new(), fail, "no luck".to_owned()).unwrap();
        assert_eq!(outcome.status, Status::Error);
        assert_eq!(
            outcome.result,
            Err(Failure::Panic {
                message: "no luck".to_owned()
            })
        );
    });
}

#[test]
fn a_function_that_is_not_listed_is_refused() {
    let err = spawn::call(&Limits::new(), not_listed, 1).unwrap_err();
    assert_eq!(err.argument(), Some("function"));
    assert!(err.to_string().contains("not_listed"), "{err}");
}
