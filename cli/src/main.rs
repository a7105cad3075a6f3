//! The `sparsebuf` command: `sparsebuf serve INPUT` serves a pipe, a file, a directory or a URL
//! over HTTP with `Range` requests, so that players can seek in a stream that cannot;
//! `sparsebuf proxy BASE_URL` is a caching Range proxy of the resources under a URL.

mod options;
mod units;

use std::ffi::OsStr;
use std::future::Future as _;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sparsebuf::{Builder, Cache, CacheBuilder, Server, StreamBuffer};

use options::{Command, Common, Proxy, Serve, Sparsebuf};

fn main() -> ExitCode {
    let command = match Sparsebuf::try_parse() {
        Ok(parsed) => parsed.command,
        Err(error) => return options::usage_error(error),
    };
    ACCESS.store(command.common().log, std::sync::atomic::Ordering::Relaxed);
    if log::set_logger(&Events).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sparsebuf: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What is being served, for the progress line; it also keeps the cache of a single stream
/// (with `--cache-dir`) alive, and its directory locked, as long as the server.
enum Watch {
    Buffer {
        buffer: StreamBuffer,
        _cache: Option<Cache>,
    },
    Cache(Cache),
}

fn run(command: Command) -> Result<(), String> {
    // A cache lives as long as the server (a persistent one keeps its directory locked).
    let (server, watch) = match &command {
        Command::Serve(serve) => serve_server(serve)?,
        Command::Proxy(proxy) => proxy_server(proxy)?,
    };
    let common = command.common();
    let mut server = server
        .send_timeout(common.send_timeout.unwrap_or(Duration::from_secs(60)))
        .access_log(common.log);
    if let Some(n) = common.max_connections {
        server = server.max_connections(n);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sparsebuf-serve")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let listen = common.listen.clone();
    let drain = common.drain;
    let quiet = common.quiet;
    runtime.block_on(async move {
        let listener = bind(&listen).await?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let mut stdout = io::stdout();
        let _ = writeln!(stdout, "listening on http://{local}/");
        let _ = stdout.flush();
        if !quiet {
            let server = server.clone();
            std::thread::spawn(move || progress(&watch, &server));
        }
        let signal = async move {
            let name = stop_signal().await;
            eprintln!(
                "sparsebuf: {name}: no new connections; transfers in flight have {} s to finish",
                drain.as_secs_f64()
            );
        };
        server
            .run_until(listener, signal, drain)
            .await
            .map_err(|e| format!("serving failed: {e}"))
    })?;
    // Connections left after the drain were closed; their tasks end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn bind(listen: &str) -> Result<tokio::net::TcpListener, String> {
    let addr = tokio::net::lookup_host(listen)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("cannot listen on {listen}: not an address (HOST:PORT)"))?;
    sparsebuf::Server::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))
}

/// Waits for SIGTERM or SIGINT; names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    let mut term = std::pin::pin!(term.recv());
    let mut int = std::pin::pin!(int.recv());
    std::future::poll_fn(|cx| {
        if term.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready("SIGTERM");
        }
        int.as_mut().poll(cx).map(|_| "SIGINT")
    })
    .await
}

/// `sparsebuf serve`: one stream (a pipe, a file, a URL), or the files of a directory.
fn serve_server(serve: &Serve) -> Result<(Server, Watch), String> {
    let input = serve.input.as_os_str();
    let shown = input.to_string_lossy();
    let as_text = input.to_str();
    let is_url = as_text.is_some_and(is_url);
    let path = Path::new(input);
    if !is_url && input != "-" && path.is_dir() {
        if serve.len.is_some() || serve.window.is_some() || serve.content_type.is_some() {
            return Err(
                "a directory is served file by file: --len, --window and --content-type go with \
                 one stream"
                    .into(),
            );
        }
        let cache = cache_builder(&serve.common)?
            .build()
            .map_err(|e| cache_error(&serve.common, e))?;
        let server = Server::directory(cache.clone(), path)
            .map_err(|e| format!("cannot serve {shown}: {e}"))?;
        return Ok((server.prebuffer(serve.prebuffer), Watch::Cache(cache)));
    }
    let (buffer, cache) = match &serve.common.cache_dir {
        Some(_) => {
            let (buffer, cache) = open_cached(serve, input, is_url)?;
            (buffer, Some(cache))
        }
        None => (open(serve, input, is_url)?, None),
    };
    let mut server = Server::new(buffer.clone()).prebuffer(serve.prebuffer);
    let content_type = match &serve.content_type {
        Some(content_type) => Some(content_type.clone()),
        // A file's type by its extension; a URL's from its upstream (the server's default).
        None if !is_url && input != "-" => guess(path),
        None => None,
    };
    if let Some(content_type) = content_type {
        server = server
            .content_type(&content_type)
            .map_err(|e| e.to_string())?;
    }
    let watch = Watch::Buffer {
        buffer,
        _cache: cache,
    };
    Ok((server, watch))
}

/// `sparsebuf proxy`: the resources under a base URL, through a cache.
fn proxy_server(proxy: &Proxy) -> Result<(Server, Watch), String> {
    if !is_url(&proxy.base_url) {
        return Err(format!(
            "{:?} is not a base URL (http:// or https://)",
            proxy.base_url
        ));
    }
    let mut builder = cache_builder(&proxy.common)?;
    if let Some(bytes) = proxy.max_request {
        builder = builder.buffer_settings(StreamBuffer::builder().max_request(bytes));
    }
    let cache = builder.build().map_err(|e| cache_error(&proxy.common, e))?;
    let server =
        Server::proxy(cache.clone(), &proxy.base_url).map_err(|e| format!("cannot proxy: {e}"))?;
    Ok((server, Watch::Cache(cache)))
}

