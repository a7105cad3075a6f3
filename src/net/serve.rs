//! [`Server`] (feature `http`): a [`StreamBuffer`] served over HTTP/1.1 with `Range` requests,
//! on hyper and tokio.

use std::fmt;
use std::future::Future;
use std::io::{self, SeekFrom};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::async_reader::AsyncReader;
use crate::buffer::StreamBuffer;
use crate::net::connections::{default_limit, Connections, Ended, Progress, Tracked, Watched};
use crate::net::preconditions::{Current, Verdict};
use crate::net::ranges::{self, Spec};

/// How much of the body one frame carries at most.
const FRAME: usize = 64 * 1024;

/// The most a connection buffers ahead of its socket (hyper's write buffer; its read buffer
/// too): with one frame being queued, a client that stops reading costs about 128 KiB.
const CONNECTION_BUFFER: usize = 64 * 1024;

/// The default send timeout (nginx's `send_timeout`).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP server for one [`StreamBuffer`], served at `/`: `GET` and `HEAD`, with the ranges of
/// RFC 9110 (feature `http`).
///
/// - **Ranges.** A single range is answered `206 Partial Content` with `Content-Range`; a
///   suffix (`bytes=-500`) and an open range (`bytes=9500-`) too, a suffix longer than the
///   resource selects all of it; several ranges come back as `multipart/byteranges` parts in
///   the order asked (overlapping ones merged); a set with no satisfiable range is `416` with
///   `Content-Range: bytes */<len>`. A malformed `Range` (or one of more than 64 ranges) is
///   ignored: `200` with the whole.
/// - **Validators.** Every response carries `Accept-Ranges: bytes` and a strong `ETag`: the
///   source's (a file's length, modification time and inode; an upstream's strong tag; see
///   [`StreamBuffer::validators`]), else one made when the server is made (the stream's bytes
///   never change while it runs). The source's modification time, if known, is sent as
///   `Last-Modified`. `If-Range` with the tag (or exactly that date) honours the `Range`; with
///   any other tag or date, the whole is sent.
/// - **Preconditions**, in the order of RFC 9110 §13.2.2: `If-Match` (strong comparison, or
///   `*`) that names another version is `412`; so is `If-Unmodified-Since` before the
///   modification time; `If-None-Match` (weak comparison) naming this version is `304 Not
///   Modified`, and so is `If-Modified-Since` at or after the modification time.
/// - **Requests.** `GET` and `HEAD` at `/` (`405` for other methods, `404` elsewhere); an
///   HTTP/1.1 request without exactly one `Host` is `400`.
/// - **Unknown length.** While the stream's length is unknown (a pipe with no `--len`), a
///   request without `Range`, or with `bytes=0-`, is answered at once: `200` with the body in
///   chunked encoding as it arrives. Any other range waits until the length is known (the end
///   of the stream; a forward-only source is pulled to its end meanwhile, within its budgets)
///   and is then answered `206` with the total. So no client ever sees a `206` with an
///   unknown total (`bytes a-b/*`), which FFmpeg would take for the end of the file. Browsers
///   need the length to seek at all: give it ([`Builder::len`](crate::Builder::len)) when you
///   know it.
/// - **Windowed streams** drop their oldest bytes, so they advertise `Accept-Ranges: none`,
///   ignore `Range`, and serve each client from the oldest byte still held.
/// - **Clients.** Each request reads through its own [`AsyncReader`]: clients run at their own
///   pace, and a slow one holds back no other (except through a window, whose writer waits for
///   its slowest reader). A client that disconnects drops its cursor at once. A client that
///   stops reading is dropped, with its cursor, once its socket has taken nothing for the
///   [`send_timeout`](Server::send_timeout) (60 s); meanwhile it costs at most about 128 KiB of
///   buffers. At the [connection limit](Server::max_connections), the connection that has made
///   no progress for the longest is closed to serve a new one.
/// - **Failures.** A source that fails before the first bytes of a response are there gives
///   `502 Bad Gateway` (`504` for a timeout) with a line naming the cause (a stream that ended
///   before its declared length says where); the head of a response is sent only with its
///   first bytes. A source that fails later cuts the response short after every byte held
///   before the failure was sent, so the client sees an error, never a clean short end.
/// - **Prebuffering** ([`prebuffer`](Server::prebuffer)): responses wait until the first N bytes
///   are filled.
///
/// # Examples
///
/// ```no_run
/// use sparsebuf::{Server, StreamBuffer};
///
/// let buffer = StreamBuffer::builder().len(5_000_000).build(std::io::stdin())?;
/// let running = Server::new(buffer).content_type("video/mp4")?.start("127.0.0.1:8080")?;
/// println!("listening on http://{}/", running.local_addr());
/// running.wait()?; // serves until the process ends
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// In async code, [`run`](Server::run) serves on a listener of your own:
///
/// ```no_run
/// # async fn example(buffer: sparsebuf::StreamBuffer) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// sparsebuf::Server::new(buffer).run(listener).await
/// # }
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub struct Server {
    buffer: StreamBuffer,
    content_type: HeaderValue,
    prebuffer: u64,
    etag: HeaderValue,
    last_modified: Option<SystemTime>,
    send_timeout: Duration,
    max_connections: Option<usize>,
    counts: Arc<Counts>,
}

