//! A scripted upstream on loopback for the URL-source tests: a small HTTP/1.1 server that
//! serves one resource in two versions (switching after a number of requests), with the
//! validators and the `Range`/`If-Range` behaviour each test asks for, and counts requests.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// Which validators the upstream sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tags {
    /// `ETag: "vN"`.
    Strong,
    /// `ETag: W/"vN"`.
    Weak,
    /// No ETag.
    None,
}

/// How the upstream behaves.
#[derive(Clone, Debug)]
pub struct Script {
    /// Version 1, then version 2 from request number `change_after` on (counting from 0).
    pub versions: [Vec<u8>; 2],
    pub change_after: usize,
    pub tags: Tags,
    /// Send `Last-Modified` (a different date per version).
    pub last_modified: bool,
    /// Honour `If-Range` (a mismatch gets the whole resource, 200); else ignore it.
    pub honour_if_range: bool,
    /// Answer ranges with this total in `Content-Range` instead of the truth, from the change
    /// on.
    pub lie_about_total: Option<u64>,
    /// Honour `Range` at all; else always 200 with the whole.
    pub honour_range: bool,
    /// Answer this many requests first with `503` and `Retry-After: 0`.
    pub fail_first: usize,
    /// Answer everything with this status (and a short body) instead.
    pub status: Option<u16>,
}

impl Script {
    /// Strong tags, dates, `If-Range` honoured: a well-behaved upstream.
    pub fn new(v1: Vec<u8>, v2: Vec<u8>, change_after: usize) -> Script {
        Script {
            versions: [v1, v2],
            change_after,
            tags: Tags::Strong,
            last_modified: true,
            honour_if_range: true,
            lie_about_total: None,
            honour_range: true,
            fail_first: 0,
            status: None,
        }
    }
}

/// The running upstream: its URL and the requests it got.
pub struct Upstream {
    pub url: String,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(script: Script) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/resource.bin", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let script = Arc::new(script);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (script, count) = (script.clone(), count.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &script, &count);
                });
            }
        });
        Upstream { url, requests }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

const DATES: [&str; 2] = [
    "Mon, 06 Nov 2023 10:00:00 GMT",
    "Tue, 07 Nov 2023 11:30:00 GMT",
];

fn serve(stream: TcpStream, script: &Script, count: &AtomicUsize) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut range, mut if_range) = (None, None);
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            if header.trim().is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = value.trim().strip_prefix("bytes=").map(str::to_string),
                "if-range" => if_range = Some(value.trim().to_string()),
                _ => {}
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
        let version = usize::from(n >= script.change_after);
        let body = &script.versions[version];
        let mut validators = String::new();
        let tag = format!("\"v{}\"", version + 1);
        match script.tags {
            Tags::Strong => validators += &format!("ETag: {tag}\r\n"),
            Tags::Weak => validators += &format!("ETag: W/{tag}\r\n"),
            Tags::None => {}
        }
        if script.last_modified {
            validators += &format!("Last-Modified: {}\r\n", DATES[version]);
        }
        let honoured = match (&if_range, script.honour_if_range) {
            (Some(value), true) => *value == tag || value == DATES[version],
            _ => true,
        };
        let len = body.len();
        let span = range
            .filter(|_| honoured && script.honour_range)
            .and_then(|r| {
                let (a, b) = r.split_once('-')?;
                let a: usize = a.trim().parse().ok()?;
                let b = b
                    .trim()
                    .parse::<usize>()
                    .map_or(len.saturating_sub(1), |b| b.min(len - 1));
                Some((a, b))
            });
        match span {
            Some((a, b)) if a < len && a <= b => {
                let total = match script.lie_about_total {
                    Some(total) if version == 1 => total,
                    _ => len as u64,
                };
                write!(
                    out,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{total}\r\n\
                     {validators}Content-Length: {}\r\n\r\n",
                    b + 1 - a
                )?;
                out.write_all(&body[a..=b])?;
            }
            Some(_) => write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\n\
                 Content-Length: 0\r\n\r\n"
            )?,
            None => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\n{validators}Content-Length: {len}\r\n\r\n"
                )?;
                out.write_all(body)?;
            }
        }
    }
}
