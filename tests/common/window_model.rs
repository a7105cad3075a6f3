//! The model of a live stream whose window its budgets may not hold, shared by the proptest in
//! `tests/window.rs` and the `window` fuzz target (which includes this file by path).
//!
//! One thread runs random `read_at`s, `wait_for`s and up to four cursors that read, seek, appear
//! and go away. Every byte is compared with the synthetic stream. After every operation the
//! memory and disk budgets must hold; the only errors allowed are a read behind the window
//! (inside the read's range) and a read that would wait for a cursor of this same thread (which
//! must name a live cursor's hold, or the call's own start if it keeps its whole range). With a
//! window larger than the stream, a cursor reading on from its last read never loses its bytes.
//!
//! The stream is pulled from a source, or (`push`) written by the same thread with a `Writer`
//! (then nothing reads past what was written, which would wait for this very thread). Up to
//! three fan-out consumers start and stop: inline ones, fed by whoever produces, and consumer
//! threads, which hold the window, lagging ones, which do not. At the end each consumer must
//! have got the stream's bytes in order, from where it started, cut as its options say, with
//! one last chunk; a consumer that does not lag never skips a byte after its start.
//! Failures panic, which both proptest and libFuzzer report.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use sparsebuf::{Error, Reader, StreamBuffer, Writer};

use super::generator::{byte_at, check_generated, Generated};

/// The buffer's settings. Budgets and window are in segments.
#[derive(Debug, Clone)]
pub struct WindowSetup {
    pub len: u64,
    pub seed: u64,
    pub segment_shift: u32,
    pub ram: usize,
    pub disk: u64,
    /// `None`: larger than the stream.
    pub window: Option<u64>,
    /// The most bytes the source gives per read (at least 1).
    pub max_read: usize,
    /// Written by this thread through a push `Writer` instead of pulled.
    pub push: bool,
}

#[derive(Debug, Clone)]
pub enum WindowOp {
    ReadAt {
        offset: u64,
        len: usize,
    },
    WaitFor {
        offset: u64,
        len: u64,
    },
    CursorRead {
        cursor: usize,
        len: usize,
    },
    Seek {
        cursor: usize,
        to: u64,
    },
    NewCursor,
    DropCursor {
        cursor: usize,
    },
    /// Push mode: the next `len` bytes of the stream, in one `write`.
    Push {
        len: usize,
    },
    StartConsumer {
        chunk: usize,
        clip: bool,
        inline: bool,
        lagging: bool,
    },
    StopConsumer {
        consumer: usize,
    },
}

/// One chunk as a consumer got it: offset, bytes, last.
type Got = Arc<Mutex<Vec<(u64, Vec<u8>, bool)>>>;

struct Running {
    consumer: sparsebuf::Consumer,
    log: Log,
}

/// What a consumer got, and what it was asked for.
struct Log {
    got: Got,
    /// The window start just before it started, and just after.
    started: (u64, u64),
    chunk: usize,
    clip: bool,
    lagging: bool,
}

/// Checks a consumer's chunks: each one the stream's bytes at its offset, offsets in order and
/// (unless it lags) contiguous, sizes as `clip` says. Returns the first offset and the end.
fn check_chunks(r: &Log, seed: u64, total: u64, ended: bool) -> (u64, u64) {
    let gaps = r.lagging;
    let got = r.got.lock().unwrap();
    let first = got.first().map_or(total, |c| c.0);
    let mut at = first;
    for (i, (offset, bytes, last)) in got.iter().enumerate() {
        if gaps {
            assert!(*offset >= at, "chunk {i} goes back");
        } else {
            assert_eq!(*offset, at, "chunk {i} does not follow the one before");
        }
        check_generated(seed, *offset, bytes);
        // A consumer stopped midway may have reached the end already.
        let reaches_end = offset + bytes.len() as u64 == total;
        let is_final = i == got.len() - 1 && (ended || reaches_end);
        if *last || ended {
            assert_eq!(*last, is_final, "chunk {i} of {}: last flag", got.len());
        }
        if !last && r.clip {
            assert_eq!(bytes.len(), r.chunk, "chunk {i}: a clipped chunk's size");
        }
        if !last && !r.clip {
            assert!(
                bytes.len() >= r.chunk,
                "chunk {i}: a whole-write chunk is short"
            );
        }
        at = offset + bytes.len() as u64;
    }
    (first, at)
}

/// The crate's error inside an `io::Error`, if any.
pub fn inner_error(err: &io::Error) -> Option<&Error> {
    err.get_ref().and_then(|e| e.downcast_ref::<Error>())
}

