//! Many threads reading random ranges while the stream is still being pulled from a slow
//! source; every byte checked.

mod common;

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use common::{data, expected, within, Rng, Scripted};
use sparsebuf::StreamBuffer;

const THREADS: usize = 16;

#[test]
fn sixteen_readers_on_a_slow_spilling_stream() {
    within(Duration::from_secs(120), || {
        let model = data(3 << 20, 21);
        let source = Scripted::new(model.clone(), 7_001).delay(Duration::from_micros(200));
        let buf = StreamBuffer::builder()
            .segment_size(16 * 1024)
            .memory_budget(128 * 1024)
            .build(source)
            .unwrap();
        let barrier = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (buf, model, barrier) = (buf.clone(), &model, &barrier);
                s.spawn(move || {
                    let mut rng = Rng(t as u64 + 1);
                    let total = model.len() as u64;
                    barrier.wait();
                    for i in 0..150 {
                        let offset = rng.below(total + 1000);
                        let len = rng.below(70_000) as usize;
                        match i % 3 {
                            0 => {
                                let mut dst = vec![0u8; len];
                                let n = buf.read_at(offset, &mut dst).unwrap();
                                assert_eq!(&dst[..n], expected(model, offset, len));
                            }
                            1 => {
                                let got = buf.read_range(offset..offset + len as u64).unwrap();
                                assert_eq!(&got[..], expected(model, offset, len));
                            }
                            _ => {
                                let mut r = buf.reader();
                                r.seek(SeekFrom::Start(offset)).unwrap();
                                let mut got = Vec::new();
                                r.take(len as u64).read_to_end(&mut got).unwrap();
                                assert_eq!(&got[..], expected(model, offset, len));
                            }
                        }
                    }
                });
            }
        });
        let st = buf.stats();
        assert!(st.segments_spilled > 0, "{st:?}");
        assert_eq!(st.source_bytes, 3 << 20);
    });
}

#[test]
fn readers_waiting_past_the_frontier_all_get_the_sticky_error() {
    within(Duration::from_secs(60), || {
        let model = data(200_000, 22);
        let source = Scripted::new(model.clone(), 1000)
            .delay(Duration::from_micros(300))
            .fail_at(150_000, io::ErrorKind::ConnectionReset);
        let buf = StreamBuffer::builder()
            .segment_size(4096)
            .memory_budget(16 * 1024)
            .build(source)
            .unwrap();
        let barrier = Barrier::new(THREADS);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (buf, model, barrier) = (buf.clone(), &model, &barrier);
                s.spawn(move || {
                    let mut rng = Rng(100 + t as u64);
                    barrier.wait();
                    for _ in 0..40 {
                        let offset = rng.below(200_000);
                        let len = 1 + rng.below(20_000) as usize;
                        let mut dst = vec![0u8; len];
                        match buf.read_at(offset, &mut dst) {
                            Ok(n) => {
                                assert!(
                                    offset + len as u64 <= 150_000,
                                    "read past the failure: {offset}+{len} -> {n} {buf:?}"
                                );
                                assert_eq!(&dst[..n], expected(model, offset, len));
                            }
                            Err(e) => {
                                assert!(offset + len as u64 > 150_000, "needless error: {e}");
                                assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
                                assert!(e.to_string().contains("offset 150000"), "{e}");
                            }
                        }
                    }
                });
            }
        });
    });
}

#[test]
fn a_panicking_source_does_not_hang_waiting_readers() {
    within(Duration::from_secs(60), || {
        let model = data(100_000, 23);
        let source = Scripted::new(model.clone(), 500)
            .delay(Duration::from_micros(200))
            .panic_at(60_000);
        let buf = StreamBuffer::builder()
            .segment_size(4096)
            .build(source)
            .unwrap();
        thread::scope(|s| {
            for t in 0..THREADS {
                let (buf, model) = (buf.clone(), &model);
                s.spawn(move || {
                    let offset = 50_000 + t as u64 * 1000;
                    let mut dst = vec![0u8; 20_000];
                    let err = buf.read_at(offset, &mut dst).unwrap_err();
                    assert_eq!(err.kind(), io::ErrorKind::Other);
                    assert!(err.to_string().contains("panicked"), "{err}");
                    // Bytes before the panic are still served.
                    buf.read_exact_at(0, &mut dst).unwrap();
                    assert_eq!(dst, model[..20_000]);
                });
            }
        });
    });
}
