//! The Range server's connections (feature `http`): what each has sent and when it last made
//! progress ([`Progress`], kept by the socket wrapper [`Tracked`]), a watchdog that drops a
//! connection whose socket has accepted nothing for the send timeout ([`Watched`]), and the
//! table of open connections that closes the stalest when the limit is reached
//! ([`Connections`]).
//!
//! A client that asks and never reads keeps a descriptor, a task and a cursor for as long as it
//! likes unless something takes them back: the watchdog does after the send timeout, and the
//! limit does at once when new clients need the room.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::AbortHandle;
use tokio::time::Sleep;

/// What one connection's socket did, shared by its wrapper, its watchdog, its response bodies
/// and the table. Times are milliseconds since the table's epoch.
pub(crate) struct Progress {
    /// When a byte was last read from or written to the socket.
    last: AtomicU64,
    /// Since when a write has been waiting for the socket to take it (`u64::MAX`: none waits).
    blocked_since: AtomicU64,
    /// Times the socket was flushed with nothing left in the server's buffers (hyper flushes
    /// its socket only once its own write buffer is empty).
    flushes: AtomicU64,
    /// A response body waiting for the next flush (see `ServeBody`'s failure path).
    flush_waker: Mutex<Option<Waker>>,
    epoch: Instant,
}

impl Progress {
    pub(crate) fn new(epoch: Instant) -> Self {
        let progress = Progress {
            last: AtomicU64::new(0),
            blocked_since: AtomicU64::new(u64::MAX),
            flushes: AtomicU64::new(0),
            flush_waker: Mutex::new(None),
            epoch,
        };
        progress.touch();
        progress
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A byte moved: progress.
    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.touch();
        self.blocked_since.store(u64::MAX, Ordering::Relaxed);
    }

