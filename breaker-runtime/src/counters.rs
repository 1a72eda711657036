//! Exact call counts that cost the hot path one plain add.
//!
//! Every breaker keeps its counters in a few cache-line-sized shards, and
//! readers sum the shards. The last shard is shared: it takes atomic
//! `fetch_add`s. Every other shard is a *lane*, owned by at most one thread
//! at a time. A thread claims a free lane the first time it counts anything
//! (in any breaker: lane `i` is shard `i` of every breaker) and gives it back
//! when it exits; threads that find no free lane use the shared shard, and
//! look again once a lane has been given back.
//!
//! A lane's owner is its only writer, so it counts with a plain load and
//! store: no locked instruction, which would hold back every load after it,
//! and no cache line shared with another writer. Totals stay exact: every
//! increment lands, since nobody else writes that slot, and a lane changes
//! owner only through the lane table's mutex, which orders the last store of
//! the old owner before the first load of the new one. (The response-time
//! sum alone is fed from a sample of calls; see
//! [`crate::Metrics::average_response_time`].)
//!
//! The sample is one call in [`SAMPLE_EVERY`] *per breaker* (and per lane):
//! the tick that picks it lives in the breaker's own counters, in the top
//! bits of the sample count's slot, so a thread that alternates between
//! breakers samples each of them in turn. A per-thread tick shared by all
//! breakers would alias: alternating between two breakers, one of them
//! would never be sampled.
//!
//! Under loom the lane table, its lock and the thread-locals are loom's, so
//! the models check the handover of a lane between threads: with one lane,
//! two threads contend for it and the totals must stay exact.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::Ordering as StdOrdering;

use crate::error::FailureType;
use crate::sync::{AtomicU64, Ordering};

/// One counter per slot of a shard. Sixteen `u64`s fill a 128-byte shard,
/// which is the unit of false sharing on current x86 (adjacent-line
/// prefetch) and Apple silicon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Success = 0,
    // Failures by type occupy 1..=5, in `FailureType` order.
    /// The number of timed calls, in the low [`TICK_SHIFT`] bits, under the
    /// breaker's sample tick (see [`Counters::sample_this_call`]). In the
    /// first 64 bytes of the shard, with `Success`: the closed path touches
    /// one cache line of its lane.
    ResponseSamples = 6,
    RejectedOpen = 7,
    RejectedHalfOpen = 8,
    LocalRateLimited = 9,
    Fallback = 10,
    FallbackFailed = 11,
    /// An open circuit refused the call and its fallback served a value:
    /// one add where a rejection and a fallback would take two. Read back
    /// through [`Totals::get`] as both.
    OpenServed = 12,
    ResponseNanos = 13,
    Ignored = 14,
    Cancelled = 15,
}

const SLOTS: usize = 16;
const FIRST_FAILURE: usize = 1;

#[derive(Debug)]
#[repr(align(128))]
struct Shard([AtomicU64; SLOTS]);

#[derive(Debug)]
pub(crate) struct Counters {
    /// [`SHARDS`] shards: the lanes, then the shared one.
    shards: Box<[Shard]>,
}

/// Totals of every slot, read shard by shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals([u64; SLOTS]);

impl Totals {
    pub(crate) fn get(&self, count: Count) -> u64 {
        let own = self.0[count as usize];
        match count {
            Count::RejectedOpen | Count::Fallback => own + self.0[Count::OpenServed as usize],
            // Without the ticks: each shard's are summed into the top bits,
            // where they wrap harmlessly.
            Count::ResponseSamples => own & SAMPLES_MASK,
            _ => own,
        }
    }

    pub(crate) fn failures(&self, failure_type: FailureType) -> u64 {
        self.0[FIRST_FAILURE + failure_type.index()]
    }

