//! Shared pieces of the fuzz targets: a scripted source, a fault-injecting spill storage, and
//! the model that every result is compared with.

use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use arbitrary::Arbitrary;
use sparsebuf::{Builder, StreamBuffer};

/// The message of the scripted source's panic; the panic hook lets only this one unwind.
pub const SCRIPTED_PANIC: &str = "sparsebuf-fuzz scripted source panic";

/// libFuzzer's panic hook aborts the process. A panicking source is a case sparsebuf must
/// survive (it catches the panic), so this hook lets the scripted panic unwind and still aborts
/// on every other panic, which is a real crash.
pub fn allow_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scripted = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| *m == SCRIPTED_PANIC);
            if !scripted {
                fuzzer_hook(info);
            }
        }));
    });
}

/// The tests' synthetic streams, shared by path.
#[path = "../../tests/common/generator.rs"]
mod generator;
pub use generator::{byte_at, mix, Generated};

/// The model's `location` answers, shared by path with `tests/model.rs`.
#[path = "../../tests/common/location.rs"]
mod location;
use location::expected_location;

/// The live-stream window model, shared by path with `tests/window.rs`.
#[path = "../../tests/common/window_model.rs"]
pub mod window_model;

/// How the scripted source misbehaves at a position.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Returns an error (sticky for the buffer).
    Fail,
    /// Returns `Interrupted` once (retried by the buffer).
    Interrupt,
    /// Panics (caught by the buffer).
    Panic,
}

/// A forward-only source over the synthetic stream, reading at most the next chunk size per
/// call (chunk sizes cycle), misbehaving once it reaches `at`.
pub struct Scripted {
    pub seed: u64,
    pub len: u64,
    pub pos: u64,
    pub chunks: Vec<u32>,
    pub next_chunk: usize,
    pub trouble: Option<(u64, Misbehave)>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((at, what)) = self.trouble {
            if self.pos >= at {
                match what {
                    Misbehave::Fail => {
                        return Err(io::Error::new(io::ErrorKind::ConnectionReset, "scripted"))
                    }
                    Misbehave::Panic => std::panic::panic_any(SCRIPTED_PANIC),
                    Misbehave::Interrupt => {
                        self.trouble = None;
                        return Err(io::ErrorKind::Interrupted.into());
                    }
                }
            }
        }
        let chunk = self
            .chunks
            .get(self.next_chunk)
            .copied()
            .unwrap_or(u32::MAX)
            .max(1);
        self.next_chunk = (self.next_chunk + 1) % self.chunks.len().max(1);
        let mut end = self.len.min(self.pos + chunk as u64);
        if let Some((at, _)) = self.trouble {
            if self.pos < at {
                end = end.min(at);
            }
        }
        let n = ((end - self.pos) as usize).min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The fault-injecting spill storage of the integration tests, shared by path.
#[path = "../../tests/common/faulty.rs"]
mod faulty;
pub use faulty::{Fault, Faulty};

/// A [`Fault`] the fuzzer can build, with small counts so faults actually happen.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum FuzzFault {
    None,
    /// The `n`th write fails (and every later one, if persistent).
    FailNthWrite {
        n: u8,
        persistent: bool,
    },
    /// Writes fail with ENOSPC once `kib` KiB are stored; transient faults free the space.
    NoSpaceAfter {
        kib: u8,
        persistent: bool,
    },
}

impl From<FuzzFault> for Fault {
    fn from(f: FuzzFault) -> Fault {
        match f {
            FuzzFault::None => Fault::None,
            FuzzFault::FailNthWrite { n, persistent } => Fault::FailNthWrite {
                n: n as usize,
                persistent,
            },
            FuzzFault::NoSpaceAfter { kib, persistent } => Fault::NoSpaceAfter {
                bytes: (kib as u64) << 10,
                persistent,
            },
        }
    }
}

/// An offset: mostly near the stream, sometimes at the edge of `u64`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Offset {
    Near(u32),
    Edge(u16),
}

impl Offset {
    pub fn resolve(self, len: u64) -> u64 {
        match self {
            Offset::Near(x) => x as u64 % (len + 70_000),
            Offset::Edge(x) => u64::MAX - x as u64,
        }
    }
}

