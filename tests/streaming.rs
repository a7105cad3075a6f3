//! Streamed ranges (`RangeSource::open_at`) over a network: URL sources against a loopback
//! origin that logs every response (`common/origin.rs`) and against nginx. A sequential reader
//! is served by few, growing requests; a response is published segment by segment as it
//! arrives, kept while reads follow it, closed when it runs into filled bytes; a far seek opens
//! a response of its own; budgets hold. Every byte is compared with the model.
#![cfg(feature = "client")]

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::origin::{Behaviour, Origin, Served};
use common::{data, Rng};
use sparsebuf::StreamBuffer;

const MIB: u64 = 1 << 20;
const SEG: u64 = 64 * 1024;

/// Reads all of `buffer` front to back with a `Reader` in `piece`-byte reads, checking each.
fn read_sequentially(buffer: &StreamBuffer, model: &[u8], piece: usize) {
    let mut reader = buffer.reader();
    let mut buf = vec![0u8; piece];
    let mut at = 0;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n] == model[at..at + n], "wrong bytes at {at}");
        at += n;
    }
    assert_eq!(at, model.len());
}

/// The requests (not the probe, `bytes=0-0`) that start at or after `from`.
fn requests_from(log: &[Served], from: u64) -> Vec<&Served> {
    log.iter()
        .filter(|s| s.range.is_some_and(|(a, b)| a >= from && b != Some(0)))
        .collect()
}

#[test]
fn a_sequential_read_is_served_by_at_most_one_request_per_8_mib_after_the_first() {
    let model = Arc::new(data(64 << 20, 1));
    let origin = Origin::start(model.clone(), Behaviour::default());
    let buffer = StreamBuffer::builder().build_url(&origin.url).unwrap();
    read_sequentially(&buffer, &model, 64 * 1024);
    let log = origin.log();
    let after = requests_from(&log, MIB);
    let allowed = (model.len() as u64 - MIB).div_ceil(8 * MIB) as usize;
    assert!(
        after.len() <= allowed,
        "{} requests after the first MiB (at most {allowed}): {after:?}",
        after.len()
    );
    // No byte came twice: the responses' bodies do not overlap.
    let mut spans: Vec<(u64, u64)> = log
        .iter()
        .filter(|s| s.range.is_some_and(|(_, b)| b != Some(0)))
        .map(|s| (s.start, s.start + s.sent))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping responses: {spans:?}");
    }
    assert_eq!(buffer.stats().source_bytes, model.len() as u64);
}

#[test]
fn a_sequential_read_from_nginx_makes_few_requests() {
    let model = data(48 << 20, 2);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("object.bin"), &model).unwrap();
    let nginx = common::nginx::Nginx::start(root.path(), "");
    let buffer = StreamBuffer::builder()
        .build_url(&nginx.url("object.bin"))
        .unwrap();
    read_sequentially(&buffer, &model, 100_000);
    let requests = nginx.requests();
    // The probe, the ramp to 1 MiB (5), then at most one per 8 MiB.
    let allowed = 1 + 5 + (model.len() as u64 - MIB).div_ceil(8 * MIB) as usize;
    assert!(
        requests.len() <= allowed,
        "{} requests (at most {allowed}): {requests:?}",
        requests.len()
    );
}

