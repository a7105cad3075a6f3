//! The `sparsebuf` command: `sparsebuf serve INPUT --listen ADDR` serves a pipe, a file or a URL
//! over HTTP with `Range` requests, so that players can seek in a stream that cannot.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sparsebuf::{Builder, Cache, Server, StreamBuffer};

const HELP: &str = "\
sparsebuf serve: serve a stream over HTTP with Range requests, so that players can seek in it

USAGE:
    sparsebuf serve INPUT --listen ADDR [OPTIONS]

INPUT:
    -                   standard input (a pipe), read forward as clients need it
    PATH                a file, read where clients ask
    http(s)://...       a URL: fetched by ranges if the server honours them, else streamed

OPTIONS:
    --listen ADDR       where to listen, e.g. 127.0.0.1:8080 (port 0: a free port). Required
    --len BYTES         the stream's length, if known: lets clients seek before it ends
    --memory-budget N   RAM for buffered bytes (default 5M)
    --disk-budget N     spill file space past the RAM (default: unlimited)
    --spill-dir DIR     where the spill file goes (default: the system's temp dir)
    --cache-dir DIR     keep what is fetched of a file or URL in DIR, across restarts and
                        crashes: the next run serves it without fetching it again, unless the
                        resource changed (its ETag, Last-Modified or length). One run per DIR
    --window N          keep only the last N bytes (a live stream); clients cannot seek back
    --prebuffer N       hold responses until the first N bytes are in
    --content-type T    the Content-Type sent (default application/octet-stream)
    --send-timeout SECS drop a client that takes no bytes for this long (default 60)
    --max-connections N at most N connections; at the limit the stalest is closed
                        (default: from the descriptor limit, `ulimit -n`)
    --quiet             print no progress (events such as source failures are still printed)
    -h, --help          this help
    -V, --version       the version

    Sizes take K, M or G (powers of 1024): 64M, 1G.

OUTPUT:
    The first line on standard output is `listening on http://HOST:PORT/`; the stream is served
    at `/`. While it runs, progress goes to standard error (bytes pulled, clients, bytes
    served) unless --quiet, and so do events: a source that fails, an upstream that changed,
    a client dropped for taking nothing, a spill that failed.

EXAMPLES:
    # A moov-at-end MP4 from a pipe that ffmpeg alone could not seek in:
    cat film.mp4 | sparsebuf serve - --listen 127.0.0.1:8080 --len $(stat -c %s film.mp4) \\
        --content-type video/mp4
    ffplay http://127.0.0.1:8080/

    # A live encoder, buffered 4 MiB before the first response:
    ffmpeg -i input -f mpegts - | sparsebuf serve - --listen 127.0.0.1:8080 --prebuffer 4M \\
        --content-type video/mp2t

    # A remote file, fetched only where clients read:
    sparsebuf serve https://example.com/big.iso --listen 127.0.0.1:8080
";

/// The parsed command line.
struct Options {
    input: String,
    listen: String,
    len: Option<u64>,
    memory_budget: Option<u64>,
    disk_budget: Option<u64>,
    spill_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    window: Option<u64>,
    prebuffer: u64,
    content_type: Option<String>,
    send_timeout: Option<Duration>,
    max_connections: Option<usize>,
    quiet: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("sparsebuf {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let options = match parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("sparsebuf: {message} (see sparsebuf --help)");
            return ExitCode::from(2);
        }
    };
    match serve(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sparsebuf: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)`: help was asked for.
fn parse(args: &[String]) -> Result<Option<Options>, String> {
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(None);
    }
    if args[0] != "serve" {
        return Err(format!(
            "unknown command {:?}; the command is `serve`",
            args[0]
        ));
    }
    let mut options = Options {
        input: String::new(),
        listen: String::new(),
        len: None,
        memory_budget: None,
        disk_budget: None,
        spill_dir: None,
        cache_dir: None,
        window: None,
        prebuffer: 0,
        content_type: None,
        send_timeout: None,
        max_connections: None,
        quiet: false,
    };
    let mut input = None;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--listen" => options.listen = value()?,
            "--len" => options.len = Some(size(name, &value()?)?),
            "--memory-budget" => options.memory_budget = Some(size(name, &value()?)?),
            "--disk-budget" => options.disk_budget = Some(size(name, &value()?)?),
            "--spill-dir" => options.spill_dir = Some(PathBuf::from(value()?)),
            "--cache-dir" => options.cache_dir = Some(PathBuf::from(value()?)),
            "--window" => options.window = Some(size(name, &value()?)?),
            "--prebuffer" => options.prebuffer = size(name, &value()?)?,
            "--content-type" => options.content_type = Some(value()?),
            "--send-timeout" => options.send_timeout = Some(seconds(name, &value()?)?),
            "--max-connections" => {
                let text = value()?;
                let n = text
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{name}: {text:?} is not a positive count"))?;
                options.max_connections = Some(n);
            }
            "--quiet" | "-q" => options.quiet = true,
            "-" => input = set_once(input, arg)?,
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ => input = set_once(input, arg)?,
        }
    }
    options.input = input.ok_or("serve needs an INPUT: -, a file or a URL")?;
    if options.listen.is_empty() {
        return Err("serve needs --listen ADDR, e.g. --listen 127.0.0.1:8080".into());
    }
    Ok(Some(options))
}

fn set_once(input: Option<String>, arg: &str) -> Result<Option<String>, String> {
    match input {
        None => Ok(Some(arg.to_string())),
        Some(first) => Err(format!("one INPUT only (got {first:?} and {arg:?})")),
    }
}

/// `64M`, `1G`, `4096`: bytes.
fn size(name: &str, text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{name}: unknown size suffix in {text:?}")),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{name}: {text:?} is not a size (bytes, or with K, M, G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{name}: {text:?} is too large"))
}

/// `60`, `2.5`: a duration in seconds.
fn seconds(name: &str, text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("{name}: {text:?} is not a number of seconds"))
}

/// The library's events (source failures, changed upstreams, dropped clients, spill errors),
/// one line each on stderr.
struct Events;

impl log::Log for Events {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("sparsebuf")
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let message = record.args().to_string();
            let message = message.strip_prefix("sparsebuf: ").unwrap_or(&message);
            eprintln!(
                "sparsebuf: {}: {message}",
                record.level().as_str().to_lowercase()
            );
        }
    }

    fn flush(&self) {}
}

fn serve(options: Options) -> Result<(), String> {
    if log::set_logger(&Events).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    // A persistent cache lives as long as the server (its directory stays locked).
    let (buffer, _cache) = match &options.cache_dir {
        Some(dir) => {
            let (buffer, cache) = open_cached(&options, dir)?;
            (buffer, Some(cache))
        }
        None => (open(&options)?, None),
    };
    let mut server = Server::new(buffer.clone()).prebuffer(options.prebuffer);
    if let Some(timeout) = options.send_timeout {
        server = server.send_timeout(timeout);
    }
    if let Some(n) = options.max_connections {
        server = server.max_connections(n);
    }
    if let Some(content_type) = &options.content_type {
        server = server
            .content_type(content_type)
            .map_err(|e| e.to_string())?;
    }
    let running = server
        .start(options.listen.as_str())
        .map_err(|e| format!("cannot listen on {}: {e}", options.listen))?;
    let mut stdout = io::stdout();
    let _ = writeln!(stdout, "listening on http://{}/", running.local_addr());
    let _ = stdout.flush();
    if !options.quiet {
        let (buffer, server) = (buffer.clone(), running.server().clone());
        std::thread::spawn(move || progress(&buffer, &server));
    }
    running.wait().map_err(|e| format!("serving failed: {e}"))
}

/// The buffer over the input, with the options' settings.
fn open(options: &Options) -> Result<StreamBuffer, String> {
    let mut builder: Builder = StreamBuffer::builder();
    if let Some(len) = options.len {
        builder = builder.len(len);
    }
    if let Some(bytes) = options.memory_budget {
        let bytes = usize::try_from(bytes).map_err(|_| "--memory-budget is too large")?;
        builder = builder.memory_budget(bytes);
    }
    if let Some(bytes) = options.disk_budget {
        builder = builder.disk_budget(bytes);
    }
    if let Some(dir) = &options.spill_dir {
        builder = builder.spill_dir(dir);
    }
    if let Some(bytes) = options.window {
        builder = builder.window(bytes);
    }
    let input = options.input.as_str();
    let lower = input.to_ascii_lowercase();
    if input == "-" {
        builder.build(io::stdin()).map_err(|e| e.to_string())
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        builder
            .build_url(input)
            .map_err(|e| format!("cannot open {input}: {e}"))
    } else {
        let file = std::fs::File::open(input).map_err(|e| format!("cannot open {input}: {e}"))?;
        builder
            .build_ranged(file)
            .map_err(|e| format!("cannot read {input}: {e}"))
    }
}

/// The buffer over a file or URL input, kept in the persistent cache directory `dir`.
fn open_cached(options: &Options, dir: &std::path::Path) -> Result<(StreamBuffer, Cache), String> {
    let input = options.input.as_str();
    if input == "-" {
        return Err("--cache-dir keeps files and URLs; a pipe cannot be fetched again".into());
    }
    if options.window.is_some() || options.len.is_some() {
        return Err("--cache-dir does not go with --window or --len".into());
    }
    let mut builder = Cache::builder().persist(dir);
    if let Some(bytes) = options.memory_budget {
        let bytes = usize::try_from(bytes).map_err(|_| "--memory-budget is too large")?;
        builder = builder.memory_budget(bytes);
    }
    if let Some(bytes) = options.disk_budget {
        builder = builder.disk_budget(bytes);
    }
    let cache = builder
        .build()
        .map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    let lower = input.to_ascii_lowercase();
    let buffer = if lower.starts_with("http://") || lower.starts_with("https://") {
        cache
            .open_url(input)
            .map_err(|e| format!("cannot open {input}: {e}"))?
    } else {
        let path = std::fs::canonicalize(input).map_err(|e| format!("cannot open {input}: {e}"))?;
        let key = path.to_string_lossy().into_owned();
        cache
            .open_ranged(&key, || std::fs::File::open(&path))
            .map_err(|e| format!("cannot read {input}: {e}"))?
    };
    Ok((buffer, cache))
}

/// A line on stderr every second while something changes.
fn progress(buffer: &StreamBuffer, server: &Server) {
    let mut last = None;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let (stats, served) = (buffer.stats(), server.served());
        let now = (stats.source_bytes, served.open, served.bytes);
        if last == Some(now) {
            continue;
        }
        last = Some(now);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let end = match buffer.len() {
            Some(len) => format!(" of {:.1} MiB", mib(len)),
            None => String::new(),
        };
        eprintln!(
            "pulled {:.1} MiB{end}; {} client(s) connected, {} request(s); served {:.1} MiB",
            mib(stats.source_bytes),
            served.open,
            served.requests,
            mib(served.bytes)
        );
    }
}