/// One operation of the `ops` and `faults` targets.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    ReadAt { offset: Offset, len: u16 },
    ReadExactAt { offset: Offset, len: u16 },
    ReadRange { start: Offset, end: Offset },
    Seek { to: SeekTo },
    CursorRead { len: u16 },
    FillBuf { consume: u16 },
    Locate { offset: Offset, len: u32 },
    FillToEnd,
    FailSpillReads(bool),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SeekTo {
    Start(Offset),
    Current(i32),
    End(i32),
}

/// The configuration and source of one `ops` run.
#[derive(Arbitrary, Debug)]
pub struct Setup {
    /// Segment size is `1 << (8 + segment_shift % 8)`: 256 B to 32 KiB.
    pub segment_shift: u8,
    /// Budget in segments, `0..=7`.
    pub budget_segments: u8,
    /// Declared length relative to the real one: `None`, or `len + delta` (clamped at 0).
    pub declared_delta: Option<i8>,
    pub len: u32,
    pub seed: u64,
    pub chunks: Vec<u32>,
    pub trouble: Option<(u32, Misbehave)>,
}

/// What the source can deliver, as the model sees it.
pub struct Model {
    pub seed: u64,
    /// Bytes the source holds.
    pub actual: u64,
    /// The declared length, if any.
    pub declared: Option<u64>,
    /// Where the source fails for good (an error or a panic); never past `actual`.
    pub fails_at: Option<u64>,
    pub kind: io::ErrorKind,
}

/// The model's verdict on a read of `[offset, end)`.
#[derive(Debug, PartialEq, Eq)]
pub enum Expect {
    /// These bytes (`[offset, offset + n)`), possibly fewer than asked: end of stream.
    Bytes(u64),
    /// An error.
    Error,
}

impl Model {
    /// Bytes the source delivers before failing or ending.
    fn deliverable(&self) -> u64 {
        self.fails_at.map_or(self.actual, |at| at.min(self.actual))
    }

    /// `read_at(offset, end - offset)`, `end` not overflowing.
    pub fn read(&self, offset: u64, end: u64) -> Expect {
        let end = self.declared.map_or(end, |d| end.min(d));
        if offset >= end {
            return Expect::Bytes(0);
        }
        if end <= self.deliverable() {
            return Expect::Bytes(end - offset);
        }
        // The read needs bytes the source does not deliver.
        if self.fails_at.is_some() || self.declared.is_some_and(|d| d > self.actual) {
            return Expect::Error;
        }
        Expect::Bytes(self.actual.saturating_sub(offset).min(end - offset))
    }

    /// A cursor read at `pos` of up to `len` bytes: the range of counts it may return (at least
    /// one byte if any exists), or `None` if it must fail.
    pub fn cursor(&self, pos: u64, len: u64) -> Option<(u64, u64)> {
        if len == 0 {
            return Some((0, 0));
        }
        match self.read(pos, pos.saturating_add(1)) {
            Expect::Error => None,
            Expect::Bytes(0) => Some((0, 0)),
            Expect::Bytes(_) => {
                let limit = self
                    .declared
                    .map_or(self.deliverable(), |d| d.min(self.deliverable()));
                Some((1, (limit - pos).min(len)))
            }
        }
    }

    pub fn fill_to_end(&self) -> Option<u64> {
        let clean = self.fails_at.is_none_or(|at| at > self.actual);
        (clean && self.declared.is_none_or(|d| d == self.actual)).then_some(self.actual)
    }

    pub fn check(&self, offset: u64, got: &[u8]) {
        for (i, &b) in got.iter().enumerate() {
            let pos = offset + i as u64;
            assert_eq!(b, byte_at(self.seed, pos), "wrong byte at {pos}");
        }
    }
}

