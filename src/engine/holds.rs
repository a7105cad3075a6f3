//! Holds: where the readers of a windowed stream still need bytes.
//!
//! A live stream's window ([`Builder::window`](crate::Builder::window)) may be larger than its
//! budgets can keep. The writer then makes room by dropping the oldest segment, but never one a
//! reader still needs: each [`Reader`](crate::Reader) holds the offset of the next byte it will
//! ask the buffer for, and a `read_at` in progress holds the offset it has copied up to. When
//! every droppable segment is held, the writer gives up its role and waits here until a hold
//! moves or goes away; that is the backpressure of a bounded window.
//!
//! Fan-out consumers hold more firmly: their holds are *pinned*, and pin the window too. The
//! window does not slide past a pin, and the writer waits before a segment whose completion
//! would slide it past one ([`Holds::check_pins`]); a `Reader`'s hold only keeps the budgets
//! from dropping its bytes.
//!
//! A thread must not wait for itself. Each hold remembers the thread that last moved it, and a
//! thread that would wait on a hold of its own gets an error instead (see
//! [`Error::WindowFull`](crate::Error::WindowFull)): a thread that pulls meets its own hold
//! when it checks, and a reader of a push stream, which only waits for the `Writer`, asks
//! [`Holds::blocking_own`] before it waits (the writer announces that it is blocked, so the
//! reader looks again).
//!
//! A hold's id carries a generation: a hold removed by one owner (a dropped `Consumer`, whose
//! thread may be stuck in a callback) and reused by another cursor is never moved by the first
//! owner's stale id.

use std::task::Waker;

use crate::sync::{current_thread, Condvar, Mutex, ThreadId};

/// The holds of one buffer. Lock order: taken last (after the tiers lock), never held while
/// taking another lock.
pub(crate) struct Holds {
    inner: Mutex<Inner>,
    moved: Condvar,
}

/// The holds in a slab: a hold's id is its index and the slot's generation, the index reused
/// after it is removed, so moving a hold (once per cursor refill) is O(1) however many cursors
/// there are.
struct Inner {
    entries: Vec<Option<Entry>>,
    /// Per slot, bumped each time its hold is removed: ids of removed holds go stale.
    generations: Vec<u64>,
    free: Vec<usize>,
    /// A writer found every droppable segment held: the next change must wake it.
    waiting: bool,
    /// A push `Writer` parked (sleeping, or its task pending) on these bytes, which it needs to
    /// drop, and whether only pinned holds count, at this generation: valid until the next
    /// change bumps it.
    parked: Option<Block>,
    /// Bumped, under the lock, by each change made while a writer was waiting.
    generation: u64,
    /// Async writers waiting for the next bump (see [`Holds::register`]).
    wakers: Vec<Waker>,
}

struct Entry {
    at: u64,
    /// The thread that last moved it; `None` for a pinned hold not moved yet (made by the
    /// thread that starts a consumer, which may be the writer: it must not count as its own).
    thread: Option<ThreadId>,
    /// A consumer's hold: it pins the window as well as the budgets.
    pinned: bool,
}

/// A hold's id: its slot and the slot's generation when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HoldId {
    index: usize,
    generation: u64,
}

/// The writer cannot drop the segment it needs to: some reader still needs its bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocked {
    /// Pass to [`Holds::wait`].
    pub(crate) generation: u64,
    /// A blocking hold made by the calling thread itself, if any: waiting would never end.
    pub(crate) own: Option<u64>,
    /// What was checked.
    block: Block,
}

/// The bytes `[from, to)` a writer needs to drop, and whether only pinned holds count, when it
/// found them held at `generation`.
#[derive(Debug, Clone, Copy)]
struct Block {
    from: u64,
    to: u64,
    pins_only: bool,
    generation: u64,
}

