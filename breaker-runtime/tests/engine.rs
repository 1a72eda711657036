//! Behaviour of one breaker, driven through its public API on a manual
//! clock: every transition, the forced states, backoff, retry-after,
//! ignored outcomes, quality, rate limits, fallbacks and panics.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use breaker_runtime::{
    Backoff, BreakerError, CachedFallback, CallError, CallOptions, CircuitBreaker,
    CircuitBreakerConfig, CircuitState, DegradedServiceFallback, DetailedState, EventKind,
    FailureType, FallbackReason, ManualClock, Outcome, SimpleFallback, TransitionCause,
    fallback_reason, subscribe,
};

const SECOND: Duration = Duration::from_secs(1);

fn breaker_with(config: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    common::manual_breaker("engine", config)
}

fn config() -> breaker_runtime::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .success_threshold(2)
        .half_open_max_calls(2)
        .recovery_timeout(Duration::from_secs(10))
}

fn fail(breaker: &CircuitBreaker) -> Result<u32, CallError<&'static str>> {
    breaker.call(|| Err("boom"))
}

fn succeed(breaker: &CircuitBreaker) -> Result<u32, CallError<&'static str>> {
    breaker.call(|| Ok(7))
}

fn open(breaker: &CircuitBreaker) {
    while breaker.state() == CircuitState::Closed {
        let _ = fail(breaker);
    }
}

#[test]
fn consecutive_failures_open_the_circuit_and_a_success_resets_the_count() {
    let (breaker, _clock) = breaker_with(config().build().unwrap());
    fail(&breaker).unwrap_err();
    fail(&breaker).unwrap_err();
    assert_eq!(breaker.get_metrics().consecutive_failures, 2);
    succeed(&breaker).unwrap();
    assert_eq!(breaker.get_metrics().consecutive_failures, 0);
    fail(&breaker).unwrap_err();
    fail(&breaker).unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Closed);
    fail(&breaker).unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Open);
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.transitions, 1);
    assert_eq!(metrics.failures_by_type.error, 5);
    assert_eq!(metrics.successful_calls, 1);
}

#[test]
fn an_open_circuit_rejects_without_calling_and_says_when_to_retry() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    open(&breaker);
    clock.advance(Duration::from_secs(4));
    let mut called = false;
    let err = breaker
        .call(|| {
            called = true;
            Ok::<_, ()>(1)
        })
        .unwrap_err();
    assert!(!called, "an open circuit must not make the call");
    assert_eq!(
        err,
        CallError::from(BreakerError::Open {
            name: "engine".into(),
            retry_after: Duration::from_secs(6),
        })
    );
    assert_eq!(breaker.get_metrics().rejected_calls, 1);
    assert_eq!(
        breaker.get_metrics().open_remaining,
        Some(Duration::from_secs(6))
    );
}

#[test]
fn after_the_recovery_timeout_probes_close_the_circuit() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    open(&breaker);
    clock.advance(Duration::from_secs(10));
    succeed(&breaker).unwrap();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    succeed(&breaker).unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().transitions, 3);
}

#[test]
fn a_failed_probe_reopens_the_circuit() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    open(&breaker);
    clock.advance(Duration::from_secs(10));
    succeed(&breaker).unwrap();
    fail(&breaker).unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Open);
    // The open period starts again from the probe's failure.
    clock.advance(Duration::from_secs(9));
    assert!(matches!(
        fail(&breaker).unwrap_err().breaker_error(),
        Some(BreakerError::Open { .. })
    ));
}

#[test]
fn half_open_admits_at_most_max_calls_at_once_and_reserves_atomically() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    open(&breaker);
    clock.advance(Duration::from_secs(10));
    let first = breaker.try_acquire().expect("first probe");
    let second = breaker.try_acquire().expect("second probe");
    assert!(first.is_probe() && second.is_probe());
    assert_eq!(
        breaker.try_acquire().unwrap_err(),
        BreakerError::HalfOpenFull {
            name: "engine".into(),
            max_calls: 2
        }
    );
    assert_eq!(breaker.get_metrics().probes_in_flight, 2);
    first.record(Outcome::Success);
    let third = breaker
        .try_acquire()
        .expect("a freed slot admits another probe");
    third.record(Outcome::Success);
    assert_eq!(breaker.state(), CircuitState::Closed);
    // The second probe belongs to the half-open period that ended: its
    // outcome counts, but moves nothing.
    second.record(Outcome::Failure(FailureType::Error));
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().consecutive_failures, 0);
}