/// What a [`Server`] has served so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub struct Served {
    /// Requests answered (their headers sent).
    pub requests: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Bytes of bodies sent.
    pub bytes: u64,
    /// Connections dropped because their client took nothing for the send timeout.
    pub stalled: u64,
    /// Connections closed to make room for new ones at the connection limit.
    pub evicted: u64,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
    bytes: AtomicU64,
    stalled: AtomicU64,
    evicted: AtomicU64,
}

impl Server {
    /// A server for `buffer`, sent as `application/octet-stream` with no prebuffering, with
    /// the buffer's validators ([`StreamBuffer::validators`]) if it has a strong tag.
    pub fn new(buffer: StreamBuffer) -> Server {
        let validators = buffer.validators();
        let etag = validators
            .strong_etag()
            .and_then(|tag| HeaderValue::from_str(tag).ok())
            .unwrap_or_else(new_etag);
        let last_modified = validators.last_modified;
        Server {
            buffer,
            content_type: HeaderValue::from_static("application/octet-stream"),
            prebuffer: 0,
            etag,
            last_modified,
            send_timeout: SEND_TIMEOUT,
            max_connections: None,
            counts: Arc::default(),
        }
    }

    /// How long a response may wait for its client to take more bytes (its socket to accept
    /// a write) before the connection is dropped, with the response's cursor. Default 60 s,
    /// as nginx's `send_timeout`. A response waiting for its source is not waiting for the
    /// client, and is not timed.
    pub fn send_timeout(mut self, timeout: Duration) -> Server {
        self.send_timeout = timeout;
        self
    }

    /// The most connections open at once (at least 1). When a new client connects at the
    /// limit, the connection that has made no progress (no byte read or written) for the
    /// longest is closed first, so that new clients are still served when many hold
    /// connections without reading. Default: the soft `RLIMIT_NOFILE` less a reserve of
    /// `32 + limit / 16` descriptors for the listener, the spill file, the source and the
    /// runtime (224 connections under `ulimit -n 256`).
    pub fn max_connections(mut self, connections: usize) -> Server {
        self.max_connections = Some(connections.max(1));
        self
    }

    /// The `Content-Type` of the resource (`video/mp4`, `audio/mpeg`...); `InvalidInput` for
    /// a value that cannot be a header value (a control character, say).
    pub fn content_type(mut self, value: &str) -> io::Result<Server> {
        self.content_type = HeaderValue::from_str(value).map_err(|_| {
            crate::error::invalid_input(format!("{value:?} is not a valid Content-Type value"))
        })?;
        Ok(self)
    }

