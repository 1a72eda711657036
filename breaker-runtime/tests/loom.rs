//! Loom models of the state machine's concurrency guarantees, and of the
//! handoff between a hard-deadline worker and its caller.
//!
//! Under `cfg(loom)` the engine's atomics and mutex are loom's (see
//! `src/sync.rs`), and so is the [`ManualClock`]'s counter, so every model
//! builds its breaker and clock inside `loom::model` and loom explores the
//! interleavings of the real code. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p breaker-runtime --no-default-features --test loom --release
//! ```
#![cfg(loom)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as StdOrdering};
use std::time::Duration;

use breaker_runtime::{
    CircuitBreaker, CircuitBreakerConfig, DetailedState, EventKind, FailureType, ManualClock,
    Outcome, subscribe,
};
use common::manual_breaker as breaker;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

const RECOVERY: Duration = Duration::from_secs(1);

/// Explores every interleaving, or (with `Some(n)`) those with at most `n`
/// forced switches: two-thread models run exhaustively in milliseconds;
/// three-thread ones need a bound of 3 to finish in seconds.
fn check(preemptions: Option<usize>, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemptions;
    builder.check(model);
}

/// A breaker that tripped on one failure and whose recovery timeout has
/// passed: the next call takes it to half-open.
fn ready_to_probe(
    name: &str,
    success_threshold: u32,
    half_open_max_calls: u32,
) -> (CircuitBreaker, ManualClock) {
    ready_to_probe_after(name, 1, success_threshold, half_open_max_calls)
}

/// As [`ready_to_probe`], tripped by `failure_threshold` failures.
fn ready_to_probe_after(
    name: &str,
    failure_threshold: u32,
    success_threshold: u32,
    half_open_max_calls: u32,
) -> (CircuitBreaker, ManualClock) {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(failure_threshold)
        .success_threshold(success_threshold)
        .half_open_max_calls(half_open_max_calls)
        .recovery_timeout(RECOVERY)
        .build()
        .expect("valid configuration");
    let (breaker, clock) = breaker(name, config);
    for _ in 0..failure_threshold {
        breaker
            .try_acquire()
            .expect("closed")
            .record(Outcome::Failure(FailureType::Error));
    }
    assert_eq!(breaker.detailed_state(), DetailedState::Open);
    clock.advance(RECOVERY);
    (breaker, clock)
}

/// Counts the transition events of the breaker named `name`; the counter
/// is a std atomic because listeners outlive each loom execution.
fn count_transitions(name: &'static str) -> Arc<AtomicU64> {
    let seen = Arc::new(AtomicU64::new(0));
    let sink = Arc::clone(&seen);
    // Listens for the whole test binary: each model uses its own name.
    let _subscription = subscribe(move |event| {
        if event.breaker == name && matches!(event.kind, EventKind::Transition { .. }) {
            sink.fetch_add(1, StdOrdering::Relaxed);
        }
    });
    seen
}

/// Half-open admission never exceeds `half_open_max_calls`: each thread
/// counts itself in while it holds a probe permit.
fn probes_stay_within_limit(name: &'static str, max_calls: u32, threads: usize) {
    check(Some(3), move || {
        // A success threshold out of reach keeps the circuit half-open, so
        // every thread competes for the same slots.
        let (breaker, _clock) = ready_to_probe(name, 10, max_calls);
        let holding = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let breaker = breaker.clone();
                let holding = Arc::clone(&holding);
                thread::spawn(move || {
                    let Ok(permit) = breaker.try_acquire() else {
                        return false;
                    };
                    // SeqCst: the count must be one total order across threads.
                    let now_holding = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(
                        now_holding <= max_calls as usize,
                        "{now_holding} probes admitted at once, limit {max_calls}"
                    );
                    assert!(permit.is_probe());
                    holding.fetch_sub(1, Ordering::SeqCst);
                    permit.record(Outcome::Success);
                    true
                })
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .filter(|&admitted| admitted)
            .count() as u64;
        let metrics = breaker.get_metrics();
        assert_eq!(metrics.detailed_state, DetailedState::HalfOpen);
        assert_eq!(metrics.probes_in_flight, 0, "every slot was given back");
        assert!(admitted >= u64::from(max_calls.min(threads as u32)));
        assert_eq!(metrics.successful_calls, admitted);
        assert_eq!(metrics.rejected_calls, threads as u64 - admitted);
        assert_eq!(
            metrics.transitions, 2,
            "Closed -> Open -> HalfOpen, once each"
        );
    });
}