/// Builds the buffer and model of a setup, with `storage` if given.
pub fn build(s: &Setup, storage: Option<Arc<Faulty>>) -> (StreamBuffer, Model, u64) {
    let segment = 1u64 << (8 + s.segment_shift % 8);
    let actual = (s.len % 300_000) as u64;
    let declared = s
        .declared_delta
        .map(|d| (actual as i64 + d as i64).max(0) as u64);
    let trouble = s.trouble.map(|(at, what)| (at as u64 % (actual + 2), what));
    // A failure scheduled past the end never happens: the source reports its end first.
    let fails_at =
        trouble.and_then(|(at, what)| (what != Misbehave::Interrupt && at <= actual).then_some(at));
    let kind = match trouble {
        Some((_, Misbehave::Panic)) => io::ErrorKind::Other,
        _ => io::ErrorKind::ConnectionReset,
    };
    let source = Scripted {
        seed: s.seed,
        len: actual,
        pos: 0,
        chunks: s.chunks.iter().take(16).map(|c| c % 100_000).collect(),
        next_chunk: 0,
        trouble,
    };
    let mut b: Builder = StreamBuffer::builder()
        .segment_size(segment as usize)
        .memory_budget((s.budget_segments % 8) as usize * segment as usize);
    if let Some(d) = declared {
        b = b.len(d);
    }
    if let Some(storage) = storage {
        b = b.spill_storage(storage);
    }
    let buf = b.build(source).expect("valid settings");
    let model = Model {
        seed: s.seed,
        actual,
        declared,
        fails_at,
        kind,
    };
    (buf, model, segment)
}

