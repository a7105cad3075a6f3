//! A TCP proxy on loopback that makes a link slow the way a WAN is: each chunk a client sends
//! reaches the server `latency` later (so each request pays it), and each connection's replies
//! are capped at `rate` bytes per second. It counts the requests it forwards (a chunk that
//! starts with an HTTP method). For the network benchmarks, in front of servers that cannot add
//! latency themselves (moto_server).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub struct Netem {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Netem {
    /// A proxy to `upstream` with the given one-way request latency and reply rate.
    pub fn start(upstream: SocketAddr, latency: Duration, rate: u64) -> Netem {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counted = counted.clone();
                thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    thread::spawn(move || delay_line(c2, s2, latency, &counted));
                    capped(server, client, rate);
                });
            }
        });
        Netem { addr, requests }
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Client to server: every chunk forwarded `latency` after it arrived, in order.
fn delay_line(mut from: TcpStream, mut to: TcpStream, latency: Duration, counted: &AtomicUsize) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut writer = to.try_clone().unwrap();
    let forward = thread::spawn(move || {
        for (due, chunk) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = &buf[..n];
                if [&b"GET "[..], b"HEAD ", b"PUT ", b"POST ", b"DELETE "]
                    .iter()
                    .any(|m| chunk.starts_with(m))
                {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                if tx.send((Instant::now() + latency, chunk.to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = forward.join();
    let _ = to.flush();
}

/// Server to client at `rate` bytes per second; an idle connection earns no credit.
fn capped(mut from: TcpStream, mut to: TcpStream, rate: u64) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut next = Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        if next < now {
            next = now;
        }
        if let Some(wait) = next.checked_duration_since(now) {
            thread::sleep(wait);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        next += Duration::from_secs_f64(n as f64 / rate as f64);
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
