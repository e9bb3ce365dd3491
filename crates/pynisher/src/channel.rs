//! The framed result channel from the child to the supervisor.
//!
//! A frame is a 16-byte header (magic, tag, flags, payload length) followed by
//! the payload. Payloads up to [`INLINE_MAX`] travel inline through the pipe,
//! which the supervisor drains while it waits, so a child that fills the pipe
//! only waits a moment. Larger payloads go into a memfd that the supervisor
//! created before the fork, and the frame only announces their length: a
//! large result never has to squeeze through the pipe, and the child never
//! waits for the parent to read it.
//!
//! The receiver is incremental and never blocks: it takes whatever bytes are
//! available and reports a frame only once it is complete. Anything that is
//! not a well-formed frame marks the channel corrupt; it is never trusted to
//! size an allocation.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::sys;

const MAGIC: [u8; 4] = *b"PYNR";
const HEADER_LEN: usize = 16;
const FLAG_MEMFD: u8 = 1;
const READY_LEN: usize = 16;

/// The largest payload sent inline through the pipe.
pub const INLINE_MAX: usize = 60 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Tag {
    /// The call's return value.
    Value = 1,
    /// The exception or panic the call raised.
    Error = 2,
    /// The call ran out of memory under the memory limit. The payload may be
    /// empty if even reporting the error failed for lack of memory.
    OutOfMemory = 3,
    /// Setting up the child failed before user code ran; the payload is a
    /// UTF-8 message.
    SetupFailed = 4,
    /// Sent before the result by children that start a fresh interpreter:
    /// start-up is done and the limits now apply. The payload is the CPU time
    /// spent so far (user and system, microseconds, little-endian u64 each),
    /// which is not charged to the call.
    Ready = 5,
}

impl Tag {
    fn from_byte(byte: u8) -> Option<Tag> {
        [
            Tag::Value,
            Tag::Error,
            Tag::OutOfMemory,
            Tag::SetupFailed,
            Tag::Ready,
        ]
        .into_iter()
        .find(|tag| *tag as u8 == byte)
    }
}

/// From this size on, [`Payload::read_at`] backs its destination with memory
/// before it copies.
const POPULATE_FIRST: usize = 1 << 20;

/// A complete frame.
#[derive(Debug)]
pub struct Frame {
    pub tag: Tag,
    pub payload: Payload,
}

/// The bytes of a frame: inline from the pipe, or still in the memfd the
/// child wrote a large payload into. A large payload is read straight into
/// its final buffer with [`Payload::read_at`]: one kernel copy, no mapping
/// (page faults on a shared-memory mapping cost more than the copy).
#[derive(Debug)]
pub enum Payload {
    Inline(Vec<u8>),
    Memfd {
        fd: OwnedFd,
        len: usize,
        /// The page ranges handed out by [`Payload::map`] so far.
        mapped: std::sync::Mutex<Vec<(u64, u64)>>,
    },
}

