//! Limits at the edge of what the clock and the kernel can represent: they
//! never panic, and what cannot be represented is never reached.

use std::time::Duration;

use pynisher::{Command, Limits, MemoryMode, Status};

#[test]
fn limits_beyond_the_clock_let_a_command_finish() {
    for mode in [MemoryMode::AddressSpace, MemoryMode::Resident] {
        let limits = Limits::new()
            .wall_time(Duration::MAX)
            .cpu_time(Duration::MAX)
            .grace_period(Duration::MAX)
            .memory(u64::MAX)
            .memory_mode(mode);
        let outcome = Command::new("true").run(&limits).unwrap();
        assert_eq!(outcome.status, Status::Ok, "{mode:?}: {}", outcome.detail);
    }
}

#[test]
fn a_grace_period_beyond_the_clock_still_stops_at_the_wall_limit() {
    // `sleep` obeys SIGTERM, so the endless grace period is never needed.
    let limits = Limits::new()
        .wall_time(Duration::from_millis(200))
        .grace_period(Duration::MAX);
    let outcome = Command::new("sleep").arg("10").run(&limits).unwrap();
    assert_eq!(outcome.status, Status::WallTime, "{}", outcome.detail);
    assert!(outcome.usage.wall_time < Duration::from_secs(5));
}

#[test]
fn a_grace_period_beyond_the_clock_still_stops_at_the_cpu_limit() {
    let limits = Limits::new()
        .cpu_time(Duration::from_millis(200))
        .grace_period(Duration::MAX);
    let outcome = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .run(&limits)
        .unwrap();
    assert_eq!(outcome.status, Status::CpuTime, "{}", outcome.detail);
}