/// Runs `ops` against the buffer and the model; panics on any disagreement.
pub fn run(buf: &StreamBuffer, m: &Model, segment: u64, ops: &[Op], storage: Option<&Faulty>) {
    let mut cursor = buf.reader();
    let mut pos = 0u64;
    let mut spill_reads_fail = false;
    for op in ops.iter().take(64) {
        match *op {
            Op::ReadAt { offset, len } | Op::ReadExactAt { offset, len } => {
                let exact = matches!(op, Op::ReadExactAt { .. });
                let offset = offset.resolve(m.actual);
                let mut dst = vec![0u8; len as usize];
                let result = if exact {
                    buf.read_exact_at(offset, &mut dst).map(|()| dst.len())
                } else {
                    buf.read_at(offset, &mut dst)
                };
                let Some(end) = offset.checked_add(len as u64) else {
                    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
                    continue;
                };
                match (m.read(offset, end), result) {
                    (Expect::Bytes(n), Ok(got)) => {
                        assert_eq!(got as u64, n, "read_at({offset}, {len})");
                        m.check(offset, &dst[..got]);
                    }
                    // While spill reads fail on purpose, any read may fail.
                    (_, Err(_)) if spill_reads_fail => {}
                    (Expect::Bytes(n), Err(e)) if exact && n < len as u64 => {
                        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof)
                    }
                    (Expect::Error, Err(e)) => check_error(m, &e),
                    (want, got) => panic!("read_at({offset}, {len}): model {want:?}, got {got:?}"),
                }
            }
            Op::ReadRange { start, end } => {
                let (start, end) = (start.resolve(m.actual), end.resolve(m.actual));
                match (start <= end, buf.read_range(start..end)) {
                    (false, Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
                    (true, Ok(v)) => {
                        assert_eq!(m.read(start, end), Expect::Bytes(v.len() as u64));
                        m.check(start, &v);
                    }
                    (true, Err(e)) if !spill_reads_fail => {
                        assert_eq!(m.read(start, end), Expect::Error, "{e}");
                        check_error(m, &e);
                    }
                    (true, Err(_)) => {}
                    (false, Ok(_)) => panic!("reversed range {start}..{end} accepted"),
                }
            }
            Op::Seek { to } => {
                let (from, target) = match to {
                    SeekTo::Start(o) => {
                        let o = o.resolve(m.actual);
                        (SeekFrom::Start(o), Some(o))
                    }
                    SeekTo::Current(d) => (
                        SeekFrom::Current(d as i64),
                        pos.checked_add_signed(d as i64),
                    ),
                    SeekTo::End(d) => {
                        let end = m.declared.or(m.fill_to_end());
                        let got = cursor.seek(SeekFrom::End(d as i64));
                        match end {
                            Some(len) => match len.checked_add_signed(d as i64) {
                                Some(t) => {
                                    assert_eq!(got.unwrap(), t);
                                    pos = t;
                                }
                                None => {
                                    assert_eq!(got.unwrap_err().kind(), io::ErrorKind::InvalidInput)
                                }
                            },
                            None => assert!(got.is_err() || spill_reads_fail),
                        }
                        continue;
                    }
                };
                match (cursor.seek(from), target) {
                    (Ok(p), Some(t)) => {
                        assert_eq!(p, t);
                        pos = t;
                    }
                    (Err(e), None) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
                    (got, want) => panic!("seek {from:?} from {pos}: {got:?}, model {want:?}"),
                }
            }
            Op::CursorRead { len } => {
                let mut dst = vec![0u8; len as usize];
                match (m.cursor(pos, len as u64), cursor.read(&mut dst)) {
                    (Some((min, max)), Ok(n)) => {
                        assert!(
                            (min..=max).contains(&(n as u64)),
                            "cursor read {n} at {pos}: {min}..={max}"
                        );
                        m.check(pos, &dst[..n]);
                        pos += n as u64;
                    }
                    (None, Err(e)) => check_error(m, &e),
                    (_, Err(_)) if spill_reads_fail => {}
                    (want, got) => panic!("cursor read at {pos}: model {want:?}, got {got:?}"),
                }
            }
            Op::FillBuf { consume } => match (m.cursor(pos, u64::MAX), cursor.fill_buf()) {
                (Some((min, _)), Ok(got)) => {
                    assert!(got.len() as u64 >= min);
                    m.check(pos, got);
                    let n = (consume as usize).min(got.len());
                    cursor.consume(n);
                    pos += n as u64;
                }
                (None, Err(e)) => check_error(m, &e),
                (_, Err(_)) if spill_reads_fail => {}
                (want, got) => panic!("fill_buf at {pos}: model {want:?}, got {got:?}"),
            },
            Op::Locate { offset, len } => {
                let offset = offset.resolve(m.actual);
                let want = expected_location(buf.stats().filled_bytes, offset, len as u64);
                assert_eq!(buf.location(offset, len as u64), want);
            }
            Op::FillToEnd => match (m.fill_to_end(), buf.fill_to_end()) {
                (Some(n), Ok(got)) => assert_eq!(n, got),
                (None, Err(_)) => {}
                (want, got) => panic!("fill_to_end: model {want:?}, got {got:?}"),
            },
            Op::FailSpillReads(on) => {
                if let Some(s) = storage {
                    s.fail_reads.store(on, Ordering::SeqCst);
                    spill_reads_fail = on;
                }
            }
        }
        assert_eq!(cursor.position(), pos);
        let st = buf.stats();
        assert!(st.filled_bytes <= m.actual);
        assert!(st.source_bytes >= st.filled_bytes && st.source_bytes <= st.filled_bytes + 1);
        assert!(st.spilled_bytes <= st.filled_bytes);
        let budget = st.memory_budget.max(segment) + 2 * segment;
        if st.spill_errors == 0 {
            assert!(st.memory_bytes <= budget, "{st:?}");
        }
        assert!(
            st.memory_bytes + st.spilled_bytes >= st.filled_bytes,
            "{st:?}"
        );
    }
}

/// A source failure must carry the source's kind (or `UnexpectedEof`/`InvalidData` for a
/// contradicted declared length).
fn check_error(m: &Model, e: &io::Error) {
    let allowed = [
        m.kind,
        io::ErrorKind::UnexpectedEof,
        io::ErrorKind::InvalidData,
    ];
    assert!(allowed.contains(&e.kind()), "unexpected error kind: {e:?}");
}

/// A range source over the synthetic stream that may hide its length and fails (or panics,
/// once) on its next calls when told to.
pub struct FuzzRange {
    pub seed: u64,
    pub len: u64,
    pub hide_len: bool,
    /// Calls left to fail.
    pub fail_next: AtomicUsize,
    /// Calls that failed so far.
    pub failed: AtomicUsize,
    pub panic_next: std::sync::atomic::AtomicBool,
}

impl sparsebuf::RangeSource for FuzzRange {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.panic_next.swap(false, Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            std::panic::panic_any(SCRIPTED_PANIC);
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "scripted"));
        }
        let n = self.len.saturating_sub(offset).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, offset + i as u64);
        }
        Ok(n)
    }

    fn len(&self) -> Option<u64> {
        (!self.hide_len).then_some(self.len)
    }
}
