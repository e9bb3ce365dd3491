//! [`Limits`] and the parsing of their units.
//!
//! Time units: `ms`, `s`, `m`, `h` (and long forms such as `min`, `sec`,
//! `hours`). A bare number is seconds. Memory units: `B`, `KB`, `MB`, `GB`,
//! `TB`, all multiples of 1024 and case-insensitive; the `KiB`/`MiB`/`GiB`/`TiB`
//! spellings and single letters (`K`, `M`, `G`, `T`) mean the same. A bare
//! number is bytes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// How the memory limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum MemoryMode {
    /// `RLIMIT_AS` in every process of the tree, set to the address space the
    /// process had when the limit was applied plus the limit. The limit is
    /// headroom for the call, never the caller's own size.
    #[default]
    AddressSpace,
    /// Resident memory plus swap of the whole tree, counting only pages the
    /// call itself touched. Enforced by sampling (cgroup v2 where delegated).
    Resident,
}

impl MemoryMode {
    /// Every mode, in the order they are documented.
    pub const ALL: [MemoryMode; 2] = [MemoryMode::AddressSpace, MemoryMode::Resident];

    /// The name used by the Python API, the CLI and the JSON report.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemoryMode::AddressSpace => "address_space",
            MemoryMode::Resident => "resident",
        }
    }
}

impl fmt::Display for MemoryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MemoryMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        MemoryMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == wanted)
            .ok_or_else(|| {
                Error::invalid(
                    "memory_mode",
                    format!(
                        "unknown memory mode {s:?} (expected \"address_space\" or \"resident\")"
                    ),
                )
            })
    }
}

/// The limits for one call. `None` means unlimited.
///
/// Build it field by field or from strings with [`parse_duration`] and
/// [`parse_bytes`]; [`Limits::validate`] runs before any process starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock time from the start of the call.
    pub wall_time: Option<Duration>,
    /// User plus system CPU time of the whole process tree.
    pub cpu_time: Option<Duration>,
    /// Memory in bytes, counted as [`Limits::memory_mode`] says.
    pub memory: Option<u64>,
    /// How `memory` is counted.
    pub memory_mode: MemoryMode,
    /// Time between the soft stop (SIGTERM or SIGXCPU) and SIGKILL.
    pub grace_period: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall_time: None,
            cpu_time: None,
            memory: None,
            memory_mode: MemoryMode::AddressSpace,
            grace_period: Duration::from_secs(1),
        }
    }
}

impl Limits {
    /// No limits and a grace period of one second.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the wall-time limit.
    pub fn wall_time(mut self, limit: Duration) -> Self {
        self.wall_time = Some(limit);
        self
    }

    /// Sets the CPU-time limit.
    pub fn cpu_time(mut self, limit: Duration) -> Self {
        self.cpu_time = Some(limit);
        self
    }

    /// Sets the memory limit in bytes.
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Sets how the memory limit is counted.
    pub fn memory_mode(mut self, mode: MemoryMode) -> Self {
        self.memory_mode = mode;
        self
    }

    /// Sets the grace period between the soft and the hard stop.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace_period = grace;
        self
    }

    /// Checks that every set limit is positive.
    ///
    /// # Errors
    /// An [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming the first bad limit.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [("wall_time", self.wall_time), ("cpu_time", self.cpu_time)] {
            if value == Some(Duration::ZERO) {
                return Err(Error::invalid(name, "must be positive, got 0"));
            }
        }
        if self.memory == Some(0) {
            return Err(Error::invalid("memory", "must be positive, got 0"));
        }
        Ok(())
    }
}

const TIME_UNITS: &[(&[&str], f64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 1e-3),
    (&["", "s", "sec", "secs", "second", "seconds"], 1.0),
    (&["m", "min", "mins", "minute", "minutes"], 60.0),
    (&["h", "hr", "hrs", "hour", "hours"], 3600.0),
];

const MEMORY_UNITS: &[(&[&str], f64)] = &[
    (&["", "b", "byte", "bytes"], 1.0),
    (&["k", "kb", "kib"], 1024.0),
    (&["m", "mb", "mib"], 1024.0 * 1024.0),
    (&["g", "gb", "gib"], 1024.0 * 1024.0 * 1024.0),
    (&["t", "tb", "tib"], 1024.0 * 1024.0 * 1024.0 * 1024.0),
];