impl Holds {
    pub(crate) fn new() -> Self {
        Holds {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                generations: Vec::new(),
                free: Vec::new(),
                waiting: false,
                parked: None,
                generation: 0,
                wakers: Vec::new(),
            }),
            moved: Condvar::new(),
        }
    }

    /// A new hold at `at`, owned by the calling thread; returns its id.
    pub(crate) fn add(&self, at: u64) -> HoldId {
        self.add_entry(at, false)
    }

    /// A new hold at `at` for an async cursor: owned by no thread, since its task may move
    /// between threads and share them with other tasks. Move it with
    /// [`move_to`](Holds::move_to). (Async reads go piece by piece, so they never wait for their
    /// own hold: see `poll.rs`.)
    pub(crate) fn add_cursor(&self, at: u64) -> HoldId {
        let entry = Some(Entry {
            at,
            thread: None,
            pinned: false,
        });
        self.insert(entry)
    }

    /// Moves hold `id` to `at`, leaving its owner as it is.
    pub(crate) fn move_to(&self, id: HoldId, at: u64) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entry(id) {
            entry.at = at;
        }
        self.changed(inner);
    }

    /// A new pinned hold (a consumer's) at `at`; see the module docs. The caller holds the
    /// tiers lock and read `at` from the window start under it, so no slide passes it meanwhile.
    pub(crate) fn add_pinned(&self, at: u64) -> HoldId {
        self.add_entry(at, true)
    }

    fn add_entry(&self, at: u64, pinned: bool) -> HoldId {
        let entry = Some(Entry {
            at,
            thread: (!pinned).then(current_thread),
            pinned,
        });
        self.insert(entry)
    }

    fn insert(&self, entry: Option<Entry>) -> HoldId {
        let mut inner = self.inner.lock();
        let index = match inner.free.pop() {
            Some(index) => {
                inner.entries[index] = entry;
                index
            }
            None => {
                inner.entries.push(entry);
                inner.generations.push(0);
                inner.entries.len() - 1
            }
        };
        HoldId {
            index,
            generation: inner.generations[index],
        }
    }

    /// Moves hold `id` to `at`, now owned by the calling thread.
    pub(crate) fn set(&self, id: HoldId, at: u64) {
        let thread = current_thread();
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.entry(id) {
            entry.at = at;
            entry.thread = Some(thread);
        }
        self.changed(inner);
    }

    /// Removes hold `id` (a stale id, of a hold removed already, changes nothing).
    pub(crate) fn remove(&self, id: HoldId) {
        let mut inner = self.inner.lock();
        if inner.entry(id).is_some() {
            inner.entries[id.index] = None;
            inner.generations[id.index] += 1;
            inner.free.push(id.index);
        }
        self.changed(inner);
    }

    /// A push `Writer` that got `blocked` is about to wait for a change (see
    /// [`blocking_own`](Holds::blocking_own)).
    pub(crate) fn park(&self, blocked: &Blocked) {
        self.inner.lock().parked = Some(blocked.block);
    }

    /// For a reader about to wait for a push stream's `Writer`: if the writer is parked waiting
    /// for room and a hold of the calling thread is what it waits for, that hold's offset
    /// (waiting would never end). The writer publishes a wake-up when it parks, so a reader that
    /// looked before that looks again.
    pub(crate) fn blocking_own(&self) -> Option<u64> {
        let inner = self.inner.lock();
        let Block {
            from,
            to,
            pins_only,
            generation,
        } = inner.parked?;
        if generation != inner.generation {
            return None;
        }
        let me = current_thread();
        inner
            .entries
            .iter()
            .flatten()
            .filter(|e| (from..to).contains(&e.at) && (e.pinned || !pins_only))
            .find(|e| e.thread == Some(me))
            .map(|e| e.at)
    }

    fn changed(&self, mut inner: crate::sync::MutexGuard<'_, Inner>) {
        if inner.waiting {
            inner.waiting = false;
            inner.generation += 1;
            let wakers = std::mem::take(&mut inner.wakers);
            drop(inner);
            self.moved.notify_all();
            for waker in wakers {
                waker.wake();
            }
        }
    }

    #[cfg(feature = "tokio")]
    /// For an async writer that got [`Blocked`]: parks it (see [`park`](Holds::park)) and leaves
    /// `waker` to be woken by the next change after its generation. `false` if one came
    /// already: try again instead of waiting.
    pub(crate) fn register(&self, blocked: &Blocked, waker: &Waker) -> bool {
        let mut inner = self.inner.lock();
        if inner.generation != blocked.generation {
            return false;
        }
        inner.parked = Some(blocked.block);
        // `check` set `waiting` when it returned `Blocked`; a change since would have bumped.
        inner.waiting = true;
        match inner.wakers.iter_mut().find(|w| w.will_wake(waker)) {
            Some(w) => w.clone_from(waker),
            None => inner.wakers.push(waker.clone()),
        }
        true
    }

    /// Whether the bytes `[from, to)` may be dropped: no hold lies in them. Holds before `from`
    /// are ignored (their bytes are gone already; their next read fails). If some hold is
    /// there, the next change of any hold will wake [`wait`](Holds::wait).
    pub(crate) fn check(&self, from: u64, to: u64) -> Result<(), Blocked> {
        self.check_where(from, to, false)
    }

    /// As [`check`](Holds::check), for the pinned holds only: whether the window may slide
    /// from `from` to `to`.
    pub(crate) fn check_pins(&self, from: u64, to: u64) -> Result<(), Blocked> {
        self.check_where(from, to, true)
    }

    /// The lowest pinned hold at or after `from`: how far the window may slide.
    pub(crate) fn first_pin(&self, from: u64) -> Option<u64> {
        let inner = self.inner.lock();
        let pins = inner.entries.iter().flatten().filter(|e| e.pinned);
        pins.map(|e| e.at).filter(|&at| at >= from).min()
    }

    fn check_where(&self, from: u64, to: u64, pins_only: bool) -> Result<(), Blocked> {
        let mut inner = self.inner.lock();
        let mut blocking = inner
            .entries
            .iter()
            .flatten()
            .filter(|e| (from..to).contains(&e.at) && (e.pinned || !pins_only))
            .peekable();
        if blocking.peek().is_none() {
            return Ok(());
        }
        let me = current_thread();
        let own = blocking.find(|e| e.thread == Some(me)).map(|e| e.at);
        inner.waiting = true;
        let generation = inner.generation;
        Err(Blocked {
            generation,
            own,
            block: Block {
                from,
                to,
                pins_only,
                generation,
            },
        })
    }

    /// Sleeps until a hold changes after [`check`](Holds::check) returned `generation`.
    pub(crate) fn wait(&self, generation: u64) {
        let mut inner = self.inner.lock();
        while inner.generation == generation {
            self.moved.wait(&mut inner);
        }
    }
}

