//! A circuit breaker for Rust services and AI agents: correct under
//! concurrency, nearly free on the hot path, and pleasant to use.
//!
//! A breaker watches calls to one dependency (an LLM, an HTTP API, a
//! database). While the dependency is healthy the circuit is **closed** and
//! calls flow. After `failure_threshold` consecutive failures (or a failure
//! rate over a sliding window) it **opens**: calls are refused at once and a
//! fallback answers instead, so a failing dependency cannot drag its callers
//! down. After `recovery_timeout` it turns **half-open** and lets a few
//! probes through; `success_threshold` good probes close it again, one bad
//! probe reopens it.
//!
//! Most code uses the attribute, which registers one breaker per name in the
//! process-global [`registry()`]:
//!
//! ```ignore
//! use breaker_runtime::circuit_breaker;
//!
//! #[circuit_breaker(name = "llm", failure_threshold = 5, timeout_duration = 10.0)]
//! async fn ask_llm(prompt: &str) -> Result<String, LlmError> { /* ... */ }
//! ```
//!
//! The same engine is available by hand:
//!
//! ```
//! use std::time::Duration;
//! use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, CircuitState, SimpleFallback, CallOptions};
//!
//! let config = CircuitBreakerConfig::builder()
//!     .failure_threshold(3)
//!     .recovery_timeout(Duration::from_secs(30))
//!     .build()?;
//! let breaker = CircuitBreaker::new("inventory", config)?;
//! let fallback = SimpleFallback::new(Vec::<String>::new());
//! let options = CallOptions::new().fallback_for(&fallback, &());
//!
//! for _ in 0..3 {
//!     let items = breaker.call_with(&options, || Err::<Vec<String>, _>("503"));
//!     assert_eq!(items, Ok(vec![]), "the fallback answers for a failed call");
//! }
//! assert_eq!(breaker.state(), CircuitState::Open);
//! assert_eq!(breaker.get_metrics().fallback_calls, 3);
//! # Ok::<(), breaker_runtime::ConfigError>(())
//! ```
//!
//! # Timeouts
//!
//! * **Async calls** ([`CircuitBreaker::call_async_with`]) are cancelled at
//!   `timeout_duration` by dropping the future under tokio's timer.
//! * **Sync calls** ([`CircuitBreaker::call_with`]) cannot be interrupted: one
//!   that finishes after `timeout_duration` returns its result but counts as a
//!   [`FailureType::Timeout`] failure.
//! * **Sync calls with a hard deadline**
//!   ([`CircuitBreaker::call_with_deadline`]) run on a worker thread; the
//!   caller is released at the deadline and the late result is discarded and
//!   counted.
//!
//! # Quality
//!
//! A quality evaluator `Fn(&T) -> f64` scores good results in `[0, 1]`. A
//! score below `quality_threshold` is a [`FailureType::QualityThreshold`]
//! failure, and so is a score that is NaN or outside `[0, 1]`: an evaluator
//! that cannot score is not trusted to pass a result.
//!
//! # Cost
//!
//! On the closed-state success path a call loads the state word, makes the
//! call, and adds one to a counter in its thread's own lane: no lock, no
//! locked instruction, no allocation, no shared cache-line write. The average response time is
//! estimated from one call in 64 of each breaker, per thread.
#![warn(missing_docs)]

extern crate self as breaker_runtime;

mod breaker;
mod call;
mod clock;
mod config;
mod core;
mod counters;
#[cfg(feature = "dashboard")]
pub mod dashboard;
mod deadline;
mod error;
mod events;
#[cfg(any(feature = "prometheus", feature = "metrics", feature = "dashboard"))]
mod exposition;
mod fallback;
mod family;
#[cfg(feature = "http")]
pub mod http;
mod metrics;
#[cfg(feature = "metrics")]
pub mod metrics_facade;
mod overrides;
mod pool;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod rate_limit;
mod registry;
#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "redis")]
mod shared;
mod state;
mod sync;
mod telemetry;
#[cfg(feature = "tower")]
pub mod tower;

#[doc(hidden)]
pub mod __private;

pub use breaker::{CircuitBreaker, CircuitBreakerBuilder, Permit};
pub use breaker_macros::circuit_breaker;
pub use call::{
    AsyncFallback, AsyncFallbackFor, CallOptions, Classify, DeadlineBody, DefaultClassifier,
    FallbackFor, ForInput, NoFallback, NoQuality, QualityFor,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{Backoff, CircuitBreakerConfig, CircuitBreakerConfigBuilder, ConfigError};
pub use core::TransitionCause;
#[cfg(loom)]
#[doc(hidden)]
pub use deadline::Handoff as __Handoff;
pub use error::{
    BreakerError, BreakerFailure, CallError, FailureType, FallbackError, FallbackReason, Outcome,
    PanicPayload,
};
pub use events::{Event, EventKind, Subscription, subscribe};
pub use fallback::{
    CachedFallback, DegradedServiceFallback, Fallback, SimpleFallback, fallback_reason,
};
pub use family::{DEFAULT_IDLE_AFTER, DEFAULT_MAX_KEYS, Family, FamilyBuilder, KeyText, Member};
pub use metrics::{
    FailureCounts, LastFailure, Metrics, RejectedCounts, ResponseTimes, TransitionCounts,
    WindowMetrics,
};
pub use overrides::{
    CONFIG_VAR, ConfigSources, KEYS as OVERRIDE_KEYS, OverrideError, OverrideErrors, RESERVED_VARS,
    ValueSource,
};
pub use pool::{
    DEFAULT_LIMIT as DEFAULT_DEADLINE_WORKER_LIMIT, deadline_worker_limit,
    set_deadline_worker_limit,
};
#[doc(hidden)]
pub use pool::{
    deadline_worker_threads as __deadline_worker_threads,
    deadline_workers_idle as __deadline_workers_idle,
    fail_deadline_worker_starts as __fail_deadline_worker_starts,
};
pub use registry::{BreakerStatus, Registry, RegistryStatus, registry};
#[cfg(feature = "redis")]
pub use shared::{
    FleetError, FleetStatus, PREFIX_VAR as REDIS_PREFIX_VAR, RedactedUrl, RedisFleet,
    RedisFleetBuilder, URL_VAR as REDIS_URL_VAR,
};
pub use state::{CircuitState, DetailedState};
