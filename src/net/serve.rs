//! [`Server`] (feature `server`): buffers served over HTTP/1.1 with `Range` requests, on hyper
//! and tokio: one buffer, or the buffers of a cache by path; on a listener of its own, or
//! mounted in an application (`Server::handle`).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::buffer::StreamBuffer;
use crate::cache::Cache;
use crate::net::body::{Access, ServeBody};
use crate::net::connections::{default_limit, Connections, Ended, Progress, Tracked, Watched};
use crate::net::respond::{failed, plain, respond, Ask, Resource};
use crate::net::routes::{Found, Origin, Routes};
use crate::net::served::{Counts, Served};

/// The most a connection buffers ahead of its socket (hyper's write buffer; its read buffer
/// too): with one frame being queued, a client that stops reading costs about 128 KiB.
const CONNECTION_BUFFER: usize = 64 * 1024;

/// How many connections not yet accepted a listener of [`Server::bind`] queues.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with a queue of [`LISTEN_BACKLOG`] (see [`Server::bind`]); called
/// within a runtime.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As tokio's `bind` does: a restarted server can listen again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The default send timeout (nginx's `send_timeout`).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP server of one [`StreamBuffer`] at `/` ([`new`](Server::new)), or of the buffers of a
/// [`Cache`] by path: the files under a directory ([`directory`](Server::directory)) or the
/// resources under a base URL, a caching proxy ([`proxy`](Server::proxy)). `GET` and `HEAD`,
/// with the ranges of RFC 9110 (feature `server`). It runs on a listener of its own
/// ([`start`](Server::start), [`run`](Server::run), [`run_until`](Server::run_until)), or
/// answers requests in your own hyper or axum application ([`handle`](Server::handle), a
/// tower `Service` with feature `tower`).
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
/// - **Requests.** `GET` and `HEAD` (`405` for other methods), at `/` for a server of one buffer
///   (`404` elsewhere); an HTTP/1.1 request without exactly one `Host` is `400`.
/// - **Unknown length.** While the stream's length is unknown (a pipe with no `--len`), a
///   request without `Range`, or with `bytes=0-`, is answered at once: `200` with the body in
///   chunked encoding as it arrives. Any other range waits until the length is known (the end
///   of the stream; a forward-only source is pulled to its end meanwhile, within its budgets)
///   and is then answered `206` with the total. So no client ever sees a `206` with an
///   unknown total (`bytes a-b/*`), which FFmpeg would take for the end of the file. Browsers
///   need the length to seek at all: give it ([`Builder::len`](crate::Builder::len)) when you
///   know it.
/// - **Windowed streams** drop their oldest bytes. Once the length is known (declared with
///   [`Builder::len`](crate::Builder::len), or the stream ended), a range inside what the window
///   still holds is answered `206`, and one that starts before it `416`: a player can pause and
///   seek back within the window. While the length is unknown they advertise
///   `Accept-Ranges: none`, ignore `Range`, and serve each client from the oldest byte held.
/// - **Clients.** Each request reads through its own [`AsyncReader`](crate::AsyncReader): clients run at their own
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
    target: Target,
    prebuffer: u64,
    send_timeout: Duration,
    max_connections: Option<usize>,
    access_log: bool,
    counts: Arc<Counts>,
}

/// What a server serves.
#[derive(Clone)]
enum Target {
    /// One buffer, at `/`.
    One(Resource),
    /// The resources of a cache, by path.
    Routes(Routes),
}

impl Server {
    /// A server for `buffer` at `/`, with no prebuffering, with the buffer's validators
    /// ([`StreamBuffer::validators`]) if it has a strong tag, sent as the buffer's media type
    /// ([`StreamBuffer::content_type`]: an upstream's `Content-Type`) if it has one, else as
    /// `application/octet-stream`.
    pub fn new(buffer: StreamBuffer) -> Server {
        Server::with_target(Target::One(Resource::new(buffer, None)))
    }

