//! Behaviour of the state machine (`core.rs`) that mutation testing found
//! unchecked: outcomes of calls admitted by an earlier closed period, two
//! reclaimed probes coming back late, the exact end of an open period, and
//! how a retry-after sets or extends it. Every test runs on a manual clock.

mod common;

use std::time::Duration;

use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, DetailedState, FailureType,
    ManualClock, Metrics, Outcome,
};

const NANO: Duration = Duration::from_nanos(1);
const RECOVERY: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(30);

fn breaker(
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
        .timeout_duration(TIMEOUT)
        .build()
        .expect("valid configuration");
    common::manual_breaker(name, config)
}

fn fail(breaker: &CircuitBreaker) {
    breaker.call(|| Err::<(), _>("down")).unwrap_err();
}

fn succeed(breaker: &CircuitBreaker) {
    breaker
        .call(|| Ok::<_, ()>(()))
        .expect("admitted and succeeds");
}

/// The `retry_after` of a call refused because the circuit is open, or
/// `None` when the call was admitted (it then succeeds).
fn refused_for(breaker: &CircuitBreaker) -> Option<Duration> {
    match breaker.call(|| Ok::<_, ()>(())) {
        Ok(()) => None,
        Err(error) => match error.breaker_error() {
            Some(BreakerError::Open { retry_after, .. }) => Some(*retry_after),
            other => panic!("expected an open rejection, got {other:?}"),
        },
    }
}

/// Outcomes of calls admitted by an earlier closed period count, but do
/// not touch the failure count of the circuit's current closed period.
#[test]
fn outcomes_from_an_earlier_closed_period_move_no_state() {
    let (breaker, clock) = breaker("mutants-stale-closed", 3, 1, 1);
    let old_success = breaker.try_acquire().expect("closed admits");
    let old_failure = breaker.try_acquire().expect("closed admits");
    assert!(!old_success.is_probe());

    // Open, then close again through one good probe.
    for _ in 0..3 {
        fail(&breaker);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(RECOVERY);
    succeed(&breaker);
    assert_eq!(breaker.state(), CircuitState::Closed);
    fail(&breaker);
    assert_eq!(breaker.get_metrics().consecutive_failures, 1);

    let before = breaker.get_metrics();
    old_success.record(Outcome::Success);
    let after = breaker.get_metrics();
    assert_eq!(after.successful_calls, before.successful_calls + 1);
    assert_eq!(
        after.consecutive_failures, 1,
        "an old success does not reset the current count"
    );

    old_failure.record(Outcome::Failure(FailureType::Error));
    let after = breaker.get_metrics();
    assert_eq!(after.failed_calls, before.failed_calls + 1);
    assert_eq!(
        after.consecutive_failures, 1,
        "an old failure does not add to the current count"
    );
    assert_eq!(after.current_state, CircuitState::Closed);
    assert_eq!(after.transitions, before.transitions);
}

/// Two probes reclaimed together each bring back a late result, counted
/// only as late, whatever each result is.
#[test]
fn two_reclaimed_probes_each_come_back_late() {
    let (breaker, clock) = breaker("mutants-two-late", 1, 2, 2);
    fail(&breaker);
    clock.advance(RECOVERY);
    let first = breaker.try_acquire().expect("first probe");
    let second = breaker.try_acquire().expect("second probe");
    assert!(first.is_probe() && second.is_probe());
    assert_eq!(breaker.get_metrics().probes_in_flight, 2);

    clock.advance(TIMEOUT);
    assert_eq!(
        refused_for(&breaker),
        Some(RECOVERY),
        "both reclaimed, reopened"
    );
    let reclaimed = breaker.get_metrics();
    assert_eq!(reclaimed.failures_by_type.timeout, 2);
    assert_eq!(reclaimed.probes_in_flight, 0);

    first.record(Outcome::Success);
    second.record(Outcome::Failure(FailureType::Error));
    let after = breaker.get_metrics();
    assert_eq!(after.late_results, 2, "each reclaimed probe is late once");
    assert_eq!(
        Metrics {
            late_results: 0,
            ..after
        },
        Metrics {
            late_results: 0,
            ..reclaimed
        },
        "late results count nowhere else"
    );
}

/// An open circuit refuses calls until exactly `recovery_timeout` has
/// passed, saying how long is left, and admits a probe at that instant.
#[test]
fn an_open_circuit_admits_a_probe_exactly_at_the_end_of_its_period() {
    let (breaker, clock) = breaker("mutants-open-end", 1, 1, 1);
    fail(&breaker);
    assert_eq!(refused_for(&breaker), Some(RECOVERY));
    clock.advance(RECOVERY - NANO);
    assert_eq!(refused_for(&breaker), Some(NANO));
    assert_eq!(breaker.get_metrics().open_remaining, Some(NANO));
    clock.advance(NANO);
    assert_eq!(refused_for(&breaker), None, "the probe is admitted");
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().rejected_calls, 2);
}

fn rate_limited(retry_after: Duration) -> Outcome {
    Outcome::DependencyRateLimited {
        retry_after: Some(retry_after),
    }
}

/// A retry-after that trips the circuit on its own opens it for exactly
/// that long, even when shorter than `recovery_timeout`; one that comes
/// with a trip by failures only ever lengthens the open period.
#[test]
fn a_retry_after_sets_the_open_period_alone_and_only_lengthens_it_otherwise() {
    let short = Duration::from_secs(3);
    let (alone, clock) = breaker("mutants-retry-alone", 5, 1, 1);
    alone.try_acquire().unwrap().record(rate_limited(short));
    assert_eq!(alone.detailed_state(), DetailedState::Open);
    assert_eq!(refused_for(&alone), Some(short));
    clock.advance(short);
    assert_eq!(refused_for(&alone), None, "open for the retry-after only");

    let (tripped, _clock) = breaker("mutants-retry-trip", 1, 1, 1);
    tripped.try_acquire().unwrap().record(rate_limited(short));
    assert_eq!(
        refused_for(&tripped),
        Some(RECOVERY),
        "a shorter retry-after does not shorten a trip"
    );
    let long = Duration::from_secs(40);
    let (tripped, _clock) = breaker("mutants-retry-trip-long", 1, 1, 1);
    tripped.try_acquire().unwrap().record(rate_limited(long));
    assert_eq!(
        refused_for(&tripped),
        Some(long),
        "a longer one lengthens it"
    );
}

/// A call admitted before the circuit opened and answered "rate limited"
/// after keeps the circuit open at least as long as it asks, never less.
#[test]
fn a_late_retry_after_extends_an_open_circuit_and_never_shortens_it() {
    let (breaker, clock) = breaker("mutants-retry-stale", 1, 1, 1);
    let early = breaker.try_acquire().expect("closed admits");
    let later = breaker.try_acquire().expect("closed admits");
    fail(&breaker);
    assert_eq!(refused_for(&breaker), Some(RECOVERY));

    clock.advance(Duration::from_secs(1));
    early.record(rate_limited(Duration::from_secs(60)));
    assert_eq!(refused_for(&breaker), Some(Duration::from_secs(60)));
    later.record(rate_limited(Duration::from_secs(5)));
    assert_eq!(
        refused_for(&breaker),
        Some(Duration::from_secs(60)),
        "a shorter retry-after leaves the longer period"
    );
    assert_eq!(breaker.get_metrics().transitions, 1, "no new transition");
}
