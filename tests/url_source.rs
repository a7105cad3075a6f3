//! URL sources (`Builder::build_url`, feature `http`) against real HTTP servers on loopback: a
//! sparsebuf `Server` (ranges honoured), and a hand-written scripted server that fails the
//! first requests, ignores ranges, or changes its ETag, to check retries and fallbacks.
#![cfg(feature = "http")]

mod common;

use std::io::{self, BufRead, BufReader, Cursor, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::data;
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

/// How the scripted server answers.
#[derive(Clone, Copy)]
struct Script {
    /// Answer 503 (with `Retry-After: 0`) to this many requests first.
    fail_first: usize,
    /// Ignore `Range`: always 200 with the whole.
    ignore_ranges: bool,
    /// Answer everything with this status instead.
    status: Option<u16>,
}

/// A minimal HTTP/1.1 server on loopback serving `model` per `script`; counts requests.
fn scripted(model: Vec<u8>, script: Script) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/file", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let model = Arc::new(model);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (model, count) = (model.clone(), count.clone());
            thread::spawn(move || {
                let _ = answer(stream, &model, script, &count);
            });
        }
    });
    (url, requests)
}

fn answer(stream: TcpStream, model: &[u8], script: Script, count: &AtomicUsize) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut range = None;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            if header.trim().is_empty() {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("range: bytes=") {
                let (a, b) = value.trim().split_once('-').unwrap();
                let a: usize = a.parse().unwrap();
                let last = model.len().saturating_sub(1);
                let b: usize = b.parse::<usize>().map_or(last, |b| b.min(last));
                range = Some((a, b));
            }
        }
        let n = count.fetch_add(1, Ordering::SeqCst);
        if let Some(status) = script.status {
            let body = b"no such thing";
            write!(
                out,
                "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
            continue;
        }
        if n < script.fail_first {
            write!(
                out,
                "HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n"
            )?;
            continue;
        }
        match range.filter(|_| !script.ignore_ranges) {
            Some((a, b)) if a < model.len() => {
                write!(
                    out,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\n\
                     ETag: \"v1\"\r\nContent-Length: {}\r\n\r\n",
                    model.len(),
                    b + 1 - a
                )?;
                out.write_all(&model[a..=b])?;
            }
            Some(_) => {
                let len = model.len();
                write!(out, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n")?;
            }
            None => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    model.len()
                )?;
                out.write_all(model)?;
            }
        }
    }
}

#[test]
fn transient_failures_are_retried_before_a_read_fails() {
    let model = data(300_000, 2);
    let script = Script {
        fail_first: 3,
        ignore_ranges: false,
        status: None,
    };
    let (url, requests) = scripted(model.clone(), script);
    // The probe meets three 503s, then succeeds.
    let buffer = StreamBuffer::builder().build_url(&url).unwrap();
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    assert_eq!(buffer.len(), Some(model.len() as u64));
    assert!(buffer.read_range(0..u64::MAX).unwrap() == model);
}

#[test]
fn a_server_that_ignores_ranges_is_read_forward_with_its_length() {
    let model = data(500_000, 3);
    let script = Script {
        fail_first: 0,
        ignore_ranges: true,
        status: None,
    };
    let (url, requests) = scripted(model.clone(), script);
    let buffer = StreamBuffer::builder().build_url(&url).unwrap();
    // Content-Length gave the length, before a byte was read.
    assert_eq!(buffer.len(), Some(model.len() as u64));
    let mut tail = [0u8; 10];
    buffer
        .read_exact_at(model.len() as u64 - 10, &mut tail)
        .unwrap();
    assert_eq!(tail, model[model.len() - 10..]);
    assert!(buffer.read_range(0..u64::MAX).unwrap() == model);
    // One request: the probe's body is the stream.
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_client_error_fails_at_once_with_its_status() {
    let script = Script {
        fail_first: 0,
        ignore_ranges: false,
        status: Some(404),
    };
    let (url, requests) = scripted(Vec::new(), script);
    let error = StreamBuffer::builder().build_url(&url).unwrap_err();
    let status = HttpStatus::of(&error).expect("an HttpStatus inside");
    assert_eq!(status.status, 404);
    assert!(status.message.contains("no such thing"), "{status}");
    assert_eq!(requests.load(Ordering::SeqCst), 1, "a 404 is not retried");

    let error = StreamBuffer::builder()
        .build_url("ftp://127.0.0.1/x")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
}