impl Inner {
    /// The live hold `id`, if its id is not stale.
    fn entry(&mut self, id: HoldId) -> Option<&mut Entry> {
        if self.generations.get(id.index) != Some(&id.generation) {
            return None;
        }
        self.entries.get_mut(id.index)?.as_mut()
    }
}

/// The hold of a cursor (a `Reader`, an `AsyncReader`) on a windowed stream: the offset of the
/// next byte it will ask the buffer for, which the writer will not drop. Nothing on other
/// streams. The cursor releases it when it is dropped.
pub(crate) struct CursorHold {
    id: Option<HoldId>,
    /// Owned by the thread that moves it (a `Reader`: a read on that thread never waits for
    /// it); an async cursor's hold is no thread's own, as its task moves between threads.
    owned: bool,
}

impl CursorHold {
    /// A hold at `at` on a `windowed` stream (else none).
    pub(crate) fn new(holds: &Holds, windowed: bool, at: u64, owned: bool) -> Self {
        let id = windowed.then(|| {
            if owned {
                holds.add(at)
            } else {
                holds.add_cursor(at)
            }
        });
        CursorHold { id, owned }
    }

    /// A hold of the same kind at `at` (for a cursor's clone).
    pub(crate) fn again(&self, holds: &Holds, at: u64) -> Self {
        CursorHold::new(holds, self.id.is_some(), at, self.owned)
    }

    /// Moves the hold to `at`.
    pub(crate) fn set(&self, holds: &Holds, at: u64) {
        match self.id {
            Some(id) if self.owned => holds.set(id, at),
            Some(id) => holds.move_to(id, at),
            None => {}
        }
    }

    /// Removes the hold.
    pub(crate) fn release(&mut self, holds: &Holds) {
        if let Some(id) = self.id.take() {
            holds.remove(id);
        }
    }
}

/// A hold for the duration of one call (`read_at`, `wait_for`), removed when dropped.
pub(crate) struct Held<'a> {
    holds: &'a Holds,
    id: HoldId,
}

impl<'a> Held<'a> {
    pub(crate) fn new(holds: &'a Holds, at: u64) -> Self {
        Held {
            id: holds.add(at),
            holds,
        }
    }

