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
//! A payload whose bulk is one large buffer can instead be *lent*
//! ([`Sender::send_lent`]): the frame then carries only where the buffer
//! lies in the child, which waits while the supervisor copies it straight
//! into its final place ([`read_lent`], `process_vm_readv`). That is one copy
//! instead of two (into the memfd, then out of it). Where the supervisor
//! cannot read another process's memory it asks the child to write the
//! memfd after all, and the frame arrives as an ordinary memfd frame.
//!
//! The receiver is incremental and never blocks: it takes whatever bytes are
//! available and reports a frame only once it is complete. Anything that is
//! not a well-formed frame marks the channel corrupt; it is never trusted to
//! size an allocation.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::sys;

const MAGIC: [u8; 4] = *b"PYNR";
const HEADER_LEN: usize = 16;
const FLAG_MEMFD: u8 = 1;
const FLAG_LENT: u8 = 2;
const READY_LEN: usize = 16;

/// The largest payload sent inline through the pipe.
pub const INLINE_MAX: usize = 60 * 1024;

/// What a lent frame carries after its head: the buffer's length, the
/// child's pid, the buffer's address there, and a nonce with its address
/// (five little-endian u64).
const LENT_TRAILER: usize = 40;

/// The supervisor's answers to a lent frame, written into the memfd just
/// past the payload: it read the buffer, so the child may go on; or it
/// could not, so the child copies the payload into the memfd, then writes
/// the third word.
const LENT_READ: u64 = u64::from_le_bytes(*b"lent:rd!");
const LENT_COPY: u64 = u64::from_le_bytes(*b"lent:cp?");
const LENT_COPIED: u64 = u64::from_le_bytes(*b"lent:cp!");

/// How often a child that lent its buffer looks for the answer: at first
/// often (a small buffer is read in a moment), then less and less, so that
/// its wake-ups do not compete with the copy of a large one.
const LENT_POLL_FIRST_MICROS: u64 = 20;
const LENT_POLL_MAX_MICROS: u64 = 1000;

/// Where the answer to a lent payload of `len` bytes lies in the memfd.
fn answer_offset(len: usize) -> u64 {
    len.next_multiple_of(8) as u64
}

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
    /// A lent payload that was read when it arrived: only its head is here,
    /// and the lent buffer (the rest, up to `len`) went to the [`LentSink`].
    Lent {
        head: Vec<u8>,
        len: usize,
    },
}

