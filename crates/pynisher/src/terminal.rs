//! The caller's terminal, handed to a call while it runs, as shells do.
//!
//! A call runs in a process group of its own, so that its whole tree can be
//! signalled; but only the terminal's foreground group may read from it, and
//! a background process that reads is stopped by SIGTTIN. So when the caller
//! is in the foreground, the call's group becomes the foreground group while
//! it runs, and the caller's group gets it back afterwards. Taking it back
//! from the background needs SIGTTOU blocked, as in any shell.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys::Pid;

/// How long [`Terminal::hand_over`] waits for the call's process group to
/// exist: a freshly forked child makes its own group a moment later.
const GROUP_WAIT: Duration = Duration::from_millis(50);

/// The controlling terminal, while its foreground belongs to a call. Dropping
/// it gives the foreground back to the caller's group.
#[derive(Debug)]
pub struct Terminal {
    tty: OwnedFd,
    own_group: Pid,
}

impl Terminal {
    /// The controlling terminal, if this process's group is in its
    /// foreground. Otherwise (no terminal, or a background job) there is
    /// nothing to hand over.
    pub fn foreground() -> Option<Terminal> {
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .ok()?;
        let tty = OwnedFd::from(tty);
        // SAFETY: plain calls on a descriptor this function owns.
        let (foreground, own_group) =
            unsafe { (libc::tcgetpgrp(tty.as_raw_fd()), libc::getpgrp()) };
        (foreground == own_group).then_some(Terminal { tty, own_group })
    }

    /// Makes `group` the terminal's foreground process group.
    fn give_to(&self, group: Pid) -> bool {
        // A background group that calls tcsetpgrp gets SIGTTOU unless it
        // blocks it; the caller is one when it takes the terminal back.
        // SAFETY: sigset_t is plain data, initialised by sigemptyset; the
        // calls only read and write these local sets.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGTTOU);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
            let done = libc::tcsetpgrp(self.tty.as_raw_fd(), group) == 0;
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            done
        }
    }

    /// Hands the terminal to the group of `leader` (its id is the leader's
    /// pid), waiting a moment for a newly forked leader to create it, and
    /// continues the group in case it read before it had the terminal and
    /// was stopped by SIGTTIN for it. `leader` must be an unreaped child
    /// (or a pidfd-held process), so that its group id cannot be reused.
    pub fn hand_over(&self, leader: Pid) -> bool {
        let until = Instant::now() + GROUP_WAIT;
        let mut handed = self.give_to(leader);
        while !handed && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
            handed = self.give_to(leader);
        }
        if handed {
            // SAFETY: kill with a valid signal to a group that exists.
            unsafe { libc::kill(-leader, libc::SIGCONT) };
        }
        handed
    }

    /// Job control for a call whose leader `pid` is an unreaped child: when
    /// it was stopped from the terminal (Ctrl-Z gives SIGTSTP to the
    /// foreground group, which is the call's), the caller takes the terminal
    /// back and stops itself, so the shell regains control. Once the shell
    /// continues the caller (`fg`), the terminal and a SIGCONT go back to the
    /// call.
    pub fn relay_stop(&self, pid: Pid) {
        // SAFETY: siginfo_t is plain data; waitid only writes to it, and
        // WNOWAIT leaves the child's state for its supervisor.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is valid for writes; the pid is our unreaped child.
        let ret = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        // SAFETY: waitid filled `info` (or left it zeroed, pid 0).
        if ret != 0 || unsafe { info.si_pid() } == 0 {
            return;
        }
        self.give_to(self.own_group);
        // SAFETY: raise with a valid signal number. SIGTSTP is not caught
        // here, so its default action stops the process.
        unsafe { libc::raise(libc::SIGTSTP) };
        self.hand_over(pid);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.give_to(self.own_group);
    }
}
