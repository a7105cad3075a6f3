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

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
#[cfg(not(loom))]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use raw::{RawShard, ReadPtr, ValueCell, WritePtr};

/// The lock. `value` is read only under a shard's shared lock or every shard's exclusive lock,
/// and written only under every shard's exclusive lock (see the guards).
pub(crate) struct ShardedLock<T> {
    /// A power-of-two number of shards.
    shards: Box<[RawShard]>,
    value: ValueCell<T>,
}

// SAFETY: the lock hands out `&T` to many threads at once (readers) and `&mut T` to one thread
// at a time (the writer, who excludes every reader), like `std::sync::RwLock`: it is `Sync` when
// `T` is `Send + Sync`, and `Send` when `T` is.
unsafe impl<T: Send> Send for ShardedLock<T> {}
// SAFETY: see above.
unsafe impl<T: Send + Sync> Sync for ShardedLock<T> {}

/// Hands out a number per thread, on first use.
#[cfg(not(loom))]
static NEXT_READER: AtomicUsize = AtomicUsize::new(0);

// A loom model must be deterministic: the count starts again with each execution.
#[cfg(loom)]
loom::lazy_static! {
    static ref NEXT_READER: loom::sync::atomic::AtomicUsize = loom::sync::atomic::AtomicUsize::new(0);
}

#[cfg(not(loom))]
std::thread_local! {
    static READER: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[cfg(loom)]
loom::thread_local! {
    static READER: Cell<usize> = Cell::new(usize::MAX);
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

/// Shards for this machine: twice the cores, as a power of two from 2 to 16 (2 in a loom
/// model, to keep its state space small).
fn shard_count() -> usize {
    if cfg!(loom) {
        return 2;
    }
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (2 * cores).next_power_of_two().clamp(2, 16)
}

impl<T> ShardedLock<T> {
    pub(crate) fn new(value: T) -> Self {
        ShardedLock {
            shards: (0..shard_count()).map(|_| RawShard::new()).collect(),
            value: ValueCell::new(value),
        }
    }

    /// Shared access: locks the calling thread's shard only.
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        let shard = &self.shards[reader_number() & (self.shards.len() - 1)];
        shard.lock_shared();
        ReadGuard {
            value: ManuallyDrop::new(raw::read_ptr(&self.value)),
            shard,
        }
    }

    /// Exclusive access: locks every shard, in order.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        for shard in self.shards.iter() {
            shard.lock_exclusive();
        }
        WriteGuard {
            value: ManuallyDrop::new(raw::write_ptr(&self.value)),
            shards: &self.shards,
        }
    }
}

/// Shared access to the value, holding one shard.
///
/// The pointer to the value is dropped before the shard is unlocked (it is a plain pointer,
/// except under loom, whose cell tracks an access until its pointer goes).
pub(crate) struct ReadGuard<'a, T> {
    value: ManuallyDrop<ReadPtr<T>>,
    shard: &'a RawShard,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds a shard's shared lock, so no writer holds every shard's
        // exclusive lock, which writing needs: the value is not written while this reference
        // lives (it cannot outlive the guard).
        unsafe { raw::read(&self.value) }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.value) };
        // SAFETY: `read` locked this shard shared for this guard, and only this drop unlocks it.
        unsafe { self.shard.unlock_shared() }
    }
}

/// Exclusive access to the value, holding every shard.
pub(crate) struct WriteGuard<'a, T> {
    value: ManuallyDrop<WritePtr<T>>,
    shards: &'a [RawShard],
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds every shard's exclusive lock, so no other guard exists.
        unsafe { raw::write(&self.value) }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes this the only reference through the guard.
        unsafe { raw::write(&self.value) }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and not used after.
        unsafe { ManuallyDrop::drop(&mut self.value) };
        for shard in self.shards.iter().rev() {
            // SAFETY: `write` locked every shard exclusively for this guard, and only this drop
            // unlocks them.
            unsafe { shard.unlock_exclusive() }
        }
    }
}

/// The shards' raw locks and the value's cell: `parking_lot` and `std` in a normal build; in a
/// loom build, a reader-writer lock made of loom's mutex and condvar, and loom's cell, which
/// reports any access to the value that the locks do not order.
#[cfg(not(loom))]
mod raw {
    use std::cell::UnsafeCell;

    use crossbeam_utils::CachePadded;
    use parking_lot::lock_api::RawRwLock as _;

    /// One shard, on a cache line of its own.
    pub(super) struct RawShard(CachePadded<parking_lot::RawRwLock>);

