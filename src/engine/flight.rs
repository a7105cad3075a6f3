//! A keyed set of values built once each ("single flight"): concurrent opens of one key run
//! its `make` once, the others wait for it and share what it built. A failed or panicking
//! `make` gives its error to every waiter and leaves the key free for the next open.
//!
//! The entries live in a slab in the order of a round-robin hand (the cache's global CLOCK over
//! buffers walks it), with a map from key to slot. Generic over the value, so the protocol is
//! modelled under loom with plain numbers.

use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// An entry: its key, its value, and when it was last looked up (a tick of the table's clock).
pub(crate) struct Entry<V> {
    pub(crate) key: Arc<str>,
    pub(crate) value: V,
    pub(crate) used: u64,
}

/// The entries, in a slab walked by a hand.
pub(crate) struct Entries<V> {
    pub(crate) slab: Vec<Entry<V>>,
    index: HashMap<Arc<str>, Slot>,
    /// Where the round-robin hand is.
    pub(crate) hand: usize,
    /// The table's clock: bumped at each lookup.
    pub(crate) tick: u64,
}

enum Slot {
    Ready(usize),
    Opening(Arc<Flight>),
}

/// One open in progress: its outcome, once known, for the waiters (the opener keeps the
/// original error).
struct Flight {
    outcome: Mutex<Option<Result<(), (io::ErrorKind, String)>>>,
    done: Condvar,
}

/// A keyed, single-flight set of values.
pub(crate) struct Table<V> {
    entries: Mutex<Entries<V>>,
}

impl<V: Clone> Table<V> {
    pub(crate) fn new() -> Self {
        Table {
            entries: Mutex::new(Entries {
                slab: Vec::new(),
                index: HashMap::new(),
                hand: 0,
                tick: 0,
            }),
        }
    }

    /// The entries, locked (for the hand, purges and counts). Never held while a `make` runs
    /// or while waiting for one.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Entries<V>> {
        self.entries.lock()
    }

    /// The value of `key`, if built, marked as used now.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let mut entries = self.entries.lock();
        entries.touch(key)
    }

    /// The value of `key`: the one built, or one built now by `make` (which runs once however
    /// many threads open the key at once; the others wait for it).
    ///
    /// # Errors
    ///
    /// `make`'s error; a waiter gets an error of the same kind and message. A panicking `make`
    /// is an error of kind `Other` for all of them.
    pub(crate) fn open(&self, key: &str, make: impl FnOnce() -> io::Result<V>) -> io::Result<V> {
        let mut entries = self.entries.lock();
        let flight = loop {
            if let Some(value) = entries.touch(key) {
                return Ok(value);
            }
            match entries.index.get(key) {
                Some(Slot::Opening(flight)) => {
                    let flight = flight.clone();
                    drop(entries);
                    if let Err((kind, message)) = flight.wait() {
                        return Err(io::Error::new(kind, message));
                    }
                    // Built: look again (it may be gone already, then this open builds anew).
                    entries = self.entries.lock();
                }
                _ => {
                    let flight = Arc::new(Flight {
                        outcome: Mutex::new(None),
                        done: Condvar::new(),
                    });
                    entries
                        .index
                        .insert(Arc::from(key), Slot::Opening(flight.clone()));
                    break flight;
                }
            }
        };
        drop(entries);
        let made = match catch_unwind(AssertUnwindSafe(make)) {
            Ok(made) => made,
            Err(panic) => Err(io::Error::other(format!(
                "opening {key:?} panicked: {}",
                crate::error::panic_message(&*panic)
            ))),
        };
        let mut entries = self.entries.lock();
        entries.index.remove(key);
        let outcome = match &made {
            Ok(value) => {
                let key: Arc<str> = Arc::from(key);
                let slot = entries.slab.len();
                let used = entries.next_tick();
                entries.slab.push(Entry {
                    key: key.clone(),
                    value: value.clone(),
                    used,
                });
                entries.index.insert(key, Slot::Ready(slot));
                Ok(())
            }
            Err(error) => Err((error.kind(), error.to_string())),
        };
        drop(entries);
        flight.finish(outcome);
        made
    }

    /// Takes `key` out of the set; its value, if it was built.
    pub(crate) fn remove(&self, key: &str) -> Option<V> {
        let mut entries = self.entries.lock();
        let Some(Slot::Ready(slot)) = entries.index.get(key) else {
            return None;
        };
        let slot = *slot;
        Some(entries.remove_at(slot).value)
    }
}

impl<V> Entries<V> {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The value of `key` if built, marked as used now.
    fn touch(&mut self, key: &str) -> Option<V>
    where
        V: Clone,
    {
        let Some(Slot::Ready(slot)) = self.index.get(key) else {
            return None;
        };
        let slot = *slot;
        let tick = self.next_tick();
        let entry = &mut self.slab[slot];
        entry.used = tick;
        Some(entry.value.clone())
    }

    /// Marks the entry in `slot` as used now.
    pub(crate) fn mark_used(&mut self, slot: usize) {
        let tick = self.next_tick();
        self.slab[slot].used = tick;
    }

    /// Removes the entry in `slot` (the last entry moves into it).
    pub(crate) fn remove_at(&mut self, slot: usize) -> Entry<V> {
        let entry = self.slab.swap_remove(slot);
        self.index.remove(&entry.key);
        if let Some(moved) = self.slab.get(slot) {
            self.index.insert(moved.key.clone(), Slot::Ready(slot));
        }
        if self.hand > self.slab.len() {
            self.hand = 0;
        }
        entry
    }