    /// Holds every response until the first `bytes` of the stream are filled (or it ended),
    /// so that a player starts with a cushion. Default 0.
    pub fn prebuffer(mut self, bytes: u64) -> Server {
        self.prebuffer = bytes;
        self
    }

    /// The buffer served.
    pub fn buffer(&self) -> &StreamBuffer {
        &self.buffer
    }

    /// The strong `ETag` every response carries, quotes included.
    pub fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }

    /// What was served so far (by this server and its clones).
    pub fn served(&self) -> Served {
        let c = &self.counts;
        Served {
            requests: c.requests.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            open: c.open.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            stalled: c.stalled.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
        }
    }

    /// Serves on `listener` until the future is dropped (or accepting fails for good). Each
    /// connection runs on a task of its own; their errors (a client that goes away) end only
    /// that connection.
    pub async fn run(self, listener: TcpListener) -> io::Result<()> {
        let limit = self.max_connections.unwrap_or_else(default_limit);
        let table = Arc::new(Connections::new(limit));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of descriptors: make room by closing the stalest connection.
                Err(error) if is_out_of_descriptors(&error) => {
                    if !self.close_stalest(&table) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
                // A connection reset before it was accepted, or a passing shortage: wait a
                // moment rather than spin, and go on.
                Err(error) if is_per_connection(&error) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            if table.full() {
                self.close_stalest(&table);
            }
            let _ = stream.set_nodelay(true);
            let (id, progress) = table.add();
            let counts = &self.counts;
            counts.connections.fetch_add(1, Ordering::Relaxed);
            counts.open.fetch_add(1, Ordering::Relaxed);
            // Moved into the task: dropped with it however it ends, even aborted before it
            // first ran.
            let registered = Registered(table.clone(), id, counts.clone());
            let task = tokio::spawn(self.clone().connection(stream, registered, progress));
            table.set_task(id, task.abort_handle());
        }
    }

    /// Closes the connection that has made no progress for the longest; whether there was one.
    fn close_stalest(&self, table: &Connections) -> bool {
        let Some(idle) = table.close_stalest() else {
            return false;
        };
        self.counts.evicted.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "sparsebuf: closed a connection idle for {:.1} s to make room at the connection limit",
            idle as f64 / 1000.0
        );
        true
    }

    /// Serves one connection until it ends, is dropped for stalling, or is closed (its task
    /// aborted) to make room.
    async fn connection(self, stream: TcpStream, registered: Registered, progress: Arc<Progress>) {
        let _registered = registered;
        let counts = self.counts.clone();
        let timeout = self.send_timeout;
        let io = TokioIo::new(Tracked::new(stream, progress.clone()));
        let on_request = progress.clone();
        let service = hyper::service::service_fn(move |request| {
            let (server, progress) = (self.clone(), on_request.clone());
            async move { Ok::<_, io::Error>(server.respond(request, Some(progress)).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(CONNECTION_BUFFER)
            .serve_connection(io, service);
        if let Ended::Stalled = Watched::new(conn, progress, timeout).await {
            counts.stalled.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "sparsebuf: dropped a connection whose client took nothing for {:?}",
                timeout
            );
        }
    }

    /// Binds `addr` and serves on a runtime of the server's own (two worker threads) until the
    /// returned [`Running`] is dropped or [`stop`](Running::stop)ped. For programs that are not
    /// async. Port 0 picks a free port: see [`Running::local_addr`].
    pub fn start(self, addr: impl ToSocketAddrs) -> io::Result<Running> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            crate::error::invalid_input("the address to listen on resolved to nothing")
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sparsebuf-serve")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(async { TcpListener::bind(addr).await })?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = self.clone();
        let thread = std::thread::Builder::new()
            .name("sparsebuf-serve".into())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let mut serving = tokio::spawn(server.run(listener));
                    let mut stopped = stopped;
                    // Whichever comes first: the server fails, or `stop` (or a drop) is sent.
                    std::future::poll_fn(|cx| {
                        if let Poll::Ready(served) = Pin::new(&mut serving).poll(cx) {
                            let panicked = |_| io::Error::other("the server's task panicked");
                            return Poll::Ready(served.unwrap_or_else(|e| Err(panicked(e))));
                        }
                        Pin::new(&mut stopped).poll(cx).map(|_| Ok(()))
                    })
                    .await
                });
                // Ends connections still open, and the tasks of their bodies.
                runtime.shutdown_background();
                served
            })?;
        Ok(Running {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
            server: self,
        })
    }

    /// The response to one request. `progress`: its connection's, when the server runs the
    /// connection (a failing body then waits until what it sent is flushed).
    async fn respond(
        &self,
        request: Request<Incoming>,
        progress: Option<Arc<Progress>>,
    ) -> Response<ServeBody> {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let head = request.method() == Method::HEAD;
        if request.method() != Method::GET && !head {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if request.version() == Version::HTTP_11
            && request.headers().get_all(header::HOST).iter().count() != 1
        {
            let why = "an HTTP/1.1 request needs exactly one Host header\n";
            return plain(StatusCode::BAD_REQUEST, why);
        }
        if request.uri().path() != "/" {
            return plain(StatusCode::NOT_FOUND, "the stream is served at /\n");
        }
        let current = self.current();
        match current.evaluate(request.headers(), true) {
            Verdict::Proceed => {}
            Verdict::NotModified => return self.with_validators(not_modified()),
            Verdict::Failed => {
                let why = "the resource does not match the request's preconditions\n";
                return self.with_validators(plain(StatusCode::PRECONDITION_FAILED, why));
            }
        }
        if let Err(error) = self.prebuffered().await {
            return failed(&error);
        }
        let buffer = &self.buffer;
        let windowed = buffer.shared().is_windowed();
        let specs = match request.headers().get(header::RANGE) {
            Some(range) if !windowed && current.if_range_holds(request.headers()) => {
                range.to_str().ok().and_then(ranges::parse)
            }
            _ => None,
        };
        let len = match (&specs, buffer.len()) {
            (_, Some(len)) => Some(len),
            // Sent whole as it comes, without the length.
            (None, None) => None,
            (Some(specs), None) if specs.len() == 1 && specs[0].is_whole() => None,
            // A range needs the total for its `Content-Range`: wait for the end.
            (Some(_), None) => match self.wait_for_len().await {
                Ok(len) => Some(len),
                Err(error) => return failed(&error),
            },
        };
        let mut response = match (specs, len) {
            (None, _) | (Some(_), None) => {
                // From the oldest byte held: 0 but for a windowed stream.
                let start = buffer.window_start();
                let body = ServeBody::new(self, vec![Part::range(start, len)], progress);
                let mut response = Response::new(body);
                if let Some(len) = len {
                    let length = len.saturating_sub(start).to_string();
                    set(&mut response, header::CONTENT_LENGTH, length);
                }
                response
            }
            (Some(specs), Some(len)) => self.ranged(&specs, len, progress),
        };
        // The head goes out only with the first bytes: a source that fails before them is a
        // 502 with its cause, not a connection closed before any status line.
        if let Err(error) = response.body_mut().prime().await {
            return failed(&error);
        }
        let headers = response.headers_mut();
        let accept = if windowed { "none" } else { "bytes" };
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static(accept));
        if !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        }
        if head {
            *response.body_mut() = ServeBody::empty(self);
        }
        self.with_validators(response)
    }

    /// The served version, for preconditions.
    fn current(&self) -> Current<'_> {
        Current {
            etag: self.etag.to_str().unwrap_or_default(),
            last_modified: self.last_modified,
        }
    }

    /// `response` with the `ETag` and, if known, the `Last-Modified` of the resource.
    fn with_validators(&self, mut response: Response<ServeBody>) -> Response<ServeBody> {
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        if let Some(modified) = self.last_modified {
            if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
                headers.insert(header::LAST_MODIFIED, value);
            }
        }
        response
    }

    /// The answer to satisfiable or unsatisfiable `specs` of a resource of `len` bytes.
    fn ranged(
        &self,
        specs: &[Spec],
        len: u64,
        progress: Option<Arc<Progress>>,
    ) -> Response<ServeBody> {
        let chosen = ranges::resolve(specs, len);
        match chosen.as_slice() {
            [] => {
                let mut response = plain(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "no range of the request is in the resource\n",
                );
                set(
                    &mut response,
                    header::CONTENT_RANGE,
                    format!("bytes */{len}"),
                );
                response
            }
            [range] => {
                let part = Part::range(range.start, Some(range.end));
                let mut response = Response::new(ServeBody::new(self, vec![part], progress));
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let content_range = content_range(range, len);
                set(&mut response, header::CONTENT_RANGE, content_range);
                let length = (range.end - range.start).to_string();
                set(&mut response, header::CONTENT_LENGTH, length);
                response
            }
            several => {
                let boundary = format!("sparsebuf-{}", &self.etag()[1..17.min(self.etag().len())]);
                let content_type = self.content_type.to_str().unwrap_or_default();
                let mut parts = Vec::with_capacity(several.len() * 2 + 1);
                for (i, range) in several.iter().enumerate() {
                    let lead = if i == 0 { "" } else { "\r\n" };
                    let head = format!(
                        "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                        content_range(range, len)
                    );
                    parts.push(Part::Text(Bytes::from(head)));
                    parts.push(Part::range(range.start, Some(range.end)));
                }
                parts.push(Part::Text(Bytes::from(format!("\r\n--{boundary}--\r\n"))));
                let body = ServeBody::new(self, parts, progress);
                let length = body.remaining_len().unwrap_or(0).to_string();
                let mut response = Response::new(body);
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                let kind = format!("multipart/byteranges; boundary={boundary}");
                set(&mut response, header::CONTENT_TYPE, kind);
                set(&mut response, header::CONTENT_LENGTH, length);
                response
            }
        }
    }

    /// Waits until the first `prebuffer` bytes are filled, or the stream ended before them.
    async fn prebuffered(&self) -> io::Result<()> {
        let want = self.prebuffer;
        if want == 0 || self.buffer.shared().is_windowed() {
            return Ok(());
        }
        let mut byte = [0u8; 1];
        self.buffer
            .read_at_async(want - 1, &mut byte)
            .await
            .map(drop)
    }

    /// The stream's length, waiting for its end off the runtime's threads.
    async fn wait_for_len(&self) -> io::Result<u64> {
        let mut cursor = self.buffer.async_reader();
        Pin::new(&mut cursor).start_seek(SeekFrom::End(0))?;
        std::future::poll_fn(|cx| Pin::new(&mut cursor).poll_complete(cx)).await
    }
}

