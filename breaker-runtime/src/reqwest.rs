//! A reqwest client whose every request goes through a breaker: a
//! [`reqwest_middleware::Middleware`] (feature `reqwest`).
//!
//! ```no_run
//! use breaker_runtime::{CircuitBreakerConfig, registry};
//! use breaker_runtime::reqwest::BreakerMiddleware;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hosts = registry().family("api-hosts", CircuitBreakerConfig::default())?;
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(BreakerMiddleware::per_host(hosts))
//!     .build();
//! let response = client.get("http://127.0.0.1:8080/health").send().await?;
//! # Ok(()) }
//! ```
//!
//! Each request runs through [`CircuitBreaker::call_async_with`], the
//! engine the attribute uses, so the breaker's `timeout_duration`, rate
//! limit, metrics and events apply to it as to any call.
//!
//! # What counts
//!
//! * A response is judged by an [`HttpClassifier`] (the default one unless
//!   [`BreakerMiddleware::classifier`] sets another): 5xx and 408 are
//!   failures (408 and 504 as timeouts), 429 opens the circuit for its
//!   `Retry-After`, any other 4xx is ignored, the rest are successes.
//!   Either way the response reaches the caller as it came: a 500 is still
//!   `Ok(response)`.
//! * A transport error counts too, as the classifier's
//!   [`classify_transport`](HttpClassifier::classify_transport) says, and
//!   reaches the caller as it came. By default a timeout of the client's
//!   own (`reqwest::ClientBuilder::timeout`, or a connect timeout) is a
//!   [`Timeout`](crate::FailureType::Timeout) failure; a refused or reset
//!   connection ([`TransportFailure::Connect`]), and any other transport
//!   error ([`TransportFailure::Other`]), an
//!   [`Error`](crate::FailureType::Error) failure. A request reqwest could
//!   not build (a bad URL) is ignored: it never left.
//! * An error from a middleware further down the chain is looked into
//!   before it is judged: reqwest's error (or reqwest-middleware's) down
//!   its source chain counts as above, as does an `io::Error` that timed
//!   out (`Timeout`) or was refused (`Connect`); one that shows none of
//!   them is [`TransportFailure::Other`]. So reqwest-retry below the
//!   breaker, whose `RetryError::WithRetries` holds reqwest's error as its
//!   source, keeps a client timeout a `Timeout`. Its
//!   `RetryError::Error` (no retry was made) is `#[error(transparent)]`
//!   and hides reqwest's error itself: a client timeout it wraps shows
//!   only reqwest's private timeout type, and counts as `Other`.
//! * The breaker's own `timeout_duration` cuts the request (until its
//!   response's head arrives; the body is read later, by the caller, and is
//!   not timed) and is a `Timeout` failure.
//! * A request its caller gives up on (a `select!` or a timeout of the
//!   caller's that drops the future) counts neither way, as a cancelled
//!   call, and gives back the half-open probe slot it held.
//!
//! # The breaker's own errors
//!
//! A request the breaker refuses (an open circuit, its local rate limit,
//! a full family), cuts at its deadline or scores too low is answered with
//! `reqwest_middleware::Error::Middleware`, wrapping a [`BreakerError`]:
//! the error displays as the `BreakerError`, and its source says the
//! breaker answered. [`breaker_error`] finds it, also under another
//! middleware's wrapper (reqwest-retry's `RetryError`), and its
//! [`retry_after`](BreakerError::retry_after) says when to come back; by
//! hand, unwrapped, it is `anyhow_error.downcast_ref::<BreakerError>()`.
//!
//! # With reqwest-retry
//!
//! Put the retries above the breaker (`.with(retry)` before
//! `.with(BreakerMiddleware::..)`): each attempt is then one call through
//! the breaker, so every failed attempt counts, and once the circuit opens
//! the next attempt is refused at once. reqwest-retry's default strategy
//! treats every middleware error as fatal, so a refusal ends the retries
//! rather than sending more requests to a host known to be down, and the
//! caller gets the refusal (wrapped in `RetryError`; [`breaker_error`]
//! finds it).
//!
//! The breaker's own `timeout_duration` reaches reqwest-retry the same way,
//! as a middleware error, fatal to its default strategy: not retried,
//! unlike a timeout of reqwest's own. To retry it, give reqwest-retry a
//! strategy that asks [`breaker_error`]:
//!
//! ```
//! use std::time::Duration;
//! use breaker_runtime::reqwest::{BreakerMiddleware, breaker_error};
//! use breaker_runtime::{BreakerError, CircuitBreakerConfig, Family};
//! use reqwest_retry::policies::ExponentialBackoff;
//! use reqwest_retry::{RetryTransientMiddleware, Retryable, RetryableStrategy};
//!
//! /// reqwest-retry's default strategy, and the breaker's timeout retried.
//! struct RetryBreakerTimeouts;
//!
//! impl RetryableStrategy for RetryBreakerTimeouts {
//!     fn handle(&self, result: &reqwest_middleware::Result<reqwest::Response>) -> Option<Retryable> {
//!         match result {
//!             Err(error) if matches!(breaker_error(error), Some(BreakerError::Timeout { .. })) => {
//!                 Some(Retryable::Transient)
//!             }
//!             Ok(response) => reqwest_retry::default_on_request_success(response),
//!             Err(error) => reqwest_retry::default_on_request_failure(error),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! # // A server that takes every connection and never answers.
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let server = listener.local_addr()?;
//! # tokio::spawn(async move {
//! #     let mut held = Vec::new();
//! #     while let Ok((socket, _)) = listener.accept().await {
//! #         held.push(socket);
//! #     }
//! # });
//! let config = CircuitBreakerConfig::builder()
//!     .timeout_duration(Duration::from_millis(50))
//!     .build()?;
//! let hosts = Family::new("retry-doc", config)?;
//! let policy = ExponentialBackoff::builder()
//!     .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
//!     .build_with_max_retries(2);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryTransientMiddleware::new_with_policy_and_strategy(policy, RetryBreakerTimeouts))
//!     .with(BreakerMiddleware::per_host(hosts.clone()))
//!     .build();
//!
//! let error = client.get(format!("http://{server}/")).send().await.unwrap_err();
//! assert!(matches!(breaker_error(&error), Some(BreakerError::Timeout { .. })));
//! let timeouts = hosts.get(&server).unwrap().get_metrics().failures_by_type.timeout;
//! assert_eq!(timeouts, 3, "the request and two retries, each cut by the breaker");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Retries below the breaker instead put every attempt and every backoff
//! wait into one breaker call: the breaker's `timeout_duration` cuts the
//! whole sequence, three 500s in a row count as one failure, and an open
//! circuit refuses the request before any attempt.

