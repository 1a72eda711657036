//! Where the engine's time comes from.
//!
//! Every decision that depends on time (when an open circuit may probe, how
//! long a call took, when a cached entry expires) reads one [`Clock`]. The
//! default is the monotonic system clock; tests, ours and users', inject a
//! [`ManualClock`] and advance it by hand, so state-machine tests never sleep.
//!
//! # The coarse clock, stalls and `fork()`
//!
//! On the system clock the hot path reads a *coarse* clock: a timestamp a
//! `breaker-clock` thread stores every 10 ms. Two things keep it honest
//! when that thread is missing or late:
//!
//! - **`fork()`** (unix): a forked child has only the thread that called
//!   `fork`, so the ticker is gone. A `pthread_atfork` child handler,
//!   registered when the ticker first starts, marks the coarse clock as
//!   "not started"; the child's next coarse read starts a new ticker. So in
//!   the child an open circuit still reaches half-open, the rate limiter
//!   refills, and soft deadlines fire. The handler only stores to atomics,
//!   which is async-signal-safe; starting the new ticker happens later, on
//!   an ordinary call.
//! - **A stalled ticker** (starved of CPU, or lost in a way no handler saw,
//!   such as a raw `clone` syscall): every precise read of the system clock
//!   (sampled calls, hard-deadline and async calls, transitions) compares
//!   the coarse clock with it. A lag of more than 5 ticks is bypassed: the
//!   coarse clock is brought up to the precise time at once. A lag of more
//!   than a second restarts the ticker (the old one, if it still lives,
//!   exits when it next wakes).
//!
//!   A bypass moves the coarse clock forward by the whole stall at once, so
//!   a call that was in flight during the stall may look as long as the
//!   stall on the coarse clock.
//!
//! What `fork()` does not make safe: a lock held by another thread of the
//! parent at the moment of the fork stays held forever in the child. That
//! is POSIX's rule for every multi-threaded program (after `fork` a child
//! may only call async-signal-safe functions until it `exec`s), and this
//! crate does not work around it: a breaker whose internal mutex, or whose
//! registry, another parent thread held while forking is unusable in the
//! child. Fork from a quiet moment, or `exec` in the child.
//! Likewise the counter lanes that the parent's other threads held stay
//! taken in the child, whose new threads may then count in the shared
//! shard (exactly, with atomic adds, only a little slower).

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
/// passed. `0` until the ticker starts (and again in a forked child);
/// `u64::MAX` if it could not.
static COARSE_NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Which ticker is the live one: a ticker exits once this moves past the
/// value it was started with.
static TICKER_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Set while a thread starts a ticker; the others read the precise clock
/// meanwhile. (Not a `Once`: a forked child must be able to start again.)
static TICKER_STARTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A coarse clock more than this far behind a precise read is brought up
/// to date on the spot: 5 ticks, which a running ticker does not miss.
const STALE_NANOS: u64 = 5 * COARSE_TICK.as_nanos() as u64;

/// A coarse clock this far behind a precise read has lost its ticker:
/// start another.
const LOST_NANOS: u64 = 1_000_000_000;

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

/// The precise system clock, also checking that the coarse one keeps up.
#[inline]
fn system_now() -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    let now = SystemClock.now_nanos();
    // Relaxed: see `coarse_system_now`.
    let coarse = COARSE_NOW.load(Relaxed);
    // A lag beyond 5 ticks; the marks (0, u64::MAX) are not a lag.
    if now.saturating_sub(coarse) > STALE_NANOS && coarse != 0 {
        coarse_lags(now, coarse);
    }
    now
}

/// The coarse clock read `coarse` when the precise one read `now`, more
/// than [`STALE_NANOS`] later: bypass the ticker by storing `now` (never
/// moving the clock back), and start a new ticker if this one is lost.
#[cold]
#[inline(never)]
fn coarse_lags(now: u64, coarse: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    COARSE_NOW.fetch_max(now, Relaxed);
    if now - coarse > LOST_NANOS {
        start_ticker(true);
    }
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
    start_ticker(false);
    SystemClock.now_nanos()
}

