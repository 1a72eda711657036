//! What a breaker tells the outside world: a `tracing` event for every
//! transition, rejection, fallback, timeout and rate-limit refusal, and the
//! same [`Event`] handed to any listener subscribed for alerting.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use serde::Serialize;

use crate::core::TransitionCause;
use crate::error::FallbackReason;
use crate::state::DetailedState;

/// Something that happened to a breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event<'a> {
    /// The breaker's name.
    pub breaker: &'a str,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The circuit changed state.
    Transition {
        /// The state it left.
        from: DetailedState,
        /// The state it entered.
        to: DetailedState,
        /// Why.
        cause: TransitionCause,
    },
    /// A call was refused without being made (open, half-open full, the
    /// local rate limit, or no deadline worker free or startable).
    Rejected {
        /// Why.
        reason: FallbackReason,
    },
    /// A call ran past its deadline.
    Timeout {
        /// The deadline, in seconds.
        #[serde(serialize_with = "crate::config::secs")]
        after: std::time::Duration,
    },
    /// A fallback served the call.
    Fallback {
        /// Why it ran.
        reason: FallbackReason,
    },
    /// A fallback failed; the caller got an error carrying both causes.
    FallbackFailed {
        /// Why it ran.
        reason: FallbackReason,
        /// How it failed.
        cause: String,
    },
    /// A name was registered again with a different configuration; the
    /// first registration was kept.
    ConfigConflict {
        /// The configuration asked for, in `Debug` form.
        requested: String,
    },
    /// The run-time configuration (variables or file) for this breaker has
    /// problems, so none of it was applied: the breaker runs on the
    /// attribute's (or the code's) values. The status lists the problems.
    ConfigOverrideRejected {
        /// Every problem, one per line.
        problems: String,
    },
    /// The Redis server this breaker shares its state through stopped
    /// answering: the breaker decides on its local state until it is back
    /// (feature `redis`).
    FleetDisconnected {
        /// The server, without its password.
        store: String,
    },
    /// The Redis server answers again; the breaker's state is merged back.
    FleetConnected {
        /// The server, without its password.
        store: String,
    },
}

type Listener = Arc<Subscribed>;

