//! The command line (clap): `serve` and `proxy`, their options, the help and its examples, and
//! usage errors as one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

use crate::units::{duration, size};

const EXAMPLES: &str = "\
EXAMPLES:
    # A pipe: a moov-at-end MP4 that ffmpeg alone could not seek in:
    cat film.mp4 | sparsebuf serve - --listen 127.0.0.1:8080 --len $(stat -c %s film.mp4) \\
        --content-type video/mp4
    ffplay http://127.0.0.1:8080/

    # A live encoder, buffered 4 MiB before the first response, keeping the last 64 MiB:
    ffmpeg -i input -f mpegts - | sparsebuf serve - --listen 127.0.0.1:8080 --prebuffer 4M \\
        --window 64MiB --memory-budget 16M --disk-budget 1G --spill-dir /var/tmp --quiet

    # A file, served where clients read:
    sparsebuf serve film.mkv --listen 127.0.0.1:8080

    # The files under a directory (http://127.0.0.1:8080/films/a.mp4), one buffer each:
    sparsebuf serve /srv/media --listen 127.0.0.1:8080 --memory-budget 256M --log

    # A remote file, fetched only where clients read, kept across restarts:
    sparsebuf serve https://example.com/big.iso --listen 127.0.0.1:8080 --cache-dir /var/cache/sb

    # A caching Range proxy of everything under a URL, one fetch shared by every client:
    sparsebuf proxy https://origin.example/media --listen 127.0.0.1:8080 --cache-dir /var/cache/sb \\
        --memory-budget 512MiB --disk-budget 20GB --idle-ttl 10m

SIZES take a unit: K, M, G, T or KiB, MiB... (powers of 1024); KB, MB... (powers of 1000).
DURATIONS are seconds (90, 2.5) or take a unit: 250ms, 30s, 5m, 1h.

The first line on standard output is `listening on http://HOST:PORT/`. Progress goes to
standard error every second unless --quiet; so do events (a source that fails, an upstream
that changed, a client dropped for taking nothing) and, with --log, one line per request:
`sparsebuf: METHOD PATH RANGE STATUS BYTES DURATION` (and `cut` if its body did not end).
SIGTERM or SIGINT: no new connections; transfers in flight finish within --drain.";

/// The command line.
#[derive(Parser, Debug)]
#[command(
    name = "sparsebuf",
    version,
    about = "Serve a pipe, a file, a directory or a URL over HTTP with Range requests, so that \
             players can seek in it; or proxy and cache the resources under a URL",
    after_help = EXAMPLES,
    arg_required_else_help = true
)]
pub struct Sparsebuf {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a stream (a pipe, a file, a URL) at `/`, or the files under a directory by path.
    #[command(after_help = EXAMPLES, arg_required_else_help = true)]
    Serve(Serve),
    /// A caching Range proxy: `/PATH` is served from BASE_URL/PATH, fetched once for every
    /// client, only where clients read.
    #[command(after_help = EXAMPLES, arg_required_else_help = true)]
    Proxy(Proxy),
}

impl Command {
    pub fn common(&self) -> &Common {
        match self {
            Command::Serve(serve) => &serve.common,
            Command::Proxy(proxy) => &proxy.common,
        }
    }
}

#[derive(Args, Debug)]
pub struct Serve {
    /// `-` (standard input, a pipe: read forward as clients need it), a file (read where
    /// clients ask), a directory (its files by path), or an http(s):// URL (fetched by ranges
    /// if the server honours them, else streamed)
    #[arg(value_name = "INPUT", value_parser = clap::value_parser!(PathBuf))]
    pub input: PathBuf,
    /// The stream's length, if known: lets clients seek before it ends
    #[arg(long, value_name = "BYTES", value_parser = size)]
    pub len: Option<u64>,
    /// Keep only the last N bytes (a live stream); clients seek within them once the length
    /// is known
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub window: Option<u64>,
    /// Hold responses until the first N bytes are in
    #[arg(long, value_name = "SIZE", value_parser = size, default_value = "0")]
    pub prebuffer: u64,
    /// The Content-Type sent (default: by the file's extension, the upstream's, or
    /// application/octet-stream)
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct Proxy {
    /// The URL under which requests' paths are looked up (http:// or https://)
    #[arg(value_name = "BASE_URL")]
    pub base_url: String,
    /// The most one upstream request asks for at once (default 16M): larger, fewer requests
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_request: Option<u64>,
    #[command(flatten)]
    pub common: Common,
}

/// The options of both commands.
#[derive(Args, Debug)]
pub struct Common {
    /// Where to listen, e.g. 127.0.0.1:8080 (port 0: a free port)
    #[arg(long, value_name = "ADDR", required = true)]
    pub listen: String,
    /// RAM for buffered bytes (default 5M for one stream; 256M for a directory, a proxy or
    /// --cache-dir)
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub memory_budget: Option<u64>,
    /// Spill file space past the RAM (default: unlimited)
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub disk_budget: Option<u64>,
    /// Where spill files go (default: the system's temp dir)
    #[arg(long, value_name = "DIR")]
    pub spill_dir: Option<PathBuf>,
    /// Keep what is fetched in DIR across restarts and crashes: the next run serves it without
    /// fetching it again, unless the resource changed (its ETag, Last-Modified or length).
    /// One run per DIR
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Forget a resource no client used for this long (a directory or a proxy)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub idle_ttl: Option<Duration>,
    /// Drop a client that takes no bytes for this long (default 60s)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub send_timeout: Option<Duration>,
    /// At most N connections; at the limit the stalest is closed (default: from `ulimit -n`)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub max_connections: Option<usize>,
    /// On SIGTERM or SIGINT, how long transfers in flight may take to finish
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "10")]
    pub drain: Duration,
    /// One line per request on stderr: method, path, range, status, bytes, duration
    #[arg(long)]
    pub log: bool,
    /// Print no progress (events such as source failures are still printed)
    #[arg(short, long)]
    pub quiet: bool,
}

fn positive(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{text:?} is not a positive count"))
}

/// Help and version go to stdout (exit 0); a usage error is one line on stderr (exit 2).
pub fn usage_error(error: clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(2)
        }
        _ => {
            // The message is the first paragraph (a missing argument's name is on a line of
            // its own), made one line.
            let text = error.to_string();
            let words: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = words.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("sparsebuf: {message} (see sparsebuf --help)");
            ExitCode::from(2)
        }
    }
}
