//! Why a call did not produce its own result: [`FailureType`] for outcomes
//! the breaker counts, [`FallbackReason`] for what a fallback is told, and
//! [`BreakerError`] for what the caller gets when no fallback answers.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::config::ConfigError;

/// The kinds of failure a breaker counts, as in the seed design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureType {
    /// The call ran past `timeout_duration`.
    Timeout,
    /// The call returned an error (the default for every `Err`) or panicked.
    Error,
    /// The dependency refused the call as over *its* rate limit: HTTP 429
    /// ([`Outcome::DependencyRateLimited`]). Not the breaker's own limiter,
    /// whose refusals are not failures (see
    /// [`FallbackReason::LocalRateLimit`]).
    RateLimit,
    /// The call succeeded, but its result scored below `quality_threshold`.
    QualityThreshold,
    /// A failure the user's classifier named for its own reasons.
    Custom,
}

impl FailureType {
    /// Every failure type, in declaration order.
    pub const ALL: [FailureType; 5] = [
        Self::Timeout,
        Self::Error,
        Self::RateLimit,
        Self::QualityThreshold,
        Self::Custom,
    ];

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    /// The snake-case name used in status output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::RateLimit => "rate_limit",
            Self::QualityThreshold => "quality_threshold",
            Self::Custom => "custom",
        }
    }
}

impl fmt::Display for FailureType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a breaker should count one finished call. A classifier returns it;
/// without one, `Ok` is [`Success`](Outcome::Success) and `Err` is
/// [`Failure(Error)`](FailureType::Error).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The dependency is healthy.
    Success,
    /// The dependency failed in this way.
    Failure(FailureType),
    /// The dependency refused the call as over its rate limit (HTTP 429),
    /// counted as a [`RateLimit`](FailureType::RateLimit) failure. With
    /// `retry_after`, the circuit opens at once and stays open at least that
    /// long: this is how an HTTP 429 `Retry-After` is honoured.
    DependencyRateLimited {
        /// When the dependency said to come back, if it did.
        retry_after: Option<Duration>,
    },
    /// Counts neither way: the caller's own mistake (an HTTP 400) or a
    /// cancellation. The result still reaches the caller unchanged.
    Ignored,
}

/// Why a fallback is running instead of, or after, the protected call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FallbackReason {
    /// The circuit is open; `retry_after` is how long until it may probe.
    Open {
        /// Time until the circuit admits a probe.
        #[serde(serialize_with = "crate::config::secs")]
        retry_after: Duration,
    },
    /// The circuit was forced open and stays so until reset.
    ForcedOpen,
    /// The circuit is half-open and every probe slot is taken.
    HalfOpenFull,
    /// The breaker's own (local) rate limit refused the call; it was never
    /// made. Not the dependency's HTTP 429, which is a
    /// [`Failure`](Self::Failure) of type [`RateLimit`](FailureType::RateLimit).
    LocalRateLimit {
        /// Time until the next permit.
        #[serde(serialize_with = "crate::config::secs")]
        retry_after: Duration,
    },
    /// The call ran past its deadline.
    Timeout {
        /// The deadline it missed.
        #[serde(serialize_with = "crate::config::secs")]
        after: Duration,
    },
    /// The call failed in this way.
    Failure {
        /// How it failed.
        failure_type: FailureType,
    },
    /// The call's result scored below the quality threshold.
    LowQuality {
        /// The score (NaN and out-of-range scores are kept as given).
        score: f64,
        /// The threshold it missed.
        threshold: f64,
    },
    /// A hard-deadline call found every worker it may hold taken (by calls
    /// still running or hung); it was never made.
    BulkheadFull {
        /// The bound that was reached: the breaker's
        /// `max_deadline_workers`, or the pool's limit over all breakers.
        limit: u32,
    },
    /// A hard-deadline call found no idle worker and no thread could be
    /// started for it; it was never made.
    WorkerUnavailable,
}