    impl RawShard {
        pub(super) fn new() -> Self {
            RawShard(CachePadded::new(parking_lot::RawRwLock::INIT))
        }
        #[inline]
        pub(super) fn lock_shared(&self) {
            self.0.lock_shared();
        }
        /// # Safety
        /// The caller holds this shard shared.
        #[inline]
        pub(super) unsafe fn unlock_shared(&self) {
            // SAFETY: the caller's contract.
            unsafe { self.0.unlock_shared() }
        }
        pub(super) fn lock_exclusive(&self) {
            self.0.lock_exclusive();
        }
        /// # Safety
        /// The caller holds this shard exclusively.
        pub(super) unsafe fn unlock_exclusive(&self) {
            // SAFETY: the caller's contract.
            unsafe { self.0.unlock_exclusive() }
        }
    }

    pub(super) type ValueCell<T> = UnsafeCell<T>;
    pub(super) type ReadPtr<T> = *const T;
    pub(super) type WritePtr<T> = *mut T;

    pub(super) fn read_ptr<T>(cell: &ValueCell<T>) -> ReadPtr<T> {
        cell.get()
    }
    pub(super) fn write_ptr<T>(cell: &ValueCell<T>) -> WritePtr<T> {
        cell.get()
    }
    /// # Safety
    /// No `&mut` to the value exists while the returned reference lives.
    #[inline]
    pub(super) unsafe fn read<T>(ptr: &ReadPtr<T>) -> &T {
        // SAFETY: the pointer comes from the lock's live cell; the caller's contract.
        unsafe { &**ptr }
    }
    /// # Safety
    /// No other reference to the value exists while the returned one lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn write<T>(ptr: &WritePtr<T>) -> &mut T {
        // SAFETY: the pointer comes from the lock's live cell; the caller's contract.
        unsafe { &mut **ptr }
    }
}

#[cfg(loom)]
mod raw {
    use loom::cell::{ConstPtr, MutPtr, UnsafeCell};
    use loom::sync::{Condvar, Mutex};

    /// A reader-writer lock from a mutex and a condvar: (readers, writer).
    pub(super) struct RawShard {
        state: Mutex<(usize, bool)>,
        changed: Condvar,
    }

    impl RawShard {
        pub(super) fn new() -> Self {
            RawShard {
                state: Mutex::new((0, false)),
                changed: Condvar::new(),
            }
        }
        pub(super) fn lock_shared(&self) {
            let mut s = self.state.lock().unwrap();
            while s.1 {
                s = self.changed.wait(s).unwrap();
            }
            s.0 += 1;
        }
        pub(super) unsafe fn unlock_shared(&self) {
            let mut s = self.state.lock().unwrap();
            s.0 -= 1;
            self.changed.notify_all();
        }
        pub(super) fn lock_exclusive(&self) {
            let mut s = self.state.lock().unwrap();
            while s.1 || s.0 > 0 {
                s = self.changed.wait(s).unwrap();
            }
            s.1 = true;
        }
        pub(super) unsafe fn unlock_exclusive(&self) {
            self.state.lock().unwrap().1 = false;
            self.changed.notify_all();
        }
    }

    pub(super) type ValueCell<T> = UnsafeCell<T>;
    pub(super) type ReadPtr<T> = ConstPtr<T>;
    pub(super) type WritePtr<T> = MutPtr<T>;

    pub(super) fn read_ptr<T>(cell: &ValueCell<T>) -> ReadPtr<T> {
        cell.get()
    }
    pub(super) fn write_ptr<T>(cell: &ValueCell<T>) -> WritePtr<T> {
        cell.get_mut()
    }
    pub(super) unsafe fn read<T>(ptr: &ReadPtr<T>) -> &T {
        // SAFETY: loom checks that the locks order this access against writes.
        unsafe { ptr.deref() }
    }
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn write<T>(ptr: &WritePtr<T>) -> &mut T {
        // SAFETY: loom checks that the locks order this access against all others.
        unsafe { ptr.deref() }
    }
}

#[cfg(all(test, not(loom)))]
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
        let lock = ShardedLock::new(vec![1u32]);
        {
            let a = lock.read();
            let b = lock.read();
            assert_eq!((a[0], b[0]), (1, 1));
        }
        lock.write().push(2);
        assert_eq!(*lock.read(), [1, 2]);
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

/// The protocol under loom: every interleaving of a writer and readers on different shards (and
/// on the same one), with loom's cell reporting any access the locks leave unordered.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_ --target-dir target/loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_readers_never_see_a_write_in_progress() {
        loom::model(|| {
            let lock = Arc::new(ShardedLock::new((0u64, 0u64)));
            let writer = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let mut w = lock.write();
                    w.0 += 1;
                    w.1 += 1;
                })
            };
            let reader = {
                let lock = lock.clone();
                thread::spawn(move || {
                    let r = lock.read();
                    assert_eq!(r.0, r.1);
                })
            };
            {
                let r = lock.read();
                assert_eq!(r.0, r.1);
            }
            writer.join().unwrap();
            reader.join().unwrap();
            assert_eq!(*lock.read(), (1, 1));
        });
    }
}
