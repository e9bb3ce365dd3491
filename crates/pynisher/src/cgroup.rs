//! The cgroup v2 backend of the resident memory mode.
//!
//! Where a delegated cgroup v2 directory with the memory controller exists,
//! each call gets a cgroup of its own below it, created by pynisher and
//! removed after the call: `memory.max` is the limit, `memory.swap.max` is 0
//! and `memory.oom.group` is 1, so the kernel itself enforces the limit on the
//! whole tree, an OOM kill takes the whole call, and `memory.peak` and
//! `memory.events` say exactly what happened. The child joins its cgroup
//! before any user code runs, so every descendant is in it, including those
//! that call `setsid`; `cgroup.kill` ends them all at once.
//!
//! pynisher only ever writes to cgroups it created. The parent directory comes
//! from the `PYNISHER_CGROUP` environment variable, or is the caller's own
//! cgroup if that already delegates the memory controller to its children.
//! Elsewhere the resident mode samples the tree instead.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Names a delegated cgroup v2 directory in which pynisher may create one
/// cgroup per call.
pub const ENV_VAR: &str = "PYNISHER_CGROUP";

/// The directory below which call cgroups can be created, or why there is
/// none.
///
/// # Errors
/// A sentence saying why no delegated cgroup v2 with the memory controller is
/// usable here.
pub fn delegated() -> Result<PathBuf, String> {
    let dir = match std::env::var_os(ENV_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => own_cgroup()?,
    };
    check_delegated(&dir)?;
    Ok(dir)
}

/// The caller's own cgroup v2 directory.
fn own_cgroup() -> Result<PathBuf, String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup v2 file system is mounted")?;
    let cgroups = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let relative = unified_path(&cgroups).ok_or("this process is in no cgroup v2")?;
    Ok(mount.join(relative.trim_start_matches('/')))
}

/// The mount point of the cgroup v2 file system, from `/proc/self/mountinfo`.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// The cgroup v2 path (`0::/path`) from `/proc/self/cgroup`.
fn unified_path(cgroups: &str) -> Option<&str> {
    cgroups.lines().find_map(|line| line.strip_prefix("0::"))
}

fn check_delegated(dir: &Path) -> Result<(), String> {
    let read = |name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    if !dir.join("cgroup.procs").exists() {
        return Err(format!("{} is not a cgroup v2 directory", dir.display()));
    }
    if !read("cgroup.controllers")
        .split_whitespace()
        .any(|c| c == "memory")
    {
        return Err(format!(
            "the memory controller is not available in {} (cgroup.controllers)",
            dir.display()
        ));
    }
    if !read("cgroup.subtree_control")
        .split_whitespace()
        .any(|c| c == "memory")
    {
        return Err(format!(
            "{} does not delegate the memory controller to its children (cgroup.subtree_control); \
             set {ENV_VAR} to a delegated cgroup",
            dir.display()
        ));
    }
    let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| "bad path".to_owned())?;
    // SAFETY: `path` is NUL-terminated; access only reads it.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!("{} is not writable", dir.display()));
    }
    Ok(())
}

/// `oom_kill` from a `memory.events` file.
fn oom_kills(events: &str) -> u64 {
    events
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The OOM-kill counter of the memory cgroup the caller runs in: cgroup v2
/// `memory.events` (of the caller's cgroup, or of the nearest ancestor that
/// accounts its memory), or cgroup v1 `memory.oom_control`. A call's
/// function, and everything it starts, is charged to that cgroup (or one
/// below it, whose kills v2 counts there too), so when the function dies by
/// SIGKILL and this count rose during the call, the kernel's OOM killer of a
/// cap outside pynisher (a container's, a batch job's) ended it.
///
/// It holds no descriptor between its two reads: the first comes before the
/// call's process starts, which would inherit it (on fd 0, say, in a caller
/// that closed its standard input).
#[derive(Debug)]
pub struct OomCounter {
    path: &'static Path,
    before: u64,
}

/// What an [`OomCounter`] saw over one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKills {
    /// The file the count came from.
    pub counter: PathBuf,
    pub before: u64,
    pub after: u64,
    /// The nearest memory cap at or above that cgroup, and its size in bytes.
    pub cap: Option<(PathBuf, u64)>,
}

impl OomKills {
    /// Whether the OOM killer acted during the call.
    pub fn rose(&self) -> bool {
        self.after > self.before
    }
}

impl OomCounter {
    /// Opens the caller's counter and reads it; `None`, at no cost after the
    /// first call, where there is none (the cgroup is looked up once per
    /// process).
    pub fn start() -> Option<OomCounter> {
        static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        let path = PATH.get_or_init(caller_oom_counter).as_deref()?;
        let before = read_oom_kills(path)?;
        Some(OomCounter { path, before })
    }

