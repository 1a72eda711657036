//! A tower [`Layer`] (feature `tower`): the breaker around any
//! [`Service`], for axum and tonic servers, hyper and tonic clients, and
//! anything else built from tower services.
//!
//! [`CircuitBreakerLayer::new`] takes a [`CircuitBreaker`];
//! [`CircuitBreakerLayer::keyed`] takes a [`Family`] and a function that
//! names each request's key (for a client, [`authority`]: one breaker per
//! upstream host; on a server, keys must come from a bounded set the server
//! controls, never from what a client wrote: see [`authority`]). Every call goes through the breaker's async call path,
//! [`CircuitBreaker::call_async_with`], with the layer's [`CallOptions`]: the
//! breaker's own `timeout_duration` cuts a hung call, its rate limit and
//! quality threshold apply, and a fallback or classifier set on the layer is
//! used as it would be by `#[circuit_breaker]`.
//!
//! * **Classification.** Without a classifier, `Err` from the inner service
//!   is a failure and every `Ok` a success, as for
//!   [`call`](CircuitBreaker::call). For services answering
//!   [`http::Response`]s, [`classify`](CircuitBreakerLayer::classify) with
//!   an [`HttpClassifier`](crate::http::HttpClassifier) or a
//!   [`GrpcClassifier`](crate::http::GrpcClassifier). Their default rules
//!   are a **client**'s (5xx, 408 and 429 count, other 4xx do not); on a
//!   **server** use [`HttpClassifier::server`](crate::http::HttpClassifier::server)
//!   (only 5xx count) and [`GrpcClassifier::server`](crate::http::GrpcClassifier::server):
//!   a 429 or 408 a server gives one client says nothing of its health,
//!   and counted it would shut the server for every client. An `Err` of the
//!   inner service counts as the transport failure
//!   [`http::transport_failure`](crate::http::transport_failure) finds in
//!   it: tower's `Elapsed` from a `Timeout` below is a timeout. A gRPC
//!   status sent only in trailers, after a streamed body, is not seen: the
//!   layer classifies the response when its headers arrive.
//! * **Readiness.** While the breaker of [`CircuitBreakerLayer::new`]
//!   refuses every call (open, or forced open), `poll_ready` is ready at
//!   once without asking the inner service, and the `call` that follows is
//!   refused without reaching it (even if the circuit moved in between):
//!   an open circuit fails fast although a `ConcurrencyLimit` below it is
//!   taken by hung calls. Otherwise `poll_ready` is the inner service's. A
//!   keyed layer cannot know the breaker before it sees the request, so its
//!   `poll_ready` is always the inner service's; its refusals come from
//!   `call`. A refused call is reported from `call`, as
//!   [`ServiceError::Breaker`], never from `poll_ready`: a
//!   `tower::buffer::Buffer` above the layer treats an error from
//!   `poll_ready` as the end of its service and fails every later call,
//!   while a refusal from `call` fails only that request.
//! * **Rejections as responses.** For HTTP servers,
//!   [`respond_to_rejections`](CircuitBreakerLayer::respond_to_rejections)
//!   answers a refusal itself, so the stack's error stays the inner
//!   service's (axum's `Infallible`) and no `HandleErrorLayer` is needed:
//!   503 Service Unavailable with `Retry-After` while the circuit is open,
//!   429 Too Many Requests with `Retry-After` from the breaker's own rate
//!   limit, 504 Gateway Timeout for a call cut by `timeout_duration` (see
//!   [`ServiceError::status`]).
//! * **Handles.** The layer and the service give their breaker
//!   ([`CircuitBreakerLayer::breaker`], [`CircuitBreakerService::breaker`])
//!   or family, for `force_open`, `reset` and metrics.
//!
//! # Cost
//!
//! Each call clones the inner service (tower's usual way to call the
//! instance that was driven ready, later), counts one reference to the
//! layer's shared state, and boxes the call's future once: the engine's
//! async call is an `async fn`, whose future has no name a `Service` can
//! give as its `Future` type on stable Rust. Nothing else is allocated on
//! the closed path.
//!
//! ```
//! use std::convert::Infallible;
//! use breaker_runtime::tower::{CircuitBreakerLayer, ServiceError};
//! use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
//! use tower::{Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = CircuitBreakerConfig::builder().failure_threshold(2).build()?;
//! let layer = CircuitBreakerLayer::new(CircuitBreaker::new("tower-doc", config)?);
//! let mut service = layer.layer(tower::service_fn(|n: u32| async move {
//!     if n == 0 { Err("zero") } else { Ok(n * 2) }
//! }));
//!
//! assert_eq!(service.ready().await.unwrap().call(21).await.unwrap(), 42);
//! for _ in 0..2 {
//!     let failed = service.ready().await.unwrap().call(0).await;
//!     assert!(matches!(failed, Err(ServiceError::Inner("zero"))));
//! }
//! assert_eq!(service.breaker().state(), CircuitState::Open);
//! let refused = service.ready().await.unwrap().call(21).await.unwrap_err();
//! assert!(refused.is_rejection());
//! assert!(refused.retry_after().is_some());
//!
//! service.breaker().reset();
//! assert_eq!(service.ready().await.unwrap().call(21).await.unwrap(), 42);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::CircuitBreaker;
use crate::call::{
    AsyncFallbackFor, CallOptions, Classify, DefaultClassifier, NoFallback, NoQuality, QualityFor,
};
use crate::config::{CircuitBreakerConfig, ConfigError};
use crate::error::{BreakerError, BreakerFailure, CallError, FallbackError, FallbackReason};
use crate::family::{Family, KeyText};