/// A connection in the table and the counts, unregistered when dropped (with its task).
struct Registered(Arc<Connections>, usize, Arc<Counts>);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.remove(self.1);
        self.2.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accept errors that concern one connection (or a passing shortage), not the listener.
fn is_per_connection(error: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || error.raw_os_error().is_some_and(|code| {
        // ENOBUFS, ENOMEM: the system ran short for a moment.
        matches!(code, 105 | 12)
    })
}

/// EMFILE, ENFILE: no descriptor for the new connection.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    error
        .raw_os_error()
        .is_some_and(|code| matches!(code, 24 | 23))
}

/// `304 Not Modified`: no body.
fn not_modified() -> Response<ServeBody> {
    let mut response = Response::new(ServeBody::text(Bytes::new()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response
}

/// A tag unique to this server: the time and a process-wide count.
fn new_etag() -> HeaderValue {
    static MADE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = MADE.fetch_add(1, Ordering::Relaxed);
    let tag = format!(
        "\"{nanos:016x}{:04x}{count:x}\"",
        std::process::id() & 0xffff
    );
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"sparsebuf\""))
}

fn content_range(range: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", range.start, range.end - 1)
}

fn set(response: &mut Response<ServeBody>, name: header::HeaderName, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, value);
    }
}

/// A short text answer (an error, or why there is no body).
fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<ServeBody> {
    let text = text.into();
    let length = text.len().to_string();
    let mut response = Response::new(ServeBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    set(&mut response, header::CONTENT_LENGTH, length);
    response
}

/// The stream failed before the response could start: `502 Bad Gateway` (the upstream is the
/// source), or `504` for a timeout, with the cause. (The failure itself is logged where it
/// happened, once.)
fn failed(error: &io::Error) -> Response<ServeBody> {
    let status = match error.kind() {
        io::ErrorKind::TimedOut => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    plain(status, format!("the stream failed: {error}\n"))
}

/// A [`Server`] running on a thread of its own, from [`Server::start`]. Dropping it stops the
/// server (as [`stop`](Running::stop) does, without waiting).
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub struct Running {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
    server: Server,
}

impl Running {
    /// The address the server listens on (with the real port if port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server (for [`Server::served`]).
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Stops accepting, ends the open connections, and waits for the server's thread.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop.take().map(|stop| stop.send(()));
        self.join()
    }

    /// Serves until the server fails (it does not stop by itself otherwise).
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(served)) => served,
            Some(Err(_)) => Err(io::Error::other("the server's thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.take().map(|stop| stop.send(()));
    }
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("content_type", &self.content_type)
            .field("prebuffer", &self.prebuffer)
            .field("etag", &self.etag)
            .field("last_modified", &self.last_modified)
            .field("send_timeout", &self.send_timeout)
            .field("served", &self.served())
            .finish_non_exhaustive()
    }
}