fn is_url(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The media type of a file by its extension.
fn guess(path: &Path) -> Option<String> {
    let guessed = mime_guess::from_path(path).first()?;
    Some(guessed.essence_str().to_string())
}

/// A cache with the common options' budgets, TTL and directory.
fn cache_builder(common: &Common) -> Result<CacheBuilder, String> {
    let mut builder = storage(
        Cache::builder(),
        common,
        |b, bytes| b.memory_budget(bytes),
        |b, bytes| b.disk_budget(bytes),
        |b, dir| b.spill_dir(dir),
    )?;
    if let Some(ttl) = common.idle_ttl {
        builder = builder.idle_ttl(ttl);
    }
    if let Some(dir) = &common.cache_dir {
        builder = builder.persist(dir);
    }
    Ok(builder)
}

/// The storage options every command shares, set on a cache's or a buffer's builder (alike,
/// but not one type) through its own setters.
fn storage<B>(
    mut builder: B,
    common: &Common,
    memory_budget: fn(B, usize) -> B,
    disk_budget: fn(B, u64) -> B,
    spill_dir: fn(B, &Path) -> B,
) -> Result<B, String> {
    if let Some(bytes) = common.memory_budget {
        let bytes = usize::try_from(bytes).map_err(|_| "--memory-budget is too large")?;
        builder = memory_budget(builder, bytes);
    }
    if let Some(bytes) = common.disk_budget {
        builder = disk_budget(builder, bytes);
    }
    if let Some(dir) = &common.spill_dir {
        builder = spill_dir(builder, dir);
    }
    Ok(builder)
}

fn cache_error(common: &Common, error: io::Error) -> String {
    match &common.cache_dir {
        Some(dir) => format!("cannot use {}: {error}", dir.display()),
        None => format!("cannot make the cache: {error}"),
    }
}

/// The buffer over one input, with the options' settings.
fn open(serve: &Serve, input: &OsStr, is_url: bool) -> Result<StreamBuffer, String> {
    let common = &serve.common;
    let mut builder: Builder = storage(
        StreamBuffer::builder(),
        common,
        |b, bytes| b.memory_budget(bytes),
        |b, bytes| b.disk_budget(bytes),
        |b, dir| b.spill_dir(dir),
    )?;
    if let Some(len) = serve.len {
        builder = builder.len(len);
    }
    if let Some(bytes) = serve.window {
        builder = builder.window(bytes);
    }
    let shown = input.to_string_lossy();
    if input == "-" {
        builder.build(io::stdin()).map_err(|e| e.to_string())
    } else if is_url {
        builder
            .build_url(&shown)
            .map_err(|e| format!("cannot open {shown}: {e}"))
    } else {
        let file = std::fs::File::open(input).map_err(|e| format!("cannot open {shown}: {e}"))?;
        builder
            .build_ranged(file)
            .map_err(|e| format!("cannot read {shown}: {e}"))
    }
}

/// The buffer over a file or URL input, kept in the persistent cache directory.
fn open_cached(
    serve: &Serve,
    input: &OsStr,
    is_url: bool,
) -> Result<(StreamBuffer, Cache), String> {
    if input == "-" {
        return Err("--cache-dir keeps files and URLs; a pipe cannot be fetched again".into());
    }
    if serve.window.is_some() || serve.len.is_some() {
        return Err("--cache-dir does not go with --window or --len".into());
    }
    let cache = cache_builder(&serve.common)?
        .build()
        .map_err(|e| cache_error(&serve.common, e))?;
    let shown = input.to_string_lossy();
    let buffer = if is_url {
        cache
            .open_url(&shown)
            .map_err(|e| format!("cannot open {shown}: {e}"))?
    } else {
        let path = std::fs::canonicalize(input).map_err(|e| format!("cannot open {shown}: {e}"))?;
        let key = path.to_string_lossy().into_owned();
        cache
            .open_ranged(&key, || std::fs::File::open(&path))
            .map_err(|e| format!("cannot read {shown}: {e}"))?
    };
    Ok((buffer, cache))
}

/// Whether `--log` asked for the access lines.
static ACCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The library's events (source failures, changed upstreams, dropped clients, spill errors),
/// and with `--log` one line per request, each a line on stderr.
struct Events;

impl log::Log for Events {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        if metadata.target() == "sparsebuf::access" {
            return ACCESS.load(std::sync::atomic::Ordering::Relaxed);
        }
        metadata.level() <= log::Level::Info && metadata.target().starts_with("sparsebuf")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if record.target() == "sparsebuf::access" {
            eprintln!("sparsebuf: {}", record.args());
            return;
        }
        let message = record.args().to_string();
        let message = message.strip_prefix("sparsebuf: ").unwrap_or(&message);
        eprintln!(
            "sparsebuf: {}: {message}",
            record.level().as_str().to_lowercase()
        );
    }

    fn flush(&self) {}
}

/// A line on stderr every second while something changes.
fn progress(watch: &Watch, server: &Server) {
    let mut last = None;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let served = server.served();
        let (pulled, end) = match watch {
            Watch::Buffer { buffer, .. } => {
                let end = match buffer.len() {
                    Some(len) => format!(" of {:.1} MiB", mib(len)),
                    None => String::new(),
                };
                (buffer.stats().source_bytes, end)
            }
            Watch::Cache(cache) => {
                let stats = cache.stats();
                let end = format!(" for {} resource(s)", stats.streams);
                (stats.totals.source_bytes, end)
            }
        };
        let now = (pulled, served.open, served.bytes);
        if last == Some(now) {
            continue;
        }
        last = Some(now);
        eprintln!(
            "pulled {:.1} MiB{end}; {} client(s) connected, {} request(s); served {:.1} MiB",
            mib(pulled),
            served.open,
            served.requests,
            mib(served.bytes)
        );
    }
}