#[test]
fn a_dropped_probe_gives_its_slot_back() {
    let (breaker, clock) = breaker_with(config().half_open_max_calls(1).build().unwrap());
    open(&breaker);
    clock.advance(Duration::from_secs(10));
    let probe = breaker.try_acquire().expect("probe");
    assert!(breaker.try_acquire().is_err());
    drop(probe);
    assert_eq!(breaker.get_metrics().cancelled_calls, 1);
    assert!(breaker.try_acquire().is_ok(), "the slot is free again");
}

#[test]
fn a_panicking_call_counts_as_a_failure_and_is_re_raised() {
    let (breaker, clock) = breaker_with(config().failure_threshold(1).build().unwrap());
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        breaker.call(|| -> Result<(), ()> { panic!("kaboom") })
    }));
    assert_eq!(
        caught.unwrap_err().downcast_ref::<&str>(),
        Some(&"kaboom"),
        "the caller sees the original panic"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.get_metrics().failures_by_type.error, 1);
    // A panicking probe reopens, and the breaker keeps working.
    clock.advance(Duration::from_secs(10));
    let _ = panic::catch_unwind(AssertUnwindSafe(|| {
        breaker.call(|| -> Result<(), ()> { panic!("again") })
    }));
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(10));
    succeed(&breaker).unwrap();
    succeed(&breaker).unwrap();
    succeed(&breaker).unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn forced_open_stays_open_until_reset() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    breaker.force_open();
    assert_eq!(breaker.detailed_state(), DetailedState::ForcedOpen);
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        succeed(&breaker).unwrap_err(),
        CallError::from(BreakerError::ForcedOpen {
            name: "engine".into()
        })
    );
    assert_eq!(breaker.detailed_state(), DetailedState::ForcedOpen);
    breaker.reset();
    assert_eq!(breaker.detailed_state(), DetailedState::Closed);
    succeed(&breaker).unwrap();
}

#[test]
fn forced_closed_passes_every_call_and_still_counts() {
    let (breaker, _clock) = breaker_with(config().build().unwrap());
    breaker.force_closed();
    for _ in 0..10 {
        fail(&breaker).unwrap_err();
    }
    assert_eq!(breaker.detailed_state(), DetailedState::ForcedClosed);
    assert_eq!(breaker.state(), CircuitState::Closed);
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failed_calls, 10);
    assert_eq!(
        metrics.consecutive_failures, 0,
        "a disabled breaker tracks nothing"
    );
    breaker.reset();
    assert_eq!(breaker.detailed_state(), DetailedState::Closed);
}

#[test]
fn reset_clears_the_failure_count_of_a_closed_circuit() {
    let (breaker, _clock) = breaker_with(config().build().unwrap());
    fail(&breaker).unwrap_err();
    fail(&breaker).unwrap_err();
    breaker.reset();
    assert_eq!(breaker.get_metrics().consecutive_failures, 0);
    assert_eq!(breaker.get_metrics().transitions, 0);
    fail(&breaker).unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn backoff_lengthens_each_open_period_up_to_the_cap() {
    let backoff = Backoff {
        multiplier: 2.0,
        max_open_duration: Duration::from_secs(30),
    };
    let (breaker, clock) = breaker_with(config().backoff(backoff).build().unwrap());
    open(&breaker);
    for expected in [20, 30, 30] {
        clock.advance(Duration::from_secs(10));
        fail(&breaker).unwrap_err(); // the probe fails: open again, longer
        assert_eq!(
            breaker.get_metrics().open_remaining,
            Some(Duration::from_secs(expected))
        );
        clock.advance(Duration::from_secs(expected - 10));
    }
    // Closing resets the backoff.
    clock.advance(Duration::from_secs(10));
    succeed(&breaker).unwrap();
    succeed(&breaker).unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed);
    open(&breaker);
    assert_eq!(
        breaker.get_metrics().open_remaining,
        Some(Duration::from_secs(10))
    );
}