    /// The count now, against the count at the start.
    pub fn since_start(&self) -> Option<OomKills> {
        let after = read_oom_kills(self.path)?;
        let cap = (after > self.before)
            .then(|| self.path.parent().and_then(memory_cap))
            .flatten();
        Some(OomKills {
            counter: self.path.to_owned(),
            before: self.before,
            after,
            cap,
        })
    }
}

fn read_oom_kills(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut buf = [0u8; 512];
    let n = fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.lines()
        .any(|l| l.starts_with("oom_kill "))
        .then(|| oom_kills(text))
}

/// The OOM-kill counter file of the caller's memory cgroup, v2 first.
fn caller_oom_counter() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let readable = |file: PathBuf| fs::File::open(&file).is_ok().then_some(file);
    if let (Some(mount), Some(path)) = (cgroup2_mount(&mountinfo), unified_path(&cgroups)) {
        let mut dir = mount.join(path.trim_start_matches('/'));
        while dir.starts_with(&mount) {
            if let Some(file) = readable(dir.join("memory.events")) {
                return Some(file);
            }
            if !dir.pop() {
                break;
            }
        }
    }
    let (mount, path) = (memory_v1_mount(&mountinfo)?, memory_v1_path(&cgroups)?);
    readable(
        mount
            .join(path.trim_start_matches('/'))
            .join("memory.oom_control"),
    )
}

/// The mount point of the cgroup v1 memory hierarchy.
fn memory_v1_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = right.split_whitespace();
        let (fstype, options) = (fields.next()?, fields.nth(1)?);
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup" && options.split(',').any(|o| o == "memory"))
            .then(|| PathBuf::from(mount_point))
    })
}

/// The caller's cgroup v1 memory path (`N:memory:/path`).
fn memory_v1_path(cgroups: &str) -> Option<&str> {
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    })
}

/// The nearest memory cap at or above `dir`: v2 `memory.max`, or v1
/// `memory.limit_in_bytes` (whose "unlimited" is a huge number).
fn memory_cap(dir: &Path) -> Option<(PathBuf, u64)> {
    const V1_UNLIMITED: u64 = 1 << 60;
    dir.ancestors().find_map(|dir| {
        let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
        let bytes: u64 = read("memory.max")
            .or_else(|| read("memory.limit_in_bytes"))?
            .trim()
            .parse()
            .ok()?;
        (bytes < V1_UNLIMITED).then(|| (dir.to_owned(), bytes))
    })
}

/// The cgroup of one call, created by pynisher and removed when dropped.
#[derive(Debug)]
pub struct CallCgroup {
    dir: PathBuf,
    procs: CString,
    /// Processes of the call that outlive it are meant to: the cgroup stays
    /// until they are gone.
    keep_survivors: bool,
}

/// Set once a call's cgroup was left behind for processes that outlived the
/// call; the next call of this process removes those that are empty by then.
static LEFT_BEHIND: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The names of this process's call cgroups start with this.
fn own_prefix() -> String {
    format!("pynisher-{}-", std::process::id())
}

/// Removes the cgroups this process left behind whose processes have all
/// exited (a cgroup with processes cannot be removed).
fn remove_empty_left_behind(parent: &Path) {
    if !LEFT_BEHIND.swap(false, Ordering::Relaxed) {
        return;
    }
    let prefix = own_prefix();
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix)
            && fs::remove_dir(entry.path()).is_err()
        {
            LEFT_BEHIND.store(true, Ordering::Relaxed);
        }
    }
}

