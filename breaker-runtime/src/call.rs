//! Making calls through a breaker: [`CallOptions`] (fallback, quality,
//! classifier) and the three ways a call can run (sync, sync with a hard
//! deadline, async). All policy lives here, written once, generic over the
//! call's types; `#[circuit_breaker]` expands into calls to these methods.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::task::Poll;
use std::time::Duration;

use crate::breaker::{CircuitBreaker, Permit};
use crate::core::Admission;
use crate::counters::Count;
use crate::deadline::{self, Finished, under_deadline};
use crate::error::{
    BreakerError, CallError, FailureType, FallbackError, FallbackReason, Outcome, PanicPayload,
};
use crate::events::{self, EventKind};
use crate::fallback::{Fallback, with_reason};
use crate::pool::Refused;
use crate::rate_limit::{RateLimiter, Refusal};

/// A fallback for calls returning `Result<T, E>`: asked for a replacement
/// result when the call is rejected or fails.
///
/// Implemented for closures `Fn(&FallbackReason) -> Option<Result<T, E>>`,
/// for [`NoFallback`], and for a [`Fallback`] strategy bound to the call's
/// input by [`CallOptions::fallback_for`].
pub trait FallbackFor<T, E> {
    /// The replacement, or `None` to let the original error through.
    fn serve(&self, reason: &FallbackReason) -> Option<Result<T, E>>;

    /// Told of every good result.
    fn record_success(&self, _value: &T) {}
}

/// No fallback: rejections and failures reach the caller as errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFallback;

impl<T, E> FallbackFor<T, E> for NoFallback {
    fn serve(&self, _reason: &FallbackReason) -> Option<Result<T, E>> {
        None
    }
}

impl<T, E, F> FallbackFor<T, E> for F
where
    F: Fn(&FallbackReason) -> Option<Result<T, E>>,
{
    fn serve(&self, reason: &FallbackReason) -> Option<Result<T, E>> {
        self(reason)
    }
}

/// A [`Fallback`] strategy bound to one call's input.
#[derive(Debug)]
pub struct ForInput<'a, K: ?Sized, F> {
    input: &'a K,
    fallback: &'a F,
}

impl<T, E, K: ?Sized, F: Fallback<K, T>> FallbackFor<T, E> for ForInput<'_, K, F> {
    fn serve(&self, reason: &FallbackReason) -> Option<Result<T, E>> {
        self.fallback.fallback(self.input, reason).map(Ok)
    }

    fn record_success(&self, value: &T) {
        self.fallback.record_success(self.input, value);
    }
}

/// A fallback for async calls. Every [`FallbackFor`] is one (it answers at
/// once); [`AsyncFallback`] wraps a closure returning a future.
pub trait AsyncFallbackFor<T, E> {
    /// The future of the replacement result.
    type Future: Future<Output = Result<T, E>>;

    /// The replacement's future, or `None` to let the original error through.
    fn serve(&self, reason: &FallbackReason) -> Option<Self::Future>;

    /// Told of every good result.
    fn record_success(&self, _value: &T) {}
}

