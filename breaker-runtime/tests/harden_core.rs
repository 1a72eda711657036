//! Hardening of the state machine against a hostile dependency (issue 9,
//! items 2, 4 and 5): a hung half-open probe, an absurd retry-after, and
//! configurations at their extremes. Every test runs on a manual clock.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use breaker_runtime::{
    Backoff, BreakerError, CallOptions, CircuitBreaker, CircuitBreakerConfig, CircuitState,
    ConfigError, DetailedState, EventKind, FailureType, ManualClock, Metrics, Outcome, Permit,
    TransitionCause, subscribe,
};
use common::{RECOVERY, TIMEOUT, manual_breaker, ready_to_probe, single_probe_config};

const SECOND: Duration = Duration::from_secs(1);

/// The events emitted for the breaker named `name`, in order.
fn record_events(name: &str) -> (Arc<Mutex<Vec<EventKind>>>, breaker_runtime::Subscription) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let name = name.to_owned();
    let subscription = subscribe(move |event| {
        if event.breaker == name {
            sink.lock().unwrap().push(event.kind.clone());
        }
    });
    (events, subscription)
}

/// Ways a hung probe's permit can finally be settled.
fn settle(permit: Permit<'_>, how: usize) {
    match how {
        0 => permit.record(Outcome::Success),
        1 => permit.record(Outcome::Failure(FailureType::Error)),
        2 => permit.record(Outcome::DependencyRateLimited {
            retry_after: Some(Duration::from_secs(600)),
        }),
        3 => permit.record(Outcome::Ignored),
        _ => drop(permit),
    }
}

#[test]
fn a_hung_probe_is_reclaimed_as_a_timeout_and_the_circuit_recovers() {
    for how in 0..5 {
        let name = format!("hung-probe-{how}");
        let (events, subscription) = record_events(&name);
        let (breaker, clock) = ready_to_probe(&name);

        // The sync probe that never returns: its permit is held.
        let hung = breaker.try_acquire().expect("the probe is admitted");
        assert!(hung.is_probe());
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        events.lock().unwrap().clear();

        clock.advance(TIMEOUT);
        let refused = breaker.call(|| Ok::<_, ()>(1)).unwrap_err();
        assert_eq!(
            refused.breaker_error(),
            Some(&BreakerError::Open {
                name: name.clone(),
                retry_after: RECOVERY,
            }),
            "the slot is reclaimed and the circuit reopens, not HalfOpenFull"
        );
        assert_eq!(breaker.detailed_state(), DetailedState::Open);
        assert_eq!(
            *events.lock().unwrap(),
            [
                EventKind::Timeout { after: TIMEOUT },
                EventKind::Transition {
                    from: DetailedState::HalfOpen,
                    to: DetailedState::Open,
                    cause: TransitionCause::ProbeTimedOut,
                },
                EventKind::Rejected {
                    reason: breaker_runtime::FallbackReason::Open {
                        retry_after: RECOVERY
                    },
                },
            ]
        );
        let metrics = breaker.get_metrics();
        assert_eq!(metrics.failures_by_type.timeout, 1);
        assert_eq!(metrics.failed_calls, 2, "the first failure and the timeout");
        assert_eq!(
            metrics
                .last_failure
                .map(|last| (last.failure_type, last.age)),
            Some((FailureType::Timeout, Duration::ZERO))
        );
        assert_eq!(metrics.probes_in_flight, 0);
        assert_eq!(metrics.late_results, 0);

        // After another recovery_timeout a new probe is admitted and closes.
        clock.advance(RECOVERY);
        assert_eq!(breaker.call(|| Ok::<_, ()>(2)), Ok(2));
        assert_eq!(breaker.state(), CircuitState::Closed);

        // The hung call returns at last: late, and nothing else.
        let before = breaker.get_metrics();
        settle(hung, how);
        let after = breaker.get_metrics();
        assert_eq!(after.late_results, 1, "settled by way {how}");
        assert_eq!(
            Metrics {
                late_results: 0,
                ..after.clone()
            },
            Metrics {
                late_results: 0,
                ..before
            },
            "a late result moves no other count and no state (way {how})"
        );
        assert_eq!(after.detailed_state, DetailedState::Closed);
        subscription.unsubscribe();
    }
}

