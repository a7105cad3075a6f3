//! `sparsebuf serve URL --cache-dir DIR` killed with SIGKILL at random moments while 4 curl
//! clients read random ranges, then restarted on the same directory and read whole: every
//! complete response is exact in every trial, every full read after a kill is exact, a clean
//! restart after a complete read fetches nothing again, and over all the trials the upstream
//! sends at most 1.5 times the object (what was fetched is resumed, not fetched again).
//! `SPARSEBUF_KILL_TRIALS` sets the number of trials (20 in CI; `benches/kill_loop.sh` runs
//! 100); `SPARSEBUF_KILL_FULL_READS=0` leaves out the full read after each kill, so that later
//! kills still find bytes missing.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::command::Serving;
use common::origin::{Behaviour, Origin};
use common::{byte_at, Rng};

const LEN: u64 = 64 << 20;

/// `curl -r a-b`: the body if curl says the response was complete.
fn fetch(url: &str, range: Option<(u64, u64)>) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "30", "-o"]).arg(&body);
    if let Some((a, b)) = range {
        command.args(["-r", &format!("{a}-{b}")]);
    }
    let status = command
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("curl must be installed");
    status
        .success()
        .then(|| std::fs::read(&body).unwrap_or_default())
}

fn check(got: &[u8], at: u64) {
    for (i, &b) in got.iter().enumerate() {
        let pos = at + i as u64;
        assert_eq!(b, byte_at(51, pos), "wrong byte at {pos}");
    }
}

/// Body bytes the origin has sent so far.
fn sent(origin: &Origin) -> u64 {
    origin.log().iter().map(|s| s.sent).sum()
}

fn serve(url: &str, dir: &std::path::Path) -> Serving {
    let dir = dir.to_str().unwrap();
    Serving::start(url, Stdio::null(), &["--cache-dir", dir, "--quiet"])
}

#[test]
fn kill_9_at_random_moments_loses_no_byte_and_resumes() {
    let trials: u64 = std::env::var("SPARSEBUF_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // After each kill, a restart and a full read (the default); `0`: the next trial's clients
    // are the restart, so later kills still find bytes missing (a harder test of resuming).
    let full_reads = std::env::var("SPARSEBUF_KILL_FULL_READS").map_or(true, |v| v != "0");
    let model: Vec<u8> = (0..LEN).map(|i| byte_at(51, i)).collect();
    let origin = Origin::start(
        Arc::new(model),
        Behaviour {
            rate: Some(32 << 20),
            ..Behaviour::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let complete = Arc::new(AtomicU64::new(0));
    for trial in 0..trials {
        let serving = serve(&origin.url, dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4u64)
            .map(|c| {
                let (url, stop, complete) = (serving.url.clone(), stop.clone(), complete.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng(trial * 100 + c + 1);
                    // Bounded: at most 200 requests a client per trial.
                    for _ in 0..200 {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let at = rng.below(LEN);
                        let end = (at + rng.below(1 << 20)).min(LEN - 1);
                        if let Some(got) = fetch(&url, Some((at, end))) {
                            // A complete response is the exact range, whole.
                            if !stop.load(Ordering::SeqCst) || got.len() as u64 == end - at + 1 {
                                assert_eq!(got.len() as u64, end - at + 1, "short body at {at}");
                                check(&got, at);
                                complete.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100 + rng.below(400)));
        // SIGKILL: no destructor, no flush.
        stop.store(true, Ordering::SeqCst);
        drop(serving.stop());
        for c in clients {
            c.join().unwrap();
        }
        if full_reads {
            // Restarted on the same directory, everything reads exact.
            let serving = serve(&origin.url, dir.path());
            let all = fetch(&serving.url, None).expect("a full read after a kill");
            assert_eq!(all.len() as u64, LEN, "trial {trial}");
            check(&all, 0);
            drop(serving.stop());
        }
        if std::env::var_os("SPARSEBUF_KILL_VERBOSE").is_some() {
            let log = origin.log();
            let cut: u64 = log.iter().filter(|s| !s.finished()).map(|s| s.sent).sum();
            let big: Vec<_> = log
                .iter()
                .rev()
                .take(12)
                .map(|s| (s.range, s.len, s.sent))
                .collect();
            use std::os::unix::fs::MetadataExt;
            let journal = std::fs::metadata(dir.path().join("journal")).map_or(0, |m| m.len());
            let data = std::fs::metadata(dir.path().join("data")).map_or(0, |m| m.blocks() * 512);
            eprintln!(
                "after trial {trial}: {} responses, {} bytes sent, {cut} of them in responses cut short; journal {journal}, data {data}; last: {big:?}",
                log.len(),
                sent(&origin)
            );
        }
    }
    // Restarted on the same directory: the whole object, exact.
    let before = sent(&origin);
    let serving = serve(&origin.url, dir.path());
    let all = fetch(&serving.url, None).expect("a full read after the kills");
    assert_eq!(all.len() as u64, LEN);
    check(&all, 0);
    // Records are synced and appended within 50 ms of their segment's write.
    std::thread::sleep(Duration::from_millis(300));
    drop(serving.stop());
    let final_read = sent(&origin) - before;
    // A clean restart after a complete read: nothing but the probe is fetched.
    let before = sent(&origin);
    let serving = serve(&origin.url, dir.path());
    let all = fetch(&serving.url, None).expect("a full read after a restart");
    assert_eq!(all.len() as u64, LEN);
    check(&all, 0);
    drop(serving.stop());
    let again = sent(&origin) - before;
    let total = sent(&origin);
    eprintln!(
        "{trials} kills, {} complete responses checked: upstream sent {total} bytes for {LEN} \
         ({:.2}x); the full read after the kills fetched {final_read}, after a restart {again}",
        complete.load(Ordering::Relaxed),
        total as f64 / LEN as f64
    );
    assert!(
        again <= 16,
        "{again} bytes fetched again after a complete read"
    );
    assert!(
        total as f64 <= 1.5 * LEN as f64,
        "upstream sent {total} bytes for {LEN}: refetched, not resumed"
    );
}
