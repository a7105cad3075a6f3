//! Inline consumers (`Emit::run_inline`): fed by the producer after each publish (see
//! `taps.rs`), on its thread, through the same feed as consumer threads.

use std::io;
use std::time::{Duration, Instant};

use crate::engine::feed::{Feed, Polled};
use crate::engine::shared::Shared;
use crate::engine::taps::Tap;
use crate::fanout::chunk::Chunk;
use crate::fanout::deliver::Deliver;
use crate::fanout::report::Report;
use crate::sync::{current_thread, fence, Arc, AtomicBool, Condvar, Mutex, Ordering, ThreadId};

/// What a `Consumer` needs of its inline consumer.
pub(crate) trait InlineControl: Send + Sync {
    /// Waits for the end: the last chunk delivered, a failure or a stop.
    fn wait(&self) -> io::Result<Report>;
    /// Stops the consumer after the chunk in flight.
    fn stop(&self, shared: &Shared);
}

/// An inline consumer: its feed and callbacks, behind one lock that the producer takes to feed
/// it (so its chunks go out in order, one at a time).
pub(crate) struct Inline<T> {
    state: Mutex<State<T>>,
    ended: Condvar,
    stop: AtomicBool,
    /// The thread feeding it right now, if any: a stop from that very thread (a callback
    /// dropping its own consumer) must not wait for the lock it holds.
    feeding: Mutex<Option<ThreadId>>,
}

struct State<T> {
    feed: Feed,
    /// Dropped when the consumer ends (a sink's callback aborts the sink if it did not finish).
    deliver: Option<Deliver<T>>,
    /// A sampler's pause lasts until then: what is published meanwhile is skipped.
    resume_at: Option<Instant>,
    outcome: Option<io::Result<Report>>,
}

impl<T: Send + 'static> Inline<T> {
    /// Registers the consumer with the producer, then delivers what is published already on
    /// the calling thread (holding it meanwhile), then lets go of the hold: from then on the
    /// producer feeds it before it moves on.
    pub(crate) fn start(
        shared: &Shared,
        feed: Feed,
        deliver: Deliver<T>,
    ) -> Arc<dyn InlineControl> {
        let inline = Arc::new(Inline {
            state: Mutex::new(State {
                feed,
                deliver: Some(deliver),
                resume_at: None,
                outcome: None,
            }),
            ended: Condvar::new(),
            stop: AtomicBool::new(false),
            feeding: Mutex::new(None),
        });
        shared.taps().add(inline.clone());
        if inline.feed(shared) {
            inline.state.lock().feed.unpin(shared);
        }
        inline
    }

    /// Takes and delivers what is published; `false` once the consumer ended.
    fn feed(&self, shared: &Shared) -> bool {
        let mut state = self.state.lock();
        if state.outcome.is_some() {
            return false;
        }
        *self.feeding.lock() = Some(current_thread());
        let more = self.run(shared, &mut state);
        *self.feeding.lock() = None;
        drop(state);
        // A stop that found the lock taken left the end to this thread: with the fences, either
        // this sees the stop, or the stop's `try_lock` saw the lock free (see `stop`).
        fence(Ordering::SeqCst);
        if more && self.stop.load(Ordering::SeqCst) {
            let mut state = self.state.lock();
            if state.outcome.is_none() {
                self.end(shared, &mut state, Ok(()));
            }
            return false;
        }
        more
    }

    fn run(&self, shared: &Shared, state: &mut State<T>) -> bool {
        loop {
            if self.stop.load(Ordering::Acquire) {
                return self.end(shared, state, Ok(()));
            }
            if let Some(at) = state.resume_at {
                if Instant::now() < at {
                    // Paused: what was published meanwhile is skipped.
                    state.feed.resume(shared);
                } else {
                    state.resume_at = None;
                }
            }
            match state.feed.poll(shared) {
                Polled::Chunk(cut) => {
                    match state.deliver.as_mut().map(|d| d.deliver(Chunk::new(cut))) {
                        Some(Ok(pause)) => {
                            if let Some(pause) = pause {
                                state.resume_at = Some(resume_at(pause));
                            }
                        }
                        Some(Err(error)) => return self.end(shared, state, Err(error)),
                        None => return false,
                    }
                }
                Polled::More if !self.stop.load(Ordering::Acquire) => return true,
                Polled::More => {}
                Polled::Done => return self.end(shared, state, Ok(())),
                Polled::Failed(error) => return self.end(shared, state, Err(error)),
            }
        }
    }

    fn end(&self, shared: &Shared, state: &mut State<T>, result: io::Result<()>) -> bool {
        state.deliver = None;
        state.feed.close(shared);
        state.outcome = Some(result.map(|()| Report::of(&state.feed)));
        self.ended.notify_all();
        false
    }
}

/// When a pause of `pause` ends: any length is a pause (one past what an `Instant` holds lasts
/// a century, which the end of the stream cuts short).
fn resume_at(pause: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(pause)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

impl<T: Send + 'static> Tap<Shared> for Inline<T> {
    fn deliver(&self, shared: &Shared) -> bool {
        self.feed(shared)
    }
}

impl<T: Send + 'static> InlineControl for Inline<T> {
    fn wait(&self) -> io::Result<Report> {
        let mut state = self.state.lock();
        loop {
            if let Some(outcome) = state.outcome.take() {
                return outcome;
            }
            self.ended.wait(&mut state);
        }
    }

    /// Never waits: if the producer is feeding the consumer right now (its callback running,
    /// on this thread or another), the producer ends it after that chunk.
    fn stop(&self, shared: &Shared) {
        self.stop.store(true, Ordering::SeqCst);
        shared.taps().remove(self as *const Self as *const ());
        if *self.feeding.lock() == Some(current_thread()) {
            return;
        }
        fence(Ordering::SeqCst);
        if let Some(mut state) = self.state.try_lock() {
            if state.outcome.is_none() {
                self.end(shared, &mut state, Ok(()));
            }
        }
    }
}
