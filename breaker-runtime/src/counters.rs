//! Exact call counts that cost the hot path one uncontended atomic add.
//!
//! Every breaker keeps its counters in a few cache-line-sized shards. A
//! thread always writes the shard its slot maps to, so two threads calling
//! one breaker do not fight over a cache line; readers sum the shards.
//! Each increment is a single `fetch_add`, so totals are exact: nothing is
//! sampled or dropped. (The response-time sum alone is fed from a sample of
//! calls; see [`crate::Metrics::average_response_time`].)

use std::cell::Cell;

use crate::error::FailureType;
use crate::sync::{AtomicU64, Ordering};

/// One counter per slot of a shard. Sixteen `u64`s fill a 128-byte shard,
/// which is the unit of false sharing on current x86 (adjacent-line
/// prefetch) and Apple silicon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Success = 0,
    // Failures by type occupy 1..=5, in `FailureType` order.
    Ignored = 6,
    RejectedOpen = 7,
    RejectedHalfOpen = 8,
    RateLimited = 9,
    Fallback = 10,
    FallbackFailed = 11,
    /// An open circuit refused the call and its fallback served a value:
    /// one add where a rejection and a fallback would take two. Read back
    /// through [`Totals::get`] as both.
    OpenServed = 12,
    ResponseNanos = 13,
    ResponseSamples = 14,
    Cancelled = 15,
}

const SLOTS: usize = 16;
const FIRST_FAILURE: usize = 1;

#[derive(Debug)]
#[repr(align(128))]
struct Shard([AtomicU64; SLOTS]);

#[derive(Debug)]
pub(crate) struct Counters {
    shards: Box<[Shard]>,
    mask: usize,
}

/// Totals of every slot, read shard by shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals([u64; SLOTS]);

impl Totals {
    pub(crate) fn get(&self, count: Count) -> u64 {
        let own = self.0[count as usize];
        match count {
            Count::RejectedOpen | Count::Fallback => own + self.0[Count::OpenServed as usize],
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
        let shards = shard_count();
        Self {
            shards: (0..shards)
                .map(|_| Shard(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            mask: shards - 1,
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

    #[inline]
    fn add_slot(&self, slot: usize, n: u64) {
        let shard = &self.shards[thread_slot() & self.mask];
        // Relaxed: counts are independent tallies; a reader wants each to be
        // exact, not ordered against the others or against the state word.
        shard.0[slot].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in self.shards.iter() {
            for (total, counter) in totals.0.iter_mut().zip(shard.0.iter()) {
                // Relaxed: see `add_slot`.
                *total += counter.load(Ordering::Relaxed);
            }
        }
        totals
    }

    pub(crate) fn memory_size(&self) -> usize {
        std::mem::size_of_val(&*self.shards)
    }
}

/// A power of two near the core count, at least 4 so that a few threads
/// rarely share a shard, and at most 64 to bound memory.
fn shard_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    cores.next_power_of_two().clamp(4, 64)
}

// std even under loom: a round-robin hint, not engine state (and loom's
// atomics cannot be statics).
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    static SAMPLE_TICK: Cell<u32> = const { Cell::new(0) };
}

/// This thread's slot, handed out round-robin on first use so that
/// concurrently running threads land on different shards.
#[inline]
fn thread_slot() -> usize {
    THREAD_SLOT.with(|slot| {
        let current = slot.get();
        if current != usize::MAX {
            return current;
        }
        // Relaxed: any distinct number will do; nothing is published with it.
        let fresh = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        slot.set(fresh);
        fresh
    })
}

/// One call in [`SAMPLE_EVERY`] per thread is timed for the average
/// response time, so the hot path does not read the clock twice per call.
pub(crate) const SAMPLE_EVERY: u32 = 64;

/// Whether this thread's current call is one of the timed sample.
#[inline]
pub(crate) fn sample_this_call() -> bool {
    SAMPLE_TICK.with(|tick| {
        let n = tick.get().wrapping_add(1);
        tick.set(n);
        n % SAMPLE_EVERY == 1
    })
}
