//! The sparsebuf demo: streams a deterministic synthetic resource (512 MiB by default, no network
//! needed) through a `StreamBuffer` with a small memory budget, while reader threads read random
//! ranges and a cursor reads it sequentially. Every byte read is checked against the generator.
//!
//! ```text
//! cargo run --release --example demo -- [--size 512M] [--budget 5M] [--segment 64K]
//!                                       [--readers 8] [--spill-dir DIR]
//! ```

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sparsebuf::StreamBuffer;

const SEED: u64 = 0x5EED_5EED;

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("demo: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: demo [--size 512M] [--budget 5M] [--segment 64K] [--readers 8] [--spill-dir DIR]
  --size       bytes in the synthetic stream (suffixes K, M, G: powers of 1024)
  --budget     memory budget for segments in RAM
  --segment    segment size (a power of two, 256 bytes to 1 GiB)
  --readers    threads reading random ranges while the stream is pulled
  --spill-dir  where the unnamed spill file goes (default: the system temp dir)";

struct Options {
    size: u64,
    budget: usize,
    segment: usize,
    readers: usize,
    spill_dir: Option<PathBuf>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut o = Options {
            size: 512 << 20,
            budget: 5 << 20,
            segment: 64 << 10,
            readers: 8,
            spill_dir: None,
        };
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                return Ok(None);
            }
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            let size = || parse_size(&value).ok_or(format!("{flag}: cannot read size {value:?}"));
            match flag.as_str() {
                "--size" => o.size = size()?,
                "--budget" => o.budget = usize::try_from(size()?).map_err(|e| e.to_string())?,
                "--segment" => o.segment = usize::try_from(size()?).map_err(|e| e.to_string())?,
                "--readers" => {
                    o.readers = value.parse().map_err(|_| format!("--readers: {value:?}"))?
                }
                "--spill-dir" => o.spill_dir = Some(value.into()),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(Some(o))
    }
}

/// "512M" → 512 MiB; plain numbers are bytes.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The synthetic resource: byte `i` is byte `i % 8` of a hash of `i / 8`.
fn word(w: u64) -> u64 {
    let mut x = (w ^ SEED).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Writes the resource's bytes at `offset` into `out`.
fn generate(offset: u64, out: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < out.len() {
        let bytes = word(pos / 8).to_le_bytes();
        let at = (pos % 8) as usize;
        let n = (8 - at).min(out.len() - i);
        out[i..i + n].copy_from_slice(&bytes[at..at + n]);
        i += n;
        pos += n as u64;
    }
}

/// The resource as a forward-only source, like an HTTP body.
struct Synthetic {
    pos: u64,
    len: u64,
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        generate(self.pos, &mut buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Checks bytes read at `offset`; reports the first wrong one.
fn verify(offset: u64, got: &[u8], scratch: &mut Vec<u8>) -> Result<(), String> {
    scratch.resize(got.len(), 0);
    generate(offset, scratch);
    match got.iter().zip(scratch.iter()).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "wrong byte at offset {}: got {:#04x}, expected {:#04x}",
            offset + i as u64,
            got[i],
            scratch[i]
        )),
    }
}

struct Counters {
    cursor: AtomicU64,
    reads: AtomicU64,
    read_bytes: AtomicU64,
    bad: AtomicBool,
    done: AtomicBool,
}

