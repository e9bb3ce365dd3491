//! Reading `/proc` without allocating: the one `/proc/<pid>/stat` parser and
//! the one directory scanner, shared by the supervisor (`tree`) and the
//! guardian program (`guardian/watch.rs`).
//!
//! This file is compiled into the library and, by path, into the guardian
//! program, which has no C library and no allocator (`no_std`). So it uses
//! nothing but `core` and [`raw`](super::raw): every buffer is on the stack.

use super::raw::{self, pid_t};

/// The fields of `/proc/<pid>/stat` (see `proc_pid_stat(5)`) that pynisher
/// uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: pid_t,
    /// One-letter state: R, S, D, T, t, Z, X, ...
    pub state: u8,
    pub ppid: pid_t,
    pub pgrp: pid_t,
    /// User and system time of the process, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// User and system time of its reaped children, in clock ticks.
    pub cutime: u64,
    pub cstime: u64,
    /// Start time after boot in clock ticks; with the pid it names a process
    /// uniquely.
    pub starttime: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
    /// Resident set size in pages.
    pub rss: u64,
}

impl ProcStat {
    /// Parses "pid (comm) state ppid ...". The command name may hold spaces
    /// and parentheses, so the fields start after the last ')'.
    pub fn parse(text: &[u8]) -> Option<ProcStat> {
        let open = text.iter().position(|b| *b == b'(')?;
        let close = text.iter().rposition(|b| *b == b')')?;
        let pid = parse_decimal(text.get(..open)?.trim_ascii())?;
        // The 24 fields from the state (field 3) to the rss (field 24).
        let mut fields = [&[][..]; 22];
        let mut words = text
            .get(close + 1..)?
            .split(u8::is_ascii_whitespace)
            .filter(|f| !f.is_empty());
        for slot in &mut fields {
            *slot = words.next()?;
        }
        // Field n of proc_pid_stat(5) is fields[n - 3].
        let number = |n: usize| parse_u64(fields.get(n - 3)?);
        Some(ProcStat {
            pid,
            state: *fields[0].first()?,
            ppid: parse_decimal(fields[1])?,
            pgrp: parse_decimal(fields[2])?,
            utime: number(14)?,
            stime: number(15)?,
            cutime: number(16)?,
            cstime: number(17)?,
            starttime: number(22)?,
            vsize: number(23)?,
            rss: number(24)?,
        })
    }

    /// Reads `/proc/<pid>/stat` into a stack buffer; `None` if the process
    /// is gone.
    pub fn read(pid: pid_t) -> Option<ProcStat> {
        let mut path = [0u8; 32];
        let len = stat_path(pid, &mut path);
        let fd = raw::open_read(path.get(..len)?, false).ok()?;
        // Fields 1 to 24 take at most about 500 bytes (a 15-byte name and
        // 20-digit numbers); one read of procfs returns them whole.
        let mut buf = [0u8; 1024];
        let n = raw::read(fd, &mut buf);
        raw::close(fd);
        ProcStat::parse(buf.get(..n.ok()?)?)
    }

    /// True once the process has exited (zombie or dead).
    pub fn is_exited(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }

    /// True once the process cannot run any more: stopped by a signal or a
    /// tracer, or exited. A frozen process cannot fork.
    pub fn is_stopped_or_exited(&self) -> bool {
        matches!(self.state, b'T' | b't' | b'Z' | b'X')
    }
}

/// Writes `"/proc/<pid>/stat\0"` into `out`; returns its length with the NUL.
pub fn stat_path(pid: pid_t, out: &mut [u8; 32]) -> usize {
    let mut digits = [0u8; 12];
    let number = format_decimal(pid, &mut digits);
    let number = number.get(..number.len().saturating_sub(1)).unwrap_or(&[]);
    let mut at = 0;
    for byte in b"/proc/"
        .iter()
        .chain(number.iter())
        .chain(b"/stat\0".iter())
    {
        if let Some(slot) = out.get_mut(at) {
            *slot = *byte;
            at += 1;
        }
    }
    at
}

/// Writes `value` as decimal digits, NUL-terminated, into `out`; returns the
/// written part with the NUL.
pub fn format_decimal(value: i32, out: &mut [u8; 12]) -> &[u8] {
    let mut digits = [0u8; 11];
    let mut rest = value.unsigned_abs();
    let mut count = 0;
    loop {
        if let Some(d) = digits.get_mut(count) {
            *d = b'0' + (rest % 10) as u8;
        }
        count += 1;
        rest /= 10;
        if rest == 0 || count >= digits.len() {
            break;
        }
    }
    let mut at = 0;
    if value < 0 {
        out[0] = b'-';
        at = 1;
    }
    for i in (0..count).rev() {
        if let (Some(slot), Some(d)) = (out.get_mut(at), digits.get(i)) {
            *slot = *d;
            at += 1;
        }
    }
    if let Some(slot) = out.get_mut(at) {
        *slot = 0;
        at += 1;
    }
    out.get(..at).unwrap_or(&[])
}

/// Parses unsigned decimal digits into a pid (or descriptor); `None` for
/// anything else, or a number too large.
pub fn parse_decimal(text: &[u8]) -> Option<pid_t> {
    pid_t::try_from(parse_u64(text)?).ok()
}

