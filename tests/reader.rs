//! The `Reader` cursor: `Read`, `Seek`, `BufRead`, clones, and seeks at the edges.

mod common;

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use common::{chunked, data, Scripted};
use sparsebuf::StreamBuffer;

fn buffer(model: &[u8]) -> StreamBuffer {
    StreamBuffer::builder()
        .segment_size(1024)
        .memory_budget(4096)
        .build_chunks(chunked(model, &[700, 1, 3000]))
        .unwrap()
}

#[test]
fn reads_sequentially_in_any_read_sizes() {
    let model = data(50_000, 1);
    let buf = buffer(&model);
    let mut r = buf.reader();
    let mut got = Vec::new();
    let mut size = 1;
    loop {
        let mut dst = vec![0u8; size];
        let n = r.read(&mut dst).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&dst[..n]);
        size = (size * 3 + 1) % 20_000;
    }
    assert_eq!(got, model);
    assert_eq!(r.position(), 50_000);
}

/// Regression: a large read bypassed the cursor's chunk but left its indices, and a later seek
/// reused the stale chunk as if it surrounded the new position, returning wrong bytes.
#[test]
fn seek_after_a_bypassing_read_returns_the_right_bytes() {
    let model = data(100_168, 2);
    let buf = StreamBuffer::builder()
        .segment_size(1024)
        .memory_budget(0)
        .build_chunks(chunked(&model, &[48_103, 91_817]))
        .unwrap();
    // With everything filled, each cursor read returns all it asks for.
    buf.fill_to_end().unwrap();
    let mut r = buf.reader();
    assert_eq!(r.fill_buf().unwrap().len(), 8192);
    let mut dst = vec![0u8; 8192];
    r.read_exact(&mut dst).unwrap();
    let mut big = vec![0u8; 28_849];
    r.read_exact(&mut big).unwrap();
    assert_eq!(big, model[8192..8192 + 28_849]);
    // The stale chunk covered 8192 bytes "behind" the position: seek into that window.
    let pos = r.seek(SeekFrom::Current(-8000)).unwrap();
    assert_eq!(pos, 8192 + 28_849 - 8000);
    let mut back = [0u8; 100];
    r.read_exact(&mut back).unwrap();
    assert_eq!(back, model[pos as usize..pos as usize + 100]);
}

#[test]
fn seeks_within_the_buffered_chunk_and_beyond() {
    let model = data(30_000, 3);
    let buf = buffer(&model);
    let mut r = buf.reader();
    r.seek(SeekFrom::Start(100)).unwrap();
    assert_eq!(r.fill_buf().unwrap()[0], model[100]);
    for to in [
        SeekFrom::Current(-50),
        SeekFrom::Current(4000),
        SeekFrom::Start(29_999),
        SeekFrom::End(-20_000),
        SeekFrom::Current(0),
        SeekFrom::Start(0),
    ] {
        let pos = r.seek(to).unwrap();
        let mut b = [0u8; 3];
        let n = r.read(&mut b).unwrap();
        assert_eq!(
            &b[..n],
            &model[pos as usize..(pos as usize + 3).min(30_000)]
        );
        r.seek(SeekFrom::Current(-(n as i64))).unwrap();
        assert_eq!(r.stream_position().unwrap(), pos);
    }
}

#[test]
fn bad_seeks_are_invalid_input_and_keep_the_position() {
    let buf = buffer(&data(100, 4));
    let mut r = buf.reader();
    r.seek(SeekFrom::Start(10)).unwrap();
    for to in [
        SeekFrom::Current(-11),
        SeekFrom::End(-101),
        SeekFrom::Current(i64::MAX),
    ] {
        if to == SeekFrom::Current(i64::MAX) {
            r.seek(SeekFrom::Start(u64::MAX - 5)).unwrap();
        }
        let err = r.seek(to).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{to:?}");
    }
    assert_eq!(r.position(), u64::MAX - 5);
}

#[test]
fn past_the_end_reads_return_zero() {
    let model = data(5000, 5);
    let buf = buffer(&model);
    let mut r = buf.reader();
    for pos in [5000, 5001, 1 << 40, u64::MAX - 1, u64::MAX] {
        r.seek(SeekFrom::Start(pos)).unwrap();
        assert_eq!(r.read(&mut [0u8; 16]).unwrap(), 0, "at {pos}");
        assert_eq!(r.read(&mut vec![0u8; 100_000]).unwrap(), 0, "at {pos}");
        assert!(r.fill_buf().unwrap().is_empty());
    }
}

#[test]
fn seek_from_end_pulls_when_the_length_is_unknown() {
    let model = data(70_000, 6);
    let buf = StreamBuffer::new(Scripted::new(model.clone(), 999));
    assert_eq!(buf.len(), None);
    let mut r = buf.reader();
    assert_eq!(r.seek(SeekFrom::End(-10)).unwrap(), 69_990);
    assert_eq!(buf.len(), Some(70_000));
    let mut tail = Vec::new();
    r.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, model[69_990..]);
}

#[test]
fn seek_from_end_uses_a_declared_length_without_pulling() {
    let model = data(70_000, 7);
    let buf = StreamBuffer::builder()
        .len(70_000)
        .build(Scripted::new(model, 999))
        .unwrap();
    let mut r = buf.reader();
    assert_eq!(r.seek(SeekFrom::End(0)).unwrap(), 70_000);
    assert_eq!(buf.stats().source_bytes, 0);
}

#[test]
fn clones_are_independent_cursors() {
    let model = data(20_000, 8);
    let buf = buffer(&model);
    let mut a = buf.reader();
    a.seek(SeekFrom::Start(1000)).unwrap();
    a.fill_buf().unwrap();
    let mut b = a.clone();
    let mut x = [0u8; 100];
    let mut y = [0u8; 100];
    a.read_exact(&mut x).unwrap();
    a.read_exact(&mut x).unwrap();
    b.read_exact(&mut y).unwrap();
    assert_eq!(x, model[1100..1200]);
    assert_eq!(y, model[1000..1100]);
    assert_eq!((a.position(), b.position()), (1200, 1100));
}

#[test]
fn bufread_lines_match_the_source() {
    let text: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let buf = StreamBuffer::builder()
        .segment_size(256)
        .memory_budget(512)
        .build_chunks(chunked(text.as_bytes(), &[7, 300, 1]))
        .unwrap();
    let lines: Vec<String> = buf.reader().lines().map(Result::unwrap).collect();
    let want: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines, want);
}

#[test]
fn reader_is_send_and_clone() {
    fn check<T: Read + Seek + BufRead + Clone + Send>() {}
    check::<sparsebuf::Reader>();
}

/// Regression (fuzz `ops`): an empty `read` went to the source, and so returned the stream's
/// sticky error (here: shorter than declared) or blocked, instead of `Ok(0)`.
#[test]
fn an_empty_read_never_touches_the_source() {
    let buf = StreamBuffer::builder().len(25).build(io::empty()).unwrap();
    let mut r = buf.reader();
    assert_eq!(r.read(&mut []).unwrap(), 0);
    assert_eq!(buf.stats().source_bytes, 0);
    assert_eq!(buf.location(0, 1), sparsebuf::Location::AtIndex);
    assert_eq!(
        r.read(&mut [0u8; 4]).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}
