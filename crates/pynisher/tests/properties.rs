//! Property tests: the result-channel decoder against arbitrary bytes, and
//! the unit parsers against arbitrary numbers, units and strings.
//!
//! Each property runs a modest number of cases by default so that the suite
//! stays fast; `PROPTEST_CASES=N` runs N cases of every property instead,
//! which is how a longer fuzzing run is done (see docs/reliability.md):
//!
//! ```text
//! PROPTEST_CASES=20000 cargo test --release -p pynisher --test properties
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use pynisher::channel::{pair, Payload, Received, Receiver, Sender, Tag, INLINE_MAX};
use pynisher::{bytes_from_number, duration_from_number, parse_bytes, parse_duration};

// ---------------------------------------------------------------------------
// Allocation accounting: a global allocator that tracks, per thread, the peak
// of the bytes allocated and not yet freed while a measurement is running.

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the allocator also runs while thread-locals are torn down.
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let live = LIVE.with(|live| {
                live.set(live.get() + delta);
                live.get()
            });
            PEAK.with(|peak| peak.set(peak.get().max(live)));
        }
    });
}

// SAFETY: every method forwards to the system allocator with the same
// arguments; the bookkeeping only touches const-initialised thread-locals,
// which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak of the bytes it had
/// allocated (and not yet freed) on this thread at any one time.
fn peak_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    MEASURING.with(|m| m.set(true));
    let result = f();
    MEASURING.with(|m| m.set(false));
    (result, PEAK.with(Cell::get).max(0) as usize)
}

/// Runs `f` outside the current measurement: what the test itself allocates
/// to check a result is not charged to the decoder.
fn unmeasured<R>(f: impl FnOnce() -> R) -> R {
    let was = MEASURING.with(|m| m.replace(false));
    let result = f();
    MEASURING.with(|m| m.set(was));
    result
}

// ---------------------------------------------------------------------------
// Harness helpers.

/// Default case counts, kept small so the suite runs in seconds.
const CASES_GARBAGE: u32 = 256;
const CASES_HUGE_LENGTH: u32 = 128;
const CASES_ROUND_TRIP: u32 = 64;
const CASES_UNITS: u32 = 512;

/// `default` cases, or `PROPTEST_CASES` where it is set.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Regressions are reported in the failure message; no files are
        // written into the source tree.
        failure_persistence: None,
        // A hung case costs `HANG` each time it is shrunk: give up on
        // shrinking after a minute and report what we have.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// How long one case may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(10);

/// Runs one case on a thread of its own and fails it if it does not finish
/// within [`HANG`]: the decoder must never block. A panic in the case is
/// passed on, so proptest still shrinks it.
fn within<F>(f: F) -> Result<(), TestCaseError>
where
    F: FnOnce() -> Result<(), TestCaseError> + Send + 'static,
{
    let (done, wait) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match wait.recv_timeout(HANG) {
        Ok(result) => {
            worker.join().expect("the case finished");
            result
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the case ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => Err(TestCaseError::fail(format!(
            "the case did not finish within {HANG:?}: the decoder hung"
        ))),
    }
}

const MAGIC: [u8; 4] = *b"PYNR";
const HEADER_LEN: usize = 16;
const FLAG_MEMFD: u8 = 1;
const FLAG_LENT: u8 = 2;
/// A lent frame's trailer: buffer length, pid, address, nonce address, nonce.
const LENT_TRAILER: usize = 40;
const ALL_TAGS: [Tag; 5] = [
    Tag::Value,
    Tag::Error,
    Tag::OutOfMemory,
    Tag::SetupFailed,
    Tag::Ready,
];
/// The tags a result frame can carry (Ready is the start-up announcement).
const RESULT_TAGS: [Tag; 4] = [Tag::Value, Tag::Error, Tag::OutOfMemory, Tag::SetupFailed];

fn tag_of(byte: u8) -> Option<Tag> {
    ALL_TAGS.into_iter().find(|tag| *tag as u8 == byte)
}

fn header(tag: u8, flags: u8, reserved: [u8; 2], len: u64) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[tag, flags]);
    bytes.extend_from_slice(&reserved);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes
}

