//! [`Consumer`]: a started fan-out consumer, and the loops that run it: on a thread of its own,
//! with its callbacks on a pool or in parallel, or inline (`inline.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use crossbeam_channel::unbounded;

use crate::engine::feed::{Feed, Polled};
use crate::engine::holds::HoldId;
use crate::engine::shared::Shared;
use crate::fanout::chunk::Chunk;
use crate::fanout::deliver::{
    ask, finished, guard, panicked, Callback, Deliver, OnDone, Sampler, SharedCallback,
};
use crate::fanout::inline::{Inline, InlineControl};
use crate::fanout::pool::Pool;
use crate::fanout::report::Report;
use crate::fanout::stop::Stop;
use crate::sync::{spawn_joinable, Arc, JoinHandle};

/// Where a consumer's callbacks run.
#[derive(Clone, Debug)]
pub(crate) enum Where {
    Inline,
    Thread,
    Pool(Pool),
}

/// A consumer's settings, checked by `Emit`.
pub(crate) struct Plan {
    /// Its stop signal (a sink's callback sleeps on it between retries).
    pub(crate) stop: Arc<Stop>,
    /// Hold each chunk until it was delivered (a sink's), not only until it was taken.
    pub(crate) keep: bool,
    pub(crate) shared: Arc<Shared>,
    pub(crate) chunk_size: u64,
    pub(crate) clip: bool,
    pub(crate) place: Where,
    pub(crate) parallel: usize,
    pub(crate) lagging: bool,
}

impl Plan {
    fn feed(&self, pin: bool) -> Feed {
        let pin = pin && !self.lagging;
        let keep = self.parallel + 1;
        let mut feed = Feed::start(&self.shared, self.chunk_size, self.clip, pin, keep);
        feed.keep_until_released(self.keep);
        feed
    }
}

/// A running consumer, made by [`Emit::start`](crate::Emit::start).
///
/// [`join`](Consumer::join) waits for its end. Dropping a `Consumer` stops it: it ends after
/// the chunk in flight, without waiting, and its hold on the buffer goes at once, whatever its
/// callback or sink is doing (a callback stuck for good only keeps its own thread), so the
/// writer of a windowed stream never waits for a dropped consumer. A sink waiting to retry
/// stops waiting.
///
/// # Examples
///
/// ```
/// use std::io::{self, Write};
/// use sparsebuf::StreamBuffer;
///
/// let (mut writer, buf) = StreamBuffer::builder().window(64 * 1024).build_push()?;
/// let steady = buf.emit(1000).start(|chunk| Ok(chunk.len()))?;
/// let picky = buf.emit(1000).start(|chunk| {
///     if chunk.offset() >= 5000 {
///         return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected frame"));
///     }
///     Ok(chunk.len())
/// })?;
/// let gone = buf.emit(10).start(|_| Ok(()))?;
/// drop(gone); // stops it: the writer never waits for it
///
/// for _ in 0..100 {
///     writer.write_all(&[0u8; 1000])?;
/// }
/// writer.finish()?;
/// assert_eq!(steady.join()?.bytes, 100_000);
/// assert_eq!(picky.join().unwrap_err().kind(), io::ErrorKind::InvalidData);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Consumer {
    shared: Arc<Shared>,
    run: Run,
    /// The consumer's hold, released when it is dropped.
    hold: Option<HoldId>,
    /// Set when it is dropped: ends its loop and cuts its sleeps short.
    stop: Arc<Stop>,
}

enum Run {
    Thread(Option<JoinHandle<io::Result<Report>>>),
    Inline(Arc<dyn InlineControl>),
}

