//! Model tests: random sources, chunkings, segment sizes and budgets, and random sequences of
//! operations, every result compared byte for byte with a `Vec<u8>` holding the source.

mod common;

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use common::{chunked, data, expected, expected_location};
use proptest::prelude::*;
use sparsebuf::StreamBuffer;

#[derive(Debug, Clone)]
enum Op {
    ReadAt { offset: u64, len: usize },
    ReadExactAt { offset: u64, len: usize },
    ReadRange { start: u64, end: u64 },
    Seek(SeekFrom),
    CursorRead { len: usize },
    CursorFillBuf { consume: usize },
    Locate { offset: u64, len: u64 },
    FillToEnd,
    Save,
}

#[derive(Debug, Clone)]
struct Setup {
    len: usize,
    seed: u64,
    segment_shift: u32,
    budget_segments: usize,
    declare_len: bool,
    /// Chunk sizes, cycled; `[1]` is the 1-byte-chunk source.
    chunks: Vec<usize>,
    /// Feed the chunks as an iterator (`build_chunks`) or through `Read`.
    as_iterator: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![0usize..2_000, 0usize..300_000],
        any::<u64>(),
        8u32..=15,
        0usize..=6,
        any::<bool>(),
        prop_oneof![
            1 => Just(vec![1usize]),
            4 => prop::collection::vec(1usize..100_000, 1..6),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(len, seed, segment_shift, budget_segments, declare_len, chunks, as_iterator)| {
                // One-byte chunks make every byte a publish: keep those streams small.
                let len = if chunks == [1] { len.min(20_000) } else { len };
                Setup {
                    len,
                    seed,
                    segment_shift,
                    budget_segments,
                    declare_len,
                    chunks,
                    as_iterator,
                }
            },
        )
}

/// Offsets mostly inside or just past the stream, sometimes at the edge of `u64`.
fn offset(len: usize) -> impl Strategy<Value = u64> {
    let len = len as u64;
    prop_oneof![
        8 => 0..=len + 70_000,
        1 => Just(len),
        1 => (u64::MAX - 100_000)..=u64::MAX,
    ]
}

fn op(len: usize) -> impl Strategy<Value = Op> {
    let size = 0usize..100_000;
    prop_oneof![
        6 => (offset(len), size.clone()).prop_map(|(offset, len)| Op::ReadAt { offset, len }),
        3 => (offset(len), size.clone()).prop_map(|(offset, len)| Op::ReadExactAt { offset, len }),
        3 => (offset(len), size.clone())
            .prop_map(|(start, n)| Op::ReadRange { start, end: start.saturating_add(n as u64) }),
        1 => (offset(len), offset(len)).prop_map(|(start, end)| Op::ReadRange { start, end }),
        2 => prop_oneof![
            offset(len).prop_map(SeekFrom::Start),
            (-100_000i64..100_000).prop_map(SeekFrom::Current),
            (-100_000i64..1_000).prop_map(SeekFrom::End),
        ]
        .prop_map(Op::Seek),
        3 => size.clone().prop_map(|len| Op::CursorRead { len }),
        2 => (0usize..20_000).prop_map(|consume| Op::CursorFillBuf { consume }),
        2 => (offset(len), 0u64..100_000).prop_map(|(offset, len)| Op::Locate { offset, len }),
        1 => Just(Op::FillToEnd),
        1 => Just(Op::Save),
    ]
}

fn case() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup().prop_flat_map(|s| {
        let ops = prop::collection::vec(op(s.len), 1..24);
        (Just(s), ops)
    })
}

fn build(s: &Setup, model: &[u8]) -> StreamBuffer {
    let segment = 1usize << s.segment_shift;
    let mut builder = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(s.budget_segments * segment);
    if s.declare_len {
        builder = builder.len(model.len() as u64);
    }
    if s.as_iterator {
        builder.build_chunks(chunked(model, &s.chunks)).unwrap()
    } else {
        let max_read = s.chunks[0];
        builder
            .build(common::Scripted::new(model.to_vec(), max_read))
            .unwrap()
    }
}

/// The cursor's model position and the stream.
struct Cursor {
    pos: u64,
}

