//! Many threads, one breaker: every metric total must equal, exactly, what
//! the threads did.
//!
//! Each thread draws its outcomes from its own seeded xorshift generator and
//! tallies on the side what it asked for and what it got back; at the end
//! the breaker's counts must match the sum of the tallies to the call.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{Tally, manual_breaker};

use breaker_runtime::{
    BreakerError, CallError, CallOptions, CircuitBreaker, CircuitBreakerConfig, EventKind,
    FailureType, FallbackReason, ManualClock, Outcome, subscribe,
};

const THREADS: u64 = 8;
const CALLS_PER_THREAD: u64 = 100_000;
const FALLBACK_VALUE: u64 = u64::MAX;

/// xorshift64*: small, fast, and good enough to mix outcomes.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Never zero, the generator's one fixed point.
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An outcome drawn with successes most likely, so a tripping breaker also
/// spends time closed.
fn draw_outcome(rng: &mut XorShift, allow_retry_after: bool) -> Outcome {
    match rng.below(16) {
        0 => Outcome::Failure(FailureType::Timeout),
        1 => Outcome::Failure(FailureType::Error),
        // Rarely: a retry-after opens the circuit at once.
        2 if allow_retry_after && rng.below(16) == 0 => Outcome::DependencyRateLimited {
            retry_after: Some(Duration::from_micros(rng.below(2_000))),
        },
        2 => Outcome::DependencyRateLimited { retry_after: None },
        3 => Outcome::Failure(FailureType::QualityThreshold),
        4 => Outcome::Failure(FailureType::Custom),
        5 => Outcome::Ignored,
        _ => Outcome::Success,
    }
}

/// One thread's calls: through `call_with` (with and without a fallback)
/// and through held permits, some of them dropped unrecorded.
///
/// With a clock, each thread moves it 100 µs one call in 8, so time runs in
/// step with the traffic however the threads are scheduled: open periods
/// end, probes race, and the circuit cycles. Retry-afters are drawn only
/// then, since they open the circuit.
fn hammer(breaker: &CircuitBreaker, seed: u64, clock: Option<&ManualClock>) -> Tally {
    let mut rng = XorShift::new(seed);
    let mut tally = Tally::default();
    // The body's error is the outcome to count.
    let classify = |result: &Result<u64, Outcome>| match result {
        Ok(_) => Outcome::Success,
        Err(outcome) => *outcome,
    };
    let plain = CallOptions::new().classify(classify);
    let with_fallback = plain.fallback(|_: &FallbackReason| Some(Ok(FALLBACK_VALUE)));
    for i in 0..CALLS_PER_THREAD {
        if let Some(clock) = clock {
            if rng.below(8) == 0 {
                clock.advance(Duration::from_micros(100));
            }
        }
        let outcome = draw_outcome(&mut rng, clock.is_some());
        // Whether the breaker let the call run: a fallback's answer alone
        // does not tell a rejection from a failure.
        let ran = Cell::new(false);
        let body = || {
            ran.set(true);
            match outcome {
                Outcome::Success => Ok(i),
                other => Err(other),
            }
        };
        match rng.below(8) {
            // The low-level API, the permit dropped unrecorded one time in 8.
            0 => match breaker.try_acquire() {
                Ok(permit) if rng.below(8) == 0 => {
                    drop(permit);
                    tally.cancelled += 1;
                }
                Ok(permit) => {
                    permit.record(outcome);
                    tally.count(outcome);
                }
                Err(BreakerError::Open { .. } | BreakerError::HalfOpenFull { .. }) => {
                    tally.rejected += 1;
                }
                Err(other) => panic!("unexpected refusal: {other}"),
            },
            1..=2 => {
                let result = breaker.call_with(&with_fallback, body);
                if ran.get() {
                    tally.count(outcome);
                } else {
                    tally.rejected += 1;
                }
                match result {
                    Ok(FALLBACK_VALUE) => tally.fallbacks += 1,
                    Ok(value) => assert_eq!((value, outcome), (i, Outcome::Success)),
                    // An ignored call's own error reaches the caller as is.
                    Err(CallError::Inner(Outcome::Ignored)) => {
                        assert_eq!(outcome, Outcome::Ignored);
                    }
                    Err(other) => panic!("the fallback should have answered: {other:?}"),
                }
            }
            _ => match breaker.call_with(&plain, body) {
                Ok(value) => {
                    assert_eq!((value, outcome), (i, Outcome::Success));
                    tally.count(outcome);
                }
                Err(CallError::Inner(returned)) => {
                    assert_eq!(returned, outcome);
                    tally.count(outcome);
                }
                Err(refusal)
                    if matches!(
                        refusal.breaker_error(),
                        Some(BreakerError::Open { .. } | BreakerError::HalfOpenFull { .. })
                    ) =>
                {
                    assert!(!ran.get(), "a rejected call never runs");
                    tally.rejected += 1;
                }
                Err(other) => panic!("unexpected refusal: {other:?}"),
            },
        }
    }
    tally
}

/// Runs `hammer` on every thread and returns the sum of their tallies.
/// With a clock, the threads move it as they go (see `hammer`).
fn run_threads(breaker: &CircuitBreaker, clock: Option<&ManualClock>) -> Tally {
    let handles: Vec<_> = (0..THREADS)
        .map(|seed| {
            let breaker = breaker.clone();
            let clock = clock.cloned();
            thread::spawn(move || hammer(&breaker, seed + 1, clock.as_ref()))
        })
        .collect();
    let mut total = Tally::default();
    for handle in handles {
        total += handle.join().expect("a worker panicked");
    }
    total
}

