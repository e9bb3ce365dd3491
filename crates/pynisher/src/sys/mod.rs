//! Platform calls behind one set of signatures.
//!
//! Only Linux is implemented. Every wrapper retries `EINTR` itself, so callers
//! never see it.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
#[cfg(target_os = "linux")]
pub mod procfs;
#[cfg(target_os = "linux")]
pub use procfs::ProcStat;
#[cfg(target_os = "linux")]
pub mod raw;

#[cfg(not(target_os = "linux"))]
compile_error!("pynisher supports Linux only for now; see the README's platform section");
