//! Finding, freezing and killing every descendant of a call.
//!
//! The tree is found by scanning `/proc/*/stat` for parent links; the
//! periodic samples follow the kernel's children lists instead where it
//! keeps them (`CONFIG_PROC_CHILDREN`), which costs reads per process of the
//! call rather than per process on the machine. Every
//! process found gets a pidfd at once: once a parent dies its orphans are
//! reparented away and can no longer be found through it, but the pidfd still
//! names them, immune to pid reuse. Processes that stay in the call's process
//! group are found through the group too, even after their parent died.
//!
//! Killing is freeze-then-kill: SIGSTOP everything found, wait until it is
//! really stopped (a stopped process cannot fork), scan again, and repeat until
//! a scan finds nothing new. Only then does everything get SIGKILL.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys::{self, Pid, ProcStat};

/// How long to wait for SIGSTOP to take effect before scanning again. A
/// process in uninterruptible sleep may not stop; it is killed regardless.
const STOP_SETTLE: Duration = Duration::from_millis(100);

struct Member {
    pidfd: OwnedFd,
    exited: bool,
}

/// The processes of one call: a root and every descendant seen so far.
pub struct Tree {
    root: Pid,
    /// Whether the root belongs to the tree to be killed. False when a child
    /// cleans up its own descendants.
    include_root: bool,
    /// Whether the root's memory counts. Not for a guardian, whose
    /// memory is the function's own.
    root_memory: bool,
    members: HashMap<Pid, Member>,
    /// CPU time of the tree at the last sample; never decreases.
    cpu: Duration,
}

/// One sample of the tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// CPU time of every live process plus what each has reaped.
    pub cpu: Duration,
    /// The memory the live processes are charged for, in bytes, when asked
    /// for: private resident memory plus swap, and each one's proportional
    /// share of the shared memory it maps (see [`sys::charged_memory`]).
    pub memory: u64,
    /// How many processes are alive, root included.
    pub alive: usize,
}

impl Tree {
    /// A tree rooted at `root`, a child of the caller that it has not reaped.
    pub fn new(root: Pid) -> Tree {
        Tree {
            root,
            include_root: true,
            root_memory: true,
            members: HashMap::new(),
            cpu: Duration::ZERO,
        }
    }

    /// Leaves the root's memory out of [`Tree::measure`]: the root is a
    /// guardian that shares the function's memory, which would count twice.
    pub fn without_root_memory(mut self) -> Tree {
        self.root_memory = false;
        self
    }

    /// The descendants of the calling process, for a child that cleans up
    /// after itself.
    pub fn of_self() -> Tree {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        Tree {
            include_root: false,
            ..Tree::new(me)
        }
    }

    /// Scans `/proc` once and adopts every new descendant, opening a pidfd on
    /// each. Returns how many were new. This is the costly step; measuring the
    /// known tree with [`Tree::measure`] is cheap.
    pub fn discover(&mut self) -> usize {
        let processes = sys::all_processes();
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for proc in &processes {
            children.entry(proc.ppid).or_default().push(proc.pid);
        }
        let by_pid: HashMap<Pid, &ProcStat> = processes.iter().map(|p| (p.pid, p)).collect();

        // Start from the root, every member still alive (orphans keep their
        // own children), and everything in the root's process group.
        let mut seen: HashSet<Pid> = HashSet::from([self.root]);
        seen.extend(self.live_pids());
        seen.extend(
            processes
                .iter()
                .filter(|p| p.pgrp == self.root)
                .map(|p| p.pid),
        );
        let mut queue: Vec<Pid> = seen.iter().copied().collect();
        let mut found_new = 0;
        while let Some(pid) = queue.pop() {
            let same_start = |now: &ProcStat| {
                by_pid
                    .get(&pid)
                    .is_some_and(|then| then.starttime == now.starttime)
            };
            if pid != self.root && !self.members.contains_key(&pid) && self.adopt(pid, same_start) {
                found_new += 1;
            }
            for child in children.get(&pid).into_iter().flatten() {
                if seen.insert(*child) {
                    queue.push(*child);
                }
            }
        }
        found_new
    }