use std::borrow::Cow;
use std::fmt;

use ::http::Extensions;
use ::reqwest::{Request, Response};
use ::reqwest_middleware::{Error, Middleware, Next};

use crate::http::{HttpClassifier, TransportFailure};
use crate::{
    AsyncFallbackFor, BreakerError, BreakerFailure, CallError, CallOptions, CircuitBreaker,
    FallbackReason, Family, KeyText, Outcome, QualityFor,
};

/// Puts every request of a `reqwest_middleware` client through a breaker:
/// one per host (the default, [`per_host`](Self::per_host)), one for every
/// request ([`single`](Self::single)), or one per key of your own
/// ([`keyed`](Self::keyed)). See the [module docs](self) for what counts as
/// a failure.
///
/// ```
/// use std::net::TcpListener;
/// use breaker_runtime::reqwest::{BreakerMiddleware, breaker_error};
/// use breaker_runtime::{BreakerError, CircuitBreakerConfig, CircuitState, Family};
///
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// // A port nobody listens on: every connection is refused.
/// let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
/// let config = CircuitBreakerConfig::builder().failure_threshold(2).build()?;
/// let hosts = Family::new("reqwest-doc-hosts", config)?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(BreakerMiddleware::per_host(hosts.clone()))
///     .build();
/// let url = format!("http://{closed}/");
///
/// for _ in 0..2 {
///     let refused = client.get(&url).send().await.unwrap_err();
///     assert!(refused.is_connect(), "reqwest's own error, as it came: {refused}");
/// }
/// let member = hosts.get(&closed).expect("keyed by host:port");
/// assert_eq!(member.state(), CircuitState::Open);
///
/// // Now the request is not made: the breaker answers.
/// let rejected = client.get(&url).send().await.unwrap_err();
/// let open = breaker_error(&rejected).expect("the breaker's error");
/// assert!(matches!(open, BreakerError::Open { .. }));
/// assert!(open.retry_after().is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BreakerMiddleware {
    breakers: Breakers,
    classifier: HttpClassifier,
    quality: Option<Box<ScoreResponse>>,
    fallback: Option<Box<ServeResponse>>,
}