impl Payload {
    /// Its length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Inline(bytes) => bytes.len(),
            Payload::Memfd { len, .. } | Payload::Lent { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    /// The range is outside the payload, reading the memfd failed, or the
    /// range is part of a lent buffer, which went to the [`LentSink`].
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len())
            .filter(|end| *end <= self.len())
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "range outside the payload")
            })?;
        match self {
            Payload::Inline(bytes) => buf.copy_from_slice(&bytes[offset..end]),
            Payload::Lent { head, .. } => match head.get(offset..end) {
                Some(bytes) => buf.copy_from_slice(bytes),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "this range was lent and went to the embedder's buffer",
                    ))
                }
            },
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
            Payload::Lent { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a lent payload went to the embedder's buffer",
            )),
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
        if len <= INLINE_MAX {
            return self.write_frame(tag, 0, parts, &[]);
        }
        self.write_memfd(parts, 0)?;
        self.write_header(tag, FLAG_MEMFD, len)?;
        self.sent = true;
        Ok(())
    }

    /// Sends one frame whose payload is `head` followed by `lent`, lending
    /// `lent` rather than copying it: the frame tells where it lies in this
    /// process, and this process waits until the supervisor has read it, or
    /// has asked for a copy in the memfd after all (which this then makes).
    /// `lent` must stay unchanged until this returns; other threads of the
    /// process go on meanwhile.
    ///
    /// # Errors
    /// `InvalidInput` if the head is too large to travel inline (send it all
    /// with [`Sender::send`] then; nothing was sent); otherwise a write
    /// failed.
    pub fn send_lent(&mut self, tag: Tag, head: &[&[u8]], lent: &[u8]) -> io::Result<()> {
        let head_len: usize = head.iter().map(|p| p.len()).sum();
        if head_len + LENT_TRAILER > INLINE_MAX || lent.is_empty() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // The supervisor reads the nonce back from this very address before
        // and after it copies: a process that is not this one (the pid
        // reused) cannot pass for it.
        let nonce = [lent_nonce(lent.as_ptr() as u64)];
        let words = [
            lent.len() as u64,
            sys::raw::getpid() as u64,
            lent.as_ptr() as u64,
            nonce.as_ptr() as u64,
            nonce[0],
        ];
        let mut trailer = [0u8; LENT_TRAILER];
        for (chunk, word) in trailer.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        self.write_frame(tag, FLAG_LENT, head, &trailer)?;
        let answer_at = answer_offset(head_len + lent.len());
        let mut pause = LENT_POLL_FIRST_MICROS;
        loop {
            match self.read_answer(answer_at)? {
                Some(LENT_READ) => break,
                Some(LENT_COPY) => {
                    self.write_memfd(head, 0)?;
                    sys::pwrite_all(self.memfd, lent, head_len as u64)?;
                    sys::pwrite_all(self.memfd, &LENT_COPIED.to_le_bytes(), answer_at)?;
                    break;
                }
                _ => {
                    sys::raw::sleep_micros(pause);
                    pause = (pause * 2).min(LENT_POLL_MAX_MICROS);
                }
            }
        }
        // The nonce must stay in memory, at its address, until now.
        std::hint::black_box(&nonce);
        Ok(())
    }

    /// The supervisor's answer to a lent frame, if it has written one.
    fn read_answer(&self, at: u64) -> io::Result<Option<u64>> {
        let mut word = [0u8; 8];
        // SAFETY: the memfd is open for as long as this sender is used.
        let memfd = unsafe { BorrowedFd::borrow_raw(self.memfd) };
        let n = sys::pread_full(memfd, &mut word, at)?;
        Ok((n == word.len()).then(|| u64::from_le_bytes(word)))
    }

    fn write_memfd(&self, parts: &[&[u8]], mut offset: u64) -> io::Result<()> {
        for part in parts {
            sys::pwrite_all(self.memfd, part, offset)?;
            offset += part.len() as u64;
        }
        Ok(())
    }

    fn write_header(&self, tag: Tag, flags: u8, len: usize) -> io::Result<()> {
        sys::write_all(self.pipe, &header(tag, flags, len))
    }

    /// Writes a frame whose payload, `parts` then `tail`, travels inline.
    fn write_frame(&mut self, tag: Tag, flags: u8, parts: &[&[u8]], tail: &[u8]) -> io::Result<()> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>() + tail.len();
        // Header and payload go in one buffer where it fits, so the frame
        // lands in the pipe in one atomic write.
        let mut small = [0u8; 4096];
        if HEADER_LEN + len <= small.len() {
            small[..HEADER_LEN].copy_from_slice(&header(tag, flags, len));
            let mut at = HEADER_LEN;
            for part in parts.iter().chain([&tail]) {
                small[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            sys::write_all(self.pipe, &small[..at])?;
        } else {
            self.write_header(tag, flags, len)?;
            for part in parts.iter().chain([&tail]) {
                sys::write_all(self.pipe, part)?;
            }
        }
        self.sent = true;
        Ok(())
    }
}

fn header(tag: Tag, flags: u8, len: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = tag as u8;
    header[5] = flags;
    header[8..].copy_from_slice(&(len as u64).to_le_bytes());
    header
}