fn run(o: &Options) -> io::Result<bool> {
    let mut builder = StreamBuffer::builder()
        .segment_size(o.segment)
        .memory_budget(o.budget);
    if let Some(dir) = &o.spill_dir {
        builder = builder.spill_dir(dir);
    }
    let spill_dir = o.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    let buf = builder.build(Synthetic {
        pos: 0,
        len: o.size,
    })?;
    println!(
        "sparsebuf demo: {} through a {} memory budget, {} segments; {} random readers + 1 sequential cursor",
        mib(o.size),
        mib(o.budget as u64),
        mib(o.segment as u64),
        o.readers
    );
    let c = Counters {
        cursor: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        read_bytes: AtomicU64::new(0),
        bad: AtomicBool::new(false),
        done: AtomicBool::new(false),
    };
    let start = Instant::now();
    let cursor_time = thread::scope(|s| {
        for t in 0..o.readers {
            let (buf, c) = (buf.clone(), &c);
            s.spawn(move || random_reader(&buf, c, t as u64, o.size));
        }
        s.spawn(|| progress(&buf, &c, o.size, start));
        let result = sequential_cursor(&buf, &c);
        c.done.store(true, Ordering::SeqCst);
        result
    })?;
    let elapsed = start.elapsed();
    let st = buf.stats();
    let reads = c.reads.load(Ordering::Relaxed);
    let read_bytes = c.read_bytes.load(Ordering::Relaxed);
    println!(
        "cursor:   {} read sequentially in {:.2} s ({:.0} MiB/s)",
        mib(o.size),
        cursor_time.as_secs_f64(),
        o.size as f64 / (1 << 20) as f64 / cursor_time.as_secs_f64()
    );
    println!(
        "readers:  {reads} random reads, {} in {:.2} s ({:.0} MiB/s across {} threads)",
        mib(read_bytes),
        elapsed.as_secs_f64(),
        read_bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
        o.readers
    );
    println!(
        "peak RAM: {} segments ({}) for a {} budget",
        st.peak_memory_bytes / st.segment_size,
        mib(st.peak_memory_bytes),
        mib(st.memory_budget)
    );
    println!(
        "spilled:  {} in {} segments to an unnamed sparse file in {}",
        mib(st.spilled_bytes),
        st.segments_spilled,
        spill_dir.display()
    );
    println!("stats:    {st:#?}");
    if c.bad.load(Ordering::SeqCst) {
        println!("FAILED: some bytes did not match the source (see above)");
        return Ok(false);
    }
    println!(
        "OK: every byte read was verified ({} by the cursor, {} by the readers)",
        mib(o.size),
        mib(read_bytes)
    );
    Ok(true)
}

/// Reads the whole stream front to back through a `Reader`, verifying as it goes.
fn sequential_cursor(buf: &StreamBuffer, c: &Counters) -> io::Result<Duration> {
    let start = Instant::now();
    let mut r = buf.reader();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut scratch = Vec::new();
    let mut pos = 0;
    loop {
        let n = r.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        if let Err(msg) = verify(pos, &chunk[..n], &mut scratch) {
            eprintln!("cursor: {msg}");
            c.bad.store(true, Ordering::SeqCst);
        }
        pos += n as u64;
        c.cursor.store(pos, Ordering::Relaxed);
    }
    Ok(start.elapsed())
}

/// Reads random ranges, mostly of filled data, sometimes just ahead of the frontier (which
/// makes this thread pull, or wait for the thread that is pulling).
fn random_reader(buf: &StreamBuffer, c: &Counters, t: u64, size: u64) {
    let mut rng = word(t.wrapping_mul(0x1234_5678_9ABC));
    let mut dst = vec![0u8; 256 * 1024];
    let mut scratch = Vec::new();
    while !c.done.load(Ordering::Relaxed) {
        rng = word(rng);
        let reach = (buf.stats().filled_bytes + (2 << 20)).min(size);
        let offset = rng % reach.max(1);
        let len = (word(rng) % dst.len() as u64) as usize + 1;
        match buf.read_at(offset, &mut dst[..len]) {
            Ok(n) => {
                if let Err(msg) = verify(offset, &dst[..n], &mut scratch) {
                    eprintln!("reader {t}: {msg}");
                    c.bad.store(true, Ordering::SeqCst);
                }
                c.reads.fetch_add(1, Ordering::Relaxed);
                c.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("reader {t}: read_at({offset}, {len}) failed: {e}");
                c.bad.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// One line of progress every half second, on stderr.
fn progress(buf: &StreamBuffer, c: &Counters, size: u64, start: Instant) {
    while !c.done.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(500));
        let st = buf.stats();
        eprintln!(
            "[{:5.1}s] pulled {:>5.1}%  cursor {:>10}  random reads {:>8}  RAM {:>9}  spilled {:>10}",
            start.elapsed().as_secs_f64(),
            100.0 * st.source_bytes as f64 / size.max(1) as f64,
            mib(c.cursor.load(Ordering::Relaxed)),
            c.reads.load(Ordering::Relaxed),
            mib(st.memory_bytes),
            mib(st.spilled_bytes),
        );
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