/// Which breaker guards a request: [`One`] breaker for every request, or
/// the member of a family [`Keyed`] by the request. The layer's
/// constructors pick it; there is no need to implement it.
///
/// ```
/// use breaker_runtime::tower::{authority, CircuitBreakerLayer, SelectBreaker};
/// use breaker_runtime::{CircuitBreakerConfig, Family};
///
/// fn guards<Req, Sel: SelectBreaker<Req>>(selector: &Sel, request: &Req) -> String {
///     let selected = selector.select(request).unwrap();
///     selector.breaker(&selected).name().to_owned()
/// }
/// let hosts = Family::new("tower-select-doc", CircuitBreakerConfig::default())?;
/// let request = http::Request::get("http://a.example/").body(()).unwrap();
/// let keyed = breaker_runtime::tower::Keyed::new(hosts, authority::<()>);
/// assert_eq!(guards(&keyed, &request), "tower-select-doc[a.example:80]");
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
pub trait SelectBreaker<Req>: Send + Sync + 'static {
    /// What a request's future keeps to reach its breaker.
    type Selected: Send + 'static;

    /// The breaker for `request`.
    ///
    /// # Errors
    /// A family that refuses the request's key
    /// ([`BreakerError::FamilyFull`], [`BreakerError::KeyTooLong`]).
    fn select(&self, request: &Req) -> Result<Self::Selected, BreakerError>;

    /// The breaker `selected` stands for.
    fn breaker<'a>(&'a self, selected: &'a Self::Selected) -> &'a CircuitBreaker;

    /// The refusal every request would get now, known before the request
    /// is seen, for `poll_ready` to fail fast on: [`One`]'s breaker while
    /// it is open (or forced open). `None` (the default) when a request
    /// could be admitted, or when which breaker guards it depends on the
    /// request ([`Keyed`]). Counts nothing.
    ///
    /// ```
    /// use breaker_runtime::tower::{One, SelectBreaker};
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, FallbackReason};
    ///
    /// let breaker = CircuitBreaker::new("tower-refusing-doc", CircuitBreakerConfig::default())?;
    /// let one = One::new(breaker.clone());
    /// assert_eq!(SelectBreaker::<()>::refusing(&one), None);
    /// breaker.force_open();
    /// assert_eq!(SelectBreaker::<()>::refusing(&one), Some(FallbackReason::ForcedOpen));
    /// assert_eq!(breaker.get_metrics().rejected_calls, 0, "a look counts nothing");
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    #[inline]
    fn refusing(&self) -> Option<FallbackReason> {
        None
    }
}

/// One breaker for every request: [`CircuitBreakerLayer::new`].
///
/// ```
/// use breaker_runtime::tower::{One, SelectBreaker};
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig};
///
/// let one = One::new(CircuitBreaker::new("tower-one-doc", CircuitBreakerConfig::default())?);
/// let selected = SelectBreaker::<()>::select(&one, &()).unwrap();
/// assert_eq!(SelectBreaker::<()>::breaker(&one, &selected).name(), "tower-one-doc");
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct One(CircuitBreaker);

impl One {
    /// `breaker` for every request.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self(breaker)
    }
}

impl<Req> SelectBreaker<Req> for One {
    type Selected = ();

    #[inline]
    fn select(&self, _request: &Req) -> Result<(), BreakerError> {
        Ok(())
    }

    #[inline]
    fn breaker<'a>(&'a self, _selected: &'a ()) -> &'a CircuitBreaker {
        &self.0
    }

    #[inline]
    fn refusing(&self) -> Option<FallbackReason> {
        self.0.refusal_now()
    }
}

/// A family's member per key: [`CircuitBreakerLayer::keyed`]. See
/// [`SelectBreaker`] for an example.
///
/// The key function returns a [`KeyText`], or an `Option<KeyText>` whose
/// `None` says the request has no key (a server request without a known
/// host, say): such requests all pass through one member, the family's
/// member for [`NO_KEY`], named `family[(none)]` in metrics.
#[derive(Clone)]
pub struct Keyed<F> {
    family: Family,
    key: F,
}

impl<F> Keyed<F> {
    /// The member of `family` for the key `key` gives each request.
    pub fn new(family: Family, key: F) -> Self {
        Self { family, key }
    }
}

impl<F> fmt::Debug for Keyed<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("family", &self.family.name())
            .finish_non_exhaustive()
    }
}