/// A listener and whether its first panic was reported.
struct Subscribed {
    id: u64,
    listener: Box<dyn Fn(&Event<'_>) + Send + Sync>,
    /// Set by the listener's first panic, which alone is reported.
    panicked: AtomicBool,
}

static LISTENERS: LazyLock<RwLock<Vec<Listener>>> = LazyLock::new(Default::default);
static ANY_LISTENER: AtomicBool = AtomicBool::new(false);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A subscribed listener; dropping it does not unsubscribe, so it can be
/// ignored for listeners meant to live as long as the process.
#[derive(Debug)]
#[must_use = "keep the subscription to unsubscribe later, or drop it to listen forever"]
pub struct Subscription(u64);

impl Subscription {
    /// Stops the listener.
    pub fn unsubscribe(self) {
        let mut listeners = LISTENERS.write();
        listeners.retain(|listener| listener.id != self.0);
        // Relaxed: a stale `true` only costs one look at an empty list.
        ANY_LISTENER.store(!listeners.is_empty(), Ordering::Relaxed);
    }
}

/// Calls `listener` with every event of every breaker in the process.
///
/// Listeners run on the thread that caused the event, after the breaker's
/// internal lock is released: keep them quick, and they may call back into
/// the breaker.
///
/// A listener that panics is isolated: the panic is caught, the other
/// listeners still hear the event, and the call that caused the event
/// carries on. This holds even when the event comes from a protected call
/// that is itself unwinding (a panic in a destructor during unwinding would
/// otherwise abort the process). A listener's first panic is reported
/// through `tracing` at error level, with its message; its later panics are
/// caught silently, so a listener that panics on every event cannot flood
/// the log. (The process's panic hook still runs for each one, as for any
/// panic.)
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, EventKind, subscribe};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let subscription = subscribe(move |event| {
///     if event.breaker == "subscribe-doc" {
///         sink.lock().unwrap().push(event.kind.clone());
///     }
/// });
///
/// let config = CircuitBreakerConfig::builder().failure_threshold(1).build()?;
/// let breaker = CircuitBreaker::new("subscribe-doc", config)?;
/// let _ = breaker.call(|| Err::<(), _>("boom"));
/// assert!(matches!(seen.lock().unwrap()[0], EventKind::Transition { .. }));
/// subscription.unsubscribe();
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
pub fn subscribe(listener: impl Fn(&Event<'_>) + Send + Sync + 'static) -> Subscription {
    // Relaxed: ids need only be distinct.
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    LISTENERS.write().push(Arc::new(Subscribed {
        id,
        listener: Box::new(listener),
        panicked: AtomicBool::new(false),
    }));
    ANY_LISTENER.store(true, Ordering::Relaxed);
    Subscription(id)
}

/// Emits `kind` for `breaker`, to tracing and to listeners.
#[inline]
pub(crate) fn emit(breaker: &str, kind: EventKind) {
    if enabled() {
        emit_to_all(breaker, kind);
    }
}

/// Whether anybody may hear an event: with no tracing subscriber the
/// maximum level is OFF, and with no listener there is nobody to tell.
#[inline]
fn enabled() -> bool {
    // Relaxed: see `emit_to_all`.
    tracing::level_filters::LevelFilter::current() != tracing::level_filters::LevelFilter::OFF
        || ANY_LISTENER.load(Ordering::Relaxed)
}

#[inline(never)]
fn emit_to_all(breaker: &str, kind: EventKind) {
    match &kind {
        EventKind::Transition { from, to, cause } => tracing::warn!(
            breaker,
            from = from.as_str(),
            to = to.as_str(),
            ?cause,
            "circuit breaker changed state"
        ),
        EventKind::Rejected { reason } => {
            tracing::debug!(breaker, %reason, "circuit breaker rejected a call")
        }
        EventKind::Timeout { after } => {
            tracing::warn!(breaker, ?after, "call through circuit breaker timed out")
        }
        EventKind::Fallback { reason } => {
            tracing::debug!(breaker, %reason, "circuit breaker served a fallback")
        }
        EventKind::FallbackFailed { reason, cause } => {
            tracing::error!(breaker, %reason, cause, "circuit breaker fallback failed")
        }
        EventKind::ConfigConflict { requested } => tracing::warn!(
            breaker,
            requested,
            "circuit breaker registered again with a different configuration; keeping the first"
        ),
        EventKind::ConfigOverrideRejected { problems } => tracing::error!(
            breaker,
            problems,
            "circuit breaker run-time configuration rejected; using the attribute's values"
        ),
        EventKind::FleetDisconnected { store } => tracing::warn!(
            breaker,
            store,
            "circuit breaker lost its Redis fleet; deciding on local state"
        ),
        EventKind::FleetConnected { store } => {
            tracing::info!(breaker, store, "circuit breaker reached its Redis fleet")
        }
    }
    // Relaxed: a listener subscribed concurrently with this event may miss it.
    if ANY_LISTENER.load(Ordering::Relaxed) {
        let listeners: Vec<Listener> = LISTENERS.read().iter().map(Arc::clone).collect();
        let event = Event { breaker, kind };
        for listener in listeners {
            listener.hear(&event);
        }
    }
}

impl Subscribed {
    /// Calls the listener, catching its panic: a panic that escaped here
    /// while the thread is unwinding (an event from a dropped permit) would
    /// abort the process, and one that escaped otherwise would skip the
    /// remaining listeners and fail the breaker's call.
    fn hear(&self, event: &Event<'_>) {
        let heard = panic::catch_unwind(AssertUnwindSafe(|| (self.listener)(event)));
        if let Err(payload) = heard {
            // Relaxed: only the flag itself is shared.
            if !self.panicked.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    breaker = event.breaker,
                    listener = self.id,
                    panic = panic_message(&*payload),
                    "an event listener panicked; its later panics are not reported"
                );
            }
            // A payload whose own drop panics must not escape either.
            if let Err(nested) = panic::catch_unwind(AssertUnwindSafe(|| drop(payload))) {
                std::mem::forget(nested);
            }
        }
    }
}

/// The message of a panic payload, when it is a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic payload that is not a string)")
}