/// A fresh memfd holding `contents`.
fn memfd_with(contents: &[u8]) -> OwnedFd {
    let fd = pynisher::sys::memfd(c"pynisher-proptest").unwrap();
    let mut file = File::from(fd);
    file.write_all(contents).unwrap();
    OwnedFd::from(file)
}

/// A receiver on a fresh pipe and a memfd holding `memfd_contents`, and the
/// pipe's write end, made non-blocking so that writing never hangs the test
/// once the receiver has stopped reading.
fn receiver_with(memfd_contents: &[u8]) -> (Receiver, File) {
    let (read, write) = pynisher::sys::pipe().unwrap();
    pynisher::sys::set_nonblocking(write.as_fd(), true).unwrap();
    let rx = Receiver::new(read, memfd_with(memfd_contents)).unwrap();
    (rx, File::from(write))
}

/// What the decoder must report for `bytes`, as read by a simple model of the
/// frame format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Pending,
    Complete(Tag, Vec<u8>),
    /// A complete lent frame: no one answered it, so taking it fails.
    Lent(Tag),
    Corrupt,
}

/// Whether a lent frame's inline payload says where a buffer lies: room for
/// the trailer, a buffer of at least one byte ending within `isize`, and a
/// pid that can exist.
fn lent_is_valid(payload: &[u8]) -> bool {
    let Some(offset) = payload.len().checked_sub(LENT_TRAILER) else {
        return false;
    };
    let word = |i: usize| u64::from_le_bytes(payload[offset + 8 * i..][..8].try_into().unwrap());
    let (len, pid) = (word(0), word(1));
    len > 0
        && (offset as u64)
            .checked_add(len)
            .is_some_and(|end| end <= isize::MAX as u64)
        && pid > 0
        && pid <= i32::MAX as u64
}

/// The model: zero or one start-up frame, then one result frame.
fn model(bytes: &[u8], memfd: &[u8]) -> (Expect, Option<(u64, u64)>) {
    let mut at = 0;
    let mut ready = None;
    loop {
        let rest = &bytes[at..];
        if rest.len() < HEADER_LEN {
            return (Expect::Pending, ready);
        }
        if rest[..4] != MAGIC {
            return (Expect::Corrupt, ready);
        }
        let Some(tag) = tag_of(rest[4]) else {
            return (Expect::Corrupt, ready);
        };
        let (in_memfd, lent) = match rest[5] {
            0 => (false, false),
            FLAG_MEMFD => (true, false),
            FLAG_LENT => (false, true),
            _ => return (Expect::Corrupt, ready),
        };
        let len = u64::from_le_bytes(rest[8..16].try_into().unwrap());
        let limit = if in_memfd {
            memfd.len() as u64
        } else {
            INLINE_MAX as u64
        };
        if len > limit {
            return (Expect::Corrupt, ready);
        }
        let len = len as usize;
        if !in_memfd && rest.len() < HEADER_LEN + len {
            return (Expect::Pending, ready);
        }
        if lent {
            let valid = lent_is_valid(&rest[HEADER_LEN..HEADER_LEN + len]);
            return match (valid, tag) {
                (true, tag) if tag != Tag::Ready => (Expect::Lent(tag), ready),
                _ => (Expect::Corrupt, ready),
            };
        }
        if tag != Tag::Ready {
            let payload = if in_memfd {
                memfd[..len].to_vec()
            } else {
                rest[HEADER_LEN..HEADER_LEN + len].to_vec()
            };
            return (Expect::Complete(tag, payload), ready);
        }
        if in_memfd || len != 16 || ready.is_some() {
            return (Expect::Corrupt, ready);
        }
        let word = |from: usize| u64::from_le_bytes(rest[from..from + 8].try_into().unwrap());
        ready = Some((word(HEADER_LEN), word(HEADER_LEN + 8)));
        at += HEADER_LEN + 16;
    }
}