#[test]
fn a_probe_within_its_timeout_keeps_its_slot() {
    let (breaker, clock) = ready_to_probe("probe-in-time");
    let probe = breaker.try_acquire().expect("the probe is admitted");
    clock.advance(TIMEOUT - Duration::from_nanos(1));
    let refused = breaker.call(|| Ok::<_, ()>(1)).unwrap_err();
    assert_eq!(
        refused.breaker_error(),
        Some(&BreakerError::HalfOpenFull {
            name: "probe-in-time".into(),
            max_calls: 1,
        })
    );
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(breaker.get_metrics().failures_by_type.timeout, 0);
    // The probe returns in time and its outcome counts as usual.
    probe.record(Outcome::Success);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().late_results, 0);
}

#[test]
fn only_overdue_probes_are_reclaimed_and_the_rest_stay_stale_not_late() {
    let config = CircuitBreakerConfig {
        half_open_max_calls: 3,
        ..single_probe_config()
    };
    let (breaker, clock) = manual_breaker("overdue-some", config);
    breaker.call(|| Err::<(), _>("down")).unwrap_err();
    clock.advance(RECOVERY);
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    clock.advance(SECOND);
    let young = breaker.try_acquire().unwrap();
    clock.advance(TIMEOUT - SECOND);
    // The first two are overdue; the third has run for 29 s.
    breaker.call(|| Ok::<_, ()>(1)).unwrap_err();
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.timeout, 2);
    assert_eq!(breaker.detailed_state(), DetailedState::Open);
    // The young probe ran out its period like any probe of a period that
    // ended: its outcome counts, but moves nothing.
    young.record(Outcome::Success);
    first.record(Outcome::Success);
    drop(second);
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.successful_calls, 1);
    assert_eq!(metrics.cancelled_calls, 0);
    assert_eq!(metrics.late_results, 2);
    assert_eq!(breaker.detailed_state(), DetailedState::Open);
}

#[test]
fn a_timeout_too_long_to_represent_never_reclaims_a_probe() {
    let config = CircuitBreakerConfig {
        timeout_duration: Duration::MAX,
        ..single_probe_config()
    };
    let (breaker, clock) = manual_breaker("never-overdue", config);
    breaker.call(|| Err::<(), _>("down")).unwrap_err();
    clock.advance(RECOVERY);
    let _probe = breaker.try_acquire().unwrap();
    clock.advance(Duration::MAX);
    let refused = breaker.call(|| Ok::<_, ()>(1)).unwrap_err();
    assert!(matches!(
        refused.breaker_error(),
        Some(BreakerError::HalfOpenFull { .. })
    ));
}

const THIRTY_YEARS: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

#[test]
fn a_thirty_year_retry_after_opens_the_circuit_for_max_retry_after() {
    let cap = Duration::from_secs(3600);
    assert_eq!(CircuitBreakerConfig::default().max_retry_after, cap);
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(5)
        .build()
        .unwrap();
    let (breaker, clock) = manual_breaker("retry-after-30y", config);
    breaker
        .try_acquire()
        .unwrap()
        .record(Outcome::DependencyRateLimited {
            retry_after: Some(THIRTY_YEARS),
        });
    assert_eq!(breaker.get_metrics().open_remaining, Some(cap));
    clock.advance(cap - Duration::from_nanos(1));
    assert!(breaker.call(|| Ok::<_, ()>(1)).is_err(), "still open");
    clock.advance(Duration::from_nanos(1));
    assert_eq!(breaker.call(|| Ok::<_, ()>(1)), Ok(1));
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
}

#[test]
fn the_smaller_of_max_retry_after_and_max_open_duration_caps_a_retry_after() {
    for (max_retry_after, max_open_duration, expected) in [
        (Duration::from_secs(600), Duration::from_secs(120), 120),
        (Duration::from_secs(60), Duration::from_secs(120), 60),
        (Duration::MAX, Duration::from_secs(120), 120),
    ] {
        let config = CircuitBreakerConfig::builder()
            .recovery_timeout(RECOVERY)
            .max_retry_after(max_retry_after)
            .backoff(Backoff {
                multiplier: 2.0,
                max_open_duration,
            })
            .build()
            .unwrap();
        let (breaker, clock) = manual_breaker("retry-after-capped", config);
        // A stale retry-after, while open, is capped the same way.
        let stale = breaker.try_acquire().unwrap();
        breaker
            .try_acquire()
            .unwrap()
            .record(Outcome::DependencyRateLimited {
                retry_after: Some(THIRTY_YEARS),
            });
        stale.record(Outcome::DependencyRateLimited {
            retry_after: Some(THIRTY_YEARS),
        });
        let expected = Duration::from_secs(expected);
        assert_eq!(breaker.get_metrics().open_remaining, Some(expected));
        clock.advance(expected);
        assert_eq!(breaker.call(|| Ok::<_, ()>(1)), Ok(1));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
    }
}