#[test]
fn a_rate_limit_with_retry_after_opens_at_once_for_that_long() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    let options = CallOptions::new().classify(|result: &Result<u32, u16>| match result {
        Ok(_) => Outcome::Success,
        Err(429) => Outcome::DependencyRateLimited {
            retry_after: Some(Duration::from_secs(42)),
        },
        Err(_) => Outcome::Failure(FailureType::Error),
    });
    assert_eq!(
        breaker.call_with(&options, || Err(429)).unwrap_err(),
        CallError::Inner(429)
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.get_metrics().failures_by_type.rate_limit, 1);
    clock.advance(Duration::from_secs(41));
    assert!(breaker.try_acquire().is_err(), "retry-after is honoured");
    clock.advance(SECOND);
    assert!(breaker.try_acquire().is_ok());
}

#[test]
fn a_probe_rate_limited_with_a_long_retry_after_stays_open_that_long() {
    let (breaker, clock) = breaker_with(config().build().unwrap());
    open(&breaker);
    clock.advance(Duration::from_secs(10));
    breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::DependencyRateLimited {
            retry_after: Some(Duration::from_secs(100)),
        });
    assert_eq!(
        breaker.get_metrics().open_remaining,
        Some(Duration::from_secs(100))
    );
}

#[test]
fn ignored_outcomes_count_neither_way() {
    let (breaker, clock) = breaker_with(config().failure_threshold(1).build().unwrap());
    let options = CallOptions::new().classify(|result: &Result<u32, u16>| match result {
        Ok(_) => Outcome::Success,
        Err(400) => Outcome::Ignored,
        Err(_) => Outcome::Failure(FailureType::Error),
    });
    for _ in 0..5 {
        assert_eq!(
            breaker.call_with(&options, || Err(400)),
            Err(CallError::Inner(400))
        );
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().ignored_calls, 5);
    // An ignored probe frees its slot without closing or opening.
    breaker.call_with(&options, || Err(500)).unwrap_err();
    clock.advance(Duration::from_secs(10));
    breaker.call_with(&options, || Err(400)).unwrap_err();
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(breaker.get_metrics().probes_in_flight, 0);
}

#[test]
fn a_sync_call_past_its_deadline_counts_as_a_timeout_but_keeps_its_result() {
    let (breaker, clock) = breaker_with(
        config()
            .timeout_duration(Duration::from_secs(2))
            .failure_threshold(1)
            .build()
            .unwrap(),
    );
    let result = breaker.call(|| {
        clock.advance(Duration::from_secs(3));
        Ok::<_, ()>("late but real")
    });
    assert_eq!(result, Ok("late but real"));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.timeouts, 1);
    assert_eq!(
        metrics.last_failure.unwrap().failure_type,
        FailureType::Timeout
    );
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn low_quality_is_a_failure_and_nan_or_out_of_range_scores_fail_too() {
    let (breaker, _clock) = breaker_with(config().failure_threshold(100).build().unwrap());
    for (score, passes) in [
        (0.9, true),
        (0.7, true),
        (0.69, false),
        (f64::NAN, false),
        (1.5, false),
        (-0.1, false),
    ] {
        let options = CallOptions::new().quality(move |_: &&str| score);
        let result = breaker.call_with(&options, || Ok::<_, ()>("answer"));
        if passes {
            assert_eq!(result, Ok("answer"), "score {score}");
        } else {
            let err = result.unwrap_err();
            assert!(
                matches!(err.breaker_error(), Some(BreakerError::LowQuality { .. })),
                "score {score}: {err:?}"
            );
        }
    }
    assert_eq!(breaker.get_metrics().failures_by_type.quality_threshold, 4);
}

