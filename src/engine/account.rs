//! A cache's account: the buffers of one cache, the memory and disk budgets they share, the
//! spill file they share, the workers they share, and the policy that keeps the sum of their
//! bytes within the budgets.
//!
//! # Budgets across buffers
//!
//! Every member's segment buffers are counted in the account's `ram` as well as in its own
//! (the pools count both), and every spilled segment takes one slot of the shared
//! [`SpillArena`]. When a member needs a buffer and the cache's RAM is full, room is made by the
//! *global hand* ([`Account::reclaim`]): it walks the members round-robin, idle ones (no handle
//! outside the cache) first, and asks the first that can give a segment up to spill its coldest
//! one (its own CLOCK chooses) or, with no room on disk, to drop it if its source can be read
//! again. A member's tiers lock is only ever *tried* by another member's writer, never waited
//! for, so two writers making room in each other never deadlock.
//!
//! Bytes of forward-only streams exist nowhere else: when the disk is full of them, the least
//! recently used idle member is purged whole; if no member is idle, the writer waits until a
//! handle is dropped ([`Account::reserve`]), unless its own stream holds everything, which
//! then goes over the budget as a standalone buffer's would.
//!
//! # Idle buffers
//!
//! A member is idle when the cache holds its only handle. Its idle time counts from the last
//! lookup or the last time a sweep saw it in use (sweeps run every quarter of the TTL); a sweep
//! purges members idle for the TTL.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::flight::Table;
use crate::engine::workers::Workers;
use crate::store::arena::SpillArena;
use crate::store::buffers::BufferCounts;
use crate::sync::{Arc, AtomicBool, AtomicU64, Condvar, Mutex, OnceLock, Ordering};

/// What the account asks of its members (a buffer's shared state, which implements this in
/// `budget.rs`: the account sits below it and never names it).
pub(crate) trait Member: Send + Sync + 'static {
    /// One step of the global hand in this member (see `Tiers::give_up`), with its tiers lock
    /// taken, or only tried (`wait: false`: `false` if it is busy).
    fn give_up(&self, disk: bool, wait: bool) -> bool;
    /// When it was last looked up or seen in use (the account's clock).
    fn last_used_ms(&self) -> &AtomicU64;
    /// Whether it holds segment buffers in RAM.
    fn holds_ram(&self) -> bool;
    /// Whether it may have something to give up: RAM segments, or (`disk`) spilled segments
    /// of a source that can be read again. A hint, read without locks.
    fn could_give_up(&self, disk: bool) -> bool;
    /// It leaves the cache for good: its stored segments leave a persistent directory too.
    fn forget_stored(&self);
    /// Itself, for the cache to hand out as a buffer.
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

/// A member's identity: the address of its state.
pub(crate) fn identity<T: ?Sized>(member: &T) -> *const () {
    member as *const T as *const ()
}

/// How soon the segments written to a persistent directory are synced and recorded.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(5);

/// The settings of a cache, checked by its builder.
pub(crate) struct Limits {
    pub(crate) memory_budget: usize,
    pub(crate) disk_budget: u64,
    pub(crate) segment_size: usize,
    pub(crate) spill_dir: PathBuf,
    pub(crate) idle_ttl: Option<Duration>,
    pub(crate) threads: usize,
    /// How long a writer waits for a handle to be dropped before going over the budget.
    pub(crate) max_wait: Duration,
    /// A persistent directory for the spilled and written-through segments.
    pub(crate) persist: Option<PathBuf>,
}

/// Why members left the cache (counted in the cache's stats).
#[derive(Default)]
pub(crate) struct Purges {
    pub(crate) ttl: AtomicU64,
    pub(crate) pressure: AtomicU64,
    pub(crate) removed: AtomicU64,
}

/// A cache's shared state (see the module docs).
pub(crate) struct Account {
    pub(crate) limits: Limits,
    /// Segment buffers of all members.
    pub(crate) ram: Arc<BufferCounts>,
    arena: OnceLock<Arc<SpillArena>>,
    arena_lock: Mutex<()>,
    pub(crate) workers: Workers,
    pub(crate) members: Table<Arc<dyn Member>>,
    pub(crate) purges: Purges,
    /// Segments a member gave up to make room for another.
    pub(crate) taken: AtomicU64,
    /// Times a writer waited for a handle to be dropped.
    pub(crate) waits: AtomicU64,
    /// Times a writer gave up waiting and went over the budget.
    pub(crate) overcommits: AtomicU64,
    /// The count of departures when a writer last gave up waiting: until the next departure,
    /// writers go over the budget without waiting again.
    gave_up_at: Mutex<Option<u64>>,
    /// Held from making room on the disk to writing the segment there, so that two writers
    /// never both take the last slot.
    pub(crate) spilling: Mutex<()>,
    /// Members taken out of the table whose handles live on: still in the budget, so still
    /// within the hand's reach.
    detached: Mutex<Vec<std::sync::Weak<dyn Member>>>,
    /// A flush of the persistent directory is scheduled.
    flush_scheduled: AtomicBool,
    /// Woken when a member leaves the cache.
    left: (Mutex<u64>, Condvar),
    epoch: Instant,
}

