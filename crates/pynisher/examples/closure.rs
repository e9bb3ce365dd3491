//! Runs Rust closures in a forked child under each limit and prints what
//! happened.
//!
//! ```text
//! cargo run -p pynisher --example closure
//! ```

use std::time::Duration;

use pynisher::{call, CallOutcome, Failure, Limits, MemoryMode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Fit {
    slope: f64,
    intercept: f64,
}

/// A least-squares line through `points`.
fn fit(points: &[(f64, f64)]) -> Fit {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    let slope = sxy / sxx;
    Fit {
        slope,
        intercept: my - slope * mx,
    }
}

fn show<T: std::fmt::Debug>(what: &str, outcome: &CallOutcome<T>) {
    let usage = &outcome.usage;
    let result = match &outcome.result {
        Ok(value) => format!("{value:?}"),
        Err(Failure::Panic { message }) => format!("panicked: {message}"),
        Err(failure) => failure.to_string(),
    };
    println!(
        "{what:<34} {:<10} wall {:>6.3} s  cpu {:>6.3} s  {result}",
        outcome.status.as_str(),
        usage.wall_time.as_secs_f64(),
        usage.cpu_time().as_secs_f64(),
    );
}

fn main() -> Result<(), pynisher::Error> {
    let points: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
    let limits = Limits::new().wall_time(Duration::from_secs(5));
    let outcome = call(&limits, || fit(&points))?;
    show("fit a line", &outcome);

    let limits = Limits::new().wall_time(Duration::from_millis(300));
    let outcome = call(&limits, || std::thread::sleep(Duration::from_secs(10)))?;
    show("wall_time=0.3 s, sleeps 10 s", &outcome);

    let limits = Limits::new()
        .cpu_time(Duration::from_millis(300))
        .wall_time(Duration::from_secs(10));
    let outcome = call(&limits, || {
        let mut x = 0u64;
        for i in 0u64.. {
            x = std::hint::black_box(x ^ i);
        }
        x
    })?;
    show("cpu_time=0.3 s, spins", &outcome);

    let limits = Limits::new().memory(100 << 20);
    let outcome = call(&limits, || vec![0u8; 1 << 30].len())?;
    show("memory=100 MB, allocates 1 GB", &outcome);

    let limits = Limits::new()
        .memory(100 << 20)
        .memory_mode(MemoryMode::Resident)
        .wall_time(Duration::from_secs(10));
    let outcome = call(&limits, || {
        let mut chunks = Vec::new();
        loop {
            chunks.push(vec![1u8; 16 << 20]);
            std::thread::sleep(Duration::from_millis(10));
            if chunks.len() > 1000 {
                return chunks.len();
            }
        }
    })?;
    show("resident memory=100 MB, grows", &outcome);

    let outcome: CallOutcome<u32> = call(&Limits::new(), || panic!("no data for {}", "2024"))?;
    show("panics", &outcome);
    Ok(())
}