/// Every sync fallback answers an async call at once.
macro_rules! async_via_sync {
    ($($(#[$meta:meta])* impl [$($generics:tt)*] for $ty:ty;)*) => {$(
        $(#[$meta])*
        impl<$($generics)* T, E> AsyncFallbackFor<T, E> for $ty
        where
            $ty: FallbackFor<T, E>,
        {
            type Future = std::future::Ready<Result<T, E>>;

            fn serve(&self, reason: &FallbackReason) -> Option<Self::Future> {
                FallbackFor::serve(self, reason).map(std::future::ready)
            }

            fn record_success(&self, value: &T) {
                FallbackFor::record_success(self, value);
            }
        }
    )*};
}

async_via_sync! {
    impl [] for NoFallback;
    impl ['a, K: ?Sized, Fb,] for ForInput<'a, K, Fb>;
    impl [F: Fn(&FallbackReason) -> Option<Result<T, E>>,] for F;
}

/// An async fallback: a closure `Fn(&FallbackReason) -> Option<impl Future>`.
#[derive(Debug, Clone, Copy)]
pub struct AsyncFallback<F>(pub F);

impl<T, E, F, Fut> AsyncFallbackFor<T, E> for AsyncFallback<F>
where
    F: Fn(&FallbackReason) -> Option<Fut>,
    Fut: Future<Output = Result<T, E>>,
{
    type Future = Fut;

    fn serve(&self, reason: &FallbackReason) -> Option<Fut> {
        (self.0)(reason)
    }
}

/// Scores a good result in `[0, 1]`.
pub trait QualityFor<T> {
    /// The score, or `None` when quality is not judged.
    fn score(&self, value: &T) -> Option<f64>;
}

/// No quality judgement.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuality;

impl<T> QualityFor<T> for NoQuality {
    fn score(&self, _value: &T) -> Option<f64> {
        None
    }
}

impl<T, F: Fn(&T) -> f64> QualityFor<T> for F {
    fn score(&self, value: &T) -> Option<f64> {
        Some(self(value))
    }
}

/// Decides how a finished call counts.
pub trait Classify<T, E> {
    /// How `result` counts.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

/// `Ok` is a success, `Err` an [`Error`](FailureType::Error) failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<T, E> Classify<T, E> for DefaultClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure(FailureType::Error),
        }
    }
}

impl<T, E, F: Fn(&Result<T, E>) -> Outcome> Classify<T, E> for F {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// What to do around one call: its fallback, quality evaluator and
/// classifier. Built by chaining; every part is optional and statically
/// dispatched, so unused parts cost nothing.
///
/// ```
/// use breaker_runtime::{
///     CallOptions, CircuitBreaker, CircuitBreakerConfig, FailureType, Outcome, SimpleFallback,
/// };
///
/// let breaker = CircuitBreaker::new("options-doc", CircuitBreakerConfig::default())?;
/// let fallback = SimpleFallback::new("cached answer".to_owned());
/// let options = CallOptions::new()
///     .fallback_for(&fallback, &())
///     .quality(|answer: &String| if answer.len() < 5 { 0.1 } else { 0.9 })
///     .classify(|result: &Result<String, u16>| match result {
///         Ok(_) => Outcome::Success,
///         Err(400) => Outcome::Ignored,
///         Err(_) => Outcome::Failure(FailureType::Error),
///     });
///
/// // A low-quality answer is a failure, and the fallback serves.
/// let answer = breaker.call_with(&options, || Ok("meh".to_owned()));
/// assert_eq!(answer, Ok("cached answer".to_owned()));
/// assert_eq!(breaker.get_metrics().failures_by_type.quality_threshold, 1);
///
/// // An ignored error reaches the caller untouched and counts neither way.
/// assert_eq!(breaker.call_with(&options, || Err(400)).unwrap_err().into_inner(), Some(400));
/// assert_eq!(breaker.get_metrics().ignored_calls, 1);
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct CallOptions<Fb = NoFallback, Q = NoQuality, C = DefaultClassifier> {
    fallback: Fb,
    quality: Q,
    classify: C,
}

impl CallOptions {
    /// No fallback, no quality judgement, the default classifier.
    pub const fn new() -> Self {
        Self {
            fallback: NoFallback,
            quality: NoQuality,
            classify: DefaultClassifier,
        }
    }
}

impl<Fb, Q, C> CallOptions<Fb, Q, C> {
    /// Uses `fallback`: a [`FallbackFor`], such as a closure
    /// `|reason: &FallbackReason| Some(Ok(value))`, or an [`AsyncFallback`].
    pub fn fallback<F2>(self, fallback: F2) -> CallOptions<F2, Q, C> {
        CallOptions {
            fallback,
            quality: self.quality,
            classify: self.classify,
        }
    }

    /// Uses a [`Fallback`] strategy ([`SimpleFallback`](crate::SimpleFallback),
    /// [`CachedFallback`](crate::CachedFallback),
    /// [`DegradedServiceFallback`](crate::DegradedServiceFallback)) for a call
    /// whose input is `input`.
    pub fn fallback_for<'a, K: ?Sized, F>(
        self,
        fallback: &'a F,
        input: &'a K,
    ) -> CallOptions<ForInput<'a, K, F>, Q, C> {
        self.fallback(ForInput { input, fallback })
    }

    /// Judges good results with `quality`, a `Fn(&T) -> f64`. A score below
    /// `quality_threshold`, above 1, or NaN is a
    /// [`QualityThreshold`](FailureType::QualityThreshold) failure.
    pub fn quality<Q2>(self, quality: Q2) -> CallOptions<Fb, Q2, C> {
        CallOptions {
            fallback: self.fallback,
            quality,
            classify: self.classify,
        }
    }

    /// Counts outcomes with `classify`, a `Fn(&Result<T, E>) -> Outcome`.
    pub fn classify<C2>(self, classify: C2) -> CallOptions<Fb, Q, C2> {
        CallOptions {
            fallback: self.fallback,
            quality: self.quality,
            classify,
        }
    }
}

/// What a finished (or refused) call resolves to before any fallback runs.
enum Verdict<T, E> {
    Return(Result<T, CallError<E>>),
    Fallback {
        reason: FallbackReason,
        /// What the caller gets if the fallback has nothing to serve;
        /// `None` for the breaker's own error for `reason`, built only then.
        otherwise: Option<Result<T, CallError<E>>>,
    },
}

/// A sync body that must move to a worker thread for a hard deadline.
#[diagnostic::on_unimplemented(
    message = "a call with a hard deadline must move to a worker thread, but `{Self}` cannot",
    label = "this call captures data that is not `Send + 'static`",
    note = "a sync function with `timeout_duration` runs on a worker thread so its caller can be released at the deadline",
    note = "take owned arguments (`String` rather than `&str`, no `&self`), or make the function `async fn`"
)]
pub trait DeadlineBody<R>: FnOnce() -> R + Send + 'static {}

impl<R, F: FnOnce() -> R + Send + 'static> DeadlineBody<R> for F {}

impl CircuitBreaker {
    /// Calls `f` through the breaker, with no fallback.
    ///
    /// A call that finishes after `timeout_duration` still returns its
    /// result but counts as a [`Timeout`](FailureType::Timeout) failure: a
    /// sync call cannot be interrupted. For a deadline that releases the
    /// caller, see [`call_with_deadline`](Self::call_with_deadline).
    ///
    /// # Errors
    /// [`CallError::Inner`] with `f`'s error, or [`CallError::Breaker`] when
    /// the breaker refused the call.
    ///
    /// # Panics
    /// Re-raises a panic of `f`, after counting it as a failure.
    #[inline]
    pub fn call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, CallError<E>> {
        self.call_with(&CallOptions::new(), f)
    }

