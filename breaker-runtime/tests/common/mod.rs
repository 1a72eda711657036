//! Fixtures shared by the runtime's test binaries. Each binary uses only
//! some of them.
#![allow(dead_code)]

use std::ops::AddAssign;
use std::time::Duration;

use breaker_runtime::{
    CircuitBreaker, CircuitBreakerConfig, CircuitState, FailureType, ManualClock, Metrics, Outcome,
};

/// The open period of [`single_probe_config`].
pub const RECOVERY: Duration = Duration::from_secs(10);
/// The call deadline of [`single_probe_config`].
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// One probe at a time, opened by one failure, as the agent's `llm`
/// breaker has.
pub fn single_probe_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .half_open_max_calls(1)
        .recovery_timeout(RECOVERY)
        .timeout_duration(TIMEOUT)
        .build()
        .unwrap()
}

/// A breaker with [`single_probe_config`] opened by one failure, now ready
/// to admit a probe.
pub fn ready_to_probe(name: &str) -> (CircuitBreaker, ManualClock) {
    let (breaker, clock) = manual_breaker(name, single_probe_config());
    breaker.call(|| Err::<(), _>("down")).unwrap_err();
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(RECOVERY);
    (breaker, clock)
}

/// A breaker named `name` on a fresh manual clock, and the clock. Under
/// loom, both must be made inside `loom::model`.
pub fn manual_breaker(name: &str, config: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(name)
        .config(config)
        .clock(clock.clone())
        .build()
        .expect("valid configuration");
    (breaker, clock)
}

/// What a test did to a breaker, call by call: what its metrics must say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub successes: u64,
    /// By [`FailureType`], in its declaration order.
    pub failures: [u64; 5],
    pub ignored: u64,
    pub cancelled: u64,
    pub rejected: u64,
    pub fallbacks: u64,
    /// Results of reclaimed half-open probes, counted only as late.
    pub late: u64,
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.successes += other.successes;
        for (mine, theirs) in self.failures.iter_mut().zip(other.failures) {
            *mine += theirs;
        }
        self.ignored += other.ignored;
        self.cancelled += other.cancelled;
        self.rejected += other.rejected;
        self.fallbacks += other.fallbacks;
        self.late += other.late;
    }
}

impl Tally {
    /// Every call, each counted once, in exactly one of the buckets.
    pub fn calls(&self) -> u64 {
        self.successes + self.failed() + self.ignored + self.cancelled + self.rejected
    }

    pub fn failed(&self) -> u64 {
        self.failures.iter().sum()
    }

    /// Counts a call that ran and counted as `outcome`.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.successes += 1,
            Outcome::Failure(failure_type) => self.fail(failure_type),
            Outcome::DependencyRateLimited { .. } => self.fail(FailureType::RateLimit),
            Outcome::Ignored => self.ignored += 1,
        }
    }

    pub fn fail(&mut self, failure_type: FailureType) {
        self.failures[failure_type as usize] += 1;
    }

    /// Asserts that `metrics` counted exactly this, with no local rate limit,
    /// no failing fallback and no hard deadline involved (late results come
    /// only from reclaimed probes).
    pub fn assert_matches(&self, metrics: &Metrics) {
        let by_type = &metrics.failures_by_type;
        assert_eq!(metrics.total_calls, self.calls(), "total_calls");
        assert_eq!(metrics.successful_calls, self.successes, "successful_calls");
        assert_eq!(
            [
                by_type.timeout,
                by_type.error,
                by_type.rate_limit,
                by_type.quality_threshold,
                by_type.custom,
            ],
            self.failures,
            "failures_by_type (timeout, error, rate_limit, quality_threshold, custom)"
        );
        assert_eq!(metrics.failed_calls, self.failed(), "failed_calls");
        assert_eq!(metrics.timeouts, by_type.timeout, "timeouts");
        assert_eq!(metrics.ignored_calls, self.ignored, "ignored_calls");
        assert_eq!(metrics.cancelled_calls, self.cancelled, "cancelled_calls");
        assert_eq!(metrics.rejected_calls, self.rejected, "rejected_calls");
        assert_eq!(metrics.fallback_calls, self.fallbacks, "fallback_calls");
        assert_eq!(metrics.local_rate_limited_calls, 0, "no local rate limit");
        assert_eq!(metrics.fallback_failures, 0, "the fallback never fails");
        assert_eq!(metrics.late_results, self.late, "late_results");
    }
}
