//! External commands under limits, end to end with real programs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{alive_with_marker, eventually, live_with_marker, marker, read_pids, temp_dir};
use pynisher::{Command, ErrorKind, Exit, Limits, MemoryMode, Status, Stop};

const SLACK: Duration = Duration::from_secs(1);

fn sh(script: &str) -> Command {
    let mut command = Command::new("sh");
    command.args(["-c", script]);
    command
}

#[test]
fn sleep_is_stopped_at_the_wall_limit() {
    let limits = Limits::new()
        .wall_time(Duration::from_millis(500))
        .grace_period(Duration::from_secs(1));
    let started = Instant::now();
    let outcome = Command::new("sleep").arg("30").run(&limits).unwrap();
    let took = started.elapsed();
    assert_eq!(outcome.status, Status::WallTime, "{outcome:?}");
    assert_eq!(outcome.exit, Some(Exit::Signal(libc::SIGTERM)));
    assert!(outcome.usage.wall_time >= Duration::from_millis(500));
    assert!(
        took < Duration::from_millis(500) + limits.grace_period + SLACK,
        "{took:?}"
    );
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let limits = Limits::new()
        .wall_time(Duration::from_millis(300))
        .grace_period(Duration::from_millis(300));
    let started = Instant::now();
    let outcome = sh("trap '' TERM; sleep 30").run(&limits).unwrap();
    assert_eq!(outcome.status, Status::WallTime);
    assert_eq!(outcome.exit, Some(Exit::Signal(libc::SIGKILL)));
    assert!(started.elapsed() < Duration::from_millis(600) + SLACK);
}

#[test]
fn a_busy_loop_is_stopped_at_the_cpu_limit() {
    let limits = Limits::new()
        .cpu_time(Duration::from_millis(500))
        .wall_time(Duration::from_secs(20));
    let outcome = sh("while :; do :; done").run(&limits).unwrap();
    assert_eq!(outcome.status, Status::CpuTime, "{outcome:?}");
    assert!(
        outcome.usage.cpu_time() >= Duration::from_millis(500),
        "{outcome:?}"
    );
    // A CPU limit bounds CPU time, not wall time: on a loaded machine 500 ms of CPU
    // can take seconds of wall time, so the invariant is the CPU used past the limit.
    assert!(
        outcome.usage.cpu_time() < Duration::from_millis(500) + limits.grace_period + SLACK,
        "{outcome:?}"
    );
}

#[test]
fn cpu_time_of_the_whole_tree_counts() {
    // Two busy children; the shell itself does nothing.
    let limits = Limits::new()
        .cpu_time(Duration::from_millis(600))
        .wall_time(Duration::from_secs(20));
    let outcome = sh("(while :; do :; done) & (while :; do :; done) & wait")
        .run(&limits)
        .unwrap();
    assert_eq!(outcome.status, Status::CpuTime, "{outcome:?}");
    assert!(outcome.usage.cpu_time() >= Duration::from_millis(600));
}

#[test]
fn address_space_limit_makes_allocations_fail_in_the_command() {
    let limits = Limits::new()
        .memory(200 << 20)
        .wall_time(Duration::from_secs(20));
    let outcome = Command::new("python3")
        .args(["-c", "bytearray(1 << 30)"])
        .run(&limits)
        .unwrap();
    // Python reports the MemoryError itself and exits with 1.
    assert_eq!(outcome.status, Status::Error, "{outcome:?}");
    assert_eq!(outcome.exit, Some(Exit::Code(1)));
    assert!(
        outcome.detail.contains("memory limit"),
        "{}",
        outcome.detail
    );
}

#[test]
fn the_callers_own_size_does_not_count_against_a_command() {
    // Reserve 2 GiB of address space here; the command's limit is its own.
    let reserved: Vec<u8> = Vec::with_capacity(2 << 30);
    let limits = Limits::new()
        .memory(300 << 20)
        .wall_time(Duration::from_secs(20));
    let outcome = Command::new("python3")
        .args(["-c", "b = bytearray(100 << 20)"])
        .run(&limits)
        .unwrap();
    assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
    drop(reserved);
}