impl FallbackReason {
    /// Whether the protected call never ran (the breaker rejected it).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Open { .. }
                | Self::ForcedOpen
                | Self::HalfOpenFull
                | Self::LocalRateLimit { .. }
                | Self::BulkheadFull { .. }
                | Self::WorkerUnavailable
        )
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { retry_after } => write!(f, "circuit open (retry in {retry_after:?})"),
            Self::ForcedOpen => f.write_str("circuit forced open"),
            Self::HalfOpenFull => f.write_str("circuit half-open and every probe slot is taken"),
            Self::LocalRateLimit { retry_after } => {
                write!(
                    f,
                    "rate limited by the local limiter (next permit in {retry_after:?})"
                )
            }
            Self::Timeout { after } => write!(f, "timed out after {after:?}"),
            Self::Failure {
                failure_type: FailureType::RateLimit,
            } => f.write_str("call failed (rate_limit): the dependency answered rate limited"),
            Self::Failure { failure_type } => write!(f, "call failed ({failure_type})"),
            Self::LowQuality { score, threshold } => {
                write!(f, "quality score {score} below threshold {threshold}")
            }
            Self::BulkheadFull { limit } => {
                write!(f, "all {limit} deadline workers are taken")
            }
            Self::WorkerUnavailable => f.write_str("no deadline worker thread could be started"),
        }
    }
}

/// Why a protected call produced no result of its own, when no fallback
/// answered in its place. Each variant names the breaker.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError {
    /// The circuit is open: the call was not made.
    #[error("circuit breaker `{name}` is open; retry in {retry_after:?}")]
    Open {
        /// The breaker's name.
        name: String,
        /// Time until the circuit admits a probe.
        retry_after: Duration,
    },
    /// The circuit was forced open by an operator: the call was not made.
    #[error("circuit breaker `{name}` is forced open until it is reset")]
    ForcedOpen {
        /// The breaker's name.
        name: String,
    },
    /// The circuit is half-open and all probe slots are taken.
    #[error("circuit breaker `{name}` is half-open and all {max_calls} probe slots are taken")]
    HalfOpenFull {
        /// The breaker's name.
        name: String,
        /// `half_open_max_calls`.
        max_calls: u32,
    },
    /// The call ran past `timeout_duration`.
    #[error("call through circuit breaker `{name}` timed out after {after:?}")]
    Timeout {
        /// The breaker's name.
        name: String,
        /// The deadline.
        after: Duration,
    },
    /// The breaker's own (local) rate limit refused the call: it was not
    /// made. (A dependency's HTTP 429 is a call failure, of type
    /// [`FailureType::RateLimit`].)
    #[error(
        "circuit breaker `{name}` is rate limited by the local limiter; next permit in {retry_after:?}"
    )]
    LocalRateLimit {
        /// The breaker's name.
        name: String,
        /// Time until the next permit.
        retry_after: Duration,
    },
    /// The call succeeded but its result scored below the threshold.
    #[error(
        "result of circuit breaker `{name}` scored {score}, below the quality threshold {threshold}"
    )]
    LowQuality {
        /// The breaker's name.
        name: String,
        /// The score.
        score: f64,
        /// `quality_threshold`.
        threshold: f64,
    },
    /// The fallback itself failed: it panicked (`panic` then holds the
    /// payload, see [`take_panic_payload`](Self::take_panic_payload)), or
    /// it had nothing to serve and the original error could not be
    /// returned. A fallback that returned an error gives
    /// [`BreakerFailure::FallbackFailed`] instead, with that error.
    #[error("fallback of circuit breaker `{name}` failed: {cause} (it ran because: {reason})")]
    FallbackFailed {
        /// The breaker's name.
        name: String,
        /// Why the fallback ran: the original failure or rejection.
        reason: FallbackReason,
        /// How the fallback failed, in words.
        cause: String,
        /// The fallback's panic payload, if it panicked.
        panic: PanicPayload,
    },
    /// A hard-deadline call was refused before it ran: the workers it may
    /// hold are all taken, by calls still running or hung. See
    /// [`CircuitBreakerConfig::max_deadline_workers`](crate::CircuitBreakerConfig::max_deadline_workers)
    /// and [`set_deadline_worker_limit`](crate::set_deadline_worker_limit).
    #[error("circuit breaker `{name}` refused a call: all {limit} deadline workers are taken")]
    BulkheadFull {
        /// The breaker's name.
        name: String,
        /// The bound that was reached.
        limit: u32,
    },
    /// A hard-deadline call was refused before it ran: no worker was idle
    /// and no thread could be started for one.
    #[error(
        "circuit breaker `{name}` refused a call: no deadline worker could be started: {cause}"
    )]
    WorkerUnavailable {
        /// The breaker's name.
        name: String,
        /// Why no thread could be started.
        cause: String,
    },
    /// A keyed [`Family`](crate::Family) refused a new key: it holds
    /// `limit` members and none can be evicted (each is open, half-open,
    /// forced, failing or recently used). The call was not made; a
    /// fallback answers it. Keys that already have a member are unaffected.
    #[error(
        "circuit breaker family `{family}` is full: all {limit} keys hold breakers that are open, failing or in use, so a new key gets none; the call was not made"
    )]
    FamilyFull {
        /// The family's name.
        family: String,
        /// Its `max_keys`.
        limit: usize,
    },
    /// A keyed [`Family`](crate::Family) refused a new key whose text is
    /// longer than [`Family::MAX_KEY_BYTES`](crate::Family::MAX_KEY_BYTES):
    /// it would become a breaker's name and a metric label. The call was
    /// not made; a fallback answers it.
    #[error(
        "circuit breaker family `{family}` refused a key of {len} bytes: a key is at most {max} bytes; the call was not made"
    )]
    KeyTooLong {
        /// The family's name.
        family: String,
        /// The key's length in bytes (the key itself is not kept).
        len: usize,
        /// The most bytes a key may have.
        max: usize,
    },
    /// The breaker could not be created from its configuration.
    #[error("circuit breaker `{name}` has an invalid configuration: {source}")]
    InvalidConfig {
        /// The breaker's name.
        name: String,
        /// What is wrong.
        source: ConfigError,
    },
}