/// A quality evaluator of responses.
type ScoreResponse = dyn Fn(&Response) -> f64 + Send + Sync;

/// A fallback that answers in the host's place.
type ServeResponse = dyn Fn(&FallbackReason) -> Option<Response> + Send + Sync;

/// Which breaker a request goes through.
enum Breakers {
    Single(CircuitBreaker),
    PerHost(Family),
    Keyed {
        family: Family,
        key: Box<dyn Fn(&Request) -> KeyText + Send + Sync>,
    },
}

impl BreakerMiddleware {
    /// One breaker per host: each request goes through `family`'s member
    /// for its URL's `host:port` (`127.0.0.1:8080`, `api.example.com:443`;
    /// the port is the scheme's default when the URL has none), so an
    /// outage of one host opens its circuit and no other. The key is
    /// [`http::host_key`](crate::http::host_key)'s, the tower layer's too:
    /// the host lowercased, a trailing dot dropped, so one upstream has one
    /// breaker and one name, however a URL spells it.
    ///
    /// Take the family from the registry
    /// ([`registry().family(..)`](crate::Registry::family)) to see its
    /// members in the status, the metrics and the dashboard.
    ///
    /// ```
    /// use breaker_runtime::reqwest::BreakerMiddleware;
    /// use breaker_runtime::{CircuitBreakerConfig, registry};
    ///
    /// let hosts = registry().family("per-host-doc", CircuitBreakerConfig::default())?;
    /// let middleware = BreakerMiddleware::per_host(hosts);
    /// let request = reqwest::Request::new(reqwest::Method::GET, "https://api.example.com/v1".parse()?);
    /// let breaker = middleware.breaker_for(&request)?;
    /// assert_eq!(breaker.name(), "per-host-doc[api.example.com:443]");
    /// let shouted = reqwest::Request::new(reqwest::Method::GET, "https://API.Example.com.:443/v2".parse()?);
    /// assert!(middleware.breaker_for(&shouted)?.ptr_eq(&breaker));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn per_host(family: Family) -> Self {
        Self::with_breakers(Breakers::PerHost(family))
    }

    /// Every request through the one `breaker`, whatever its host.
    ///
    /// ```
    /// use breaker_runtime::reqwest::BreakerMiddleware;
    /// use breaker_runtime::{CircuitBreakerConfig, registry};
    ///
    /// let payments = registry().get_or_register("single-doc", CircuitBreakerConfig::default())?;
    /// let middleware = BreakerMiddleware::single(payments.clone());
    /// let request = reqwest::Request::new(reqwest::Method::POST, "http://10.0.0.7/pay".parse()?);
    /// assert!(middleware.breaker_for(&request)?.ptr_eq(&payments));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn single(breaker: CircuitBreaker) -> Self {
        Self::with_breakers(Breakers::Single(breaker))
    }

    /// One breaker per key that `key` gives for a request: `family`'s
    /// member for the key's `Display` text. A key that prints within 64
    /// bytes costs no allocation to look up.
    ///
    /// ```
    /// use breaker_runtime::reqwest::BreakerMiddleware;
    /// use breaker_runtime::{CircuitBreakerConfig, Family};
    ///
    /// // One breaker per API, by the URL's first path segment.
    /// let apis = Family::new("keyed-doc", CircuitBreakerConfig::default())?;
    /// let middleware = BreakerMiddleware::keyed(apis, |request: &reqwest::Request| {
    ///     let mut segments = request.url().path_segments().into_iter().flatten();
    ///     segments.next().unwrap_or_default().to_owned()
    /// });
    /// let request = reqwest::Request::new(reqwest::Method::GET, "http://gateway/search/q?x=1".parse()?);
    /// assert_eq!(middleware.breaker_for(&request)?.name(), "keyed-doc[search]");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn keyed<K, F>(family: Family, key: F) -> Self
    where
        K: fmt::Display,
        F: Fn(&Request) -> K + Send + Sync + 'static,
    {
        Self::with_breakers(Breakers::Keyed {
            family,
            key: Box::new(move |request| KeyText::new(&key(request))),
        })
    }

    fn with_breakers(breakers: Breakers) -> Self {
        Self {
            breakers,
            classifier: HttpClassifier::new(),
            quality: None,
            fallback: None,
        }
    }

    /// Judges responses and transport errors with `classifier` instead of
    /// the default [`HttpClassifier`].
    ///
    /// ```
    /// use breaker_runtime::http::{HttpClassifier, Verdict};
    /// use breaker_runtime::reqwest::BreakerMiddleware;
    /// use breaker_runtime::{CircuitBreakerConfig, CircuitState, FailureType, Family};
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// # // A server whose every answer is a 404.
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let server = listener.local_addr()?;
    /// # tokio::spawn(async move {
    /// #     while let Ok((mut socket, _)) = listener.accept().await {
    /// #         let _ = socket.read(&mut [0; 1024]).await;
    /// #         let _ = socket.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
    /// #     }
    /// # });
    /// // This API answers 404 while its index rebuilds: a failure, here.
    /// let classifier = HttpClassifier::builder()
    ///     .status(reqwest::StatusCode::NOT_FOUND, Verdict::Failure(FailureType::Error))
    ///     .build()?;
    /// let config = CircuitBreakerConfig::builder().failure_threshold(1).build()?;
    /// let hosts = Family::new("classifier-doc", config)?;
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(BreakerMiddleware::per_host(hosts.clone()).classifier(classifier))
    ///     .build();
    ///
    /// let response = client.get(format!("http://{server}/items/7")).send().await?;
    /// assert_eq!(response.status(), 404, "the response still reaches the caller");
    /// assert_eq!(hosts.get(&server).unwrap().state(), CircuitState::Open);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn classifier(mut self, classifier: HttpClassifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Scores each response the classifier calls a success with
    /// `quality`, in `[0, 1]`: one below the breaker's `quality_threshold`
    /// (or NaN, or outside `[0, 1]`) is a
    /// [`QualityThreshold`](crate::FailureType::QualityThreshold) failure,
    /// and the caller gets [`BreakerError::LowQuality`] in its place, as
    /// from any call through the breaker with no fallback.
    ///
    /// ```
    /// use breaker_runtime::reqwest::{BreakerMiddleware, breaker_error};
    /// use breaker_runtime::{BreakerError, CircuitBreakerConfig, Family};
    /// # use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// # // A server whose every answer is a 200 marked stale.
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let server = listener.local_addr()?;
    /// # tokio::spawn(async move {
    /// #     while let Ok((mut socket, _)) = listener.accept().await {
    /// #         let _ = socket.read(&mut [0; 1024]).await;
    /// #         let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nx-stale: 1\r\ncontent-length: 0\r\n\r\n").await;
    /// #     }
    /// # });
    /// let hosts = Family::new("quality-doc", CircuitBreakerConfig::default())?;
    /// // A cache that answers stale says so in a header: not good enough.
    /// let middleware = BreakerMiddleware::per_host(hosts.clone()).quality(|response| {
    ///     if response.headers().contains_key("x-stale") { 0.2 } else { 1.0 }
    /// });
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(middleware)
    ///     .build();
    ///
    /// let error = client.get(format!("http://{server}/")).send().await.unwrap_err();
    /// let low = breaker_error(&error).expect("the breaker's error");
    /// assert!(matches!(low, BreakerError::LowQuality { score, .. } if *score == 0.2));
    /// let member = hosts.get(&server).unwrap();
    /// assert_eq!(member.get_metrics().failures_by_type.quality_threshold, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quality(mut self, quality: impl Fn(&Response) -> f64 + Send + Sync + 'static) -> Self {
        self.quality = Some(Box::new(quality));
        self
    }

    /// Answers with `fallback`'s response whenever the breaker refuses a
    /// request or the request fails, as the attribute's `fallback` does;
    /// [`FallbackReason`] says which. Returning `None` lets the original
    /// answer through: the failed response or reqwest's error, or the
    /// breaker's own error for a refused request. A family's refusal of a
    /// new key is not served: no breaker is there to run the fallback.
    ///
    /// Build the response from an `http::Response`: reqwest converts one
    /// whose body is a `String`, `&'static str`, `Vec<u8>` or `Bytes`.
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use breaker_runtime::reqwest::BreakerMiddleware;
    /// use breaker_runtime::{CircuitBreakerConfig, FallbackReason, Family};
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    /// let config = CircuitBreakerConfig::builder().failure_threshold(1).build()?;
    /// let hosts = Family::new("fallback-doc", config)?;
    /// // While the circuit is open, an empty list instead of an error;
    /// // failures themselves still reach the caller.
    /// let middleware = BreakerMiddleware::per_host(hosts.clone()).fallback(|reason: &FallbackReason| {
    ///     let empty = http::Response::builder().header("x-fallback", "1").body("[]").ok()?;
    ///     reason.is_rejection().then(|| reqwest::Response::from(empty))
    /// });
    /// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
    ///     .with(middleware)
    ///     .build();
    /// let url = format!("http://{closed}/items");
    ///
    /// assert!(client.get(&url).send().await.unwrap_err().is_connect(), "the failure, as it came");
    /// let served = client.get(&url).send().await?;
    /// assert_eq!(served.headers()["x-fallback"], "1");
    /// assert_eq!(served.text().await?, "[]");
    /// assert_eq!(hosts.get(&closed).unwrap().get_metrics().fallback_calls, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fallback(
        mut self,
        fallback: impl Fn(&FallbackReason) -> Option<Response> + Send + Sync + 'static,
    ) -> Self {
        self.fallback = Some(Box::new(fallback));
        self
    }

    /// The breaker `request` goes through, created if its key is new.
    ///
    /// # Errors
    /// The family's refusal of a new key ([`BreakerError::FamilyFull`],
    /// [`BreakerError::KeyTooLong`]), which the middleware answers the
    /// request with, without making it.
    pub fn breaker_for(&self, request: &Request) -> Result<CircuitBreaker, BreakerError> {
        self.breaker_of(request).map(Cow::into_owned)
    }

    /// [`breaker_for`](Self::breaker_for), borrowing the `single` breaker
    /// rather than cloning its `Arc` for every request.
    fn breaker_of(&self, request: &Request) -> Result<Cow<'_, CircuitBreaker>, BreakerError> {
        match &self.breakers {
            Breakers::Single(breaker) => Ok(Cow::Borrowed(breaker)),
            Breakers::PerHost(family) => family.breaker_text(&host_key(request)).map(Cow::Owned),
            Breakers::Keyed { family, key } => family.breaker_text(&key(request)).map(Cow::Owned),
        }
    }

    /// How a finished request counts.
    fn outcome(&self, result: &Result<Response, Error>) -> Outcome {
        match result {
            Ok(response) => self
                .classifier
                .classify(response.status(), response.headers()),
            Err(error) => match transport_failure(error) {
                Some(failure) => self.classifier.classify_transport(failure),
                // Never sent: the caller's mistake, not the host's.
                None => Outcome::Ignored,
            },
        }
    }
}