#[test]
fn resident_limit_kills_the_tree() {
    let limits = Limits::new()
        .memory(150 << 20)
        .memory_mode(MemoryMode::Resident)
        .wall_time(Duration::from_secs(20));
    let started = Instant::now();
    let outcome = Command::new("python3")
        .args(["-c", "import time\nb = b'x' * (400 << 20)\ntime.sleep(30)"])
        .run(&limits)
        .unwrap();
    assert_eq!(outcome.status, Status::Memory, "{outcome:?}");
    assert!(outcome.usage.peak_memory > 150 << 20, "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let limits = Limits::new().wall_time(Duration::from_secs(20));
    let outcome = Command::new("true").run(&limits).unwrap();
    assert_eq!(
        (outcome.status, outcome.exit),
        (Status::Ok, Some(Exit::Code(0)))
    );
    let outcome = sh("exit 3").run(&limits).unwrap();
    assert_eq!(
        (outcome.status, outcome.exit),
        (Status::Error, Some(Exit::Code(3)))
    );
    assert_eq!(outcome.detail, "exited with code 3");
    let outcome = sh("kill -SEGV $$").run(&limits).unwrap();
    assert_eq!(
        (outcome.status, outcome.exit),
        (Status::Crashed, Some(Exit::Signal(libc::SIGSEGV)))
    );
    assert!(outcome.detail.contains("SIGSEGV"), "{}", outcome.detail);
}

#[test]
fn signals_the_caller_ignores_or_blocks_are_reset() {
    // The Rust runtime ignores SIGPIPE; a shell cannot undo an ignored signal
    // it inherits, so this only dies if pynisher reset it.
    let limits = Limits::new().wall_time(Duration::from_secs(20));
    let outcome = sh("kill -PIPE $$; exit 0").run(&limits).unwrap();
    assert_eq!(
        outcome.exit,
        Some(Exit::Signal(libc::SIGPIPE)),
        "{outcome:?}"
    );

    // A signal blocked in the calling thread is unblocked in the command.
    // SAFETY: plain signal-mask calls on valid sigsets; the mask is restored.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let outcome = sh("kill -USR1 $$; exit 0").run(&limits);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        assert_eq!(outcome.unwrap().exit, Some(Exit::Signal(libc::SIGUSR1)));
    }
}

#[test]
fn a_missing_command_is_reported() {
    let err = Command::new("pynisher-no-such-command")
        .run(&Limits::new())
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CommandNotFound { program } if program == "pynisher-no-such-command"),
        "{err}"
    );
    let err = Command::new("/nonexistent/pynisher-no-such-command")
        .run(&Limits::new())
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CommandNotFound { .. }),
        "{err}"
    );
}