impl BreakerError {
    /// The name of the breaker that produced this error.
    pub fn breaker_name(&self) -> &str {
        match self {
            Self::Open { name, .. }
            | Self::ForcedOpen { name }
            | Self::HalfOpenFull { name, .. }
            | Self::Timeout { name, .. }
            | Self::LocalRateLimit { name, .. }
            | Self::LowQuality { name, .. }
            | Self::FallbackFailed { name, .. }
            | Self::BulkheadFull { name, .. }
            | Self::WorkerUnavailable { name, .. }
            | Self::InvalidConfig { name, .. } => name,
            Self::FamilyFull { family, .. } | Self::KeyTooLong { family, .. } => family,
        }
    }

    /// For [`Open`](Self::Open) and [`LocalRateLimit`](Self::LocalRateLimit), how
    /// long until a call may go through.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open { retry_after, .. } | Self::LocalRateLimit { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The panic payload of a fallback that panicked
    /// ([`FallbackFailed`](Self::FallbackFailed)), to re-raise with
    /// [`std::panic::resume_unwind`] or to inspect. The first call takes
    /// it: later calls, and calls on clones of this error, get `None`.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig};
    ///
    /// let breaker = CircuitBreaker::new("payload-doc", CircuitBreakerConfig::default())?;
    /// breaker.force_open();
    /// let error = breaker
    ///     .call_with_fallback(|| Ok::<u32, String>(1), || std::panic::panic_any(7_u8))
    ///     .unwrap_err();
    /// let payload = error.breaker_error().unwrap().take_panic_payload().unwrap();
    /// assert_eq!(payload.downcast_ref::<u8>(), Some(&7));
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn take_panic_payload(&self) -> Option<Box<dyn Any + Send>> {
        match self {
            Self::FallbackFailed { panic, .. } => panic.take(),
            _ => None,
        }
    }