    /// Calls `f`, serving `fallback()` in its place whenever the call is
    /// refused or fails. [`fallback_reason`](crate::fallback_reason) tells
    /// the fallback why.
    ///
    /// # Errors
    /// The call's own error when it was ignored by classification, or
    /// [`BreakerError::FallbackFailed`] when `fallback` panicked; its
    /// [`take_panic_payload`](BreakerError::take_panic_payload) gives the
    /// panic's payload.
    pub fn call_with_fallback<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
        fallback: impl Fn() -> T,
    ) -> Result<T, CallError<E>> {
        let fallback = |_: &FallbackReason| Some(Ok(fallback()));
        self.call_with(&CallOptions::new().fallback(fallback), f)
    }

    /// Calls `f` through the breaker with `options`.
    ///
    /// # Errors
    /// As [`call`](Self::call); a fallback that has something to serve
    /// replaces the error. A fallback that returns an error gives
    /// [`BreakerFailure::FallbackFailed`](crate::BreakerFailure::FallbackFailed)
    /// (inside [`CallError::Breaker`]), with why it ran and its error; one
    /// that panics gives [`BreakerError::FallbackFailed`], with why it ran
    /// and the panic's payload.
    ///
    /// # Panics
    /// Re-raises a panic of `f`, after counting it as a failure.
    #[inline]
    pub fn call_with<T, E, Fb, Q, C>(
        &self,
        options: &CallOptions<Fb, Q, C>,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CallError<E>>
    where
        Fb: FallbackFor<T, E>,
        Q: QualityFor<T>,
        C: Classify<T, E>,
    {
        // Admission and the start of the timing are one shared call, and
        // so are the end of the timing and a closed circuit's success: each
        // annotated function inlines only its body, the judging of its
        // result, and the calls around them.
        let mut off_closed = None;
        let started = self.start_sync(&mut off_closed);
        if let Some(retry_after) = started.open() {
            return self.serve_open_rejection(retry_after, &options.fallback);
        }
        let admission = match off_closed {
            None => Admission::Closed(started.generation()),
            Some(OffClosed::Admitted(admission)) => admission,
            Some(OffClosed::Refused(reason)) => return self.refuse_sync(reason, &options.fallback),
        };
        // Held across the call so a panic counts as a failure.
        let permit = Permit::admitted(self, admission);
        // `f` appears once, so each annotated function compiles its body
        // once.
        let result = f();
        let assessed = self.assess(&result, options);
        let success = assessed.outcome == Outcome::Success;
        // Before the breaker counts it, as every success, late or not, is
        // (see `judge_slow`): a fallback that panics here fails the call.
        if success {
            if let Ok(value) = &result {
                FallbackFor::record_success(&options.fallback, value);
            }
        }
        match self.finish_sync(started, success) {
            SyncEnd::Recorded => {
                permit.settled();
                result.map_err(CallError::Inner)
            }
            SyncEnd::Unrecorded { late: false } if success => {
                record_probe_success(permit);
                result.map_err(CallError::Inner)
            }
            SyncEnd::Unrecorded { late } => {
                self.settle_sync(permit, result, assessed, late, options)
            }
        }
    }

    /// Admits a sync call and starts its timing: one shared call in each
    /// annotated function. A closed circuit takes no lock and runs the
    /// rate limit's GCRA step here; an open one answers with the time to
    /// wait; only half-open goes through `admit`. A refusal of the rate
    /// limit is counted here. What a closed or open circuit says comes back
    /// in two words; the rest in `off_closed`.
    #[inline(never)]
    fn start_sync(&self, off_closed: &mut Option<OffClosed>) -> Started {
        let inner = &*self.inner;
        let head = if let Some(generation) = inner.core.closed_generation() {
            if let Some(limiter) = &inner.limiter {
                if let Err(refusal) = limiter.check() {
                    let reason = self.closed_call_rate_limited(generation, limiter, refusal);
                    *off_closed = Some(OffClosed::Refused(reason));
                    return Started::REFUSED;
                }
            }
            u64::from(generation)
        } else if let Some(retry_after) = inner.core.open_wait() {
            return Started::open_for(retry_after);
        } else {
            match self.admit_off_closed() {
                Ok(permit) => *off_closed = Some(OffClosed::Admitted(permit.into_admission())),
                Err(reason) => {
                    *off_closed = Some(OffClosed::Refused(reason));
                    return Started::REFUSED;
                }
            }
            Started::OFF_CLOSED
        };
        Started::timed(head, self.start_timing())
    }

    /// Ends the timing of a sync call; for a `success` of a closed circuit
    /// on time, records it. One shared call in each annotated function.
    #[inline(never)]
    fn finish_sync(&self, started: Started, success: bool) -> SyncEnd {
        let late = self.finish_timing(started.timing());
        if success && !late && started.head & Started::OFF_CLOSED == 0 {
            self.inner.core.record_closed_success(started.generation());
            return SyncEnd::Recorded;
        }
        SyncEnd::Unrecorded { late }
    }

    /// Calls `f` on a worker thread and releases the caller at
    /// `timeout_duration`. A result that arrives later is discarded and
    /// counted in [`Metrics::late_results`](crate::Metrics::late_results).
    ///
    /// The caller waits at most `timeout_duration` plus the time to start a
    /// thread. A worker still running at the deadline is left to finish, and
    /// holds its place in two bulkheads until it does: the breaker's
    /// [`max_deadline_workers`](crate::CircuitBreakerConfig::max_deadline_workers)
    /// and the pool's [`deadline_worker_limit`](crate::deadline_worker_limit).
    /// A call that finds either full, or for which no thread can be started,
    /// is refused at once, never run, and counted as rejected; its fallback
    /// serves. A `timeout_duration` too long to represent (such as
    /// `Duration::MAX`) means no deadline.
    ///
    /// # Errors
    /// As [`call_with`](Self::call_with), plus [`BreakerError::Timeout`]
    /// when the deadline passes, and [`BreakerError::BulkheadFull`] or
    /// [`BreakerError::WorkerUnavailable`] when the call was refused, if no
    /// fallback serves.
    ///
    /// # Panics
    /// Re-raises a panic of `f`, after counting it as a failure.
    pub fn call_with_deadline<T, E, Fb, Q, C>(
        &self,
        options: &CallOptions<Fb, Q, C>,
        f: impl DeadlineBody<Result<T, E>>,
    ) -> Result<T, CallError<E>>
    where
        T: Send + 'static,
        E: Send + 'static,
        Fb: FallbackFor<T, E>,
        Q: QualityFor<T>,
        C: Classify<T, E>,
    {
        let verdict = match self.admit() {
            Err(reason) => self.rejected(reason),
            Ok(permit) => self.run_on_worker(permit, options, f),
        };
        self.resolve_sync(verdict, &options.fallback)
    }

    /// The workers this breaker's hard-deadline calls hold now. For tests.
    #[doc(hidden)]
    pub fn __deadline_workers_held(&self) -> u32 {
        self.inner.deadline_workers.held()
    }

    fn run_on_worker<T, E, Fb, Q, C>(
        &self,
        permit: Permit<'_>,
        options: &CallOptions<Fb, Q, C>,
        f: impl DeadlineBody<Result<T, E>>,
    ) -> Verdict<T, E>
    where
        T: Send + 'static,
        E: Send + 'static,
        Q: QualityFor<T>,
        C: Classify<T, E>,
        Fb: FallbackFor<T, E>,
    {
        let timeout = self.inner.config.timeout_duration;
        let clock = &self.inner.core.clock;
        let start = clock.now();
        let handoff = match deadline::start_on_worker(&self.inner, f) {
            Ok(handoff) => handoff,
            Err(Refused::Full { limit }) => {
                return self.refused(permit, FallbackReason::BulkheadFull { limit }, None);
            }
            Err(Refused::Unavailable(cause)) => {
                let error = BreakerError::WorkerUnavailable {
                    name: self.name().to_owned(),
                    cause: cause.to_string(),
                };
                return self.refused(permit, FallbackReason::WorkerUnavailable, Some(error));
            }
        };
        match handoff.wait(timeout) {
            Some(Ok(result)) => {
                if self.inner.core.counters.sample_this_call() {
                    self.sample_response(clock.now().saturating_sub(start));
                }
                self.judge(permit, result, false, options, FallbackFor::record_success)
            }
            Some(Err(payload)) => self.rethrow(permit, payload),
            None => self.timed_out(permit, timeout),
        }
    }

    /// Awaits `fut` through the breaker, with no fallback, cancelling it at
    /// `timeout_duration`.
    ///
    /// # Errors
    /// As [`call`](Self::call), plus [`BreakerError::Timeout`] at the deadline.
    ///
    /// # Panics
    /// Inside a tokio runtime built without timers (no `enable_time`), once
    /// the call has to wait, as `tokio::time::timeout` does.
    ///
    /// # Cancel safety
    /// Dropping the returned future drops `fut` and counts the call as
    /// cancelled; a half-open probe slot it held is given back. That holds
    /// too when the drop comes from another future's panic (a sibling in
    /// `join!` or `select!`): only a panic of `fut` itself is a failure.
    pub fn call_async<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
    ) -> impl Future<Output = Result<T, CallError<E>>> {
        // Returned as is, not awaited in a wrapper: a wrapper future would
        // copy this one into its own state on every call.
        const NO_OPTIONS: CallOptions = CallOptions::new();
        self.call_async_with(&NO_OPTIONS, fut)
    }

    /// Awaits `fut` through the breaker with `options`, cancelling it at
    /// `timeout_duration` by dropping it under tokio's timer.
    ///
    /// Outside a tokio runtime with timers enabled, the deadline cannot be
    /// enforced: the call then runs to completion and a late one counts as a
    /// [`Timeout`](FailureType::Timeout) failure, as for sync calls.
    ///
    /// # Errors
    /// As [`call_with`](Self::call_with), plus [`BreakerError::Timeout`] at
    /// the deadline when no fallback serves.
    ///
    /// # Panics
    /// Re-raises a panic of `fut`, after counting it as a failure. Panics
    /// inside a tokio runtime built without timers, once the call has to
    /// wait, as `tokio::time::timeout` does.
    ///
    /// # Cancel safety
    /// As [`call_async`](Self::call_async).
    pub async fn call_async_with<T, E, Fb, Q, C>(
        &self,
        options: &CallOptions<Fb, Q, C>,
        fut: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CallError<E>>
    where
        Fb: AsyncFallbackFor<T, E>,
        Q: QualityFor<T>,
        C: Classify<T, E>,
    {
        let verdict = match self.admit() {
            Err(reason) => self.rejected(reason),
            Ok(permit) => {
                // While it awaits, the permit may be dropped by a sibling
                // future's panic: a cancellation. A panic of `fut`'s own
                // poll marks the permit on its way out, so the permit's drop
                // counts it as this call's failure, and the panic goes on.
                permit.set_owns_unwind(false);
                let timeout = self.inner.config.timeout_duration;
                let clock = &self.inner.core.clock;
                let sampled = self.inner.core.counters.sample_this_call();
                #[cfg(feature = "tokio")]
                let start = if sampled { clock.now() } else { 0 };
                let timeout_nanos = self.inner.core.timeout_nanos;
                let finished =
                    under_deadline(fut, timeout, timeout_nanos, clock, permit.owns_unwind()).await;
                // From here to settlement only this call's code runs.
                permit.set_owns_unwind(true);
                match finished {
                    #[cfg(feature = "tokio")]
                    Finished::OnTime(result) => {
                        if sampled {
                            self.sample_response(clock.now().saturating_sub(start));
                        }
                        self.judge(
                            permit,
                            result,
                            false,
                            options,
                            AsyncFallbackFor::record_success,
                        )
                    }
                    Finished::Unenforced(result, elapsed, late) => {
                        if sampled {
                            self.sample_response(elapsed);
                        }
                        self.judge(
                            permit,
                            result,
                            late,
                            options,
                            AsyncFallbackFor::record_success,
                        )
                    }
                    #[cfg(feature = "tokio")]
                    Finished::Late => self.timed_out(permit, timeout),
                }
            }
        };
        match verdict {
            Verdict::Return(result) => result,
            Verdict::Fallback { reason, otherwise } => {
                // Making the future runs the fallback's synchronous part, so
                // it too sees its reason and has its panics caught.
                let fallback = panic::catch_unwind(AssertUnwindSafe(|| {
                    with_reason(reason, || {
                        AsyncFallbackFor::serve(&options.fallback, &reason)
                    })
                }));
                match fallback {
                    Ok(None) => self.otherwise(reason, otherwise),
                    Ok(Some(fallback)) => {
                        let served = catch_unwind_future(reason, fallback).await;
                        self.settle_fallback(reason, served)
                    }
                    Err(payload) => self.settle_fallback(reason, Err(payload)),
                }
            }
        }
    }

    /// Counts a call whose own code panicked as an
    /// [`Error`](FailureType::Error) failure, and re-raises its panic with
    /// the original payload.
    #[cold]
    #[inline(never)]
    fn rethrow(&self, permit: Permit<'_>, payload: Box<dyn Any + Send>) -> ! {
        permit.record(Outcome::Failure(FailureType::Error));
        panic::resume_unwind(payload)
    }

    /// Counts and reports a closed-circuit call the local rate limit
    /// refused: out of line, and shared by every call site.
    #[cold]
    #[inline(never)]
    fn closed_call_rate_limited(
        &self,
        generation: u32,
        limiter: &RateLimiter,
        refusal: Refusal,
    ) -> FallbackReason {
        let retry_after = limiter.retry_after(refusal);
        self.locally_rate_limited(Admission::Closed(generation), retry_after)
    }

    /// Answers a sync call refused before it ran.
    #[cold]
    #[inline(never)]
    fn refuse_sync<T, E, Fb: FallbackFor<T, E>>(
        &self,
        reason: FallbackReason,
        fallback: &Fb,
    ) -> Result<T, CallError<E>> {
        self.resolve_sync(self.rejected(reason), fallback)
    }

    /// Counts a sync call that failed, was late, or scored low, and decides
    /// what its caller gets. Generic over the call's types, not its body, so
    /// functions of one signature share it.
    #[inline(never)]
    fn settle_sync<T, E, Fb, Q, C>(
        &self,
        permit: Permit<'_>,
        result: Result<T, E>,
        assessed: Assessed,
        late: bool,
        options: &CallOptions<Fb, Q, C>,
    ) -> Result<T, CallError<E>>
    where
        Fb: FallbackFor<T, E>,
    {
        // The caller has told the fallback of a success already.
        let verdict = self.judge_slow(permit, result, assessed, late, options, |_, _| {});
        self.resolve_sync(verdict, &options.fallback)
    }

    /// [`admit`](Self::admit) for a circuit that is neither closed nor
    /// open, out of line: rare, and not generic. (Made generic over the
    /// fallback to save each function a call, it slowed the closed path
    /// with a rate limit by a sixth: 0.33 to 0.39 of governor, paired.)
    #[cold]
    #[inline(never)]
    fn admit_off_closed(&self) -> Result<Permit<'_>, FallbackReason> {
        self.admit()
    }

    /// Starts timing a sync call; [`finish_timing`](Self::finish_timing)
    /// tells whether it ran past the deadline. Sampled calls
    /// read the real clock and feed the average response time; so do calls
    /// of a breaker whose timeout is short next to the coarse clock's tick.
    /// The others read the coarse clock, and confirm a "late" on the real
    /// one (see [`deadline`](crate::deadline) for the rule).
    #[inline(always)]
    fn start_timing(&self) -> Timing {
        let core = &self.inner.core;
        if core.counters.sample_this_call() {
            return self.start_precise(true);
        }
        if core.timeout_nanos < deadline::PRECISE_BELOW {
            return self.start_precise(false);
        }
        Timing::Coarse(core.clock.coarse_now())
    }

    /// Whether the call timed from `timing` ran past its deadline; a call
    /// of the sample also feeds the average response time.
    #[inline(always)]
    fn finish_timing(&self, timing: Timing) -> bool {
        let Timing::Coarse(start) = timing else {
            return self.finish_precise(timing);
        };
        let core = &self.inner.core;
        let elapsed = core.clock.coarse_now().saturating_sub(start);
        elapsed > core.timeout_nanos
            && deadline::confirm_late(&core.clock, start, core.timeout_nanos)
    }

    /// The start of a call timed on the real clock: a breaker with a short
    /// timeout, or a call of the timed sample.
    #[cold]
    #[inline(never)]
    fn start_precise(&self, sampled: bool) -> Timing {
        let start = self.inner.core.clock.now();
        if sampled {
            Timing::Sampled(start)
        } else {
            Timing::Precise(start)
        }
    }

    /// [`finish_timing`](Self::finish_timing) on the real clock: exact.
    #[cold]
    #[inline(never)]
    fn finish_precise(&self, timing: Timing) -> bool {
        let core = &self.inner.core;
        let (Timing::Precise(start) | Timing::Sampled(start) | Timing::Coarse(start)) = timing;
        let elapsed = core.clock.now().saturating_sub(start);
        if matches!(timing, Timing::Sampled(_)) {
            self.sample_response(elapsed);
        }
        elapsed > core.timeout_nanos
    }

    /// How `result` counts, lateness aside: the classifier's outcome, made
    /// a [`QualityThreshold`](FailureType::QualityThreshold) failure when a
    /// success scores low. The classifier and the evaluator each run once.
    #[inline(always)]
    fn assess<T, E, Fb, Q, C>(
        &self,
        result: &Result<T, E>,
        options: &CallOptions<Fb, Q, C>,
    ) -> Assessed
    where
        Q: QualityFor<T>,
        C: Classify<T, E>,
    {
        let outcome = options.classify.classify(result);
        if let (Outcome::Success, Ok(value)) = (outcome, result) {
            if let Some(score) = options.quality.score(value) {
                let threshold = self.inner.config.quality_threshold;
                // NaN fails both comparisons, so it is a failure too.
                if !(score >= threshold && score <= 1.0) {
                    return Assessed {
                        outcome: Outcome::Failure(FailureType::QualityThreshold),
                        low_score: Some((score, threshold)),
                    };
                }
            }
        }
        Assessed {
            outcome,
            low_score: None,
        }
    }

    fn otherwise<T, E>(
        &self,
        reason: FallbackReason,
        otherwise: Option<Result<T, CallError<E>>>,
    ) -> Result<T, CallError<E>> {
        otherwise.unwrap_or_else(|| Err(CallError::from(self.reason_error(reason))))
    }

    fn sample_response(&self, elapsed: u64) {
        let counters = &self.inner.core.counters;
        counters.add(Count::ResponseNanos, elapsed);
        counters.add(Count::ResponseSamples, 1);
        self.inner.core.telemetry.record_latency(elapsed);
    }

    /// Reports a call that finished past its deadline.
    #[cold]
    fn emit_late(&self) {
        events::emit(
            self.name(),
            EventKind::Timeout {
                after: self.inner.config.timeout_duration,
            },
        );
    }

    /// Refuses a call admitted but never made (a hard-deadline call with no
    /// worker): counts it as rejected and reports it. `error`, when given,
    /// is what the caller gets if the fallback has nothing to serve.
    #[cold]
    #[inline(never)]
    fn refused<T, E>(
        &self,
        permit: Permit<'_>,
        reason: FallbackReason,
        error: Option<BreakerError>,
    ) -> Verdict<T, E> {
        permit.unmade();
        // Counted with the half-open refusals: both are "every slot taken".
        self.count(Count::RejectedHalfOpen);
        events::emit(self.name(), EventKind::Rejected { reason });
        Verdict::Fallback {
            reason,
            otherwise: error.map(|error| Err(CallError::from(error))),
        }
    }

    #[cold]
    fn rejected<T, E>(&self, reason: FallbackReason) -> Verdict<T, E> {
        Verdict::Fallback {
            reason,
            otherwise: None,
        }
    }

    #[cold]
    fn timed_out<T, E>(&self, permit: Permit<'_>, after: Duration) -> Verdict<T, E> {
        permit.record(Outcome::Failure(FailureType::Timeout));
        events::emit(self.name(), EventKind::Timeout { after });
        let reason = FallbackReason::Timeout { after };
        Verdict::Fallback {
            reason,
            otherwise: None,
        }
    }

    /// Counts a finished call and decides what the caller gets.
    #[inline(always)]
    fn judge<T, E, Fb, Q, C>(
        &self,
        permit: Permit<'_>,
        result: Result<T, E>,
        late: bool,
        options: &CallOptions<Fb, Q, C>,
        record_success: impl FnOnce(&Fb, &T),
    ) -> Verdict<T, E>
    where
        Q: QualityFor<T>,
        C: Classify<T, E>,
    {
        let assessed = self.assess(&result, options);
        if !late && assessed.outcome == Outcome::Success {
            if let Ok(value) = &result {
                record_success(&options.fallback, value);
            }
            permit.record(Outcome::Success);
            return Verdict::Return(result.map_err(CallError::Inner));
        }
        self.judge_slow(permit, result, assessed, late, options, record_success)
    }

    /// The rest of [`judge`](Self::judge): failures, low quality, lateness.
    #[inline(never)]
    fn judge_slow<T, E, Fb, Q, C>(
        &self,
        permit: Permit<'_>,
        result: Result<T, E>,
        assessed: Assessed,
        late: bool,
        options: &CallOptions<Fb, Q, C>,
        record_success: impl FnOnce(&Fb, &T),
    ) -> Verdict<T, E> {
        let Assessed {
            mut outcome,
            low_score,
        } = assessed;
        if late && outcome == Outcome::Success {
            if let Ok(value) = &result {
                // Late but good: the fresh result is the best answer there
                // is. It counts as a timeout, and feeds the fallback.
                record_success(&options.fallback, value);
                permit.record(Outcome::Failure(FailureType::Timeout));
                self.emit_late();
                return Verdict::Return(result.map_err(CallError::Inner));
            }
        }
        if late && outcome != Outcome::Ignored {
            outcome = Outcome::Failure(FailureType::Timeout);
            self.emit_late();
        }
        if let (Outcome::Success, Ok(value)) = (outcome, &result) {
            record_success(&options.fallback, value);
        }
        permit.record(outcome);
        let failure_type = match outcome {
            Outcome::Success | Outcome::Ignored => {
                return Verdict::Return(result.map_err(CallError::Inner));
            }
            Outcome::Failure(failure_type) => failure_type,
            Outcome::DependencyRateLimited { .. } => FailureType::RateLimit,
        };
        if let Some((score, threshold)) = low_score {
            let reason = FallbackReason::LowQuality { score, threshold };
            return Verdict::Fallback {
                reason,
                otherwise: None,
            };
        }
        let reason = if late {
            FallbackReason::Timeout {
                after: self.inner.config.timeout_duration,
            }
        } else {
            FallbackReason::Failure { failure_type }
        };
        match result {
            // A late or misclassified `Ok` is still the call's own result:
            // nothing better exists unless a fallback has one.
            Ok(value) => Verdict::Fallback {
                reason,
                otherwise: Some(Ok(value)),
            },
            Err(error) => Verdict::Fallback {
                reason,
                otherwise: Some(Err(CallError::Inner(error))),
            },
        }
    }

    #[inline(never)]
    fn resolve_sync<T, E, Fb: FallbackFor<T, E>>(
        &self,
        verdict: Verdict<T, E>,
        fallback: &Fb,
    ) -> Result<T, CallError<E>> {
        match verdict {
            Verdict::Return(result) => result,
            Verdict::Fallback { reason, otherwise } => {
                let served = serve_sync(reason, fallback);
                self.settle_served(reason, otherwise, served)
            }
        }
    }

    /// Answers a call an open circuit refused with its fallback. A fallback
    /// that serves a value is counted with the rejection in one add.
    #[inline(never)]
    fn serve_open_rejection<T, E, Fb: FallbackFor<T, E>>(
        &self,
        retry_after: Duration,
        fallback: &Fb,
    ) -> Result<T, CallError<E>> {
        let reason = FallbackReason::Open { retry_after };
        let counters = &self.inner.core.counters;
        match serve_sync(reason, fallback) {
            Ok(Some(Ok(value))) => {
                counters.add(Count::OpenServed, 1);
                events::emit(self.name(), EventKind::Rejected { reason });
                events::emit(self.name(), EventKind::Fallback { reason });
                Ok(value)
            }
            served => {
                counters.add(Count::RejectedOpen, 1);
                events::emit(self.name(), EventKind::Rejected { reason });
                self.settle_served(reason, None, served)
            }
        }
    }

    /// Shapes what the caller gets from a fallback that ran (or had nothing
    /// to serve, `Ok(None)`), and counts it.
    fn settle_served<T, E>(
        &self,
        reason: FallbackReason,
        otherwise: Option<Result<T, CallError<E>>>,
        served: std::thread::Result<Option<Result<T, E>>>,
    ) -> Result<T, CallError<E>> {
        match served {
            Ok(None) => self.otherwise(reason, otherwise),
            Ok(Some(result)) => self.settle_fallback(reason, Ok(result)),
            Err(payload) => self.settle_fallback(reason, Err(payload)),
        }
    }

    /// Counts a fallback that ran and shapes what the caller gets.
    #[inline]
    fn settle_fallback<T, E>(
        &self,
        reason: FallbackReason,
        served: Result<Result<T, E>, Box<dyn Any + Send>>,
    ) -> Result<T, CallError<E>> {
        self.count(Count::Fallback);
        let payload = match served {
            Ok(Ok(value)) => {
                events::emit(self.name(), EventKind::Fallback { reason });
                return Ok(value);
            }
            Ok(Err(error)) => {
                self.count(Count::FallbackFailed);
                let cause = "the fallback returned an error".to_owned();
                events::emit(self.name(), EventKind::FallbackFailed { reason, cause });
                return Err(CallError::from(FallbackError { reason, error }));
            }
            Err(payload) => payload,
        };
        self.count(Count::FallbackFailed);
        let cause = format!("the fallback panicked: {}", panic_message(&*payload));
        events::emit(
            self.name(),
            EventKind::FallbackFailed {
                reason,
                cause: cause.clone(),
            },
        );
        Err(CallError::from(BreakerError::FallbackFailed {
            name: self.name().to_owned(),
            reason,
            cause,
            panic: PanicPayload::new(payload),
        }))
    }
}