fn run(s: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let model = data(s.len, s.seed);
    let total = model.len() as u64;
    let buf = build(&s, &model);
    let mut reader = buf.reader();
    let mut cursor = Cursor { pos: 0 };
    let dir = tempfile::tempdir().unwrap();
    let segment = 1u64 << s.segment_shift;

    for op in ops {
        match op {
            Op::ReadAt { offset, len } => {
                let mut dst = vec![0xA5u8; len];
                match buf.read_at(offset, &mut dst) {
                    Ok(n) => prop_assert_eq!(&dst[..n], expected(&model, offset, len)),
                    Err(e) => {
                        prop_assert!(offset.checked_add(len as u64).is_none(), "{e}");
                        prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                    }
                }
            }
            Op::ReadExactAt { offset, len } => {
                let mut dst = vec![0u8; len];
                let want = expected(&model, offset, len);
                match buf.read_exact_at(offset, &mut dst) {
                    Ok(()) => prop_assert_eq!(&dst[..], want),
                    Err(e) if offset.checked_add(len as u64).is_none() => {
                        prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput)
                    }
                    Err(e) => {
                        prop_assert!(want.len() < len, "unexpected error {e}");
                        prop_assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    }
                }
            }
            Op::ReadRange { start, end } => match buf.read_range(start..end) {
                Ok(v) => {
                    prop_assert!(start <= end);
                    let want = expected(&model, start, (end - start).min(total + 1) as usize);
                    prop_assert_eq!(&v[..], want);
                }
                Err(e) => {
                    prop_assert!(start > end, "unexpected error {e}");
                    prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                }
            },
            Op::Seek(to) => {
                let want = match to {
                    SeekFrom::Start(n) => Some(n),
                    SeekFrom::Current(d) => cursor.pos.checked_add_signed(d),
                    SeekFrom::End(d) => total.checked_add_signed(d),
                };
                match (reader.seek(to), want) {
                    (Ok(p), Some(w)) => {
                        prop_assert_eq!(p, w);
                        cursor.pos = w;
                    }
                    (Err(e), None) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
                    (got, want) => prop_assert!(false, "seek {to:?}: {got:?} vs {want:?}"),
                }
            }
            Op::CursorRead { len } => {
                let mut dst = vec![0u8; len];
                let n = reader.read(&mut dst).unwrap();
                let want = expected(&model, cursor.pos, len);
                prop_assert!(n <= want.len());
                prop_assert!(
                    n > 0 || want.is_empty() || len == 0,
                    "read returned 0 before EOF"
                );
                prop_assert_eq!(&dst[..n], &want[..n]);
                cursor.pos += n as u64;
            }
            Op::CursorFillBuf { consume } => {
                let got = reader.fill_buf().unwrap().to_vec();
                let want = expected(&model, cursor.pos, got.len());
                prop_assert_eq!(&got[..], want);
                prop_assert!(!got.is_empty() || cursor.pos >= total);
                let n = consume.min(got.len());
                reader.consume(n);
                cursor.pos += n as u64;
            }
            Op::Locate { offset, len } => {
                let want = expected_location(buf.stats().filled_bytes, offset, len);
                prop_assert_eq!(buf.location(offset, len), want);
            }
            Op::FillToEnd => prop_assert_eq!(buf.fill_to_end().unwrap(), total),
            Op::Save => {
                let path = dir.path().join("saved.bin");
                prop_assert_eq!(buf.save(&path).unwrap(), total);
                prop_assert_eq!(std::fs::read(&path).unwrap(), model.clone());
            }
        }
        prop_assert_eq!(reader.position(), cursor.pos);
        let st = buf.stats();
        prop_assert!(st.filled_bytes <= total);
        prop_assert_eq!(st.source_bytes, st.filled_bytes);
        prop_assert!(st.spilled_bytes <= st.filled_bytes);
        prop_assert_eq!(st.spill_errors, 0);
        let ceiling = (s.budget_segments as u64 * segment).max(segment) + 2 * segment;
        prop_assert!(
            st.memory_bytes <= ceiling,
            "memory {} over {} ({st:?})",
            st.memory_bytes,
            ceiling
        );
        if buf.len().is_some() && !s.declare_len {
            prop_assert_eq!(buf.len(), Some(total));
        }
    }
    // Whatever the operations did, the whole stream reads back right.
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    prop_assert_eq!(all, model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn operations_match_the_model((s, ops) in case()) {
        run(s, ops)?;
    }
}