/// How a request that got no response failed, or `None` if it never left
/// (reqwest could not build it).
///
/// A middleware between the breaker and reqwest may wrap reqwest's error
/// in its own (reqwest-retry's `RetryError`, as `Error::Middleware`), so
/// the kind is looked for down the wrapper's source chain: reqwest's or
/// reqwest-middleware's error, or an `io::Error` that timed out or was
/// refused. A wrapper that shows none of them is
/// [`TransportFailure::Other`].
fn transport_failure(error: &Error) -> Option<TransportFailure> {
    match error {
        Error::Reqwest(error) => reqwest_failure(error),
        Error::Middleware(error) => error
            .chain()
            .find_map(cause_failure)
            .unwrap_or(Some(TransportFailure::Other)),
    }
}

/// [`transport_failure`] of one link of a source chain; `None` when the
/// link does not say.
fn cause_failure(cause: &(dyn std::error::Error + 'static)) -> Option<Option<TransportFailure>> {
    if let Some(error) = cause.downcast_ref::<Error>() {
        return Some(transport_failure(error));
    }
    if let Some(error) = cause.downcast_ref::<::reqwest::Error>() {
        return Some(reqwest_failure(error));
    }
    // An `io::Error` that timed out or was refused, or a tokio timer's.
    crate::http::one_transport_failure(cause).map(Some)
}

/// [`transport_failure`] of reqwest's own error.
fn reqwest_failure(error: &::reqwest::Error) -> Option<TransportFailure> {
    Some(if error.is_builder() {
        return None;
    } else if error.is_timeout() {
        // A connect timeout is both: the timeout decides.
        TransportFailure::Timeout
    } else if error.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Other
    })
}