impl CallCgroup {
    /// Creates a new cgroup below `parent` limited to `limit` bytes of
    /// memory, no swap, and OOM kills of the whole group.
    ///
    /// # Errors
    /// The directory or one of its control files could not be written; the
    /// directory is removed again.
    pub fn create(parent: &Path, limit: u64) -> io::Result<CallCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        remove_empty_left_behind(parent);
        let name = format!("{}{}", own_prefix(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = parent.join(name);
        fs::create_dir(&dir)?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in cgroup path"))?;
        let cgroup = CallCgroup {
            dir,
            procs,
            keep_survivors: false,
        };
        cgroup.write("memory.max", &limit.to_string())?;
        // Swap accounting may be compiled out; without it there is no swap to cap.
        match cgroup.write("memory.swap.max", "0") {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        cgroup.write("memory.oom.group", "1")?;
        Ok(cgroup)
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        fs::write(self.dir.join(file), value)
    }

    fn read_u64(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The path of `cgroup.procs`, which the child writes to join.
    pub fn procs_path(&self) -> &CStr {
        &self.procs
    }

    /// Memory in use now (`memory.current`).
    pub fn current(&self) -> Option<u64> {
        self.read_u64("memory.current")
    }

    /// The peak memory of the call (`memory.peak`, Linux 5.19+).
    pub fn peak(&self) -> Option<u64> {
        self.read_u64("memory.peak")
    }

    /// How many times the OOM killer acted on the call.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events")).map_or(0, |e| oom_kills(&e))
    }

    /// Leaves the processes still in the cgroup running when it is dropped
    /// (`terminate_child_processes=False`): the cgroup then stays, with the
    /// call's limit, until they have exited, and a later call of this process
    /// removes it.
    pub fn keep_survivors(&mut self) {
        self.keep_survivors = true;
    }

    /// Kills every process in the cgroup (`cgroup.kill`, Linux 5.14+; on
    /// older kernels each listed process gets SIGKILL).
    pub fn kill(&self) {
        if self.write("cgroup.kill", "1").is_ok() {
            return;
        }
        for pid in fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
        {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = crate::sys::kill(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for CallCgroup {
    fn drop(&mut self) {
        if self.keep_survivors {
            if fs::remove_dir(&self.dir).is_err() {
                LEFT_BEHIND.store(true, Ordering::Relaxed);
            }
            return;
        }
        // A cgroup can only be removed once its last process is gone.
        let until = Instant::now() + Duration::from_secs(2);
        while fs::remove_dir(&self.dir).is_err() && Instant::now() < until {
            self.kill();
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A cgroup for a call under `limits`, if they ask for resident memory and a
/// delegated cgroup exists; otherwise the supervisor samples the tree.
pub fn for_limits(limits: &crate::Limits) -> Option<CallCgroup> {
    if limits.memory_mode != crate::MemoryMode::Resident {
        return None;
    }
    let limit = limits.memory?;
    CallCgroup::create(&delegated().ok()?, limit).ok()
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// `procs`. Async-signal-safe.
///
/// # Errors
/// `errno` of the failed open or write.
pub fn join(procs: &CStr) -> Result<(), i32> {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: `procs` is NUL-terminated; open/write/close are
    // async-signal-safe and the buffer is a static byte string.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let err = errno();
        libc::close(fd);
        if written != 1 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_and_path() {
        let mountinfo = "24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount("24 30 0:22 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        let cgroups = "4:memory:/process_api/x\n0::/user.slice/app\n";
        assert_eq!(unified_path(cgroups), Some("/user.slice/app"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }

    #[test]
    fn reads_oom_kills() {
        assert_eq!(
            oom_kills("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 1\n"),
            2
        );
        assert_eq!(oom_kills("low 0\n"), 0);
    }

    #[test]
    fn finds_the_cgroup_v1_memory_hierarchy() {
        let mountinfo =
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         36 31 0:33 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(
            memory_v1_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            memory_v1_mount("41 31 0:38 / /u rw - cgroup2 cgroup2 rw\n"),
            None
        );
        let cgroups = "5:cpu,cpuacct:/a\n4:memory:/job/42\n0::/\n";
        assert_eq!(memory_v1_path(cgroups), Some("/job/42"));
        assert_eq!(memory_v1_path("0::/x\n"), None);
    }

    #[test]
    fn an_oom_count_rises_only_with_a_kill() {
        let kills = |before, after| OomKills {
            counter: PathBuf::from("/x/memory.events"),
            before,
            after,
            cap: None,
        };
        assert!(kills(2, 3).rose());
        assert!(!kills(2, 2).rose());
        // Where the caller's cgroup is readable, the counter reads and stays put.
        if let Some(counter) = OomCounter::start() {
            let seen = counter.since_start().expect("readable at the start");
            assert_eq!(seen.before, counter.before);
        }
    }

    #[test]
    fn says_why_no_cgroup_is_usable() {
        let why = check_delegated(Path::new("/proc")).unwrap_err();
        assert!(why.contains("not a cgroup v2 directory"), "{why}");
        match delegated() {
            Ok(dir) => assert!(dir.join("cgroup.procs").exists()),
            Err(why) => assert!(!why.is_empty()),
        }
    }

    #[test]
    #[ignore = "needs a delegated cgroup v2 with the memory controller (set PYNISHER_CGROUP); run with --ignored"]
    fn limits_a_call_in_a_delegated_cgroup() {
        let parent = delegated().unwrap();
        let cgroup = CallCgroup::create(&parent, 64 << 20).unwrap();
        assert_eq!(cgroup.read_u64("memory.max"), Some(64 << 20));
        assert_eq!(cgroup.oom_kills(), 0);
    }
}