    /// Adopts the new descendants that the kernel's children lists lead to,
    /// from the root and every live member: a few reads per process of the
    /// call, where [`Tree::discover`] reads every process on the machine
    /// (hundreds of files a scan on a busy host). For the periodic samples;
    /// killing uses `discover`, which also finds what left the tree's
    /// parent links but stayed in its process group. Falls back to
    /// `discover` once the root has exited (its orphans went to another
    /// reaper) or where the kernel keeps no such lists. While the root
    /// lives, nothing is missed for long: it is a child subreaper (every
    /// call's process is), so orphans come back to it and onto its list.
    /// Returns how many were new.
    pub fn follow(&mut self) -> usize {
        if ProcStat::read(self.root).is_none_or(|stat| stat.is_exited()) {
            return self.discover();
        }
        let Some(below_root) = sys::children_of(self.root) else {
            return self.discover();
        };
        let mut seen: HashSet<Pid> = HashSet::from([self.root]);
        let mut parents: Vec<(Pid, Vec<Pid>)> = vec![(self.root, below_root)];
        let live: Vec<Pid> = self.live_pids().collect();
        for pid in live {
            seen.insert(pid);
            if let Some(children) = sys::children_of(pid) {
                parents.push((pid, children));
            }
        }
        let mut found_new = 0;
        while let Some((parent, children)) = parents.pop() {
            for child in children {
                if !seen.insert(child) {
                    continue;
                }
                if !self.members.contains_key(&child) && self.adopt(child, |now| now.ppid == parent)
                {
                    found_new += 1;
                }
                if let Some(grandchildren) = sys::children_of(child) {
                    parents.push((child, grandchildren));
                }
            }
        }
        found_new
    }

    /// Measures the known tree: CPU time (own plus reaped children) of the
    /// root and every live member, and with `memory` the memory they are
    /// charged for. Marks members that have exited.
    pub fn measure(&mut self, memory: bool) -> Sample {
        let mut sample = Sample::default();
        let root = self.include_root.then_some(self.root);
        let pids: Vec<Pid> = root.into_iter().chain(self.live_pids()).collect();
        for pid in pids {
            let Some(stat) = ProcStat::read(pid) else {
                if let Some(member) = self.members.get_mut(&pid) {
                    member.exited = true;
                }
                continue;
            };
            // A live process's own time comes from its CPU-time clock, to the
            // nanosecond; what it reaped is only known in clock ticks.
            let clock = if stat.is_exited() {
                None
            } else {
                sys::process_cpu_time(pid)
            };
            let own = clock.unwrap_or_else(|| sys::ticks(stat.utime + stat.stime));
            sample.cpu += own + sys::ticks(stat.cutime + stat.cstime);
            if stat.is_exited() {
                if let Some(member) = self.members.get_mut(&pid) {
                    member.exited = true;
                }
                continue;
            }
            sample.alive += 1;
            if memory && (pid != self.root || self.root_memory) {
                sample.memory += sys::charged_memory(pid).unwrap_or(0);
            }
        }
        // A process reaped by something outside the tree takes its CPU time
        // with it; the tree's total never goes down.
        self.cpu = self.cpu.max(sample.cpu);
        sample.cpu = self.cpu;
        sample
    }

    /// Opens a pidfd on `pid` and checks, by `still_the_one`, that it names
    /// the process that was found (a scan's start time, a list's parent), so
    /// that a pid reused since is never adopted.
    fn adopt(&mut self, pid: Pid, still_the_one: impl FnOnce(&ProcStat) -> bool) -> bool {
        let Ok(pidfd) = sys::pidfd_open(pid) else {
            return false;
        };
        match ProcStat::read(pid) {
            Some(now) if still_the_one(&now) => {
                let exited = now.is_exited();
                self.members.insert(pid, Member { pidfd, exited });
                true
            }
            _ => false,
        }
    }