/// Counts the transition events of the breaker named `name`.
fn count_transitions(name: &'static str) -> Arc<AtomicU64> {
    let seen = Arc::new(AtomicU64::new(0));
    let sink = Arc::clone(&seen);
    let _subscription = subscribe(move |event| {
        if event.breaker == name && matches!(event.kind, EventKind::Transition { .. }) {
            sink.fetch_add(1, Ordering::Relaxed);
        }
    });
    seen
}

/// A breaker whose failure threshold is out of reach: it stays closed.
fn never_tripping(name: &str) -> CircuitBreaker {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(u32::MAX)
        .build()
        .expect("valid configuration");
    manual_breaker(name, config).0
}

#[test]
fn counts_are_exact_while_the_circuit_stays_closed() {
    let breaker = never_tripping("stress-closed");
    let start = Instant::now();
    let done = run_threads(&breaker, None);
    eprintln!("closed: {} calls in {:?}", done.calls(), start.elapsed());
    let metrics = breaker.get_metrics();
    assert_eq!(done.calls(), THREADS * CALLS_PER_THREAD);
    assert_eq!(metrics.transitions, 0, "the threshold is out of reach");
    assert_eq!(done.rejected, 0);
    done.assert_matches(&metrics);
}

#[test]
fn counts_are_exact_while_the_circuit_trips_and_recovers() {
    const NAME: &str = "stress-tripping";
    let transition_events = count_transitions(NAME);
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(4)
        .success_threshold(2)
        .half_open_max_calls(2)
        .recovery_timeout(Duration::from_millis(1))
        .build()
        .expect("valid configuration");
    let (breaker, clock) = manual_breaker(NAME, config);
    let start = Instant::now();
    let done = run_threads(&breaker, Some(&clock));
    let elapsed = start.elapsed();
    let metrics = breaker.get_metrics();
    eprintln!(
        "tripping: {} calls in {elapsed:?}, {} transitions, {} rejected, clock at {:?}",
        done.calls(),
        metrics.transitions,
        done.rejected,
        clock.elapsed()
    );
    assert_eq!(done.calls(), THREADS * CALLS_PER_THREAD);
    // The run is only worth something if the circuit really moved.
    assert!(metrics.transitions >= 3, "the circuit never cycled");
    assert!(done.rejected > 0, "no call met an open circuit");
    assert!(
        done.successes > done.calls() / 20,
        "the circuit was hardly ever closed"
    );
    assert!(metrics.probes_in_flight <= 2);
    assert_eq!(
        transition_events.load(Ordering::Relaxed),
        metrics.transitions,
        "every transition was emitted once"
    );
    done.assert_matches(&metrics);
}

/// Threads that count in a breaker own a lane of its counters while they
/// live and give it back when they exit. Waves of short-lived threads, more
/// at once than there are lanes, hand lanes over again and again; no count
/// may be lost in a handover, and a reader polling meanwhile must never see
/// a total go backwards.
#[test]
fn counts_are_exact_while_threads_come_and_go() {
    const WAVES: u64 = 20;
    const PER_WAVE: u64 = 6;
    const CALLS: u64 = 5_000;
    let breaker = never_tripping("stress-lanes");
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (breaker, finished) = (breaker.clone(), Arc::clone(&finished));
        thread::spawn(move || {
            let mut last = 0;
            let mut reads = 0_u64;
            while !finished.load(Ordering::Acquire) {
                let seen = breaker.get_metrics().successful_calls;
                assert!(seen >= last, "the total went back from {last} to {seen}");
                last = seen;
                reads += 1;
            }
            reads
        })
    };
    for wave in 0..WAVES {
        let handles: Vec<_> = (0..PER_WAVE)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || {
                    for call in 0..CALLS {
                        let value = breaker.call(|| Ok::<_, ()>(call)).expect("closed");
                        assert_eq!(value, call);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a worker panicked");
        }
        assert_eq!(
            breaker.get_metrics().successful_calls,
            (wave + 1) * PER_WAVE * CALLS,
            "after wave {wave}"
        );
    }
    finished.store(true, Ordering::Release);
    let reads = reader.join().expect("the reader panicked");
    let metrics = breaker.get_metrics();
    eprintln!(
        "lanes: {} calls, {reads} reads while counting",
        metrics.total_calls
    );
    assert_eq!(metrics.total_calls, WAVES * PER_WAVE * CALLS);
    assert_eq!(metrics.successful_calls, WAVES * PER_WAVE * CALLS);
}

/// Hard-deadline calls from many threads at once share the worker pool:
/// every call must run exactly once and hand back its own result, and the
/// metrics must count each one.
#[test]
fn every_hard_deadline_call_runs_once_on_the_shared_pool() {
    const CALLERS: u64 = 8;
    const CALLS: u64 = 500;
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(u32::MAX)
        .timeout_duration(Duration::from_secs(30))
        .build()
        .expect("valid configuration");
    let breaker = CircuitBreaker::new("stress-deadline-pool", config).expect("valid configuration");
    let ran = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (breaker, ran) = (breaker.clone(), Arc::clone(&ran));
            thread::spawn(move || {
                for call in 0..CALLS {
                    let ran = Arc::clone(&ran);
                    let got = breaker.call_with_deadline(&CallOptions::new(), move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, ()>((caller, call))
                    });
                    assert_eq!(got, Ok((caller, call)), "a call got another's result");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a caller panicked");
    }
    let metrics = breaker.get_metrics();
    assert_eq!(ran.load(Ordering::Relaxed), CALLERS * CALLS, "bodies run");
    assert_eq!(metrics.successful_calls, CALLERS * CALLS);
    assert_eq!(metrics.total_calls, CALLERS * CALLS);
    assert_eq!(metrics.late_results, 0);
}