    pub(crate) fn set(&self, at: u64) {
        self.holds.set(self.id, at);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.holds.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::Arc;

    #[test]
    fn holds_in_the_range_block_and_name_their_thread() {
        let holds = Holds::new();
        let a = holds.add(100);
        assert!(holds.check(0, 100).is_ok());
        assert!(holds.check(101, 200).is_ok());
        let blocked = holds.check(0, 101).unwrap_err();
        assert_eq!(blocked.own, Some(100));
        holds.set(a, 300);
        assert!(holds.check(0, 101).is_ok());
        holds.remove(a);
        assert!(holds.check(0, u64::MAX).is_ok());
    }

    #[test]
    fn only_pinned_holds_pin_the_window() {
        let holds = Holds::new();
        let reader = holds.add(100);
        assert!(holds.check_pins(0, 200).is_ok());
        assert_eq!(holds.first_pin(0), None);
        let consumer = holds.add_pinned(150);
        // Not anyone's own until its consumer moves it (the starting thread may be the writer).
        assert_eq!(holds.check_pins(0, 200).unwrap_err().own, None);
        holds.set(consumer, 150);
        assert_eq!(holds.check_pins(0, 200).unwrap_err().own, Some(150));
        assert!(holds.check_pins(0, 150).is_ok());
        assert_eq!(holds.first_pin(0), Some(150));
        assert_eq!(holds.first_pin(151), None);
        holds.set(consumer, 300); // a moved pin stays pinned
        assert_eq!(holds.first_pin(0), Some(300));
        // A pinned hold blocks the budgets too.
        holds.remove(reader);
        assert!(holds.check(0, 300).is_ok());
        assert!(holds.check(0, 301).is_err());
    }

    #[test]
    fn removed_ids_are_reused_and_stale_ones_change_nothing() {
        let holds = Holds::new();
        let (a, b) = (holds.add(10), holds.add(20));
        holds.remove(a);
        holds.remove(a); // twice: no effect
        let c = holds.add(30);
        assert_eq!(c.index, a.index);
        assert_ne!(c, a, "a reused slot has a new generation");
        holds.set(a, 0); // the stale id moves nothing
        holds.remove(a); // nor removes anything
        assert_eq!(holds.check(0, 31).unwrap_err().own, Some(30));
        assert!(holds.check(0, 20).is_ok());
        assert_eq!(holds.check(0, 21).unwrap_err().own, Some(20));
        holds.remove(b);
        holds.set(b, 5); // removed: no effect
        assert!(holds.check(0, 30).is_ok());
        assert_eq!(holds.check(30, 31).unwrap_err().own, Some(30));
    }

    /// Only a parked writer, blocked by this very thread and with nothing changed since, makes
    /// a push reader fail instead of waiting (a writer that met a hold and went on without
    /// waiting once made consumers fail with `WindowFull`).
    #[test]
    fn blocking_own_needs_a_parked_writer_and_an_own_hold() {
        let holds = Holds::new();
        let mine = holds.add(10);
        let blocked = holds.check(0, 64).unwrap_err();
        assert_eq!(holds.blocking_own(), None, "not parked");
        holds.park(&blocked);
        assert_eq!(holds.blocking_own(), Some(10));
        holds.set(mine, 64); // a change: the park is stale
        assert_eq!(holds.blocking_own(), None);
        let blocked = holds.check(0, 65).unwrap_err();
        holds.park(&blocked);
        assert_eq!(holds.blocking_own(), Some(64));
        holds.remove(mine);
        assert_eq!(holds.blocking_own(), None);
    }

    #[test]
    fn a_hold_of_another_thread_is_not_own_and_its_move_wakes_the_wait() {
        let holds = Arc::new(Holds::new());
        let id = {
            let holds = holds.clone();
            std::thread::spawn(move || holds.add(10)).join().unwrap()
        };
        let blocked = holds.check(0, 64).unwrap_err();
        assert_eq!(blocked.own, None);
        let mover = {
            let holds = holds.clone();
            std::thread::spawn(move || holds.set(id, 64))
        };
        holds.wait(blocked.generation); // would block forever if the move were missed
        mover.join().unwrap();
        assert!(holds.check(0, 64).is_ok());
    }

    #[test]
    #[cfg(feature = "tokio")]
    fn an_async_writer_registered_when_blocked_is_woken_by_the_next_move() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let holds = Holds::new();
        let cursor = holds.add_cursor(10);
        let blocked = holds.check(0, 64).unwrap_err();
        // An async cursor's hold is no thread's own.
        assert_eq!(blocked.own, None);
        assert!(holds.register(&blocked, &waker));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        holds.move_to(cursor, 64);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // A generation that moved already: refused, the writer tries again.
        assert!(!holds.register(&blocked, &waker));
        assert!(holds.check(0, 64).is_ok());
    }
}
