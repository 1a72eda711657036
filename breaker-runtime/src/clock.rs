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

/// How often the coarse system clock advances.
pub(crate) const COARSE_TICK: Duration = Duration::from_millis(10);

/// The system clock as last read by the ticker thread: a plain atomic load,
/// for the calls that only need to know whether a deadline of seconds has
/// passed. `0` until the ticker starts; `u64::MAX` if it could not.
static COARSE_NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The system clock to within [`COARSE_TICK`], without a clock read.
///
/// A clock read costs 30 ns on a virtual machine, more than the whole
/// closed-state call path otherwise does. A thread started on first use (a
/// breaker on the system clock starts it when it is built, see
/// [`ClockHandle::ready`]) stores the time every tick (100 wake-ups a
/// second); readers load it.
#[inline]
pub(crate) fn coarse_system_now() -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    // Relaxed: the value is a self-contained timestamp; nothing else is
    // published with it.
    let now = COARSE_NOW.load(Relaxed);
    // One comparison for both marks, 0 and u64::MAX.
    if now.wrapping_sub(1) >= u64::MAX - 1 {
        return coarse_unavailable(now);
    }
    now
}

/// Starts the coarse ticker if it has not started; whether it runs.
fn coarse_ticker_runs() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    coarse_system_now();
    // Relaxed: `start_coarse_ticker` stored the mark on this thread, or
    // under a `Once` this thread has waited for.
    COARSE_NOW.load(Relaxed) != u64::MAX
}

/// The coarse clock's marks: not started yet (0), or no ticker (u64::MAX).
#[cold]
#[inline(never)]
fn coarse_unavailable(mark: u64) -> u64 {
    if mark == 0 {
        start_coarse_ticker()
    } else {
        SystemClock.now_nanos()
    }
}

fn start_coarse_ticker() -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    static START: std::sync::Once = std::sync::Once::new();
    START.call_once(|| {
        // Never 0 (the "not started" mark), even at the origin.
        let tick = || SystemClock.now_nanos().max(1);
        COARSE_NOW.store(tick(), Relaxed);
        let spawned = std::thread::Builder::new()
            .name("breaker-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    COARSE_NOW.store(tick(), Relaxed);
                }
            });
        if spawned.is_err() {
            COARSE_NOW.store(u64::MAX, Relaxed);
        }
    });
    SystemClock.now_nanos()
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

    /// Moves the clock forward by `by`, stopping at its end (`u64::MAX`
    /// nanoseconds, about 584 years): it never wraps back to its origin.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::ManualClock;
    ///
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_secs(1));
    /// clock.advance(Duration::MAX);
    /// clock.advance(Duration::from_secs(1));
    /// assert_eq!(clock.elapsed(), Duration::from_nanos(u64::MAX));
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = duration_nanos(by);
        // Relaxed: the clock is a lone counter; callers that need ordering
        // with other data synchronise through the breaker itself.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_add(by))
            });
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
    /// The system clock; each coarse read checks that the ticker runs, and
    /// starts it the first time.
    #[default]
    System,
    /// The system clock, its ticker known to run: a coarse read is a plain
    /// load. Made by [`ready`](Self::ready).
    Ticking,
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

    /// This clock, ready for a breaker's hot path: the system clock starts
    /// its coarse ticker now, so that reading it needs no check. (If no
    /// thread can be started, every coarse read stays checked, and falls
    /// back to the precise clock.)
    pub(crate) fn ready(self) -> Self {
        match self {
            Self::System if coarse_ticker_runs() => Self::Ticking,
            other => other,
        }
    }

    /// Whether this is the system clock.
    pub(crate) fn is_system(&self) -> bool {
        matches!(self, Self::System | Self::Ticking)
    }

    /// The time to within [`COARSE_TICK`] for the system clock (exact for
    /// the others), for deadline checks on the hot path.
    #[inline]
    pub(crate) fn coarse_now(&self) -> u64 {
        // The ticking system clock first and inline: one load.
        if let Self::Ticking = self {
            // Relaxed: see `coarse_system_now`.
            return COARSE_NOW.load(std::sync::atomic::Ordering::Relaxed);
        }
        self.coarse_otherwise()
    }

    /// [`coarse_now`](Self::coarse_now) off its one-load path.
    #[inline(never)]
    fn coarse_otherwise(&self) -> u64 {
        if self.is_system() {
            return coarse_system_now();
        }
        self.injected_now()
    }

    #[inline]
    pub(crate) fn now(&self) -> u64 {
        if self.is_system() {
            return SystemClock.now_nanos();
        }
        self.injected_now()
    }

    /// The time of an injected clock, off the hot path of the system one.
    #[inline(never)]
    fn injected_now(&self) -> u64 {
        match self {
            Self::System | Self::Ticking => SystemClock.now_nanos(),
            Self::Manual(clock) => clock.now_nanos(),
            Self::Custom(clock) => clock.now_nanos(),
        }
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
