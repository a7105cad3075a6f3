//! HttpSink against a real HTTP server on loopback (`tests/servers/recording_http.py`) that
//! records every request and fails the ones it is told to: every byte arrives once and in
//! order, retries happen and are counted, failures end with their cause.
#![cfg(feature = "client")]

mod common;

use std::io::{self, Write};
use std::time::{Duration, Instant};

use common::data;
use common::http_server::Recording;
use sparsebuf::{HttpSink, HttpStatus, RetryPolicy, StreamBuffer};

/// Pushes `model` through an `emit(chunk).sink(sink)` consumer; returns `join`'s result.
fn push_through(model: &[u8], chunk: usize, sink: HttpSink, policy: RetryPolicy) -> io::Result<()> {
    let (mut writer, buf) = StreamBuffer::builder().build_push().unwrap();
    let consumer = buf.emit(chunk).retry(policy).sink(sink).unwrap();
    for piece in model.chunks(3000) {
        writer.write_all(piece).unwrap();
    }
    writer.finish().unwrap();
    consumer.join().map(drop)
}

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts).backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// The accepted requests' ranges must tile `[0, total)` in order, the last one with the total.
fn assert_ranges(log: &[common::http_server::Request], total: usize, chunk: usize) {
    let accepted: Vec<_> = log
        .iter()
        .filter(|r| r.status == 201 && r.len > 0)
        .collect();
    let mut at = 0;
    for (i, r) in accepted.iter().enumerate() {
        let last = i == accepted.len() - 1;
        let end = at + r.len - 1;
        let expect = if last {
            format!("bytes {at}-{end}/{total}")
        } else {
            assert_eq!(r.len, chunk);
            format!("bytes {at}-{end}/*")
        };
        assert_eq!(r.range, expect);
        at += r.len;
    }
    assert_eq!(at, total);
}

#[test]
fn every_byte_arrives_once_in_order_with_ranges_and_headers() {
    let server = Recording::start(&[]);
    let model = data(100_000, 1);
    let sink = HttpSink::post(format!("{}/ingest", server.url))
        .header("Authorization", "Bearer token-1")
        .final_request(true);
    push_through(&model, 8192, sink, quick(3)).unwrap();
    assert!(server.data() == model);
    let log = server.log();
    assert_ranges(&log, model.len(), 8192);
    assert!(log
        .iter()
        .all(|r| r.method == "POST" && r.auth == "Bearer token-1"));
    let last = log.last().unwrap();
    assert_eq!((last.range.as_str(), last.len), ("bytes */100000", 0));
    assert_eq!(log.len(), 100_000 / 8192 + 2);
}

#[test]
fn server_errors_are_retried_after_retry_after_and_counted() {
    let server = Recording::start(&[
        "--status",
        "2:503",
        "--status",
        "3:503",
        "--retry-after",
        "1",
    ]);
    let model = data(50_000, 2);
    // The server's Retry-After is obeyed up to the policy's longest wait (here 2 s).
    let policy = RetryPolicy::new(4).backoff(Duration::from_millis(10), Duration::from_secs(2));
    let started = Instant::now();
    push_through(
        &model,
        10_000,
        HttpSink::put(format!("{}/up", server.url)),
        policy.clone(),
    )
    .unwrap();
    // Two failures, each retried after the server's one second at least.
    assert_eq!(policy.retries(), 2);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(server.data() == model);
    let log = server.log();
    assert_eq!(log.iter().filter(|r| r.status == 503).count(), 2);
    assert!(log.iter().all(|r| r.method == "PUT"));
    assert_ranges(&log, model.len(), 10_000);
}

#[test]
fn a_client_error_fails_at_once_with_its_status() {
    let server = Recording::start(&["--status", "3:403"]);
    let model = data(50_000, 3);
    let policy = quick(5);
    let err = push_through(
        &model,
        10_000,
        HttpSink::post(server.url.clone()),
        policy.clone(),
    )
    .unwrap_err();
    let status = HttpStatus::of(&err).expect("the status inside");
    assert_eq!(status.status, 403);
    assert!(status.message.contains("scripted failure"), "{status}");
    assert_eq!(policy.retries(), 0);
    // Only the two pieces before it arrived.
    assert!(server.data() == model[..20_000]);
    assert_eq!(server.log().len(), 3);
}

#[test]
fn a_hanging_request_times_out_and_is_sent_again() {
    let server = Recording::start(&["--hang", "2"]);
    let model = data(40_000, 4);
    let policy = quick(3);
    let sink = HttpSink::post(server.url.clone()).timeout(Duration::from_millis(500));
    push_through(&model, 10_000, sink, policy.clone()).unwrap();
    assert_eq!(policy.retries(), 1);
    // The hung request's body was recorded before it hung, but not accepted.
    assert!(server.data() == model);
}

#[test]
fn a_server_that_is_gone_fails_with_connection_refused_after_the_retries() {
    let url = {
        let server = Recording::start(&[]);
        server.url.clone()
    }; // stopped: nothing listens there any more
    let policy = quick(3);
    let err = push_through(
        &data(20_000, 5),
        10_000,
        HttpSink::post(url),
        policy.clone(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(policy.retries(), 2);
}

#[test]
fn an_empty_stream_sends_one_empty_piece_with_its_total() {
    let server = Recording::start(&[]);
    push_through(&[], 1000, HttpSink::post(server.url.clone()), quick(1)).unwrap();
    let log = server.log();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].range.as_str(), log[0].len), ("bytes */0", 0));
}