    pub(crate) fn all_failures(&self) -> u64 {
        FailureType::ALL.iter().map(|&t| self.failures(t)).sum()
    }
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..*SHARDS)
                .map(|_| Shard(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn add(&self, count: Count, n: u64) {
        self.add_slot(count as usize, n);
    }

    #[inline]
    pub(crate) fn add_failure(&self, failure_type: FailureType) {
        self.add_slot(FIRST_FAILURE + failure_type.index(), 1);
    }

    /// Whether the calling thread's current call of this breaker is one of
    /// the timed sample: one in [`SAMPLE_EVERY`] of the calls each lane
    /// (and the shared shard) makes to this breaker, starting with the
    /// first. Costs what a count does: a plain load and store in an owned
    /// lane.
    #[inline]
    pub(crate) fn sample_this_call(&self) -> bool {
        let before = self.fetch_add_slot(Count::ResponseSamples as usize, 1 << TICK_SHIFT);
        before >> TICK_SHIFT == 0
    }

    #[inline]
    fn add_slot(&self, slot: usize, n: u64) {
        self.fetch_add_slot(slot, n);
    }

    /// Adds `n` to `slot` of this thread's shard; the slot's value before.
    #[inline]
    fn fetch_add_slot(&self, slot: usize, n: u64) -> u64 {
        // Relaxed throughout: counts are independent tallies; a reader wants
        // each to be exact, not ordered against the others or against the
        // state word. A lane's handover is ordered by the lane table.
        // A thread with no lane (or none yet) holds an index past the
        // shards, so one bounds check finds an owned lane.
        match self.shards.get(LANE.with(Cell::get)) {
            Some(owned) => add_owned(&owned.0[slot], n),
            _ => self.add_unowned(slot, n),
        }
    }

    /// Counts from a thread that holds no lane, after claiming one if it
    /// never tried, or if a lane was given back since it last tried.
    #[inline(never)]
    fn add_unowned(&self, slot: usize, n: u64) -> u64 {
        if may_claim() {
            if let Some(owned) = self.shards.get(claim_lane()) {
                return add_owned(&owned.0[slot], n);
            }
        }
        self.shards
            .last()
            .map_or(0, |shared| shared.0[slot].fetch_add(n, Ordering::Relaxed))
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in self.shards.iter() {
            for (total, counter) in totals.0.iter_mut().zip(shard.0.iter()) {
                // Relaxed: see `add_slot`. Wrapping: the sample ticks in
                // the top bits of one slot overflow when summed, by design.
                *total = total.wrapping_add(counter.load(Ordering::Relaxed));
            }
        }
        totals
    }

    pub(crate) fn memory_size(&self) -> usize {
        std::mem::size_of_val(&*self.shards)
    }
}

/// Adds `n` to a counter of a lane this thread owns (nobody else writes
/// it); its value before.
#[inline(always)]
fn add_owned(counter: &AtomicU64, n: u64) -> u64 {
    let before = counter.load(Ordering::Relaxed);
    counter.store(before.wrapping_add(n), Ordering::Relaxed);
    before
}

/// Shards per breaker: a lane per core and the shared one, at least 4 in
/// all so that a few threads rarely go without a lane, and at most 64 to
/// bound memory. Under loom, one lane and the shared shard, so that two
/// threads contend for the lane.
static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    if cfg!(loom) {
        return 2;
    }
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores + 1).clamp(4, 64)
});

/// No lane looked for yet. Past every shard, like [`NO_LANE`].
const UNCLAIMED: usize = usize::MAX;
/// No lane was free: this thread counts in the shared shard.
const NO_LANE: usize = usize::MAX - 1;

/// The lane table and its give-back count: std's outside loom, loom's
/// (made afresh for each execution of a model) inside.
struct Table {
    /// Which lanes are taken, by shard index (the last, shared shard is
    /// never a lane).
    lanes: Mutex<Vec<bool>>,
    /// How many times a lane was given back: a thread without a lane looks
    /// again when this has moved since it last looked.
    given_back: AtomicUsize,
}

#[cfg(not(loom))]
use std::sync::{Mutex, atomic::AtomicUsize};

#[cfg(loom)]
use loom::sync::{Mutex, atomic::AtomicUsize};

#[cfg(not(loom))]
static TABLE: Table = Table {
    lanes: Mutex::new(Vec::new()),
    given_back: AtomicUsize::new(0),
};

#[cfg(loom)]
loom::lazy_static! {
    // In an `Arc`: a lane guard keeps the table it gives its lane back to,
    // since loom drops its lazy statics before the main thread's locals.
    static ref TABLE: loom::sync::Arc<Table> = loom::sync::Arc::new(Table {
        lanes: Mutex::new(Vec::new()),
        given_back: AtomicUsize::new(0),
    });
}