/// Records a good half-open probe (or a call admitted as the circuit
/// closed), out of line: rare, and not generic.
#[cold]
#[inline(never)]
fn record_probe_success(permit: Permit<'_>) {
    permit.record(Outcome::Success);
}

/// How a sync call started, in two words so that it comes back in
/// registers (see [`CircuitBreaker::start_sync`]): a struct holding the
/// 12-byte admission, copied through memory into the permit, made the
/// closed path twice as slow as the call itself.
#[derive(Debug, Clone, Copy)]
struct Started {
    /// Bits 0..32: a closed circuit's generation. Bit 32: admitted off a
    /// closed circuit (the admission is in `OffClosed`). Bit 33: refused
    /// by an open circuit. Bit 34: refused otherwise (the reason is in
    /// `OffClosed`). Bits 35..37: the timing's clock (see [`Timing`]).
    head: u64,
    /// The timing's start; for an open circuit, the nanoseconds to wait.
    start: u64,
}

impl Started {
    const GENERATION: u64 = 0xffff_ffff;
    const OFF_CLOSED: u64 = 1 << 32;
    const OPEN: u64 = 1 << 33;
    const REFUSED: Self = Self {
        head: 1 << 34,
        start: 0,
    };
    const CLOCK_SHIFT: u32 = 35;
    const PRECISE: u64 = 1 << Self::CLOCK_SHIFT;
    const SAMPLED: u64 = 2 << Self::CLOCK_SHIFT;

