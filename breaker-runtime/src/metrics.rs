//! [`Metrics`]: one breaker's counts, rates and state, read while traffic
//! flows.

use std::time::Duration;

use serde::Serialize;

use crate::core::StateSnapshot;
use crate::counters::{Count, Totals};
use crate::error::FailureType;
use crate::state::{CircuitState, DetailedState};
use crate::telemetry::{LATENCY_BOUNDS_NANOS, LATENCY_BUCKETS, LazyTelemetry};

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
    /// `rejected_calls` by reason.
    pub rejected_by_reason: RejectedCounts,
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
    /// The median of the sampled response times (see
    /// [`ResponseTimes::quantile`]); `None` before the first sample.
    #[serde(serialize_with = "opt_secs")]
    pub p50_response_time: Option<Duration>,
    /// The 99th percentile of the sampled response times.
    #[serde(serialize_with = "opt_secs")]
    pub p99_response_time: Option<Duration>,
    /// The sampled response times, bucketed: the same sample as
    /// `average_response_time`.
    pub response_times: ResponseTimes,
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
    /// `transitions` by the state they went to.
    pub transitions_to: TransitionCounts,
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

/// Refused calls, by why they were refused. Calls refused by the local
/// rate limit are counted apart, in
/// [`Metrics::local_rate_limited_calls`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RejectedCounts {
    /// The circuit was open or forced open.
    pub open: u64,
    /// Every slot was taken: the half-open probes, or (hard-deadline calls)
    /// the workers.
    pub full: u64,
}

/// State changes, by the state they went to.
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, DetailedState};
///
/// let breaker = CircuitBreaker::new("transitions-doc", CircuitBreakerConfig::default())?;
/// breaker.force_open();
/// breaker.reset();
/// let to = breaker.get_metrics().transitions_to;
/// assert_eq!(to.get(DetailedState::ForcedOpen), 1);
/// assert_eq!(to.get(DetailedState::Closed), 1);
/// assert_eq!(to.get(DetailedState::Open), 0);
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct TransitionCounts {
    pub closed: u64,
    pub open: u64,
    pub half_open: u64,
    pub forced_open: u64,
    pub forced_closed: u64,
}

impl TransitionCounts {
    /// The count of changes into `state`.
    pub fn get(&self, state: DetailedState) -> u64 {
        match state {
            DetailedState::Closed => self.closed,
            DetailedState::Open => self.open,
            DetailedState::HalfOpen => self.half_open,
            DetailedState::ForcedOpen => self.forced_open,
            DetailedState::ForcedClosed => self.forced_closed,
        }
    }

    fn from_array(counts: [u64; DetailedState::ALL.len()]) -> Self {
        let get = |state: DetailedState| counts[state.index()];
        Self {
            closed: get(DetailedState::Closed),
            open: get(DetailedState::Open),
            half_open: get(DetailedState::HalfOpen),
            forced_open: get(DetailedState::ForcedOpen),
            forced_closed: get(DetailedState::ForcedClosed),
        }
    }
}

/// A histogram of the sampled response times: the calls the breaker timed
/// (one in 64 of each breaker, per thread; see
/// [`Metrics::average_response_time`]), in fixed buckets of 1, 2.5 and 5
/// per decade from 1 µs to 100 s.
///
/// Quantiles are estimated the way Prometheus's `histogram_quantile` does:
/// by linear interpolation inside the bucket that holds the rank, so they
/// are exact to the bucket's width (at worst 2.5x between adjacent bounds).
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, ManualClock};
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder("latency-doc")
///     .config(CircuitBreakerConfig::default())
///     .clock(clock.clone())
///     .build()?;
/// // The first call of each thread is timed: it takes 3 ms.
/// breaker
///     .call(|| {
///         clock.advance(Duration::from_millis(3));
///         Ok::<_, String>(())
///     })
///     .expect("closed");
/// let times = breaker.get_metrics().response_times;
/// assert_eq!(times.count(), 1);
/// assert_eq!(times.sum(), Duration::from_millis(3));
/// // 3 ms falls in the bucket (2.5 ms, 5 ms].
/// let p50 = times.quantile(0.5).expect("one sample");
/// assert!(p50 > Duration::from_micros(2_500) && p50 <= Duration::from_millis(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ResponseTimes {
    /// Samples per bucket, not cumulative: bucket `i` holds those in
    /// `(bounds[i-1], bounds[i]]`, the last those above 100 s.
    counts: [u64; LATENCY_BUCKETS],
    #[serde(serialize_with = "crate::config::secs")]
    sum: Duration,
}

impl Default for ResponseTimes {
    fn default() -> Self {
        Self {
            counts: [0; LATENCY_BUCKETS],
            sum: Duration::ZERO,
        }
    }
}

impl ResponseTimes {
    /// The buckets' upper bounds, smallest first; the last bucket, above
    /// them all, has none (`+Inf`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::ResponseTimes;
    ///
    /// let bounds: Vec<Duration> = ResponseTimes::bounds().collect();
    /// assert_eq!(bounds.first(), Some(&Duration::from_micros(1)));
    /// assert_eq!(bounds.last(), Some(&Duration::from_secs(100)));
    /// ```
    pub fn bounds() -> impl ExactSizeIterator<Item = Duration> {
        LATENCY_BOUNDS_NANOS
            .iter()
            .map(|&n| Duration::from_nanos(n))
    }

    /// Each bucket's upper bound (`None` for the last, unbounded one) and
    /// the samples in it, not cumulative.
    pub fn buckets(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        Self::bounds()
            .map(Some)
            .chain([None])
            .zip(self.counts.iter().copied())
    }

    /// The number of samples.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of the sampled response times.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// The `q`-quantile (`0.5` for the median) of the samples; `None`
    /// without samples or for a `q` outside `[0, 1]`. A rank in the last,
    /// unbounded bucket reads as the largest bound, 100 s.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * count as f64;
        let mut below = 0u64;
        let mut lower = 0u64;
        for (i, &in_bucket) in self.counts.iter().enumerate() {
            let Some(&upper) = LATENCY_BOUNDS_NANOS.get(i) else {
                return Some(Duration::from_nanos(lower));
            };
            if in_bucket > 0 && (below + in_bucket) as f64 >= rank {
                let fraction = (rank - below as f64) / in_bucket as f64;
                let nanos = lower as f64 + (upper - lower) as f64 * fraction;
                return Some(Duration::from_nanos(nanos as u64));
            }
            below += in_bucket;
            lower = upper;
        }
        Some(Duration::from_nanos(lower))
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
    pub(crate) fn new(
        totals: Totals,
        state: StateSnapshot,
        telemetry: &LazyTelemetry,
        now: u64,
    ) -> Self {
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
        let response_times = ResponseTimes {
            counts: telemetry.latency_counts(),
            sum: Duration::from_nanos(totals.get(Count::ResponseNanos)),
        };
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
            rejected_by_reason: RejectedCounts {
                open: totals.get(Count::RejectedOpen),
                full: totals.get(Count::RejectedHalfOpen),
            },
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
            p50_response_time: response_times.quantile(0.5),
            p99_response_time: response_times.quantile(0.99),
            response_times,
            current_state: state.state.simple(),
            detailed_state: state.state,
            consecutive_failures: state.consecutive_failures,
            last_failure: state.last_failure.map(|(failure_type, at)| LastFailure {
                failure_type,
                age: age(at),
            }),
            transitions: state.transitions,
            transitions_to: TransitionCounts::from_array(telemetry.transitions_to()),
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
