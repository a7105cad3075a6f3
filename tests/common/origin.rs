//! An origin on loopback for the streaming tests and the network benchmarks: serves one
//! resource with a strong `ETag` and `Last-Modified`, honours single `Range`s and `If-Range`,
//! keeps connections alive, and can add a fixed latency before each response, cap each
//! response's rate, and stall a response after some bytes until released. It logs every
//! response: the range asked for, the bytes sent, and whether the client took them all.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How the origin behaves.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Waited before each response's head.
    pub latency: Duration,
    /// Bytes per second per response (`None`: as fast as the socket takes them).
    pub rate: Option<u64>,
    /// Each response stops after this many body bytes until [`Origin::release`].
    pub stall_after: Option<u64>,
    /// Offsets of the resource where the origin cuts the connection, once each: the first
    /// response to reach one sends the bytes before it and closes without the rest.
    pub cut_at: Vec<u64>,
}

/// One response, as it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// The `Range` asked for: first byte and last byte (`None`: to the end); `None` without one.
    pub range: Option<(u64, Option<u64>)>,
    /// The request's path (every path serves the same resource).
    pub path: String,
    /// Where the body starts and how long it is.
    pub start: u64,
    pub len: u64,
    /// Body bytes written so far.
    pub sent: u64,
    /// The client closed the connection before the body was all written.
    pub cut: bool,
    /// The client closed the connection after this response (instead of keeping it for
    /// another request).
    pub closed: bool,
}

impl Served {
    /// Whether the body was written to its end.
    pub fn finished(&self) -> bool {
        self.sent == self.len
    }
}

struct Shared {
    data: Arc<Vec<u8>>,
    behaviour: Behaviour,
    log: Mutex<Vec<Served>>,
    released: Mutex<bool>,
    release: Condvar,
    /// The cuts still to come.
    cuts: Mutex<Vec<u64>>,
}

/// The running origin (its threads end with the process; each test starts its own).
pub struct Origin {
    pub url: String,
    shared: Arc<Shared>,
}

impl Origin {
    pub fn start(data: Arc<Vec<u8>>, behaviour: Behaviour) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/object.bin", listener.local_addr().unwrap());
        let cuts = Mutex::new(behaviour.cut_at.clone());
        let shared = Arc::new(Shared {
            data,
            cuts,
            behaviour,
            log: Mutex::new(Vec::new()),
            released: Mutex::new(false),
            release: Condvar::new(),
        });
        let accepting = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = accepting.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        Origin { url, shared }
    }

    /// Every response so far, in the order they started.
    pub fn log(&self) -> Vec<Served> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Body bytes sent so far, over every response.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.log.lock().unwrap().iter().map(|s| s.sent).sum()
    }

    /// The cuts still to come.
    pub fn cuts_left(&self) -> usize {
        self.shared.cuts.lock().unwrap().len()
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Lets stalled responses go on (and every later one run without stalling).
    pub fn release(&self) {
        *self.shared.released.lock().unwrap() = true;
        self.shared.release.notify_all();
    }
}

const DATE: &str = "Mon, 06 Nov 2023 10:00:00 GMT";
const TAG: &str = "\"object-v1\"";

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut last = None;
    let result = serve_requests(stream, shared, &mut last);
    if let Some(index) = last {
        shared.log.lock().unwrap()[index].closed = true;
    }
    result
}

/// Answers the requests of one connection; `last` is the latest response's log entry.
fn serve_requests(stream: TcpStream, shared: &Shared, last: &mut Option<usize>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (mut range, mut if_range, mut head) = (None, None, false);
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        head |= line.starts_with("HEAD ");
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            if header.trim().is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = parse_range(value.trim()),
                "if-range" => if_range = Some(value.trim().to_string()),
                _ => {}
            }
        }
        thread::sleep(shared.behaviour.latency);
        let total = shared.data.len() as u64;
        let honoured = if_range.is_none_or(|v| v == TAG || v == DATE);
        let span = range.filter(|_| honoured).map(|(a, b)| {
            let last = b.map_or(total.saturating_sub(1), |b| b.min(total.saturating_sub(1)));
            (a, last)
        });
        let (status, start, len) = match span {
            Some((a, last)) if a < total && a <= last => (206, a, last + 1 - a),
            Some(_) => (416, 0, 0),
            None => (200, 0, total),
        };
        let mut head_text = format!(
            "HTTP/1.1 {status} X\r\nETag: {TAG}\r\nLast-Modified: {DATE}\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\n"
        );
        match status {
            206 => {
                head_text += &format!(
                    "Content-Range: bytes {start}-{}/{total}\r\n",
                    start + len - 1
                )
            }
            416 => head_text += &format!("Content-Range: bytes */{total}\r\n"),
            _ => {}
        }
        head_text += "\r\n";
        let index = {
            let mut log = shared.log.lock().unwrap();
            log.push(Served {
                range,
                path,
                start,
                len: if head { 0 } else { len },
                sent: 0,
                cut: false,
                closed: false,
            });
            log.len() - 1
        };
        *last = Some(index);
        out.write_all(head_text.as_bytes())?;
        if head {
            continue;
        }
        if let Err(error) = send(&mut out, shared, index, start, len) {
            shared.log.lock().unwrap()[index].cut = true;
            return Err(error);
        }
    }
}

/// Writes the body `[start, start + len)`, at the rate asked for and stalling where asked.
fn send(
    out: &mut TcpStream,
    shared: &Shared,
    index: usize,
    start: u64,
    len: u64,
) -> io::Result<()> {
    const PIECE: u64 = 16 * 1024;
    let began = Instant::now();
    let mut sent = 0;
    while sent < len {
        if shared.behaviour.stall_after.is_some_and(|at| sent >= at) {
            let mut released = shared.released.lock().unwrap();
            while !*released {
                released = shared.release.wait(released).unwrap();
            }
        }
        let mut n = PIECE.min(len - sent);
        if let Some(at) = shared.behaviour.stall_after.filter(|&at| sent < at) {
            n = n.min(at - sent);
        }
        if let Some(rate) = shared.behaviour.rate {
            // Not ahead of the rate: wait until the bytes sent so far were due.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                thread::sleep(wait);
            }
        }
        let at = (start + sent) as usize;
        let cut = {
            let mut cuts = shared.cuts.lock().unwrap();
            let found = cuts
                .iter()
                .position(|&c| (at as u64..at as u64 + n).contains(&c));
            found.map(|i| cuts.swap_remove(i))
        };
        if let Some(cut) = cut {
            let before = (cut - at as u64) as usize;
            out.write_all(&shared.data[at..at + before])?;
            shared.log.lock().unwrap()[index].sent = sent + before as u64;
            let _ = out.shutdown(std::net::Shutdown::Both);
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "cut"));
        }
        out.write_all(&shared.data[at..at + n as usize])?;
        sent += n;
        shared.log.lock().unwrap()[index].sent = sent;
    }
    Ok(())
}

/// `bytes=a-b` or `bytes=a-` (suffix and multiple ranges are not needed here).
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a = a.trim().parse().ok()?;
    let b = match b.trim() {
        "" => None,
        b => Some(b.parse().ok()?),
    };
    Some((a, b))
}