impl Account {
    /// A cache's account; a persistent one opens (and locks) its directory now.
    pub(crate) fn new(limits: Limits) -> io::Result<Arc<Self>> {
        let threads = limits.threads;
        let arena = OnceLock::new();
        if let Some(dir) = &limits.persist {
            let opened = SpillArena::persistent(dir, limits.segment_size).map_err(|e| {
                crate::error::context(e, format!("opening the cache directory {}", dir.display()))
            })?;
            let _ = arena.set(Arc::new(opened));
        }
        Ok(Arc::new(Account {
            limits,
            ram: Arc::new(BufferCounts::default()),
            arena,
            arena_lock: Mutex::new(()),
            workers: Workers::new(threads),
            members: Table::new(),
            purges: Purges::default(),
            taken: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            overcommits: AtomicU64::new(0),
            gave_up_at: Mutex::new(None),
            spilling: Mutex::new(()),
            detached: Mutex::new(Vec::new()),
            flush_scheduled: AtomicBool::new(false),
            left: (Mutex::new(0), Condvar::new()),
            epoch: Instant::now(),
        }))
    }

    /// The shared spill file, created on the first spill.
    pub(crate) fn arena(&self) -> io::Result<Arc<SpillArena>> {
        if let Some(arena) = self.arena.get() {
            return Ok(arena.clone());
        }
        let _creating = self.arena_lock.lock();
        if let Some(arena) = self.arena.get() {
            return Ok(arena.clone());
        }
        let dir = &self.limits.spill_dir;
        let arena = SpillArena::new_in(dir, self.limits.segment_size).map_err(|e| {
            crate::error::context(e, format!("creating a spill file in {}", dir.display()))
        })?;
        Ok(self.arena.get_or_init(|| Arc::new(arena)).clone())
    }

    /// In a persistent cache, the version of `key` kept as a complete forward-only stream.
    pub(crate) fn stored_stream(&self, key: &str) -> Option<crate::store::journal::Identity> {
        self.arena.get()?.stored_stream(key)
    }

