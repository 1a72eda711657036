//! [`Metrics`]: one breaker's counts, rates and state, read while traffic
//! flows.

use std::time::Duration;

use serde::Serialize;

use crate::core::StateSnapshot;
use crate::counters::{Count, Totals};
use crate::error::FailureType;
use crate::state::{CircuitState, DetailedState};

/// A snapshot of one breaker's metrics, over its lifetime and (when a
/// failure-rate window is configured) over the sliding window.
///
/// Counts are exact: every call lands in exactly one of `successful_calls`,
/// `failed_calls`, `ignored_calls`, `cancelled_calls`, `rejected_calls` or
/// `local_rate_limited_calls`, and `total_calls` is their sum. Counts are read one
/// shard at a time, so a snapshot taken while calls run may be a few calls
/// apart between fields, never wrong once traffic stops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Every call that reached the breaker.
    pub total_calls: u64,
    /// Calls that ran and succeeded.
    pub successful_calls: u64,
    /// Calls that ran and failed, of any [`FailureType`].
    pub failed_calls: u64,
    /// `failed_calls` by type.
    pub failures_by_type: FailureCounts,
    /// Calls whose outcome the classifier ignored.
    pub ignored_calls: u64,
    /// Calls dropped before they finished (cancelled futures).
    pub cancelled_calls: u64,
    /// Calls refused because the circuit was open or half-open and full, or
    /// (hard-deadline calls) because no worker was free or could start.
    pub rejected_calls: u64,
    /// Calls refused by the local rate limit (never made).
    pub local_rate_limited_calls: u64,
    /// Calls a fallback answered.
    pub fallback_calls: u64,
    /// Fallbacks that themselves failed.
    pub fallback_failures: u64,
    /// Calls that ran past their deadline (also in `failures_by_type`).
    pub timeouts: u64,
    /// Results that arrived after their call was already counted as a
    /// timeout, and were discarded: those of hard-deadline calls that
    /// finished after the deadline, and those of half-open probes whose
    /// slot was reclaimed (see [`Permit`](crate::Permit)). They count in no
    /// other field.
    pub late_results: u64,
    /// `successful_calls / (successful_calls + failed_calls)`; 1 when no
    /// call has finished.
    pub success_rate: f64,
    /// Mean duration of the calls that ran, estimated from one call in 64
    /// of this breaker's per thread (starting with each thread's first), so
    /// the hot path reads the clock only for those.
    #[serde(serialize_with = "crate::config::secs")]
    pub average_response_time: Duration,
    /// The classic state.
    pub current_state: CircuitState,
    /// The state including the forced ones.
    pub detailed_state: DetailedState,
    /// Failures since the last success (closed state).
    pub consecutive_failures: u32,
    /// The most recent failure.
    pub last_failure: Option<LastFailure>,
    /// State changes since the breaker was created.
    pub transitions: u64,
    /// How long ago the last state change happened.
    #[serde(serialize_with = "opt_secs")]
    pub since_last_transition: Option<Duration>,
    /// While open: how long until the circuit admits a probe.
    #[serde(serialize_with = "opt_secs")]
    pub open_remaining: Option<Duration>,
    /// Half-open probes running now.
    pub probes_in_flight: u32,
    /// The sliding window, when `failure_rate_threshold` is set.
    pub window: Option<WindowMetrics>,
}

/// Failed calls, by [`FailureType`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct FailureCounts {
    pub timeout: u64,
    pub error: u64,
    pub rate_limit: u64,
    pub quality_threshold: u64,
    pub custom: u64,
}

impl FailureCounts {
    /// The count of one type.
    pub fn get(&self, failure_type: FailureType) -> u64 {
        match failure_type {
            FailureType::Timeout => self.timeout,
            FailureType::Error => self.error,
            FailureType::RateLimit => self.rate_limit,
            FailureType::QualityThreshold => self.quality_threshold,
            FailureType::Custom => self.custom,
        }
    }
}

/// The most recent failure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LastFailure {
    /// Its type.
    pub failure_type: FailureType,
    /// How long ago it happened.
    #[serde(serialize_with = "crate::config::secs")]
    pub age: Duration,
}

/// The failure-rate window's contents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowMetrics {
    /// Outcomes in the window.
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// `failures / calls`, 0 for an empty window.
    pub failure_rate: f64,
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Metrics {
    pub(crate) fn new(totals: Totals, state: StateSnapshot, now: u64) -> Self {
        let failures_by_type = FailureCounts {
            timeout: totals.failures(FailureType::Timeout),
            error: totals.failures(FailureType::Error),
            rate_limit: totals.failures(FailureType::RateLimit),
            quality_threshold: totals.failures(FailureType::QualityThreshold),
            custom: totals.failures(FailureType::Custom),
        };
        let successful_calls = totals.get(Count::Success);
        let failed_calls = totals.all_failures();
        let rejected_calls = totals.get(Count::RejectedOpen) + totals.get(Count::RejectedHalfOpen);
        let finished = successful_calls + failed_calls;
        let samples = totals.get(Count::ResponseSamples);
        let age = |at: u64| Duration::from_nanos(now.saturating_sub(at));
        Self {
            total_calls: finished
                + totals.get(Count::Ignored)
                + totals.get(Count::Cancelled)
                + rejected_calls
                + totals.get(Count::LocalRateLimited),
            successful_calls,
            failed_calls,
            failures_by_type,
            ignored_calls: totals.get(Count::Ignored),
            cancelled_calls: totals.get(Count::Cancelled),
            rejected_calls,
            local_rate_limited_calls: totals.get(Count::LocalRateLimited),
            fallback_calls: totals.get(Count::Fallback),
            fallback_failures: totals.get(Count::FallbackFailed),
            timeouts: failures_by_type.timeout,
            late_results: state.late_results,
            success_rate: if finished == 0 {
                1.0
            } else {
                successful_calls as f64 / finished as f64
            },
            average_response_time: Duration::from_nanos(
                totals
                    .get(Count::ResponseNanos)
                    .checked_div(samples)
                    .unwrap_or(0),
            ),
            current_state: state.state.simple(),
            detailed_state: state.state,
            consecutive_failures: state.consecutive_failures,
            last_failure: state.last_failure.map(|(failure_type, at)| LastFailure {
                failure_type,
                age: age(at),
            }),
            transitions: state.transitions,
            since_last_transition: state.last_transition_at.map(age),
            open_remaining: state
                .open_until
                .map(|until| Duration::from_nanos(until.saturating_sub(now))),
            probes_in_flight: state.probes_in_flight,
            window: state.window.map(|(calls, failures)| WindowMetrics {
                calls: calls as u64,
                failures: failures as u64,
                failure_rate: if calls == 0 {
                    0.0
                } else {
                    failures as f64 / calls as f64
                },
            }),
        }
    }
}
