//! A live stream with a window that its budgets may not hold: random segment sizes, budgets,
//! windows and chunkings; random `read_at`s, `wait_for`s and several cursors that read, seek,
//! appear and go away. Every byte is compared with the generator. The budgets must hold after
//! every operation, and the only errors allowed are a read behind the window and a read that
//! would wait for a cursor of this same thread (which must name a live cursor's position).
//! With a window larger than the stream, a cursor reading on from its last read never loses
//! its bytes.
#![no_main]

use std::io::{self, Read, Seek, SeekFrom};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sparsebuf::{Error, StreamBuffer};
use sparsebuf_fuzz::byte_at;

#[derive(Arbitrary, Debug)]
enum Op {
    ReadAt { offset: u32, len: u16 },
    WaitFor { offset: u32, len: u16 },
    CursorRead { cursor: u8, len: u16 },
    Seek { cursor: u8, to: u32 },
    NewCursor,
    DropCursor { cursor: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    len: u32,
    seed: u64,
    segment_shift: u8,
    ram_segments: u8,
    disk_segments: u8,
    /// In segments; `None`: larger than the stream.
    window_segments: Option<u8>,
    max_read: u16,
    ops: Vec<Op>,
}

/// The synthetic stream, at most `max_read` bytes per read.
struct Source {
    seed: u64,
    pos: u64,
    len: u64,
    max_read: usize,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len().min(self.max_read) as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(self.seed, self.pos + i as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

struct Cursor {
    reader: sparsebuf::Reader,
    pos: u64,
    sequential: bool,
}

fn check(seed: u64, offset: u64, got: &[u8]) {
    for (i, &b) in got.iter().enumerate() {
        assert_eq!(
            b,
            byte_at(seed, offset + i as u64),
            "at {}",
            offset + i as u64
        );
    }
}

/// An error the buffer may give: behind the window within the read's range, or waiting for a
/// cursor of this thread (at or up to one buffered chunk past one of `holds`), or for the
/// call's own start if it must keep its whole range.
fn allowed(err: &io::Error, start: u64, end: u64, holds: &[u64], own_start: bool) {
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::BehindWindow {
            offset,
            window_start,
        }) => {
            assert!(offset < window_start, "{err}");
            assert!((start..end.max(start + 1)).contains(offset), "{err}");
        }
        Some(Error::WindowFull { held, needed }) => {
            let by_cursor = holds.iter().any(|&p| (p..=p + 8192).contains(held));
            assert!(
                by_cursor || (own_start && *held == start),
                "{err} {holds:?}"
            );
            assert!(needed > held, "{err}");
        }
        _ => panic!("unexpected error {err}"),
    }
}

fuzz_target!(|input: Input| {
    let len = u64::from(input.len % 300_000);
    let shift = 8 + u32::from(input.segment_shift % 5);
    let segment = 1usize << shift;
    let ram = usize::from(input.ram_segments % 5);
    let disk = u64::from(input.disk_segments % 5);
    let window = input
        .window_segments
        .map_or(1 << 40, |w| u64::from(w % 16) * segment as u64);
    let seed = input.seed;
    let buf = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(ram * segment)
        .disk_budget(disk * segment as u64)
        .window(window)
        .build(Source {
            seed,
            pos: 0,
            len,
            max_read: usize::from(input.max_read).max(1),
        })
        .unwrap();
    let mut cursors: Vec<Cursor> = Vec::new();
    for op in input.ops.into_iter().take(48) {
        let holds = |cursors: &[Cursor], except: Option<usize>| -> Vec<u64> {
            cursors
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != except)
                .map(|(_, c)| c.pos)
                .collect()
        };
        match op {
            Op::ReadAt { offset, len: n } => {
                let offset = u64::from(offset) % (len + 5000);
                let mut dst = vec![0u8; usize::from(n)];
                match buf.read_at(offset, &mut dst) {
                    Ok(got) => {
                        assert_eq!(got as u64, len.saturating_sub(offset).min(u64::from(n)));
                        check(seed, offset, &dst[..got]);
                    }
                    Err(e) => allowed(
                        &e,
                        offset,
                        offset + u64::from(n),
                        &holds(&cursors, None),
                        false,
                    ),
                }
            }
            Op::WaitFor { offset, len: n } => {
                let offset = u64::from(offset) % (len + 5000);
                let end = offset + u64::from(n);
                match buf.wait_for(offset..end) {
                    Ok(reached) => assert_eq!(reached, end.min(len).max(offset)),
                    Err(e) => allowed(&e, offset, end, &holds(&cursors, None), true),
                }
            }
            Op::CursorRead { cursor, len: n } => {
                if cursors.is_empty() {
                    continue;
                }
                let i = usize::from(cursor) % cursors.len();
                let others = holds(&cursors, Some(i));
                let c = &mut cursors[i];
                let mut dst = vec![0u8; usize::from(n)];
                match c.reader.read(&mut dst) {
                    Ok(got) => {
                        let left = len.saturating_sub(c.pos);
                        assert!(got as u64 <= left.min(u64::from(n)));
                        assert!(got > 0 || left == 0 || n == 0, "read returned 0 before EOF");
                        check(seed, c.pos, &dst[..got]);
                        c.pos += got as u64;
                        c.sequential = true;
                    }
                    Err(e) => {
                        if input.window_segments.is_none() && c.sequential {
                            assert!(
                                matches!(
                                    e.get_ref().and_then(|e| e.downcast_ref::<Error>()),
                                    Some(Error::WindowFull { .. })
                                ),
                                "a sequential cursor lost its bytes: {e}"
                            );
                        }
                        allowed(&e, c.pos, c.pos + u64::from(n), &others, false);
                    }
                }
                assert_eq!(c.reader.position(), c.pos);
            }
            Op::Seek { cursor, to } => {
                if let Some(c) = cursors.get_mut(usize::from(cursor)) {
                    let to = u64::from(to) % (len + 5000);
                    assert_eq!(c.reader.seek(SeekFrom::Start(to)).unwrap(), to);
                    c.pos = to;
                    c.sequential = false;
                }
            }
            Op::NewCursor => {
                if cursors.len() < 4 {
                    cursors.push(Cursor {
                        reader: buf.reader(),
                        pos: 0,
                        sequential: false,
                    });
                }
            }
            Op::DropCursor { cursor } => {
                let i = usize::from(cursor);
                if i < cursors.len() {
                    cursors.remove(i);
                }
            }
        }
        let st = buf.stats();
        assert!(
            st.memory_bytes <= (ram.max(1) + 2) as u64 * segment as u64,
            "RAM over budget: {st:?}"
        );
        assert!(
            st.spilled_bytes <= disk * segment as u64,
            "disk over budget: {st:?}"
        );
        assert_eq!(st.spill_errors, 0);
    }
    drop(cursors);
    assert_eq!(buf.fill_to_end().unwrap(), len);
});
