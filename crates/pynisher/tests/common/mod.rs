//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A fresh, empty directory under the system's temporary directory.
pub fn temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("pynisher-test-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `pid` is a live process whose command line contains `marker`.
/// Zombies count as dead; a reused pid running something else too.
pub fn alive_with_marker(pid: i32, marker: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let fields: Vec<&str> = stat
        .rfind(')')
        .map(|close| stat[close + 1..].split_whitespace().collect())
        .unwrap_or_default();
    if matches!(fields.first(), None | Some(&"Z" | &"X" | &"x")) {
        return false;
    }
    // Kernel threads (PF_KTHREAD) have no command line at all.
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags: u64 = fields.get(6).and_then(|f| f.parse().ok()).unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        return false;
    }
    // A process in the middle of execve shows an empty command line for a
    // moment; only a process that is gone keeps it empty.
    for _ in 0..100 {
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) if cmdline.is_empty() => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(cmdline) => return String::from_utf8_lossy(&cmdline).contains(marker),
            Err(_) => return false,
        }
    }
    false
}

/// Every live process whose command line contains `marker`.
pub fn live_with_marker(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            if alive_with_marker(pid, marker) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Waits up to `timeout` for `condition`; true if it came.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids written one per line to `path`.
pub fn read_pids(path: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

/// A marker that no other test (or test run) uses, for `sleep` arguments:
/// a number of seconds that is unlikely to appear anywhere else.
pub fn marker() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}.{:04}{}", 300 + n, std::process::id() % 10_000, n)
}
