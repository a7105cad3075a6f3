//! `wait_for` returns `range.end` clipped at the end of the stream, whatever the range.

mod common;

use std::io;

use common::data;
use sparsebuf::{SeekSource, StreamBuffer};

/// Every kind of buffer over the same 10 000 bytes.
fn buffers(model: &[u8]) -> Vec<(&'static str, StreamBuffer)> {
    let stream = || io::Cursor::new(model.to_vec());
    vec![
        ("stream", StreamBuffer::new(stream())),
        (
            "declared length",
            StreamBuffer::builder()
                .len(model.len() as u64)
                .build(stream())
                .unwrap(),
        ),
        (
            "tiny segments, spilling",
            StreamBuffer::builder()
                .segment_size(256)
                .memory_budget(512)
                .build(stream())
                .unwrap(),
        ),
        (
            "range source",
            StreamBuffer::builder()
                .segment_size(1024)
                .build_ranged(SeekSource::new(stream()))
                .unwrap(),
        ),
    ]
}

/// `wait_for(20_000..30_000)` on a 10 000-byte stream returned 20 000, and
/// `wait_for(u64::MAX..u64::MAX)` returned `u64::MAX`: the start, not the end clipped to the
/// stream as documented.
#[test]
fn ranges_past_the_end_return_the_length() {
    let model = data(10_000, 61);
    for (name, buf) in buffers(&model) {
        assert_eq!(buf.wait_for(20_000..30_000).unwrap(), 10_000, "{name}");
        assert_eq!(buf.wait_for(u64::MAX..u64::MAX).unwrap(), 10_000, "{name}");
        assert_eq!(buf.wait_for(10_000..10_000).unwrap(), 10_000, "{name}");
        assert_eq!(buf.read_range(0..10_000).unwrap(), model, "{name}");
    }
}

#[test]
fn fresh_buffers_learn_the_length_to_answer() {
    let model = data(10_000, 62);
    for (name, buf) in buffers(&model) {
        assert_eq!(buf.wait_for(u64::MAX..u64::MAX).unwrap(), 10_000, "{name}");
        assert_eq!(buf.len(), Some(10_000), "{name}");
    }
    for (name, buf) in buffers(&model) {
        assert_eq!(buf.wait_for(20_000..30_000).unwrap(), 10_000, "{name}");
    }
}

#[test]
fn ranges_inside_and_across_the_end() {
    let model = data(10_000, 63);
    for (name, buf) in buffers(&model) {
        assert_eq!(buf.wait_for(0..4096).unwrap(), 4096, "{name}");
        assert_eq!(buf.wait_for(100..100).unwrap(), 100, "{name}");
        assert_eq!(buf.wait_for(9_000..20_000).unwrap(), 10_000, "{name}");
        assert_eq!(buf.wait_for(9_999..u64::MAX).unwrap(), 10_000, "{name}");
        let mut tail = [0u8; 1000];
        buf.read_exact_at(9_000, &mut tail).unwrap();
        assert_eq!(tail[..], model[9_000..], "{name}");
    }
}

#[test]
fn an_empty_stream_clips_everything_to_zero() {
    let buf = StreamBuffer::new(io::empty());
    assert_eq!(buf.wait_for(0..0).unwrap(), 0);
    assert_eq!(buf.wait_for(5..10).unwrap(), 0);
    assert_eq!(buf.wait_for(u64::MAX..u64::MAX).unwrap(), 0);
}

#[test]
fn a_reversed_range_is_invalid_input() {
    let buf = StreamBuffer::new(io::empty());
    #[allow(clippy::reversed_empty_ranges)]
    let err = buf.wait_for(10..5).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}