#[test]
fn the_first_segment_of_a_long_response_is_readable_before_the_response_ends() {
    let model = Arc::new(data(4 << 20, 3));
    let behaviour = Behaviour {
        stall_after: Some(3 * SEG + 100),
        ..Behaviour::default()
    };
    let origin = Origin::start(model.clone(), behaviour);
    let buffer = StreamBuffer::builder().build_url(&origin.url).unwrap();
    // One read of 1 MiB: one request of 1 MiB, which stalls after three segments.
    let long = buffer.clone();
    let reading = std::thread::spawn(move || long.read_range(0..MIB).unwrap());
    let start = Instant::now();
    let mut first = vec![0u8; SEG as usize];
    loop {
        // The first segment is published as soon as its bytes came, long before the response
        // ends (which it cannot, until released).
        if buffer.location(0, SEG) == sparsebuf::Location::BeforeIndex {
            buffer.read_exact_at(0, &mut first).unwrap();
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first segment never became readable while its response stalled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(first[..] == model[..SEG as usize]);
    assert!(!reading.is_finished());
    let served = origin.log();
    assert!(served
        .iter()
        .any(|s| !s.finished() && s.range.is_some_and(|(a, _)| a == 0)));
    origin.release();
    let whole = reading.join().unwrap();
    assert!(whole[..] == model[..MIB as usize]);
}

#[test]
fn a_request_stops_where_bytes_are_filled_already() {
    let model = Arc::new(data(24 << 20, 4));
    let origin = Origin::start(model.clone(), Behaviour::default());
    let buffer = StreamBuffer::builder()
        .segment_size(SEG as usize)
        .memory_budget(64 << 20)
        .build_url(&origin.url)
        .unwrap();
    // Bytes at 3 MiB are filled first, by a read of their own.
    let filled = 3 * MIB..3 * MIB + SEG;
    let got = buffer.read_range(filled.clone()).unwrap();
    assert!(got[..] == model[filled.start as usize..filled.end as usize]);
    // Then a sequential reader from 0: its requests grow, and the one that would cover the
    // filled bytes ends where they start (a response bringing them again would be waste, and
    // would have to be closed there, with whatever its connection had buffered).
    read_sequentially(&buffer, &model, 64 * 1024);
    let log = origin.log();
    let covers = |s: &Served| s.start < filled.end && s.start + s.len > filled.start;
    let covering: Vec<_> = log.iter().filter(|s| covers(s)).collect();
    assert_eq!(covering.len(), 1, "only the read of their own: {log:?}");
    assert!(log
        .iter()
        .any(|s| s.start + s.len == filled.start && s.start < filled.start));
    // A fresh one starts after them; every byte came once (and the probe's one byte).
    assert!(log.iter().any(|s| s.start == filled.end));
    let sent: u64 = log.iter().map(|s| s.sent).sum();
    assert_eq!(sent, model.len() as u64 + 1, "{log:?}");
}

#[test]
fn a_far_seek_opens_a_response_of_its_own_while_the_first_serves_its_reader() {
    let model = Arc::new(data(64 << 20, 5));
    let origin = Origin::start(model.clone(), Behaviour::default());
    let buffer = StreamBuffer::builder()
        .memory_budget(64 << 20)
        .build_url(&origin.url)
        .unwrap();
    let mut near = buffer.reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0usize;
    let mut read_near = |near: &mut sparsebuf::Reader, until: usize, at: &mut usize| {
        while *at < until {
            let n = near.read(&mut buf).unwrap();
            assert!(buf[..n] == model[*at..*at + n]);
            *at += n;
        }
    };
    read_near(&mut near, 3 << 20, &mut at);
    let before = origin.requests();
    // Another reader far away: one request there, of its run only.
    let far = 48 * MIB;
    assert!(
        buffer.read_range(far..far + 4096).unwrap()[..] == model[far as usize..far as usize + 4096]
    );
    let seek = origin.log()[before..].to_vec();
    assert!(
        seek.iter()
            .any(|s| s.range == Some((far, Some(far + SEG - 1)))),
        "the far read's request: {seek:?}"
    );
    // The first reader goes on: no byte it gets is asked for twice.
    read_near(&mut near, 12 << 20, &mut at);
    let log = origin.log();
    let mut spans: Vec<(u64, u64)> = log
        .iter()
        .filter(|s| s.range.is_some_and(|(_, b)| b != Some(0)))
        .map(|s| (s.start, s.start + s.sent))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "a byte was asked for twice: {spans:?}"
        );
    }
}

#[test]
fn budgets_hold_while_a_256_mib_object_streams_through_4_mib_of_ram_and_8_of_disk() {
    let model = Arc::new(data(256 << 20, 6));
    let origin = Origin::start(model.clone(), Behaviour::default());
    let (memory, disk) = (4 << 20, 8 << 20);
    let buffer = StreamBuffer::builder()
        .memory_budget(memory)
        .disk_budget(disk)
        .build_url(&origin.url)
        .unwrap();
    let mut reader = buffer.reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0usize;
    let mut peak = (0, 0);
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n] == model[at..at + n], "wrong bytes at {at}");
        at += n;
        let stats = buffer.stats();
        peak = (
            peak.0.max(stats.memory_bytes),
            peak.1.max(stats.spilled_bytes),
        );
        // One run of a fetch in flight may sit over the memory budget until it is published.
        assert!(stats.memory_bytes <= memory as u64 + 16 * SEG, "{stats:?}");
        assert!(stats.spilled_bytes <= disk, "{stats:?}");
    }
    assert_eq!(at, model.len());
    let requests = requests_from(&origin.log(), MIB).len();
    assert!(requests <= 32, "{requests} requests after the first MiB");
    assert!(peak.1 > 0, "nothing was spilled: {peak:?}");
}

#[test]
fn scattered_reads_make_one_request_of_their_run_each() {
    let model = Arc::new(data(32 << 20, 7));
    let origin = Origin::start(model.clone(), Behaviour::default());
    let buffer = StreamBuffer::builder()
        .memory_budget(64 << 20)
        .build_url(&origin.url)
        .unwrap();
    let mut rng = Rng(7);
    let reads = 300;
    for _ in 0..reads {
        let at = rng.below(model.len() as u64 - 4096);
        let got = buffer.read_range(at..at + 4096).unwrap();
        assert!(got[..] == model[at as usize..at as usize + 4096]);
    }
    let log = origin.log();
    let requests = requests_from(&log, 0);
    assert!(
        requests.len() <= reads,
        "{} requests for {reads} reads",
        requests.len()
    );
    for s in &requests {
        assert!(
            s.len <= 2 * SEG,
            "a scattered read asked for {} bytes: {s:?}",
            s.len
        );
    }
}
