//! What every call needs before its process starts, and the hand-over of
//! the started process to its supervisor: one implementation for the three
//! ways a call starts (a fork, a fresh interpreter, a forkserver's child).
//!
//! Two ways to create the process stay, because they must differ: a fork
//! copies the caller and runs a closure or Python in the copy
//! (`fork::fork_call_process`, for `fork_with` and for the forkserver's
//! children alike), while a new program image (a fresh interpreter, a
//! command, the forkserver itself) is started with `clone(CLONE_VM |
//! CLONE_VFORK)` and `execve` (`exec::start`), which copies no page table
//! and so costs the same from a caller of any size. A forkserver call is
//! the first kind done by the server: the caller neither forks nor reaps.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::cgroup::CallCgroup;
use crate::channel::{self, Receiver};
use crate::child::ChildSetup;
use crate::error::{Error, Result};
use crate::guardian::CallPage;
use crate::limits::Limits;
use crate::supervisor::{StartMark, Supervised};
use crate::sys::Pid;

/// The caller's side of one call before its process starts: the result
/// channel, the call's page and its cgroup.
pub(crate) struct CallParts {
    receiver: Receiver,
    /// The child's ends of the channel (the pipe's write end, the memfd),
    /// until the child holds its own copies.
    child_ends: Option<(OwnedFd, OwnedFd)>,
    page: CallPage,
    cgroup: Option<CallCgroup>,
}

impl CallParts {
    /// Checks `limits` and makes what a call under them needs.
    ///
    /// # Errors
    /// The limits are invalid, or the channel or the page could not be made.
    pub(crate) fn new(limits: &Limits) -> Result<CallParts> {
        limits.validate()?;
        let cgroup = crate::cgroup::for_limits(limits);
        let (receiver, write_end, memfd) =
            channel::pair().map_err(|e| Error::os("creating the result channel", e))?;
        let page = CallPage::new().map_err(|e| Error::os("creating the call's page", e))?;
        Ok(CallParts {
            receiver,
            child_ends: Some((write_end, memfd)),
            page,
            cgroup,
        })
    }

    /// The setup of a call's process under `limits`, joining the call's
    /// cgroup first thing if it has one.
    pub(crate) fn setup(&self, limits: &Limits, name: Option<&str>) -> ChildSetup {
        let setup = ChildSetup::new(limits, name);
        match self.cgroup_procs() {
            Some(procs) => setup.with_cgroup(procs),
            None => setup,
        }
    }

    /// `cgroup.procs` of the call's cgroup, if it has one.
    pub(crate) fn cgroup_procs(&self) -> Option<&CStr> {
        self.cgroup.as_ref().map(CallCgroup::procs_path)
    }

    /// The descriptors the call's process needs: the result pipe's write
    /// end, the memfd for large results and the call's page (-1 once
    /// closed).
    pub(crate) fn child_fds(&self) -> (RawFd, RawFd, RawFd) {
        let (result, memfd) = self
            .child_ends
            .as_ref()
            .map_or((-1, -1), |(w, m)| (w.as_raw_fd(), m.as_raw_fd()));
        (result, memfd, self.page.fd().as_raw_fd())
    }

    /// Closes the caller's copies of the child's ends, once the child has
    /// its own: the channel then ends when the child's copies close.
    pub(crate) fn close_child_ends(&mut self) {
        self.child_ends = None;
    }

    /// Puts `pid`, the call's process that this process started just after
    /// `started` was taken, under supervision (a pidfd; if none can be opened, the
    /// process is stopped and reaped, never left running unsupervised).
    ///
    /// # Errors
    /// The pidfd could not be opened.
    pub(crate) fn supervise(
        self,
        pid: Pid,
        limits: &Limits,
        started: StartMark,
        terminate_descendants: bool,
    ) -> Result<Supervised> {
        self.hand_over(|receiver| {
            Supervised::new(
                pid,
                Some(receiver),
                limits.clone(),
                started,
                terminate_descendants,
            )
        })
    }

    /// As [`CallParts::supervise`], for a call's process the forkserver
    /// started and reaps: `pidfd` came from the server, and `exit_socket`
    /// brings its exit status.
    pub(crate) fn supervise_remote(
        self,
        pid: Pid,
        pidfd: OwnedFd,
        exit_socket: OwnedFd,
        limits: &Limits,
        started: StartMark,
        terminate_descendants: bool,
    ) -> Supervised {
        let remote = |receiver| {
            Ok(Supervised::remote(
                pid,
                pidfd,
                exit_socket,
                receiver,
                limits.clone(),
                started,
                terminate_descendants,
            ))
        };
        let Ok(supervised) = self.hand_over::<std::convert::Infallible>(remote);
        supervised
    }

    fn hand_over<E>(
        mut self,
        supervised: impl FnOnce(Receiver) -> std::result::Result<Supervised, E>,
    ) -> std::result::Result<Supervised, E> {
        self.close_child_ends();
        let mut supervised = supervised(self.receiver)?
            .with_cgroup(self.cgroup)
            .with_call_page(self.page);
        supervised.expect_guardian();
        Ok(supervised)
    }
}