/// A piece of a response body: fixed text (multipart headers), or bytes of the stream.
enum Part {
    Text(Bytes),
    /// `[start, end)`; no end: to the end of the stream.
    Stream {
        start: u64,
        end: Option<u64>,
    },
}

impl Part {
    fn range(start: u64, end: Option<u64>) -> Part {
        Part::Stream { start, end }
    }

    fn len(&self) -> Option<u64> {
        match self {
            Part::Text(text) => Some(text.len() as u64),
            Part::Stream { start, end } => end.map(|end| end - start),
        }
    }
}

/// A response body: its parts in order, the stream's read through one cursor.
///
/// Its first frames may be read before the head is sent ([`prime`](ServeBody::prime)). When
/// the stream fails in the middle, the body does not end at once: hyper would close the
/// connection and drop what it has not written yet. It waits until the connection has flushed
/// every frame given so far, then fails, so the client gets every byte held before the failure
/// and then a cut (an error, never a clean end).
pub(crate) struct ServeBody {
    parts: std::collections::VecDeque<Part>,
    cursor: Option<AsyncReader>,
    buffer: Option<StreamBuffer>,
    counts: Option<Arc<Counts>>,
    /// A frame being filled.
    frame: BytesMut,
    /// Frames read by `prime`, sent first.
    ready: std::collections::VecDeque<Bytes>,
    /// The connection's progress (its flushes), when the server runs the connection.
    progress: Option<Arc<Progress>>,
    /// The stream failed: the error, and the connection's flush count when it did.
    failing: Option<(io::Error, u64)>,
}