impl Consumer {
    /// Waits until the consumer ended: it delivered the last chunk of its stream (so this
    /// waits for the stream's end), failed, or was stopped.
    ///
    /// # Errors
    ///
    /// The first error: a callback's `Err` (or its panic, as an error of kind
    /// [`Other`](io::ErrorKind::Other)), or the stream's error if it failed before the end.
    pub fn join(mut self) -> io::Result<Report> {
        match &mut self.run {
            Run::Thread(handle) => match handle.take().map(JoinHandle::join) {
                Some(Ok(result)) => result,
                Some(Err(panic)) => Err(panicked(panic.as_ref())),
                None => Err(io::Error::other("the consumer was already joined")),
            },
            Run::Inline(inline) => inline.wait(),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        match &self.run {
            Run::Thread(Some(_)) => {
                self.stop.set();
                if let Some(hold) = self.hold.take() {
                    self.shared.holds().remove(hold);
                }
                // Wakes the thread if it waits for bytes.
                self.shared.publish().notify();
            }
            Run::Thread(None) => {}
            Run::Inline(inline) => {
                self.stop.set();
                inline.stop(&self.shared);
            }
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inline = matches!(self.run, Run::Inline(_));
        f.debug_struct("Consumer")
            .field("inline", &inline)
            .finish_non_exhaustive()
    }
}

/// Starts a consumer whose callback gets one chunk at a time.
pub(crate) fn start_serial<T: Send + 'static>(
    plan: Plan,
    callback: Callback<T>,
    on_done: OnDone<T>,
    sampler: Sampler,
) -> io::Result<Consumer> {
    match &plan.place {
        Where::Inline => {
            let deliver = Deliver {
                callback,
                on_done,
                sampler,
            };
            let inline = Inline::start(&plan.shared, plan.feed(true), deliver);
            Ok(Consumer {
                shared: plan.shared,
                run: Run::Inline(inline),
                hold: None,
                stop: plan.stop,
            })
        }
        Where::Thread => {
            let mut deliver = Deliver {
                callback,
                on_done,
                sampler,
            };
            spawn(plan, move |shared, feed, stop| {
                while let Some(chunk) = next_chunk(shared, feed, stop)? {
                    let pause = deliver.deliver(chunk)?;
                    feed.release(shared);
                    if let Some(pause) = pause {
                        pause_for(shared, feed, stop, pause);
                    }
                }
                Ok(())
            })
        }
        Where::Pool(_) => {
            // One call at a time, on the pool: the callback moves between its threads.
            let callback = StdMutex::new(callback);
            let shared_callback: SharedCallback<T> = Arc::new(move |chunk| {
                let mut callback = callback.lock().unwrap_or_else(|e| e.into_inner());
                callback(chunk)
            });
            start_parallel(plan, shared_callback, on_done, sampler)
        }
    }
}

/// Starts a consumer whose callbacks run as jobs, up to `plan.parallel` at once: on the given
/// pool, or on a pool of the consumer's own.
pub(crate) fn start_parallel<T: Send + 'static>(
    plan: Plan,
    callback: SharedCallback<T>,
    mut on_done: OnDone<T>,
    mut sampler: Sampler,
) -> io::Result<Consumer> {
    let pool = match &plan.place {
        Where::Pool(pool) => pool.clone(),
        _ => Pool::new(plan.parallel)?,
    };
    let n = plan.parallel;
    spawn(plan, move |shared, feed, stop| {
        let mut jobs = Jobs::new(n);
        let result = (|| {
            while let Some(chunk) = next_chunk(shared, feed, stop)? {
                let last = chunk.is_last();
                jobs.submit(&pool, &callback, chunk)?;
                jobs.collect(&mut on_done, false)?;
                if jobs.in_flight == 0 {
                    feed.release(shared);
                }
                if jobs.stopping || last {
                    break;
                }
                if let Some(pause) = ask(&mut sampler)? {
                    pause_for(shared, feed, stop, pause);
                }
            }
            Ok(())
        })();
        // Every job ends before the consumer does; the first error in chunk order wins.
        let drained = jobs.collect(&mut on_done, true);
        result.and(drained).and(jobs.failed.map_or(Ok(()), Err))
    })
}

/// A consumer's callbacks in flight on a pool, and their results put back in chunk order.
struct Jobs<T> {
    limit: usize,
    in_flight: usize,
    next: u64,
    expected: u64,
    sender: crossbeam_channel::Sender<(u64, io::Result<T>)>,
    results: crossbeam_channel::Receiver<(u64, io::Result<T>)>,
    early: BTreeMap<u64, io::Result<T>>,
    /// The first error in chunk order: no result after it is handed on.
    failed: Option<io::Error>,
    /// Some job failed (maybe after chunks still in flight): submit no more.
    stopping: bool,
}