impl Payload {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Inline(bytes) => bytes.len(),
            Payload::Memfd { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    /// The range is outside the payload, or reading the memfd failed.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len())
            .filter(|end| *end <= self.len())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "range outside the payload")
            })?;
        match self {
            Payload::Inline(bytes) => buf.copy_from_slice(&bytes[offset..end]),
            Payload::Memfd { fd, .. } => {
                if buf.len() >= POPULATE_FIRST {
                    sys::populate_for_write(buf);
                }
                if sys::pread_full(fd.as_fd(), buf, offset as u64)? != buf.len() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        Ok(())
    }

    /// Maps `len` bytes of a memfd payload from `offset`, which must be a
    /// multiple of the page size, privately (copy-on-write): reading it
    /// costs only cheap page faults on pages the child wrote, and writing to
    /// it never touches the memfd. Each range gets a mapping of its own that
    /// frees its pages of the memfd when dropped (see [`Mapping`]), so a
    /// result that keeps one buffer keeps only that buffer's memory. Ranges
    /// may not share a page, so that freeing one never touches another.
    /// `None` for an inline payload.
    ///
    /// # Errors
    /// The range is empty, not page-aligned, outside the payload or on a page
    /// mapped before, or `mmap` failed.
    pub fn map(&self, offset: usize, len: usize) -> io::Result<Option<Mapping>> {
        match self.claim(offset, len)? {
            Some(memfd) => Mapping::new(memfd, offset as u64, len).map(Some),
            None => Ok(None),
        }
    }

    /// Hands out `len` bytes from `offset` as [`Payload::map`] does, under
    /// the same rules, but leaves the mapping to the caller: it gets a new
    /// descriptor of the memfd, maps the range itself (privately), and frees
    /// the range with [`release_range`] once its mapping is gone. (The
    /// Python binding maps with Python's `mmap`, whose buffer works on every
    /// Python version.) `None` for an inline payload.
    ///
    /// # Errors
    /// As [`Payload::map`], or the descriptor could not be duplicated.
    pub fn claim(&self, offset: usize, len: usize) -> io::Result<Option<OwnedFd>> {
        let Payload::Memfd {
            fd,
            len: total,
            mapped,
        } = self
        else {
            return Ok(None);
        };
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        if len == 0 {
            return Err(invalid("empty range"));
        }
        if offset.checked_add(len).is_none_or(|end| end > *total) {
            return Err(invalid("range outside the payload"));
        }
        let page = sys::page_size();
        let start = offset as u64;
        if start % page != 0 {
            return Err(invalid("mapped range does not start on a page"));
        }
        let end = (start + len as u64).div_ceil(page) * page;
        let mut mapped = mapped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if mapped.iter().any(|&(s, e)| s < end && start < e) {
            return Err(invalid("range shares a page with a range mapped before"));
        }
        let memfd = fd.try_clone()?;
        mapped.push((start, end));
        Ok(Some(memfd))
    }

    /// Frees the memfd's pages outside every range [`Payload::map`] handed
    /// out: once a result is decoded, the memfd holds only what its mappings
    /// still show.
    ///
    /// # Errors
    /// `fallocate` failed.
    pub fn discard_unmapped(&self) -> io::Result<()> {
        let Payload::Memfd { fd, mapped, .. } = self else {
            return Ok(());
        };
        let mut kept = mapped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        kept.sort_unstable();
        let mut from = 0u64;
        for (start, end) in kept {
            sys::punch_hole(fd.as_fd(), from, start.saturating_sub(from))?;
            from = from.max(end);
        }
        let size = sys::file_size(fd.as_fd())?;
        sys::punch_hole(fd.as_fd(), from, size.saturating_sub(from))
    }

    /// All of it as a vector.
    ///
    /// # Errors
    /// Reading the memfd failed.
    pub fn into_vec(self) -> io::Result<Vec<u8>> {
        match self {
            Payload::Inline(bytes) => Ok(bytes),
            memfd => {
                let mut bytes = vec![0u8; memfd.len()];
                memfd.read_at(0, &mut bytes)?;
                Ok(bytes)
            }
        }
    }
}

/// A private, writable mapping of a range of a memfd payload; see
/// [`Payload::map`]. When dropped it unmaps the range and frees its pages of
/// the memfd, which no other mapping shows.
#[derive(Debug)]
pub struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    memfd: OwnedFd,
    offset: u64,
}

// SAFETY: the mapping is memory owned by this value alone; nothing else
// aliases it, so it may move to and be shared with other threads like a
// Vec<u8>.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(memfd: OwnedFd, offset: u64, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty range"));
        }
        // SAFETY: a fresh private mapping of `len` bytes of a file we hold,
        // at a page-aligned offset (checked by the caller); the result is
        // checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&memfd),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping {
            ptr,
            len,
            memfd,
            offset,
        })
    }

    /// The start of the mapping: `len` readable and writable bytes, aligned
    /// to a page, that stay at this address until the mapping is dropped.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping is never empty.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `Mapping::new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        let _ = release_range(self.memfd.as_fd(), self.offset, self.len);
    }
}