    /// A caching proxy of the resources under `base_url` (feature `http`): a request for
    /// `/PATH?QUERY` is served from the buffer of `BASE_URL/PATH?QUERY` in `cache`
    /// ([`Cache::open_url`]: the key is the URL), opened by the first request and shared by
    /// every client, fetched only where clients read. An upstream status other than `200` or
    /// `206` (a `404`, a `403`) is passed on with the start of its body; the upstream's
    /// `Content-Type`, `ETag` and `Last-Modified` are sent (a type by the path's extension if
    /// the upstream sent none). A path with a `..` segment is `403`, one with an encoded `/` is
    /// `404`: no request reaches outside `base_url`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `base_url` is not an `http://` or `https://` URL.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sparsebuf::{Cache, Server};
    ///
    /// let cache = Cache::builder().memory_budget(256 << 20).build()?;
    /// let running = Server::proxy(cache, "http://origin.example/media")?.start("127.0.0.1:8080")?;
    /// // GET http://127.0.0.1:8080/film.mp4 serves http://origin.example/media/film.mp4
    /// running.wait()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn proxy(cache: Cache, base_url: &str) -> io::Result<Server> {
        let lower = base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://"))
            || base_url.contains('?')
        {
            return Err(crate::error::invalid_input(format!(
                "{base_url:?} is not a base URL (http:// or https://, without a query)"
            )));
        }
        let origin = Origin::Url(base_url.trim_end_matches('/').to_string());
        Ok(Server::with_target(Target::Routes(Routes {
            cache,
            origin,
        })))
    }

    /// A server of the files under `dir`: `/PATH` is served from the buffer of the file
    /// `dir/PATH` in `cache` (the key is the file's canonical path), read where clients ask,
    /// shared by every client. A file that changed (its length or modification time) since it
    /// was cached is read anew. The `Content-Type` comes from the file's extension. No request
    /// reaches outside `dir`: a `..` segment, or a symbolic link that leads out, is `403`; an
    /// encoded `/` is `404`; so is a directory or a missing file.
    ///
    /// # Errors
    ///
    /// The error of resolving `dir` (`NotFound`), or `InvalidInput` if it is not a directory.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use sparsebuf::{Cache, Server};
    ///
    /// let cache = Cache::builder().build()?;
    /// let running = Server::directory(cache, "/srv/media")?.start("127.0.0.1:8080")?;
    /// running.wait()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn directory(cache: Cache, dir: impl AsRef<Path>) -> io::Result<Server> {
        let dir = dir.as_ref();
        let root = std::fs::canonicalize(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        if !root.is_dir() {
            return Err(crate::error::invalid_input(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let origin = Origin::Dir(root);
        Ok(Server::with_target(Target::Routes(Routes {
            cache,
            origin,
        })))
    }

    fn with_target(target: Target) -> Server {
        Server {
            target,
            prebuffer: 0,
            send_timeout: SEND_TIMEOUT,
            max_connections: None,
            access_log: false,
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

    /// The `Content-Type` of the resource (`video/mp4`, `audio/mpeg`...), in place of the
    /// buffer's own; `InvalidInput` for a value that cannot be a header value (a control
    /// character, say), or for a server of many resources (their types are their own).
    pub fn content_type(mut self, value: &str) -> io::Result<Server> {
        let value = HeaderValue::from_str(value).map_err(|_| {
            crate::error::invalid_input(format!("{value:?} is not a valid Content-Type value"))
        })?;
        match &mut self.target {
            Target::One(resource) => resource.content_type = value,
            Target::Routes(_) => {
                return Err(crate::error::invalid_input(
                    "a server of many resources sends each one's own Content-Type",
                ))
            }
        }
        Ok(self)
    }

    /// Holds every response until the first `bytes` of the stream are filled (or it ended),
    /// so that a player starts with a cushion. Default 0.
    pub fn prebuffer(mut self, bytes: u64) -> Server {
        self.prebuffer = bytes;
        self
    }

    /// Logs one line per response once its body ended (or was cut), at level `info` under the
    /// target `sparsebuf::access`: method, path, range asked (`-` for none), status, bytes of
    /// body sent, duration in milliseconds, and `cut` for a body that did not end cleanly.
    /// Default off.
    pub fn access_log(mut self, on: bool) -> Server {
        self.access_log = on;
        self
    }

    /// The buffer served, for a server of one buffer ([`new`](Server::new)); `None` for a
    /// server of many resources.
    pub fn buffer(&self) -> Option<&StreamBuffer> {
        match &self.target {
            Target::One(resource) => Some(&resource.buffer),
            Target::Routes(_) => None,
        }
    }

    /// The cache a server of many resources serves from.
    pub fn cache(&self) -> Option<&Cache> {
        match &self.target {
            Target::One(_) => None,
            Target::Routes(routes) => Some(&routes.cache),
        }
    }

    /// The strong `ETag` every response carries, quotes included, for a server of one buffer;
    /// `""` for a server of many resources (each has its own).
    pub fn etag(&self) -> &str {
        match &self.target {
            Target::One(resource) => resource.etag(),
            Target::Routes(_) => "",
        }
    }

    /// What was served so far (by this server and its clones).
    pub fn served(&self) -> Served {
        self.counts.served()
    }

    /// The response to `request`, for a server you run yourself: a hyper service, an axum
    /// handler, a tower stack. The request's body is not read (`GET` and `HEAD` carry none);
    /// the future is `Send` and `'static` whatever the body type. The response's body
    /// ([`ServeBody`]) streams from the buffer: send it as it comes, and cut the connection if
    /// it yields an error (hyper does), so that the client sees a cut and not a clean end.
    ///
    /// The [`send_timeout`](Server::send_timeout) and the
    /// [connection limit](Server::max_connections) belong to connections, which are yours
    /// here; the server's [`served`](Server::served) counts requests and bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use sparsebuf::{Server, StreamBuffer};
    /// use hyper::{Request, StatusCode};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let buffer = StreamBuffer::builder()
    ///     .len(12)
    ///     .build(std::io::Cursor::new(b"hello, world".to_vec()))?;
    /// let server = Server::new(buffer);
    /// let request = Request::get("/")
    ///     .header("host", "example")
    ///     .header("range", "bytes=7-")
    ///     .body(())
    ///     .unwrap();
    /// let response = server.handle(request).await;
    /// assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    /// assert_eq!(response.headers()["content-range"], "bytes 7-11/12");
    /// # Ok::<(), std::io::Error>(())
    /// # })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handle<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Response<ServeBody>> + Send + 'static {
        let (parts, _body) = request.into_parts();
        let server = self.clone();
        async move { server.answer(parts, None).await }
    }

    /// Serves on `listener` until the future is dropped (or accepting fails for good). Each
    /// connection runs on a task of its own; their errors (a client that goes away) end only
    /// that connection.
    pub async fn run(self, listener: TcpListener) -> io::Result<()> {
        self.serve(listener, std::future::pending()).await
    }

    /// A listener on `addr` (the first of its addresses that binds) whose queue of connections
    /// not yet accepted holds [`LISTEN_BACKLOG`] (the system may cap it: `net.core.somaxconn`).
    /// `tokio::net::TcpListener::bind` keeps 128, like the standard library: a herd of clients
    /// connecting at once past that waits for the kernel to retry their handshakes, 1 s and
    /// then 3 s later. [`start`](Server::start) listens so.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(buffer: sparsebuf::StreamBuffer) -> std::io::Result<()> {
    /// let listener = sparsebuf::Server::bind("127.0.0.1:8080").await?;
    /// sparsebuf::Server::new(buffer).run(listener).await
    /// # }
    /// ```
    pub async fn bind(addr: impl tokio::net::ToSocketAddrs) -> io::Result<TcpListener> {
        let mut last = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match listen(addr) {
                Ok(listener) => return Ok(listener),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            crate::error::invalid_input("the address to listen on resolved to nothing")
        }))
    }

    /// Serves on `listener` until `signal` completes, then drains: stops accepting, lets each
    /// response in flight finish (a connection closes after its current response; idle ones
    /// close at once) for up to `grace`, and closes whatever is left. Returns once every
    /// connection is closed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(buffer: sparsebuf::StreamBuffer) -> std::io::Result<()> {
    /// use std::time::Duration;
    ///
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// // Sent by whatever decides the end: a signal handler, an admin endpoint...
    /// let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let stopped = async {
    ///     stopped.await.ok();
    /// };
    /// sparsebuf::Server::new(buffer)
    ///     .run_until(listener, stopped, Duration::from_secs(10))
    ///     .await
    /// # }
    /// ```
    pub async fn run_until(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()>,
        grace: Duration,
    ) -> io::Result<()> {
        self.serve(listener, async move {
            signal.await;
            grace
        })
        .await
    }

    /// The accept loop, until `drain` gives the grace period.
    async fn serve(
        self,
        listener: TcpListener,
        drain: impl Future<Output = Duration>,
    ) -> io::Result<()> {
        let limit = self.max_connections.unwrap_or_else(default_limit);
        let table = Arc::new(Connections::new(limit));
        let (draining, drained) = tokio::sync::watch::channel(false);
        let mut drain = std::pin::pin!(drain);
        loop {
            let accepted = std::future::poll_fn(|cx| {
                if let Poll::Ready(grace) = drain.as_mut().poll(cx) {
                    return Poll::Ready(Err(grace));
                }
                listener.poll_accept(cx).map(Ok)
            })
            .await;
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(grace) => {
                    drop(listener);
                    return self.drain(&table, &draining, grace).await;
                }
            };
            let stream = match accepted {
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
            let connection = self
                .clone()
                .connection(stream, registered, progress, drained.clone());
            let task = tokio::spawn(connection);
            table.set_task(id, task.abort_handle());
        }
    }

    /// Asks every connection to close after its response in flight, waits up to `grace` for
    /// them, and closes the rest.
    async fn drain(
        &self,
        table: &Connections,
        draining: &tokio::sync::watch::Sender<bool>,
        grace: Duration,
    ) -> io::Result<()> {
        let _ = draining.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.counts.open.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                let closed = table.close_all();
                log::info!("sparsebuf: closed {closed} connection(s) still open after the drain");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
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
    /// aborted) to make room; on a drain, it ends after its response in flight.
    async fn connection(
        self,
        stream: TcpStream,
        registered: Registered,
        progress: Arc<Progress>,
        mut drained: tokio::sync::watch::Receiver<bool>,
    ) {
        let _registered = registered;
        let counts = self.counts.clone();
        let timeout = self.send_timeout;
        let io = TokioIo::new(Tracked::new(stream, progress.clone()));
        let on_request = progress.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let (server, progress) = (self.clone(), on_request.clone());
            let (parts, _body) = request.into_parts();
            async move { Ok::<_, io::Error>(server.answer(parts, Some(progress)).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .max_buf_size(CONNECTION_BUFFER)
            .serve_connection(io, service);
        let mut watched = Watched::new(conn, progress, timeout);
        // A drain asks the connection to close after its response in flight.
        let mut draining = Box::pin(async move {
            let _ = drained.wait_for(|draining| *draining).await;
        });
        let mut asked = false;
        let ended = std::future::poll_fn(|cx| {
            if !asked && draining.as_mut().poll(cx).is_ready() {
                asked = true;
                watched.conn().graceful_shutdown();
            }
            Pin::new(&mut watched).poll(cx)
        })
        .await;
        if let Ended::Stalled = ended {
            counts.stalled.fetch_add(1, Ordering::Relaxed);
            log::info!(
                "sparsebuf: dropped a connection whose client took nothing for {:?}",
                timeout
            );
        }
    }

    /// Binds `addr` and serves on a runtime of the server's own (two worker threads) until the
    /// returned [`Running`] is dropped, [`stop`](Running::stop)ped or
    /// [`shut down`](Running::shutdown). For programs that are not async. Port 0 picks a free
    /// port: see [`Running::local_addr`].
    pub fn start(self, addr: impl ToSocketAddrs) -> io::Result<Running> {
        let addr = addr.to_socket_addrs()?.next().ok_or_else(|| {
            crate::error::invalid_input("the address to listen on resolved to nothing")
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sparsebuf-serve")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(async { listen(addr) })?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<Option<Duration>>();
        let server = self.clone();
        let thread = std::thread::Builder::new()
            .name("sparsebuf-serve".into())
            .spawn(move || {
                let served = runtime.block_on(async move {
                    let (drain, grace) = tokio::sync::oneshot::channel::<Duration>();
                    let grace = async move { grace.await.unwrap_or_default() };
                    let mut serving = tokio::spawn(server.serve(listener, grace));
                    let mut stopped = stopped;
                    let mut drain = Some(drain);
                    // Whichever comes first: the server fails, or `stop` (or a drop) is sent;
                    // a `shutdown` drains, and then waits for the server.
                    std::future::poll_fn(|cx| {
                        if let Poll::Ready(served) = Pin::new(&mut serving).poll(cx) {
                            let panicked = |_| io::Error::other("the server's task panicked");
                            return Poll::Ready(served.unwrap_or_else(|e| Err(panicked(e))));
                        }
                        if drain.is_some() {
                            match ready!(Pin::new(&mut stopped).poll(cx)) {
                                Ok(Some(grace)) => {
                                    let _ = drain.take().map(|drain| drain.send(grace));
                                }
                                _ => return Poll::Ready(Ok(())),
                            }
                        }
                        Poll::Pending
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

    /// The response to one request (its head). `progress`: its connection's, when the server
    /// runs the connection (a failing body then waits until what it sent is flushed).
    async fn answer(&self, request: Parts, progress: Option<Arc<Progress>>) -> Response<ServeBody> {
        let started = Instant::now();
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let mut response = self.route(&request, progress).await;
        if self.access_log {
            let access = Access::new(&request, response.status(), started);
            response.body_mut().log_access(access);
        }
        response
    }

    async fn route(&self, request: &Parts, progress: Option<Arc<Progress>>) -> Response<ServeBody> {
        let head = request.method == Method::HEAD;
        if request.method != Method::GET && !head {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if request.version == Version::HTTP_11
            && request.headers.get_all(header::HOST).iter().count() != 1
        {
            let why = "an HTTP/1.1 request needs exactly one Host header\n";
            return plain(StatusCode::BAD_REQUEST, why);
        }
        let routed;
        let resource = match &self.target {
            Target::One(resource) => {
                if request.uri.path() != "/" {
                    return plain(StatusCode::NOT_FOUND, "the stream is served at /\n");
                }
                resource
            }
            Target::Routes(routes) => {
                let (routes, uri) = (routes.clone(), request.uri.clone());
                // Opening may block: a file is opened, an upstream probed.
                match tokio::task::spawn_blocking(move || routes.resolve(&uri)).await {
                    Ok(Found::Resource(resource)) => {
                        routed = resource;
                        &routed
                    }
                    Ok(Found::Answer(refusal)) => return refusal.response(),
                    Err(error) => {
                        let why = format!("opening the resource failed: {error}");
                        return failed(&io::Error::other(why));
                    }
                }
            }
        };
        let ask = Ask {
            method: &request.method,
            headers: &request.headers,
            prebuffer: self.prebuffer,
            counts: &self.counts,
            progress,
        };
        respond(resource, ask).await
    }
}

/// A [`Server`] is a tower `Service` (feature `tower`): mount it in an axum `Router` with
/// `nest_service("/video", server)` (axum strips the prefix: a server of one buffer serves it
/// at the route itself, a server of a cache the paths under the route). Each call is
/// [`Server::handle`]; the service is always ready and never fails (errors are responses).
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
impl<B> tower_service::Service<Request<B>> for Server {
    type Response = Response<ServeBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = self.handle(request);
        Box::pin(async move { Ok(response.await) })
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

/// A [`Server`] running on a thread of its own, from [`Server::start`]. Dropping it stops the
/// server (as [`stop`](Running::stop) does, without waiting).
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub struct Running {
    local_addr: SocketAddr,
    /// `None`: stop now; a grace period: drain.
    stop: Option<tokio::sync::oneshot::Sender<Option<Duration>>>,
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
        self.stop.take().map(|stop| stop.send(None));
        self.join()
    }

    /// Stops accepting, lets the responses in flight finish for up to `grace` (see
    /// [`Server::run_until`]), closes what is left, and waits for the server's thread.
    pub fn shutdown(mut self, grace: Duration) -> io::Result<()> {
        self.stop.take().map(|stop| stop.send(Some(grace)));
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
        self.stop.take().map(|stop| stop.send(None));
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
        let serves = match &self.target {
            Target::One(resource) => format!("one buffer, {:?}", resource.content_type),
            Target::Routes(routes) => format!("{:?}", routes.origin),
        };
        f.debug_struct("Server")
            .field("serves", &serves)
            .field("prebuffer", &self.prebuffer)
            .field("etag", &self.etag())
            .field("send_timeout", &self.send_timeout)
            .field("served", &self.served())
            .finish_non_exhaustive()
    }
}