/// A value no other process is likely to hold at the nonce's address:
/// the monotonic clock in nanoseconds, mixed with the pid and an address.
/// Async-signal-safe.
fn lent_nonce(salt: u64) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is valid for writes; clock_gettime is async-signal-safe.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = (now.tv_sec as u64).wrapping_mul(1_000_000_000) ^ now.tv_nsec as u64;
    nanos ^ (sys::raw::getpid() as u64).rotate_left(40) ^ salt.rotate_left(17) | 1
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
    /// Payload length (of what travels in the pipe, for a lent frame) and
    /// how it travels, once the header is read.
    header: Option<(Tag, usize, Carried)>,
    eof: bool,
    ready: Option<Ready>,
    /// The answer given to a lent frame, once given.
    lent_answer: Option<u64>,
}

/// How a frame's payload travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carried {
    Inline,
    Memfd,
    /// A head inline, then the lent buffer's whereabouts.
    Lent,
}

/// Where a lent buffer lies, from a complete lent frame: see
/// [`Sender::send_lent`] and [`read_lent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lent {
    /// Where the buffer starts in the payload (the length of the head).
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The process that lent it.
    pub pid: sys::Pid,
    address: u64,
    nonce_address: u64,
    nonce: u64,
}

/// Where [`Supervised`](crate::supervisor::Supervised) puts a lent buffer:
/// the embedder's final buffer (for Python, the `bytes` object it returns).
pub trait LentSink: Send {
    /// A writable buffer of exactly `len` bytes, or `None` to decline (the
    /// child then copies its payload into the memfd after all). It is
    /// filled while nothing else uses it.
    fn buffer(&mut self, len: usize) -> Option<&mut [u8]>;

    /// The buffer could not be filled: forget it.
    fn discard(&mut self);
}

