//! Tests that need what the VM test bed (`scripts/vm-test.sh`) gives: root,
//! and a caller inside a cgroup v2 whose `memory.max` someone else set. They
//! are ignored elsewhere; the VM runs them with `--include-ignored`, inside
//! the capped cgroup it names in `PYNISHER_TEST_OUTSIDE_CAP`.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pynisher::{fork_with, CallOptions, ForkHooks, Limits, NoHooks, Status, Supervised};

fn options() -> CallOptions {
    CallOptions {
        terminate_descendants: true,
        ..CallOptions::default()
    }
}

/// Two ends of a pipe that forked children inherit.
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    (fds[0], fds[1])
}

fn write_pid(fd: RawFd, pid: libc::pid_t) {
    let bytes = pid.to_le_bytes();
    // SAFETY: writes from a live buffer of that length.
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn read_pid(fd: RawFd) -> libc::pid_t {
    let mut bytes = [0u8; 4];
    // SAFETY: reads into a live buffer of that length.
    let n = unsafe { libc::read(fd, bytes.as_mut_ptr().cast(), bytes.len()) };
    assert_eq!(n, 4, "reading a pid from a pipe");
    libc::pid_t::from_le_bytes(bytes)
}

// ---------------------------------------------------------------------------
// An OOM kill in the call's first moments, under an outside memory cap

/// The capped cgroup the caller runs in.
fn outside_cap() -> PathBuf {
    std::env::var_os("PYNISHER_TEST_OUTSIDE_CAP")
        .expect("PYNISHER_TEST_OUTSIDE_CAP names the capped cgroup this caller runs in")
        .into()
}

fn oom_kills(events: &std::path::Path) -> u64 {
    std::fs::read_to_string(events)
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.parse().ok())
        .expect("an oom_kill line in memory.events")
}

/// Holds the caller right after the fork until the cap's OOM killer has
/// acted: the slowest a caller can be to take charge of its child (a busy
/// machine can deschedule it there for as long).
struct ResumeAfterTheOomKill {
    events: PathBuf,
    before: u64,
}

