//! The read path's four cases (`BeforeIndex`, `Bisected`, `AtIndex`, `AfterIndex`) for many
//! chunkings of the source, including reads that start inside a chunk ahead of the frontier
//! (where the original Python package returned wrong bytes) and one-byte chunks.

mod common;

use common::{chunked, data, expected};
use sparsebuf::{Location, StreamBuffer};

const LEN: usize = 40_000;

fn chunkings() -> Vec<Vec<usize>> {
    vec![
        vec![1],
        vec![3, 1, 7],
        vec![1000],
        vec![4096],
        vec![5000, 1, 12_000],
        vec![LEN],
        vec![100_000],
    ]
}

/// Reads `len` at `offset` and checks the bytes and the location the read started from.
fn read_and_check(buf: &StreamBuffer, model: &[u8], offset: u64, len: usize, from: Location) {
    assert_eq!(buf.location(offset, len as u64), from, "at {offset}+{len}");
    let mut dst = vec![0u8; len];
    let n = buf.read_at(offset, &mut dst).unwrap();
    assert_eq!(&dst[..n], expected(model, offset, len), "at {offset}+{len}");
}

#[test]
fn each_case_returns_the_right_bytes_for_every_chunking() {
    let model = data(LEN, 11);
    for sizes in chunkings() {
        for segment in [256, 4096] {
            let buf = StreamBuffer::builder()
                .segment_size(segment)
                .memory_budget(2 * segment)
                .build_chunks(chunked(&model, &sizes))
                .unwrap();
            // AtIndex: the very first read starts at the frontier, 0.
            read_and_check(&buf, &model, 0, 10, Location::AtIndex);
            let f = buf.stats().filled_bytes;
            assert!(f >= 10);
            // AfterIndex: starts past the frontier, inside a chunk not pulled yet.
            let ahead = f + 1500;
            read_and_check(&buf, &model, ahead, 777, Location::AfterIndex);
            // BeforeIndex: everything requested is filled.
            read_and_check(&buf, &model, 5, 1000, Location::BeforeIndex);
            // Bisected: starts in filled data and ends past it.
            let f = buf.stats().filled_bytes;
            read_and_check(&buf, &model, f - 3, 2000, Location::Bisected);
            // AtIndex again, mid-stream.
            let f = buf.stats().filled_bytes;
            read_and_check(&buf, &model, f, 333, Location::AtIndex);
            // Past the end: a short read.
            read_and_check(&buf, &model, LEN as u64 - 5, 50, Location::AfterIndex);
            assert_eq!(buf.len(), Some(LEN as u64));
            read_and_check(&buf, &model, 0, LEN, Location::BeforeIndex);
        }
    }
}

#[test]
fn reads_ahead_inside_every_chunk_position() {
    // Each read starts a different distance into a chunk that has not been pulled yet.
    let model = data(10_000, 12);
    for skip in [1u64, 2, 99, 100, 101, 250, 999] {
        let buf = StreamBuffer::builder()
            .segment_size(256)
            .build_chunks(chunked(&model, &[100, 37, 1000]))
            .unwrap();
        let mut offset = 0;
        while offset < 10_000 {
            let mut dst = [0u8; 7];
            let n = buf.read_at(offset, &mut dst).unwrap();
            assert_eq!(
                &dst[..n],
                expected(&model, offset, 7),
                "skip {skip} at {offset}"
            );
            offset += skip;
        }
    }
}

#[test]
fn empty_stream() {
    let buf = StreamBuffer::from_chunks(Vec::<std::io::Result<Vec<u8>>>::new());
    assert_eq!(buf.location(0, 1), Location::AtIndex);
    assert_eq!(buf.read_at(0, &mut [0u8; 4]).unwrap(), 0);
    assert_eq!(buf.len(), Some(0));
    assert_eq!(buf.is_empty(), Some(true));
    assert_eq!(buf.fill_to_end().unwrap(), 0);
    assert!(buf.read_range(0..10).unwrap().is_empty());
}

/// Regression (fuzz `faults`): `location(u64::MAX, n)` saturated the end to `u64::MAX`, saw an
/// empty range and answered `BeforeIndex` ("all filled") for bytes that cannot exist.
#[test]
fn ranges_past_u64_max_are_never_before_the_index() {
    let buf = StreamBuffer::from_chunks(vec![Ok::<_, std::io::Error>(vec![1u8; 100])]);
    buf.fill_to_end().unwrap();
    assert_eq!(buf.location(u64::MAX, 1), Location::AfterIndex);
    assert_eq!(buf.location(u64::MAX - 3, 10), Location::AfterIndex);
    assert_eq!(buf.location(50, u64::MAX), Location::Bisected);
    assert_eq!(buf.location(u64::MAX, 0), Location::BeforeIndex);
}