/// Copies the buffer a child lent into `dest` (of `lent.len` bytes). The
/// nonce is checked before and after, so the bytes come from the process
/// that lent them, which was still waiting when the copy ended.
///
/// # Errors
/// The copy failed (`EPERM` where this process may not read the child's
/// memory), or the nonce did not match.
pub fn read_lent(lent: &Lent, dest: &mut [u8]) -> io::Result<()> {
    if dest.len() != lent.len {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let check_nonce = || {
        let mut word = [0u8; 8];
        sys::read_process_memory(lent.pid, lent.nonce_address, &mut word)?;
        if u64::from_le_bytes(word) == lent.nonce {
            Ok(())
        } else {
            Err(io::Error::other("the lending process is gone"))
        }
    };
    check_nonce()?;
    if dest.len() >= POPULATE_FIRST {
        sys::populate_for_write(dest);
    }
    sys::read_process_memory(lent.pid, lent.address, dest)?;
    check_nonce()
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
            lent_answer: None,
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
            let Some((tag, len, carried)) = self.header else {
                return;
            };
            if carried != Carried::Memfd && self.buffer.len() < HEADER_LEN + len {
                return;
            }
            if carried == Carried::Lent && self.lent().is_none() {
                self.state = Received::Corrupt(
                    "garbage on the result channel: a malformed lent frame".into(),
                );
                return;
            }
            if tag != Tag::Ready {
                self.state = Received::Complete(tag);
                return;
            }
            if carried != Carried::Inline || len != READY_LEN || self.ready.is_some() {
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

    fn parse_header(&self) -> Result<(Tag, usize, Carried), String> {
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
        let carried = match header[5] {
            0 => Carried::Inline,
            FLAG_MEMFD => Carried::Memfd,
            FLAG_LENT => Carried::Lent,
            flags => {
                return Err(format!(
                    "garbage on the result channel: unknown flags {flags}"
                ))
            }
        };
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&header[8..]);
        let len = u64::from_le_bytes(len_bytes);
        let limit = if carried == Carried::Memfd {
            sys::file_size(self.memfd.as_fd()).unwrap_or(0)
        } else {
            INLINE_MAX as u64
        };
        if len > limit {
            return Err(format!(
                "garbage on the result channel: frame claims {len} bytes, at most {limit} possible"
            ));
        }
        Ok((tag, len as usize, carried))
    }

    /// Where the buffer of a complete lent frame lies, until it is answered
    /// with [`Receiver::answer_lent`].
    pub fn lent(&self) -> Option<Lent> {
        self.lent_answer
            .is_none()
            .then(|| self.lent_info())
            .flatten()
    }

    fn lent_info(&self) -> Option<Lent> {
        let Some((_, len, Carried::Lent)) = self.header else {
            return None;
        };
        let offset = len.checked_sub(LENT_TRAILER)?;
        let trailer = self.buffer.get(HEADER_LEN + offset..HEADER_LEN + len)?;
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&trailer[8 * i..8 * i + 8]);
            u64::from_le_bytes(bytes)
        };
        let lent_len = usize::try_from(word(0)).ok().filter(|n| *n > 0)?;
        offset
            .checked_add(lent_len)
            .filter(|end| *end <= isize::MAX as usize)?;
        Some(Lent {
            offset,
            len: lent_len,
            pid: sys::Pid::try_from(word(1)).ok().filter(|pid| *pid > 0)?,
            address: word(2),
            nonce_address: word(3),
            nonce: word(4),
        })
    }

    /// Answers a lent frame: `read` if its buffer was copied with
    /// [`read_lent`] (the child goes on), otherwise the child is asked to
    /// copy the payload into the memfd, where [`Receiver::take_frame`] then
    /// finds it.
    ///
    /// # Errors
    /// Writing the answer failed.
    pub fn answer_lent(&mut self, read: bool) -> io::Result<()> {
        let Some(lent) = self.lent() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no lent frame to answer",
            ));
        };
        let answer = if read { LENT_READ } else { LENT_COPY };
        let at = answer_offset(lent.offset + lent.len);
        sys::pwrite_all(self.memfd.as_raw_fd(), &answer.to_le_bytes(), at)?;
        self.lent_answer = Some(answer);
        Ok(())
    }

    /// Takes the complete frame. A large payload stays in the memfd until it
    /// is read.
    ///
    /// # Errors
    /// The memfd holds fewer bytes than announced.
    pub fn take_frame(&mut self) -> io::Result<Option<Frame>> {
        let (Received::Complete(tag), Some((_, len, carried))) = (&self.state, self.header) else {
            return Ok(None);
        };
        let tag = *tag;
        let memfd_payload = |len: usize| -> io::Result<Payload> {
            let size = sys::file_size(self.memfd.as_fd())?;
            if (size as usize) < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("result shorter than announced: {size} of {len} bytes"),
                ));
            }
            Ok(Payload::Memfd {
                fd: self.memfd.try_clone()?,
                len,
                mapped: Default::default(),
            })
        };
        let payload = match (carried, self.lent_info()) {
            (Carried::Memfd, _) => memfd_payload(len)?,
            (Carried::Inline, _) => {
                Payload::Inline(self.buffer[HEADER_LEN..HEADER_LEN + len].to_vec())
            }
            (Carried::Lent, Some(lent)) => {
                let total = lent.offset + lent.len;
                let mut answer = [0u8; 8];
                let copied = self.lent_answer == Some(LENT_COPY)
                    && sys::pread_full(self.memfd.as_fd(), &mut answer, answer_offset(total))?
                        == answer.len()
                    && u64::from_le_bytes(answer) == LENT_COPIED;
                match self.lent_answer {
                    Some(LENT_READ) => Payload::Lent {
                        head: self.buffer[HEADER_LEN..HEADER_LEN + lent.offset].to_vec(),
                        len: total,
                    },
                    _ if copied => memfd_payload(total)?,
                    _ => {
                        return Err(io::Error::other(
                            "the call's process ended before it handed its lent result over",
                        ))
                    }
                }
            }
            (Carried::Lent, None) => return Err(io::Error::other("a malformed lent frame")),
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

    /// A thread of this process stands for the child: it lends `lent` and
    /// waits for the answer, which `answer` gives from the receiving end.
    fn lend(lent: Vec<u8>, answer: impl FnOnce(&mut Receiver, Lent)) -> io::Result<Option<Frame>> {
        let (mut rx, write, memfd) = pair().unwrap();
        let mut tx = Sender::new(write.as_raw_fd(), memfd.as_raw_fd());
        let child = std::thread::spawn(move || {
            let sent = tx.send_lent(Tag::Value, &[b"head:", &[0u8; 3]], &lent);
            drop((write, memfd));
            sent
        });
        let lent = loop {
            rx.pump();
            if let Some(lent) = rx.lent() {
                break lent;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!((lent.offset, lent.pid), (8, sys::raw::getpid()));
        answer(&mut rx, lent);
        child.join().unwrap().unwrap();
        rx.pump();
        rx.take_frame()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn a_lent_buffer_is_read_straight_from_the_lender() {
        let expected = pattern(3 << 20);
        let mut copy = vec![0u8; expected.len()];
        let frame = lend(expected.clone(), |rx, lent| {
            assert_eq!(lent.len, expected.len());
            read_lent(&lent, &mut copy).unwrap();
            rx.answer_lent(true).unwrap();
            assert!(rx.lent().is_none(), "answered once");
        })
        .unwrap()
        .unwrap();
        assert_eq!(copy, expected);
        assert_eq!(frame.payload.len(), 8 + expected.len());
        let mut head = [0u8; 8];
        frame.payload.read_at(0, &mut head).unwrap();
        assert_eq!(&head, b"head:\0\0\0");
        // The lent range went to the embedder; the payload cannot give it.
        assert!(frame.payload.read_at(8, &mut [0u8; 4]).is_err());
    }

    #[test]
    fn a_lent_buffer_that_cannot_be_read_is_copied_into_the_memfd() {
        let expected = pattern(100_000);
        let frame = lend(expected.clone(), |rx, _| rx.answer_lent(false).unwrap())
            .unwrap()
            .unwrap();
        assert!(matches!(frame.payload, Payload::Memfd { .. }));
        let mut all = b"head:\0\0\0".to_vec();
        all.extend_from_slice(&expected);
        assert_eq!(frame.payload.into_vec().unwrap(), all);
    }

    #[test]
    fn only_the_lender_itself_passes_the_nonce_check() {
        let expected = pattern(4096);
        lend(expected.clone(), |rx, lent| {
            let mut copy = vec![0u8; lent.len];
            let stranger = Lent {
                nonce: lent.nonce ^ 1,
                ..lent
            };
            assert!(read_lent(&stranger, &mut copy).is_err());
            assert!(read_lent(&lent, &mut copy[1..]).is_err(), "wrong length");
            read_lent(&lent, &mut copy).unwrap();
            assert_eq!(copy, expected);
            rx.answer_lent(true).unwrap();
        })
        .unwrap();
    }

    #[test]
    fn a_lent_frame_never_answered_is_an_error_not_a_result() {
        let (mut rx, write, memfd) = pair().unwrap();
        let mut tx = Sender::new(write.as_raw_fd(), memfd.as_raw_fd());
        let lent = pattern(1000);
        // The sender waits for an answer; only its frame matters here.
        let head: &[&[u8]] = &[b"h"];
        let mut trailer = [0u8; LENT_TRAILER];
        trailer[..8].copy_from_slice(&(lent.len() as u64).to_le_bytes());
        trailer[8..16].copy_from_slice(&1u64.to_le_bytes());
        tx.write_frame(Tag::Value, FLAG_LENT, head, &trailer)
            .unwrap();
        rx.pump();
        assert_eq!(rx.state(), &Received::Complete(Tag::Value));
        assert!(rx.lent().is_some());
        let err = rx.take_frame().unwrap_err();
        assert!(err.to_string().contains("before it handed"), "{err}");
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
            {
                // A lent frame too short to say where its buffer is.
                let mut h = MAGIC.to_vec();
                h.extend_from_slice(&[1, FLAG_LENT, 0, 0]);
                h.extend_from_slice(&3u64.to_le_bytes());
                h.extend_from_slice(b"abc");
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
