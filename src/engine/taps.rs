//! Taps: consumers that run on the producing thread (`Emit::run_inline`), and the count of all
//! registered consumers.
//!
//! The appender calls [`Taps::deliver`] after each publish and at the end of the stream, with
//! no lock held (a pulled stream's producer still holds its writer role). A tap copies what it
//! needs before the producer goes on, so it never needs the bytes to stay: it is never behind.

use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

/// A consumer fed by the producer of `C` (a buffer's shared state). Implemented by the inline
/// consumer (`fanout/inline.rs`).
pub(crate) trait Tap<C>: Send + Sync {
    /// Bytes were published, or the stream ended or failed: take what is there. Returns
    /// `false` once the tap wants nothing more (it finished, failed or was stopped).
    fn deliver(&self, owner: &C) -> bool;
}

/// The taps of one buffer, and how many consumers of any kind it has.
pub(crate) struct Taps<C> {
    list: Mutex<Vec<Arc<dyn Tap<C>>>>,
    /// `list.len()`, read without the lock on every publish.
    taps: AtomicU64,
    /// Registered consumers of any kind: while there is one, every write is marked exactly
    /// (see `marks.rs`).
    consumers: AtomicU64,
}

impl<C> Taps<C> {
    pub(crate) fn new() -> Self {
        Taps {
            list: Mutex::new(Vec::new()),
            taps: AtomicU64::new(0),
            consumers: AtomicU64::new(0),
        }
    }

    /// Registers a tap. Bytes published before this returns are the caller's to deliver.
    pub(crate) fn add(&self, tap: Arc<dyn Tap<C>>) {
        let mut list = self.list.lock();
        list.push(tap);
        self.taps.store(list.len() as u64, Ordering::Release);
    }

    /// Unregisters the tap at `tap` (a stopped consumer).
    pub(crate) fn remove(&self, tap: *const ()) {
        let mut list = self.list.lock();
        list.retain(|t| Arc::as_ptr(t) as *const () != tap);
        self.taps.store(list.len() as u64, Ordering::Release);
    }

    /// Feeds every tap, on the producer's thread. The list is copied first, so a tap's callback
    /// may start or stop consumers of the same buffer.
    pub(crate) fn deliver(&self, owner: &C) {
        // A tap registered after this load was added after the publish being announced (the
        // index lock orders them), so its own catch-up covers that publish.
        if self.taps.load(Ordering::Acquire) == 0 {
            return;
        }
        let taps = self.list.lock().clone();
        for tap in &taps {
            if !tap.deliver(owner) {
                self.remove(Arc::as_ptr(tap) as *const ());
            }
        }
    }

    /// A consumer was started (`true`) or ended.
    pub(crate) fn count(&self, started: bool) {
        if started {
            self.consumers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.consumers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// How many consumers are registered (for loom models).
    #[cfg(loom)]
    pub(crate) fn consumers(&self) -> u64 {
        self.consumers.load(Ordering::Relaxed)
    }

    /// Whether any consumer is registered.
    pub(crate) fn any_consumer(&self) -> bool {
        self.consumers.load(Ordering::Relaxed) > 0
    }
}