    #[inline(always)]
    fn timed(head: u64, timing: Timing) -> Self {
        let (clock, start) = match timing {
            Timing::Coarse(start) => (0, start),
            Timing::Precise(start) => (Self::PRECISE, start),
            Timing::Sampled(start) => (Self::SAMPLED, start),
        };
        Self {
            head: head | clock,
            start,
        }
    }

    #[inline(always)]
    fn open_for(retry_after: Duration) -> Self {
        Self {
            head: Self::OPEN,
            // Saturating: an open period of 584 years and more waits that long.
            start: u64::try_from(retry_after.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The time to wait, for a call an open circuit refused.
    #[inline(always)]
    fn open(self) -> Option<Duration> {
        (self.head & Self::OPEN != 0).then(|| Duration::from_nanos(self.start))
    }

    #[inline(always)]
    fn generation(self) -> u32 {
        (self.head & Self::GENERATION) as u32
    }

    #[inline(always)]
    fn timing(self) -> Timing {
        match self.head & (3 << Self::CLOCK_SHIFT) {
            0 => Timing::Coarse(self.start),
            Self::PRECISE => Timing::Precise(self.start),
            _ => Timing::Sampled(self.start),
        }
    }
}

/// What [`CircuitBreaker::start_sync`] reports out of line: the admission
/// of a call a half-open or forced circuit admitted, or why a call was
/// refused.
enum OffClosed {
    Admitted(Admission),
    Refused(FallbackReason),
}

/// How a sync call ends; see [`CircuitBreaker::finish_sync`].
enum SyncEnd {
    /// A closed circuit's success on time, counted.
    Recorded,
    /// Anything else, not counted yet; `late` if past the deadline.
    Unrecorded { late: bool },
}

/// When a sync call started, and on which clock; see
/// [`CircuitBreaker::start_timing`].
#[derive(Debug, Clone, Copy)]
enum Timing {
    /// On the coarse clock, a late reading confirmed on the real one.
    Coarse(u64),
    /// On the real clock: the breaker's timeout is short.
    Precise(u64),
    /// On the real clock, and fed to the average response time.
    Sampled(u64),
}

/// How a finished call counts before lateness; see
/// [`CircuitBreaker::assess`].
#[derive(Debug, Clone, Copy)]
struct Assessed {
    outcome: Outcome,
    /// The score and threshold of a success that scored too low.
    low_score: Option<(f64, f64)>,
}

/// Asks a sync fallback for its replacement, with its reason visible to
/// [`fallback_reason`](crate::fallback_reason), catching a panic.
#[inline(always)]
fn serve_sync<T, E, Fb: FallbackFor<T, E>>(
    reason: FallbackReason,
    fallback: &Fb,
) -> std::thread::Result<Option<Result<T, E>>> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        with_reason(reason, || fallback.serve(&reason))
    }))
}

