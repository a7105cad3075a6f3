//! The writer role: the one thread at a time that pulls from the source, publishes what it got,
//! and spills segments past the memory budget; and the publish/wait protocol around it.

use bytes::BytesMut;

use crate::buffer::Shared;
use crate::error::Error;
use crate::holds::Blocked;
use crate::index::Slot;
use crate::source::{call, Fill};
use crate::sync::{AtomicU64, Condvar, Mutex, MutexGuard, Ordering};
use crate::tiers::Tiers;

/// State owned by whoever holds the writer role (the buffer's writer mutex).
///
/// Invariants: `frontier` is the end of the published bytes (everything the source produced is
/// published before the writer releases the role or reads the source again); `pending`, if any,
/// is the segment containing `frontier`, and its `tail` the part of that segment's buffer not yet
/// published. `source` is `None` once the stream has ended or failed, and then the index's state
/// says which.
pub(crate) struct Writer {
    source: Option<Box<dyn Fill>>,
    frontier: u64,
    pending: Option<Pending>,
}

/// The segment being filled, and the unpublished rest of its buffer.
struct Pending {
    segment: u64,
    tail: BytesMut,
}

impl Writer {
    pub(crate) fn new(source: Box<dyn Fill>) -> Self {
        Writer {
            source: Some(source),
            frontier: 0,
            pending: None,
        }
    }

    /// The end of the published bytes.
    pub(crate) fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Pulls until the published frontier reaches `need` or the source ends or fails; `Err`
    /// if a windowed stream has no room for another segment until a reader moves on.
    pub(crate) fn pull_until(&mut self, shared: &Shared, need: u64) -> Result<(), Blocked> {
        while self.frontier < need && self.source.is_some() {
            self.pull_once(shared)?;
        }
        Ok(())
    }

    /// One read from the source, published at once.
    fn pull_once(&mut self, shared: &Shared) -> Result<(), Blocked> {
        let cfg = &shared.config;
        let left = cfg
            .declared_len
            .map(|len| len.saturating_sub(self.frontier));
        if left == Some(0) {
            self.probe_end(shared);
            return Ok(());
        }
        if self.pending.is_none() && shared.windowed {
            // A new segment needs room within the budgets before its buffer is taken.
            shared.tiers.lock().enforce_budget(shared, true, false)?;
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            segment: self.frontier >> cfg.shift,
            tail: shared.tiers.lock().take(),
        });
        let want = left.map_or(pending.tail.len(), |left| {
            usize::try_from(left).map_or(pending.tail.len(), |l| l.min(pending.tail.len()))
        });
        let Some(source) = self.source.as_mut() else {
            return Ok(());
        };
        match read_source(source.as_mut(), &mut pending.tail[..want], self.frontier) {
            Ok(0) => self.finish(shared),
            Ok(n) => self.publish(shared, n),
            Err(err) => self.fail(shared, err),
        }
        Ok(())
    }

    /// Publishes the next `n` bytes of the pending segment: an O(1) append under the write lock.
    fn publish(&mut self, shared: &Shared, n: usize) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        let piece = pending.tail.split_to(n);
        let complete = pending.tail.is_empty();
        let segment = pending.segment;
        let range = self.frontier..self.frontier + n as u64;
        {
            let mut state = shared.state.write();
            state.index.append(segment, range.clone(), piece);
            if complete {
                state.index.seal(segment);
            }
        }
        self.frontier = range.end;
        shared.source_bytes.fetch_add(n as u64, Ordering::Relaxed);
        shared.publish.notify();
        if complete {
            self.pending = None;
            let mut tiers = shared.tiers.lock();
            tiers.admit(segment);
            if let (true, Some(window)) = (shared.windowed, shared.config.window) {
                self.slide_window(shared, &mut tiers, window);
            }
            // A windowed stream that finds no room here waits before its next segment. Other
            // streams may leave the spill to the spiller (waited for in `Role::pull_until`).
            let background = !shared.windowed;
            let _ = tiers.enforce_budget(shared, !shared.windowed, background);
        }
    }

    /// Drops the whole segments that fell out of the last `window` bytes. Readers that start
    /// before the new window start get [`Error::BehindWindow`]; the window start is raised
    /// before the segments go, under the same write lock as each removal.
    fn slide_window(&mut self, shared: &Shared, tiers: &mut Tiers, window: u64) {
        let shift = shared.config.shift;
        let first_kept = self.frontier.saturating_sub(window) >> shift;
        let first_dropped = {
            let mut state = shared.state.write();
            if first_kept << shift <= state.window_start {
                return;
            }
            std::mem::replace(&mut state.window_start, first_kept << shift) >> shift
        };
        tiers.drop_segments(shared, first_dropped..first_kept);
    }

    /// At the declared length: the source must end here. One more read tells.
    fn probe_end(&mut self, shared: &Shared) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        let declared = self.frontier;
        match read_source(source.as_mut(), &mut [0u8; 1], declared) {
            Ok(0) => self.finish(shared),
            Ok(_) => {
                shared.source_bytes.fetch_add(1, Ordering::Relaxed);
                self.fail(shared, Error::RanLong { declared });
            }
            Err(err) => self.fail(shared, err),
        }
    }

    /// The source ended: seal the last segment and record the length.
    fn finish(&mut self, shared: &Shared) {
        if let Some(declared) = shared.config.declared_len {
            if self.frontier < declared {
                let actual = self.frontier;
                return self.fail(shared, Error::EndedEarly { declared, actual });
            }
        }
        let last = self.pending.take().map(|p| p.segment);
        let sealed = {
            let mut state = shared.state.write();
            state.len = Some(self.frontier);
            state.complete = true;
            last.map(|segment| (segment, state.index.seal(segment)))
        };
        self.source = None;
        shared.publish.notify();
        let mut tiers = shared.tiers.lock();
        match sealed {
            Some((segment, true)) => tiers.admit(segment),
            Some((_, false)) => tiers.forget(),
            None => {}
        }
        let _ = tiers.enforce_budget(shared, false, !shared.windowed);
    }

    /// The source failed: record the sticky error. Published bytes stay readable.
    fn fail(&mut self, shared: &Shared, err: Error) {
        let pending = self.pending.take();
        let unused_buffer = {
            let mut state = shared.state.write();
            let published = pending
                .as_ref()
                .and_then(|p| state.index.slot(p.segment))
                .is_some_and(|slot| matches!(slot, Slot::Filling(_)));
            state.error = Some(err);
            pending.is_some() && !published
        };
        if unused_buffer {
            shared.tiers.lock().forget();
        }
        // Dropped outside the lock: a source's destructor may block (closing a connection).
        self.source = None;
        shared.publish.notify();
    }
}