#[test]
fn the_local_rate_limit_rejects_without_calling_or_counting_toward_opening() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("limited")
        .config(
            config()
                .failure_threshold(1)
                .rate_limit_per_minute(60)
                .rate_limit_burst(2)
                .build()
                .unwrap(),
        )
        .clock(clock.clone())
        .build()
        .unwrap();
    succeed(&breaker).unwrap();
    succeed(&breaker).unwrap();
    let mut called = false;
    let err = breaker
        .call(|| {
            called = true;
            Ok::<u32, ()>(1)
        })
        .unwrap_err();
    assert!(!called);
    let Some(&BreakerError::LocalRateLimit { retry_after, .. }) = err.breaker_error() else {
        panic!("expected a rate-limit rejection, got {err:?}");
    };
    assert_eq!(
        retry_after, SECOND,
        "one permit per second at 60 per minute"
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().local_rate_limited_calls, 1);
    assert_eq!(breaker.get_metrics().failed_calls, 0);
    clock.advance(SECOND);
    succeed(&breaker).unwrap();
}

#[test]
fn fallbacks_are_told_why_they_run() {
    let (breaker, clock) = breaker_with(config().failure_threshold(1).build().unwrap());
    let seen = Mutex::new(Vec::new());
    let options = CallOptions::new().fallback(|reason: &FallbackReason| {
        seen.lock().unwrap().push((*reason, fallback_reason()));
        Some(Ok::<_, &str>(0))
    });
    assert_eq!(breaker.call_with(&options, || Err("down")), Ok(0));
    assert_eq!(breaker.call_with(&options, || Ok(1)), Ok(0));
    clock.advance(Duration::from_secs(10));
    assert_eq!(breaker.call_with(&options, || Ok(1)), Ok(1));
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen[0].0,
        FallbackReason::Failure {
            failure_type: FailureType::Error
        }
    );
    assert_eq!(
        seen[1].0,
        FallbackReason::Open {
            retry_after: Duration::from_secs(10)
        }
    );
    assert!(seen.iter().all(|(given, thread)| Some(*given) == *thread));
    assert_eq!(fallback_reason(), None, "cleared outside the fallback");
    assert_eq!(breaker.get_metrics().fallback_calls, 2);
}

#[test]
fn a_panicking_fallback_yields_an_error_with_both_causes() {
    let (breaker, _clock) = breaker_with(config().build().unwrap());
    breaker.force_open();
    let options = CallOptions::new()
        .fallback(|_: &FallbackReason| -> Option<Result<u32, ()>> { panic!("cache exploded") });
    let err = breaker.call_with(&options, || Ok(1)).unwrap_err();
    let Some(err @ BreakerError::FallbackFailed { .. }) = err.breaker_error() else {
        panic!("expected FallbackFailed, got {err:?}");
    };
    assert_eq!(
        err.to_string(),
        "fallback of circuit breaker `engine` failed: the fallback panicked: cache exploded \
         (it ran because: circuit forced open)"
    );
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.fallback_failures, 1);
    breaker.reset();
    assert_eq!(
        succeed(&breaker),
        Ok(7),
        "the breaker survives its fallback"
    );
}

#[test]
fn simple_cached_and_degraded_fallbacks_serve() {
    let (breaker, _clock) = breaker_with(config().failure_threshold(100).build().unwrap());
    let simple = SimpleFallback::new(0u32);
    let options = CallOptions::new().fallback_for(&simple, &());
    assert_eq!(breaker.call_with(&options, || Err::<u32, ()>(())), Ok(0));

    let cache = CachedFallback::<String, u32>::new();
    cache.add_to_cache("pre".into(), 5);
    let key = "a".to_owned();
    let options = CallOptions::new().fallback_for(&cache, &key);
    assert_eq!(breaker.call_with(&options, || Ok::<_, ()>(9)), Ok(9));
    assert_eq!(
        breaker.call_with(&options, || Err(())),
        Ok(9),
        "last good result for `a`"
    );
    let other = "b".to_owned();
    let options = CallOptions::new().fallback_for(&cache, &other);
    assert_eq!(
        breaker.call_with(&options, || Err(())),
        Err(CallError::Inner(())),
        "a miss lets the original error through"
    );
    let pre = "pre".to_owned();
    let options = CallOptions::new().fallback_for(&cache, &pre);
    assert_eq!(breaker.call_with(&options, || Err(())), Ok(5));

    let degraded = DegradedServiceFallback::new(|query: &String| query.len() as u32);
    let query = "four".to_owned();
    let options = CallOptions::new().fallback_for(&degraded, &query);
    assert_eq!(breaker.call_with(&options, || Err(())), Ok(4));
}