    pub(crate) fn from_reason(name: &str, reason: FallbackReason, max_calls: u32) -> Self {
        let name = name.to_owned();
        match reason {
            FallbackReason::Open { retry_after } => Self::Open { name, retry_after },
            FallbackReason::ForcedOpen => Self::ForcedOpen { name },
            FallbackReason::HalfOpenFull => Self::HalfOpenFull { name, max_calls },
            FallbackReason::LocalRateLimit { retry_after } => {
                Self::LocalRateLimit { name, retry_after }
            }
            FallbackReason::Timeout { after } => Self::Timeout { name, after },
            FallbackReason::LowQuality { score, threshold } => Self::LowQuality {
                name,
                score,
                threshold,
            },
            FallbackReason::BulkheadFull { limit } => Self::BulkheadFull { name, limit },
            FallbackReason::WorkerUnavailable => Self::WorkerUnavailable {
                name,
                cause: "no thread could be started".to_owned(),
            },
            FallbackReason::Failure { failure_type } => Self::FallbackFailed {
                name,
                reason,
                cause: format!("the call failed ({failure_type}) and left no error to return"),
                panic: PanicPayload::none(),
            },
        }
    }
}

/// The payload of a panic, held by a [`BreakerError::FallbackFailed`] so
/// the panic can be re-raised as it was. Clones share it: whoever
/// [`take`](Self::take)s it first gets it.
///
/// It takes no part in comparisons: two errors that differ only in their
/// payloads are equal, as payloads have no equality of their own.
#[derive(Clone, Default)]
pub struct PanicPayload(Option<Arc<Mutex<Option<Payload>>>>);

/// A payload as [`std::panic::catch_unwind`] gives it.
type Payload = Box<dyn Any + Send>;

impl PanicPayload {
    /// No payload: the failure was not a panic.
    pub const fn none() -> Self {
        Self(None)
    }

    /// Holds `payload`, as caught by [`std::panic::catch_unwind`].
    pub fn new(payload: Box<dyn Any + Send>) -> Self {
        Self(Some(Arc::new(Mutex::new(Some(payload)))))
    }

    /// The payload, if there was one and no one took it yet.
    pub fn take(&self) -> Option<Box<dyn Any + Send>> {
        let held = self.0.as_ref()?;
        held.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether a payload is held, not yet taken.
    pub fn is_held(&self) -> bool {
        self.0.as_ref().is_some_and(|held| {
            held.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        })
    }
}

impl fmt::Debug for PanicPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            None => "none",
            Some(_) if self.is_held() => "held",
            Some(_) => "taken",
        };
        write!(f, "PanicPayload({state})")
    }
}

impl PartialEq for PanicPayload {
    /// Always equal: see the type's docs.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

/// The error of a call made through a breaker: the call's own error, or the
/// breaker's reason for not producing a result.
///
/// Everything but the call's own error sits behind one box
/// ([`BreakerFailure`]), so a `CallError<E>` is no larger than `E` and one
/// pointer need: a `CallError<()>` is one word, and a
/// `Result<u64, CallError<()>>` is two and comes back in registers. Every
/// call, good or bad, is cheaper for it. Match the box's contents with
/// `match *failure`, or ask [`breaker_error`](Self::breaker_error) and
/// [`fallback_error`](Self::fallback_error).
///
/// ```
/// use breaker_runtime::{BreakerError, BreakerFailure, CallError, CircuitBreaker, CircuitBreakerConfig};
///
/// let breaker = CircuitBreaker::new("call-error-doc", CircuitBreakerConfig::default())?;
/// breaker.force_open();
/// let error = breaker.call(|| Ok::<u32, String>(1)).unwrap_err();
/// let CallError::Breaker(failure) = error else { unreachable!() };
/// match *failure {
///     BreakerFailure::Breaker(BreakerError::ForcedOpen { name }) => assert_eq!(name, "call-error-doc"),
///     other => panic!("unexpected: {other:?}"),
/// }
/// assert_eq!(std::mem::size_of::<CallError<()>>(), std::mem::size_of::<usize>());
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError<E> {
    /// The protected call returned this error. Its `Display` and
    /// `source()` are the error's own, so an error chain passes through
    /// unbroken.
    #[error(transparent)]
    Inner(E),
    /// The breaker rejected, timed out or failed the call, or the fallback
    /// that ran in its place failed: see [`BreakerFailure`]. Its `Display`
    /// and `source()` are the boxed error's own.
    #[error(transparent)]
    Breaker(Box<BreakerFailure<E>>),
}

/// What a [`CallError::Breaker`] holds: the breaker's own error, or a
/// fallback's. The two share one box so that the call's result stays small.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BreakerFailure<E> {
    /// The breaker rejected, timed out or failed the call, and no fallback
    /// answered in its place (or the fallback panicked: see
    /// [`BreakerError::FallbackFailed`]).
    #[error(transparent)]
    Breaker(BreakerError),
    /// The call did not produce a result, and the fallback that ran in its
    /// place returned an error: both causes. Its `Display` names both; its
    /// `source()` is the fallback's error.
    #[error(transparent)]
    FallbackFailed(FallbackError<E>),
}

