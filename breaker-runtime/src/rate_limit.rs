//! The local rate limit: governor's GCRA, driven by the breaker's clock.
//!
//! GCRA keeps one atomic "theoretical arrival time" and updates it with a
//! compare-and-swap, so checking a permit takes no lock. The quota is
//! `rate_limit_per_minute` permits per minute, with a burst of
//! `rate_limit_burst` (by default the whole minute's worth): an idle limiter
//! admits that many calls at once, then one every `60 s / rate`.
//!
//! On the system clock the limiter reads the coarse clock (10 ms steps, an
//! atomic load) instead of the monotonic clock (30 ns on a virtual machine)
//! whenever the burst holds at least one step's worth of permits, as the
//! default burst does. Time then advances in 10 ms jumps, and each jump's
//! permits fit in the bucket, so the rate over any longer period is exact.
//! A burst smaller than that would lose permits at each jump, so such a
//! limiter reads the precise clock.
//!
//! governor's arithmetic on nanoseconds does not saturate, so two extremes
//! are bounded here: the limiter's clock stops at [`CLOCK_CEILING`] (292
//! years after the clock's origin, which only a manual clock reaches), and
//! a burst is cut to what refills within [`BURST_HORIZON`] (146 years; a
//! burst of `u32::MAX` at one call a minute becomes 76 million calls).
//! Below both, every sum governor forms stays under `u64::MAX`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter as Gcra};

use crate::clock::{COARSE_TICK, ClockHandle, duration_nanos};

/// The latest time the limiter sees, in clock nanoseconds: see the module
/// docs.
const CLOCK_CEILING: u64 = u64::MAX / 2;

/// The longest a full bucket may take to refill, in nanoseconds: see the
/// module docs.
const BURST_HORIZON: u64 = u64::MAX / 4;

/// governor's view of the breaker's clock.
#[derive(Debug, Clone)]
pub(crate) struct LimiterClock {
    clock: ClockHandle,
    /// Read the coarse clock: see the module docs.
    coarse: bool,
}

impl GovernorClock for LimiterClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        let now = if self.coarse {
            self.clock.coarse_now()
        } else {
            self.clock.now()
        };
        Nanos::from(now.min(CLOCK_CEILING))
    }
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    gcra: Gcra<NotKeyed, InMemoryState, LimiterClock, NoOpMiddleware<Nanos>>,
    clock: LimiterClock,
}

impl RateLimiter {
    /// `None` when the limit is zero, which validation refuses beforehand.
    pub(crate) fn new(per_minute: u32, burst: Option<u32>, clock: ClockHandle) -> Option<Self> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(per_minute);
        let quota = Quota::per_minute(per_minute);
        let burst = burst.min(longest_burst(quota.replenish_interval()));
        let quota = quota.allow_burst(burst);
        let clock = LimiterClock {
            clock,
            coarse: bucket_spans_a_tick(per_minute, burst),
        };
        Some(Self {
            gcra: Gcra::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Whether this limiter reads the coarse clock.
    #[cfg(test)]
    fn is_coarse(&self) -> bool {
        self.clock.coarse
    }

    /// Takes a permit, or refuses. Only the GCRA step: how long until the
    /// next permit is worked out by [`retry_after`](Self::retry_after), off
    /// the hot path, so this stays small enough to inline into every call.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), Refusal> {
        self.gcra.check().map_err(Refusal)
    }

    /// How long until the next permit, for a call that `check` refused.
    #[cold]
    #[inline(never)]
    pub(crate) fn retry_after(&self, refusal: Refusal) -> Duration {
        refusal.0.wait_time_from(self.clock.now())
    }
}

/// A refusal of [`RateLimiter::check`]: [`RateLimiter::retry_after`] says
/// how long until the next permit.
#[derive(Debug)]
pub(crate) struct Refusal(NotUntil<Nanos>);

/// The largest burst that refills within [`BURST_HORIZON`] at one permit
/// per `interval`.
fn longest_burst(interval: Duration) -> NonZeroU32 {
    let permits = BURST_HORIZON / duration_nanos(interval).max(1);
    NonZeroU32::new(u32::try_from(permits).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

/// Whether a full bucket of `burst` permits refills in at least one coarse
/// tick: then a tick's permits always fit, and the coarse clock loses none.
fn bucket_spans_a_tick(per_minute: NonZeroU32, burst: NonZeroU32) -> bool {
    let refill_nanos = u128::from(duration_nanos(Duration::from_secs(60)))
        * u128::from(burst.get())
        / u128::from(per_minute.get());
    refill_nanos >= u128::from(duration_nanos(COARSE_TICK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: Option<u32>) -> RateLimiter {
        RateLimiter::new(per_minute, burst, ClockHandle::System).expect("a non-zero limit")
    }

    #[test]
    fn the_default_burst_always_reads_the_coarse_clock() {
        for per_minute in [1, 60, 6_000, 1_000_000, u32::MAX] {
            assert!(limiter(per_minute, None).is_coarse(), "{per_minute}/min");
        }
    }

    #[test]
    fn extreme_quotas_and_the_end_of_a_manual_clock_never_overflow() {
        use crate::ManualClock;
        for (per_minute, burst) in [
            (1, Some(u32::MAX)),
            (1, None),
            (u32::MAX, Some(1)),
            (u32::MAX, Some(u32::MAX)),
            (60, Some(u32::MAX)),
        ] {
            let clock = ManualClock::new();
            let handle = ClockHandle::from_clock(clock.clone());
            let limiter = RateLimiter::new(per_minute, burst, handle).expect("non-zero");
            assert!(limiter.check().is_ok(), "{per_minute}/min, burst {burst:?}");
            clock.advance(Duration::from_secs(u64::MAX / 2_000_000_000));
            let _ = limiter.check();
            clock.advance(Duration::MAX);
            for _ in 0..3 {
                let _ = limiter.check();
            }
        }
    }

    #[test]
    fn a_burst_is_cut_to_what_refills_within_the_horizon() {
        let one_a_minute = Duration::from_secs(60);
        assert_eq!(longest_burst(one_a_minute).get(), 76_861_433);
        assert_eq!(longest_burst(Duration::from_nanos(13)).get(), u32::MAX);
    }

    #[test]
    fn a_burst_that_refills_within_one_tick_reads_the_precise_clock() {
        // 6 000/min is one permit per 10 ms: a burst of 1 refills in
        // exactly one tick, so the coarse clock still loses nothing.
        assert!(limiter(6_000, Some(1)).is_coarse());
        // 60 000/min with a burst of 1 refills in 1 ms: a 10 ms jump of
        // the coarse clock would drop nine permits in ten.
        assert!(!limiter(60_000, Some(1)).is_coarse());
        assert!(!limiter(60_000, Some(9)).is_coarse());
        assert!(limiter(60_000, Some(10)).is_coarse());
    }
}