impl ServeBody {
    fn new(server: &Server, parts: Vec<Part>, progress: Option<Arc<Progress>>) -> ServeBody {
        ServeBody {
            parts: parts.into(),
            cursor: None,
            buffer: Some(server.buffer.clone()),
            counts: Some(server.counts.clone()),
            frame: BytesMut::new(),
            ready: Default::default(),
            progress,
            failing: None,
        }
    }

    fn empty(server: &Server) -> ServeBody {
        ServeBody::new(server, Vec::new(), None)
    }

    fn text(bytes: Bytes) -> ServeBody {
        ServeBody {
            parts: std::iter::once(Part::Text(bytes)).collect(),
            cursor: None,
            buffer: None,
            counts: None,
            frame: BytesMut::new(),
            ready: Default::default(),
            progress: None,
            failing: None,
        }
    }

    /// The bytes left to send, if known.
    fn remaining_len(&self) -> Option<u64> {
        let ready: u64 = self.ready.iter().map(|b| b.len() as u64).sum();
        let parts: Option<u64> = self.parts.iter().map(Part::len).sum();
        parts.map(|parts| parts + ready)
    }

    /// Reads the body up to its first bytes of the stream (or its end), to be sent first; the
    /// stream's error if it fails before them.
    async fn prime(&mut self) -> io::Result<()> {
        loop {
            match std::future::poll_fn(|cx| self.poll_produce(cx)).await {
                None => return Ok(()),
                Some(Err(error)) => {
                    self.parts.clear();
                    return Err(error);
                }
                Some(Ok((data, from_stream))) => {
                    self.ready.push_back(data);
                    if from_stream {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// The next frame of the stream part at the front, `[start, end)`.
    fn poll_stream(
        &mut self,
        cx: &mut Context<'_>,
        start: u64,
        end: Option<u64>,
    ) -> Poll<io::Result<Bytes>> {
        let cursor = match &mut self.cursor {
            Some(cursor) if cursor.position() == start => cursor,
            _ => {
                let buffer = self
                    .buffer
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no stream"))?;
                self.cursor.insert(buffer.async_reader_at(start))
            }
        };
        let want = end.map_or(FRAME as u64, |end| (end - start).min(FRAME as u64)) as usize;
        if self.frame.len() < want {
            self.frame.resize(want, 0);
        }
        let mut read = ReadBuf::new(&mut self.frame[..want]);
        ready!(Pin::new(cursor).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 && end.is_some() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the stream ended at {start}, before the end of the range served"),
            )));
        }
        let frame = self.frame.split_to(n).freeze();
        Poll::Ready(Ok(frame))
    }

    /// The next piece of the body: its bytes, and whether they are the stream's (not a
    /// multipart head).
    fn poll_produce(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<(Bytes, bool)>>> {
        loop {
            let (start, end) = match self.parts.front_mut() {
                None => return Poll::Ready(None),
                Some(Part::Text(text)) => {
                    let text = std::mem::take(text);
                    self.parts.pop_front();
                    if text.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok((text, false))));
                }
                Some(Part::Stream { start, end }) => (*start, *end),
            };
            if end == Some(start) {
                self.parts.pop_front();
                continue;
            }
            let data = match ready!(self.poll_stream(cx, start, end)) {
                Ok(data) => data,
                Err(error) => {
                    self.parts.clear();
                    return Poll::Ready(Some(Err(error)));
                }
            };
            if data.is_empty() {
                // The end of a stream sent whole.
                self.parts.pop_front();
                continue;
            }
            let next = start + data.len() as u64;
            if let Some(Part::Stream { start, .. }) = self.parts.front_mut() {
                *start = next;
            }
            return Poll::Ready(Some(Ok((data, true))));
        }
    }

    /// A failed stream's error, once the connection has flushed what was sent before it.
    fn poll_failing(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let flushed = match (&self.failing, &self.progress) {
            (Some((_, seen)), Some(progress)) => progress.flushed_since(*seen, cx.waker()),
            _ => true,
        };
        if !flushed {
            return Poll::Pending;
        }
        match self.failing.take() {
            Some((error, _)) => Poll::Ready(Some(Err(error))),
            None => Poll::Ready(None),
        }
    }
}

impl Body for ServeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        if this.failing.is_some() {
            return this.poll_failing(cx);
        }
        let data = match this.ready.pop_front() {
            Some(data) => data,
            None => match ready!(this.poll_produce(cx)) {
                None => return Poll::Ready(None),
                Some(Ok((data, _))) => data,
                Some(Err(error)) => {
                    let seen = this.progress.as_ref().map_or(0, |p| p.flushes());
                    this.failing = Some((error, seen));
                    return this.poll_failing(cx);
                }
            },
        };
        if let Some(counts) = &this.counts {
            counts.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty() && self.ready.is_empty() && self.failing.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining_len() {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