#[test]
fn max_retry_after_must_be_longer_than_zero() {
    let error = CircuitBreakerConfig::builder()
        .max_retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(
        error,
        ConfigError::OutOfRange {
            field: "max_retry_after",
            ..
        }
    ));
}

#[test]
fn a_manual_clock_advanced_by_duration_max_stops_at_its_end() {
    let clock = ManualClock::new();
    clock.advance(SECOND);
    clock.advance(Duration::MAX);
    assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
    clock.advance(SECOND);
    assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
}

/// One field of the configuration set to one value.
type Edit = (&'static str, String, fn(&mut CircuitBreakerConfig));

/// Every field of [`CircuitBreakerConfig`] at 0, 1 and its maximum (and,
/// for floats, the non-finite values), each applied to the defaults.
fn extremes() -> Vec<Edit> {
    macro_rules! edits {
        ($($field:literal, $label:literal => |$c:ident| $edit:expr;)*) => {
            vec![$(($field, $label.to_owned(), |$c: &mut CircuitBreakerConfig| { $edit; }),)*]
        };
    }
    edits! {
        "failure_threshold", "0" => |c| c.failure_threshold = 0;
        "failure_threshold", "1" => |c| c.failure_threshold = 1;
        "failure_threshold", "MAX" => |c| c.failure_threshold = u32::MAX;
        "recovery_timeout", "0" => |c| c.recovery_timeout = Duration::ZERO;
        "recovery_timeout", "1ns" => |c| c.recovery_timeout = Duration::from_nanos(1);
        "recovery_timeout", "MAX" => |c| c.recovery_timeout = Duration::MAX;
        "success_threshold", "0" => |c| c.success_threshold = 0;
        "success_threshold", "1" => |c| c.success_threshold = 1;
        "success_threshold", "MAX" => |c| c.success_threshold = u32::MAX;
        "timeout_duration", "0" => |c| c.timeout_duration = Duration::ZERO;
        "timeout_duration", "1ns" => |c| c.timeout_duration = Duration::from_nanos(1);
        "timeout_duration", "MAX" => |c| c.timeout_duration = Duration::MAX;
        "quality_threshold", "0" => |c| c.quality_threshold = 0.0;
        "quality_threshold", "1" => |c| c.quality_threshold = 1.0;
        "quality_threshold", "MAX" => |c| c.quality_threshold = f64::MAX;
        "quality_threshold", "MIN" => |c| c.quality_threshold = f64::MIN;
        "quality_threshold", "NaN" => |c| c.quality_threshold = f64::NAN;
        "quality_threshold", "inf" => |c| c.quality_threshold = f64::INFINITY;
        "quality_threshold", "-inf" => |c| c.quality_threshold = f64::NEG_INFINITY;
        "rate_limit_per_minute", "None" => |c| c.rate_limit_per_minute = None;
        "rate_limit_per_minute", "0" => |c| c.rate_limit_per_minute = Some(0);
        "rate_limit_per_minute", "1" => |c| c.rate_limit_per_minute = Some(1);
        "rate_limit_per_minute", "MAX" => |c| c.rate_limit_per_minute = Some(u32::MAX);
        "rate_limit_burst", "None" => |c| { c.rate_limit_per_minute = Some(60); c.rate_limit_burst = None };
        "rate_limit_burst", "0" => |c| { c.rate_limit_per_minute = Some(60); c.rate_limit_burst = Some(0) };
        "rate_limit_burst", "1" => |c| { c.rate_limit_per_minute = Some(60); c.rate_limit_burst = Some(1) };
        "rate_limit_burst", "MAX" => |c| { c.rate_limit_per_minute = Some(60); c.rate_limit_burst = Some(u32::MAX) };
        "rate_limit_burst", "MAX of 1/min" => |c| { c.rate_limit_per_minute = Some(1); c.rate_limit_burst = Some(u32::MAX) };
        "rate_limit_burst", "1 of MAX/min" => |c| { c.rate_limit_per_minute = Some(u32::MAX); c.rate_limit_burst = Some(1) };
        "rate_limit_burst", "MAX of MAX/min" => |c| { c.rate_limit_per_minute = Some(u32::MAX); c.rate_limit_burst = Some(u32::MAX) };
        "rate_limit_burst", "MAX, no rate" => |c| c.rate_limit_burst = Some(u32::MAX);
        "sliding_window_size", "0" => |c| { c.failure_rate_threshold = Some(0.5); c.minimum_calls = 1; c.sliding_window_size = 0 };
        "sliding_window_size", "1" => |c| { c.failure_rate_threshold = Some(0.5); c.minimum_calls = 1; c.sliding_window_size = 1 };
        "sliding_window_size", "MAX" => |c| { c.failure_rate_threshold = Some(0.5); c.minimum_calls = 1; c.sliding_window_size = u32::MAX };
        "half_open_max_calls", "0" => |c| c.half_open_max_calls = 0;
        "half_open_max_calls", "1" => |c| c.half_open_max_calls = 1;
        "half_open_max_calls", "MAX" => |c| c.half_open_max_calls = u32::MAX;
        "failure_rate_threshold", "None" => |c| c.failure_rate_threshold = None;
        "failure_rate_threshold", "0" => |c| c.failure_rate_threshold = Some(0.0);
        "failure_rate_threshold", "MIN_POSITIVE" => |c| c.failure_rate_threshold = Some(f64::MIN_POSITIVE);
        "failure_rate_threshold", "1" => |c| c.failure_rate_threshold = Some(1.0);
        "failure_rate_threshold", "MAX" => |c| c.failure_rate_threshold = Some(f64::MAX);
        "failure_rate_threshold", "NaN" => |c| c.failure_rate_threshold = Some(f64::NAN);
        "failure_rate_threshold", "inf" => |c| c.failure_rate_threshold = Some(f64::INFINITY);
        "failure_rate_threshold", "-inf" => |c| c.failure_rate_threshold = Some(f64::NEG_INFINITY);
        "minimum_calls", "0" => |c| { c.failure_rate_threshold = Some(0.5); c.minimum_calls = 0 };
        "minimum_calls", "1" => |c| { c.failure_rate_threshold = Some(0.5); c.minimum_calls = 1 };
        "minimum_calls", "MAX" => |c| { c.failure_rate_threshold = Some(0.5); c.minimum_calls = u32::MAX };
        "minimum_calls", "MAX of a MAX window" => |c| { c.failure_rate_threshold = Some(0.5); c.sliding_window_size = u32::MAX; c.minimum_calls = u32::MAX };
        "backoff", "None" => |c| c.backoff = None;
        "backoff.multiplier", "0" => |c| c.backoff = Some(Backoff { multiplier: 0.0, max_open_duration: Duration::from_secs(600) });
        "backoff.multiplier", "1" => |c| c.backoff = Some(Backoff { multiplier: 1.0, max_open_duration: Duration::from_secs(600) });
        "backoff.multiplier", "MAX" => |c| c.backoff = Some(Backoff { multiplier: f64::MAX, max_open_duration: Duration::from_secs(600) });
        "backoff.multiplier", "MAX, no cap" => |c| c.backoff = Some(Backoff { multiplier: f64::MAX, max_open_duration: Duration::MAX });
        "backoff.multiplier", "NaN" => |c| c.backoff = Some(Backoff { multiplier: f64::NAN, max_open_duration: Duration::from_secs(600) });
        "backoff.multiplier", "inf" => |c| c.backoff = Some(Backoff { multiplier: f64::INFINITY, max_open_duration: Duration::from_secs(600) });
        "backoff.multiplier", "-inf" => |c| c.backoff = Some(Backoff { multiplier: f64::NEG_INFINITY, max_open_duration: Duration::from_secs(600) });
        "backoff.max_open_duration", "0" => |c| c.backoff = Some(Backoff { multiplier: 2.0, max_open_duration: Duration::ZERO });
        "backoff.max_open_duration", "1ns" => |c| { c.recovery_timeout = Duration::from_nanos(1); c.backoff = Some(Backoff { multiplier: 2.0, max_open_duration: Duration::from_nanos(1) }) };
        "backoff.max_open_duration", "MAX" => |c| c.backoff = Some(Backoff { multiplier: 2.0, max_open_duration: Duration::MAX });
        "backoff.max_open_duration", "MAX, MAX recovery" => |c| { c.recovery_timeout = Duration::MAX; c.backoff = Some(Backoff { multiplier: 2.0, max_open_duration: Duration::MAX }) };
        "max_retry_after", "0" => |c| c.max_retry_after = Duration::ZERO;
        "max_retry_after", "1ns" => |c| c.max_retry_after = Duration::from_nanos(1);
        "max_retry_after", "MAX" => |c| c.max_retry_after = Duration::MAX;
        "max_deadline_workers", "0" => |c| c.max_deadline_workers = 0;
        "max_deadline_workers", "1" => |c| c.max_deadline_workers = 1;
        "max_deadline_workers", "MAX" => |c| c.max_deadline_workers = u32::MAX;
    }
}

/// Drives `breaker` through a few calls, failures until it opens, clock
/// moves (the last of `Duration::MAX`), half-open and a probe. Nothing may
/// panic; the state must stay one the machine knows.
fn drive(breaker: &CircuitBreaker, clock: &ManualClock) {
    let succeed = || breaker.call(|| Ok::<_, &str>(1));
    let fail = || breaker.call(|| Err::<u32, _>("down"));
    for _ in 0..3 {
        let _ = succeed();
    }
    // A hard deadline: a worker thread, waited for at most the timeout
    // (`Duration::MAX`: no deadline).
    let _ = breaker.call_with_deadline(&CallOptions::new(), || Ok::<_, &str>(4));
    // Failures until it opens, or a bounded number if it never does
    // (u32::MAX thresholds, a rate limit of one call a minute).
    for _ in 0..16 {
        if breaker.state() == CircuitState::Open {
            break;
        }
        let _ = fail();
    }
    // A dependency asking for a very long pause.
    if let Ok(permit) = breaker.try_acquire() {
        permit.record(Outcome::DependencyRateLimited {
            retry_after: Some(Duration::MAX),
        });
    }
    let _ = breaker.get_metrics();
    let judged = CallOptions::new().quality(|_: &u32| 0.5);
    let _ = breaker.call_with(&judged, || Ok::<_, &str>(3));
    clock.advance(Duration::from_secs(60));
    let _ = succeed();
    // A probe that finishes past its deadline, then one that hangs and is
    // reclaimed, then the end of time.
    let _ = breaker.call(|| {
        clock.advance(Duration::from_secs(1));
        Ok::<_, &str>(2)
    });
    let hung = breaker.try_acquire();
    clock.advance(Duration::from_secs(3600));
    let _ = succeed();
    drop(hung);
    clock.advance(Duration::MAX);
    for _ in 0..3 {
        let _ = succeed();
    }
    let _ = fail();
    let _ = succeed();
    breaker.reset();
    let _ = succeed();
    let metrics = breaker.get_metrics();
    assert!(metrics.total_calls > 0);
    let _ = serde_json::to_string(&metrics);
}

#[test]
fn every_config_field_at_its_extremes_is_an_error_or_a_working_breaker() {
    let (mut refused, mut working) = (0, 0);
    for (field, label, edit) in extremes() {
        let mut config = CircuitBreakerConfig::default();
        edit(&mut config);
        let clock = ManualClock::new();
        let built = CircuitBreaker::builder(format!("extreme-{field}-{label}"))
            .config(config.clone())
            .clock(clock.clone())
            .build();
        match built {
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.contains(&format!("`{field}`")),
                    "{field} = {label}: the error names another field: {message}"
                );
                if let ConfigError::OutOfRange { field: named, .. } = error {
                    assert_eq!(named, field, "{field} = {label}");
                }
                refused += 1;
            }
            Ok(breaker) => {
                let driven = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    drive(&breaker, &clock)
                }));
                assert!(driven.is_ok(), "{field} = {label} panicked: {config:?}");
                working += 1;
            }
        }
    }
    assert!(
        refused > 10 && working > 10,
        "{refused} refused, {working} working"
    );
}

#[test]
fn the_walk_covers_every_config_field() {
    let config = serde_json::to_value(CircuitBreakerConfig::default()).unwrap();
    let walked: Vec<&str> = extremes().iter().map(|(field, ..)| *field).collect();
    for field in config.as_object().unwrap().keys() {
        assert!(
            walked.contains(&field.as_str()),
            "`{field}` is not walked at its extremes"
        );
    }
}