/// The middleware's quality evaluator, if it has one.
struct Score<'a>(Option<&'a ScoreResponse>);

impl QualityFor<Response> for Score<'_> {
    fn score(&self, response: &Response) -> Option<f64> {
        self.0.map(|score| score(response))
    }
}

/// The middleware's fallback, if it has one: it answers at once.
struct Serve<'a>(Option<&'a ServeResponse>);

impl AsyncFallbackFor<Response, Error> for Serve<'_> {
    type Future = std::future::Ready<Result<Response, Error>>;

    fn serve(&self, reason: &FallbackReason) -> Option<Self::Future> {
        let response = self.0.and_then(|serve| serve(reason))?;
        Some(std::future::ready(Ok(response)))
    }
}

/// The request's host as [`http::host_key`](crate::http::host_key) names
/// it, as the tower layer does, on the stack.
fn host_key(request: &Request) -> KeyText {
    let url = request.url();
    let host = url.host_str().unwrap_or_default();
    crate::http::host_key(Some(url.scheme()), host, url.port())
}

#[async_trait::async_trait]
impl Middleware for BreakerMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let breaker = self.breaker_of(&request).map_err(answered)?;
        let options = CallOptions::new()
            .classify(|result: &Result<Response, Error>| self.outcome(result))
            .quality(Score(self.quality.as_deref()))
            .fallback(Serve(self.fallback.as_deref()));
        // Made only once admitted: a refused request builds nothing.
        let send = async move { next.run(request, extensions).await };
        match breaker.call_async_with(&options, send).await {
            Ok(response) => Ok(response),
            Err(CallError::Inner(error)) => Err(error),
            Err(CallError::Breaker(failure)) => Err(match *failure {
                BreakerFailure::Breaker(error) => answered(error),
                // A fallback returns responses, never errors; were one to
                // come, it would be the request's own kind all the same.
                BreakerFailure::FallbackFailed(failed) => failed.error,
            }),
        }
    }
}