/// Whether the receiver's state is what the model expects (the payload is
/// compared separately, once the frame is taken).
fn same_state(state: &Received, expect: &Expect) -> bool {
    match (state, expect) {
        (Received::Pending, Expect::Pending) => true,
        (Received::Complete(tag), Expect::Complete(want, _) | Expect::Lent(want)) => tag == want,
        (Received::Corrupt(why), Expect::Corrupt) => why.contains("garbage"),
        _ => false,
    }
}

/// Writes `bytes` into the pipe in chunks of the given sizes (cycling),
/// pumping the receiver after each write, as the supervisor does while it
/// waits. After every pump the state must be what the model says of the bytes
/// written so far. Returns how many bytes went into the pipe: once the
/// receiver is done it stops reading, and writing stops when the pipe is full.
fn feed_in_chunks(
    rx: &mut Receiver,
    pipe: &mut File,
    bytes: &[u8],
    chunks: &[usize],
    memfd: &[u8],
) -> Result<usize, TestCaseError> {
    let mut written = 0;
    let mut sizes = chunks.iter().copied().cycle();
    while written < bytes.len() {
        let size = sizes.next().unwrap_or(bytes.len()).max(1);
        let end = (written + size).min(bytes.len());
        match pipe.write(&bytes[written..end]) {
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                prop_assert!(rx.is_done(), "the pipe filled up while the receiver reads");
                break;
            }
            Err(err) => {
                return Err(unmeasured(|| {
                    TestCaseError::fail(format!("writing the pipe: {err}"))
                }))
            }
        }
        rx.pump();
        unmeasured(|| {
            let (expect, _) = model(&bytes[..written], memfd);
            prop_assert!(
                same_state(rx.state(), &expect),
                "after {written} bytes: {:?}, the model says {expect:?}",
                rx.state()
            );
            Ok(())
        })?;
    }
    Ok(written)
}

// ---------------------------------------------------------------------------
// Strategies for channel bytes.