impl<Req, F, K> SelectBreaker<Req> for Keyed<F>
where
    F: Fn(&Req) -> K + Send + Sync + 'static,
    K: Into<Option<KeyText>>,
{
    type Selected = CircuitBreaker;

    #[inline]
    fn select(&self, request: &Req) -> Result<CircuitBreaker, BreakerError> {
        match (self.key)(request).into() {
            Some(key) => self.family.breaker_text(&key),
            None => self.family.breaker_text(&KeyText::from_text(NO_KEY)),
        }
    }

    #[inline]
    fn breaker<'a>(&'a self, selected: &'a CircuitBreaker) -> &'a CircuitBreaker {
        selected
    }
}

/// The key of requests a [`Keyed`] layer's key function found none for:
/// they share the family's member `family[(none)]`.
///
/// ```
/// assert_eq!(breaker_runtime::tower::NO_KEY, "(none)");
/// ```
pub const NO_KEY: &str = "(none)";

/// The key [`CircuitBreakerLayer::keyed`] needs on a **client** to give each
/// upstream host its own breaker: the request URI's host and port,
/// normalised by [`http::host_key`](crate::http::host_key) (the host
/// lowercased, the scheme's default port written out), so
/// `http://API.example/` and `http://api.example:80/` are one breaker,
/// named as the reqwest middleware names it.
///
/// A URI without an authority (what a **server** receives: `/path`) has
/// no key: `None`, so the request goes through the family's [`NO_KEY`]
/// member. The `Host` header is not read: a client writes it, and keys
/// made up by clients would fill the family (up to `max_keys`, then
/// refusing real hosts) and the metrics with their names. A server that
/// wants a breaker per virtual host keys by a function of its own that
/// maps the hosts it serves, a bounded set it controls, to keys and
/// anything else to `None`:
///
/// ```
/// use breaker_runtime::tower::authority;
/// use breaker_runtime::KeyText;
///
/// let client = http::Request::get("http://API.example/v1/x").body(()).unwrap();
/// assert_eq!(authority(&client).unwrap().as_str(), "api.example:80");
/// let server = http::Request::get("/v1/x").header("host", "api.example").body(()).unwrap();
/// assert!(authority(&server).is_none(), "a Host header is the client's word");
///
/// // A server's own key: the tenants it knows, and no others.
/// fn tenant<B>(request: &http::Request<B>) -> Option<KeyText> {
///     let host = request.headers().get(http::header::HOST)?.to_str().ok()?;
///     ["a.example", "b.example"]
///         .into_iter()
///         .find(|known| host.eq_ignore_ascii_case(known))
///         .map(KeyText::from_text)
/// }
/// assert!(tenant(&server).is_none());
/// let known = http::Request::get("/").header("host", "A.example").body(()).unwrap();
/// assert_eq!(tenant(&known).unwrap().as_str(), "a.example");
/// ```
pub fn authority<B>(request: &http::Request<B>) -> Option<KeyText> {
    crate::http::uri_host_key(request.uri())
}

/// How refusals reach the caller: as [`ServiceError`]s ([`AsError`], the
/// default) or as HTTP responses ([`AsResponse`]).
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::tower::{AsError, AsResponse, Rejections, ServiceError};
/// use breaker_runtime::BreakerError;
///
/// let open = || ServiceError::<()>::Breaker(BreakerError::Open {
///     name: "api".into(),
///     retry_after: Duration::from_secs(5),
/// });
/// let as_error = <AsError as Rejections<http::Response<()>, ()>>::answer(open());
/// assert!(as_error.unwrap_err().is_rejection());
/// let as_response = <AsResponse as Rejections<http::Response<()>, ()>>::answer(open());
/// assert_eq!(as_response.unwrap().status(), 503);
/// ```
pub trait Rejections<Res, E>: Send + Sync + 'static {
    /// The service's error type.
    type Error;

    /// The service's answer for a call that did not return the inner
    /// service's own response.
    ///
    /// # Errors
    /// The error the caller gets instead of a response.
    fn answer(error: ServiceError<E>) -> Result<Res, Self::Error>;

    /// An error of the inner service's `poll_ready`.
    fn not_ready(error: E) -> Self::Error;
}

/// Refusals are [`ServiceError`]s: the default. See [`Rejections`] for an
/// example.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsError;

impl<Res, E> Rejections<Res, E> for AsError {
    type Error = ServiceError<E>;

    #[inline]
    fn answer(error: ServiceError<E>) -> Result<Res, ServiceError<E>> {
        Err(error)
    }

    #[inline]
    fn not_ready(error: E) -> ServiceError<E> {
        ServiceError::Inner(error)
    }
}

/// Refusals are HTTP responses ([`ServiceError::to_response`]) and the
/// service's error is the inner service's:
/// [`CircuitBreakerLayer::respond_to_rejections`]. See [`Rejections`] for
/// an example.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsResponse;

impl<B: Default, E> Rejections<http::Response<B>, E> for AsResponse {
    type Error = E;

