//! [`CircuitBreakerConfig`]: the knobs of one breaker, their defaults, and
//! their validation.

use std::time::Duration;

use serde::Serialize;

/// How a breaker decides to open, how long it stays open, and how it guards
/// each call. The defaults are the seed design's.
///
/// Every field is either checked by [`validate`](Self::validate) (which
/// names the field and its allowed range in a [`ConfigError`]) or has a
/// documented meaning at its extremes: a duration too long to represent in
/// the clock's nanoseconds (about 584 years, such as [`Duration::MAX`])
/// means "no limit", and every deadline computed from one saturates rather
/// than overflowing.
///
/// Build one with [`CircuitBreakerConfig::builder`], which validates, or
/// start from [`Default`] and call [`validate`](Self::validate).
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig::builder()
///     .failure_threshold(3)
///     .recovery_timeout(Duration::from_secs(5))
///     .rate_limit_per_minute(120)
///     .build()?;
/// assert_eq!(config.success_threshold, 3);
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a closed circuit (default 5, at least 1).
    /// A success resets the count.
    pub failure_threshold: u32,
    /// How long an open circuit waits before admitting probes (default 60 s,
    /// longer than zero). [`Duration::MAX`] means no limit: the circuit
    /// stays open until [`reset`](crate::CircuitBreaker::reset).
    #[serde(serialize_with = "secs")]
    pub recovery_timeout: Duration,
    /// Probe successes that close a half-open circuit (default 3, at least 1).
    pub success_threshold: u32,
    /// The deadline of one call (default 30 s, longer than zero). See the
    /// crate docs for how sync and async calls honour it. A half-open probe
    /// still running after this long gives its slot back and counts as a
    /// timeout (see [`TransitionCause::ProbeTimedOut`](crate::TransitionCause::ProbeTimedOut)).
    /// [`Duration::MAX`] means no limit: no call is ever late.
    #[serde(serialize_with = "secs")]
    pub timeout_duration: Duration,
    /// The most worker threads this breaker's hard-deadline calls may hold
    /// at once, running or hung (default 32, at least 1). A worker is held
    /// until its call really returns, not just until its caller gives up at
    /// the deadline. A call past the bound is refused at once with
    /// [`BreakerError::BulkheadFull`](crate::BreakerError::BulkheadFull).
    /// The pool's threads over all breakers are bounded too; see
    /// [`set_deadline_worker_limit`](crate::set_deadline_worker_limit).
    pub max_deadline_workers: u32,
    /// The lowest acceptable quality score, in `[0, 1]` (default 0.7).
    pub quality_threshold: f64,
    /// Calls admitted per minute, or `None` for no limit (the default).
    pub rate_limit_per_minute: Option<u32>,
    /// How many calls may arrive at once before the per-minute pace applies.
    /// `None` (the default) allows a burst of `rate_limit_per_minute`.
    pub rate_limit_burst: Option<u32>,
    /// Outcomes kept for the failure-rate window (default 100, at least 1).
    /// The window's memory grows with the outcomes it has seen, one byte
    /// each, up to this size.
    pub sliding_window_size: u32,
    /// Probes admitted at once while half-open (default 5, at least 1).
    pub half_open_max_calls: u32,
    /// Failure rate in `(0, 1]` over the sliding window that opens the
    /// circuit, or `None` (the default) to trip on consecutive failures only.
    pub failure_rate_threshold: Option<f64>,
    /// Calls the window must hold before the failure rate is judged
    /// (default 10, at least 1, at most `sliding_window_size`).
    pub minimum_calls: u32,
    /// Lengthens the open period on repeated trips; `None` (the default)
    /// keeps it at `recovery_timeout`.
    pub backoff: Option<Backoff>,
    /// The longest a dependency's retry-after
    /// ([`Outcome::DependencyRateLimited`](crate::Outcome::DependencyRateLimited)) may keep the
    /// circuit open (default 1 hour, longer than zero). A longer retry-after
    /// opens the circuit for this long; with [`backoff`](Self::backoff) set,
    /// `max_open_duration` caps it too, and the shorter cap wins.
    /// [`Duration::MAX`] means no cap of its own.
    #[serde(serialize_with = "secs")]
    pub max_retry_after: Duration,
}

/// Exponential growth of the open period: the `n`-th trip in a row (without
/// the circuit closing in between) stays open for
/// `recovery_timeout * multiplier^(n-1)`, capped at `max_open_duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Backoff {
    /// Growth factor per trip, finite and at least 1.
    pub multiplier: f64,
    /// The longest an automatic open period may last, and a cap on the
    /// open period a retry-after asks for. At least `recovery_timeout`;
    /// [`Duration::MAX`] means no cap.
    #[serde(serialize_with = "secs")]
    pub max_open_duration: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(60),
            success_threshold: 3,
            timeout_duration: Duration::from_secs(30),
            max_deadline_workers: 32,
            quality_threshold: 0.7,
            rate_limit_per_minute: None,
            rate_limit_burst: None,
            sliding_window_size: 100,
            half_open_max_calls: 5,
            failure_rate_threshold: None,
            minimum_calls: 10,
            backoff: None,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

