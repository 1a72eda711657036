//! The local rate limit: governor's GCRA, driven by the breaker's clock.
//!
//! GCRA keeps one atomic "theoretical arrival time" and updates it with a
//! compare-and-swap, so checking a permit takes no lock. The quota is
//! `rate_limit_per_minute` permits per minute, with a burst of
//! `rate_limit_burst` (by default the whole minute's worth): an idle limiter
//! admits that many calls at once, then one every `60 s / rate`.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};

use crate::clock::ClockHandle;

/// governor's view of the breaker's clock.
#[derive(Debug, Clone)]
pub(crate) struct LimiterClock(ClockHandle);

impl GovernorClock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.now())
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
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        let clock = LimiterClock(clock);
        Some(Self {
            gcra: Gcra::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Takes a permit, or says how long until the next one.
    #[inline]
    pub(crate) fn check(&self) -> Result<(), Duration> {
        self.gcra
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}