    fn answer(error: ServiceError<E>) -> Result<http::Response<B>, E> {
        match error {
            ServiceError::Inner(error) => Err(error),
            ServiceError::FallbackFailed(failed) => Err(failed.error),
            ServiceError::Breaker(error) => Ok(breaker_response(&error)),
        }
    }

    #[inline]
    fn not_ready(error: E) -> E {
        error
    }
}

/// Why a call through a [`CircuitBreakerService`] returned no response of
/// the inner service's.
///
/// ```
/// use breaker_runtime::tower::ServiceError;
/// use breaker_runtime::BreakerError;
///
/// let forced = ServiceError::<std::io::Error>::Breaker(BreakerError::ForcedOpen { name: "api".into() });
/// assert_eq!(forced.to_string(), "circuit breaker `api` is forced open until it is reset");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E> {
    /// The inner service's own error (counted as the classifier says).
    #[error(transparent)]
    Inner(E),
    /// The breaker refused the call, so the inner service never saw it
    /// (open, forced open, half-open and full, its own rate limit, a family
    /// that refused the key), or cut it at `timeout_duration`, or judged
    /// its result below the quality threshold; no fallback answered.
    #[error(transparent)]
    Breaker(BreakerError),
    /// The fallback that ran in the call's place returned an error.
    #[error(transparent)]
    FallbackFailed(FallbackError<E>),
}

impl<E> From<CallError<E>> for ServiceError<E> {
    fn from(error: CallError<E>) -> Self {
        match error {
            CallError::Inner(error) => Self::Inner(error),
            CallError::Breaker(failure) => match *failure {
                BreakerFailure::Breaker(error) => Self::Breaker(error),
                BreakerFailure::FallbackFailed(error) => Self::FallbackFailed(error),
            },
        }
    }
}

impl<E> ServiceError<E> {
    /// Whether the breaker refused the call before the inner service saw
    /// it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::tower::ServiceError;
    /// use breaker_runtime::BreakerError;
    ///
    /// let open = BreakerError::Open { name: "api".into(), retry_after: Duration::from_secs(3) };
    /// assert!(ServiceError::<()>::Breaker(open).is_rejection());
    /// assert!(!ServiceError::Inner(()).is_rejection());
    /// ```
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Breaker(
                BreakerError::Open { .. }
                    | BreakerError::ForcedOpen { .. }
                    | BreakerError::HalfOpenFull { .. }
                    | BreakerError::LocalRateLimit { .. }
                    | BreakerError::FamilyFull { .. }
                    | BreakerError::KeyTooLong { .. }
                    | BreakerError::BulkheadFull { .. }
                    | BreakerError::WorkerUnavailable { .. }
            )
        )
    }

    /// How long until the breaker admits a call, when it said.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::tower::ServiceError;
    /// use breaker_runtime::BreakerError;
    ///
    /// let open = BreakerError::Open { name: "api".into(), retry_after: Duration::from_secs(3) };
    /// assert_eq!(ServiceError::<()>::Breaker(open).retry_after(), Some(Duration::from_secs(3)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Breaker(error) => error.retry_after(),
            _ => None,
        }
    }

    /// The inner service's error, if that is what this is.
    ///
    /// ```
    /// use breaker_runtime::tower::ServiceError;
    ///
    /// assert_eq!(ServiceError::Inner(7).into_inner(), Some(7));
    /// ```
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            _ => None,
        }
    }

    /// This error as tower's `BoxError`, for middleware above the layer
    /// that needs one, such as `tower::buffer::Buffer`
    /// (`ServiceBuilder::map_err(ServiceError::into_box_error)`): the
    /// inner service's error (or a failed fallback's) converted, the
    /// breaker's own boxed as a [`BreakerError`], to find again with
    /// `downcast_ref`.
    ///
    /// ```
    /// use breaker_runtime::tower::ServiceError;
    /// use breaker_runtime::BreakerError;
    ///
    /// let forced = ServiceError::<std::io::Error>::Breaker(BreakerError::ForcedOpen { name: "api".into() });
    /// let boxed = forced.into_box_error();
    /// assert!(matches!(boxed.downcast_ref::<BreakerError>(), Some(BreakerError::ForcedOpen { .. })));
    /// ```
    pub fn into_box_error(self) -> Box<dyn std::error::Error + Send + Sync>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self {
            Self::Inner(error) => error.into(),
            Self::Breaker(error) => Box::new(error),
            Self::FallbackFailed(failed) => failed.error.into(),
        }
    }

    /// The HTTP status that answers this error in a server, `None` for the
    /// inner service's own error:
    ///
    /// | Breaker error | Status |
    /// |---|---|
    /// | open, forced open, half-open and full, family full, no worker | 503 Service Unavailable |
    /// | the breaker's own rate limit | 429 Too Many Requests |
    /// | cut at `timeout_duration` | 504 Gateway Timeout |
    /// | result below the quality threshold | 502 Bad Gateway |
    /// | a fallback's failure, an invalid configuration | 500 Internal Server Error |
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::tower::ServiceError;
    /// use breaker_runtime::BreakerError;
    /// use http::StatusCode;
    ///
    /// let timeout = BreakerError::Timeout { name: "api".into(), after: Duration::from_secs(1) };
    /// assert_eq!(ServiceError::<()>::Breaker(timeout).status(), Some(StatusCode::GATEWAY_TIMEOUT));
    /// assert_eq!(ServiceError::Inner(()).status(), None);
    /// ```
    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            Self::Inner(_) => None,
            Self::Breaker(error) => Some(breaker_status(error)),
            Self::FallbackFailed(_) => Some(http::StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The response that answers this error in a server: its
    /// [`status`](Self::status), with `Retry-After` in whole seconds
    /// (rounded up) when the breaker said how long to wait, and an empty
    /// body. `None` for the inner service's own error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::tower::ServiceError;
    /// use breaker_runtime::BreakerError;
    ///
    /// let open = BreakerError::Open { name: "api".into(), retry_after: Duration::from_millis(2100) };
    /// let response = ServiceError::<()>::Breaker(open).to_response::<String>().unwrap();
    /// assert_eq!(response.status(), 503);
    /// assert_eq!(response.headers()["retry-after"], "3");
    /// ```
    pub fn to_response<B: Default>(&self) -> Option<http::Response<B>> {
        match self {
            Self::Inner(_) => None,
            Self::Breaker(error) => Some(breaker_response(error)),
            Self::FallbackFailed(_) => Some(status_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                None,
            )),
        }
    }
}

