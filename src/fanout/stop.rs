//! [`Stop`]: a consumer's stop signal, which also cuts its sleeps short (a sampler's pause, a
//! sink's wait before a retry).

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, Ordering};

/// Set once, when a consumer is dropped; wakes every sleep on it.
pub(crate) struct Stop {
    set: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

/// How often a sleep looks whether it should end early for another reason than the stop (the
/// end of the stream, for a pause).
const LOOK: Duration = Duration::from_millis(50);

impl Stop {
    pub(crate) fn new() -> Self {
        Stop {
            set: AtomicBool::new(false),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::Release);
        let _lock = self.lock.lock();
        self.cond.notify_all();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Sleeps for `pause` (any length: one past what an `Instant` can hold lasts until
    /// something else ends it), until stopped, or until `done` says so (asked every 50 ms).
    /// Whether it was stopped.
    pub(crate) fn sleep(&self, pause: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now().checked_add(pause);
        let mut lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.is_set() && !done() {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => LOOK,
            };
            if left.is_zero() {
                break;
            }
            lock = match self.cond.wait_timeout(lock, left.min(LOOK)) {
                Ok((lock, _)) => lock,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        self.is_set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_sleep_of_any_length_ends_when_stopped_or_done() {
        let stop = Arc::new(Stop::new());
        assert!(!stop.sleep(Duration::from_millis(1), || false));
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                stop.set();
            })
        };
        assert!(stop.sleep(Duration::MAX, || false));
        setter.join().unwrap();
        let fresh = Stop::new();
        assert!(!fresh.sleep(Duration::MAX, || true));
    }
}
