//! `sparsebuf proxy` before an origin that cuts its connections at 10 random offsets of the
//! object, with 16 clients at once (whole downloads and random ranges): no client gets a
//! response that ends cleanly but short, every byte received is exact, and the next request
//! after the cuts gets the whole object.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::command::Serving;
use common::origin::{Behaviour, Origin};
use common::{data, Rng};

/// What curl made of one request: its exit code, the status and the body.
struct Fetched {
    exit: Option<i32>,
    status: u16,
    body: Vec<u8>,
}

fn fetch(url: &str, range: Option<(u64, u64)>) -> Fetched {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "120", "-o"]).arg(&body);
    command.args(["-w", "%{http_code}"]);
    if let Some((a, b)) = range {
        command.args(["-H", &format!("Range: bytes={a}-{b}")]);
    }
    let out = command.arg(url).output().expect("curl");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Fetched {
        exit: out.status.code(),
        status,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

#[test]
fn cuts_upstream_never_end_a_response_cleanly_but_short() {
    let model = Arc::new(data(16 << 20, 51));
    let mut rng = Rng(52);
    let cut_at: Vec<u64> = (0..10).map(|_| rng.below(model.len() as u64)).collect();
    let origin = Origin::start(
        model.clone(),
        Behaviour {
            latency: Duration::from_millis(2),
            cut_at: cut_at.clone(),
            ..Behaviour::default()
        },
    );
    let base = origin.url.trim_end_matches("/object.bin").to_string();
    let proxy = Serving::with_args(&[
        "proxy",
        &base,
        "--listen",
        "127.0.0.1:0",
        "--quiet",
        "--memory-budget",
        "8M",
    ]);
    let url = format!("{}object.bin", proxy.url);
    let len = model.len() as u64;
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            let (url, model) = (url.clone(), model.clone());
            let range = (i % 2 == 1).then(|| {
                let mut rng = Rng(60 + i);
                let a = rng.below(len);
                (a, (a + rng.below(4 << 20)).min(len - 1))
            });
            std::thread::spawn(move || {
                let got = fetch(&url, range);
                let (a, b) = range.unwrap_or((0, len - 1));
                let expected = &model[a as usize..=b as usize];
                (got, expected.to_vec(), range)
            })
        })
        .collect();
    let (mut whole, mut cut, mut failed) = (0, 0, 0);
    for client in clients {
        let (got, expected, range) = client.join().unwrap();
        match got.status {
            200 | 206 => {
                assert_eq!(got.status, if range.is_some() { 206 } else { 200 });
                // Every byte received is exact...
                assert!(
                    expected.starts_with(&got.body),
                    "{range:?}: wrong bytes ({} received)",
                    got.body.len()
                );
                if got.exit == Some(0) {
                    // ...and a clean end is a whole body.
                    assert_eq!(got.body.len(), expected.len(), "{range:?}: clean but short");
                    whole += 1;
                } else {
                    cut += 1;
                }
            }
            // The source failed before the head: a status, no bytes of the object.
            502 | 504 => failed += 1,
            other => panic!("{range:?}: status {other}"),
        }
    }
    eprintln!(
        "16 clients: {whole} whole, {cut} cut, {failed} 502/504; cuts left {}; upstream sent \
         {} bytes for a {len}-byte object",
        origin.cuts_left(),
        origin.bytes_sent()
    );
    // The cuts went off (or were never reached by a read).
    // Then the next request heals: the whole object, exact.
    let mut healed = false;
    for _ in 0..12 {
        let got = fetch(&url, None);
        if got.exit == Some(0) && got.status == 200 {
            assert!(got.body == *model, "the healed response is exact");
            healed = true;
            break;
        }
        assert!(model.starts_with(&got.body) || got.status >= 500);
    }
    assert!(healed, "no whole response after the cuts");
    assert_eq!(origin.cuts_left(), 0, "every cut was reached: {cut_at:?}");
}
