//! Fault injection in the spill storage: failed and short-of-space writes, transient and
//! persistent. No panic, no hang, no wrong byte; failures counted; data stays in RAM.

mod common;

use std::io::{self, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;

use common::{data, expected, Fault, Faulty, Rng, Scripted};
use sparsebuf::StreamBuffer;

const SEGMENT: usize = 4096;

fn run(fault: Fault) -> (StreamBuffer, Arc<Faulty>, Vec<u8>) {
    let model = data(300_000, 41);
    let storage = Arc::new(Faulty::new(fault));
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(4 * SEGMENT)
        .spill_storage(storage.clone())
        .build(Scripted::new(model.clone(), 3000))
        .unwrap();
    // Random reads while the stream is pulled, from a few threads, then everything.
    thread::scope(|s| {
        for t in 0..4 {
            let (buf, model) = (buf.clone(), &model);
            s.spawn(move || {
                let mut rng = Rng(t);
                for _ in 0..100 {
                    let offset = rng.below(310_000);
                    let len = rng.below(20_000) as usize;
                    let mut dst = vec![0u8; len];
                    let n = buf.read_at(offset, &mut dst).unwrap();
                    assert_eq!(&dst[..n], expected(model, offset, len));
                }
            });
        }
    });
    let mut all = Vec::new();
    buf.reader().read_to_end(&mut all).unwrap();
    assert_eq!(all, model);
    (buf, storage, model)
}

#[test]
fn without_faults_everything_spills() {
    let (buf, storage, _) = run(Fault::None);
    let st = buf.stats();
    assert_eq!(st.spill_errors, 0);
    assert!(st.segments_spilled >= 60, "{st:?}");
    assert!(st.memory_bytes <= 5 * SEGMENT as u64, "{st:?}");
    assert_eq!(storage.failed_writes.load(Ordering::SeqCst), 0);
    assert!(buf.spill_error().is_none());
}

#[test]
fn one_failed_write_keeps_the_segment_in_ram_and_is_retried() {
    let (buf, storage, _) = run(Fault::FailNthWrite {
        n: 3,
        persistent: false,
    });
    let st = buf.stats();
    assert_eq!(st.spill_errors, 1, "{st:?}");
    assert_eq!(storage.failed_writes.load(Ordering::SeqCst), 1);
    // The failed segment was retried later, so RAM is back within budget.
    assert!(st.memory_bytes <= 5 * SEGMENT as u64, "{st:?}");
    let err = buf.spill_error().unwrap();
    assert!(err.to_string().contains("injected EIO"), "{err}");
}

#[test]
fn persistent_write_failures_keep_everything_in_ram() {
    let (buf, _, model) = run(Fault::FailNthWrite {
        n: 1,
        persistent: true,
    });
    let st = buf.stats();
    assert_eq!(st.segments_spilled, 0);
    assert!(st.spill_errors > 10, "{st:?}");
    // Over budget, by design: no data was dropped.
    assert!(st.memory_bytes >= model.len() as u64, "{st:?}");
}

#[test]
fn no_space_after_some_bytes_spills_what_fits() {
    for persistent in [true, false] {
        let (buf, _, _) = run(Fault::NoSpaceAfter {
            bytes: 10 * SEGMENT as u64,
            persistent,
        });
        let st = buf.stats();
        assert!(st.spill_errors > 0, "{st:?}");
        let err = buf.spill_error().unwrap();
        assert_eq!(err.raw_os_error(), None); // wrapped with context
        assert_eq!(
            err.kind(),
            io::Error::from_raw_os_error(common::ENOSPC).kind()
        );
        if persistent {
            assert_eq!(st.segments_spilled, 10, "{st:?}");
        } else {
            assert!(st.segments_spilled > 10, "{st:?}");
        }
    }
}

#[test]
fn failing_reads_of_spilled_data_are_errors_not_wrong_bytes() {
    let model = data(100_000, 42);
    let storage = Arc::new(Faulty::new(Fault::None));
    let buf = StreamBuffer::builder()
        .segment_size(SEGMENT)
        .memory_budget(SEGMENT)
        .spill_storage(storage.clone())
        .build(Scripted::new(model.clone(), 5000))
        .unwrap();
    buf.fill_to_end().unwrap();
    storage.fail_reads.store(true, Ordering::SeqCst);
    let err = buf.read_at(0, &mut [0u8; 100]).unwrap_err();
    assert!(err.to_string().contains("injected read failure"));
    storage.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(buf.read_range(0..100_000).unwrap(), model);
}