/// Starts a ticker: the first one, one in a forked child, or (`replace`) a
/// new one for a ticker that is lost. One thread at a time starts one; a
/// thread that finds another doing so returns at once.
fn start_ticker(replace: bool) {
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    // Acquire/Release: the previous starter's stores are seen by the next.
    if TICKER_STARTING
        .compare_exchange(false, true, Acquire, Relaxed)
        .is_err()
    {
        return;
    }
    if replace || COARSE_NOW.load(Relaxed) == 0 {
        #[cfg(unix)]
        restart_in_forked_children();
        // The old ticker, if it lives, stops storing.
        let generation = TICKER_GENERATION.fetch_add(1, Relaxed).wrapping_add(1);
        // Never 0 (the "not started" mark), even at the origin. The max,
        // not a store, so that an old ticker's last store or a bypass
        // never moves the clock back.
        let tick = || {
            COARSE_NOW.fetch_max(SystemClock.now_nanos().max(1), Relaxed);
        };
        tick();
        let spawned = std::thread::Builder::new()
            .name("breaker-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(COARSE_TICK);
                    // Relaxed: a lone counter.
                    if TICKER_GENERATION.load(Relaxed) != generation {
                        return;
                    }
                    tick();
                }
            });
        if spawned.is_err() {
            COARSE_NOW.store(u64::MAX, Relaxed);
        }
    }
    TICKER_STARTING.store(false, Release);
}