/// How far past a cursor's position its hold may be: the cursor's own buffer.
const CURSOR_CHUNK: u64 = 8 * 1024;

struct Cursor {
    reader: Reader,
    pos: u64,
    /// Read on from where its last read ended, with no seek since.
    sequential: bool,
}

/// Positions of the cursors other than `except`.
fn holds(cursors: &[Cursor], except: Option<usize>) -> Vec<u64> {
    cursors
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != except)
        .map(|(_, c)| c.pos)
        .collect()
}

/// Panics unless `err` is an error a windowed buffer may give for a call on `[start, end)`.
fn allowed(err: &io::Error, start: u64, end: u64, holds: &[u64], keeps_range: bool) {
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    match inner_error(err) {
        Some(Error::BehindWindow {
            offset,
            window_start,
        }) => {
            assert!(offset < window_start, "{err}");
            assert!((start..end.max(start + 1)).contains(offset), "{err}");
        }
        Some(Error::WindowFull { held, needed }) => {
            let by_cursor = holds.iter().any(|&p| (p..=p + CURSOR_CHUNK).contains(held));
            assert!(
                by_cursor || (keeps_range && *held == start),
                "{err} (cursors at {holds:?})"
            );
            assert!(needed > held, "{err}");
        }
        _ => panic!("unexpected error {err}"),
    }
}

