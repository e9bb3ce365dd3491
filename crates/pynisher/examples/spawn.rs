//! Runs functions under limits from several threads at once with
//! `pynisher::spawn`, which starts a fresh process of this program for each
//! call (a fork would not be safe with threads running), and prints what
//! happened.
//!
//! ```text
//! cargo run -p pynisher --example spawn
//! ```

use std::time::Duration;

use pynisher::{spawn, spawnable, Limits, MemoryMode};

/// Counts the primes below `n`, slowly.
fn count_primes(n: u64) -> usize {
    (2..n)
        .filter(|k| (2..*k).take_while(|d| d * d <= *k).all(|d| k % d != 0))
        .count()
}

fn sleep_for(seconds: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(seconds));
    seconds
}

fn grow(chunk_mib: usize) -> usize {
    let mut chunks = Vec::new();
    loop {
        chunks.push(vec![1u8; chunk_mib << 20]);
        std::thread::sleep(Duration::from_millis(10));
    }
}

spawnable!(count_primes, sleep_for, grow);

fn main() {
    let jobs: Vec<(&str, std::thread::JoinHandle<String>)> = vec![
        (
            "primes below 200,000, cpu_time=5 s",
            std::thread::spawn(|| {
                let limits = Limits::new().cpu_time(Duration::from_secs(5));
                describe(spawn::call(&limits, count_primes, 200_000))
            }),
        ),
        (
            "primes below 10^9, cpu_time=0.5 s",
            std::thread::spawn(|| {
                let limits = Limits::new().cpu_time(Duration::from_millis(500));
                describe(spawn::call(&limits, count_primes, 1_000_000_000))
            }),
        ),
        (
            "sleeps 10 s, wall_time=0.5 s",
            std::thread::spawn(|| {
                let limits = Limits::new().wall_time(Duration::from_millis(500));
                describe(spawn::call(&limits, sleep_for, 10))
            }),
        ),
        (
            "grows, resident memory=100 MB",
            std::thread::spawn(|| {
                let limits = Limits::new()
                    .memory(100 << 20)
                    .memory_mode(MemoryMode::Resident)
                    .wall_time(Duration::from_secs(10));
                describe(spawn::call(&limits, grow, 16))
            }),
        ),
    ];
    for (what, job) in jobs {
        println!("{what:<38} {}", job.join().expect("the thread ran"));
    }
}

fn describe<T: std::fmt::Debug>(
    outcome: Result<pynisher::CallOutcome<T>, pynisher::Error>,
) -> String {
    match outcome {
        Ok(outcome) => format!(
            "{:<10} wall {:>6.3} s  cpu {:>6.3} s  {:?}",
            outcome.status.as_str(),
            outcome.usage.wall_time.as_secs_f64(),
            outcome.usage.cpu_time().as_secs_f64(),
            outcome.result,
        ),
        Err(err) => format!("pynisher failed: {err}"),
    }
}