/// Registers, once per process, the `fork()` child handler that marks the
/// ticker as gone, so that the child's next coarse read starts its own.
/// Called with [`TICKER_STARTING`] held. A child inherits the registration.
#[cfg(unix)]
fn restart_in_forked_children() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    static REGISTERED: AtomicBool = AtomicBool::new(false);

    /// Runs in the child, right after `fork()`, on the only thread there:
    /// plain atomic stores only, which are async-signal-safe.
    extern "C" fn ticker_lost_in_child() {
        // Relaxed: the child has a single thread at this point.
        TICKER_GENERATION.fetch_add(1, Relaxed);
        TICKER_STARTING.store(false, Relaxed);
        COARSE_NOW.store(0, Relaxed);
    }

    if !REGISTERED.swap(true, Relaxed) {
        // SAFETY: registers a handler that only touches atomics; it never
        // unwinds. A failure (ENOMEM) leaves the stale-clock check, which
        // bypasses and then replaces a ticker lost in a child.
        unsafe {
            libc::pthread_atfork(None, None, Some(ticker_lost_in_child));
        }
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
    /// Boxed inside the `Arc`: a thin pointer keeps the handle (and so
    /// every breaker) 8 bytes smaller than a fat `Arc<dyn Clock>` would.
    Custom(Arc<Box<dyn Clock>>),
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
            Self::Custom(Arc::new(Box::new(clock)))
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
        // The ticking system clock first and inline: one load, and one
        // comparison that catches a ticker lost in a forked child (the
        // mark 0) or one that could not be restarted there (u64::MAX).
        // Everything else is one shared call, so the many inlined copies of
        // this read stay small.
        if let Self::Ticking = self {
            let now = COARSE_NOW.load(std::sync::atomic::Ordering::Relaxed);
            if now.wrapping_sub(1) < u64::MAX - 1 {
                return now;
            }
        }
        self.coarse_otherwise()
    }

    /// [`coarse_now`](Self::coarse_now) off its one-load path: a clock
    /// other than the ticking system one, or a coarse clock at a mark.
    #[cold]
    #[inline(never)]
    fn coarse_otherwise(&self) -> u64 {
        if self.is_system() {
            return coarse_system_now();
        }
        self.injected_now()
    }

    /// The precise time. On the system clock this also checks that the
    /// coarse clock keeps up (see the module docs): one more load.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        if self.is_system() {
            return system_now();
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Tests that move the process's coarse clock take turns.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The tests that store into the coarse clock take turns, each for its
    /// whole length: one's stale store must not land between another's
    /// precise read and its check of the coarse clock.
    fn my_turn() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the coarse clock look `lag` behind, as a stalled ticker would,
    /// then reads the precise clock; the precise time read, and the ticker
    /// generations before and after. The caller holds [`my_turn`].
    fn precise_read_with_a_coarse_lag_of(lag: Duration) -> (u64, u64, u64) {
        assert!(coarse_ticker_runs(), "the ticker starts");
        // The clock counts from the process's first read: let it get past
        // `lag` (a second at most, once per test binary).
        let lag = duration_nanos(lag);
        while SystemClock.now_nanos() <= lag + duration_nanos(COARSE_TICK) {
            std::thread::sleep(COARSE_TICK);
        }
        let generation = TICKER_GENERATION.load(Relaxed);
        let stale = SystemClock.now_nanos() - lag;
        COARSE_NOW.store(stale, Relaxed);
        let now = ClockHandle::System.ready().now();
        (now, generation, TICKER_GENERATION.load(Relaxed))
    }

    #[test]
    fn a_precise_read_brings_a_lagging_coarse_clock_up_to_date() {
        let _turn = my_turn();
        let lag = COARSE_TICK * 20;
        // Two things besides the code under test can move the coarse clock
        // here, so a try that met one of them does not count: the running
        // ticker may store a fresh time between the stale store and the
        // precise read (the read then sees no lag, and the coarse clock
        // stays a few microseconds behind it, rightly); and a loaded machine
        // may pause this thread for over a second there (the lag is then a
        // lost ticker's, and rightly starts a new one). Without the bypass,
        // no try finds the coarse clock up to date.
        let (_, before, after) = (0..20)
            .map(|_| {
                let started = std::time::Instant::now();
                let read = precise_read_with_a_coarse_lag_of(lag);
                (read, started.elapsed(), ClockHandle::Ticking.coarse_now())
            })
            .find(|((now, _, _), took, coarse)| {
                *took + lag < Duration::from_nanos(LOST_NANOS) && coarse >= now
            })
            .map(|(read, _, _)| read)
            .expect("in one of 20 tries, a precise read brought the coarse clock up to date");
        assert_eq!(before, after, "a lag under a second keeps the ticker");
    }

    #[test]
    fn a_precise_read_replaces_a_lost_ticker() {
        let _turn = my_turn();
        // The running ticker may store a fresh time between the test's stale
        // store and its precise read (a loaded machine can pause the test
        // thread for a tick): then there is no lag to see, so try again.
        let lag = Duration::from_nanos(LOST_NANOS) + COARSE_TICK * 5;
        let (now, before, after) = (0..20)
            .map(|_| precise_read_with_a_coarse_lag_of(lag))
            .find(|(_, before, after)| after != before)
            .expect("a new ticker started after a lag of over a second, in one of 20 tries");
        assert!(ClockHandle::Ticking.coarse_now() >= now);
        assert_eq!(
            after,
            before.wrapping_add(1),
            "exactly one new ticker started"
        );
        // The new ticker moves the clock on its own.
        let moved = ClockHandle::Ticking.coarse_now();
        std::thread::sleep(COARSE_TICK * 5);
        assert!(
            ClockHandle::Ticking.coarse_now() > moved,
            "the new ticker ticks"
        );
    }

    #[test]
    fn a_coarse_read_after_a_fork_starts_a_ticker_again() {
        let _turn = my_turn();
        assert!(coarse_ticker_runs());
        let generation = TICKER_GENERATION.load(Relaxed);
        // What the child handler does, without forking.
        COARSE_NOW.store(0, Relaxed);
        let now = ClockHandle::Ticking.coarse_now();
        assert_ne!(now, 0, "a coarse read never returns the mark");
        assert_ne!(COARSE_NOW.load(Relaxed), 0, "and it starts a ticker");
        assert_eq!(TICKER_GENERATION.load(Relaxed), generation.wrapping_add(1));
    }
}
