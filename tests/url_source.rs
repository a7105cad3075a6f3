//! URL sources (`Builder::build_url`, feature `http`) against real HTTP servers on loopback: a
//! sparsebuf `Server` (ranges honoured), nginx, and a scripted upstream (`common/upstream.rs`)
//! that fails the first requests, ignores ranges, or changes the resource under the buffer with
//! each kind of validator, to check retries, fallbacks and that no buffer mixes two versions.
#![cfg(all(feature = "client", feature = "server"))]

mod common;

use std::io::{self, Cursor};

use common::data;
use common::upstream::{Script, Tags, Upstream};
use sparsebuf::{HttpStatus, Server, StreamBuffer};

#[test]
fn a_ranged_upstream_is_read_sparsely_with_its_length() {
    let model = data(8 << 20, 1);
    let upstream = StreamBuffer::builder()
        .len(model.len() as u64)
        .build(Cursor::new(model.clone()))
        .unwrap();
    let running = Server::new(upstream).start("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", running.local_addr());
    let buffer = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .build_url(&url)
        .unwrap();
    assert_eq!(buffer.len(), Some(model.len() as u64));
    let mut tail = vec![0u8; 100_000];
    let at = model.len() as u64 - 100_000;
    buffer.read_exact_at(at, &mut tail).unwrap();
    assert!(tail == model[at as usize..]);
    let mut middle = vec![0u8; 5000];
    buffer.read_exact_at(4_000_000, &mut middle).unwrap();
    assert!(middle == model[4_000_000..4_005_000]);
    let fetched = buffer.stats().source_bytes;
    assert!(
        fetched < 1 << 20,
        "fetched {fetched} bytes for two small reads"
    );
    assert!(buffer.read_range(0..u64::MAX).unwrap() == model);
    running.stop().unwrap();
}

#[test]
fn transient_failures_are_retried_before_a_read_fails() {
    let model = data(300_000, 2);
    let mut script = Script::new(model.clone(), Vec::new(), usize::MAX);
    script.fail_first = 3;
    let upstream = Upstream::start(script);
    // The probe meets three 503s, then succeeds.
    let buffer = StreamBuffer::builder().build_url(&upstream.url).unwrap();
    assert_eq!(upstream.requests(), 4);
    assert_eq!(buffer.len(), Some(model.len() as u64));
    assert!(buffer.read_range(0..u64::MAX).unwrap() == model);
}

#[test]
fn a_server_that_ignores_ranges_is_read_forward_with_its_length() {
    let model = data(500_000, 3);
    let mut script = Script::new(model.clone(), Vec::new(), usize::MAX);
    script.honour_range = false;
    let upstream = Upstream::start(script);
    let buffer = StreamBuffer::builder().build_url(&upstream.url).unwrap();
    // Content-Length gave the length, before a byte was read.
    assert_eq!(buffer.len(), Some(model.len() as u64));
    let mut tail = [0u8; 10];
    buffer
        .read_exact_at(model.len() as u64 - 10, &mut tail)
        .unwrap();
    assert_eq!(tail, model[model.len() - 10..]);
    assert!(buffer.read_range(0..u64::MAX).unwrap() == model);
    // One request: the probe's body is the stream.
    assert_eq!(upstream.requests(), 1);
}

#[test]
fn a_client_error_fails_at_once_with_its_status() {
    let mut script = Script::new(Vec::new(), Vec::new(), usize::MAX);
    script.status = Some(404);
    let upstream = Upstream::start(script);
    let error = StreamBuffer::builder()
        .build_url(&upstream.url)
        .unwrap_err();
    let status = HttpStatus::of(&error).expect("an HttpStatus inside");
    assert_eq!(status.status, 404);
    assert!(status.message.contains("no such thing"), "{status}");
    assert_eq!(upstream.requests(), 1, "a 404 is not retried");

    let error = StreamBuffer::builder()
        .build_url("ftp://127.0.0.1/x")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}

/// Two versions of one resource, of the same length and different bytes.
fn versions(len: usize) -> (Vec<u8>, Vec<u8>) {
    (data(len, 10), data(len, 11))
}

/// Reads `buffer` front to back in 64 KiB pieces. Every piece must be version 1's bytes,
/// until reads fail because the upstream changed; returns where they started failing (and the
/// error). Bytes of version 2 anywhere fail the test.
fn read_until_changed(buffer: &StreamBuffer, v1: &[u8]) -> (u64, io::Error) {
    let mut at = 0u64;
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        match buffer.read_at(at, &mut piece) {
            Ok(0) => panic!("read to the end without noticing the change"),
            Ok(n) => {
                assert!(
                    piece[..n] == v1[at as usize..at as usize + n],
                    "mixed bytes at {at}"
                );
                at += n as u64;
            }
            Err(error) => return (at, error),
        }
    }
}

/// The upstream changes after the probe and two requests (of one segment, then two). Returns the failure offset and error, after checking what a changed upstream must
/// give: `InvalidData`, bytes read before stay version 1's, later fetches fail without asking.
fn a_change_is_caught(script: Script) -> io::Error {
    let v1 = script.versions[0].clone();
    let upstream = Upstream::start(script);
    let buffer = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .max_fetches(1)
        .build_url(&upstream.url)
        .unwrap();
    let (failed_at, error) = read_until_changed(&buffer, &v1);
    assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    assert!(
        error.to_string().contains("the upstream resource changed"),
        "{error}"
    );
    // The probe and two requests before the change: the first for the first read's segment,
    // the second (which continues it) twice as large.
    assert_eq!(failed_at, 3 * 64 * 1024, "two requests before the change");
    // What was read stays readable and right; what was not fails again, without a request.
    assert!(buffer.read_range(0..failed_at).unwrap() == v1[..failed_at as usize]);
    let asked = upstream.requests();
    let again = buffer.read_range(failed_at..failed_at + 10).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    let far = buffer.read_range(1_500_000..1_500_010).unwrap_err();
    assert_eq!(far.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        upstream.requests(),
        asked,
        "a changed resource is not asked again"
    );
    error
}