/// Reads from the stream into `dst`; see [`call`].
fn read_source(source: &mut dyn Fill, dst: &mut [u8], offset: u64) -> Result<usize, Error> {
    let len = dst.len();
    call(offset, len, || source.fill(dst))
}

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
pub(crate) struct Publish {
    /// Written only under `lock`; read without it (Acquire) to snapshot before a check.
    generation: AtomicU64,
    lock: Mutex<()>,
    cond: Condvar,
}

impl Publish {
    pub(crate) fn new() -> Self {
        Publish {
            generation: AtomicU64::new(0),
            lock: Mutex::new(()),
            cond: Condvar::new(),
        }
    }

    /// The current generation, to pass to [`wait`](Publish::wait) after checking the index.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Announces a publish, an end of stream, an error or the release of the writer role.
    pub(crate) fn notify(&self) {
        {
            let _lock = self.lock.lock();
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.cond.notify_all();
    }

    /// Sleeps until the generation moves past `seen`.
    pub(crate) fn wait(&self, seen: u64) {
        let mut guard = self.lock.lock();
        while self.generation.load(Ordering::Acquire) == seen {
            self.cond.wait(&mut guard);
        }
    }
}

/// The writer role, held by one thread: releases the writer mutex and then notifies waiters
/// when dropped (also while unwinding), so one of them can take the role over.
pub(crate) struct Role<'a> {
    writer: Option<MutexGuard<'a, Writer>>,
    publish: &'a Publish,
}

impl<'a> Role<'a> {
    pub(crate) fn new(writer: MutexGuard<'a, Writer>, publish: &'a Publish) -> Self {
        Role {
            writer: Some(writer),
            publish,
        }
    }

    /// Pulls until `need` (see [`Writer::pull_until`]), then settles the spill in flight, so the
    /// budgets and stats are as if spilling were synchronous when the role is given up.
    pub(crate) fn pull_until(&mut self, shared: &Shared, need: u64) -> Result<(), Blocked> {
        let pulled = match self.writer.as_mut() {
            Some(writer) => writer.pull_until(shared, need),
            None => Ok(()),
        };
        shared.tiers.lock().finish_background(shared);
        pulled
    }

    /// The writer's published frontier.
    pub(crate) fn frontier(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.frontier())
    }
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        self.writer = None;
        self.publish.notify();
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