fn breaker_status(error: &BreakerError) -> http::StatusCode {
    use http::StatusCode;
    match error {
        BreakerError::LocalRateLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
        BreakerError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        BreakerError::LowQuality { .. } => StatusCode::BAD_GATEWAY,
        BreakerError::FallbackFailed { .. } | BreakerError::InvalidConfig { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn breaker_response<B: Default>(error: &BreakerError) -> http::Response<B> {
    status_response(breaker_status(error), error.retry_after())
}

fn status_response<B: Default>(
    status: http::StatusCode,
    retry_after: Option<Duration>,
) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() = status;
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
    }
    response
}

/// The answer of an axum handler whose service call failed: the inner
/// error's own response, or [`to_response`](ServiceError::to_response)'s
/// for the breaker's. For a `HandleErrorLayer` when the layer is used
/// without [`respond_to_rejections`](CircuitBreakerLayer::respond_to_rejections).
#[cfg(feature = "axum")]
impl<E: axum::response::IntoResponse> axum::response::IntoResponse for ServiceError<E> {
    fn into_response(self) -> axum::response::Response {
        match self {
            Self::Inner(error) => error.into_response(),
            Self::FallbackFailed(failed) => failed.error.into_response(),
            Self::Breaker(error) => breaker_response(&error),
        }
    }
}

/// A tower [`Layer`] that puts a breaker around a service; see the
/// [module docs](self).
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerLayer<Sel = One, O = CallOptions, R = AsError> {
    selector: Sel,
    options: O,
    rejections: PhantomData<fn() -> R>,
}

impl CircuitBreakerLayer {
    /// Every call through the wrapped service goes through `breaker`.
    ///
    /// ```
    /// use breaker_runtime::tower::CircuitBreakerLayer;
    /// use breaker_runtime::{registry, CircuitBreakerConfig};
    ///
    /// let breaker = registry().get_or_register("tower-new-doc", CircuitBreakerConfig::default())?;
    /// let layer = CircuitBreakerLayer::new(breaker.clone());
    /// assert!(layer.breaker().ptr_eq(&breaker));
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            selector: One(breaker),
            options: CallOptions::new(),
            rejections: PhantomData,
        }
    }
}

impl CircuitBreakerLayer {
    /// A layer whose breaker is made from options set on the layer: the
    /// timeout, rate limit and quality threshold (and any other config
    /// field), validated when the layer is built. The breaker is
    /// [`registry()`](crate::registry)'s `name`, so run-time overrides
    /// (`BREAKER_<NAME>__<FIELD>`, `BREAKER_CONFIG`) apply to it, and
    /// `status()` and the dashboard list it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::tower::CircuitBreakerLayer;
    /// use breaker_runtime::{ConfigError, FallbackReason};
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = CircuitBreakerLayer::builder("tower-builder-doc")
    ///     .timeout(Duration::from_millis(250))
    ///     .rate_limit(120, 1)
    ///     .quality_threshold(0.5)
    ///     .build()?;
    /// let config = layer.breaker().config();
    /// assert_eq!(config.timeout_duration, Duration::from_millis(250));
    /// assert_eq!((config.rate_limit_per_minute, config.rate_limit_burst), (Some(120), Some(1)));
    ///
    /// // A burst of one: the second call at once is the breaker's own refusal.
    /// let mut service = layer.layer(tower::service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) }));
    /// assert_eq!(service.ready().await?.call(1).await?, 1);
    /// let refused = service.ready().await?.call(2).await.unwrap_err();
    /// assert!(refused.is_rejection());
    ///
    /// // A bad option is a typed error naming the field and its range.
    /// let bad = CircuitBreakerLayer::builder("tower-builder-bad").quality_threshold(1.5).build();
    /// let Err(ConfigError::OutOfRange { field, .. }) = bad else { panic!("{bad:?}") };
    /// assert_eq!(field, "quality_threshold");
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(name: impl Into<String>) -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder {
            name: name.into(),
            config: CircuitBreakerConfig::default(),
        }
    }
}

