//! Where the engine's time comes from.
//!
//! Every decision that depends on time (when an open circuit may probe, how
//! long a call took, when a cached entry expires) reads one [`Clock`]. The
//! default is the monotonic system clock; tests, ours and users', inject a
//! [`ManualClock`] and advance it by hand, so state-machine tests never sleep.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, Ordering};

/// A source of monotonic time, in nanoseconds since a fixed origin.
///
/// Implement it to drive breakers from your own notion of time; most users
/// need only [`SystemClock`] (the default) or [`ManualClock`] (for tests).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since this clock's origin. Must never go backwards.
    fn now_nanos(&self) -> u64;
}

/// The process's monotonic clock ([`Instant`]), measured from the first
/// time any breaker read it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 {
        duration_nanos(ORIGIN.elapsed())
    }
}

/// A clock that moves only when told to, for deterministic tests.
///
/// Clones share one time, so a test keeps a clone and advances the breaker's
/// clock from outside.
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, CircuitState, ManualClock};
///
/// let clock = ManualClock::new();
/// let config = CircuitBreakerConfig::builder()
///     .failure_threshold(1)
///     .recovery_timeout(Duration::from_secs(10))
///     .build()?;
/// let breaker = CircuitBreaker::builder("db").config(config).clock(clock.clone()).build()?;
///
/// let _ = breaker.call(|| Err::<(), _>("down"));
/// assert_eq!(breaker.state(), CircuitState::Open);
///
/// clock.advance(Duration::from_secs(10));
/// let _ = breaker.call(|| Ok::<_, &str>(()));
/// assert_eq!(breaker.state(), CircuitState::HalfOpen);
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        // Relaxed: the clock is a lone counter; callers that need ordering
        // with other data synchronise through the breaker itself.
        self.nanos.fetch_add(duration_nanos(by), Ordering::Relaxed);
    }

    /// How far the clock has been advanced since its origin.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }
}

/// The clock a breaker holds: an enum rather than a trait object so the
/// system clock, the one on the hot path, is a direct call.
#[derive(Debug, Clone, Default)]
pub(crate) enum ClockHandle {
    #[default]
    System,
    Manual(ManualClock),
    Custom(Arc<dyn Clock>),
}

impl ClockHandle {
    /// Wraps `clock`, recognising the two clocks this crate ships so they
    /// are called directly.
    pub(crate) fn from_clock<C: Clock>(clock: C) -> Self {
        let any: &dyn std::any::Any = &clock;
        if any.is::<SystemClock>() {
            Self::System
        } else if let Some(manual) = any.downcast_ref::<ManualClock>() {
            Self::Manual(manual.clone())
        } else {
            Self::Custom(Arc::new(clock))
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Self::System => SystemClock.now_nanos(),
            Self::Manual(clock) => clock.now_nanos(),
            Self::Custom(clock) => clock.now_nanos(),
        }
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