/// The process's lane table.
fn table() -> &'static Table {
    &TABLE
}

impl Table {
    /// The lanes; a panic while they were held cannot leave them
    /// inconsistent.
    fn lanes(&self) -> impl std::ops::DerefMut<Target = Vec<bool>> + '_ {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The lane table of the unit tests.
#[cfg(all(test, not(loom)))]
fn lanes() -> impl std::ops::DerefMut<Target = Vec<bool>> {
    table().lanes()
}

#[cfg(not(loom))]
thread_local! {
    /// This thread's lane; [`NO_LANE`] or [`UNCLAIMED`] when it has none.
    static LANE: Cell<usize> = const { Cell::new(UNCLAIMED) };
    /// The table's give-back count when this thread last looked for a lane.
    static LOOKED_AT: Cell<usize> = const { Cell::new(0) };
    /// Gives the lane back when the thread exits.
    static LANE_GUARD: LaneGuard = const { LaneGuard { lane: Cell::new(NO_LANE) } };
}

// The same thread-locals for loom's threads, which are not OS threads.
#[cfg(loom)]
loom::thread_local! {
    static LANE: Cell<usize> = Cell::new(UNCLAIMED);
    static LOOKED_AT: Cell<usize> = Cell::new(0);
    static LANE_GUARD: LaneGuard = LaneGuard {
        lane: Cell::new(NO_LANE),
        table: std::cell::RefCell::new(None),
    };
}

/// Whether this thread, which has no lane, should look for one: it never
/// did, or a lane was given back since.
fn may_claim() -> bool {
    match LANE.with(Cell::get) {
        UNCLAIMED => true,
        // Relaxed: a stale count only delays the next look by a call.
        NO_LANE => table().given_back.load(StdOrdering::Relaxed) != LOOKED_AT.with(Cell::get),
        _ => false,
    }
}

/// Claims a free lane for this thread: its index, or [`NO_LANE`].
#[cold]
fn claim_lane() -> usize {
    // Touching the guard registers its destructor; a thread already tearing
    // down its thread-locals takes no lane, as it could not give it back.
    let lane = LANE_GUARD
        .try_with(|guard| {
            let table = table();
            let mut taken = table.lanes();
            // Under the table's lock, which every give-back also holds.
            LOOKED_AT.with(|cell| cell.set(table.given_back.load(StdOrdering::Relaxed)));
            // Every shard but the last, shared one.
            taken.resize(*SHARDS - 1, false);
            let free = taken.iter().position(|taken| !taken);
            if let Some(lane) = free {
                taken[lane] = true;
                guard.lane.set(lane);
                #[cfg(loom)]
                guard.table.replace(Some(loom::sync::Arc::clone(&TABLE)));
            }
            free.unwrap_or(NO_LANE)
        })
        .unwrap_or(NO_LANE);
    LANE.with(|cell| cell.set(lane));
    lane
}

/// The lane its thread holds, given back when the thread exits. It keeps
/// its own copy of the lane: under loom, [`LANE`] may be gone by then.
struct LaneGuard {
    lane: Cell<usize>,
    /// The table to give the lane back to (see [`TABLE`]).
    #[cfg(loom)]
    table: std::cell::RefCell<Option<loom::sync::Arc<Table>>>,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        // Anything this thread counts from now on goes to the shared shard.
        let _ = LANE.try_with(|cell| cell.set(NO_LANE));
        let lane = self.lane.replace(NO_LANE);
        if lane == NO_LANE {
            return;
        }
        #[cfg(not(loom))]
        let table = table();
        #[cfg(loom)]
        let Some(table) = self.table.take() else {
            return;
        };
        let mut taken = table.lanes();
        if let Some(taken) = taken.get_mut(lane) {
            *taken = false;
            // Relaxed: read and written under the table's lock.
            table.given_back.fetch_add(1, StdOrdering::Relaxed);
        }
    }
}

/// One call in [`SAMPLE_EVERY`] of each breaker (per lane) is timed for the
/// average response time, so the hot path does not read the clock twice
/// per call. A power of two: the tick counts modulo it by wrapping.
pub(crate) const SAMPLE_EVERY: u64 = 64;

