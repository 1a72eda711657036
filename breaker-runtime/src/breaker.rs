//! [`CircuitBreaker`]: the handle users hold, its builder, manual control
//! and the low-level [`Permit`] API the call helpers are built on.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, ClockHandle, SystemClock};
use crate::config::{CircuitBreakerConfig, ConfigError};
use crate::core::{Admission, Admitted, Core, Transition};
use crate::counters::Count;
use crate::error::{BreakerError, FallbackReason, Outcome};
use crate::events::{self, EventKind};
use crate::fallback::{Asker, CacheShelf, CachedFallback};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimiter;
use crate::state::{CircuitState, DetailedState};

/// A named circuit breaker. Cheap to clone: clones share one breaker.
///
/// Create one with [`CircuitBreaker::new`] or [`CircuitBreaker::builder`]
/// for private use, or through [`registry()`](fn@crate::registry) to share it
/// by name (as `#[circuit_breaker]` does).
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
///
/// let config = CircuitBreakerConfig::builder().failure_threshold(2).build()?;
/// let breaker = CircuitBreaker::new("payments", config)?;
///
/// assert_eq!(breaker.call(|| Ok::<_, String>(42)), Ok(42));
/// for _ in 0..2 {
///     let _ = breaker.call(|| Err::<u32, _>("connection refused".to_owned()));
/// }
/// assert_eq!(breaker.state(), CircuitState::Open);
///
/// let rejected = breaker.call(|| Ok::<_, String>(42)).unwrap_err();
/// assert!(rejected.breaker_error().is_some(), "the call was not made");
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Shared with every status snapshot, which then copies no text.
    pub(crate) name: Arc<str>,
    pub(crate) config: CircuitBreakerConfig,
    pub(crate) core: Core,
    /// Boxed: most breakers have no rate limit, and the limiter is larger
    /// than the rest of the breaker's own fields together.
    pub(crate) limiter: Option<Box<RateLimiter>>,
    /// The workers this breaker's hard-deadline calls hold now.
    pub(crate) deadline_workers: crate::pool::Bulkhead,
    caches: CacheShelf,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name())
            .field("state", &self.detailed_state())
            .finish_non_exhaustive()
    }
}

/// Builds a [`CircuitBreaker`] with a configuration and a clock.
#[derive(Debug)]
#[must_use]
pub struct CircuitBreakerBuilder {
    name: String,
    config: CircuitBreakerConfig,
    clock: ClockHandle,
}

impl CircuitBreakerBuilder {
    /// Uses `config` (validated on [`build`](Self::build)).
    pub fn config(mut self, config: CircuitBreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// Reads time from `clock`, such as a [`ManualClock`](crate::ManualClock)
    /// in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    /// Reads time from a clock already wrapped (a family's, shared by its
    /// members).
    pub(crate) fn clock_handle(mut self, clock: ClockHandle) -> Self {
        self.clock = clock;
        self
    }

    /// The breaker.
    ///
    /// # Errors
    /// The configuration's first invalid field (see
    /// [`CircuitBreakerConfig::validate`]).
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        let clock = self.clock.ready();
        let limiter = self.config.rate_limit_per_minute.and_then(|per_minute| {
            RateLimiter::new(per_minute, self.config.rate_limit_burst, clock.clone()).map(Box::new)
        });
        Ok(CircuitBreaker {
            inner: Arc::new(Inner {
                core: Core::new(&self.config, clock),
                name: Arc::from(self.name),
                config: self.config,
                limiter,
                deadline_workers: crate::pool::Bulkhead::default(),
                caches: CacheShelf::default(),
            }),
        })
    }
}

