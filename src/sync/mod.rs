//! Every lock and atomic the crate uses, re-exported from one place.
//!
//! Shared state names its primitives through this module only. A normal build uses
//! `parking_lot` and `std` atomics; a `--cfg loom` build swaps in loom's model-checked ones
//! behind the same (parking_lot-shaped) API, so `tests/loom.rs` can explore the interleavings of
//! the publish/wait protocol. `Arc` and `OnceLock` stay from `std` in both builds: they hold
//! immutable data set before the threads of a model start, which loom need not explore.

pub(crate) use std::sync::atomic::Ordering;
pub(crate) use std::sync::{Arc, OnceLock};

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64};

#[cfg(loom)]
pub(crate) use loom_shim::*;

/// The index lock: a reader-writer lock whose readers write no cache line that readers on
/// other cores write (see `sharded.rs`; in a loom build it is made of loom's primitives).
pub(crate) use sharded::{ReadGuard as IndexReadGuard, ShardedLock as IndexLock};

mod sharded;

#[cfg(not(loom))]
pub(crate) use std::thread::ThreadId;

/// Starts a background thread (a loom thread in a model, so its interleavings are explored).
#[cfg(not(loom))]
pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
}

#[cfg(loom)]
pub(crate) fn spawn(_name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    drop(loom::thread::spawn(f));
    Ok(())
}

/// A thread whose result is joined (a consumer's): std's, or a loom thread in a model.
#[cfg(not(loom))]
pub(crate) use std::thread::JoinHandle;

#[cfg(loom)]
pub(crate) use loom::thread::JoinHandle;

/// Starts a thread to be joined.
#[cfg(not(loom))]
pub(crate) fn spawn_joinable<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

#[cfg(loom)]
pub(crate) fn spawn_joinable<T: Send + 'static>(
    _name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    Ok(loom::thread::spawn(f))
}

/// For unit tests of background workers: waits, 1 ms at a time and at most 10 s, until `done`
/// holds; panics naming `what` if it never does.
#[cfg(all(test, not(loom)))]
pub(crate) fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not get there in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The calling thread's id (a loom thread's, in a model).
#[cfg(not(loom))]
pub(crate) fn current_thread() -> ThreadId {
    std::thread::current().id()
}

/// loom's primitives with parking_lot's API (no poisoning results, `&mut` guard for waits).
/// Poisoning cannot happen here: no code unwinds while holding one of these locks (the source's
/// panics are caught before they leave the source call).
#[cfg(loom)]
mod loom_shim {
    use std::ops::{Deref, DerefMut};

    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64};
    pub(crate) use loom::thread::ThreadId;

    pub(crate) fn current_thread() -> ThreadId {
        loom::thread::current().id()
    }

    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().expect("loom mutex poisoned")))
        }
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|g| MutexGuard(Some(g)))
        }
        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner().expect("loom mutex poisoned")
        }
    }

    /// Holds the guard in an `Option` so `Condvar::wait` can hand it to loom and back.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_deref().expect("guard present outside a wait")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_deref_mut().expect("guard present outside a wait")
        }
    }

    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard present before a wait");
            guard.0 = Some(self.0.wait(inner).expect("loom mutex poisoned"));
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
    }
}
