//! A reader-writer lock whose readers write no cache line that readers on other cores write.
//!
//! A plain reader-writer lock keeps one reader count, which every read increments and
//! decrements: with readers on two cores, that cache line moves between them twice per read,
//! which costs as much as copying 4 KiB. Here the lock is split into shards, each a
//! `parking_lot` lock on a cache line of its own; a reader locks the shard of its thread, a
//! writer locks every shard, in order. (`crossbeam_utils::sync::ShardedLock` does the same with
//! eight shards of `std`'s lock; a publish then takes sixteen locked instructions, twice the
//! cost of the whole publish before. This one sizes the shard count to the machine.)
//!
//! Threads get shards round-robin, in the order they first read a sharded lock, so the threads
//! that read at once tend to sit on different shards. Two readers that share a shard still only
//! share its cache line, as with a plain lock.
//!
//! Policy: each shard is task-fair (`parking_lot`): a waiting writer holds back new readers of
//! the shards it has locked or waits for, so readers cannot starve it. A thread must not lock
//! the same sharded lock again while holding it (no recursion), as with any reader-writer lock.
//! No poisoning: a panic while a guard is held releases it.

use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::lock_api::RawRwLock as _;
use parking_lot::RawRwLock;

/// The lock. `value` is read only under a shard's shared lock or every shard's exclusive lock,
/// and written only under every shard's exclusive lock (see the guards).
pub(crate) struct ShardedLock<T> {
    /// A power-of-two number of shards.
    shards: Box<[CachePadded<RawRwLock>]>,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&T` to many threads at once (readers) and `&mut T` to one thread
// at a time (the writer, who excludes every reader), like `std::sync::RwLock`: it is `Sync` when
// `T` is `Send + Sync`, and `Send` when `T` is.
unsafe impl<T: Send> Send for ShardedLock<T> {}
// SAFETY: see above.
unsafe impl<T: Send + Sync> Sync for ShardedLock<T> {}

/// Hands out a number per thread, on first use.
static NEXT_READER: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    static READER: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's number, round-robin over threads.
#[inline]
fn reader_number() -> usize {
    READER.with(|n| match n.get() {
        usize::MAX => {
            let mine = NEXT_READER.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
            n.set(mine);
            mine
        }
        mine => mine,
    })
}

/// Shards for this machine: twice the cores, as a power of two from 2 to 16.
fn shard_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (2 * cores).next_power_of_two().clamp(2, 16)
}

impl<T> ShardedLock<T> {
    pub(crate) fn new(value: T) -> Self {
        ShardedLock {
            shards: (0..shard_count())
                .map(|_| CachePadded::new(RawRwLock::INIT))
                .collect(),
            value: UnsafeCell::new(value),
        }
    }

    /// Shared access: locks the calling thread's shard only.
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        let shard = &*self.shards[reader_number() & (self.shards.len() - 1)];
        shard.lock_shared();
        ReadGuard { lock: self, shard }
    }

    /// Exclusive access: locks every shard, in order.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        for shard in self.shards.iter() {
            shard.lock_exclusive();
        }
        WriteGuard { lock: self }
    }

    /// The value, with no locking: `&mut self` proves no guard exists.
    #[cfg(test)]
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }
}

/// Shared access to the value, holding one shard.
pub(crate) struct ReadGuard<'a, T> {
    lock: &'a ShardedLock<T>,
    shard: &'a RawRwLock,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds a shard's shared lock, so no writer holds every shard's
        // exclusive lock, which writing needs: the value is not written while this reference
        // lives (it cannot outlive the guard).
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `read` locked this shard shared for this guard, and only this drop unlocks it.
        unsafe { self.shard.unlock_shared() }
    }
}

/// Exclusive access to the value, holding every shard.
pub(crate) struct WriteGuard<'a, T> {
    lock: &'a ShardedLock<T>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds every shard's exclusive lock, so no other guard exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        for shard in self.lock.shards.iter().rev() {
            // SAFETY: `write` locked every shard exclusively for this guard, and only this drop
            // unlocks them.
            unsafe { shard.unlock_exclusive() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shards_are_a_power_of_two() {
        let lock = ShardedLock::new(0u8);
        let n = lock.shards.len();
        assert!(n.is_power_of_two() && (2..=16).contains(&n), "{n}");
    }

    #[test]
    fn readers_share_and_a_writer_excludes_them() {
        let mut lock = ShardedLock::new(vec![1u32]);
        {
            let a = lock.read();
            let b = lock.read();
            assert_eq!((a[0], b[0]), (1, 1));
        }
        lock.write().push(2);
        assert_eq!(*lock.read(), [1, 2]);
        lock.get_mut().push(3);
        assert_eq!(lock.read().len(), 3);
    }

    /// Writers keep an invariant (both halves equal) that readers on other threads check:
    /// a reader never sees a half-done write. Small enough for miri, which checks the accesses.
    #[test]
    fn readers_on_many_threads_never_see_a_write_in_progress() {
        let lock = Arc::new(ShardedLock::new((0u64, 0u64)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        if (i + t) % 5 == 0 {
                            let mut w = lock.write();
                            w.0 += 1;
                            w.1 += 1;
                        } else {
                            let r = lock.read();
                            assert_eq!(r.0, r.1);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = lock.read();
        assert_eq!((r.0, r.1), (40, 40));
    }
}
