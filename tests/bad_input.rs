//! Misuse and hostile input: `InvalidInput`, never a panic or a huge allocation.

mod common;

use std::io::{self, Read};

use common::data;
use sparsebuf::StreamBuffer;

fn small() -> (StreamBuffer, Vec<u8>) {
    let model = data(3000, 51);
    (StreamBuffer::new(io::Cursor::new(model.clone())), model)
}

#[test]
fn overflowing_ranges_are_invalid_input() {
    let (buf, _) = small();
    let kind = |r: io::Result<usize>| r.unwrap_err().kind();
    assert_eq!(
        kind(buf.read_at(u64::MAX, &mut [0u8; 1])),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(buf.read_at(u64::MAX - 2, &mut [0u8; 4])),
        io::ErrorKind::InvalidInput
    );
    let err = buf.read_exact_at(u64::MAX - 2, &mut [0u8; 4]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // Nothing was pulled for a request that could never be valid.
    assert_eq!(buf.stats().source_bytes, 0);
}

#[test]
fn ranges_at_the_edge_of_u64_are_fine() {
    let (buf, _) = small();
    assert_eq!(buf.read_at(u64::MAX, &mut []).unwrap(), 0);
    assert_eq!(buf.read_at(u64::MAX - 4, &mut [0u8; 4]).unwrap(), 0);
    assert!(buf.read_range(u64::MAX..u64::MAX).unwrap().is_empty());
    assert!(buf.read_range(u64::MAX - 1..u64::MAX).unwrap().is_empty());
}

#[test]
fn reversed_range_is_invalid_input() {
    let (buf, _) = small();
    #[allow(clippy::reversed_empty_ranges)]
    let err = buf.read_range(10..5).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_huge_range_allocates_only_what_exists() {
    let (buf, model) = small();
    assert_eq!(buf.read_range(0..u64::MAX).unwrap(), model);
    assert_eq!(buf.read_range(2990..1 << 62).unwrap(), model[2990..]);
}

#[test]
fn bad_settings_are_invalid_input() {
    for size in [0, 1, 100, 4095, 65_537, 3 << 20, usize::MAX] {
        let err = StreamBuffer::builder()
            .segment_size(size)
            .build(io::empty())
            .unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "segment size {size}"
        );
    }
    let err = StreamBuffer::builder()
        .spill_dir("/definitely/not/here")
        .build_chunks(Vec::<io::Result<Vec<u8>>>::new())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn extreme_but_valid_settings_work() {
    let model = data(10_000, 52);
    for (segment, budget) in [(256, 0), (256, usize::MAX), (1 << 20, 0)] {
        let buf = StreamBuffer::builder()
            .segment_size(segment)
            .memory_budget(budget)
            .build(io::Cursor::new(model.clone()))
            .unwrap();
        assert_eq!(buf.read_range(0..10_000).unwrap(), model);
    }
    // A declared length far beyond what exists is an error, not an allocation.
    let buf = StreamBuffer::builder()
        .len(u64::MAX)
        .build(io::Cursor::new(model.clone()))
        .unwrap();
    assert_eq!(buf.read_range(0..100).unwrap(), model[..100]);
    assert_eq!(
        buf.fill_to_end().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

/// `window(0)` was accepted, and then every read failed with `BehindWindow`, even a fresh
/// cursor's first: a window smaller than one segment is refused when the buffer is built.
#[test]
fn windows_smaller_than_a_segment_are_invalid_input() {
    for (segment, window) in [(64 << 10, 0), (64 << 10, 1), (4096, 4095)] {
        let err = StreamBuffer::builder()
            .segment_size(segment)
            .window(window)
            .build(io::empty())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "window {window}");
        assert!(err.to_string().contains("window"), "{err}");
    }
    let model = data(10_000, 52);
    let buf = StreamBuffer::builder()
        .segment_size(4096)
        .window(4096)
        .build(io::Cursor::new(model.clone()))
        .unwrap();
    let mut first = [0u8; 100];
    buf.reader().read_exact(&mut first).unwrap();
    assert_eq!(first[..], model[..100]);
}