/// Pins "never two versions": an upstream with only `Last-Modified` (nginx `etag off;`). The
/// ranged fetches carry `If-Range` with the date; after the change the upstream answers with
/// the whole new version (200), which fails the read (a 2 MiB response once held 1984 KiB of
/// the new version and 64 KiB of the old).
#[test]
fn an_upstream_with_only_last_modified_that_changes_fails_the_read() {
    let (v1, v2) = versions(2 << 20);
    let mut script = Script::new(v1, v2, 3);
    script.tags = Tags::None;
    let error = a_change_is_caught(script);
    assert!(error.to_string().contains("200"), "{error}");
}

/// Weak tags cannot go in `If-Range`, but every 206 must repeat the weak tag of the probe.
#[test]
fn an_upstream_with_weak_tags_that_changes_fails_the_read() {
    let (v1, v2) = versions(2 << 20);
    let mut script = Script::new(v1, v2, 3);
    script.tags = Tags::Weak;
    script.last_modified = false;
    let error = a_change_is_caught(script);
    assert!(error.to_string().contains("W/\"v2\""), "{error}");
}

/// An upstream that ignores `If-Range` answers 206 with the new version: its tag gives it away.
#[test]
fn an_upstream_that_ignores_if_range_and_changes_fails_the_read() {
    let (v1, v2) = versions(2 << 20);
    let mut script = Script::new(v1, v2, 3);
    script.honour_if_range = false;
    let error = a_change_is_caught(script);
    assert!(error.to_string().contains("\"v2\""), "{error}");
}

/// A 206 whose total differs from the probe's is a change too (it was accepted silently).
#[test]
fn a_range_with_another_total_fails_the_read() {
    let (v1, _) = versions(2 << 20);
    let mut script = Script::new(v1.clone(), v1, 3);
    script.honour_if_range = false;
    script.lie_about_total = Some(3 << 20);
    let error = a_change_is_caught(script);
    assert!(error.to_string().contains("length"), "{error}");
}

/// With no validator at all nothing could tell two versions apart: the resource is read
/// forward, from one plain GET after the probe.
#[test]
fn an_upstream_without_validators_is_read_forward_from_one_get() {
    let (v1, v2) = versions(1 << 20);
    let mut script = Script::new(v1.clone(), v2, 100);
    script.tags = Tags::None;
    script.last_modified = false;
    let upstream = Upstream::start(script);
    let buffer = StreamBuffer::builder().build_url(&upstream.url).unwrap();
    assert_eq!(buffer.len(), Some(v1.len() as u64));
    let mut tail = [0u8; 100];
    buffer
        .read_exact_at(v1.len() as u64 - 100, &mut tail)
        .unwrap();
    assert!(tail[..] == v1[v1.len() - 100..]);
    assert!(buffer.read_range(0..u64::MAX).unwrap() == v1);
    assert_eq!(upstream.requests(), 2, "the probe and one GET");
    assert!(buffer.validators().is_empty());
}

/// The pinned validators are the buffer's, and a well-behaved upstream is read sparsely.
#[test]
fn a_ranged_upstreams_validators_are_the_buffers() {
    let (v1, v2) = versions(1 << 20);
    let upstream = Upstream::start(Script::new(v1.clone(), v2, 1000));
    let buffer = StreamBuffer::builder().build_url(&upstream.url).unwrap();
    let validators = buffer.validators();
    assert_eq!(validators.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        validators.last_modified,
        Some(httpdate::parse_http_date("Mon, 06 Nov 2023 10:00:00 GMT").unwrap())
    );
    assert!(buffer.read_range(500_000..600_000).unwrap() == v1[500_000..600_000]);
}

/// Replaces `path` with `bytes` as a deploy would (a new file renamed over it), with a
/// modification time ten seconds later, so that even an upstream with only a one-second
/// `Last-Modified` sees a new version.
fn replace(path: &std::path::Path, bytes: &[u8]) {
    let old = std::fs::metadata(path).unwrap().modified().unwrap();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    let file = std::fs::File::options().write(true).open(&tmp).unwrap();
    file.set_modified(old + std::time::Duration::from_secs(10))
        .unwrap();
    drop(file);
    std::fs::rename(&tmp, path).unwrap();
}

/// nginx as the upstream, with and without ETags: a file replaced while the buffer reads it is
/// caught (a 200 to the ranged fetch's `If-Range`), and no read returns bytes of both.
#[test]
fn nginx_replacing_the_file_mid_read_never_mixes_versions() {
    for extra in ["etag off;", ""] {
        let (v1, v2) = versions(4 << 20);
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("film.bin");
        std::fs::write(&path, &v1).unwrap();
        let nginx = common::nginx::Nginx::start(root.path(), extra);
        let buffer = StreamBuffer::builder()
            .segment_size(64 * 1024)
            .max_fetches(1)
            .build_url(&nginx.url("film.bin"))
            .unwrap();
        assert_eq!(
            buffer.validators().etag.is_some(),
            extra.is_empty(),
            "{extra}"
        );
        assert!(buffer.read_range(0..1 << 20).unwrap() == v1[..1 << 20]);
        replace(&path, &v2);
        let (failed_at, error) = read_until_changed(&buffer, &v1);
        assert_eq!(failed_at, 1 << 20, "{extra}");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{extra}: {error}");
        assert!(buffer.read_range(0..failed_at).unwrap() == v1[..1 << 20]);
    }
}
