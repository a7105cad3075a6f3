//! The model of a live stream whose window its budgets may not hold, shared by the proptest in
//! `tests/window.rs` and the `window` fuzz target (which includes this file by path).
//!
//! One thread runs random `read_at`s, `wait_for`s and up to four cursors that read, seek, appear
//! and go away. Every byte is compared with the synthetic stream. After every operation the
//! memory and disk budgets must hold; the only errors allowed are a read behind the window
//! (inside the read's range) and a read that would wait for a cursor of this same thread (which
//! must name a live cursor's hold, or the call's own start if it keeps its whole range). With a
//! window larger than the stream, a cursor reading on from its last read never loses its bytes.
//! Failures panic, which both proptest and libFuzzer report.

use std::io::{self, Read, Seek, SeekFrom};

use sparsebuf::{Error, Reader, StreamBuffer};

use super::generator::{check_generated, Generated};

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
}

#[derive(Debug, Clone)]
pub enum WindowOp {
    ReadAt { offset: u64, len: usize },
    WaitFor { offset: u64, len: u64 },
    CursorRead { cursor: usize, len: usize },
    Seek { cursor: usize, to: u64 },
    NewCursor,
    DropCursor { cursor: usize },
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
    let built = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(s.ram * segment)
        .disk_budget(s.disk * segment as u64)
        .window(s.window.map_or(1 << 40, |w| w * segment as u64))
        .build(Generated {
            seed: s.seed,
            pos: 0,
            len: s.len,
            max_read: s.max_read.max(1),
        });
    // A window smaller than one segment could never be read: refused at build time.
    if s.window == Some(0) {
        let err = built.expect_err("window(0) must be refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        return;
    }
    let buf = built.unwrap();
    let total = s.len;
    let mut cursors: Vec<Cursor> = Vec::new();
    for op in ops {
        match *op {
            WindowOp::ReadAt { offset, len } => {
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
                let end = offset + len;
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
    assert_eq!(buf.fill_to_end().unwrap(), total);
    // The last byte is kept unless the budgets hold no more than the
    // segment being filled (which the writer makes room for before it knows that the stream
    // has ended).
    if total > 0 && s.ram > 0 && s.ram as u64 + s.disk >= 2 {
        let mut last = [0u8; 1];
        assert_eq!(buf.read_at(total - 1, &mut last).unwrap(), 1);
        check_generated(s.seed, total - 1, &last);
    }
}
