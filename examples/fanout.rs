//! Fan-out from a live "microphone": a thread pushes 48 kHz stereo 16-bit audio in 10 ms frames
//! into a windowed buffer while consumers take it at their own pace and chunk size:
//!
//! - a level meter every 0.5 s, inline (on the pushing thread);
//! - a writer of 10 s WAV files, on a thread of its own;
//! - a 2 s "model" on a pool of 4 threads, with a sampler that pauses it 1 s after each chunk;
//! - meanwhile a reader seeks back into the window at random.
//!
//! Every delivered byte is checked against the generator, and so are the WAV files read back.
//!
//! ```text
//! cargo run --release --example fanout -- [--fast] [--seconds 30]
//! ```
//! `--fast` pushes as fast as the consumers allow instead of in real time.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sparsebuf::{Chunk, Pool, Report, StreamBuffer};

const RATE: u64 = 48_000;
/// Bytes per second: stereo, 16 bits.
const BYTES_PER_SECOND: u64 = RATE * 2 * 2;
const FRAME: usize = (BYTES_PER_SECOND / 100) as usize; // 10 ms

const USAGE: &str = "usage: cargo run --release --example fanout -- [--fast] [--seconds N]";

fn main() -> ExitCode {
    let mut fast = false;
    let mut seconds = 30u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--fast" => fast = true,
            "--seconds" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) if s > 0 => seconds = s,
                _ => return usage("--seconds takes a positive number"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    match run(fast, seconds) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fanout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("fanout: {msg}\n{USAGE}");
    ExitCode::from(2)
}