/// Frees the memfd pages of a range that [`Payload::claim`] handed out, once
/// nothing maps it any more. [`Payload::claim`] never hands out two ranges on
/// one page, so these pages are the range's alone; freeing them is what lets
/// a kept buffer keep only its own memory.
///
/// # Errors
/// `fallocate` failed.
pub fn release_range(memfd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<()> {
    let page = sys::page_size();
    let end = (offset + len as u64).div_ceil(page) * page;
    sys::punch_hole(memfd, offset, end - offset)
}

/// The child's end: writes exactly one frame. Every method is
/// async-signal-safe and allocates nothing.
#[derive(Debug)]
pub struct Sender {
    pipe: RawFd,
    memfd: RawFd,
    sent: bool,
}

impl Sender {
    /// Wraps the write end of the pipe and the shared memfd, both inherited
    /// through fork.
    pub fn new(pipe: RawFd, memfd: RawFd) -> Sender {
        Sender {
            pipe,
            memfd,
            sent: false,
        }
    }

    /// Whether a frame has been sent.
    pub fn has_sent(&self) -> bool {
        self.sent
    }

    /// The pipe and the memfd, for a signal handler in the child that must
    /// build its own sender (see `call`'s out-of-memory report).
    pub fn raw_fds(&self) -> (RawFd, RawFd) {
        (self.pipe, self.memfd)
    }

    /// Announces that start-up is over, with the CPU time it took.
    ///
    /// # Errors
    /// The write failed.
    pub fn send_ready(
        &mut self,
        startup_user: Duration,
        startup_system: Duration,
    ) -> io::Result<()> {
        let mut payload = [0u8; READY_LEN];
        payload[..8].copy_from_slice(&(startup_user.as_micros() as u64).to_le_bytes());
        payload[8..].copy_from_slice(&(startup_system.as_micros() as u64).to_le_bytes());
        self.send(Tag::Ready, &[&payload])?;
        self.sent = false;
        Ok(())
    }

    /// Sends one frame whose payload is the concatenation of `parts`.
    ///
    /// # Errors
    /// The write failed, for example because the function closed the channel.
    pub fn send(&mut self, tag: Tag, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let inline = len <= INLINE_MAX;
        if !inline {
            let mut offset = 0u64;
            for part in parts {
                sys::pwrite_all(self.memfd, part, offset)?;
                offset += part.len() as u64;
            }
        }
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = tag as u8;
        header[5] = if inline { 0 } else { FLAG_MEMFD };
        header[8..].copy_from_slice(&(len as u64).to_le_bytes());
        // Header and inline payload go in one buffer where it fits, so the
        // frame lands in the pipe in one atomic write.
        let mut small = [0u8; 4096];
        if inline && HEADER_LEN + len <= small.len() {
            small[..HEADER_LEN].copy_from_slice(&header);
            let mut at = HEADER_LEN;
            for part in parts {
                small[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            sys::write_all(self.pipe, &small[..at])?;
        } else {
            sys::write_all(self.pipe, &header)?;
            if inline {
                for part in parts {
                    sys::write_all(self.pipe, part)?;
                }
            }
        }
        self.sent = true;
        Ok(())
    }
}

/// The state of the receiving end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// No complete frame yet.
    Pending,
    /// A complete frame has arrived; [`Receiver::take_frame`] returns it.
    Complete(Tag),
    /// The bytes on the channel are not a valid frame.
    Corrupt(String),
}

/// The supervisor's end: reads without blocking and assembles one frame.
#[derive(Debug)]
pub struct Receiver {
    pipe: OwnedFd,
    memfd: OwnedFd,
    buffer: Vec<u8>,
    state: Received,
    /// Payload length and whether it is in the memfd, once the header is read.
    header: Option<(Tag, usize, bool)>,
    eof: bool,
    ready: Option<Ready>,
}

/// When a child that starts a fresh interpreter finished starting, and what
/// start-up cost; see [`Tag::Ready`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub at: Instant,
    pub startup_user: Duration,
    pub startup_system: Duration,
}

impl Receiver {
    /// Wraps the read end of the pipe (made non-blocking here) and the memfd.
    ///
    /// # Errors
    /// The pipe could not be made non-blocking.
    pub fn new(pipe: OwnedFd, memfd: OwnedFd) -> io::Result<Receiver> {
        sys::set_nonblocking(pipe.as_fd(), true)?;
        Ok(Receiver {
            pipe,
            memfd,
            buffer: Vec::new(),
            state: Received::Pending,
            header: None,
            eof: false,
            ready: None,
        })
    }

    /// The start-up announcement, once it has arrived.
    pub fn ready(&self) -> Option<Ready> {
        self.ready
    }

    /// The pipe, for polling.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// True once the pipe reported end of file or the state is final.
    pub fn is_done(&self) -> bool {
        self.eof || !matches!(self.state, Received::Pending)
    }

    /// The current state.
    pub fn state(&self) -> &Received {
        &self.state
    }

    /// Reads everything available now, without blocking.
    pub fn pump(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        while !self.is_done() {
            match sys::read(self.pipe.as_fd(), &mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.feed(&chunk[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    self.state = Received::Corrupt(format!("reading the result channel: {err}"));
                }
            }
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
        loop {
            if self.header.is_none() && self.buffer.len() >= HEADER_LEN {
                match self.parse_header() {
                    Ok(header) => self.header = Some(header),
                    Err(why) => {
                        self.state = Received::Corrupt(why);
                        return;
                    }
                }
            }
            let Some((tag, len, in_memfd)) = self.header else {
                return;
            };
            if !in_memfd && self.buffer.len() < HEADER_LEN + len {
                return;
            }
            if tag != Tag::Ready {
                self.state = Received::Complete(tag);
                return;
            }
            if in_memfd || len != READY_LEN || self.ready.is_some() {
                self.state = Received::Corrupt(
                    "garbage on the result channel: a malformed start-up frame".into(),
                );
                return;
            }
            let micros = |at: usize| {
                let mut word = [0u8; 8];
                word.copy_from_slice(&self.buffer[HEADER_LEN + at..HEADER_LEN + at + 8]);
                Duration::from_micros(u64::from_le_bytes(word))
            };
            self.ready = Some(Ready {
                at: Instant::now(),
                startup_user: micros(0),
                startup_system: micros(8),
            });
            self.buffer.drain(..HEADER_LEN + READY_LEN);
            self.header = None;
        }
    }

    fn parse_header(&self) -> Result<(Tag, usize, bool), String> {
        let header = &self.buffer[..HEADER_LEN];
        if header[..4] != MAGIC {
            return Err(format!(
                "garbage on the result channel: expected a frame header, got {:?}",
                String::from_utf8_lossy(header)
            ));
        }
        let tag = Tag::from_byte(header[4]).ok_or_else(|| {
            format!(
                "garbage on the result channel: unknown frame tag {}",
                header[4]
            )
        })?;
        let in_memfd = match header[5] {
            0 => false,
            FLAG_MEMFD => true,
            flags => {
                return Err(format!(
                    "garbage on the result channel: unknown flags {flags}"
                ))
            }
        };
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[8..]);
        let len = u64::from_le_bytes(len_bytes);
        let limit = if in_memfd {
            sys::file_size(self.memfd.as_fd()).unwrap_or(0)
        } else {
            INLINE_MAX as u64
        };
        if len > limit {
            return Err(format!(
                "garbage on the result channel: frame claims {len} bytes, at most {limit} possible"
            ));
        }
        Ok((tag, len as usize, in_memfd))
    }

    /// Takes the complete frame. A large payload stays in the memfd until it
    /// is read.
    ///
    /// # Errors
    /// The memfd holds fewer bytes than announced.
    pub fn take_frame(&mut self) -> io::Result<Option<Frame>> {
        let (Received::Complete(tag), Some((_, len, in_memfd))) = (&self.state, self.header) else {
            return Ok(None);
        };
        let tag = *tag;
        let payload = if in_memfd {
            let size = sys::file_size(self.memfd.as_fd())?;
            if (size as usize) < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("result shorter than announced: {size} of {len} bytes"),
                ));
            }
            Payload::Memfd {
                fd: self.memfd.try_clone()?,
                len,
                mapped: Default::default(),
            }
        } else {
            Payload::Inline(self.buffer[HEADER_LEN..HEADER_LEN + len].to_vec())
        };
        self.buffer = Vec::new();
        Ok(Some(Frame { tag, payload }))
    }
}

