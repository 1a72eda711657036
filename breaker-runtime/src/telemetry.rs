//! Counts an operator reads that the closed-state hot path never touches:
//! the histogram of sampled response times, and state changes by target
//! state.
//!
//! Implementation notes:
//!
//! * **Off the hot path.** The histogram is fed only by the timed sample
//!   (one call in [`SAMPLE_EVERY`](crate::counters::SAMPLE_EVERY) of each
//!   breaker, per thread), right where the sample already adds to the
//!   response-time sum; transitions are counted under the core's mutex,
//!   where they happen. A call that is not sampled does nothing here.
//! * **Relaxed atomics, no lanes.** Each bucket is one `AtomicU64` shared
//!   by every thread: a sampled call pays one `fetch_add` on a line other
//!   threads may write, one call in 64. Lanes (see
//!   [`counters`](crate::counters)) would multiply the histogram's memory by
//!   the shard count for a path that runs 1/64 of the time.
//! * **Allocated on first use.** A breaker that never finished a sampled
//!   call nor changed state holds only a null pointer: a process with a
//!   thousand idle keyed breakers pays 8 bytes for each of them.
//!
//! Invariants:
//!
//! 1. The pointer goes from null to one `Box<Telemetry>` at most once, and
//!    that box lives until the breaker drops: readers hold `&Telemetry` for
//!    as long as they hold the breaker.
//! 2. Bucket `i` counts samples `t` with `BOUNDS[i-1] < t <= BOUNDS[i]`
//!    (the `le` convention of Prometheus), the last bucket those above the
//!    largest bound.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::state::DetailedState;

/// Upper bounds of the latency buckets, in nanoseconds: 1, 2.5 and 5 per
/// decade from 1 µs to 100 s, which spans an in-process cache and a slow
/// LLM call; a sample above 100 s lands in the overflow bucket.
pub(crate) const LATENCY_BOUNDS_NANOS: [u64; 25] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    25_000_000_000,
    50_000_000_000,
    100_000_000_000,
];

/// The buckets: one per bound, and the overflow.
pub(crate) const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_NANOS.len() + 1;

/// The bucket a sample of `nanos` falls in (invariant 2).
pub(crate) fn bucket_of(nanos: u64) -> usize {
    LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos)
}

#[derive(Debug, Default)]
struct Telemetry {
    latency: [AtomicU64; LATENCY_BUCKETS],
    /// By [`DetailedState::index`].
    transitions_to: [AtomicU64; DetailedState::ALL.len()],
}

/// A breaker's [`Telemetry`], allocated on first use (invariant 1).
#[derive(Debug, Default)]
pub(crate) struct LazyTelemetry(AtomicPtr<Telemetry>);

impl LazyTelemetry {
    fn get(&self) -> Option<&Telemetry> {
        // Acquire: pairs with the Release that published the box, so its
        // counters are seen initialized.
        let current = self.0.load(Ordering::Acquire);
        // SAFETY: null, or a box published once and freed only when `self`
        // drops (invariant 1), which `&self` outlives here.
        unsafe { current.as_ref() }
    }

    fn get_or_init(&self) -> &Telemetry {
        match self.get() {
            Some(telemetry) => telemetry,
            None => self.init(),
        }
    }

    #[cold]
    #[inline(never)]
    fn init(&self) -> &Telemetry {
        let fresh = Box::into_raw(Box::default());
        // AcqRel: publishes ours (Release) or sees the one another thread
        // published first (Acquire).
        match self
            .0
            .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            // SAFETY: just published; freed only when `self` drops.
            Ok(_) => unsafe { &*fresh },
            Err(theirs) => {
                // SAFETY: `fresh` came from `Box::into_raw` and was never
                // shared; `theirs` is the published box (invariant 1).
                drop(unsafe { Box::from_raw(fresh) });
                unsafe { &*theirs }
            }
        }
    }

    /// Counts one sampled response time.
    pub(crate) fn record_latency(&self, nanos: u64) {
        // Relaxed: an independent tally, read for totals only.
        self.get_or_init().latency[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one state change into `to`.
    pub(crate) fn record_transition(&self, to: DetailedState) {
        // Relaxed: as above; the core's mutex orders transitions anyway.
        self.get_or_init().transitions_to[to.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The samples in each latency bucket (not cumulative).
    pub(crate) fn latency_counts(&self) -> [u64; LATENCY_BUCKETS] {
        self.get().map_or([0; LATENCY_BUCKETS], |t| {
            t.latency
                .each_ref()
                .map(|bucket| bucket.load(Ordering::Relaxed))
        })
    }

    /// State changes into each state, by [`DetailedState::index`].
    pub(crate) fn transitions_to(&self) -> [u64; DetailedState::ALL.len()] {
        self.get().map_or([0; DetailedState::ALL.len()], |t| {
            t.transitions_to
                .each_ref()
                .map(|count| count.load(Ordering::Relaxed))
        })
    }

    /// The heap bytes held: none until first use.
    pub(crate) fn memory_size(&self) -> usize {
        self.get().map_or(0, std::mem::size_of_val)
    }
}

impl Drop for LazyTelemetry {
    fn drop(&mut self) {
        let current = *self.0.get_mut();
        if !current.is_null() {
            // SAFETY: the published box (invariant 1); `&mut self` means no
            // reader is left.
            drop(unsafe { Box::from_raw(current) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_on_a_bound_counts_in_that_bound_s_bucket() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1_000), 0, "le=1µs holds 1µs");
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(2_500), 1);
        assert_eq!(bucket_of(100_000_000_000), LATENCY_BUCKETS - 2);
        assert_eq!(bucket_of(100_000_000_001), LATENCY_BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn nothing_is_allocated_until_first_use_and_then_once() {
        let telemetry = LazyTelemetry::default();
        assert_eq!(telemetry.memory_size(), 0);
        assert_eq!(telemetry.latency_counts(), [0; LATENCY_BUCKETS]);
        telemetry.record_latency(3_000);
        let first = telemetry.0.load(Ordering::Relaxed);
        telemetry.record_transition(DetailedState::Open);
        telemetry.record_transition(DetailedState::Open);
        assert_eq!(telemetry.0.load(Ordering::Relaxed), first, "one box");
        assert!(telemetry.memory_size() > 0);
        assert_eq!(telemetry.latency_counts()[2], 1);
        assert_eq!(telemetry.transitions_to()[DetailedState::Open.index()], 2);
    }

    #[test]
    fn threads_racing_to_allocate_share_one_box_and_lose_no_count() {
        let telemetry = LazyTelemetry::default();
        let threads = 4;
        let each = 1_000;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..each {
                        telemetry.record_latency(7_000);
                    }
                });
            }
        });
        assert_eq!(telemetry.latency_counts()[bucket_of(7_000)], threads * each);
    }
}