fn unit_factor(table: &[(&[&str], f64)], unit: &str) -> Option<f64> {
    let unit = unit.trim().to_ascii_lowercase();
    table
        .iter()
        .find(|(names, _)| names.contains(&unit.as_str()))
        .map(|(_, factor)| *factor)
}

fn check_positive(argument: &str, value: f64) -> Result<()> {
    if !value.is_finite() {
        return Err(Error::invalid(
            argument,
            format!("must be a finite number, got {value}"),
        ));
    }
    if value <= 0.0 {
        return Err(Error::invalid(
            argument,
            format!("must be positive, got {value}"),
        ));
    }
    Ok(())
}

/// Converts `value` in `unit` (`"s"`, `"m"`, `"h"`, `"ms"`; `""` is seconds) to
/// a [`Duration`]. `argument` names the option in the error.
///
/// # Errors
/// An invalid-argument error for an unknown unit or a value that is not
/// positive and finite.
///
/// ```
/// # use std::time::Duration;
/// let d = pynisher::duration_from_number("wall_time", 1.5, "h").unwrap();
/// assert_eq!(d, Duration::from_secs(5400));
/// assert!(pynisher::duration_from_number("wall_time", 0.0, "s").is_err());
/// ```
pub fn duration_from_number(argument: &str, value: f64, unit: &str) -> Result<Duration> {
    let factor = unit_factor(TIME_UNITS, unit).ok_or_else(|| {
        Error::invalid(
            argument,
            format!("unknown time unit {unit:?} (expected \"ms\", \"s\", \"m\" or \"h\")"),
        )
    })?;
    check_positive(argument, value)?;
    let duration = Duration::try_from_secs_f64(value * factor)
        .map_err(|_| Error::invalid(argument, format!("{value} {unit} is out of range")))?;
    if duration.is_zero() {
        return Err(Error::invalid(
            argument,
            format!("{value} {unit} is less than one nanosecond"),
        ));
    }
    Ok(duration)
}

/// Converts `value` in `unit` (`"B"`, `"KB"`, `"MB"`, `"GB"`, `"TB"`, or the
/// `KiB` forms; `""` is bytes) to a whole number of bytes.
///
/// # Errors
/// An invalid-argument error for an unknown unit, a value that is not positive
/// and finite, or a result below one byte.
///
/// ```
/// assert_eq!(pynisher::bytes_from_number("memory", 500.0, "MB").unwrap(), 500 << 20);
/// assert!(pynisher::bytes_from_number("memory", 1.0, "XB").is_err());
/// ```
pub fn bytes_from_number(argument: &str, value: f64, unit: &str) -> Result<u64> {
    let factor = unit_factor(MEMORY_UNITS, unit).ok_or_else(|| {
        Error::invalid(
            argument,
            format!(
                "unknown memory unit {unit:?} (expected \"B\", \"KB\", \"MB\", \"GB\" or \"TB\")"
            ),
        )
    })?;
    check_positive(argument, value)?;
    let bytes = (value * factor).round();
    if bytes < 1.0 {
        return Err(Error::invalid(
            argument,
            format!("{value} {unit} is less than one byte"),
        ));
    }
    if bytes >= u64::MAX as f64 {
        return Err(Error::invalid(
            argument,
            format!("{value} {unit} is out of range"),
        ));
    }
    Ok(bytes as u64)
}

/// Splits `"1.5GB"` into `(1.5, "GB")`.
fn split_number(argument: &str, text: &str) -> Result<(f64, String)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E')))
        .unwrap_or(text.len());
    // `e` may start a unit ("1e3" is a number but "5e" is not); back off until
    // the prefix parses.
    let mut end = split;
    while end > 0 {
        if let Ok(number) = text[..end].parse::<f64>() {
            return Ok((number, text[end..].trim().to_owned()));
        }
        end -= 1;
    }
    Err(Error::invalid(
        argument,
        format!("cannot read a number from {text:?}"),
    ))
}

/// Parses a duration such as `"1.5s"`, `"250ms"`, `"2m"`, `"1.5h"` or `"3"`
/// (seconds).
///
/// # Errors
/// An invalid-argument error naming `argument`.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(pynisher::parse_duration("wall_time", "250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(pynisher::parse_duration("wall_time", "1.5h").unwrap(), Duration::from_secs(5400));
/// ```
pub fn parse_duration(argument: &str, text: &str) -> Result<Duration> {
    let (number, unit) = split_number(argument, text)?;
    duration_from_number(argument, number, &unit)
}

