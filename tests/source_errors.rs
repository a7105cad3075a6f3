//! Source failures: sticky errors with the same kind and message, `Interrupted` retried, panics
//! caught, and a declared length the source contradicts.

mod common;

use std::io;

use common::{chunked, data, expected, Scripted};
use sparsebuf::{Error, StreamBuffer};

fn inner(err: &io::Error) -> &Error {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("not a sparsebuf::Error: {err:?}"))
}

#[test]
fn errors_are_sticky_with_the_same_kind_and_message() {
    let model = data(10_000, 31);
    let source = Scripted::new(model.clone(), 999).fail_at(7000, io::ErrorKind::TimedOut);
    let buf = StreamBuffer::builder()
        .segment_size(1024)
        .build(source)
        .unwrap();
    let first = buf.read_at(6000, &mut [0u8; 2000]).unwrap_err();
    assert_eq!(first.kind(), io::ErrorKind::TimedOut);
    assert!(matches!(inner(&first), Error::Source { offset: 7000, .. }));
    for (offset, len) in [(6999, 2), (7000, 1), (9000, 100), (0, 10_000)] {
        let again = buf.read_at(offset, &mut vec![0u8; len]).unwrap_err();
        assert_eq!(
            (again.kind(), again.to_string()),
            (first.kind(), first.to_string())
        );
    }
    assert_eq!(
        buf.fill_to_end().unwrap_err().to_string(),
        first.to_string()
    );
    assert_eq!(
        buf.read_range(0..8000).unwrap_err().kind(),
        io::ErrorKind::TimedOut
    );
    // Everything before the failure stays readable.
    let mut ok = vec![0u8; 7000];
    buf.read_exact_at(0, &mut ok).unwrap();
    assert_eq!(ok, model[..7000]);
    // The source's error is the error's source.
    let source = std::error::Error::source(inner(&first)).unwrap();
    assert_eq!(source.to_string(), "scripted failure at 7000");
    assert!(format!("{buf:?}").contains("scripted failure"));
}

#[test]
fn chunk_iterator_errors_are_sticky_too() {
    let model = data(5000, 32);
    let mut chunks = chunked(&model[..3000], &[1000]);
    chunks.push(Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone")));
    chunks.push(Ok(model[3000..].to_vec())); // never reached
    let buf = StreamBuffer::from_chunks(chunks);
    assert_eq!(
        buf.fill_to_end().unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    assert_eq!(buf.read_range(0..3000).unwrap(), model[..3000]);
    assert_eq!(
        buf.read_range(0..3001).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    assert_eq!(buf.stats().source_bytes, 3000);
}

#[test]
fn interrupted_is_retried() {
    let model = data(50_000, 33);
    let source = Scripted::new(model.clone(), 777).interrupt_every(2);
    let buf = StreamBuffer::builder()
        .segment_size(1024)
        .build(source)
        .unwrap();
    assert_eq!(buf.read_range(0..50_000).unwrap(), model);
    assert_eq!(buf.fill_to_end().unwrap(), 50_000);
}

#[test]
fn a_panicking_source_is_an_error_not_a_hang() {
    let model = data(8000, 34);
    let buf = StreamBuffer::new(Scripted::new(model.clone(), 1000).panic_at(5000));
    let err = buf.fill_to_end().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(
        matches!(inner(&err), Error::SourcePanicked { offset: 5000, message } if message.contains("scripted panic"))
    );
    assert_eq!(
        buf.read_at(4000, &mut [0u8; 2000]).unwrap_err().kind(),
        io::ErrorKind::Other
    );
    assert_eq!(buf.read_range(0..5000).unwrap(), model[..5000]);
}

#[test]
fn a_source_ending_before_its_declared_length_is_an_error() {
    let model = data(3000, 35);
    let buf = StreamBuffer::builder()
        .len(4000)
        .build(Scripted::new(model.clone(), 512))
        .unwrap();
    assert_eq!(buf.len(), Some(4000));
    assert_eq!(buf.read_range(0..3000).unwrap(), model);
    let err = buf.read_at(2990, &mut [0u8; 20]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert!(matches!(
        inner(&err),
        Error::EndedEarly {
            declared: 4000,
            actual: 3000
        }
    ));
    assert_eq!(
        buf.fill_to_end().unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

#[test]
fn a_source_running_past_its_declared_length_is_an_error() {
    let model = data(5000, 36);
    let buf = StreamBuffer::builder()
        .len(4000)
        .build(Scripted::new(model.clone(), 512))
        .unwrap();
    // Reads within the declared length are served, clipped at it.
    let mut dst = [0u8; 100];
    assert_eq!(buf.read_at(3950, &mut dst).unwrap(), 50);
    assert_eq!(&dst[..50], expected(&model, 3950, 50));
    let err = buf.fill_to_end().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(inner(&err), Error::RanLong { declared: 4000 }));
    let dir = tempfile::tempdir().unwrap();
    assert!(buf.save(dir.path().join("x")).is_err());
    assert!(!dir.path().join("x").exists());
}

#[test]
fn a_source_claiming_more_than_it_was_given_is_an_error() {
    struct Liar;
    impl io::Read for Liar {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            Ok(buf.len() + 1)
        }
    }
    let buf = StreamBuffer::new(Liar);
    let err = buf.read_at(0, &mut [0u8; 10]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