/// Builds the buffer of `s`, runs `ops` against the model, then checks that with no cursor
/// left the stream can be pulled to its end.
pub fn run_window_model(s: &WindowSetup, ops: &[WindowOp]) {
    let segment = 1usize << s.segment_shift;
    let builder = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(s.ram * segment)
        .disk_budget(s.disk * segment as u64)
        .window(s.window.map_or(1 << 40, |w| w * segment as u64));
    let built = if s.push {
        builder.build_push().map(|(w, b)| (Some(w), b))
    } else {
        let source = Generated {
            seed: s.seed,
            pos: 0,
            len: s.len,
            max_read: s.max_read.max(1),
        };
        builder.build(source).map(|b| (None, b))
    };
    // A window smaller than one segment could never be read: refused at build time.
    if s.window == Some(0) {
        let err = built.expect_err("window(0) must be refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        return;
    }
    let (mut writer, buf) = built.unwrap();
    let total = s.len;
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut consumers: Vec<Running> = Vec::new();
    for op in ops {
        // A push stream is read only up to what this thread wrote: further would wait for it.
        let written = writer.as_ref().map_or(u64::MAX, Writer::position);
        let clamp = |offset: u64, len: u64| len.min(written.saturating_sub(offset));
        match *op {
            WindowOp::ReadAt { offset, len } => {
                let len = clamp(offset, len as u64) as usize;
                if offset >= written {
                    continue;
                }
                let mut dst = vec![0u8; len];
                match buf.read_at(offset, &mut dst) {
                    Ok(n) => {
                        assert_eq!(n as u64, total.saturating_sub(offset).min(len as u64));
                        check_generated(s.seed, offset, &dst[..n]);
                    }
                    Err(e) => allowed(
                        &e,
                        offset,
                        offset + len as u64,
                        &holds(&cursors, None),
                        false,
                    ),
                }
            }
            WindowOp::WaitFor { offset, len } => {
                if offset >= written {
                    continue;
                }
                let end = offset + clamp(offset, len);
                match buf.wait_for(offset..end) {
                    Ok(reached) => assert_eq!(reached, end.min(total)),
                    Err(e) => allowed(&e, offset, end, &holds(&cursors, None), true),
                }
            }
            WindowOp::CursorRead { cursor, len } => {
                if cursors.is_empty() {
                    continue;
                }
                let i = cursor % cursors.len();
                let others = holds(&cursors, Some(i));
                let c = &mut cursors[i];
                if c.pos >= written {
                    continue;
                }
                let mut dst = vec![0u8; len];
                match c.reader.read(&mut dst) {
                    Ok(n) => {
                        let left = total.saturating_sub(c.pos);
                        assert!(n as u64 <= left.min(len as u64));
                        assert!(n > 0 || left == 0 || len == 0, "read returned 0 before EOF");
                        check_generated(s.seed, c.pos, &dst[..n]);
                        c.pos += n as u64;
                        c.sequential = true;
                    }
                    Err(e) => {
                        if s.window.is_none() && c.sequential {
                            assert!(
                                matches!(inner_error(&e), Some(Error::WindowFull { .. })),
                                "a sequential cursor lost its bytes: {e}"
                            );
                        }
                        allowed(&e, c.pos, c.pos + len as u64, &others, false);
                    }
                }
                assert_eq!(c.reader.position(), c.pos);
            }
            WindowOp::Seek { cursor, to } => {
                if let Some(c) = cursors.get_mut(cursor) {
                    assert_eq!(c.reader.seek(SeekFrom::Start(to)).unwrap(), to);
                    c.pos = to;
                    c.sequential = false;
                }
            }
            WindowOp::NewCursor => {
                if cursors.len() < 4 {
                    cursors.push(Cursor {
                        reader: buf.reader(),
                        pos: 0,
                        sequential: false,
                    });
                }
            }
            WindowOp::DropCursor { cursor } => {
                if cursor < cursors.len() {
                    cursors.remove(cursor);
                }
            }
            WindowOp::Push { len } => {
                let Some(w) = writer.as_mut() else { continue };
                let from = w.position();
                let n = (len as u64).min(total - from) as usize;
                let bytes: Vec<u8> = (from..from + n as u64)
                    .map(|p| byte_at(s.seed, p))
                    .collect();
                match w.write(&bytes) {
                    Ok(took) => assert!(took == n || took > 0, "write took {took} of {n}"),
                    Err(e) => allowed(&e, from, from + 1, &holds(&cursors, None), false),
                }
            }
            WindowOp::StartConsumer {
                chunk,
                clip,
                inline,
                lagging,
            } => {
                if consumers.len() >= 3 {
                    continue;
                }
                let got: Got = Arc::default();
                let log = got.clone();
                let emit = buf.emit(chunk.max(1)).clip(clip).lagging(lagging);
                let emit = if inline { emit.run_inline() } else { emit };
                let before = buf.window_start();
                let consumer = emit
                    .start(move |c| {
                        let mut log = log.lock().unwrap();
                        // No more chunks than bytes, plus an empty last one.
                        assert!(
                            log.len() as u64 <= total,
                            "endless chunks at {}",
                            c.offset()
                        );
                        log.push((c.offset(), c.to_vec(), c.is_last()));
                        Ok(())
                    })
                    .unwrap();
                let log = Log {
                    got,
                    started: (before, buf.window_start()),
                    chunk: chunk.max(1),
                    clip,
                    lagging: lagging && !inline,
                };
                consumers.push(Running { consumer, log });
            }
            WindowOp::StopConsumer { consumer } => {
                if consumer < consumers.len() {
                    let Running { consumer, log } = consumers.remove(consumer);
                    drop(consumer);
                    // What it got before it stopped is still the stream's bytes, in order.
                    check_chunks(&log, s.seed, total, false);
                }
            }
        }
        let st = buf.stats();
        assert!(
            st.memory_bytes <= (s.ram.max(1) + 2) as u64 * segment as u64,
            "RAM over budget: {st:?}"
        );
        assert!(
            st.spilled_bytes <= s.disk * segment as u64,
            "disk over budget: {st:?}"
        );
        assert_eq!(st.spill_errors, 0);
    }
    // With no cursor left, nothing holds the stream back.
    drop(cursors);
    match writer.as_mut() {
        Some(w) => {
            while w.position() < total {
                let from = w.position();
                let n = (total - from).min(64 * 1024);
                let bytes: Vec<u8> = (from..from + n).map(|p| byte_at(s.seed, p)).collect();
                w.write_all(&bytes).unwrap();
            }
            assert_eq!(writer.take().unwrap().finish().unwrap(), total);
        }
        None => assert_eq!(buf.fill_to_end().unwrap(), total),
    }
    for Running { consumer, log: r } in consumers {
        let (done, waited) = mpsc::channel();
        std::thread::spawn(move || done.send(consumer.join()));
        let report = waited
            .recv_timeout(Duration::from_secs(60))
            .expect("a consumer did not end with its stream")
            .unwrap();
        let (first, end) = check_chunks(&r, s.seed, total, true);
        assert_eq!(end, total, "a consumer stopped short of the end");
        assert_eq!(report.bytes + report.skipped, total);
        assert!(
            first >= r.started.0,
            "a consumer started before the window start"
        );
        if !r.lagging {
            // It starts at the window start of its start, and never skips after.
            assert!(
                first <= r.started.1,
                "started at {first}, window {:?}",
                r.started
            );
            assert_eq!(report.skipped, first);
        }
    }
    // The last byte is kept unless the budgets hold no more than the
    // segment being filled (which the writer makes room for before it knows that the stream
    // has ended).
    if total > 0 && s.ram > 0 && s.ram as u64 + s.disk >= 2 {
        let mut last = [0u8; 1];
        assert_eq!(buf.read_at(total - 1, &mut last).unwrap(), 1);
        check_generated(s.seed, total - 1, &last);
    }
}