/// Sets a layer's breaker options; made by
/// [`CircuitBreakerLayer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerLayerBuilder {
    name: String,
    config: CircuitBreakerConfig,
}

impl CircuitBreakerLayerBuilder {
    /// Starts from `config` instead of the defaults; later options change it.
    pub fn config(mut self, config: CircuitBreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// The deadline of one call: [`CircuitBreakerConfig::timeout_duration`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout_duration = timeout;
        self
    }

    /// The breaker's own rate limit: `per_minute` calls a minute, at most
    /// `burst` at once ([`CircuitBreakerConfig::rate_limit_per_minute`] and
    /// [`rate_limit_burst`](CircuitBreakerConfig::rate_limit_burst)).
    pub fn rate_limit(mut self, per_minute: u32, burst: u32) -> Self {
        self.config.rate_limit_per_minute = Some(per_minute);
        self.config.rate_limit_burst = Some(burst);
        self
    }

    /// The lowest acceptable score of the layer's
    /// [`quality`](CircuitBreakerLayer::quality) evaluator:
    /// [`CircuitBreakerConfig::quality_threshold`].
    pub fn quality_threshold(mut self, threshold: f64) -> Self {
        self.config.quality_threshold = threshold;
        self
    }

    /// [`CircuitBreakerConfig::failure_threshold`].
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.config.failure_threshold = failures;
        self
    }

    /// [`CircuitBreakerConfig::recovery_timeout`].
    pub fn recovery_timeout(mut self, wait: Duration) -> Self {
        self.config.recovery_timeout = wait;
        self
    }

    /// The layer, its breaker registered in [`registry()`](crate::registry)
    /// (or the one already there under this name with the same config).
    ///
    /// # Errors
    /// [`ConfigError`] for an option out of its range, naming the field,
    /// or for a name already registered with another config.
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        let breaker = crate::registry::registry().get_or_register(&self.name, self.config)?;
        Ok(CircuitBreakerLayer::new(breaker))
    }
}

impl<F> CircuitBreakerLayer<Keyed<F>> {
    /// Each call goes through the member of `family` for the key `key`
    /// names for its request, e.g. [`authority`].
    ///
    /// ```
    /// use breaker_runtime::tower::{authority, CircuitBreakerLayer};
    /// use breaker_runtime::{registry, CircuitBreakerConfig};
    ///
    /// let hosts = registry().family("tower-keyed-doc", CircuitBreakerConfig::default())?;
    /// let layer = CircuitBreakerLayer::keyed(hosts, authority::<()>);
    /// assert_eq!(layer.family().name(), "tower-keyed-doc");
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn keyed(family: Family, key: F) -> Self {
        Self {
            selector: Keyed { family, key },
            options: CallOptions::new(),
            rejections: PhantomData,
        }
    }

    /// The family whose members guard the calls; see
    /// [`keyed`](Self::keyed) for an example.
    pub fn family(&self) -> &Family {
        &self.selector.family
    }
}

impl<O, R> CircuitBreakerLayer<One, O, R> {
    /// The breaker that guards every call: for `force_open`, `reset` and
    /// metrics; see [`new`](CircuitBreakerLayer::new) for an example.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.selector.0
    }
}