/// One piece of a byte string that looks like frames to varying degrees.
fn piece(memfd_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let magic = prop_oneof![
        8 => Just(MAGIC),
        1 => any::<[u8; 4]>(),
        1 => (0..4usize, any::<u8>()).prop_map(|(at, byte)| {
            let mut m = MAGIC;
            m[at] = byte;
            m
        }),
    ];
    let tag = prop_oneof![6 => 0u8..=6, 1 => any::<u8>()];
    let flags = prop_oneof![
        4 => Just(0u8),
        4 => Just(FLAG_MEMFD),
        1 => Just(FLAG_LENT),
        1 => any::<u8>()
    ];
    let len = prop_oneof![
        4 => 0u64..=64,
        2 => Just(16u64),
        1 => Just(INLINE_MAX as u64),
        1 => Just(INLINE_MAX as u64 + 1),
        1 => (INLINE_MAX as u64 - 2)..(INLINE_MAX as u64 + 3),
        1 => Just(memfd_len as u64),
        1 => Just(memfd_len as u64 + 1),
        1 => Just(1u64 << 40),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ];
    let headers = (magic, tag, flags, any::<[u8; 2]>(), len).prop_map(
        |(magic, tag, flags, reserved, len)| {
            let mut bytes = header(tag, flags, reserved, len);
            bytes[..4].copy_from_slice(&magic);
            bytes
        },
    );
    // A whole frame: a header whose inline payload really follows.
    let frame = (
        prop_oneof![4 => 1u8..=5, 1 => any::<u8>()],
        prop_oneof![8 => 0usize..200, 1 => Just(16usize), 1 => (INLINE_MAX - 3)..=INLINE_MAX],
        any::<u8>(),
    )
        .prop_map(|(tag, len, fill)| {
            let mut bytes = header(tag, 0, [0, 0], len as u64);
            bytes.extend((0..len).map(|i| fill.wrapping_add(i as u8)));
            bytes
        });
    let ready = (any::<u64>(), any::<u64>()).prop_map(|(user, system)| {
        let mut bytes = header(Tag::Ready as u8, 0, [0, 0], 16);
        bytes.extend_from_slice(&user.to_le_bytes());
        bytes.extend_from_slice(&system.to_le_bytes());
        bytes
    });
    // A frame whose payload is in the memfd, announcing a length it holds.
    let memfd_frame = (1u8..=4, 0..=memfd_len, any::<[u8; 2]>())
        .prop_map(|(tag, len, reserved)| header(tag, FLAG_MEMFD, reserved, len as u64));
    // A lent frame: a head, then a trailer whose words are sometimes what a
    // sender writes and sometimes anything.
    let word = prop_oneof![3 => 1u64..(1 << 31), 1 => any::<u64>(), 1 => Just(0u64)];
    let lent_frame =
        (1u8..=5, 0usize..100, prop::collection::vec(word, 5)).prop_map(|(tag, head, words)| {
            let mut bytes = header(tag, FLAG_LENT, [0, 0], (head + LENT_TRAILER) as u64);
            bytes.extend(std::iter::repeat_n(7u8, head));
            for word in words {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
            bytes
        });
    prop_oneof![
        3 => headers,
        3 => frame,
        2 => memfd_frame,
        2 => lent_frame,
        2 => ready,
        2 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Channel contents: frame-like pieces, maybe cut short, or plain noise; with
/// the memfd contents the frames may refer to.
fn channel_bytes() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let memfd = prop_oneof![
        2 => Just(Vec::new()),
        2 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (0usize..200_000, any::<u8>()).prop_map(|(len, fill)| vec![fill; len]),
    ];
    memfd.prop_flat_map(|memfd| {
        let framed = (
            prop::collection::vec(piece(memfd.len()), 0..6),
            any::<prop::sample::Index>(),
            any::<bool>(),
        )
            .prop_map(|(pieces, cut, truncate)| {
                let mut bytes = pieces.concat();
                if truncate && !bytes.is_empty() {
                    bytes.truncate(cut.index(bytes.len()));
                }
                bytes
            });
        let bytes = prop_oneof![
            4 => framed,
            1 => prop::collection::vec(any::<u8>(), 0..2048),
        ];
        (bytes, Just(memfd))
    })
}

fn chunkings() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![
            4 => 1usize..32,
            2 => 1usize..4096,
            1 => 4096usize..100_000,
        ],
        1..8,
    )
}

/// Payload parts for `Sender::send`: their total is sometimes just around
/// [`INLINE_MAX`] and sometimes well above it, so that the memfd is used.
fn payload_parts() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let total = prop_oneof![
        4 => 0usize..2000,
        1 => 2000usize..INLINE_MAX - 2,
        2 => (INLINE_MAX - 2)..=(INLINE_MAX + 2),
        2 => (INLINE_MAX + 3)..400_000,
    ];
    (
        total,
        any::<u8>(),
        prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    )
        .prop_map(|(total, seed, cuts)| {
            let bytes: Vec<u8> = (0..total)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
                .collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(total + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut from = 0;
            for cut in cuts {
                parts.push(bytes[from..cut].to_vec());
                from = cut;
            }
            parts.push(bytes[from..].to_vec());
            parts
        })
}

fn result_tag() -> impl Strategy<Value = Tag> {
    prop::sample::select(RESULT_TAGS.to_vec())
}

/// Checks a taken payload against `want`: its length, windows read with
/// `read_at` (and that reads past the end fail), then `into_vec`.
fn check_payload(
    payload: Payload,
    want: &[u8],
    windows: &[(prop::sample::Index, usize)],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(payload.len(), want.len());
    for (start, len) in windows {
        let start = start.index(want.len() + 1);
        let len = (*len).min(want.len() - start);
        let mut buf = vec![0u8; len];
        payload.read_at(start, &mut buf).unwrap();
        prop_assert!(buf == want[start..start + len], "read_at({start}, {len})");
        let mut past = vec![0u8; want.len() - start + 1];
        prop_assert!(payload.read_at(start, &mut past).is_err());
    }
    let bytes = payload.into_vec().unwrap();
    prop_assert!(bytes == want, "payload differs ({} bytes)", want.len());
    Ok(())
}