impl<T: Send + 'static> Jobs<T> {
    fn new(limit: usize) -> Self {
        let (sender, results) = unbounded();
        Jobs {
            limit,
            in_flight: 0,
            next: 0,
            expected: 0,
            sender,
            results,
            early: BTreeMap::new(),
            failed: None,
            stopping: false,
        }
    }

    fn submit(
        &mut self,
        pool: &Pool,
        callback: &SharedCallback<T>,
        chunk: Chunk,
    ) -> io::Result<()> {
        let (seq, callback, sender) = (self.next, callback.clone(), self.sender.clone());
        pool.run(Box::new(move || {
            let result = guard(|| callback(chunk)).and_then(|result| result);
            let _ = sender.send((seq, result));
        }))?;
        self.next += 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Hands finished results to `on_done` in order. Waits while the limit is reached (or,
    /// with `all`, until nothing is in flight).
    fn collect(&mut self, on_done: &mut OnDone<T>, all: bool) -> io::Result<()> {
        loop {
            let must_wait = self.in_flight >= self.limit || (all && self.in_flight > 0);
            let received = if must_wait {
                self.results.recv().ok()
            } else {
                self.results.try_recv().ok()
            };
            let Some((seq, result)) = received else {
                return Ok(());
            };
            self.in_flight -= 1;
            self.stopping |= result.is_err();
            self.early.insert(seq, result);
            while let Some(result) = self.early.remove(&self.expected) {
                self.expected += 1;
                match result {
                    Ok(value) if self.failed.is_none() => finished(on_done, value)?,
                    Ok(_) => {}
                    Err(error) => {
                        self.failed.get_or_insert(error);
                    }
                }
            }
        }
    }
}

/// Starts a consumer thread running `body` over the consumer's feed; the feed is closed when
/// the body ends, however it ends (or if the thread cannot start).
fn spawn<B>(plan: Plan, body: B) -> io::Result<Consumer>
where
    B: FnOnce(&Shared, &mut Feed, &Stop) -> io::Result<()> + Send + 'static,
{
    let stop = plan.stop.clone();
    let mut owned = Owned {
        feed: plan.feed(true),
        shared: plan.shared.clone(),
    };
    let hold = owned.feed.hold();
    let thread_stop = stop.clone();
    let handle = spawn_joinable("sparsebuf-consumer", move || {
        let Owned { shared, feed } = &mut owned;
        let result = guard(|| body(shared, feed, &thread_stop)).and_then(|r| r);
        result.map(|()| Report::of(feed))
    })?;
    Ok(Consumer {
        shared: plan.shared,
        run: Run::Thread(Some(handle)),
        hold,
        stop,
    })
}

/// A consumer thread's feed, closed when dropped.
struct Owned {
    shared: Arc<Shared>,
    feed: Feed,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.feed.close(&self.shared);
    }
}

/// The next chunk of a consumer thread: polls, and waits for more bytes in between (pulling or
/// fetching them as a reader would). `None`: the last chunk went out, or the consumer was
/// stopped.
fn next_chunk(shared: &Shared, feed: &mut Feed, stop: &Stop) -> io::Result<Option<Chunk>> {
    loop {
        // Read the generation before looking: a publish (or a stop) after this wakes the wait.
        let seen = shared.publish().generation();
        if stop.is_set() {
            return Ok(None);
        }
        match feed.poll(shared) {
            Polled::Chunk(cut) => return Ok(Some(Chunk::new(cut))),
            Polled::Done => return Ok(None),
            Polled::Failed(error) => return Err(error),
            Polled::More => {}
        }
        shared.wait_more(feed.position(), feed.least_end(), seen)?;
    }
}

/// A sampler's pause: lets go of the hold, sleeps (until the pause is over, the consumer is
/// stopped, or the stream ended or failed: a pause of any length ends with the stream), and
/// resumes at the live edge.
fn pause_for(shared: &Shared, feed: &mut Feed, stop: &Stop, pause: Duration) {
    feed.pause(shared);
    stop.sleep(pause, || shared.is_over());
    feed.resume(shared);
}