/// Parses unsigned decimal digits; `None` for anything else, or a number
/// too large for a `u64`.
pub fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// The numeric entries of a directory (pids in `/proc`, descriptors in
/// `/proc/self/fd`), read with `getdents64` into a buffer of `N` bytes on
/// the stack. Closes the directory when dropped.
pub struct NumberedEntries<const N: usize> {
    dir: i32,
    buf: [u8; N],
    /// The records of the last read, and where the next one starts.
    len: usize,
    at: usize,
}

impl<const N: usize> NumberedEntries<N> {
    /// Opens `path` (NUL-terminated).
    ///
    /// # Errors
    /// The errno of `open`.
    pub fn open(path: &[u8]) -> Result<Self, i32> {
        Ok(NumberedEntries {
            dir: raw::open_read(path, true)?,
            buf: [0; N],
            len: 0,
            at: 0,
        })
    }

    /// The directory's own descriptor (in `/proc/self/fd`, it lists itself).
    pub fn fd(&self) -> i32 {
        self.dir
    }
}

impl<const N: usize> Iterator for NumberedEntries<N> {
    type Item = pid_t;

    fn next(&mut self) -> Option<pid_t> {
        // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
        const NAME_AT: usize = 19;
        loop {
            if self.at >= self.len {
                match raw::getdents64(self.dir, &mut self.buf) {
                    Ok(n) if n > 0 => {
                        self.len = n;
                        self.at = 0;
                    }
                    _ => return None,
                }
            }
            let record = self.buf.get(self.at..self.len)?;
            let reclen = usize::from(u16::from_ne_bytes([*record.get(16)?, *record.get(17)?]));
            if reclen < NAME_AT {
                return None;
            }
            self.at += reclen;
            let name = record.get(NAME_AT..reclen)?;
            let name = name
                .get(..name.iter().position(|b| *b == 0).unwrap_or(name.len()))
                .unwrap_or(&[]);
            if let Some(number) = parse_decimal(name) {
                return Some(number);
            }
        }
    }
}

impl<const N: usize> Drop for NumberedEntries<N> {
    fn drop(&mut self) {
        raw::close(self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let text = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                     7 3 2 1 20 0 1 0 12345 9000000 250 18446744073709551615\n";
        let stat = ProcStat::parse(text).unwrap();
        assert_eq!(
            (stat.pid, stat.state, stat.ppid, stat.pgrp),
            (4242, b'S', 1, 4242)
        );
        assert_eq!(
            (stat.utime, stat.stime, stat.cutime, stat.cstime),
            (7, 3, 2, 1)
        );
        assert_eq!(stat.starttime, 12345);
        assert_eq!(stat.vsize, 9_000_000);
        assert_eq!(stat.rss, 250);
        // Cut short, or not a stat line at all.
        assert_eq!(ProcStat::parse(b"42 (x) Z 1"), None);
        assert_eq!(ProcStat::parse(b"42 (x)"), None);
        assert_eq!(ProcStat::parse(b"garbage"), None);
        // A parent pid too large for a pid.
        let too_large = b"1 (x) R 99999999999 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 1 1";
        assert_eq!(ProcStat::parse(too_large), None);
    }

    #[test]
    fn reads_own_stat_without_allocating_a_path() {
        let me = std::process::id() as pid_t;
        let stat = ProcStat::read(me).unwrap();
        assert_eq!(stat.pid, me);
        // SAFETY: getppid has no preconditions.
        assert_eq!(stat.ppid, unsafe { libc::getppid() });
        assert!(!stat.is_exited() && !stat.is_stopped_or_exited());
        assert!(ProcStat::read(pid_t::MAX - 1).is_none());
    }

    #[test]
    fn builds_stat_paths_and_decimals() {
        let mut out = [0u8; 32];
        let len = stat_path(123_456, &mut out);
        assert_eq!(&out[..len], b"/proc/123456/stat\0");
        let len = stat_path(0, &mut out);
        assert_eq!(&out[..len], b"/proc/0/stat\0");
        let mut buf = [0u8; 12];
        assert_eq!(format_decimal(-1, &mut buf), b"-1\0");
        assert_eq!(format_decimal(i32::MAX, &mut buf), b"2147483647\0");
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b""), None);
    }

    #[test]
    fn lists_proc_like_the_standard_library() {
        // A small buffer, so that the listing takes many reads.
        let pids: Vec<pid_t> = NumberedEntries::<512>::open(b"/proc\0").unwrap().collect();
        assert!(pids.contains(&(std::process::id() as pid_t)));
        assert!(pids.contains(&1));
        // Entries such as "self" and "meminfo" are not pids.
        let names = std::fs::read_dir("/proc").unwrap().count();
        assert!(pids.len() < names, "{} of {names}", pids.len());
        let numbered = std::fs::read_dir("/proc")
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_str().is_some_and(|n| n.parse::<pid_t>().is_ok())
            })
            .count();
        // Processes come and go meanwhile (other tests run).
        assert!(
            pids.len().abs_diff(numbered) < 50,
            "{} vs {numbered}",
            pids.len()
        );
    }

    #[test]
    fn the_scanner_closes_its_directory() {
        let entries = NumberedEntries::<512>::open(b"/proc/self/fd\0").unwrap();
        let fd = entries.fd();
        assert!(entries.collect::<Vec<_>>().contains(&fd));
        // SAFETY: fcntl(F_GETFD) on a number only looks.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1);
        assert!(NumberedEntries::<512>::open(b"/nonexistent\0").is_err());
    }
}