    fn write_blocked(&self) {
        let now = self.now();
        let _ = self.blocked_since.compare_exchange(
            u64::MAX,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn flushed(&self) {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        let waker = self
            .flush_waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The flush count, to compare with [`flushed_since`](Progress::flushed_since).
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }

    /// Whether the socket was flushed empty since the count was `seen`; if not, `waker` is
    /// woken by the next such flush.
    pub(crate) fn flushed_since(&self, seen: u64, waker: &Waker) -> bool {
        let mut slot = self.flush_waker.lock().unwrap_or_else(|e| e.into_inner());
        if self.flushes() != seen {
            return true;
        }
        *slot = Some(waker.clone());
        false
    }

    /// Milliseconds since the last byte moved.
    fn idle_ms(&self) -> u64 {
        self.now().saturating_sub(self.last.load(Ordering::Relaxed))
    }

    /// When the write waiting now started waiting, if one does.
    fn blocked_since(&self) -> Option<u64> {
        match self.blocked_since.load(Ordering::Relaxed) {
            u64::MAX => None,
            since => Some(since),
        }
    }
}

/// A socket that records its progress.
pub(crate) struct Tracked<T> {
    io: T,
    progress: Arc<Progress>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(io: T, progress: Arc<Progress>) -> Self {
        Tracked { io, progress }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> Tracked<T> {
    fn record(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.progress.wrote(),
            Poll::Pending => self.progress.write_blocked(),
            _ => {}
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.record(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.record(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        match &polled {
            Poll::Ready(Ok(())) => self.progress.flushed(),
            Poll::Pending => self.progress.write_blocked(),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How a watched connection ended.
pub(crate) enum Ended<T> {
    /// The connection's own end.
    Done(T),
    /// Its socket took nothing for the send timeout: dropped.
    Stalled,
}

/// A connection future with a send timeout: it is dropped (with its response bodies and their
/// cursors) once a write has waited for the socket that long. A body waiting for its source
/// is not a stalled write: only a client that stops reading is.
pub(crate) struct Watched<F> {
    conn: Pin<Box<F>>,
    progress: Arc<Progress>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<F: Future> Watched<F> {
    pub(crate) fn new(conn: F, progress: Arc<Progress>, timeout: Duration) -> Self {
        Watched {
            conn: Box::pin(conn),
            progress,
            timeout,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// The connection watched (to ask it to shut down gracefully).
    pub(crate) fn conn(&mut self) -> Pin<&mut F> {
        self.conn.as_mut()
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = Ended<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(done) = self.conn.as_mut().poll(cx) {
            return Poll::Ready(Ended::Done(done));
        }
        let Some(since) = self.progress.blocked_since() else {
            // Nothing waits for the socket: any progress wakes the connection, not a timer.
            return Poll::Pending;
        };
        let timeout = self.timeout.as_millis().min(u64::MAX as u128) as u64;
        let deadline_ms = since.saturating_add(timeout);
        let now_ms = self.progress.now();
        if now_ms >= deadline_ms {
            return Poll::Ready(Ended::Stalled);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(deadline_ms - now_ms);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            // The deadline passed while it was being set: look again at once.
            Poll::Ready(()) => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The open connections of a server, and its limit.
///
/// When a new connection would pass the limit (or accepting fails for want of descriptors),
/// the connection that has made no progress for the longest is closed: its task is aborted,
/// which drops its socket, its response bodies and their cursors.
pub(crate) struct Connections {
    epoch: Instant,
    limit: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    open: usize,
}

struct Entry {
    progress: Arc<Progress>,
    abort: Option<AbortHandle>,
    /// Aborted, not gone yet: no longer counted, never chosen again.
    closing: bool,
}

impl Connections {
    pub(crate) fn new(limit: usize) -> Self {
        Connections {
            epoch: Instant::now(),
            limit: limit.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the table is full: a new connection needs a stalled one closed first.
    pub(crate) fn full(&self) -> bool {
        self.table().open >= self.limit
    }

    /// Registers a new connection; returns its slot and its progress record.
    pub(crate) fn add(&self) -> (usize, Arc<Progress>) {
        let progress = Arc::new(Progress::new(self.epoch));
        let entry = Some(Entry {
            progress: progress.clone(),
            abort: None,
            closing: false,
        });
        let mut table = self.table();
        table.open += 1;
        let id = match table.free.pop() {
            Some(id) => {
                table.entries[id] = entry;
                id
            }
            None => {
                table.entries.push(entry);
                table.entries.len() - 1
            }
        };
        (id, progress)
    }

    /// The task serving connection `id`, to abort when the connection must go.
    pub(crate) fn set_task(&self, id: usize, abort: AbortHandle) {
        if let Some(Some(entry)) = self.table().entries.get_mut(id) {
            entry.abort = Some(abort);
        }
    }

    /// Connection `id` ended.
    pub(crate) fn remove(&self, id: usize) {
        let mut table = self.table();
        if let Some(slot @ Some(_)) = table.entries.get_mut(id) {
            let closing = slot.as_ref().is_some_and(|e| e.closing);
            *slot = None;
            table.free.push(id);
            if !closing {
                table.open -= 1;
            }
        }
    }

    /// Closes the connection that has made no progress for the longest; how long that was, in
    /// milliseconds (`None`: there was none to close).
    pub(crate) fn close_stalest(&self) -> Option<u64> {
        let mut table = self.table();
        let (idle, entry) = table
            .entries
            .iter_mut()
            .flatten()
            .filter(|e| !e.closing && e.abort.is_some())
            .map(|e| (e.progress.idle_ms(), e))
            .max_by_key(|(idle, _)| *idle)?;
        entry.closing = true;
        if let Some(abort) = &entry.abort {
            abort.abort();
        }
        table.open -= 1;
        Some(idle)
    }

    /// Closes every connection (the end of a drain); how many there were.
    pub(crate) fn close_all(&self) -> usize {
        let mut table = self.table();
        let mut closed = 0;
        for entry in table.entries.iter_mut().flatten() {
            if let (false, Some(abort)) = (entry.closing, &entry.abort) {
                entry.closing = true;
                abort.abort();
                closed += 1;
            }
        }
        table.open -= closed;
        closed
    }
}

/// The default connection limit: the soft `RLIMIT_NOFILE`, less a reserve for the listener,
/// the spill file, the source (a file, a pipe, upstream connections), the runtime's own
/// descriptors and accepting the next client.
pub(crate) fn default_limit() -> usize {
    use rustix::process::{getrlimit, Resource};
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(1 << 20);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 20);
    let reserve = 32 + soft / 16;
    soft.saturating_sub(reserve).max(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stalest_connection_is_closed_first() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let table = Connections::new(2);
            let (a, pa) = table.add();
            let (b, pb) = table.add();
            let task_a = tokio::spawn(std::future::pending::<()>());
            let task_b = tokio::spawn(std::future::pending::<()>());
            table.set_task(a, task_a.abort_handle());
            table.set_task(b, task_b.abort_handle());
            assert!(table.full());
            // `b` moved a byte later than `a`.
            pa.last.store(0, Ordering::Relaxed);
            pb.touch();
            tokio::time::sleep(Duration::from_millis(5)).await;
            pb.touch();
            assert!(table.close_stalest().is_some());
            assert!(task_a.await.unwrap_err().is_cancelled());
            table.remove(a);
            assert!(!table.full());
            assert!(!task_b.is_finished());
            table.remove(b);
            table.remove(b); // twice: no effect
            assert!(table.close_stalest().is_none());
        });
    }

    #[test]
    fn a_blocked_write_is_recorded_until_a_byte_goes() {
        let p = Progress::new(Instant::now());
        assert_eq!(p.blocked_since(), None);
        p.write_blocked();
        let since = p.blocked_since().unwrap();
        p.write_blocked(); // still the first time
        assert_eq!(p.blocked_since(), Some(since));
        p.wrote();
        assert_eq!(p.blocked_since(), None);
    }

    #[test]
    fn the_default_limit_leaves_a_reserve() {
        let limit = default_limit();
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        assert!((limit as u64) < soft, "{limit} of {soft}");
        assert!(limit >= 16);
    }
}