    /// Bytes of the members' segments in RAM.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.ram.live.load(Ordering::Relaxed) * self.limits.segment_size as u64
    }

    /// Bytes of the members' segments on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.arena.get().map_or(0, |a| a.used()) * self.limits.segment_size as u64
    }

    /// Whether `more` more segment buffers would take RAM past the budget.
    pub(crate) fn memory_over(&self, more: usize) -> bool {
        let live = self.ram.live.load(Ordering::Relaxed) as usize;
        (live + more).saturating_mul(self.limits.segment_size) > self.limits.memory_budget
    }

    /// Whether one more spilled segment would take the disk past the budget.
    pub(crate) fn disk_full(&self) -> bool {
        let used = self.arena.get().map_or(0, |a| a.used());
        (used + 1).saturating_mul(self.limits.segment_size as u64) > self.limits.disk_budget
    }

    /// Milliseconds since the cache was made: the clock of idle times.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The global hand: makes a member give up one RAM segment (`disk: false`) or one spilled
    /// segment of a source that can be read again (`disk: true`), idle members first, or, for
    /// the disk, purges the least recently used idle member. The caller's own buffer, `me`,
    /// takes its turn like the others through `mine` (the caller may hold its tiers lock);
    /// the others' locks are only tried. Whether anything was freed.
    pub(crate) fn reclaim(
        &self,
        me: *const (),
        mine: &mut dyn FnMut(bool) -> bool,
        disk: bool,
    ) -> bool {
        if self.try_candidates(&self.candidates(disk), me, mine, disk) {
            return true;
        }
        // No RAM segment could be spilled because the disk is full: a slot freed by dropping
        // a spilled segment of a source that can be read again lets the next round spill.
        if !disk && self.disk_full() && self.try_candidates(&self.candidates(true), me, mine, true)
        {
            return true;
        }
        // A persistent directory's keys that are not open go first; then, the disk being
        // full of bytes that exist nowhere else, the least recently used idle member whole.
        if self.arena.get().is_some_and(|a| a.forget_dormant()) {
            return true;
        }
        self.purge_lru_idle(me)
    }

    /// One step in the first of `candidates` that can take it, idle ones first.
    fn try_candidates(
        &self,
        candidates: &[(std::sync::Weak<dyn Member>, bool)],
        me: *const (),
        mine: &mut dyn FnMut(bool) -> bool,
        disk: bool,
    ) -> bool {
        for idle_only in [true, false] {
            for (member, idle) in candidates {
                if idle_only && !idle {
                    continue;
                }
                // Held only while it is tried: the others' counts stay true for the purge.
                let Some(member) = member.upgrade() else {
                    continue;
                };
                let freed = if identity(&*member) == me {
                    mine(disk)
                } else {
                    member.give_up(disk, false)
                };
                if freed {
                    self.taken.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
            }
        }
        false
    }

    /// Up to a few dozen members from the hand on, with whether each is idle; the hand moves
    /// past them.
    fn candidates(&self, disk: bool) -> Vec<(std::sync::Weak<dyn Member>, bool)> {
        const BATCH: usize = 32;
        let mut entries = self.members.lock();
        let len = entries.len();
        let mut out = Vec::with_capacity(BATCH.min(len));
        // Past those with nothing to give (a full turn at most).
        for _ in 0..len {
            if out.len() == BATCH {
                break;
            }
            if entries.hand >= len {
                entries.hand = 0;
            }
            let at = entries.hand;
            entries.hand += 1;
            let member = &entries.slab[at].value;
            if member.could_give_up(disk) {
                let idle = Arc::strong_count(member) == 1;
                out.push((Arc::downgrade(member), idle));
            }
        }
        drop(entries);
        let mut detached = self.detached.lock();
        detached.retain(|m| m.strong_count() > 0);
        out.extend(detached.iter().map(|m| (m.clone(), false)));
        out
    }

    /// `member` left the table: if handles of it live on, it stays in the budget and within
    /// the hand's reach until they are dropped.
    pub(crate) fn detach(&self, member: Arc<dyn Member>) {
        if Arc::strong_count(&member) > 1 {
            self.detached.lock().push(Arc::downgrade(&member));
        }
        drop(member);
        self.member_left();
    }

    /// Purges the idle member looked up least recently (never `me`); whether there was one.
    pub(crate) fn purge_lru_idle(&self, me: *const ()) -> bool {
        let purged = {
            let mut entries = self.members.lock();
            let lru = entries
                .slab
                .iter()
                .enumerate()
                .filter(|(_, e)| Arc::strong_count(&e.value) == 1 && identity(&*e.value) != me)
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i);
            match lru {
                Some(slot) => entries.remove_at(slot),
                None => return false,
            }
        };
        purged.value.forget_stored();
        self.purges.pressure.fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "sparsebuf: cache purged {:?} (least recently used, idle)",
            purged.key
        );
        drop(purged);
        self.member_left();
        true
    }

    /// Purges the members idle for the TTL (all idle members if `all`), and marks those in use
    /// as used now; how many were purged.
    pub(crate) fn sweep(&self, all: bool) -> usize {
        let now = self.now_ms();
        let ttl = self
            .limits
            .idle_ttl
            .map_or(u64::MAX, |t| t.as_millis() as u64);
        let mut purged = Vec::new();
        {
            let mut entries = self.members.lock();
            let mut slot = 0;
            while slot < entries.len() {
                let entry = &entries.slab[slot];
                if Arc::strong_count(&entry.value) > 1 {
                    entry.value.last_used_ms().store(now, Ordering::Relaxed);
                    entries.mark_used(slot);
                    slot += 1;
                    continue;
                }
                let idle_for =
                    now.saturating_sub(entry.value.last_used_ms().load(Ordering::Relaxed));
                if all || idle_for >= ttl {
                    let entry = entries.remove_at(slot);
                    entry.value.forget_stored();
                    purged.push(entry);
                } else {
                    slot += 1;
                }
            }
        }
        let n = purged.len();
        if n > 0 {
            self.purges.ttl.fetch_add(n as u64, Ordering::Relaxed);
            log::debug!("sparsebuf: cache purged {n} idle buffers");
            drop(purged);
            self.member_left();
        }
        n
    }

    /// Starts the sweeps of a cache with a TTL: every quarter of it (between 10 ms and 1 s),
    /// on a worker, for as long as the cache lives.
    pub(crate) fn start_sweeps(account: &Arc<Account>) {
        let Some(ttl) = account.limits.idle_ttl else {
            return;
        };
        let every = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        #[cfg(not(loom))]
        schedule_sweep(Arc::downgrade(account), every);
        #[cfg(loom)]
        let _ = every;
    }

    /// A member left the cache: wakes writers waiting for room.
    pub(crate) fn member_left(&self) {
        *self.left.0.lock() += 1;
        self.left.1.notify_all();
    }

    /// Reserves room for one more segment buffer if the cache's RAM has it now, without
    /// making room or waiting.
    pub(crate) fn try_reserve(&self) -> bool {
        let cap = (self.limits.memory_budget / self.limits.segment_size) as u64;
        let reserved = self
            .ram
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live < cap).then_some(live + 1)
            });
        match reserved {
            Ok(live) => {
                self.ram.peak.fetch_max(live + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Reserves room in the cache's RAM for one more segment buffer of `me`, which takes it
    /// right after (its pool does not count it again). While the RAM is full and nothing can be
    /// freed, waits for a handle to be dropped, as long as another member in use holds bytes;
    /// if `me` alone holds them, it goes over the budget, as a standalone buffer does.
    pub(crate) fn reserve(&self, me: &dyn Member) {
        let id = identity(me);
        let mut counted = false;
        let started = Instant::now();
        loop {
            if self.try_reserve() {
                return;
            }
            let seen = *self.left.0.lock();
            let freed = self.reclaim(id, &mut |disk| me.give_up(disk, true), false);
            if freed {
                continue;
            }
            if !self.others_in_use(id) {
                let live = self.ram.live.fetch_add(1, Ordering::Relaxed) + 1;
                self.ram.peak.fetch_max(live, Ordering::Relaxed);
                return;
            }
            let gave_up_at = *self.gave_up_at.lock();
            if gave_up_at == Some(seen) || started.elapsed() >= self.limits.max_wait {
                // Nobody dropped a handle in time (the thread that would may be this one):
                // over the budget rather than a hang, and no more waits until a member leaves.
                *self.gave_up_at.lock() = Some(seen);
                if gave_up_at != Some(seen) {
                    self.overcommits.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "sparsebuf: cache memory budget exceeded: every buffer holding bytes is \
                         in use and no handle was dropped within {:?}",
                        self.limits.max_wait
                    );
                }
                let live = self.ram.live.fetch_add(1, Ordering::Relaxed) + 1;
                self.ram.peak.fetch_max(live, Ordering::Relaxed);
                return;
            }
            if !counted {
                counted = true;
                self.waits.fetch_add(1, Ordering::Relaxed);
            }
            #[cfg_attr(loom, allow(unused_mut))]
            let mut left = self.left.0.lock();
            if *left == seen {
                // Handles are dropped without telling the cache: look again now and then.
                #[cfg(not(loom))]
                self.left.1.wait_for(&mut left, Duration::from_millis(20));
                #[cfg(loom)]
                {
                    drop(left);
                    loom::thread::yield_now();
                }
            }
        }
    }

    /// Whether a member other than `me` has a handle outside the cache and holds bytes.
    fn others_in_use(&self, me: *const ()) -> bool {
        let in_table = {
            let entries = self.members.lock();
            entries.slab.iter().any(|e| {
                identity(&*e.value) != me && Arc::strong_count(&e.value) > 1 && e.value.holds_ram()
            })
        };
        in_table
            || self.detached.lock().iter().any(|m| {
                m.upgrade()
                    .is_some_and(|m| identity(&*m) != me && m.holds_ram())
            })
    }

    /// A persistent directory's segments written since its last flush become durable within
    /// [`FLUSH_EVERY`]: a flush is scheduled on a worker if none is.
    pub(crate) fn flush_soon(self: &Arc<Self>) {
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let job = move || {
            if let Some(account) = weak.upgrade() {
                account.flush_scheduled.store(false, Ordering::Release);
                if let Some(arena) = account.arena.get() {
                    if let Err(error) = arena.flush() {
                        log::warn!("sparsebuf: syncing the cache directory failed: {error}");
                    }
                }
            }
        };
        #[cfg(not(loom))]
        self.workers.after(FLUSH_EVERY, Box::new(job));
        #[cfg(loom)]
        drop(job);
    }

    /// Purges every idle member and forgets the rest (they live on with their handles): the
    /// cache is gone.
    pub(crate) fn close(&self) {
        let all: Vec<_> = {
            let mut entries = self.members.lock();
            let mut all = Vec::with_capacity(entries.len());
            while entries.len() > 0 {
                let last = entries.len() - 1;
                all.push(entries.remove_at(last));
            }
            all
        };
        for member in all {
            self.detach(member.value);
        }
        self.member_left();
    }
}

/// One sweep, then the next after `every`, while the account lives.
#[cfg(not(loom))]
fn schedule_sweep(account: std::sync::Weak<Account>, every: Duration) {
    let Some(strong) = account.upgrade() else {
        return;
    };
    let weak = account.clone();
    strong.workers.after(
        every,
        Box::new(move || {
            if let Some(account) = weak.upgrade() {
                account.sweep(false);
                drop(account);
                schedule_sweep(weak, every);
            }
        }),
    );
}