#[test]
fn a_file_that_cannot_run_is_reported() {
    let dir = temp_dir("not-executable");
    let plain = dir.join("plain");
    std::fs::write(&plain, "echo hi\n").unwrap();
    let err = Command::new(&plain).run(&Limits::new()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CommandNotExecutable { source, .. }
            if source.raw_os_error() == Some(libc::EACCES)),
        "{err}"
    );
    // An executable file the kernel cannot run is handed to /bin/sh, as
    // `execvp` does: a script without `#!` runs, and garbage fails in the
    // shell, which reports it with its own exit code.
    let script = dir.join("script");
    std::fs::write(&script, "exit 7\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outcome = Command::new(&script).run(&Limits::new()).unwrap();
    assert_eq!(outcome.exit, Some(Exit::Code(7)), "{outcome:?}");
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outcome = Command::new(&garbage).run(&Limits::new()).unwrap();
    assert_eq!(outcome.status, Status::Error, "{outcome:?}");
    // A directory is not a program either.
    let err = Command::new(&dir).run(&Limits::new()).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::CommandNotExecutable { .. }),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn environment_and_working_directory_are_applied() {
    let dir = temp_dir("env");
    let out = dir.join("out");
    let outcome = sh(r#"printf '%s|%s|%s' "$PYNISHER_TEST" "$(pwd)" "${HOME-unset}" > out"#)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PYNISHER_TEST", "yes")
        .current_dir(&dir)
        .run(&Limits::new())
        .unwrap();
    assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    let canonical = dir.canonicalize().unwrap();
    assert_eq!(text, format!("yes|{}|unset", canonical.display()));

    let err = Command::new("true")
        .current_dir(dir.join("missing"))
        .run(&Limits::new())
        .unwrap_err();
    assert!(err.to_string().contains("working directory"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A script that starts a child, a `setsid` grandchild and a double-forked
/// `setsid` great-grandchild, each a `sleep MARKER`, and writes their pids.
fn spawning_script(pids: &std::path::Path, marker: &str, then: &str) -> String {
    let pids = pids.display();
    format!(
        "sleep {marker} & echo $! >> {pids}\n\
         setsid sleep {marker} & echo $! >> {pids}\n\
         (setsid sh -c 'sleep {marker} & echo $! >> {pids}; wait' &)\n\
         sleep 0.4\n\
         {then}\n"
    )
}

fn assert_none_survive(pids_file: &std::path::Path, marker: &str) {
    let pids = read_pids(pids_file);
    assert_eq!(
        pids.len(),
        3,
        "the script did not start everything: {pids:?}"
    );
    let gone = eventually(Duration::from_secs(2), || {
        pids.iter().all(|pid| !alive_with_marker(*pid, marker))
    });
    assert!(gone, "survivors: {:?}", live_with_marker(marker));
    assert!(live_with_marker(marker).is_empty());
}

#[test]
fn no_descendant_survives_a_limit() {
    let dir = temp_dir("tree-limit");
    let pids = dir.join("pids");
    let marker = marker();
    let limits = Limits::new().wall_time(Duration::from_secs(1));
    let outcome = sh(&spawning_script(&pids, &marker, "sleep 30"))
        .run(&limits)
        .unwrap();
    assert_eq!(outcome.status, Status::WallTime);
    assert_none_survive(&pids, &marker);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn no_descendant_survives_a_command_that_exits() {
    let dir = temp_dir("tree-exit");
    let pids = dir.join("pids");
    let marker = marker();
    let limits = Limits::new().wall_time(Duration::from_secs(20));
    let outcome = sh(&spawning_script(&pids, &marker, "exit 0"))
        .run(&limits)
        .unwrap();
    assert_eq!(outcome.status, Status::Ok, "{outcome:?}");
    assert_none_survive(&pids, &marker);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn descendants_may_be_left_running() {
    let dir = temp_dir("tree-keep");
    let pids = dir.join("pids");
    let marker = marker();
    let outcome = sh(&format!(
        "setsid sleep {marker} & echo $! > {}",
        pids.display()
    ))
    .terminate_descendants(false)
    .run(&Limits::new())
    .unwrap();
    assert_eq!(outcome.status, Status::Ok);
    let pid = read_pids(&pids)[0];
    assert!(alive_with_marker(pid, &marker));
    // SAFETY: kill has no memory-safety preconditions; the marker check above
    // makes sure the pid is our sleep.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wait_with_can_signal_the_whole_tree() {
    let limits = Limits::new().wall_time(Duration::from_secs(20));
    let running = sh("trap 'exit 9' USR1; while :; do sleep 0.05; done")
        .spawn(&limits)
        .unwrap();
    let mut sent = false;
    let started = Instant::now();
    let outcome = running
        .wait_with(|tree| {
            if !sent && started.elapsed() > Duration::from_millis(200) {
                tree.signal(libc::SIGUSR1);
                sent = true;
            }
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(
        (outcome.status, outcome.exit),
        (Status::Error, Some(Exit::Code(9))),
        "{outcome:?}"
    );
}

#[test]
fn an_interrupt_kills_the_tree() {
    let marker = marker();
    let running = sh(&format!("sleep {marker} & sleep {marker}"))
        .spawn(&Limits::new())
        .unwrap();
    let started = Instant::now();
    let result = running.wait_with(|_| {
        if started.elapsed() > Duration::from_millis(300) {
            Err("stop")
        } else {
            Ok(())
        }
    });
    assert!(matches!(result, Err(Stop::Interrupted("stop"))));
    assert!(eventually(Duration::from_secs(2), || live_with_marker(
        &marker
    )
    .is_empty()));
}

#[test]
fn commands_from_several_threads_are_independent() {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let limits = Limits::new().wall_time(Duration::from_secs(20));
                for _ in 0..5 {
                    let outcome = sh(&format!("exit {i}")).run(&limits).unwrap();
                    assert_eq!(outcome.exit, Some(Exit::Code(i)));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}