impl<Sel, Fb, Q, C, R> CircuitBreakerLayer<Sel, CallOptions<Fb, Q, C>, R> {
    /// Counts outcomes with `classify`: an
    /// [`HttpClassifier`](crate::http::HttpClassifier), a
    /// [`GrpcClassifier`](crate::http::GrpcClassifier), or any
    /// [`Classify`] of the service's `Result`.
    ///
    /// ```
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::tower::CircuitBreakerLayer;
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig};
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let breaker = CircuitBreaker::new("tower-classify-doc", CircuitBreakerConfig::default())?;
    /// let mut service = CircuitBreakerLayer::new(breaker)
    ///     .classify(HttpClassifier::new())
    ///     .layer(tower::service_fn(|_: ()| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::builder().status(404).body(()).unwrap())
    ///     }));
    /// service.ready().await?.call(()).await?;
    /// assert_eq!(service.breaker().get_metrics().ignored_calls, 1, "a 404 is the caller's");
    /// # Ok(())
    /// # }
    /// ```
    pub fn classify<C2>(self, classify: C2) -> CircuitBreakerLayer<Sel, CallOptions<Fb, Q, C2>, R> {
        self.options(|options| options.classify(classify))
    }

    /// Judges good responses with `quality`, a `Fn(&Response) -> f64`,
    /// against the breaker's `quality_threshold`.
    ///
    /// ```
    /// use breaker_runtime::tower::{CircuitBreakerLayer, ServiceError};
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig};
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = CircuitBreakerConfig::builder().quality_threshold(0.5).build()?;
    /// let breaker = CircuitBreaker::new("tower-quality-doc", config)?;
    /// let mut service = CircuitBreakerLayer::new(breaker)
    ///     .quality(|answer: &String| if answer.is_empty() { 0.0 } else { 1.0 })
    ///     .layer(tower::service_fn(|_: ()| async { Ok::<_, ()>(String::new()) }));
    /// let low = service.ready().await.unwrap().call(()).await.unwrap_err();
    /// assert!(matches!(low, ServiceError::Breaker(_)));
    /// assert_eq!(service.breaker().get_metrics().failures_by_type.quality_threshold, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn quality<Q2>(self, quality: Q2) -> CircuitBreakerLayer<Sel, CallOptions<Fb, Q2, C>, R> {
        self.options(|options| options.quality(quality))
    }

    /// Answers refused and failed calls with `fallback`, a
    /// `Fn(&FallbackReason) -> Option<Result<Response, Error>>` (or an
    /// [`AsyncFallback`](crate::AsyncFallback)).
    ///
    /// ```
    /// use breaker_runtime::tower::CircuitBreakerLayer;
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, FallbackReason};
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let breaker = CircuitBreaker::new("tower-fallback-doc", CircuitBreakerConfig::default())?;
    /// breaker.force_open();
    /// let mut service = CircuitBreakerLayer::new(breaker)
    ///     .fallback(|_: &FallbackReason| Some(Ok::<_, ()>("cached".to_owned())))
    ///     .layer(tower::service_fn(|_: ()| async { Ok::<_, ()>("fresh".to_owned()) }));
    /// assert_eq!(service.ready().await.unwrap().call(()).await.unwrap(), "cached");
    /// # Ok(())
    /// # }
    /// ```
    pub fn fallback<Fb2>(
        self,
        fallback: Fb2,
    ) -> CircuitBreakerLayer<Sel, CallOptions<Fb2, Q, C>, R> {
        self.options(|options| options.fallback(fallback))
    }

    fn options<O2>(
        self,
        change: impl FnOnce(CallOptions<Fb, Q, C>) -> O2,
    ) -> CircuitBreakerLayer<Sel, O2, R> {
        CircuitBreakerLayer {
            selector: self.selector,
            options: change(self.options),
            rejections: PhantomData,
        }
    }
}

impl<Sel, O> CircuitBreakerLayer<Sel, O, AsError> {
    /// Answers a refusal with an HTTP response instead of an error (see
    /// [`ServiceError::to_response`]): 503 with `Retry-After` while the
    /// circuit is open. The service's error becomes the inner service's,
    /// so an axum `Router` takes the layer as it is. A server classifies
    /// its own responses with
    /// [`HttpClassifier::server`](crate::http::HttpClassifier::server): only
    /// 5xx count, not the 429s and 408s it gives single clients (the
    /// default rules are a client's):
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::tower::CircuitBreakerLayer;
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig};
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let breaker = CircuitBreaker::new("tower-axum-doc", CircuitBreakerConfig::default())?;
    /// let layer = CircuitBreakerLayer::new(breaker.clone())
    ///     .classify(HttpClassifier::server())
    ///     .respond_to_rejections();
    /// let app = Router::new().route("/", get(|| async { "hello" })).layer(layer);
    /// let get = || http::Request::get("/").body(axum::body::Body::empty()).unwrap();
    ///
    /// let response = app.clone().oneshot(get()).await?;
    /// assert_eq!(response.status(), 200);
    /// breaker.force_open();
    /// let response = app.oneshot(get()).await?;
    /// assert_eq!(response.status(), 503);
    /// # Ok(())
    /// # }
    /// ```
    pub fn respond_to_rejections(self) -> CircuitBreakerLayer<Sel, O, AsResponse> {
        CircuitBreakerLayer {
            selector: self.selector,
            options: self.options,
            rejections: PhantomData,
        }
    }
}

impl<S, Sel: Clone, O: Clone, R> Layer<S> for CircuitBreakerLayer<Sel, O, R> {
    type Service = CircuitBreakerService<S, Sel, O, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            shared: Arc::new(Shared {
                selector: self.selector.clone(),
                options: self.options.clone(),
            }),
            refusal: None,
            rejections: PhantomData,
        }
    }
}

struct Shared<Sel, O> {
    selector: Sel,
    options: O,
}

/// The service [`CircuitBreakerLayer`] makes: see the [module docs](self)
/// for an example.
#[must_use]
pub struct CircuitBreakerService<
    S,
    Sel = One,
    O = CallOptions<NoFallback, NoQuality, DefaultClassifier>,
    R = AsError,
> {
    inner: S,
    shared: Arc<Shared<Sel, O>>,
    /// The refusal `poll_ready` found, for `call` to answer with: set when
    /// it said ready without asking the inner service.
    refusal: Option<FallbackReason>,
    rejections: PhantomData<fn() -> R>,
}