    /// Built entries.
    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }
}

impl Flight {
    fn wait(&self) -> Result<(), (io::ErrorKind, String)> {
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(outcome) = outcome.as_ref() {
                return outcome.clone();
            }
            self.done.wait(&mut outcome);
        }
    }

    fn finish(&self, outcome: Result<(), (io::ErrorKind, String)>) {
        *self.outcome.lock() = Some(outcome);
        self.done.notify_all();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::{AtomicU64, Ordering};

    #[test]
    fn sixty_four_threads_opening_one_key_run_make_once() {
        let table = Arc::new(Table::<u64>::new());
        let runs = Arc::new(AtomicU64::new(0));
        // Fewer under miri, which runs each thread's steps one at a time.
        let n = if cfg!(miri) { 8 } else { 64 };
        let barrier = Arc::new(std::sync::Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (table, runs, barrier) = (table.clone(), runs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    table
                        .open("k", || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            Ok(7)
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(table.lock().len(), 1);
    }

    #[test]
    fn a_failing_or_panicking_make_reaches_every_waiter_and_frees_the_key() {
        let table = Arc::new(Table::<u64>::new());
        for panics in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let opener = {
                let table = table.clone();
                std::thread::spawn(move || {
                    table.open("k", || {
                        rx.recv().unwrap();
                        if panics {
                            panic!("make went wrong");
                        }
                        Err(io::Error::new(io::ErrorKind::NotFound, "no such resource"))
                    })
                })
            };
            // Wait until the open is in flight, then queue waiters behind it.
            crate::sync::eventually("the open to start", || {
                matches!(table.lock().index.get("k"), Some(Slot::Opening(_)))
            });
            let waiters: Vec<_> = (0..4)
                .map(|_| {
                    let table = table.clone();
                    std::thread::spawn(move || table.open("k", || Ok(1)))
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(20));
            tx.send(()).unwrap();
            let first = opener.join().unwrap().unwrap_err();
            let (kind, text) = if panics {
                (io::ErrorKind::Other, "make went wrong")
            } else {
                (io::ErrorKind::NotFound, "no such resource")
            };
            assert_eq!(first.kind(), kind);
            assert!(first.to_string().contains(text), "{first}");
            for w in waiters {
                // A waiter that came after the failure builds anew (and gets 1).
                match w.join().unwrap() {
                    Ok(v) => assert_eq!(v, 1),
                    Err(e) => {
                        assert_eq!(e.kind(), kind);
                        assert!(e.to_string().contains(text), "{e}");
                    }
                }
            }
            // The key is free: the next open builds.
            table.remove("k");
            assert_eq!(table.open("k", || Ok(9)).unwrap(), 9);
            table.remove("k");
        }
    }

    #[test]
    fn removal_keeps_the_index_right_and_lookups_bump_the_clock() {
        let table = Table::<u64>::new();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            table.open(key, || Ok(i as u64)).unwrap();
        }
        assert_eq!(table.get("a"), Some(0));
        assert_eq!(table.remove("a"), Some(0));
        assert_eq!(table.remove("a"), None);
        assert_eq!((table.get("b"), table.get("c")), (Some(1), Some(2)));
        let entries = table.lock();
        assert_eq!(entries.len(), 2);
        let used: Vec<_> = entries
            .slab
            .iter()
            .map(|e| (e.key.to_string(), e.used))
            .collect();
        assert!(used.contains(&("b".into(), 5)) && used.contains(&("c".into(), 6)));
    }
}

/// Single flight under loom: two threads open one key at once; `make` runs once and both get
/// its value; a failing `make` reaches the waiter, and the key is free afterwards.
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib loom_ --target-dir target/loom`
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::{AtomicU64, Ordering};

    #[test]
    fn loom_concurrent_opens_of_one_key_build_once() {
        loom::model(|| {
            let table = Arc::new(Table::<u64>::new());
            let runs = Arc::new(AtomicU64::new(0));
            let other = {
                let (table, runs) = (table.clone(), runs.clone());
                loom::thread::spawn(move || {
                    table
                        .open("k", || {
                            runs.fetch_add(1, Ordering::SeqCst);
                            Ok(5)
                        })
                        .unwrap()
                })
            };
            let mine = table
                .open("k", || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(5)
                })
                .unwrap();
            assert_eq!(other.join().unwrap(), 5);
            assert_eq!(mine, 5);
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn loom_a_failed_open_reaches_its_waiter_and_frees_the_key() {
        loom::model(|| {
            let table = Arc::new(Table::<u64>::new());
            let other = {
                let table = table.clone();
                loom::thread::spawn(move || table.open("k", || Err(io::ErrorKind::NotFound.into())))
            };
            let mine = table.open("k", || Err(io::ErrorKind::NotFound.into()));
            // Each failed, whichever ran `make` (or both, one after the other).
            assert_eq!(mine.unwrap_err().kind(), io::ErrorKind::NotFound);
            assert_eq!(
                other.join().unwrap().unwrap_err().kind(),
                io::ErrorKind::NotFound
            );
            assert_eq!(table.open("k", || Ok(3)).unwrap(), 3);
        });
    }
}