/// The default [`CircuitBreakerConfig::max_retry_after`]: one hour.
const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// A configuration value outside what the breaker accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One field holds a value outside its allowed range.
    #[error("`{field}` is {value}, but it must be {allowed}")]
    OutOfRange {
        /// The field's name, as spelled in [`CircuitBreakerConfig`].
        field: &'static str,
        /// The refused value.
        value: String,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// `minimum_calls` asks for more calls than the window holds.
    #[error(
        "`minimum_calls` is {minimum_calls}, but it must be at most `sliding_window_size` ({sliding_window_size})"
    )]
    MinimumCallsExceedWindow {
        /// The refused `minimum_calls`.
        minimum_calls: u32,
        /// The window it must fit in.
        sliding_window_size: u32,
    },
    /// The backoff cap is shorter than the first open period.
    #[error(
        "`backoff.max_open_duration` is {max_open_duration:?}, but it must be at least `recovery_timeout` ({recovery_timeout:?})"
    )]
    BackoffCapBelowRecovery {
        /// The refused cap.
        max_open_duration: Duration,
        /// The first open period.
        recovery_timeout: Duration,
    },
}

impl CircuitBreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// The first field found outside its range, named, with the range.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreakerConfig, ConfigError};
    ///
    /// let config = CircuitBreakerConfig { quality_threshold: 1.5, ..Default::default() };
    /// let err = config.validate().unwrap_err();
    /// assert!(matches!(err, ConfigError::OutOfRange { field: "quality_threshold", .. }));
    /// assert_eq!(err.to_string(), "`quality_threshold` is 1.5, but it must be between 0 and 1");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least_one("failure_threshold", self.failure_threshold)?;
        at_least_one("success_threshold", self.success_threshold)?;
        at_least_one("sliding_window_size", self.sliding_window_size)?;
        at_least_one("half_open_max_calls", self.half_open_max_calls)?;
        at_least_one("minimum_calls", self.minimum_calls)?;
        positive_duration("recovery_timeout", self.recovery_timeout)?;
        positive_duration("timeout_duration", self.timeout_duration)?;
        positive_duration("max_retry_after", self.max_retry_after)?;
        at_least_one("max_deadline_workers", self.max_deadline_workers)?;
        if !(0.0..=1.0).contains(&self.quality_threshold) {
            return Err(out_of_range(
                "quality_threshold",
                self.quality_threshold,
                "between 0 and 1",
            ));
        }
        if let Some(limit) = self.rate_limit_per_minute {
            at_least_one("rate_limit_per_minute", limit)?;
        }
        if let Some(burst) = self.rate_limit_burst {
            at_least_one("rate_limit_burst", burst)?;
        }
        if let Some(rate) = self.failure_rate_threshold {
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(out_of_range(
                    "failure_rate_threshold",
                    rate,
                    "greater than 0 and at most 1",
                ));
            }
        }
        if self.minimum_calls > self.sliding_window_size {
            return Err(ConfigError::MinimumCallsExceedWindow {
                minimum_calls: self.minimum_calls,
                sliding_window_size: self.sliding_window_size,
            });
        }
        if let Some(backoff) = self.backoff {
            if !(backoff.multiplier.is_finite() && backoff.multiplier >= 1.0) {
                return Err(out_of_range(
                    "backoff.multiplier",
                    backoff.multiplier,
                    "a finite number of at least 1",
                ));
            }
            if backoff.max_open_duration < self.recovery_timeout {
                return Err(ConfigError::BackoffCapBelowRecovery {
                    max_open_duration: backoff.max_open_duration,
                    recovery_timeout: self.recovery_timeout,
                });
            }
        }
        Ok(())
    }
}

fn out_of_range(
    field: &'static str,
    value: impl std::fmt::Debug,
    allowed: &'static str,
) -> ConfigError {
    ConfigError::OutOfRange {
        field,
        value: format!("{value:?}"),
        allowed,
    }
}

fn at_least_one(field: &'static str, value: u32) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(out_of_range(field, value, "at least 1"));
    }
    Ok(())
}

fn positive_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(out_of_range(field, value, "longer than zero"));
    }
    Ok(())
}

/// Serialises a duration as fractional seconds, the unit the seed design
/// and the attribute use.
pub(crate) fn secs<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

/// Builds a [`CircuitBreakerConfig`], validating on [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty => $value:expr;)*) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, value: $ty) -> Self {
                self.config.$field = $value(value);
                self
            }
        )*
    };
}