/// The [`BreakerError`] in a `reqwest_middleware` error, if the breaker
/// answered the request: it was refused (open circuit, local rate limit,
/// full family), cut at the breaker's deadline or scored too low. Found
/// also where a middleware above the breaker wrapped it (reqwest-retry's
/// `RetryError`, with or without retries; see the
/// [module docs](self#with-reqwest-retry)). `None` for reqwest's own
/// errors and other middlewares'.
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::BreakerError;
/// use breaker_runtime::reqwest::breaker_error;
///
/// let open = BreakerError::Open { name: "api".into(), retry_after: Duration::from_secs(7) };
/// let error = reqwest_middleware::Error::middleware(open.clone());
/// assert_eq!(breaker_error(&error), Some(&open));
/// assert_eq!(breaker_error(&error).and_then(BreakerError::retry_after), Some(Duration::from_secs(7)));
///
/// let other = reqwest_middleware::Error::middleware(std::io::Error::other("not ours"));
/// assert_eq!(breaker_error(&other), None);
/// ```
pub fn breaker_error(error: &Error) -> Option<&BreakerError> {
    let Error::Middleware(error) = error else {
        return None;
    };
    if let Some(ours) = error.downcast_ref::<BreakerError>() {
        return Some(ours);
    }
    // Wrapped by a middleware above this one (reqwest-retry's `RetryError`
    // around the `Error::Middleware` we returned): the copy beneath ours is
    // down the chain, even where a transparent wrapper skipped ours.
    let Answered(ours) = error.chain().find_map(|cause| cause.downcast_ref())?;
    Some(ours)
}

/// The breaker's `error` as the middleware returns it:
/// `Error::Middleware` whose `anyhow::Error` downcasts to the
/// [`BreakerError`] and displays it, with an [`Answered`] copy as its
/// source. A wrapper that forwards only the source, as `#[error(transparent)]`
/// does, still carries the copy to [`breaker_error`].
fn answered(error: BreakerError) -> Error {
    let beneath = Answered(error.clone());
    Error::Middleware(::anyhow::Error::new(beneath).context(error))
}

/// The source of the breaker's error in a `reqwest_middleware` error: a
/// copy of it, found by [`breaker_error`] in a chain where the error itself
/// was skipped. Its message says who answered.
#[derive(Debug)]
struct Answered(BreakerError);

impl fmt::Display for Answered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("returned by the circuit breaker middleware in place of the host's answer")
    }
}

impl std::error::Error for Answered {}

impl fmt::Debug for BreakerMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("BreakerMiddleware");
        match &self.breakers {
            Breakers::Single(breaker) => debug.field("breaker", breaker),
            Breakers::PerHost(family) => debug.field("per_host", family),
            Breakers::Keyed { family, .. } => debug.field("keyed", family),
        };
        debug
            .field("classifier", &self.classifier)
            .field("quality", &self.quality.is_some())
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}