/// A fallback's own error, with why the fallback ran: the
/// [`BreakerFailure::FallbackFailed`] of a call whose fallback returned `Err`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the fallback failed: {error} (it ran because: {reason})")]
pub struct FallbackError<E> {
    /// Why the fallback ran: the original failure or rejection.
    pub reason: FallbackReason,
    /// The fallback's own error.
    #[source]
    pub error: E,
}

impl<E> From<BreakerError> for CallError<E> {
    fn from(error: BreakerError) -> Self {
        Self::Breaker(Box::new(BreakerFailure::Breaker(error)))
    }
}

impl<E> From<FallbackError<E>> for CallError<E> {
    fn from(error: FallbackError<E>) -> Self {
        Self::Breaker(Box::new(BreakerFailure::FallbackFailed(error)))
    }
}

impl<E> BreakerFailure<E> {
    /// The breaker's error, if this is one.
    pub fn breaker_error(&self) -> Option<&BreakerError> {
        match self {
            Self::Breaker(error) => Some(error),
            Self::FallbackFailed(_) => None,
        }
    }

    /// The fallback's error with why it ran, if this is one.
    pub fn fallback_error(&self) -> Option<&FallbackError<E>> {
        match self {
            Self::FallbackFailed(failed) => Some(failed),
            Self::Breaker(_) => None,
        }
    }
}

impl<E> CallError<E> {
    /// The breaker's error, if this is one.
    pub fn breaker_error(&self) -> Option<&BreakerError> {
        match self {
            Self::Breaker(failure) => failure.breaker_error(),
            Self::Inner(_) => None,
        }
    }

    /// The fallback's error with why it ran, if a fallback returned one
    /// ([`BreakerFailure::FallbackFailed`]).
    pub fn fallback_error(&self) -> Option<&FallbackError<E>> {
        match self {
            Self::Breaker(failure) => failure.fallback_error(),
            Self::Inner(_) => None,
        }
    }

    /// Why the fallback ran, if this is a fallback's own error
    /// ([`BreakerFailure::FallbackFailed`]).
    pub fn fallback_reason(&self) -> Option<&FallbackReason> {
        self.fallback_error().map(|failed| &failed.reason)
    }

    /// The call's own error, or its fallback's, if this is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            Self::Breaker(failure) => match *failure {
                BreakerFailure::FallbackFailed(failed) => Some(failed.error),
                BreakerFailure::Breaker(_) => None,
            },
        }
    }

    /// Folds every case into one error type that can hold a breaker error:
    /// a fallback's error is given as it is.
    pub fn flatten(self) -> E
    where
        E: From<BreakerError>,
    {
        match self {
            Self::Inner(error) => error,
            Self::Breaker(failure) => match *failure {
                BreakerFailure::FallbackFailed(failed) => failed.error,
                BreakerFailure::Breaker(error) => E::from(error),
            },
        }
    }
}