impl CircuitBreakerConfigBuilder {
    setters! {
        /// Sets [`CircuitBreakerConfig::failure_threshold`].
        failure_threshold: u32 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::recovery_timeout`].
        recovery_timeout: Duration => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::success_threshold`].
        success_threshold: u32 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::timeout_duration`].
        timeout_duration: Duration => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::max_deadline_workers`].
        max_deadline_workers: u32 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::quality_threshold`].
        quality_threshold: f64 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::rate_limit_per_minute`].
        rate_limit_per_minute: u32 => Some;
        /// Sets [`CircuitBreakerConfig::rate_limit_burst`].
        rate_limit_burst: u32 => Some;
        /// Sets [`CircuitBreakerConfig::sliding_window_size`].
        sliding_window_size: u32 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::half_open_max_calls`].
        half_open_max_calls: u32 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::failure_rate_threshold`].
        failure_rate_threshold: f64 => Some;
        /// Sets [`CircuitBreakerConfig::minimum_calls`].
        minimum_calls: u32 => std::convert::identity;
        /// Sets [`CircuitBreakerConfig::backoff`].
        backoff: Backoff => Some;
        /// Sets [`CircuitBreakerConfig::max_retry_after`].
        max_retry_after: Duration => std::convert::identity;
    }

    /// The validated configuration.
    ///
    /// # Errors
    /// As [`CircuitBreakerConfig::validate`].
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(config: CircuitBreakerConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_the_seed_designs_and_valid() {
        let config = CircuitBreakerConfig::default();
        assert_eq!(config.failure_threshold, 5);
        assert_eq!(config.recovery_timeout, Duration::from_secs(60));
        assert_eq!(config.success_threshold, 3);
        assert_eq!(config.timeout_duration, Duration::from_secs(30));
        assert_eq!(config.quality_threshold, 0.7);
        assert_eq!(config.sliding_window_size, 100);
        assert_eq!(config.half_open_max_calls, 5);
        assert_eq!(config.rate_limit_per_minute, None);
        assert_eq!(config.max_retry_after, Duration::from_secs(3600));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn each_invalid_value_names_its_field_and_range() {
        let base = CircuitBreakerConfig::default;
        let cases = [
            (
                CircuitBreakerConfig {
                    failure_threshold: 0,
                    ..base()
                },
                "`failure_threshold` is 0, but it must be at least 1",
            ),
            (
                CircuitBreakerConfig {
                    success_threshold: 0,
                    ..base()
                },
                "`success_threshold` is 0, but it must be at least 1",
            ),
            (
                CircuitBreakerConfig {
                    half_open_max_calls: 0,
                    ..base()
                },
                "`half_open_max_calls` is 0, but it must be at least 1",
            ),
            (
                CircuitBreakerConfig {
                    recovery_timeout: Duration::ZERO,
                    ..base()
                },
                "`recovery_timeout` is 0ns, but it must be longer than zero",
            ),
            (
                CircuitBreakerConfig {
                    max_retry_after: Duration::ZERO,
                    ..base()
                },
                "`max_retry_after` is 0ns, but it must be longer than zero",
            ),
            (
                CircuitBreakerConfig {
                    quality_threshold: f64::NAN,
                    ..base()
                },
                "`quality_threshold` is NaN, but it must be between 0 and 1",
            ),
            (
                CircuitBreakerConfig {
                    quality_threshold: -0.1,
                    ..base()
                },
                "`quality_threshold` is -0.1, but it must be between 0 and 1",
            ),
            (
                CircuitBreakerConfig {
                    failure_rate_threshold: Some(0.0),
                    ..base()
                },
                "`failure_rate_threshold` is 0.0, but it must be greater than 0 and at most 1",
            ),
            (
                CircuitBreakerConfig {
                    rate_limit_per_minute: Some(0),
                    ..base()
                },
                "`rate_limit_per_minute` is 0, but it must be at least 1",
            ),
            (
                CircuitBreakerConfig {
                    minimum_calls: 101,
                    ..base()
                },
                "`minimum_calls` is 101, but it must be at most `sliding_window_size` (100)",
            ),
            (
                CircuitBreakerConfig {
                    backoff: Some(Backoff {
                        multiplier: f64::INFINITY,
                        max_open_duration: Duration::from_secs(600),
                    }),
                    ..base()
                },
                "`backoff.multiplier` is inf, but it must be a finite number of at least 1",
            ),
            (
                CircuitBreakerConfig {
                    backoff: Some(Backoff {
                        multiplier: 2.0,
                        max_open_duration: Duration::from_secs(1),
                    }),
                    ..base()
                },
                "`backoff.max_open_duration` is 1s, but it must be at least `recovery_timeout` (60s)",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(refused(config), message);
        }
    }

    #[test]
    fn builder_validates() {
        let err = CircuitBreakerConfig::builder()
            .timeout_duration(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::OutOfRange {
                field: "timeout_duration",
                ..
            }
        ));
    }
}