/// Like [`duration_from_number`], but for a grace period, where zero is
/// allowed: no grace at all, SIGKILL at once.
///
/// # Errors
/// As [`duration_from_number`], for any value but zero.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(pynisher::grace_period_from_number("grace_period", 0.0, "s").unwrap(), Duration::ZERO);
/// assert!(pynisher::grace_period_from_number("grace_period", -1.0, "s").is_err());
/// ```
pub fn grace_period_from_number(argument: &str, value: f64, unit: &str) -> Result<Duration> {
    if value == 0.0 && unit_factor(TIME_UNITS, unit).is_some() {
        return Ok(Duration::ZERO);
    }
    duration_from_number(argument, value, unit)
}

/// Parses a grace period such as `"0"`, `"500ms"` or `"2s"`; zero is allowed.
///
/// # Errors
/// An invalid-argument error naming `argument`.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(pynisher::parse_grace_period("grace_period", "0").unwrap(), Duration::ZERO);
/// assert_eq!(pynisher::parse_grace_period("grace_period", "0s").unwrap(), Duration::ZERO);
/// assert_eq!(pynisher::parse_grace_period("grace_period", "2s").unwrap(), Duration::from_secs(2));
/// ```
pub fn parse_grace_period(argument: &str, text: &str) -> Result<Duration> {
    let (number, unit) = split_number(argument, text)?;
    grace_period_from_number(argument, number, &unit)
}

/// Parses a memory size such as `"500MB"`, `"2GiB"`, `"1.5 gb"` or `"4096"`
/// (bytes).
///
/// # Errors
/// An invalid-argument error naming `argument`.
///
/// ```
/// assert_eq!(pynisher::parse_bytes("memory", "2GiB").unwrap(), 2 << 30);
/// assert_eq!(pynisher::parse_bytes("memory", "500MB").unwrap(), 500 << 20);
/// ```
pub fn parse_bytes(argument: &str, text: &str) -> Result<u64> {
    let (number, unit) = split_number(argument, text)?;
    bytes_from_number(argument, number, &unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_time_units() {
        let cases = [
            ("1.5s", 1.5),
            ("2m", 120.0),
            ("1.5h", 5400.0),
            ("250ms", 0.25),
            ("3", 3.0),
            (" 0.2 S ", 0.2),
            ("1e1s", 10.0),
            ("2 minutes", 120.0),
        ];
        for (text, seconds) in cases {
            let parsed = parse_duration("wall_time", text).unwrap();
            assert!(
                (parsed.as_secs_f64() - seconds).abs() < 1e-9,
                "{text}: {parsed:?}"
            );
        }
    }

    #[test]
    fn parses_memory_units() {
        let cases = [
            ("500MB", 500u64 << 20),
            ("2GiB", 2 << 30),
            ("1.5gb", 3 << 29),
            ("4096", 4096),
            ("1 KB", 1024),
            ("3k", 3072),
            ("1T", 1 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_bytes("memory", text).unwrap(), bytes, "{text}");
        }
    }

    #[test]
    fn rejects_bad_values_naming_the_argument() {
        for text in [
            "0", "-1s", "abc", "5xs", "", "nan", "inf", "1e-10", "1e-7ms",
        ] {
            let err = parse_duration("cpu_time", text).unwrap_err();
            assert_eq!(err.argument(), Some("cpu_time"), "{text}");
        }
        for text in ["0MB", "5XB", "-3", "0.1B", "MB"] {
            let err = parse_bytes("memory", text).unwrap_err();
            assert_eq!(err.argument(), Some("memory"), "{text}");
            assert!(err.to_string().starts_with("memory: "), "{err}");
        }
    }

    #[test]
    fn validate_rejects_zero_limits() {
        assert!(Limits::new().validate().is_ok());
        let err = Limits::new()
            .wall_time(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert_eq!(err.argument(), Some("wall_time"));
        let err = Limits::new().memory(0).validate().unwrap_err();
        assert_eq!(err.argument(), Some("memory"));
    }

    #[test]
    fn memory_mode_round_trips() {
        for mode in MemoryMode::ALL {
            assert_eq!(mode.as_str().parse::<MemoryMode>().unwrap(), mode);
        }
        assert_eq!(
            "Address-Space".parse::<MemoryMode>().unwrap(),
            MemoryMode::AddressSpace
        );
        assert_eq!(
            "rss".parse::<MemoryMode>().unwrap_err().argument(),
            Some("memory_mode")
        );
    }
}