impl CircuitBreaker {
    /// A breaker named `name` with `config`, on the system clock. It is not
    /// registered; see [`Registry::get_or_register`](crate::Registry::get_or_register)
    /// for shared breakers.
    ///
    /// # Errors
    /// The configuration's first invalid field.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::builder(name).config(config).build()
    }

    /// A builder for a breaker named `name`, starting from the default
    /// configuration and the system clock.
    pub fn builder(name: impl Into<String>) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            name: name.into(),
            config: CircuitBreakerConfig::default(),
            clock: ClockHandle::System,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// The classic state (forced states fold into open and closed).
    pub fn state(&self) -> CircuitState {
        self.inner.core.simple_state()
    }

    /// The state, telling forced states apart.
    pub fn detailed_state(&self) -> DetailedState {
        self.inner.core.state()
    }

    /// A snapshot of the metrics. Safe to call while calls run.
    pub fn get_metrics(&self) -> Metrics {
        self.metrics_at(&mut SystemNow::default())
    }

    /// [`get_metrics`](Self::get_metrics), reading the system clock through
    /// `system_now`, so a snapshot of many breakers reads it once.
    pub(crate) fn metrics_at(&self, system_now: &mut SystemNow) -> Metrics {
        let core = &self.inner.core;
        // The state first, then the counts: a call finishing in between is
        // then counted, never missing from counts its state change shows.
        let state = core.snapshot();
        let now = if core.clock.is_system() {
            system_now.get()
        } else {
            core.clock.now()
        };
        Metrics::new(core.counters.totals(), state, &core.telemetry, now)
    }

    /// Opens the circuit and keeps it open, with no automatic half-open,
    /// until [`reset`](Self::reset). For maintenance windows.
    pub fn force_open(&self) {
        self.force(DetailedState::ForcedOpen);
    }

    /// Disables the breaker: every call passes and is counted, and nothing
    /// moves the state until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.force(DetailedState::ForcedClosed);
    }

    /// Returns to a fresh closed circuit: failure counts, backoff and the
    /// window are cleared (lifetime metrics are kept).
    pub fn reset(&self) {
        self.force(DetailedState::Closed);
    }

    fn force(&self, to: DetailedState) {
        let transition = self.inner.core.force(to);
        self.emit_transition(transition);
    }

    /// Asks to make one call. The returned [`Permit`] must be told the
    /// outcome with [`Permit::record`]; dropping it unrecorded counts as a
    /// cancellation (or, during a panic, as a failure).
    ///
    /// This is the low-level API the call helpers use; prefer
    /// [`call`](Self::call) and its siblings.
    ///
    /// # Errors
    /// Why the call must not be made: open, forced open, half-open and full,
    /// or over the local rate limit.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, FailureType, Outcome};
    ///
    /// let breaker = CircuitBreaker::new("manual", CircuitBreakerConfig::default())?;
    /// let permit = breaker.try_acquire().expect("closed");
    /// permit.record(Outcome::Failure(FailureType::Custom));
    /// assert_eq!(breaker.get_metrics().failures_by_type.custom, 1);
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, BreakerError> {
        self.admit().map_err(|reason| self.reason_error(reason))
    }

    /// Admits a call or counts and reports its rejection.
    #[inline(always)]
    pub(crate) fn admit(&self) -> Result<Permit<'_>, FallbackReason> {
        let inner = &*self.inner;
        let admission = match inner.core.acquire() {
            Ok((admission, None)) => admission,
            acquired => self.admit_slow(acquired)?,
        };
        // Folded away on the closed path, where the admission is known.
        #[cfg(feature = "redis")]
        if let Admission::Probe { generation, ticket } = admission {
            self.fleet_lease(admission, generation, ticket)?;
        }
        self.within_rate_limit(admission)?;
        Ok(Permit::admitted(self, admission))
    }

    /// Takes a permit of the local rate limit, if there is one, for a call
    /// `admission` let through; or counts and reports the refusal.
    #[inline(always)]
    pub(crate) fn within_rate_limit(&self, admission: Admission) -> Result<(), FallbackReason> {
        match &self.inner.limiter {
            Some(limiter) => limiter.check().map_err(|refusal| {
                self.locally_rate_limited(admission, limiter.retry_after(refusal))
            }),
            None => Ok(()),
        }
    }

    /// Reports what an admission off the closed path brought: a transition,
    /// or a rejection.
    #[cold]
    #[inline(never)]
    fn admit_slow(
        &self,
        acquired: Result<Admitted, (FallbackReason, Option<Transition>)>,
    ) -> Result<Admission, FallbackReason> {
        match acquired {
            Ok((admission, transition)) => {
                self.emit_transition(transition);
                Ok(admission)
            }
            Err((reason, transition)) => {
                self.emit_transition(transition);
                events::emit(&self.inner.name, EventKind::Rejected { reason });
                Err(reason)
            }
        }
    }

    /// A probe asks the fleet for its lease; refused, it is given back and
    /// the call rejected as half-open and full.
    #[cfg(feature = "redis")]
    #[cold]
    #[inline(never)]
    fn fleet_lease(
        &self,
        admission: Admission,
        generation: u32,
        ticket: u32,
    ) -> Result<(), FallbackReason> {
        let Some(member) = self.inner.core.fleet.get() else {
            return Ok(());
        };
        if member.lease_probe(generation, ticket) {
            return Ok(());
        }
        // Another replica holds the fleet's probe slots.
        self.inner.core.release(admission);
        self.count(Count::RejectedHalfOpen);
        let reason = FallbackReason::HalfOpenFull;
        events::emit(&self.inner.name, EventKind::Rejected { reason });
        Err(reason)
    }

    /// Counts and reports a call the local rate limit refused: shared by
    /// every call site, off the hot path.
    #[cold]
    #[inline(never)]
    pub(crate) fn locally_rate_limited(
        &self,
        admission: Admission,
        retry_after: Duration,
    ) -> FallbackReason {
        let core = &self.inner.core;
        // Never made, so it moves nothing: give back a probe slot. A probe
        // reclaimed in the meantime was counted as a timeout already.
        if !core.release(admission) {
            core.counters.add(Count::LocalRateLimited, 1);
        }
        let reason = FallbackReason::LocalRateLimit { retry_after };
        events::emit(&self.inner.name, EventKind::Rejected { reason });
        reason
    }

    pub(crate) fn reason_error(&self, reason: FallbackReason) -> BreakerError {
        BreakerError::from_reason(
            &self.inner.name,
            reason,
            self.inner.config.half_open_max_calls,
        )
    }

    #[cold]
    pub(crate) fn emit_transition(&self, transition: Option<Transition>) {
        #[cfg(feature = "redis")]
        if let Some(member) = transition.and_then(|_| self.inner.core.fleet.get()) {
            let transition = transition.expect("checked");
            member.note_transition(transition.to, transition.cause);
        }
        self.emit_events(transition);
    }

    /// The events of a transition, whether made here or taken on from the
    /// fleet.
    #[cold]
    pub(crate) fn emit_events(&self, transition: Option<Transition>) {
        if let Some(Transition {
            from,
            to,
            cause,
            probes_timed_out,
        }) = transition
        {
            let after = self.inner.config.timeout_duration;
            for _ in 0..probes_timed_out {
                events::emit(&self.inner.name, EventKind::Timeout { after });
            }
            events::emit(&self.inner.name, EventKind::Transition { from, to, cause });
        }
    }

    #[inline]
    pub(crate) fn count(&self, count: Count) {
        self.inner.core.counters.add(count, 1);
    }

    /// The cache of the `#[circuit_breaker(fallback = cached)]` function
    /// whose site id is `site`, for keys `K` and values `V`, created on
    /// first use on the breaker's clock. Entries added here before traffic
    /// are served by that function, and by no other.
    ///
    /// A function's site id is its module path and its name,
    /// `concat!(module_path!(), "::user_name")` written next to it, such as
    /// `"my_app::users::user_name"`; a method's type is not part of it. `K`
    /// is the type of its `cache_key`, or else the tuple of its arguments as
    /// owned values (`(u32,)`, `(String, u32)`), and `V` is the `Ok` type.
    ///
    /// ```
    /// use breaker_runtime::{BreakerError, circuit_breaker, registry};
    /// # #[derive(Debug)] struct E(BreakerError);
    /// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
    ///
    /// #[circuit_breaker(name = "users-doc", fallback = cached)]
    /// fn user_name(id: u32) -> Result<String, E> {
    ///     Ok(format!("name-{id}"))
    /// }
    ///
    /// #[circuit_breaker(name = "users-doc", fallback = cached)]
    /// fn user_email(id: u32) -> Result<String, E> {
    ///     Ok(format!("email-{id}"))
    /// }
    ///
    /// let breaker = registry().get_or_register("users-doc", Default::default())?;
    /// breaker
    ///     .site_cache::<(u32,), String>(concat!(module_path!(), "::user_name"))
    ///     .add_to_cache((7,), "Ada".to_owned());
    /// breaker.force_open();
    /// assert_eq!(user_name(7).unwrap(), "Ada");
    /// assert!(user_email(7).is_err(), "the entry is user_name's alone");
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    ///
    /// If two annotated functions on one breaker have the same id (methods
    /// of the same name on two types in one module, say), the first one
    /// called owns the entries added by id; the other keeps a cache of its
    /// own, and a warning is logged.
    pub fn site_cache<K, V>(&self, site: &str) -> Arc<CachedFallback<K, V>>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
    {
        self.shelved_cache(Asker::ById(site))
    }

    /// The cache of the `fallback = cached` call site at address `site`,
    /// whose id is `id`: the one added by id if no other site claimed it.
    pub(crate) fn claim_site_cache<K, V>(&self, id: &str, site: usize) -> Arc<CachedFallback<K, V>>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
    {
        self.shelved_cache(Asker::Site { id, site })
    }

    /// A cache of this breaker for inputs `K` and results `V`, shared by
    /// every caller asking for the same types: for hand-written
    /// [`CallOptions::fallback_for`](crate::CallOptions::fallback_for)
    /// calls that want one.
    ///
    /// `#[circuit_breaker(fallback = cached)]` functions do not read it:
    /// two functions with the same types would serve each other's answers.
    /// Each has a cache of its own; see [`site_cache`](Self::site_cache).
    #[deprecated(
        since = "0.1.0",
        note = "`fallback = cached` no longer reads this cache shared by type: each function has its own; fill it with `site_cache`"
    )]
    pub fn cache<K, V>(&self) -> Arc<CachedFallback<K, V>>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
    {
        self.shelved_cache(Asker::Shared)
    }

    fn shelved_cache<K, V>(&self, asker: Asker<'_>) -> Arc<CachedFallback<K, V>>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
    {
        self.inner.caches.get(asker, || {
            CachedFallback::new().with_clock_handle(self.inner.core.clock.clone())
        })
    }

    /// The bytes one breaker occupies, excluding its name's text, its
    /// fallback caches and listeners.
    pub fn memory_size(&self) -> usize {
        let limiter = self
            .inner
            .limiter
            .as_ref()
            .map_or(0, |limiter| std::mem::size_of_val(&**limiter));
        std::mem::size_of::<Inner>()
            + self.inner.core.counters.memory_size()
            + self.inner.core.telemetry.memory_size()
            + limiter
    }

    /// Leaves the Redis fleet that shares this breaker, if any: a keyed
    /// family's member once the family lets it go, though a thread's cache
    /// or a handle may keep the breaker itself alive a while longer.
    #[cfg(feature = "redis")]
    pub(crate) fn leave_fleet(&self) {
        self.inner.core.fleet.release();
    }

    /// Whether `self` and `other` are handles to the same breaker.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Leave to make one call through a breaker, until its outcome is recorded.
///
/// # Cancel safety
/// Dropping a permit without recording settles it: as a cancellation,
/// which counts neither way and gives a half-open probe slot back, or, if
/// the thread is panicking, as an `Error` failure. So a cancelled future or
/// a panicking call never leaves the breaker stuck in half-open.
///
/// A permit taken with [`try_acquire`](CircuitBreaker::try_acquire) takes
/// a panic unwinding through it for its call's own: right for a call made
/// on the stack, between acquiring and recording. An async task that holds
/// one across an `.await` can be dropped while a *sibling* future in the
/// same `join!` or `select!` panics; such a drop would count as a failure.
/// Record [`Outcome::Ignored`] in that case, or use
/// [`call_async`](CircuitBreaker::call_async), whose permits tell the two
/// apart: a future dropped while another panics is a cancellation, and only
/// its own panic is a failure.
///
/// # Calls that never return
/// A half-open probe holds one of the `half_open_max_calls` slots. If it is
/// still unsettled `timeout_duration` after it was admitted, the next call
/// to arrive reclaims its slot: the probe counts as a
/// [`Timeout`](crate::FailureType::Timeout) failure (with a `Timeout`
/// event), and the circuit reopens
/// ([`TransitionCause::ProbeTimedOut`](crate::TransitionCause::ProbeTimedOut))
/// and probes again after `recovery_timeout`. Whatever the permit brings
/// later (a recorded outcome, a cancellation, a panic) is counted only in
/// [`Metrics::late_results`](crate::Metrics::late_results) and moves nothing.
///
/// A call admitted by a *closed* circuit holds no slot. If it never
/// returns, the circuit keeps working for every other call and nothing
/// waits for it; only its thread is lost to its caller, and the call is
/// counted (as a timeout, if it took longer than `timeout_duration`) only
/// when, and if, it returns. To get the caller back at the deadline, use
/// [`call_with_deadline`](CircuitBreaker::call_with_deadline) or an async
/// call.
#[must_use = "record the outcome, or the call counts as cancelled"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    admission: Admission,
    settled: bool,
    /// Whether a panic unwinding through the unsettled permit is its own
    /// call's: true while only the call's own code runs between admission
    /// and settlement (every sync call); false while an async call awaits,
    /// when the permit may be dropped by a sibling future's panic, until a
    /// poll of the call's own future unwinds and sets it again.
    owns_unwind: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name())
            .field("admission", &self.admission)
            .finish()
    }
}

