//! Object storage against a real S3 API (`moto_server`, started per test on loopback), checked
//! with an independent client (`curl`): uploads, sparse reads, aborts and missing buckets.
#![cfg(feature = "object-store")]

mod common;

use std::io::{self, Write};
use std::time::Duration;

use common::moto::Moto;
use common::{data, within};
use sparsebuf::object_store::path::Path;
use sparsebuf::object_store::ObjectStoreExt;
use sparsebuf::{upload, ObjectSink, ObjectSource, StreamBuffer, MIN_PART_SIZE};

#[test]
fn an_upload_in_parts_arrives_whole_and_leaves_no_pending_upload() {
    let moto = Moto::start();
    moto.create_bucket("uploads");
    let model = data(23 << 20, 1);
    let mut up = upload(moto.store("uploads"), Path::from("dir/object.bin"))
        .unwrap()
        .part_size(MIN_PART_SIZE)
        .unwrap()
        .parts_in_flight(3)
        .unwrap();
    for piece in model.chunks(100_000) {
        up.write_all(piece).unwrap();
    }
    assert_eq!(up.parts().0 + up.parts().1 as u64, 4); // 4 full parts sent, the rest at finish
    assert_eq!(up.finish().unwrap(), model.len() as u64);
    assert!(moto.get("uploads", "dir/object.bin").unwrap() == model);
    assert_eq!(moto.pending_uploads("uploads"), 0);
}

#[test]
fn a_small_object_is_one_put() {
    let moto = Moto::start();
    moto.create_bucket("small");
    let model = data(300_000, 2);
    let mut up = upload(moto.store("small"), Path::from("s.bin")).unwrap();
    up.write_all(&model).unwrap();
    assert_eq!(up.parts(), (0, 0));
    up.finish().unwrap();
    assert!(moto.get("small", "s.bin").unwrap() == model);
    // An empty object too.
    upload(moto.store("small"), Path::from("empty"))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(moto.get("small", "empty").unwrap(), b"");
}

#[test]
fn a_dropped_upload_leaves_no_object_and_no_pending_upload() {
    let moto = Moto::start();
    moto.create_bucket("dropped");
    let mut up = upload(moto.store("dropped"), Path::from("half.bin"))
        .unwrap()
        .part_size(MIN_PART_SIZE)
        .unwrap();
    up.write_all(&data(12 << 20, 3)).unwrap();
    assert!(up.parts().0 + up.parts().1 as u64 >= 2);
    drop(up);
    assert_eq!(moto.get("dropped", "half.bin"), None);
    assert_eq!(moto.pending_uploads("dropped"), 0);
}