impl ForkHooks for ResumeAfterTheOomKill {
    fn after_parent(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        while oom_kills(&self.events) == self.before && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
#[ignore = "needs a caller under an outside memory cap (PYNISHER_TEST_OUTSIDE_CAP); scripts/vm-test.sh runs it"]
fn an_oom_kill_before_the_caller_takes_charge_still_counts() {
    let events = outside_cap().join("memory.events");
    let hooks = ResumeAfterTheOomKill {
        before: oom_kills(&events),
        events,
    };
    // SAFETY: the body only allocates, which glibc's malloc allows in a
    // forked child of a threaded process.
    let supervised = unsafe {
        fork_with(&Limits::new(), &options(), &hooks, |_| {
            let mut blocks = Vec::new();
            // 16 GiB at most: never take down a machine without the cap.
            for _ in 0..1024 {
                blocks.push(std::hint::black_box(vec![1u8; 16 << 20]));
            }
        })
    }
    .unwrap();
    assert!(
        oom_kills(&hooks.events) > hooks.before,
        "the OOM killer did not act within 60 s"
    );
    let outcome = supervised.wait().unwrap().outcome;
    assert_eq!(outcome.status, Status::Memory, "{}", outcome.detail);
    assert!(
        outcome.detail.contains("outside pynisher"),
        "{}",
        outcome.detail
    );
}

// ---------------------------------------------------------------------------
// The guardian kills through pidfds, never a pid that was reused

/// A traced child of this process: the call's guardian.
struct Tracer {
    pid: libc::pid_t,
}

impl Tracer {
    /// Traces `pid` and stops it at every system call.
    fn seize(pid: libc::pid_t) -> Tracer {
        let tracer = Tracer { pid };
        let options = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACEEXEC;
        tracer.ptrace(libc::PTRACE_SEIZE, options as usize);
        tracer.ptrace(libc::PTRACE_INTERRUPT, 0);
        tracer.wait();
        tracer.ptrace(libc::PTRACE_SYSCALL, 0);
        tracer
    }

    fn ptrace(&self, request: libc::c_uint, data: usize) {
        // SAFETY: requests on our own tracee, with integer arguments or
        // (GETREGS) a buffer of the size the kernel writes.
        let rc = unsafe { libc::ptrace(request, self.pid, 0usize, data) };
        assert!(
            rc >= 0,
            "ptrace {request}: {}",
            std::io::Error::last_os_error()
        );
    }

    fn wait(&self) -> i32 {
        let mut status = 0;
        // SAFETY: waits for our own tracee.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(
            libc::WIFSTOPPED(status),
            "the guardian ended before it killed anything (wait status {status:#x})"
        );
        status
    }

    /// Lets the tracee run to the entry of the first system call by which
    /// it sends SIGKILL, and leaves it stopped there.
    fn run_to_first_sigkill(&self) {
        loop {
            let status = self.wait();
            let signal = libc::WSTOPSIG(status);
            if signal == libc::SIGTRAP | 0x80 {
                // SAFETY: user_regs_struct is plain data; all-zero is valid.
                let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
                self.ptrace(libc::PTRACE_GETREGS, std::ptr::addr_of_mut!(regs) as usize);
                // At a system call's entry the kernel has set rax to -ENOSYS.
                let entry = regs.rax as i64 == -(libc::ENOSYS as i64);
                let sends_sigkill = [libc::SYS_kill, libc::SYS_pidfd_send_signal]
                    .contains(&(regs.orig_rax as i64))
                    && regs.rsi == libc::SIGKILL as u64;
                if entry && sends_sigkill {
                    return;
                }
                self.ptrace(libc::PTRACE_SYSCALL, 0);
            } else if status >> 16 != 0 {
                // An event stop (exec, interrupt): nothing to deliver.
                self.ptrace(libc::PTRACE_SYSCALL, 0);
            } else {
                self.ptrace(libc::PTRACE_SYSCALL, signal as usize);
            }
        }
    }

    /// Lets the tracee go on, untraced, from where it stopped.
    fn detach(self) {
        self.ptrace(libc::PTRACE_DETACH, 0);
    }
}

/// Starts `sleep` with the pid `pid`, which must be free: sets the pid
/// namespace's last pid (root only) to the one before it. Another process of
/// the machine may take the pid first; then it tries again.
fn sleep_with_pid(pid: libc::pid_t) -> Child {
    for _ in 0..50 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
            .expect("setting /proc/sys/kernel/ns_last_pid (needs root)");
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        if child.id() as libc::pid_t == pid {
            return child;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    panic!("could not start a process with the pid {pid}");
}

fn alive(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// The call leaves `parent`, which ignores SIGCHLD (so the kernel reaps its
/// children at once), and its child `victim`. The guardian finds both,
/// freezes them, and is held (through ptrace) before its first kill. Then
/// the victim dies and is reaped by the kernel, and a process outside the
/// call takes its pid. The guardian's kill must not reach that process.
#[test]
#[ignore = "needs root: it sets /proc/sys/kernel/ns_last_pid to make a pid be reused; scripts/vm-test.sh runs it"]
fn the_guardian_never_kills_a_process_that_reused_a_descendants_pid() {
    let (go_read, go_write) = pipe();
    let (victim_read, victim_write) = pipe();
    let (report_read, report_write) = pipe();
    // SAFETY: after the fork the body makes only async-signal-safe calls
    // (read, fork, signal, write, pause).
    let supervised: Supervised = unsafe {
        fork_with(&Limits::new(), &options(), &NoHooks, |_| {
            let mut byte = 0u8;
            libc::read(go_read, std::ptr::addr_of_mut!(byte).cast(), 1);
            if libc::fork() == 0 {
                libc::signal(libc::SIGCHLD, libc::SIG_IGN);
                if libc::fork() == 0 {
                    write_pid(victim_write, libc::getpid());
                    loop {
                        libc::pause();
                    }
                }
                loop {
                    libc::pause();
                }
            }
            // Hand the victim's pid on, then end: the guardian cleans up.
            write_pid(report_write, read_pid(victim_read));
        })
    }
    .unwrap();
    let guardian = supervised.pid();
    // Traced before the call goes on, so that no kill can pass unseen.
    let tracer = Tracer::seize(guardian);
    write_pid(go_write, 0);
    tracer.run_to_first_sigkill();
    let victim = read_pid(report_read);
    assert!(alive(victim), "the victim {victim} should be alive, frozen");

    // SAFETY: signals a process of this test's call.
    assert_eq!(unsafe { libc::kill(victim, libc::SIGKILL) }, 0);
    let until = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{victim}")).exists() {
        assert!(Instant::now() < until, "the victim {victim} was not reaped");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut outsider = sleep_with_pid(victim);
    tracer.detach();

    let outcome = supervised.wait().unwrap().outcome;
    let survived = outsider.try_wait().unwrap().is_none();
    let _ = outsider.kill();
    let _ = outsider.wait();
    assert_eq!(outcome.status, Status::Crashed, "{}", outcome.detail);
    assert!(
        survived,
        "the guardian killed {victim}, a process outside the call that reused a dead \
         descendant's pid"
    );
}