#[test]
fn the_cached_fallback_is_bounded_least_recently_used_first() {
    let cache = CachedFallback::<u32, u32>::with_capacity(2.try_into().unwrap());
    cache.add_to_cache(1, 1);
    cache.add_to_cache(2, 2);
    assert_eq!(cache.get(&1), Some(1)); // 1 is now the most recent
    cache.add_to_cache(3, 3);
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.get(&2), None, "the least recently used entry went");
    assert_eq!(cache.get(&1), Some(1));
}

#[test]
fn transitions_are_emitted_as_events_with_both_states() {
    let (breaker, clock) = breaker_with(config().failure_threshold(1).build().unwrap());
    let breaker = {
        // A unique name so other tests' events don't mix in.
        let _ = breaker;
        CircuitBreaker::builder("engine-events")
            .config(config().failure_threshold(1).build().unwrap())
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let subscription = subscribe(move |event| {
        if event.breaker == "engine-events" {
            sink.lock().unwrap().push(event.kind.clone());
        }
    });
    fail(&breaker).unwrap_err();
    fail(&breaker).unwrap_err();
    clock.advance(Duration::from_secs(10));
    succeed(&breaker).unwrap();
    subscription.unsubscribe();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            EventKind::Transition {
                from: DetailedState::Closed,
                to: DetailedState::Open,
                cause: TransitionCause::FailureThreshold,
            },
            EventKind::Rejected {
                reason: FallbackReason::Open {
                    retry_after: Duration::from_secs(10)
                }
            },
            EventKind::Transition {
                from: DetailedState::Open,
                to: DetailedState::HalfOpen,
                cause: TransitionCause::RecoveryTimeout,
            },
        ]
    );
}

#[test]
fn the_failure_rate_over_the_window_trips_the_circuit() {
    let (breaker, _clock) = breaker_with(
        config()
            .failure_threshold(100)
            .failure_rate_threshold(0.5)
            .sliding_window_size(10)
            .minimum_calls(4)
            .build()
            .unwrap(),
    );
    succeed(&breaker).unwrap();
    fail(&breaker).unwrap_err();
    succeed(&breaker).unwrap();
    assert_eq!(breaker.state(), CircuitState::Closed, "below minimum_calls");
    fail(&breaker).unwrap_err(); // 2 of 4 failed: 50 %
    assert_eq!(breaker.state(), CircuitState::Open);
    let window = breaker.get_metrics().window.expect("a window is kept");
    assert_eq!(
        (window.calls, window.failures, window.failure_rate),
        (4, 2, 0.5)
    );
    breaker.reset();
    let window = breaker.get_metrics().window.unwrap();
    assert_eq!(
        window.calls, 0,
        "the window restarts with each closed period"
    );
}

#[test]
fn metrics_add_up_and_serialise() {
    let (breaker, _clock) = breaker_with(config().build().unwrap());
    succeed(&breaker).unwrap();
    fail(&breaker).unwrap_err();
    breaker.force_open();
    fail(&breaker).unwrap_err();
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.total_calls, 3);
    assert_eq!(metrics.successful_calls, 1);
    assert_eq!(metrics.failed_calls, 1);
    assert_eq!(metrics.rejected_calls, 1);
    assert_eq!(metrics.success_rate, 0.5);
    let json = serde_json::to_value(&metrics).unwrap();
    assert_eq!(json["current_state"], "open");
    assert_eq!(json["detailed_state"], "forced_open");
    assert_eq!(json["failures_by_type"]["error"], 1);
}

#[test]
fn every_public_handle_is_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CircuitBreaker>();
    send_sync::<breaker_runtime::Permit<'static>>();
    send_sync::<breaker_runtime::Registry>();
    send_sync::<CachedFallback<String, String>>();
    send_sync::<ManualClock>();
    send_sync::<BreakerError>();
    send_sync::<breaker_runtime::Metrics>();
    send_sync::<breaker_runtime::RegistryStatus>();
}