#[test]
fn a_missing_bucket_is_not_found_from_a_write_or_from_finish() {
    let moto = Moto::start();
    // Large enough for a multipart upload: the create fails at the first full part.
    let mut up = upload(moto.store("no-such-bucket"), Path::from("x")).unwrap();
    let err = up.write_all(&data(9 << 20, 4)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    // The same error again, then finish and drop do not panic.
    assert_eq!(
        up.write_all(b"more").unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(up.finish().unwrap_err().kind(), io::ErrorKind::NotFound);
    // Small: the single put at finish fails.
    let mut up = upload(moto.store("no-such-bucket"), Path::from("y")).unwrap();
    up.write_all(b"tiny").unwrap();
    let err = up.finish().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    // A missing key is NotFound for a source.
    moto.create_bucket("present");
    let err = ObjectSource::new(moto.store("present"), Path::from("absent")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
}

#[test]
fn a_sink_consumer_uploads_a_windowed_push_stream_within_its_budgets() {
    let moto = Moto::start();
    moto.create_bucket("live");
    let segment = 1 << 20;
    let (mut writer, buf) = StreamBuffer::builder()
        .segment_size(segment)
        .memory_budget(16 * segment)
        .disk_budget(0)
        .window(16 * segment as u64)
        .build_push()
        .unwrap();
    let sink = ObjectSink::new(moto.store("live"), Path::from("stream.bin"))
        .part_size(MIN_PART_SIZE)
        .unwrap();
    let consumer = buf.emit(MIN_PART_SIZE).sink(sink).unwrap();
    let total = 200usize << 20;
    let peak = within(Duration::from_secs(300), move || {
        let mut at = 0;
        while at < total {
            let piece = data(1 << 20, at as u64);
            writer.write_all(&piece).unwrap();
            at += piece.len();
        }
        writer.finish().unwrap();
        consumer.join().unwrap();
        buf.stats().peak_memory_bytes
    });
    // The buffer stayed within its budget (plus the segment being filled and a spare).
    assert!(peak <= 18 * segment as u64, "{peak}");
    let got = moto.get("live", "stream.bin").unwrap();
    assert_eq!(got.len(), total);
    for (i, piece) in got.chunks(1 << 20).enumerate() {
        assert!(piece == data(1 << 20, (i << 20) as u64), "MiB {i} differs");
    }
    assert_eq!(moto.pending_uploads("live"), 0);
}

#[test]
fn an_object_is_read_sparsely_through_a_range_source() {
    let moto = Moto::start();
    moto.create_bucket("sparse");
    let model = data(8 << 20, 5);
    let mut up = upload(moto.store("sparse"), Path::from("big.bin")).unwrap();
    up.write_all(&model).unwrap();
    up.finish().unwrap();
    let source = ObjectSource::new(moto.store("sparse"), Path::from("big.bin")).unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(64 << 10)
        .build_ranged(source)
        .unwrap();
    assert_eq!(buf.len(), Some(model.len() as u64));
    let mut rng = common::Rng(9);
    for _ in 0..40 {
        let offset = rng.below(model.len() as u64 + 100);
        let len = rng.below(200_000) as usize;
        let mut dst = vec![0u8; len];
        let n = buf.read_at(offset, &mut dst).unwrap();
        assert_eq!(&dst[..n], common::expected(&model, offset, len));
    }
    // Only what was read was fetched.
    let fetched = buf.stats().source_bytes;
    assert!(fetched < model.len() as u64, "{fetched}");
}

/// Pins `ObjectSource` to the version its `HEAD` saw: an object replaced between two reads
/// fails the second with `InvalidData` (it once gave one buffer bytes of both versions).
#[test]
fn an_object_replaced_under_the_buffer_fails_the_read_instead_of_mixing() {
    let moto = Moto::start();
    moto.create_bucket("pinned");
    let store = moto.store("pinned");
    let (v1, v2) = (data(2 << 20, 30), data(2 << 20, 31));
    let put = |bytes: &[u8]| {
        let mut up = upload(store.clone(), Path::from("obj.bin")).unwrap();
        up.write_all(bytes).unwrap();
        up.finish().unwrap();
    };
    put(&v1);
    let source = ObjectSource::new(store.clone(), Path::from("obj.bin")).unwrap();
    let buf = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .build_ranged(source)
        .unwrap();
    assert!(buf.validators().etag.is_some());
    assert!(buf.read_range(0..100_000).unwrap() == v1[..100_000]);
    put(&v2);
    let error = buf.read_range(1_500_000..1_500_100).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert!(error.to_string().contains("the object changed"), "{error}");
    // What was read stays; nothing of the new version gets in.
    assert!(buf.read_range(0..100_000).unwrap() == v1[..100_000]);
    assert_eq!(
        buf.read_range(1_000_000..1_000_001).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

/// Part sizes past S3's largest (5 GiB) are refused; a large allowed one is not reserved whole
/// at the first write (`part_size(1 << 40)` once aborted the process there, `usize::MAX`
/// panicked).
#[test]
fn part_sizes_are_checked_and_parts_grow_as_they_fill() {
    let store: std::sync::Arc<dyn sparsebuf::object_store::ObjectStore> =
        std::sync::Arc::new(sparsebuf::object_store::memory::InMemory::new());
    for size in [usize::MAX, 1 << 40, (5 << 30) + 1] {
        let error = ObjectSink::new(store.clone(), Path::from("x"))
            .part_size(size)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{size}");
        let error = upload(store.clone(), Path::from("x"))
            .unwrap()
            .part_size(size)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{size}");
    }
    // The largest part: a write of 1 MiB costs about 8 MiB (a default part's room), not 5 GiB.
    let model = data(3 << 20, 32);
    let mut up = upload(store.clone(), Path::from("big-parts"))
        .unwrap()
        .part_size(5 << 30)
        .unwrap();
    up.write_all(&model).unwrap();
    assert_eq!(up.finish().unwrap(), model.len() as u64);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let got = runtime
        .block_on(async { store.get(&Path::from("big-parts")).await?.bytes().await })
        .unwrap();
    assert!(got == model);
}