#[test]
fn one_probe_slot_admits_one_probe_at_a_time() {
    probes_stay_within_limit("loom-one-slot", 1, 3);
}

#[test]
fn two_probe_slots_admit_at_most_two_probes() {
    probes_stay_within_limit("loom-two-slots", 2, 3);
}

#[test]
fn concurrent_failures_open_the_circuit_once() {
    const NAME: &str = "loom-failures";
    let events = count_transitions(NAME);
    check(None, move || {
        events.store(0, StdOrdering::Relaxed);
        let config = CircuitBreakerConfig::builder()
            .failure_threshold(2)
            .build()
            .expect("valid configuration");
        let (breaker, _clock) = breaker(NAME, config);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || {
                    // The first failure cannot open the circuit, so both
                    // calls are admitted whatever the interleaving.
                    let permit = breaker.try_acquire().expect("closed below the threshold");
                    permit.record(Outcome::Failure(FailureType::Error));
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let metrics = breaker.get_metrics();
        assert_eq!(metrics.detailed_state, DetailedState::Open);
        assert_eq!(metrics.transitions, 1, "exactly one Closed -> Open");
        assert_eq!(metrics.failures_by_type.error, 2);
        assert_eq!(metrics.consecutive_failures, 0, "reset by the transition");
        assert_eq!(
            events.load(StdOrdering::Relaxed),
            1,
            "one event per transition"
        );
    });
}

#[test]
fn concurrent_probe_successes_close_the_circuit_once() {
    const NAME: &str = "loom-probes-close";
    let events = count_transitions(NAME);
    check(None, move || {
        events.store(0, StdOrdering::Relaxed);
        let (breaker, _clock) = ready_to_probe(NAME, 2, 2);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || {
                    // Both race to move Open -> HalfOpen; the circuit cannot
                    // close before both succeed, so both are admitted.
                    let permit = breaker.try_acquire().expect("a probe slot is free");
                    assert!(permit.is_probe());
                    permit.record(Outcome::Success);
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let metrics = breaker.get_metrics();
        assert_eq!(metrics.detailed_state, DetailedState::Closed);
        assert_eq!(
            metrics.transitions, 3,
            "Closed -> Open, then exactly one Open -> HalfOpen and one HalfOpen -> Closed"
        );
        assert_eq!(metrics.successful_calls, 2);
        assert_eq!(metrics.probes_in_flight, 0);
        // The setup's Closed -> Open counts too.
        assert_eq!(events.load(StdOrdering::Relaxed), 3);
    });
}

#[test]
fn racing_probe_success_and_failure_leave_half_open_once() {
    const NAME: &str = "loom-probes-race";
    let events = count_transitions(NAME);
    check(None, move || {
        events.store(0, StdOrdering::Relaxed);
        // Two failures to trip, so a failure the closed circuit admits
        // after the success closed it cannot trip it again.
        let (breaker, _clock) = ready_to_probe_after(NAME, 2, 1, 2);
        let outcomes = [Outcome::Success, Outcome::Failure(FailureType::Timeout)];
        let handles: Vec<_> = outcomes
            .into_iter()
            .map(|outcome| {
                let breaker = breaker.clone();
                thread::spawn(move || {
                    // Admitted as a probe, or (after the other probe decided)
                    // by the closed circuit or refused by the reopened one.
                    if let Ok(permit) = breaker.try_acquire() {
                        permit.record(outcome);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let metrics = breaker.get_metrics();
        let state = metrics.detailed_state;
        assert!(
            matches!(state, DetailedState::Closed | DetailedState::Open),
            "the first outcome decides: {state:?}"
        );
        assert_eq!(metrics.transitions, 3, "one way out of half-open, not both");
        assert_eq!(metrics.probes_in_flight, 0);
        assert_eq!(
            metrics.successful_calls + metrics.failed_calls + metrics.rejected_calls,
            4,
            "the setup's failures and both calls, each counted once"
        );
        assert_eq!(events.load(StdOrdering::Relaxed), 3);
    });
}

#[test]
fn cancelled_probe_gives_its_slot_back() {
    check(None, || {
        let (breaker, _clock) = ready_to_probe("loom-cancel", 1, 1);
        let canceller = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                // Dropped unrecorded: a cancelled future or abandoned call.
                drop(breaker.try_acquire());
            })
        };
        let prober = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                if let Ok(permit) = breaker.try_acquire() {
                    permit.record(Outcome::Success);
                }
            })
        };
        canceller.join().unwrap();
        prober.join().unwrap();
        // Whoever lost the race for the one slot, it is free again: the
        // circuit either closed already or admits a probe now.
        let mut calls = 3;
        if breaker.detailed_state() == DetailedState::HalfOpen {
            let permit = breaker
                .try_acquire()
                .expect("the cancelled probe gave its slot back");
            assert!(permit.is_probe());
            permit.record(Outcome::Success);
            calls += 1;
        }
        let metrics = breaker.get_metrics();
        assert_eq!(metrics.detailed_state, DetailedState::Closed);
        assert_eq!(metrics.probes_in_flight, 0);
        assert_eq!(
            metrics.total_calls, calls,
            "the setup's failure and every call since"
        );
        assert_eq!(
            metrics.cancelled_calls + metrics.rejected_calls + metrics.successful_calls,
            calls - 1
        );
    });
}

/// Counts `successes` successes through `breaker`, each through a permit.
fn count_successes(breaker: &CircuitBreaker, successes: u64) {
    for _ in 0..successes {
        breaker
            .try_acquire()
            .expect("closed")
            .record(Outcome::Success);
    }
}

/// Under loom a breaker's counters have one lane and the shared shard. The
/// first thread to count takes the lane, counts in it with plain loads and
/// stores, and gives it back when it exits; the other thread counts in the
/// shared shard until it sees the lane given back, then takes it over and
/// counts on from the first thread's values. Only the lane table's lock
/// orders the first owner's last store before the new owner's first load:
/// a lost update would show in the total.
#[test]
fn a_lane_handed_over_between_threads_keeps_every_count() {
    check(None, || {
        let config = CircuitBreakerConfig::builder()
            .build()
            .expect("valid configuration");
        // The model's main thread counts nothing until both threads end,
        // so it takes no lane.
        let (breaker, _clock) = breaker("loom-lanes", config);
        let handles: Vec<_> = [2, 2]
            .into_iter()
            .map(|successes| {
                let breaker = breaker.clone();
                thread::spawn(move || count_successes(&breaker, successes))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(breaker.get_metrics().successful_calls, 4);
        // The lane is free again: a third thread takes it and counts on.
        let breaker_again = breaker.clone();
        thread::spawn(move || count_successes(&breaker_again, 1))
            .join()
            .unwrap();
        assert_eq!(breaker.get_metrics().successful_calls, 5);
    });
}

/// The hard-deadline handoff: a worker delivering while its caller gives up
/// at the deadline. Under loom a timed wait does not wait: it reports the
/// deadline passed, so loom tries the caller giving up before, during and
/// after the delivery. Exactly one of the two happens: the caller takes
/// the result, or the worker finds the caller gone and counts it late.
#[test]
fn a_deadline_handoff_is_taken_or_counted_late_exactly_once() {
    use breaker_runtime::__Handoff as Handoff;

    check(None, || {
        let handoff = Arc::new(Handoff::<u32>::new());
        let worker = {
            let handoff = Arc::clone(&handoff);
            thread::spawn(move || handoff.deliver(7).is_ok())
        };
        let taken = handoff.wait(Duration::from_secs(1));
        let delivered = worker.join().unwrap();
        match taken {
            Some(result) => {
                assert_eq!(result, 7);
                assert!(delivered, "a taken result was delivered, not late");
            }
            None => assert!(!delivered, "an untaken result is counted late"),
        }
    });
}

/// With no deadline (`Duration::MAX`), the caller waits for the worker:
/// the wake-up is never lost, whatever the interleaving.
#[test]
fn a_handoff_with_no_deadline_always_gets_the_result() {
    use breaker_runtime::__Handoff as Handoff;

    check(None, || {
        let handoff = Arc::new(Handoff::<u32>::new());
        let worker = {
            let handoff = Arc::clone(&handoff);
            thread::spawn(move || handoff.deliver(7).is_ok())
        };
        assert_eq!(handoff.wait(Duration::MAX), Some(7));
        assert!(worker.join().unwrap());
    });
}

/// The publication protocol of a family's thread caches
/// (`breaker-runtime/src/family.rs`: `Family::publish`, `lend_cached`,
/// `lend_reloaded`), as a replica: `family.rs` uses std's atomics and
/// `ArcSwap`, which loom cannot see, so this models the protocol, not
/// that code. A snapshot is modelled by the generation it was published
/// under (tagged with its family); `ArcSwap`'s store and load by a
/// Release store and an Acquire load, weaker than its own.
///
/// A writer publishes under its family's mutex: snapshot, then a new
/// generation from the one counter of all families (Relaxed), stored with
/// Release. A reader loads the generation (Acquire), finds the slot
/// holding it by the generation alone, and otherwise loads the snapshot
/// and caches it under the generation it read. Checked: a slot found for a
/// family holds that family's snapshot, at least as new as the generation
/// it was found by. Seen red: with the reader's generation load Relaxed,
/// loom finds a snapshot older than its generation.
mod family_publication {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::thread;

    /// A snapshot: its family in the high bits, the generation it was
    /// published under in the low ones.
    fn snapshot(family: u64, generation: u64) -> u64 {
        family << 32 | generation
    }

    struct Family {
        id: u64,
        snapshot: AtomicU64,
        generation: AtomicU64,
    }

    impl Family {
        fn new(id: u64, next: &AtomicU64) -> Self {
            let generation = next.fetch_add(1, Ordering::Relaxed);
            Self {
                id,
                snapshot: AtomicU64::new(snapshot(id, generation)),
                generation: AtomicU64::new(generation),
            }
        }

        /// `Family::publish`: one writer per family (its mutex).
        fn publish(&self, next: &AtomicU64) {
            // The counter only hands out distinct values.
            let generation = next.fetch_add(1, Ordering::Relaxed);
            self.snapshot
                .store(snapshot(self.id, generation), Ordering::Release);
            self.generation.store(generation, Ordering::Release);
        }
    }

    /// A thread's cache: (generation, snapshot) slots, 0 for empty.
    struct Cache([(u64, u64); 2]);

    impl Cache {
        /// `lend_cached`, then `lend_reloaded`: the snapshot a lookup of
        /// `family` uses.
        fn look_up(&mut self, family: &Family) -> u64 {
            let generation = family.generation.load(Ordering::Acquire);
            let found = match self.0.iter().find(|slot| slot.0 == generation) {
                Some(&(_, cached)) => cached,
                None => {
                    let loaded = family.snapshot.load(Ordering::Acquire);
                    // The family's own slot, or the empty one.
                    let other = self.0[0].0 != 0 && self.0[0].1 >> 32 != family.id;
                    self.0[usize::from(other)] = (generation, loaded);
                    loaded
                }
            };
            assert_eq!(found >> 32, family.id, "another family's snapshot");
            assert!(
                found & 0xffff_ffff >= generation,
                "a snapshot older than the generation it was found by"
            );
            found
        }
    }

    #[test]
    fn a_cached_snapshot_is_the_familys_and_at_least_as_new_as_its_generation() {
        super::check(Some(3), || {
            let next = Arc::new(AtomicU64::new(1));
            let families = Arc::new([Family::new(1, &next), Family::new(2, &next)]);
            let writers: Vec<_> = (0..2)
                .map(|i| {
                    let (next, families) = (Arc::clone(&next), Arc::clone(&families));
                    thread::spawn(move || families[i].publish(&next))
                })
                .collect();
            let mut cache = Cache([(0, 0); 2]);
            for _ in 0..2 {
                for family in families.iter() {
                    cache.look_up(family);
                }
            }
            for writer in writers {
                writer.join().unwrap();
            }
            // After the writers: each family's newest snapshot.
            for family in families.iter() {
                let newest = family.generation.load(Ordering::Relaxed);
                assert_eq!(cache.look_up(family), snapshot(family.id, newest));
            }
        });
    }
}
