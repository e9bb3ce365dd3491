//! The call's guardian and the forkserver handle where the kernel refuses a
//! system call (a seccomp profile without `pidfd_open` or `close_range`, as
//! in older container runtimes), and the forkserver handle's lifetime.
//!
//! A seccomp filter cannot be removed, so each such test runs in a fresh
//! copy of this test binary: the test re-runs itself with
//! `PYNISHER_SECCOMP_DENY` set, and that copy installs the filter first.

mod common;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use pynisher::exec::Program;
use pynisher::forkserver::ForkServer;
use pynisher::{call_unchecked, CallOptions, Limits, Status};

const DENY: &str = "PYNISHER_SECCOMP_DENY";

/// Makes `denied` fail with ENOSYS for this thread and what it starts.
fn deny_syscalls(denied: &[u32]) {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let mut filter = vec![
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    for (i, nr) in denied.iter().enumerate() {
        let left = (denied.len() - i - 1) as u8;
        filter.push(libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            // to the "deny" return, past the rest of the checks and "allow"
            jt: left + 1,
            jf: 0,
            k: *nr,
        });
    }
    filter.push(libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: RET_ALLOW,
    });
    filter.push(libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: RET_ERRNO | libc::ENOSYS as u32,
    });
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl with a valid filter program that outlives the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

/// In the parent test: runs `test` again in a copy of this binary with
/// `denied` refused. In that copy: installs the filter and returns true.
fn in_a_copy_without(test: &str, denied: &[u32]) -> bool {
    if std::env::var_os(DENY).is_some() {
        deny_syscalls(denied);
        return true;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(DENY, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    false
}

fn options() -> CallOptions {
    CallOptions {
        name: None,
        terminate_descendants: true,
    }
}

fn no_children_left() -> bool {
    // SAFETY: waitid with WNOWAIT only looks; `info` is valid for writes.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let ret = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        ret != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
    }
}

#[test]
fn a_call_whose_pidfd_cannot_be_opened_is_stopped_and_reaped() {
    if !in_a_copy_without(
        "a_call_whose_pidfd_cannot_be_opened_is_stopped_and_reaped",
        &[libc::SYS_pidfd_open as u32],
    ) {
        return;
    }
    let dir = common::temp_dir("pidfd-denied");
    let late = dir.join("still-running");
    let limits = Limits::new().wall_time(Duration::from_secs(20));
    let body_late = late.clone();
    // SAFETY: this copy of the test binary runs this one test on one thread.
    let result = unsafe {
        call_unchecked(&limits, &options(), move || {
            std::thread::sleep(Duration::from_millis(1500));
            std::fs::write(&body_late, b"ran on").unwrap();
        })
    };
    let err = result.expect_err("the call cannot be supervised");
    assert!(err.to_string().contains("pidfd_open"), "{err}");
    assert!(no_children_left(), "the call's process was left a child");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!late.exists(), "the call ran on unsupervised");
}

#[test]
fn a_guardian_without_close_range_still_closes_what_it_inherited() {
    if !in_a_copy_without(
        "a_guardian_without_close_range_still_closes_what_it_inherited",
        &[libc::SYS_close_range as u32],
    ) {
        return;
    }
    // Descriptors the caller holds, which the guardian must not keep.
    let held: Vec<std::fs::File> = (0..20)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let limits = Limits::new().wall_time(Duration::from_secs(20));
    let body = || {
        // SAFETY: getppid has no preconditions.
        let guardian = unsafe { libc::getppid() };
        let count = || {
            std::fs::read_dir(format!("/proc/{guardian}/fd"))
                .map(Iterator::count)
                .unwrap_or(usize::MAX)
        };
        // The guardian closes them once its program starts.
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while count() > 5 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        count()
    };
    // SAFETY: this copy of the test binary runs this one test on one thread.
    let outcome = unsafe { call_unchecked(&limits, &options(), body) }.unwrap();
    assert_eq!(outcome.status, Status::Ok);
    let count = outcome.into_result().unwrap();
    // stdin, stdout, stderr and two pidfds (the caller, the function).
    assert!(count <= 5, "the guardian holds {count} descriptors");
    drop(held);
}

#[test]
fn a_forkserver_handle_never_reaps_before_it_is_dropped() {
    // A "server" that exits at once.
    let program = Program::new("true", &[] as &[&str]).unwrap();
    let server = ForkServer::start(program).unwrap();
    let pid = server.pid();
    assert!(common::eventually(Duration::from_secs(5), || !server.is_alive()));
    // Still a zombie of ours, so its pid cannot go to another process
    // before the handle is dropped (which signals and reaps it).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.contains(") Z "), "{stat}");
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_forkserver_handle_leaves_the_server_alone_in_a_forked_child() {
    let program = Program::new("sleep", &["30"]).unwrap();
    let server = ForkServer::start(program).unwrap();
    let pid = server.pid();
    let (read_end, write_end) = pynisher::sys::pipe().unwrap();
    // SAFETY: the child only drops the handle (no allocation: the handle
    // closes descriptors and compares pids) and exits.
    let child = unsafe { libc::fork() };
    if child == 0 {
        drop(server);
        drop(read_end);
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(0) };
    }
    drop(write_end);
    let mut buf = [0u8; 1];
    let _ = pynisher::sys::read(std::os::fd::AsFd::as_fd(&read_end), &mut buf);
    let _ = pynisher::sys::wait4(child, true);
    // A SIGKILL takes effect a little after `kill` returns.
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.is_alive(), "a forked child's drop killed the server");
    let _ = read_end.as_raw_fd();
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
