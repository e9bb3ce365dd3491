//! The crate's one error type: what went wrong in pynisher itself.
//!
//! A child that hits a limit, crashes or raises is *not* an error of the
//! library; that is an [`Outcome`](crate::Outcome). An [`Error`] means the
//! caller's request was bad or the operating system refused something.

use std::fmt;
use std::io;

/// An error of pynisher itself, as opposed to an outcome of the call.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A limit or option had a bad value. `argument` names it.
    InvalidArgument { argument: String, message: String },
    /// A system call failed. `context` says what pynisher was doing.
    Os {
        context: &'static str,
        source: io::Error,
    },
    /// The command could not be found (`ENOENT` from `execve`).
    CommandNotFound { program: String },
    /// The command exists but could not be executed (`EACCES`, `ENOEXEC`, ...).
    CommandNotExecutable { program: String, source: io::Error },
    /// The caller's interrupt check asked to stop; the tree has been killed.
    Interrupted,
    /// This platform cannot do what was asked.
    Unsupported(String),
    /// The forkserver is gone or did not answer; the call did not start.
    ForkServer(String),
    /// A safe closure call needs a single-threaded process, and this one has
    /// `threads` threads (`None`: the count could not be read). See
    /// [`call_unchecked`](crate::call_unchecked).
    MultiThreaded { threads: Option<usize> },
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn invalid(argument: &str, message: impl Into<String>) -> Self {
        ErrorKind::InvalidArgument {
            argument: argument.to_owned(),
            message: message.into(),
        }
        .into()
    }

    pub(crate) fn os(context: &'static str, source: io::Error) -> Self {
        ErrorKind::Os { context, source }.into()
    }

    pub(crate) fn last_os(context: &'static str) -> Self {
        Self::os(context, io::Error::last_os_error())
    }

    /// Whether this is `execve` refusing a file it cannot run (`ENOEXEC`).
    pub(crate) fn is_exec_format_error(&self) -> bool {
        matches!(&self.kind, ErrorKind::CommandNotExecutable { source, .. }
            if source.raw_os_error() == Some(libc::ENOEXEC))
    }

    /// The argument an [`ErrorKind::InvalidArgument`] names, if it is one.
    pub fn argument(&self) -> Option<&str> {
        match &self.kind {
            ErrorKind::InvalidArgument { argument, .. } => Some(argument),
            _ => None,
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error { kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ErrorKind::InvalidArgument { argument, message } => write!(f, "{argument}: {message}"),
            ErrorKind::Os { context, source } => write!(f, "{context}: {source}"),
            ErrorKind::CommandNotFound { program } => write!(f, "command not found: {program}"),
            ErrorKind::CommandNotExecutable { program, source } => {
                write!(f, "cannot execute {program}: {source}")
            }
            ErrorKind::Interrupted => f.write_str("interrupted; the process tree was killed"),
            ErrorKind::Unsupported(what) => write!(f, "unsupported on this platform: {what}"),
            ErrorKind::ForkServer(why) => f.write_str(why),
            ErrorKind::MultiThreaded { threads } => {
                let count =
                    threads.map_or_else(|| "an unknown number of".into(), |n| n.to_string());
                write!(
                    f,
                    "a closure is only forked safely in a single-threaded process, and this one \
                     has {count} threads; see pynisher::call_unchecked"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Os { source, .. } | ErrorKind::CommandNotExecutable { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