/// Creates a connected pair. The sender's descriptors are raw because the
/// child writes them after fork; the caller closes the parent's copy of them.
///
/// # Errors
/// The pipe or the memfd could not be created.
pub fn pair() -> io::Result<(Receiver, OwnedFd, OwnedFd)> {
    let (read, write) = sys::pipe()?;
    // A forked child keeps these; on its fd 1 the function's print would
    // land in the result channel.
    let (read, write) = (sys::off_stdio(read)?, sys::off_stdio(write)?);
    let memfd = sys::off_stdio(sys::memfd(c"pynisher-result")?)?;
    let child_memfd = memfd.try_clone()?;
    Ok((Receiver::new(read, memfd)?, write, child_memfd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn roundtrip(tag: Tag, parts: &[&[u8]]) -> Frame {
        let (mut rx, write, memfd) = pair().unwrap();
        let mut tx = Sender::new(write.as_raw_fd(), memfd.as_raw_fd());
        // A large inline frame can exceed what one pipe holds only if the
        // reader is asleep; here the memfd keeps it small.
        tx.send(tag, parts).unwrap();
        drop(write);
        rx.pump();
        assert_eq!(rx.state(), &Received::Complete(tag));
        rx.take_frame().unwrap().unwrap()
    }

    #[test]
    fn small_and_large_payloads_round_trip() {
        let frame = roundtrip(Tag::Value, &[b"hello ", b"world"]);
        assert_eq!(frame.payload.into_vec().unwrap(), b"hello world");
        let big = vec![7u8; 5 << 20];
        let frame = roundtrip(Tag::Error, &[&big[..1000], &big[1000..]]);
        assert_eq!(frame.tag, Tag::Error);
        assert!(matches!(frame.payload, Payload::Memfd { .. }));
        let mut middle = [0u8; 4];
        frame.payload.read_at(1_000_000, &mut middle).unwrap();
        assert_eq!(middle, [7; 4]);
        assert!(frame.payload.read_at(big.len() - 2, &mut middle).is_err());
        let mapping = frame.payload.map(0, big.len()).unwrap().unwrap();
        // SAFETY: the mapping holds `len` readable bytes while it lives.
        let mapped = unsafe { std::slice::from_raw_parts(mapping.as_ptr(), mapping.len()) };
        assert_eq!(mapped, &big[..]);
        assert_eq!(frame.payload.into_vec().unwrap(), big);
        let frame = roundtrip(Tag::OutOfMemory, &[]);
        assert!(frame.payload.is_empty());
    }

    #[test]
    fn each_mapped_range_keeps_only_its_own_pages() {
        let page = sys::page_size() as usize;
        // Too large to travel inline.
        let big: Vec<u8> = (0..32 * page).map(|i| (i / page + 1) as u8).collect();
        let frame = roundtrip(Tag::Value, &[&big]);
        let payload = &frame.payload;
        assert!(matches!(payload, Payload::Memfd { .. }));
        let read = |offset: usize| {
            let mut byte = [0u8];
            payload.read_at(offset, &mut byte).unwrap();
            byte[0]
        };
        assert!(payload.map(1, page).is_err(), "not on a page");
        assert!(payload.map(31 * page, 2 * page).is_err(), "past the end");
        let first = payload.map(page, page + 1).unwrap().unwrap();
        assert!(payload.map(2 * page, page).is_err(), "shares a page");
        let second = payload.map(4 * page, page).unwrap().unwrap();
        // SAFETY: the mapping holds `len` readable bytes while it lives.
        let shown = unsafe { std::slice::from_raw_parts(first.as_ptr(), first.len()) };
        assert_eq!(shown, &big[page..2 * page + 1]);
        assert_eq!(first.as_ptr() as usize % page, 0);
        // What no mapping shows is freed; what they show stays.
        payload.discard_unmapped().unwrap();
        assert_eq!((read(0), read(3 * page), read(5 * page)), (0, 0, 0));
        assert_eq!((read(page), read(2 * page), read(4 * page)), (2, 3, 5));
        // A dropped mapping frees its own pages and nothing else.
        drop(second);
        assert_eq!((read(4 * page), read(2 * page)), (0, 3));
        drop(first);
        assert_eq!(read(page), 0);
    }

    #[test]
    fn a_start_up_frame_comes_before_the_result() {
        let (mut rx, write, memfd) = pair().unwrap();
        let mut tx = Sender::new(write.as_raw_fd(), memfd.as_raw_fd());
        tx.send_ready(Duration::from_millis(30), Duration::from_millis(7))
            .unwrap();
        assert!(!tx.has_sent());
        rx.pump();
        let ready = rx.ready().unwrap();
        assert_eq!(ready.startup_user, Duration::from_millis(30));
        assert_eq!(ready.startup_system, Duration::from_millis(7));
        assert_eq!(rx.state(), &Received::Pending);
        tx.send(Tag::Value, &[b"42"]).unwrap();
        rx.pump();
        assert_eq!(
            rx.take_frame()
                .unwrap()
                .unwrap()
                .payload
                .into_vec()
                .unwrap(),
            b"42"
        );
    }

    #[test]
    fn partial_frames_stay_pending() {
        let (mut rx, write, _memfd) = pair().unwrap();
        sys::write_all(write.as_raw_fd(), &MAGIC).unwrap();
        rx.pump();
        assert_eq!(rx.state(), &Received::Pending);
        assert!(!rx.is_done());
    }

    #[test]
    fn garbage_is_reported_not_trusted() {
        let cases: Vec<Vec<u8>> = vec![
            b"this is not a frame at all".to_vec(),
            {
                let mut h = MAGIC.to_vec();
                h.extend_from_slice(&[9, 0, 0, 0]);
                h.extend_from_slice(&5u64.to_le_bytes());
                h
            },
            {
                let mut h = MAGIC.to_vec();
                h.extend_from_slice(&[1, 0, 0, 0]);
                h.extend_from_slice(&u64::MAX.to_le_bytes());
                h
            },
            {
                let mut h = MAGIC.to_vec();
                h.extend_from_slice(&[1, FLAG_MEMFD, 0, 0]);
                h.extend_from_slice(&(1u64 << 40).to_le_bytes());
                h
            },
        ];
        for bytes in cases {
            let (mut rx, write, _memfd) = pair().unwrap();
            sys::write_all(write.as_raw_fd(), &bytes).unwrap();
            rx.pump();
            match rx.state() {
                Received::Corrupt(why) => assert!(why.contains("garbage"), "{why}"),
                other => panic!("{bytes:?} gave {other:?}"),
            }
        }
    }
}