impl<'a> Permit<'a> {
    #[inline(always)]
    pub(crate) fn admitted(breaker: &'a CircuitBreaker, admission: Admission) -> Self {
        Self {
            breaker,
            admission,
            settled: false,
            owns_unwind: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Marks whether a panic unwinding through the unsettled permit is its
    /// own call's (see the field). An async call clears it while it awaits
    /// and sets it again once only its own synchronous code runs; a poll of
    /// its future that unwinds sets it through [`owns_unwind`](Self::owns_unwind).
    #[inline(always)]
    pub(crate) fn set_owns_unwind(&self, owns: bool) {
        // Relaxed: read on this call's own thread of execution, by its drop.
        self.owns_unwind
            .store(owns, std::sync::atomic::Ordering::Relaxed);
    }

    /// The flag of [`set_owns_unwind`](Self::set_owns_unwind), for a poll
    /// guard to set while the call's own future unwinds.
    #[inline(always)]
    pub(crate) fn owns_unwind(&self) -> &std::sync::atomic::AtomicBool {
        &self.owns_unwind
    }

    /// A permit whose outcome the caller has counted itself (a closed
    /// circuit's success): dropped with nothing more to do.
    #[inline(always)]
    pub(crate) fn settled(self) {
        let _ = std::mem::ManuallyDrop::new(self);
    }

    /// The admission of a permit taken apart, to be made again with
    /// [`admitted`](Self::admitted): nothing is counted or given back.
    #[inline(always)]
    pub(crate) fn into_admission(self) -> Admission {
        std::mem::ManuallyDrop::new(self).admission
    }

    /// Tells the breaker how the call went.
    #[inline(always)]
    pub fn record(mut self, outcome: Outcome) {
        self.settled = true;
        let transition = self.breaker.inner.core.record(self.admission, outcome);
        if transition.is_some() {
            self.breaker.emit_transition(transition);
        }
    }

    /// Settles a permit whose call was refused after admission and never
    /// made: counts nothing (the caller counts the refusal) and gives a
    /// probe slot back.
    pub(crate) fn unmade(self) {
        let this = std::mem::ManuallyDrop::new(self);
        this.breaker.inner.core.release(this.admission);
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.admission, Admission::Probe { .. })
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.settled {
            self.abandon();
        }
    }
}

impl Permit<'_> {
    /// Settles a permit dropped unsettled: a panic or a cancellation. Out
    /// of line, so the unwinding path of every annotated function is a call.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        // Only a panic of this call's own code is its failure; a
        // future dropped by a sibling's panic was cancelled.
        let panicking =
            self.owns_unwind.load(std::sync::atomic::Ordering::Relaxed) && std::thread::panicking();
        let transition = self.breaker.inner.core.abandon(self.admission, panicking);
        self.breaker.emit_transition(transition);
    }
}

/// The system clock, read on first use and then remembered.
#[derive(Debug, Default)]
pub(crate) struct SystemNow(Option<u64>);

impl SystemNow {
    fn get(&mut self) -> u64 {
        *self.0.get_or_insert_with(|| SystemClock.now_nanos())
    }
}