impl<S: Clone, Sel, O, R> Clone for CircuitBreakerService<S, Sel, O, R> {
    fn clone(&self) -> Self {
        // A clone has not been driven ready: no refusal carries over.
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            refusal: None,
            rejections: PhantomData,
        }
    }
}

impl<S: fmt::Debug, Sel: fmt::Debug, O, R> fmt::Debug for CircuitBreakerService<S, Sel, O, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("selector", &self.shared.selector)
            .finish_non_exhaustive()
    }
}

impl<S, O, R> CircuitBreakerService<S, One, O, R> {
    /// The breaker that guards every call: for `force_open`, `reset` and
    /// metrics; the [module docs](self) reset it.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.shared.selector.0
    }
}

impl<S, F, O, R> CircuitBreakerService<S, Keyed<F>, O, R> {
    /// The family whose members guard the calls.
    ///
    /// ```
    /// use breaker_runtime::tower::{authority, CircuitBreakerLayer};
    /// use breaker_runtime::{CircuitBreakerConfig, Family};
    /// use tower::Layer;
    ///
    /// let hosts = Family::new("tower-service-family-doc", CircuitBreakerConfig::default())?;
    /// let service = CircuitBreakerLayer::keyed(hosts.clone(), authority::<()>)
    ///     .layer(tower::service_fn(|_: http::Request<()>| async { Ok::<_, ()>(()) }));
    /// assert!(service.family().ptr_eq(&hosts));
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn family(&self) -> &Family {
        &self.shared.selector.family
    }
}

/// The future of a call through a [`CircuitBreakerService`]: boxed once
/// per call, as the engine's async call has no nameable type.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, Req, Sel, Fb, Q, C, R> Service<Req>
    for CircuitBreakerService<S, Sel, CallOptions<Fb, Q, C>, R>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    Req: Send + 'static,
    Sel: SelectBreaker<Req>,
    Fb: AsyncFallbackFor<S::Response, S::Error> + Send + Sync + 'static,
    Fb::Future: Send,
    Q: QualityFor<S::Response> + Send + Sync + 'static,
    C: Classify<S::Response, S::Error> + Send + Sync + 'static,
    R: Rejections<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = R::Error;
    type Future = ResponseFuture<S::Response, R::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A circuit that refuses every call says so at once, in `call`:
        // neither waiting for the inner service's readiness nor reporting
        // an error here (which would end a `Buffer` above).
        if let Some(reason) = self.shared.selector.refusing() {
            self.refusal = Some(reason);
            return Poll::Ready(Ok(()));
        }
        self.refusal = None;
        self.inner.poll_ready(cx).map_err(R::not_ready)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(reason) = self.refusal.take() {
            // Ready only by the breaker's word: the inner service was not
            // driven ready, so it is not called, whatever the state now.
            return self.refuse(request, reason);
        }
        // The instance that was driven ready makes the call; a clone takes
        // its place for the next `poll_ready`.
        let fresh = self.inner.clone();
        let mut ready = mem::replace(&mut self.inner, fresh);
        let shared = Arc::clone(&self.shared);
        let selected = shared.selector.select(&request);
        Box::pin(async move {
            let selected = match selected {
                Ok(selected) => selected,
                Err(refused) => return R::answer(ServiceError::Breaker(refused)),
            };
            let breaker = shared.selector.breaker(&selected);
            // The inner call is made only once the breaker has admitted it:
            // a refused request never reaches the inner service.
            let call = async move { ready.call(request).await };
            match breaker.call_async_with(&shared.options, call).await {
                Ok(response) => Ok(response),
                Err(error) => R::answer(error.into()),
            }
        })
    }
}

impl<S, Sel, Fb, Q, C, R> CircuitBreakerService<S, Sel, CallOptions<Fb, Q, C>, R> {
    /// Answers a call `poll_ready` found refused, through the breaker's
    /// fallback, without the inner service.
    #[cold]
    #[inline(never)]
    fn refuse<Req>(
        &self,
        request: Req,
        reason: FallbackReason,
    ) -> ResponseFuture<S::Response, R::Error>
    where
        S: Service<Req>,
        S::Response: Send + 'static,
        S::Error: Send + 'static,
        Sel: SelectBreaker<Req>,
        Fb: AsyncFallbackFor<S::Response, S::Error> + Send + Sync + 'static,
        Fb::Future: Send,
        Q: Send + Sync + 'static,
        C: Send + Sync + 'static,
        R: Rejections<S::Response, S::Error>,
    {
        let shared = Arc::clone(&self.shared);
        let selected = shared.selector.select(&request);
        drop(request);
        Box::pin(async move {
            let selected = match selected {
                Ok(selected) => selected,
                Err(refused) => return R::answer(ServiceError::Breaker(refused)),
            };
            let breaker = shared.selector.breaker(&selected);
            match breaker.refuse_async_with(&shared.options, reason).await {
                Ok(response) => Ok(response),
                Err(error) => R::answer(error.into()),
            }
        })
    }
}