    /// The pids of the members not yet seen to exit (the root aside).
    fn live_pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| !m.exited)
            .map(|(pid, _)| *pid)
    }

    /// Every process of the tree that is still alive, as pidfds. The root is
    /// signalled by the caller through its own pidfd.
    fn live_members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().filter(|m| !m.exited)
    }

    /// Sends `signal` to every live member, and to the root if it belongs to
    /// the tree.
    pub fn signal(&self, root_pidfd: Option<&OwnedFd>, signal: i32) {
        if self.include_root {
            if let Some(fd) = root_pidfd {
                let _ = sys::pidfd_signal(fd.as_fd(), signal);
            }
        }
        for member in self.live_members() {
            let _ = sys::pidfd_signal(member.pidfd.as_fd(), signal);
        }
    }

    /// Finds the whole tree (freezing each process as it is found, so none can
    /// fork behind the scan) and kills all of it with SIGKILL. Returns once
    /// every member has exited or `deadline` passes.
    pub fn kill_all(&mut self, root_pidfd: Option<&OwnedFd>, deadline: Duration) {
        let started = Instant::now();
        loop {
            let found = self.discover();
            if found == 0 && self.live_members().next().is_none() {
                // Nothing but the root: no process to freeze behind.
                break;
            }
            self.signal(root_pidfd, libc::SIGSTOP);
            self.wait_stopped();
            let found_after_stop = self.discover();
            if found + found_after_stop == 0 || started.elapsed() > deadline {
                break;
            }
        }
        self.signal(root_pidfd, libc::SIGKILL);
        if self.include_root {
            // Catches anything in the group that was forked after the last scan.
            let _ = sys::kill(-self.root, libc::SIGKILL);
        }
        self.wait_exited(deadline.saturating_sub(started.elapsed()));
    }

    /// Waits until every live member is stopped or exited, at most
    /// [`STOP_SETTLE`].
    fn wait_stopped(&self) {
        let until = Instant::now() + STOP_SETTLE;
        let mut pending: Vec<Pid> = self.live_pids().collect();
        if self.include_root {
            pending.push(self.root);
        }
        while Instant::now() < until {
            pending.retain(|pid| ProcStat::read(*pid).is_some_and(|s| !s.is_stopped_or_exited()));
            if pending.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Waits until every member's pidfd reports exit, at most `timeout`.
    pub fn wait_exited(&mut self, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            let mut fds: Vec<libc::pollfd> = self
                .live_members()
                .map(|m| libc::pollfd {
                    fd: m.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if fds.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            let _ = sys::poll(&mut fds, Some(until - now));
            let exited: HashSet<i32> = fds
                .iter()
                .filter(|fd| fd.revents != 0)
                .map(|fd| fd.fd)
                .collect();
            for member in self.members.values_mut() {
                if exited.contains(&member.pidfd.as_raw_fd()) {
                    member.exited = true;
                }
            }
        }
    }

    /// How many descendants (root excluded) have been seen so far.
    pub fn members_seen(&self) -> usize {
        self.members.len()
    }

    /// How many live processes of the tree (the root included, if it
    /// belongs to it) are stopped by a signal (state T).
    pub fn stopped(&self) -> usize {
        let root = self.include_root.then_some(self.root);
        root.into_iter()
            .chain(self.live_pids())
            .filter(|pid| ProcStat::read(*pid).is_some_and(|stat| stat.state == b'T'))
            .count()
    }
}

/// Kills every descendant of the calling process and reaps those that are its
/// children. A child calls this before `_exit` so that nothing it started
/// outlives the call; as a subreaper it has inherited every orphan.
pub fn kill_own_descendants(timeout: Duration) {
    let mut tree = Tree::of_self();
    tree.kill_all(None, timeout);
    sys::reap_exited_children();
}