// ---------------------------------------------------------------------------
// The decoder.

proptest! {
    #![proptest_config(config(CASES_GARBAGE))]

    /// Any bytes, in any chunking: no panic, no hang, the state the model
    /// predicts after every chunk, a payload that matches, and no allocation
    /// beyond what the bytes themselves justify.
    #[test]
    fn garbage_never_crashes_hangs_or_is_trusted(
        (bytes, memfd) in channel_bytes(),
        chunks in chunkings(),
    ) {
        within(move || {
            let (mut rx, mut pipe) = receiver_with(&memfd);
            let (written, peak) = peak_allocation(|| {
                feed_in_chunks(&mut rx, &mut pipe, &bytes, &chunks, &memfd)
            });
            let written = written?;
            // The buffer may double as it grows, and a corrupt frame is
            // described in a short message; nothing is sized by a header.
            prop_assert!(
                peak <= 2 * written + 1024,
                "{peak} bytes allocated for {written} bytes of input"
            );
            drop(pipe);
            rx.pump();
            prop_assert!(rx.is_done());
            let (expect, ready) = model(&bytes[..written], &memfd);
            prop_assert!(same_state(rx.state(), &expect), "{:?} vs {expect:?}", rx.state());
            let got_ready = rx.ready().map(|r| (r.startup_user, r.startup_system));
            let want_ready =
                ready.map(|(u, s)| (Duration::from_micros(u), Duration::from_micros(s)));
            prop_assert_eq!(got_ready, want_ready);
            if let Expect::Lent(_) = expect {
                prop_assert!(rx.take_frame().is_err(), "an unanswered lent frame");
                return Ok(());
            }
            let (frame, peak) = peak_allocation(|| rx.take_frame().unwrap());
            match expect {
                Expect::Complete(tag, payload) => {
                    let frame = frame.expect("a complete frame");
                    prop_assert_eq!(frame.tag, tag);
                    if matches!(frame.payload, Payload::Inline(_)) {
                        prop_assert!(peak <= payload.len() + 64);
                    }
                    check_payload(frame.payload, &payload, &[])?;
                }
                _ => prop_assert!(frame.is_none()),
            }
            // Pumping a finished receiver again changes nothing.
            let state = rx.state().clone();
            rx.pump();
            prop_assert_eq!(rx.state(), &state);
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(config(CASES_HUGE_LENGTH))]

    /// A header that claims more bytes than can exist (2^40 here, or any
    /// length past the inline maximum or the memfd's size) is corrupt at
    /// once, whatever follows it, and allocates nothing near that size.
    #[test]
    fn huge_lengths_are_corrupt_not_allocated(
        tag in 1u8..=5,
        in_memfd in any::<bool>(),
        len in prop_oneof![
            4 => Just(1u64 << 40),
            1 => (1u64 << 32)..=u64::MAX,
            1 => (INLINE_MAX as u64 + 1)..(1u64 << 32),
        ],
        memfd_len in 0usize..4096,
        ready_first in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..512),
        chunks in chunkings(),
    ) {
        within(move || {
            let memfd = vec![7u8; memfd_len];
            let flags = if in_memfd { FLAG_MEMFD } else { 0 };
            let mut bytes = Vec::new();
            if ready_first {
                bytes.extend(header(Tag::Ready as u8, 0, [0, 0], 16));
                bytes.extend([0u8; 16]);
            }
            bytes.extend(header(tag, flags, [0, 0], len));
            bytes.extend(&tail);
            let (mut rx, mut pipe) = receiver_with(&memfd);
            let (written, peak) = peak_allocation(|| {
                feed_in_chunks(&mut rx, &mut pipe, &bytes, &chunks, &memfd)
            });
            written?;
            prop_assert!(peak <= 2 * bytes.len() + 1024, "{peak} bytes allocated");
            drop(pipe);
            rx.pump();
            match rx.state() {
                Received::Corrupt(why) => prop_assert!(why.contains("garbage"), "{why}"),
                other => prop_assert!(false, "a {len}-byte claim gave {other:?}"),
            }
            prop_assert!(rx.take_frame().unwrap().is_none());
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(config(CASES_ROUND_TRIP))]

    /// What `Sender::send` writes, with any tag and any split of the payload
    /// into parts, inline or through the memfd, arrives exactly, after an
    /// optional start-up frame.
    #[test]
    fn sent_frames_round_trip(
        tag in result_tag(),
        parts in payload_parts(),
        ready in proptest::option::of((any::<u32>(), any::<u32>())),
        windows in prop::collection::vec((any::<prop::sample::Index>(), 0usize..100_000), 0..4),
    ) {
        within(move || {
            let want = parts.concat();
            let (mut rx, write, memfd) = pair().unwrap();
            let mut tx = Sender::new(write.as_raw_fd(), memfd.as_raw_fd());
            if let Some((user, system)) = ready {
                tx.send_ready(
                    Duration::from_micros(user.into()),
                    Duration::from_micros(system.into()),
                )
                .unwrap();
                prop_assert!(!tx.has_sent());
                rx.pump();
                prop_assert_eq!(rx.state(), &Received::Pending);
            }
            // The child writes while the supervisor reads, as in a real call:
            // an inline frame in several parts can need more room than an
            // idle pipe has, since each write may start a new pipe page.
            let child = std::thread::spawn(move || {
                let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                let sent = tx.send(tag, &refs);
                drop(write);
                drop(memfd);
                sent.map(|()| tx.has_sent())
            });
            while !rx.is_done() {
                rx.pump();
                std::thread::sleep(Duration::from_micros(100));
            }
            prop_assert!(child.join().unwrap().unwrap(), "the frame was sent");
            prop_assert_eq!(rx.state(), &Received::Complete(tag));
            let got_ready = rx.ready().map(|r| (r.startup_user, r.startup_system));
            let want_ready = ready.map(|(u, s)| {
                (Duration::from_micros(u.into()), Duration::from_micros(s.into()))
            });
            prop_assert_eq!(got_ready, want_ready);
            let frame = rx.take_frame().unwrap().expect("a frame");
            prop_assert_eq!(frame.tag, tag);
            prop_assert_eq!(
                matches!(frame.payload, Payload::Memfd { .. }),
                want.len() > INLINE_MAX
            );
            check_payload(frame.payload, &want, &windows)
        })?;
    }

    /// The bytes `Sender::send` produces, fed in any chunking and followed by
    /// garbage, still give exactly that frame: nothing after a complete frame
    /// is read or trusted.
    #[test]
    fn a_valid_frame_followed_by_garbage_round_trips(
        tag in result_tag(),
        parts in payload_parts(),
        garbage in prop::collection::vec(any::<u8>(), 0..4096),
        chunks in chunkings(),
    ) {
        within(move || {
            let want = parts.concat();
            // Capture what the sender writes.
            let (capture_read, capture_write) = pynisher::sys::pipe().unwrap();
            let memfd = pynisher::sys::memfd(c"pynisher-proptest").unwrap();
            let reader = std::thread::spawn(move || {
                let mut bytes = Vec::new();
                File::from(capture_read).read_to_end(&mut bytes).map(|_| bytes)
            });
            let mut tx = Sender::new(capture_write.as_raw_fd(), memfd.as_raw_fd());
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            tx.send(tag, &refs).unwrap();
            drop(capture_write);
            let frame_bytes = reader.join().unwrap().unwrap();
            prop_assert_eq!(
                frame_bytes.len(),
                HEADER_LEN + if want.len() > INLINE_MAX { 0 } else { want.len() }
            );
            let mut bytes = frame_bytes;
            bytes.extend(&garbage);

            let (read, write) = pynisher::sys::pipe().unwrap();
            pynisher::sys::set_nonblocking(write.as_fd(), true).unwrap();
            let mut rx = Receiver::new(read, memfd).unwrap();
            let mut pipe = File::from(write);
            let mut written = 0;
            let mut sizes = chunks.iter().copied().cycle();
            while written < bytes.len() && !rx.is_done() {
                let end = (written + sizes.next().unwrap_or(1)).min(bytes.len());
                written += pipe.write(&bytes[written..end]).unwrap();
                rx.pump();
            }
            drop(pipe);
            rx.pump();
            prop_assert_eq!(rx.state(), &Received::Complete(tag));
            let frame = rx.take_frame().unwrap().expect("a frame");
            prop_assert_eq!(frame.tag, tag);
            check_payload(frame.payload, &want, &[])
        })?;
    }
}

// ---------------------------------------------------------------------------
// Unit parsing.

const TIME_UNITS: &[(&[&str], f64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 1e-3),
    (&["", "s", "sec", "secs", "second", "seconds"], 1.0),
    (&["m", "min", "mins", "minute", "minutes"], 60.0),
    (&["h", "hr", "hrs", "hour", "hours"], 3600.0),
];

const MEMORY_UNITS: &[(&[&str], u32)] = &[
    (&["", "b", "byte", "bytes"], 0),
    (&["k", "kb", "kib"], 10),
    (&["m", "mb", "mib"], 20),
    (&["g", "gb", "gib"], 30),
    (&["t", "tb", "tib"], 40),
];

fn names<T: Copy>(table: &'static [(&'static [&'static str], T)]) -> Vec<(&'static str, T)> {
    table
        .iter()
        .flat_map(|(names, factor)| names.iter().map(move |name| (*name, *factor)))
        .collect()
}

/// A unit from `table` in a random mix of upper and lower case, with its
/// factor.
fn units<T: Copy + std::fmt::Debug + 'static>(
    table: &'static [(&'static [&'static str], T)],
) -> impl Strategy<Value = (String, T)> {
    (
        prop::sample::select(names(table)),
        prop::collection::vec(any::<bool>(), 16),
    )
        .prop_map(|((name, factor), upper)| {
            let name = name
                .chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect();
            (name, factor)
        })
}

/// Positive numbers of every size, from tiny fractions to beyond any limit.
fn positive_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (1u32..100_000).prop_map(f64::from),
        4 => 1e-3..1e4f64,
        1 => 1e-12..1e-3f64,
        1 => proptest::num::f64::POSITIVE | proptest::num::f64::NORMAL,
    ]
}

/// How a number is written: plain, or in exponent notation.
#[derive(Debug, Clone, Copy)]
enum Notation {
    Plain,
    LowerExp,
    UpperExp,
}

fn notation() -> impl Strategy<Value = Notation> {
    prop_oneof![
        Just(Notation::Plain),
        Just(Notation::LowerExp),
        Just(Notation::UpperExp)
    ]
}

/// Writes `value` with `unit`, in the given notation and with whitespace
/// around and between.
fn write_number(value: f64, notation: Notation, unit: &str, spaces: (u8, u8, u8)) -> String {
    let number = match notation {
        Notation::Plain => format!("{value}"),
        Notation::LowerExp => format!("{value:e}"),
        Notation::UpperExp => format!("{value:E}"),
    };
    let pad = |n: u8| " ".repeat(n.into());
    format!(
        "{}{number}{}{unit}{}",
        pad(spaces.0),
        pad(spaces.1),
        pad(spaces.2)
    )
}

fn spaces() -> impl Strategy<Value = (u8, u8, u8)> {
    (0u8..3, 0u8..3, 0u8..3)
}

/// Strings that are mostly nonsense, some of them close to valid.
fn garbage_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        3 => "[ \t]{0,2}[-+]?[0-9.eE+-]{0,8}[ \t]{0,2}[a-zA-Z]{0,8}[ \t]{0,2}",
        1 => "[0-9]{0,4}[.]?[0-9]{0,4}(e[-+]?[0-9]{1,3})?[ ]?(ms|s|m|h|kb|mb|gb|tb|kib|b|min|x|µs|\u{212a}b)?",
        1 => "[0-9eE.+-]{0,24}",
    ]
}