/// The microphone's signal: the byte at any stream offset, so anyone can check any byte.
fn sample(index: u64, channel: u64) -> i16 {
    // Two tones, a slow beat, and a little deterministic noise.
    let t = index as f64 / RATE as f64;
    let tone = (t * 440.0 * std::f64::consts::TAU).sin() * 0.5
        + (t * (660.0 + 20.0 * channel as f64) * std::f64::consts::TAU).sin() * 0.25;
    let beat = 0.6 + 0.4 * (t * 0.5 * std::f64::consts::TAU).sin();
    let noise = ((index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as f64 - 16.0) * 8.0;
    (tone * beat * 16_000.0 + noise) as i16
}

fn byte_at(offset: u64) -> u8 {
    let (index, rest) = (offset / 4, offset % 4);
    let value = sample(index, rest / 2).to_le_bytes();
    value[(rest % 2) as usize]
}

/// Whether `bytes` are the stream's bytes at `offset`.
fn matches(offset: u64, bytes: &[u8]) -> bool {
    bytes.iter().zip(offset..).all(|(&b, at)| b == byte_at(at))
}

/// A consumer's own check, kept beside its report.
#[derive(Default)]
struct Check {
    bad_chunks: AtomicU64,
}

impl Check {
    fn chunk(&self, chunk: &Chunk) {
        if !matches(chunk.offset(), chunk) {
            self.bad_chunks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn run(fast: bool, seconds: u64) -> io::Result<bool> {
    let total = seconds * BYTES_PER_SECOND;
    let dir = tempfile::tempdir()?;
    let (mut mic, buf) = StreamBuffer::builder()
        .segment_size(64 * 1024)
        .memory_budget(2 << 20)
        .window(4 * BYTES_PER_SECOND) // the last 4 s stay seekable
        .spill_dir(dir.path())
        .build_push()?;
    println!(
        "fanout: {seconds} s of 48 kHz stereo audio ({} bytes) in 10 ms frames, {}",
        total,
        if fast {
            "as fast as possible"
        } else {
            "in real time"
        }
    );

    // 1. A level meter every 0.5 s, on the microphone's thread.
    let meter_check = Arc::new(Check::default());
    let check = meter_check.clone();
    let meter = buf
        .emit((BYTES_PER_SECOND / 2) as usize)
        .run_inline()
        .on_done(|(at, peak): (u64, Option<i16>)| {
            if let (0, Some(peak)) = (at % (5 * BYTES_PER_SECOND), peak) {
                println!(
                    "  {:5.1} s  level {:5.1} dBFS",
                    at as f64 / BYTES_PER_SECOND as f64,
                    db(peak)
                );
            }
        })
        .start(move |chunk| {
            check.chunk(&chunk);
            // The last chunk may be empty: no level then.
            let peak = chunk
                .chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]).unsigned_abs())
                .max();
            Ok((chunk.offset(), peak.map(|p| p.min(i16::MAX as u16) as i16)))
        })?;

    // 2. 10 s WAV files, on a thread of its own.
    let wav_check = Arc::new(Check::default());
    let check = wav_check.clone();
    let wav_dir = dir.path().to_path_buf();
    let wav = buf
        .emit((10 * BYTES_PER_SECOND) as usize)
        .on_done(|written: Option<(PathBuf, u64)>| {
            if let Some((path, offset)) = written {
                println!("  wrote {} (from byte {offset})", path.display());
            }
        })
        .start(move |chunk| {
            check.chunk(&chunk);
            if chunk.is_empty() {
                return Ok(None);
            }
            let part = chunk.offset() / (10 * BYTES_PER_SECOND);
            let path = wav_dir.join(format!("part-{part:03}.wav"));
            write_wav(&path, &chunk)?;
            Ok(Some((path, chunk.offset())))
        })?;

    // 3. A 2 s "model" on a pool of 4, which rests 1 s after each chunk.
    let pool = Pool::new(4)?;
    let model_check = Arc::new(Check::default());
    let check = model_check.clone();
    let model = buf
        .emit((2 * BYTES_PER_SECOND) as usize)
        .run_on_pool(&pool)
        .sampler(move || {
            if fast {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(1)
            }
        })
        .start(move |chunk| {
            check.chunk(&chunk);
            // Stands in for inference: a pass over the samples.
            let energy: f64 = chunk
                .chunks_exact(2)
                .map(|s| f64::from(i16::from_le_bytes([s[0], s[1]])).powi(2))
                .sum();
            Ok(energy)
        })?;

    // 4. A reader seeking back into the window at random.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (buf, done) = (buf.clone(), done.clone());
        thread::spawn(move || seek_back(&buf, &done))
    };

    // The microphone.
    let started = Instant::now();
    let mut frame = vec![0u8; FRAME];
    let mut at = 0u64;
    while at < total {
        let n = FRAME.min((total - at) as usize);
        for (i, b) in frame[..n].iter_mut().enumerate() {
            *b = byte_at(at + i as u64);
        }
        mic.write_all(&frame[..n])?;
        at += n as u64;
        if !fast {
            let due = started + Duration::from_secs_f64(at as f64 / BYTES_PER_SECOND as f64);
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let len = mic.finish()?;
    let pushed_in = started.elapsed();

    let reports = [
        ("level meter", meter.join(), &meter_check),
        ("wav writer", wav.join(), &wav_check),
        ("model", model.join(), &model_check),
    ];
    done.store(true, Ordering::Relaxed);
    let (reads, read_ok) = reader.join().expect("the reader thread panicked");
    let wav_ok = check_wavs(dir.path())?;

    let stats = buf.stats();
    println!(
        "pushed {len} bytes in {:.2} s; writer waits {}, peak RAM {} KiB, spilled {} KiB",
        pushed_in.as_secs_f64(),
        stats.writer_waits,
        stats.peak_memory_bytes >> 10,
        stats.spilled_bytes >> 10
    );
    println!(
        "{:<12} {:>7} {:>11} {:>11}  check",
        "consumer", "chunks", "bytes", "skipped"
    );
    let mut ok = read_ok && wav_ok;
    for (name, report, check) in reports {
        let report: Report = match report {
            Ok(report) => report,
            Err(e) => {
                println!("{name:<12} failed: {e}");
                ok = false;
                continue;
            }
        };
        let bad = check.bad_chunks.load(Ordering::Relaxed);
        let whole = report.bytes + report.skipped == len;
        let good = bad == 0 && whole;
        ok &= good;
        println!(
            "{name:<12} {:>7} {:>11} {:>11}  {}",
            report.chunks,
            report.bytes,
            report.skipped,
            if good {
                "ok: every delivered byte is what was pushed"
            } else {
                "MISMATCH"
            }
        );
    }
    println!(
        "{:<12} {:>7} reads into the window  {}",
        "reader",
        reads,
        if read_ok { "ok" } else { "MISMATCH" }
    );
    println!(
        "wav files    {}",
        if wav_ok {
            "ok: read back, equal to the pushed audio"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "fanout: {}",
        if ok {
            "all checks passed"
        } else {
            "CHECK FAILED"
        }
    );
    Ok(ok)
}

fn db(peak: i16) -> f64 {
    20.0 * (f64::from(peak.max(1)) / f64::from(i16::MAX)).log10()
}

/// Reads random ranges of the window until told to stop; returns the reads and whether every
/// one matched the generator.
fn seek_back(buf: &StreamBuffer, done: &AtomicBool) -> (u64, bool) {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut reads = 0;
    let mut dst = vec![0u8; 8192];
    while !done.load(Ordering::Relaxed) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let start = buf.window_start();
        let span = buf.stats().filled_bytes.max(1);
        let offset = start + state % span;
        match buf.read_at(offset, &mut dst) {
            Ok(n) => {
                if !matches(offset, &dst[..n]) {
                    return (reads, false);
                }
                reads += 1;
            }
            // The window moved on between looking and reading: bytes gone, never wrong ones.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(_) => return (reads, false),
        }
        thread::sleep(Duration::from_millis(1));
    }
    (reads, true)
}

fn write_wav(path: &Path, pcm: &[u8]) -> io::Result<()> {
    let mut file = io::BufWriter::new(std::fs::File::create(path)?);
    let data_len = u32::try_from(pcm.len()).map_err(|_| io::Error::other("chunk too large"))?;
    file.write_all(b"RIFF")?;
    file.write_all(&(36 + data_len).to_le_bytes())?;
    file.write_all(b"WAVEfmt ")?;
    file.write_all(&16u32.to_le_bytes())?;
    file.write_all(&1u16.to_le_bytes())?; // PCM
    file.write_all(&2u16.to_le_bytes())?; // stereo
    file.write_all(&(RATE as u32).to_le_bytes())?;
    file.write_all(&(BYTES_PER_SECOND as u32).to_le_bytes())?;
    file.write_all(&4u16.to_le_bytes())?; // block align
    file.write_all(&16u16.to_le_bytes())?; // bits per sample
    file.write_all(b"data")?;
    file.write_all(&data_len.to_le_bytes())?;
    file.write_all(pcm)?;
    file.flush()
}

/// Reads the WAV files back: each one's samples must be the pushed audio at its place.
fn check_wavs(dir: &Path) -> io::Result<bool> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wav"))
        .collect();
    names.sort();
    for (i, path) in names.iter().enumerate() {
        let bytes = std::fs::read(path)?;
        let offset = i as u64 * 10 * BYTES_PER_SECOND;
        if bytes.len() < 44 || &bytes[..4] != b"RIFF" || !matches(offset, &bytes[44..]) {
            return Ok(false);
        }
    }
    Ok(!names.is_empty())
}