/// Polls a fallback future with its reason visible to
/// [`fallback_reason`](crate::fallback_reason), catching a panic.
async fn catch_unwind_future<R>(
    reason: FallbackReason,
    fut: impl Future<Output = R>,
) -> Result<R, Box<dyn Any + Send>> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            with_reason(reason, || fut.as_mut().poll(cx))
        }));
        match polled {
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "a non-string panic payload"
    }
}

/// What the tower layer needs to fail fast in `poll_ready`: a look at the
/// state that counts nothing, and a refusal decided before the call.
#[cfg(feature = "tower")]
impl CircuitBreaker {
    /// The refusal every call would get now, whatever it is: forced open,
    /// or open with its period not yet over. `None` while a call could be
    /// admitted (closed, half-open, or open and due for a probe). Counts
    /// nothing.
    #[inline]
    pub(crate) fn refusal_now(&self) -> Option<FallbackReason> {
        match self.inner.core.state() {
            crate::DetailedState::ForcedOpen => Some(FallbackReason::ForcedOpen),
            crate::DetailedState::Open => self
                .inner
                .core
                .open_wait()
                .map(|retry_after| FallbackReason::Open { retry_after }),
            _ => None,
        }
    }

    /// Refuses a call for `reason` (found by [`refusal_now`]), counted and
    /// reported as a rejection of an open circuit, and served by `options`'
    /// fallback as [`call_async_with`](Self::call_async_with) would serve it.
    ///
    /// [`refusal_now`]: Self::refusal_now
    #[cold]
    pub(crate) async fn refuse_async_with<T, E, Fb, Q, C>(
        &self,
        options: &CallOptions<Fb, Q, C>,
        reason: FallbackReason,
    ) -> Result<T, CallError<E>>
    where
        Fb: AsyncFallbackFor<T, E>,
    {
        self.count(Count::RejectedOpen);
        events::emit(self.name(), EventKind::Rejected { reason });
        let fallback = panic::catch_unwind(AssertUnwindSafe(|| {
            with_reason(reason, || {
                AsyncFallbackFor::serve(&options.fallback, &reason)
            })
        }));
        match fallback {
            Ok(None) => Err(CallError::from(self.reason_error(reason))),
            Ok(Some(fallback)) => {
                let served = catch_unwind_future(reason, fallback).await;
                self.settle_fallback(reason, served)
            }
            Err(payload) => self.settle_fallback(reason, Err(payload)),
        }
    }
}