/// Where the sample tick starts in the [`Count::ResponseSamples`] slot: its
/// top `log2(SAMPLE_EVERY)` bits, which wrap modulo [`SAMPLE_EVERY`] on
/// their own; the 58 bits below count samples (2^58 of them would take a
/// core decades).
const TICK_SHIFT: u32 = u64::BITS - SAMPLE_EVERY.trailing_zeros();
/// The sample count of a [`Count::ResponseSamples`] slot.
const SAMPLES_MASK: u64 = (1 << TICK_SHIFT) - 1;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn each_breaker_samples_one_call_in_sample_every_whatever_the_interleaving() {
        let (a, b) = (Counters::new(), Counters::new());
        let (mut sampled_a, mut sampled_b) = (0, 0);
        // Alternating: a per-thread tick would give `b` none.
        for _ in 0..SAMPLE_EVERY * 4 {
            sampled_a += u64::from(a.sample_this_call());
            sampled_b += u64::from(b.sample_this_call());
        }
        assert_eq!((sampled_a, sampled_b), (4, 4));
        // The ticks do not show in the sample count, which counts samples.
        assert_eq!(a.totals().get(Count::ResponseSamples), 0);
        a.add(Count::ResponseSamples, 3);
        assert_eq!(a.totals().get(Count::ResponseSamples), 3);
        assert!(a.sample_this_call(), "a breaker's first call samples again");
    }

    /// Counts once on a new thread and returns the lane it counted in.
    fn lane_of_a_thread_that_counted() -> usize {
        std::thread::spawn(|| {
            Counters::new().add(Count::Success, 1);
            LANE.with(Cell::get)
        })
        .join()
        .expect("the thread finished")
    }

    /// The lane table is process-wide: tests that fill it take turns.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn a_thread_counts_in_its_own_lane_and_gives_it_back_when_it_exits() {
        let _turn = one_at_a_time();
        let counters = Counters::new();
        counters.add(Count::Success, 2);
        let mine = LANE.with(Cell::get);
        assert!(mine < *SHARDS - 1, "this thread got a lane, not {mine}");
        assert_eq!(
            counters.shards[mine].0[Count::Success as usize].load(Ordering::Relaxed),
            2
        );
        assert!(lanes()[mine], "held while this thread lives");

        let theirs = lane_of_a_thread_that_counted();
        assert_ne!(theirs, mine, "two live threads never share a lane");
        if theirs != NO_LANE {
            assert!(!lanes()[theirs], "given back when its thread exited");
        }
        assert_eq!(counters.totals().get(Count::Success), 2);
    }

    /// A helper thread that counts once when told to, says which lane it
    /// counted in, and exits when its channel closes.
    fn counting_thread(
        counters: std::sync::Arc<Counters>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<usize>,
        std::thread::JoinHandle<()>,
    ) {
        let (count, counted) = std::sync::mpsc::channel::<()>();
        let (lane, lanes) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            for () in counted {
                counters.add(Count::Success, 1);
                let _ = lane.send(LANE.with(Cell::get));
            }
        });
        (count, lanes, handle)
    }

    #[test]
    fn a_thread_without_a_lane_takes_one_once_a_lane_is_given_back() {
        let _turn = one_at_a_time();
        let counters = std::sync::Arc::new(Counters::new());
        // Threads take lanes until one finds none free.
        let mut holders = Vec::new();
        let mut sent = 0;
        let late = loop {
            let (count, lane, handle) = counting_thread(std::sync::Arc::clone(&counters));
            count.send(()).expect("the thread listens");
            sent += 1;
            let got = lane.recv().expect("the thread counted");
            if got == NO_LANE {
                break (count, lane, handle);
            }
            assert!(holders.len() < *SHARDS, "more lanes than shards");
            holders.push((count, handle));
        };
        // One holder exits and gives its lane back.
        let (count, handle) = holders.pop().expect("at least one lane");
        drop(count);
        handle.join().expect("the holder exited");
        let (count, lane, handle) = late;
        count.send(()).expect("the thread listens");
        sent += 1;
        let now = lane.recv().expect("the thread counted");
        assert!(now < *SHARDS - 1, "took the lane given back, not {now}");
        drop(count);
        handle.join().expect("the thread exited");
        for (count, handle) in holders {
            drop(count);
            handle.join().expect("a holder exited");
        }
        assert_eq!(
            counters.totals().get(Count::Success),
            sent,
            "every count landed"
        );
    }
}