fn argument_name() -> impl Strategy<Value = String> {
    "[a-z_-]{1,16}"
}

proptest! {
    #![proptest_config(config(CASES_UNITS))]

    /// `parse_duration` of a written number and unit gives exactly what
    /// `duration_from_number` gives for that number and unit, error or not.
    #[test]
    fn durations_parse_like_their_number_and_unit(
        value in positive_number(),
        notation in notation(),
        (unit, factor) in units(TIME_UNITS),
        spaces in spaces(),
        name in argument_name(),
    ) {
        let text = write_number(value, notation, &unit, spaces);
        let parsed = parse_duration(&name, &text);
        let direct = duration_from_number(&name, value, &unit);
        match (&parsed, &direct) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a, b, "{:?}", text);
                let seconds = value * factor;
                let err = (a.as_secs_f64() - seconds).abs();
                prop_assert!(err <= 1e-9 + seconds * 1e-12, "{text:?}: {a:?} vs {seconds} s");
            }
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.to_string(), b.to_string());
                prop_assert_eq!(a.argument(), Some(name.as_str()));
            }
            _ => prop_assert!(false, "{text:?}: {parsed:?} but {direct:?}"),
        }
    }

    /// The same for sizes, and whole numbers of a unit are exact multiples
    /// of 1024.
    #[test]
    fn sizes_parse_like_their_number_and_unit(
        value in positive_number(),
        whole in 1u64..1 << 20,
        notation in notation(),
        (unit, shift) in units(MEMORY_UNITS),
        spaces in spaces(),
        name in argument_name(),
    ) {
        let text = write_number(value, notation, &unit, spaces);
        let parsed = parse_bytes(&name, &text);
        let direct = bytes_from_number(&name, value, &unit);
        match (&parsed, &direct) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{:?}", text),
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.to_string(), b.to_string());
                prop_assert_eq!(a.argument(), Some(name.as_str()));
            }
            _ => prop_assert!(false, "{text:?}: {parsed:?} but {direct:?}"),
        }
        let text = format!("{whole}{unit}");
        prop_assert_eq!(parse_bytes(&name, &text).unwrap(), whole << shift, "{:?}", text);
        prop_assert_eq!(
            bytes_from_number(&name, whole as f64, &unit).unwrap(),
            whole << shift
        );
    }

    /// Any string: no panic; either a positive duration or an error that
    /// names the argument.
    #[test]
    fn garbage_durations_are_positive_or_name_the_argument(
        text in garbage_text(),
        name in argument_name(),
    ) {
        match parse_duration(&name, &text) {
            Ok(duration) => prop_assert!(duration > Duration::ZERO, "{text:?} parsed to zero"),
            Err(err) => {
                prop_assert_eq!(err.argument(), Some(name.as_str()), "{:?}", text);
                let prefix = format!("{name}: ");
                prop_assert!(err.to_string().starts_with(&prefix), "{err}");
            }
        }
    }

    /// Any string: no panic; either a positive size or an error that names
    /// the argument.
    #[test]
    fn garbage_sizes_are_positive_or_name_the_argument(
        text in garbage_text(),
        name in argument_name(),
    ) {
        match parse_bytes(&name, &text) {
            Ok(bytes) => prop_assert!(bytes >= 1, "{text:?} parsed to {bytes}"),
            Err(err) => {
                prop_assert_eq!(err.argument(), Some(name.as_str()), "{:?}", text);
                let prefix = format!("{name}: ");
                prop_assert!(err.to_string().starts_with(&prefix), "{err}");
            }
        }
    }
}

/// A positive duration below one nanosecond is refused, naming the argument,
/// rather than parsing to zero.
#[test]
fn a_duration_below_one_nanosecond_is_refused() {
    for text in ["1e-10", "0.0000000001s", "1e-7ms"] {
        let err = parse_duration("wall_time", text).unwrap_err();
        assert_eq!(err.argument(), Some("wall_time"), "{text}");
        assert!(err.to_string().contains("nanosecond"), "{err}");
    }
}
