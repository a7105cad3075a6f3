//! The publish/wait protocol: how readers waiting for bytes past the frontier learn that a
//! producer published, ended, failed or let go of its role. Threads sleep on a condition
//! variable; async tasks leave a [`Waker`] beside it (see [`Publish::register`]).

use std::collections::HashMap;
use std::task::Waker;

use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};

/// Wakes readers waiting for a publish, without lost wake-ups.
///
/// A waiter reads `generation` *before* it looks at the index, then sleeps only while the
/// generation is unchanged, checking it under `lock`. The publisher bumps the generation *after*
/// publishing, under the same `lock`, then notifies. That is the plain condition-variable
/// pattern: a bump cannot fall between a waiter's check and its sleep, so no wake-up is lost.
/// (An earlier version bumped without the lock and used a `SeqCst` waiter count to skip
/// notifying; loom flagged it, since it relied on a single total order of `SeqCst` accesses
/// that its model does not provide. Taking an uncontended mutex per publish is cheaper than the
/// publish's own write lock.)
///
/// Async waiters follow the same protocol with a [`Waker`] in place of a sleep: they read the
/// generation, look, then [`register`](Publish::register) under `lock`, which refuses (and the
/// task looks again) if the generation moved meanwhile. The publisher takes the registered
/// wakers under `lock` as it bumps, and wakes them after releasing it. Each async cursor has a
/// key of its own ([`Publish::key`]): registering again replaces its waker in O(1), and a cursor
/// dropped while it waits (a cancelled task) takes its waker out ([`Publish::forget`]), so
/// cancelled waits leave nothing behind until the next publish.
pub(crate) struct Publish {
    /// Written only under `lock`; read without it (Acquire) to snapshot before a check.
    generation: AtomicU64,
    /// The wakers of tasks waiting for the next bump, by the key of their cursor.
    lock: Mutex<HashMap<u64, Waker>>,
    cond: Condvar,
    /// The next cursor key.
    #[cfg(feature = "tokio")]
    keys: AtomicU64,
}

impl Publish {
    pub(crate) fn new() -> Self {
        Publish {
            generation: AtomicU64::new(0),
            lock: Mutex::new(HashMap::new()),
            cond: Condvar::new(),
            #[cfg(feature = "tokio")]
            keys: AtomicU64::new(0),
        }
    }

    /// The current generation, to pass to [`wait`](Publish::wait) after checking the index.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Announces a publish, an end of stream, an error or the release of the writer role.
    pub(crate) fn notify(&self) {
        let wakers = {
            let mut wakers = self.lock.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
            if wakers.is_empty() {
                None
            } else {
                Some(std::mem::take(&mut *wakers))
            }
        };
        self.cond.notify_all();
        // Woken outside the lock: a waker may run its task's poll on this very thread.
        for waker in wakers.into_iter().flatten().map(|(_, waker)| waker) {
            waker.wake();
        }
    }

    #[cfg(feature = "tokio")]
    /// A key for a new async cursor's registrations.
    pub(crate) fn key(&self) -> u64 {
        self.keys.fetch_add(1, Ordering::Relaxed)
    }

    #[cfg(feature = "tokio")]
    /// Leaves `waker` under `key` to be woken by the next bump after `seen`, the generation read
    /// before the caller looked at the index. `false` if it moved already: look again instead
    /// of waiting. A waker registered under the same key is replaced, not added twice.
    pub(crate) fn register(&self, seen: u64, key: u64, waker: &Waker) -> bool {
        let mut wakers = self.lock.lock();
        if self.generation.load(Ordering::Acquire) != seen {
            return false;
        }
        match wakers.get_mut(&key) {
            Some(w) => w.clone_from(waker),
            None => {
                wakers.insert(key, waker.clone());
            }
        }
        true
    }

    #[cfg(feature = "tokio")]
    /// Takes out the waker registered under `key`, if any (a cursor dropped while it waited).
    pub(crate) fn forget(&self, key: u64) {
        self.lock.lock().remove(&key);
    }

    /// Sleeps until the generation moves past `seen`.
    pub(crate) fn wait(&self, seen: u64) {
        let mut guard = self.lock.lock();
        while self.generation.load(Ordering::Acquire) == seen {
            self.cond.wait(&mut guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn wait_returns_at_once_when_the_generation_moved() {
        let p = Publish::new();
        let seen = p.generation();
        p.notify();
        p.wait(seen); // would block forever if the bump were missed
        assert_eq!(p.generation(), seen + 1);
    }

    /// A waker that counts its wakes.
    #[cfg(feature = "tokio")]
    fn counting() -> (std::task::Waker, Arc<std::sync::atomic::AtomicUsize>) {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (Arc::new(Count(count.clone())).into(), count)
    }

    #[test]
    #[cfg(feature = "tokio")]
    fn a_registered_waker_is_woken_once_by_the_next_notify() {
        let p = Publish::new();
        let (waker, wakes) = counting();
        let key = p.key();
        let seen = p.generation();
        assert!(p.register(seen, key, &waker));
        // The same cursor again: replaced, not added.
        assert!(p.register(seen, key, &waker));
        p.notify();
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Taken by that notify: the next one wakes nobody.
        p.notify();
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A generation that moved since the look: refused, look again.
        assert!(!p.register(seen, key, &waker));
    }

    /// Pins the clean-up of cancelled waits: each task aborted while it waited once left its
    /// waker (about 580 bytes with its task) until the next publish; 200 000 of them on a
    /// stalled stream took 111 MiB.
    #[test]
    #[cfg(feature = "tokio")]
    fn a_forgotten_waker_is_gone_and_never_woken() {
        let p = Publish::new();
        let (waker, wakes) = counting();
        let seen = p.generation();
        for _ in 0..if cfg!(miri) { 50 } else { 1000 } {
            let key = p.key();
            assert!(p.register(seen, key, &waker));
            p.forget(key);
        }
        assert!(p.lock.lock().is_empty());
        p.notify();
        assert_eq!(wakes.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn notify_wakes_every_waiter() {
        let p = Arc::new(Publish::new());
        let seen = p.generation();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || p.wait(seen))
            })
            .collect();
        // Whether the waiters are asleep yet or not, one notify releases them all.
        thread::sleep(Duration::from_millis(20));
        p.notify();
        for w in waiters {
            w.join().unwrap();
        }
    }
}