/// Polls `fut` to completion on this thread, with no runtime at all.
fn block_on_without_runtime<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

/// A future that waits once, advancing `clock` by `during_first` in its
/// first poll and by `during_second` in its second, then returns `Ok(5)`.
fn waits_once(
    clock: &ManualClock,
    during_first: Duration,
    during_second: Duration,
) -> impl std::future::Future<Output = Result<u32, &'static str>> {
    let mut polls = 0;
    std::future::poll_fn(move |cx| {
        polls += 1;
        if polls == 1 {
            clock.advance(during_first);
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        clock.advance(during_second);
        std::task::Poll::Ready(Ok(5))
    })
}

#[test]
fn outside_a_runtime_an_async_call_past_its_deadline_keeps_its_result_and_counts_as_a_timeout() {
    let (breaker, clock) = breaker_with(config().timeout_duration(SECOND).build().unwrap());
    let half = SECOND / 2;
    let on_time = block_on_without_runtime(breaker.call_async(waits_once(&clock, half, half / 2)));
    assert_eq!(on_time, Ok(5));
    assert_eq!(breaker.get_metrics().timeouts, 0);

    // Late by its second poll, and late by its first: the time of every
    // poll counts.
    for (first, second) in [(half, SECOND), (SECOND * 2, Duration::ZERO)] {
        let late = block_on_without_runtime(breaker.call_async(waits_once(&clock, first, second)));
        assert_eq!(
            late,
            Ok(5),
            "a deadline that cannot be enforced keeps the result"
        );
    }
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.timeouts, 2);
    assert_eq!(metrics.successful_calls, 1);
    assert_eq!(metrics.failed_calls, 2);
}

#[test]
fn memory_size_counts_a_rate_limiter_only_where_there_is_one() {
    let (plain, _clock) = breaker_with(config().build().unwrap());
    let (limited, _clock) = breaker_with(config().rate_limit_per_minute(60).build().unwrap());
    let limiter = limited.memory_size() - plain.memory_size();
    assert!(
        (32..=256).contains(&limiter),
        "a rate limiter adds {limiter} bytes"
    );
}

/// The README's memory claim: a breaker with the default configuration is
/// a fixed part plus one 128-byte counter shard per lane and the shared
/// one, `clamp(cores + 1, 4, 64)` shards; on a machine of up to three
/// cores (four shards) that is under 1 KiB.
#[test]
fn a_default_breaker_takes_under_a_kibibyte_with_four_counter_shards() {
    let breaker = CircuitBreaker::new("memory", CircuitBreakerConfig::default()).unwrap();
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let shards = (cores + 1).clamp(4, 64);
    let fixed = breaker.memory_size() - 128 * shards;
    assert!(
        fixed + 128 * 4 < 1024,
        "the fixed part is {fixed} bytes: with four shards a breaker takes {}",
        fixed + 128 * 4
    );
}

#[test]
fn the_quality_evaluator_and_the_classifier_run_once_per_call() {
    let (breaker, _clock) = breaker_with(config().failure_threshold(100).build().unwrap());
    let scored = std::cell::Cell::new(0);
    let classified = std::cell::Cell::new(0);
    let options = CallOptions::new()
        .quality(|answer: &u32| {
            scored.set(scored.get() + 1);
            if *answer > 5 { 0.9 } else { 0.1 }
        })
        .classify(|result: &Result<u32, &str>| {
            classified.set(classified.get() + 1);
            match result {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure(FailureType::Error),
            }
        });
    for answer in [9, 1] {
        scored.set(0);
        classified.set(0);
        let _ = breaker.call_with(&options, || Ok(answer));
        assert_eq!((scored.get(), classified.get()), (1, 1), "answer {answer}");
    }
    scored.set(0);
    classified.set(0);
    let _ = breaker.call_with(&options, || Err("down"));
    assert_eq!(
        (scored.get(), classified.get()),
        (0, 1),
        "an error is not scored"
    );
    assert_eq!(breaker.get_metrics().failures_by_type.quality_threshold, 1);
}
