//! HTTP and gRPC classification (feature `http`): how a response, or a
//! request that got none, counts against the service that answered.
//!
//! One place for the rules the tower layer, the reqwest middleware and the
//! agent's own LLM client share:
//!
//! | What came back | Default [`Outcome`] |
//! |---|---|
//! | 5xx (except 504) | [`Failure(Error)`](FailureType::Error) |
//! | 408 Request Timeout, 504 Gateway Timeout | [`Failure(Timeout)`](FailureType::Timeout) |
//! | 429 Too Many Requests | [`DependencyRateLimited`](Outcome::DependencyRateLimited), `retry_after` from `Retry-After` |
//! | any other 4xx | [`Ignored`](Outcome::Ignored): the caller's mistake |
//! | 1xx, 2xx, 3xx | [`Success`](Outcome::Success) |
//! | a transport timeout | [`Failure(Timeout)`](FailureType::Timeout) |
//! | a connection (or other transport) error | [`Failure(Error)`](FailureType::Error) |
//!
//! These are **client-side** rules: they judge the service a client
//! called by what it answered. On a **server** (the tower layer around an
//! axum router) a 408 or a 429 is the server's verdict on one client (too
//! slow to send its request, over its own quota), not a sign of the
//! server's health: counted, one abusive client's `429 Retry-After: 600`
//! would open the circuit for ten minutes and every other client would be
//! refused. There use [`HttpClassifier::server`] (only 5xx fail, every 4xx
//! is ignored, as tower-http's `ServerErrorsAsFailures`) and
//! [`GrpcClassifier::server`].
//!
//! An error of the service instead of a response is a transport failure
//! of the kind [`transport_failure`] finds in its source chain (tower's
//! `Elapsed` and an `io::Error` of kind `TimedOut` are timeouts).
//!
//! 408 and 504 are timeouts rather than errors because that is what they
//! report: someone on the way gave up waiting. Both count against the
//! circuit like any failure; the type only decides which bucket of
//! [`Metrics::failures_by_type`](crate::Metrics::failures_by_type) an
//! operator sees them in.
//!
//! # `Retry-After` and the breaker's cap
//!
//! [`parse_retry_after`] reads delta-seconds and HTTP dates and saturates
//! instead of failing: "99999999999999999999" is a very long wait, not an
//! error. It does not cap the wait itself. The breaker does, when the
//! outcome reaches it: an [`Outcome::DependencyRateLimited`] opens the
//! circuit for `retry_after`, capped by the breaker's
//! [`max_retry_after`](crate::CircuitBreakerConfig::max_retry_after)
//! (one hour by default) and, with backoff, by its
//! [`max_open_duration`](crate::Backoff::max_open_duration), whichever is
//! smaller. A header cannot hold a circuit open for 30 years.
//!
//! ```
//! use std::time::Duration;
//! use breaker_runtime::http::HttpClassifier;
//! use breaker_runtime::{FailureType, Outcome};
//! use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
//!
//! let classifier = HttpClassifier::default();
//! let mut headers = HeaderMap::new();
//! assert_eq!(
//!     classifier.classify(StatusCode::BAD_GATEWAY, &headers),
//!     Outcome::Failure(FailureType::Error)
//! );
//! assert_eq!(classifier.classify(StatusCode::NOT_FOUND, &headers), Outcome::Ignored);
//! headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
//! assert_eq!(
//!     classifier.classify(StatusCode::TOO_MANY_REQUESTS, &headers),
//!     Outcome::DependencyRateLimited { retry_after: Some(Duration::from_secs(7)) }
//! );
//! ```

use std::any::Any;
use std::error::Error as StdError;
use std::fmt::{self, Write as _};
use std::io;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};

use crate::call::Classify;
use crate::error::{FailureType, Outcome};
use crate::family::KeyText;

/// Reads a `Retry-After` value: whole seconds (`"7"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`), measured from `now`.
///
/// A date already past means "retry now", [`Duration::ZERO`]. A number of
/// seconds too large for a `u64` saturates to `u64::MAX` seconds; nothing
/// overflows or panics. The wait is not capped here: the breaker caps it
/// with its `max_retry_after` when the circuit opens (see the
/// [module docs](self)). Anything else (negative, fractional or
/// non-numeric values, malformed dates, an empty value) is `None`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use breaker_runtime::http::parse_retry_after;
///
/// let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
/// assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
///     Some(Duration::from_secs(30))
/// );
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
/// assert_eq!(
///     parse_retry_after("99999999999999999999", now),
///     Some(Duration::from_secs(u64::MAX))
/// );
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: a number too large for `u64` is still "very long".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` header of `headers`, read by [`parse_retry_after`]
/// against `now`; `None` when it is absent, not visible ASCII, or
/// unreadable.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use breaker_runtime::http::retry_after;
/// use http::{HeaderMap, HeaderValue, header::RETRY_AFTER};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(retry_after(&headers, SystemTime::now()), None);
/// headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
/// assert_eq!(retry_after(&headers, SystemTime::now()), Some(Duration::from_secs(120)));
/// ```
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// What a classifier rule makes of a response.
///
/// ```
/// use breaker_runtime::http::{HttpClassifier, Verdict};
/// use breaker_runtime::FailureType;
/// use http::StatusCode;
///
/// let classifier = HttpClassifier::new();
/// assert_eq!(classifier.verdict(StatusCode::TOO_MANY_REQUESTS), Verdict::RateLimited);
/// assert_eq!(classifier.verdict(StatusCode::INTERNAL_SERVER_ERROR), Verdict::Failure(FailureType::Error));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The service is healthy.
    Success,
    /// Counts neither way: the caller's own mistake.
    Ignored,
    /// The service failed in this way.
    Failure(FailureType),
    /// The service asked for fewer requests: an
    /// [`Outcome::DependencyRateLimited`] whose `retry_after` is read from
    /// the response's `Retry-After` header.
    RateLimited,
}

impl Verdict {
    fn outcome(self, headers: &HeaderMap, now: impl FnOnce() -> SystemTime) -> Outcome {
        match self {
            Self::Success => Outcome::Success,
            Self::Ignored => Outcome::Ignored,
            Self::Failure(failure_type) => Outcome::Failure(failure_type),
            Self::RateLimited => Outcome::DependencyRateLimited {
                retry_after: retry_after(headers, now()),
            },
        }
    }
}

/// The key of one upstream host: its host lowercased (a trailing dot
/// dropped) and its port, or the scheme's default port when the URL gives
/// none (`http`/`ws` 80, `https`/`wss` 443), as `host:port`. A scheme with
/// no known default and no port gives `host` alone.
///
/// `HTTP://API.Example./`, `http://api.example:80/` and
/// `http://api.example/` are one host, so one key (`api.example:80`) and
/// one breaker. The tower layer's [`authority`](crate::tower) key and the
/// reqwest middleware's `per_host` both name hosts with it, so one upstream
/// has one name in metrics and dashboards whichever adapter called it. The
/// key is written on the stack (a [`KeyText`]); nothing is allocated for a
/// host of up to 64 bytes.
///
/// ```
/// use breaker_runtime::http::host_key;
///
/// assert_eq!(host_key(Some("http"), "UP.example", None).as_str(), "up.example:80");
/// assert_eq!(host_key(Some("HTTPS"), "up.example.", None).as_str(), "up.example:443");
/// assert_eq!(host_key(Some("http"), "up.example", Some(8080)).as_str(), "up.example:8080");
/// assert_eq!(host_key(Some("http"), "[::1]", Some(3000)).as_str(), "[::1]:3000");
/// assert_eq!(host_key(None, "up.example", None).as_str(), "up.example");
/// ```
pub fn host_key(scheme: Option<&str>, host: &str, port: Option<u16>) -> KeyText {
    let host = host.strip_suffix('.').unwrap_or(host);
    let port = port.or_else(|| scheme.and_then(default_port));
    let mut key = KeyText::from_text("");
    for c in host.chars() {
        // Writing to a `KeyText` cannot fail.
        let _ = key.write_char(c.to_ascii_lowercase());
    }
    if let Some(port) = port {
        let _ = write!(key, ":{port}");
    }
    key
}

/// [`host_key`] of a URI with an authority (a client's request URI);
/// `None` for one without (a server's `/path`).
///
/// ```
/// use breaker_runtime::http::uri_host_key;
///
/// let uri: http::Uri = "http://UP.example/v1".parse().unwrap();
/// assert_eq!(uri_host_key(&uri).unwrap().as_str(), "up.example:80");
/// let path: http::Uri = "/v1".parse().unwrap();
/// assert!(uri_host_key(&path).is_none());
/// ```
pub fn uri_host_key(uri: &http::Uri) -> Option<KeyText> {
    let host = uri.host()?;
    Some(host_key(uri.scheme_str(), host, uri.port_u16()))
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

/// Why a request got no response, for
/// [`HttpClassifier::classify_transport`]. A client maps its own error
/// type onto it; the reqwest middleware does so from `reqwest::Error`'s
/// `is_timeout` and `is_connect`.
///
/// ```
/// use breaker_runtime::http::{HttpClassifier, TransportFailure};
/// use breaker_runtime::{FailureType, Outcome};
///
/// // e.g. from `reqwest::Error`: timeouts first, then connection errors.
/// let (is_timeout, is_connect) = (false, true);
/// let failure = if is_timeout {
///     TransportFailure::Timeout
/// } else if is_connect {
///     TransportFailure::Connect
/// } else {
///     TransportFailure::Other
/// };
/// assert_eq!(HttpClassifier::new().classify_transport(failure), Outcome::Failure(FailureType::Error));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// The request or the connection timed out.
    Timeout,
    /// No connection could be made (refused, reset, DNS, TLS).
    Connect,
    /// Any other transport error: a connection broken mid-response, a
    /// malformed response.
    Other,
}

/// A status range that cannot be a rule: empty, or outside 100..=999.
///
/// ```
/// use breaker_runtime::http::{HttpClassifier, StatusRangeError, Verdict};
///
/// let error = HttpClassifier::builder().status_range(500..=1000, Verdict::Ignored).build();
/// assert_eq!(error.unwrap_err(), StatusRangeError { start: 500, end: 1000 });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`status_range` {start}..={end} is not a range of HTTP status codes: give codes from 100 to 999, start no greater than end"
)]
pub struct StatusRangeError {
    /// The range's first code.
    pub start: u16,
    /// The range's last code.
    pub end: u16,
}

const SERVER_RULES: [(RangeInclusive<u16>, Verdict); 3] = [
    (400..=499, Verdict::Ignored),
    (500..=599, Verdict::Failure(FailureType::Error)),
    (504..=504, Verdict::Failure(FailureType::Timeout)),
];

const DEFAULT_RULES: [(RangeInclusive<u16>, Verdict); 5] = [
    (400..=499, Verdict::Ignored),
    (408..=408, Verdict::Failure(FailureType::Timeout)),
    (429..=429, Verdict::RateLimited),
    (500..=599, Verdict::Failure(FailureType::Error)),
    (504..=504, Verdict::Failure(FailureType::Timeout)),
];

/// Classifies HTTP responses (and transport failures) into [`Outcome`]s.
///
/// Rules map status ranges to [`Verdict`]s; the last rule that covers a
/// status wins, and a status no rule covers is a success. The default
/// rules are in the [module docs](self); [`builder`](Self::builder)
/// starts from them and [`empty`](Self::empty) from none.
///
/// ```
/// use breaker_runtime::http::{HttpClassifier, Verdict};
/// use breaker_runtime::{FailureType, Outcome};
/// use http::{HeaderMap, StatusCode};
///
/// // 408 and 429 say nothing about this service; 404 is its failure.
/// let classifier = HttpClassifier::builder()
///     .request_timeout_counts(false)
///     .too_many_requests_counts(false)
///     .status(StatusCode::NOT_FOUND, Verdict::Failure(FailureType::Error))
///     .build()?;
/// let headers = HeaderMap::new();
/// assert_eq!(classifier.classify(StatusCode::REQUEST_TIMEOUT, &headers), Outcome::Ignored);
/// assert_eq!(classifier.classify(StatusCode::TOO_MANY_REQUESTS, &headers), Outcome::Ignored);
/// assert_eq!(
///     classifier.classify(StatusCode::NOT_FOUND, &headers),
///     Outcome::Failure(FailureType::Error)
/// );
/// # Ok::<(), breaker_runtime::http::StatusRangeError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HttpClassifier {
    /// Checked from the last: a later rule overrides an earlier one.
    rules: Vec<(RangeInclusive<u16>, Verdict)>,
    timeout: Verdict,
    connect: Verdict,
    other_transport: Verdict,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self {
            rules: DEFAULT_RULES.to_vec(),
            timeout: Verdict::Failure(FailureType::Timeout),
            connect: Verdict::Failure(FailureType::Error),
            other_transport: Verdict::Failure(FailureType::Error),
        }
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClassifier")
            .field("rules", &self.rules)
            .field("timeout", &self.timeout)
            .field("connect", &self.connect)
            .field("other_transport", &self.other_transport)
            .finish()
    }
}

impl HttpClassifier {
    /// The default rules (see the [module docs](self)).
    ///
    /// ```
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::{FailureType, Outcome};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let headers = HeaderMap::new();
    /// let outcome = HttpClassifier::new().classify(StatusCode::GATEWAY_TIMEOUT, &headers);
    /// assert_eq!(outcome, Outcome::Failure(FailureType::Timeout));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The rules for a **server**'s own responses (the tower layer around
    /// an axum router): 5xx fail (504 as a timeout), every 4xx is ignored,
    /// 408 and 429 included, since on a server they judge one client, not
    /// the server; everything else succeeds. Errors of the service count
    /// as [`new`](Self::new)'s do. See the [module docs](self).
    ///
    /// ```
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::{FailureType, Outcome};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let server = HttpClassifier::server();
    /// let headers = HeaderMap::new();
    /// assert_eq!(server.classify(StatusCode::TOO_MANY_REQUESTS, &headers), Outcome::Ignored);
    /// assert_eq!(server.classify(StatusCode::REQUEST_TIMEOUT, &headers), Outcome::Ignored);
    /// assert_eq!(
    ///     server.classify(StatusCode::INTERNAL_SERVER_ERROR, &headers),
    ///     Outcome::Failure(FailureType::Error)
    /// );
    /// assert_eq!(
    ///     server.classify(StatusCode::GATEWAY_TIMEOUT, &headers),
    ///     Outcome::Failure(FailureType::Timeout)
    /// );
    /// ```
    pub fn server() -> Self {
        Self {
            rules: SERVER_RULES.to_vec(),
            ..Self::default()
        }
    }

    /// A builder that starts from the default rules.
    ///
    /// ```
    /// use breaker_runtime::http::{HttpClassifier, Verdict};
    /// use breaker_runtime::Outcome;
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let classifier = HttpClassifier::builder()
    ///     .status_range(500..=599, Verdict::Ignored)
    ///     .build()?;
    /// let headers = HeaderMap::new();
    /// assert_eq!(classifier.classify(StatusCode::BAD_GATEWAY, &headers), Outcome::Ignored);
    /// # Ok::<(), breaker_runtime::http::StatusRangeError>(())
    /// ```
    pub fn builder() -> HttpClassifierBuilder {
        HttpClassifierBuilder {
            classifier: Self::default(),
            error: None,
        }
    }

    /// A builder with no status rules: every status is a success until a
    /// rule says otherwise (like tower-http's `StatusInRangeAsFailures`).
    /// Transport failures keep their defaults.
    ///
    /// ```
    /// use breaker_runtime::http::{HttpClassifier, Verdict};
    /// use breaker_runtime::{FailureType, Outcome};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let classifier = HttpClassifier::empty()
    ///     .status_range(400..=599, Verdict::Failure(FailureType::Error))
    ///     .build()?;
    /// let headers = HeaderMap::new();
    /// assert_eq!(
    ///     classifier.classify(StatusCode::TOO_MANY_REQUESTS, &headers),
    ///     Outcome::Failure(FailureType::Error)
    /// );
    /// assert_eq!(classifier.classify(StatusCode::OK, &headers), Outcome::Success);
    /// # Ok::<(), breaker_runtime::http::StatusRangeError>(())
    /// ```
    pub fn empty() -> HttpClassifierBuilder {
        let mut builder = Self::builder();
        builder.classifier.rules.clear();
        builder
    }

    /// How a response with `status` and `headers` counts, reading an HTTP
    /// date in `Retry-After` against the system clock.
    ///
    /// ```
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::Outcome;
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let headers = HeaderMap::new();
    /// assert_eq!(HttpClassifier::new().classify(StatusCode::OK, &headers), Outcome::Success);
    /// assert_eq!(
    ///     HttpClassifier::new().classify(StatusCode::TOO_MANY_REQUESTS, &headers),
    ///     Outcome::DependencyRateLimited { retry_after: None }
    /// );
    /// ```
    pub fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        self.verdict(status).outcome(headers, SystemTime::now)
    }

    /// [`classify`](Self::classify) with `now` as the time an HTTP date in
    /// `Retry-After` is measured from: for tests, or a clock of your own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::Outcome;
    /// use http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
    ///
    /// let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
    /// let mut headers = HeaderMap::new();
    /// headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:29:00 GMT"));
    /// assert_eq!(
    ///     HttpClassifier::new().classify_at(StatusCode::TOO_MANY_REQUESTS, &headers, now),
    ///     Outcome::DependencyRateLimited { retry_after: Some(Duration::from_secs(60)) }
    /// );
    /// ```
    pub fn classify_at(&self, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
        self.verdict(status).outcome(headers, || now)
    }

    /// [`classify`](Self::classify) for a whole response.
    ///
    /// ```
    /// use breaker_runtime::http::HttpClassifier;
    /// use breaker_runtime::{FailureType, Outcome};
    ///
    /// let response = http::Response::builder().status(503).body(()).unwrap();
    /// assert_eq!(
    ///     HttpClassifier::new().classify_response(&response),
    ///     Outcome::Failure(FailureType::Error)
    /// );
    /// ```
    pub fn classify_response<B>(&self, response: &http::Response<B>) -> Outcome {
        self.classify(response.status(), response.headers())
    }

    /// The verdict of the rules for `status`, before `Retry-After` is read.
    ///
    /// ```
    /// use breaker_runtime::http::{HttpClassifier, Verdict};
    /// use http::StatusCode;
    ///
    /// assert_eq!(HttpClassifier::new().verdict(StatusCode::IM_A_TEAPOT), Verdict::Ignored);
    /// assert_eq!(HttpClassifier::new().verdict(StatusCode::FOUND), Verdict::Success);
    /// ```
    pub fn verdict(&self, status: StatusCode) -> Verdict {
        let code = status.as_u16();
        self.rules
            .iter()
            .rev()
            .find(|(range, _)| range.contains(&code))
            .map_or(Verdict::Success, |(_, verdict)| *verdict)
    }

    /// How a request that got no response counts: by default a timeout is a
    /// [`Failure(Timeout)`](FailureType::Timeout) and a connection or other
    /// transport error a [`Failure(Error)`](FailureType::Error).
    ///
    /// ```
    /// use breaker_runtime::http::{HttpClassifier, TransportFailure};
    /// use breaker_runtime::{FailureType, Outcome};
    ///
    /// let classifier = HttpClassifier::new();
    /// assert_eq!(
    ///     classifier.classify_transport(TransportFailure::Timeout),
    ///     Outcome::Failure(FailureType::Timeout)
    /// );
    /// assert_eq!(
    ///     classifier.classify_transport(TransportFailure::Connect),
    ///     Outcome::Failure(FailureType::Error)
    /// );
    /// ```
    pub fn classify_transport(&self, failure: TransportFailure) -> Outcome {
        let verdict = match failure {
            TransportFailure::Timeout => self.timeout,
            TransportFailure::Connect => self.connect,
            TransportFailure::Other => self.other_transport,
        };
        // No response, so no `Retry-After` to read.
        verdict.outcome(&HeaderMap::new(), SystemTime::now)
    }
}

/// Builds an [`HttpClassifier`]; from [`HttpClassifier::builder`] (the
/// default rules) or [`HttpClassifier::empty`] (none). Each rule is added
/// after the ones before it and wins over them where they overlap.
///
/// ```
/// use breaker_runtime::http::{HttpClassifier, TransportFailure, Verdict};
/// use breaker_runtime::{FailureType, Outcome};
/// use http::{HeaderMap, StatusCode};
///
/// let classifier = HttpClassifier::builder()
///     .status_range(500..=599, Verdict::Failure(FailureType::Custom))
///     .status(StatusCode::NOT_IMPLEMENTED, Verdict::Ignored)
///     .request_timeout_counts(false)
///     .too_many_requests_counts(true)
///     .transport(TransportFailure::Other, Verdict::Ignored)
///     .build()?;
/// let headers = HeaderMap::new();
/// assert_eq!(classifier.classify(StatusCode::BAD_GATEWAY, &headers), Outcome::Failure(FailureType::Custom));
/// assert_eq!(classifier.classify(StatusCode::NOT_IMPLEMENTED, &headers), Outcome::Ignored);
/// assert_eq!(classifier.classify(StatusCode::REQUEST_TIMEOUT, &headers), Outcome::Ignored);
/// assert_eq!(classifier.classify_transport(TransportFailure::Other), Outcome::Ignored);
/// # Ok::<(), breaker_runtime::http::StatusRangeError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpClassifierBuilder {
    classifier: HttpClassifier,
    error: Option<StatusRangeError>,
}

impl HttpClassifierBuilder {
    /// `status` gets `verdict`.
    pub fn status(self, status: StatusCode, verdict: Verdict) -> Self {
        let code = status.as_u16();
        self.rule(code..=code, verdict)
    }

    /// Every status in `range` gets `verdict`. A range outside 100..=999,
    /// or empty, makes [`build`](Self::build) fail.
    pub fn status_range(mut self, range: RangeInclusive<u16>, verdict: Verdict) -> Self {
        let (start, end) = (*range.start(), *range.end());
        if start > end || start < 100 || end > 999 {
            self.error.get_or_insert(StatusRangeError { start, end });
            return self;
        }
        self.rule(range, verdict)
    }

    /// Whether 408 Request Timeout counts as a
    /// [`Timeout`](FailureType::Timeout) failure (the default) or is
    /// ignored like other 4xx.
    pub fn request_timeout_counts(self, counts: bool) -> Self {
        let verdict = if counts {
            Verdict::Failure(FailureType::Timeout)
        } else {
            Verdict::Ignored
        };
        self.status(StatusCode::REQUEST_TIMEOUT, verdict)
    }

    /// Whether 429 Too Many Requests counts as a rate-limit failure that
    /// honours `Retry-After` (the default) or is ignored like other 4xx.
    pub fn too_many_requests_counts(self, counts: bool) -> Self {
        let verdict = if counts {
            Verdict::RateLimited
        } else {
            Verdict::Ignored
        };
        self.status(StatusCode::TOO_MANY_REQUESTS, verdict)
    }

    /// What a transport failure of `kind` counts as.
    pub fn transport(mut self, kind: TransportFailure, verdict: Verdict) -> Self {
        let slot = match kind {
            TransportFailure::Timeout => &mut self.classifier.timeout,
            TransportFailure::Connect => &mut self.classifier.connect,
            TransportFailure::Other => &mut self.classifier.other_transport,
        };
        *slot = verdict;
        self
    }

    /// The classifier.
    ///
    /// # Errors
    /// [`StatusRangeError`] for the first range given to
    /// [`status_range`](Self::status_range) that is empty or outside
    /// 100..=999.
    ///
    /// ```
    /// use breaker_runtime::http::{HttpClassifier, Verdict};
    ///
    /// let error = HttpClassifier::builder().status_range(600..=500, Verdict::Ignored).build();
    /// assert_eq!(error.unwrap_err().to_string(),
    ///     "`status_range` 600..=500 is not a range of HTTP status codes: give codes from 100 to 999, start no greater than end");
    /// ```
    pub fn build(self) -> Result<HttpClassifier, StatusRangeError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.classifier),
        }
    }

    fn rule(mut self, range: RangeInclusive<u16>, verdict: Verdict) -> Self {
        self.classifier.rules.push((range, verdict));
        self
    }
}

/// A gRPC status code, as carried by the `grpc-status` header or trailer.
///
/// ```
/// use breaker_runtime::http::GrpcCode;
///
/// assert_eq!(GrpcCode::Unavailable as u8, 14);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)] // The names are the gRPC specification's.
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code for a number; a number the specification does not define
    /// is [`Unknown`](Self::Unknown), as the specification asks.
    ///
    /// ```
    /// use breaker_runtime::http::GrpcCode;
    ///
    /// assert_eq!(GrpcCode::from_u32(14), GrpcCode::Unavailable);
    /// assert_eq!(GrpcCode::from_u32(99), GrpcCode::Unknown);
    /// ```
    pub fn from_u32(code: u32) -> Self {
        usize::try_from(code)
            .ok()
            .and_then(|index| Self::ALL.get(index).copied())
            .unwrap_or(Self::Unknown)
    }

    /// The code for a `grpc-status` value; `None` when it is not a number.
    ///
    /// ```
    /// use breaker_runtime::http::GrpcCode;
    ///
    /// assert_eq!(GrpcCode::parse("4"), Some(GrpcCode::DeadlineExceeded));
    /// assert_eq!(GrpcCode::parse("four"), None);
    /// ```
    pub fn parse(value: &str) -> Option<Self> {
        value.trim().parse::<u32>().ok().map(Self::from_u32)
    }

    /// The code a gRPC client reports for an HTTP response without
    /// `grpc-status`, from its HTTP status (the gRPC specification's
    /// "HTTP to gRPC status code mapping").
    ///
    /// ```
    /// use breaker_runtime::http::GrpcCode;
    /// use http::StatusCode;
    ///
    /// assert_eq!(GrpcCode::from_http(StatusCode::SERVICE_UNAVAILABLE), GrpcCode::Unavailable);
    /// assert_eq!(GrpcCode::from_http(StatusCode::UNAUTHORIZED), GrpcCode::Unauthenticated);
    /// ```
    pub fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }
}

/// Classifies gRPC responses by their status code, read from the
/// `grpc-status` header (a trailers-only response: how servers such as
/// tonic answer with an error) or from trailers.
///
/// | Code | Default [`Verdict`] |
/// |---|---|
/// | `OK` | success |
/// | `UNAVAILABLE`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS` (and undefined numbers) | [`Failure(Error)`](FailureType::Error) |
/// | `DEADLINE_EXCEEDED` | [`Failure(Timeout)`](FailureType::Timeout) |
/// | `RESOURCE_EXHAUSTED` | [`RateLimited`](Verdict::RateLimited) (a `Retry-After` header, if any, is honoured) |
/// | the rest (`CANCELLED`, `INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`, `FAILED_PRECONDITION`, `ABORTED`, `OUT_OF_RANGE`, `UNIMPLEMENTED`, `UNAUTHENTICATED`) | ignored: the client's side |
///
/// A response whose headers carry no `grpc-status` is a success while its
/// HTTP status is 200: the status comes in the trailers, after the body,
/// which [`classify_trailers`](Self::classify_trailers) reads. With another
/// HTTP status it counts as the code [`GrpcCode::from_http`] gives.
///
/// ```
/// use breaker_runtime::http::{GrpcClassifier, GrpcCode, Verdict};
/// use breaker_runtime::{FailureType, Outcome};
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("grpc-status", HeaderValue::from_static("14"));
/// let classifier = GrpcClassifier::new();
/// assert_eq!(
///     classifier.classify(StatusCode::OK, &headers),
///     Outcome::Failure(FailureType::Error)
/// );
///
/// // NOT_FOUND is this service's failure here.
/// let strict = GrpcClassifier::builder()
///     .code(GrpcCode::NotFound, Verdict::Failure(FailureType::Error))
///     .build();
/// headers.insert("grpc-status", HeaderValue::from_static("5"));
/// assert_eq!(classifier.classify(StatusCode::OK, &headers), Outcome::Ignored);
/// assert_eq!(strict.classify(StatusCode::OK, &headers), Outcome::Failure(FailureType::Error));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    verdicts: [Verdict; 17],
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        let mut verdicts = [Verdict::Ignored; 17];
        verdicts[GrpcCode::Ok as usize] = Verdict::Success;
        for failed in [
            GrpcCode::Unknown,
            GrpcCode::Internal,
            GrpcCode::Unavailable,
            GrpcCode::DataLoss,
        ] {
            verdicts[failed as usize] = Verdict::Failure(FailureType::Error);
        }
        verdicts[GrpcCode::DeadlineExceeded as usize] = Verdict::Failure(FailureType::Timeout);
        verdicts[GrpcCode::ResourceExhausted as usize] = Verdict::RateLimited;
        Self { verdicts }
    }
}

/// The header (or trailer) that carries a gRPC status code.
///
/// ```
/// assert_eq!(breaker_runtime::http::GRPC_STATUS, "grpc-status");
/// ```
pub const GRPC_STATUS: &str = "grpc-status";

impl GrpcClassifier {
    /// The default verdicts (see the type's docs).
    ///
    /// ```
    /// use breaker_runtime::http::{GrpcClassifier, GrpcCode, Verdict};
    /// use breaker_runtime::FailureType;
    ///
    /// let classifier = GrpcClassifier::new();
    /// assert_eq!(classifier.verdict(GrpcCode::DeadlineExceeded), Verdict::Failure(FailureType::Timeout));
    /// assert_eq!(classifier.verdict(GrpcCode::ResourceExhausted), Verdict::RateLimited);
    /// assert_eq!(classifier.verdict(GrpcCode::InvalidArgument), Verdict::Ignored);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The verdicts for a **server**'s own responses: as [`new`](Self::new)
    /// but `RESOURCE_EXHAUSTED` (a quota of one client's) and
    /// `DEADLINE_EXCEEDED` (the deadline one client chose ran out) are
    /// ignored: on a server they judge one client, not the server. A
    /// handler too slow for everyone is cut, and counted, by the breaker's
    /// own `timeout_duration`.
    ///
    /// ```
    /// use breaker_runtime::http::{GrpcClassifier, GrpcCode, Verdict};
    /// use breaker_runtime::FailureType;
    ///
    /// let server = GrpcClassifier::server();
    /// assert_eq!(server.verdict(GrpcCode::ResourceExhausted), Verdict::Ignored);
    /// assert_eq!(server.verdict(GrpcCode::DeadlineExceeded), Verdict::Ignored);
    /// assert_eq!(server.verdict(GrpcCode::Unavailable), Verdict::Failure(FailureType::Error));
    /// ```
    pub fn server() -> Self {
        Self::builder()
            .code(GrpcCode::ResourceExhausted, Verdict::Ignored)
            .code(GrpcCode::DeadlineExceeded, Verdict::Ignored)
            .build()
    }

    /// A builder that starts from the default verdicts.
    ///
    /// ```
    /// use breaker_runtime::http::{GrpcClassifier, GrpcCode, Verdict};
    ///
    /// let classifier = GrpcClassifier::builder().code(GrpcCode::Unknown, Verdict::Ignored).build();
    /// assert_eq!(classifier.verdict(GrpcCode::Unknown), Verdict::Ignored);
    /// ```
    pub fn builder() -> GrpcClassifierBuilder {
        GrpcClassifierBuilder {
            classifier: Self::default(),
        }
    }

    /// The verdict for `code`.
    ///
    /// ```
    /// use breaker_runtime::http::{GrpcClassifier, GrpcCode, Verdict};
    ///
    /// assert_eq!(GrpcClassifier::new().verdict(GrpcCode::Ok), Verdict::Success);
    /// ```
    pub fn verdict(&self, code: GrpcCode) -> Verdict {
        self.verdicts[code as usize]
    }

    /// How a response with HTTP `status` and `headers` counts (see the
    /// type's docs for a response without `grpc-status`). A
    /// `grpc-status` that is not a number counts as `UNKNOWN`.
    ///
    /// ```
    /// use breaker_runtime::http::GrpcClassifier;
    /// use breaker_runtime::{FailureType, Outcome};
    /// use http::{HeaderMap, StatusCode};
    ///
    /// let headers = HeaderMap::new();
    /// let classifier = GrpcClassifier::new();
    /// assert_eq!(classifier.classify(StatusCode::OK, &headers), Outcome::Success);
    /// assert_eq!(
    ///     classifier.classify(StatusCode::BAD_GATEWAY, &headers),
    ///     Outcome::Failure(FailureType::Error)
    /// );
    /// ```
    pub fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        match Self::code(headers) {
            Some(code) => self.verdict(code).outcome(headers, SystemTime::now),
            None if status == StatusCode::OK => Outcome::Success,
            None => self
                .verdict(GrpcCode::from_http(status))
                .outcome(headers, SystemTime::now),
        }
    }

    /// [`classify`](Self::classify) for a whole response.
    ///
    /// ```
    /// use breaker_runtime::http::GrpcClassifier;
    /// use breaker_runtime::{FailureType, Outcome};
    ///
    /// let response = http::Response::builder().header("grpc-status", "4").body(()).unwrap();
    /// assert_eq!(
    ///     GrpcClassifier::new().classify_response(&response),
    ///     Outcome::Failure(FailureType::Timeout)
    /// );
    /// ```
    pub fn classify_response<B>(&self, response: &http::Response<B>) -> Outcome {
        self.classify(response.status(), response.headers())
    }

    /// How a stream's trailers count; `None` when they carry no
    /// `grpc-status`.
    ///
    /// ```
    /// use breaker_runtime::http::GrpcClassifier;
    /// use breaker_runtime::{FailureType, Outcome};
    /// use http::{HeaderMap, HeaderValue};
    ///
    /// let mut trailers = HeaderMap::new();
    /// assert_eq!(GrpcClassifier::new().classify_trailers(&trailers), None);
    /// trailers.insert("grpc-status", HeaderValue::from_static("15"));
    /// assert_eq!(
    ///     GrpcClassifier::new().classify_trailers(&trailers),
    ///     Some(Outcome::Failure(FailureType::Error))
    /// );
    /// ```
    pub fn classify_trailers(&self, trailers: &HeaderMap) -> Option<Outcome> {
        Self::code(trailers).map(|code| self.verdict(code).outcome(trailers, SystemTime::now))
    }

    fn code(headers: &HeaderMap) -> Option<GrpcCode> {
        let value = headers.get(GRPC_STATUS)?;
        Some(
            value
                .to_str()
                .ok()
                .and_then(GrpcCode::parse)
                .unwrap_or(GrpcCode::Unknown),
        )
    }
}

/// Builds a [`GrpcClassifier`] from the default verdicts.
///
/// ```
/// use breaker_runtime::http::{GrpcClassifier, GrpcCode, Verdict};
/// use breaker_runtime::FailureType;
///
/// let classifier = GrpcClassifier::builder()
///     .code(GrpcCode::Aborted, Verdict::Failure(FailureType::Error))
///     .code(GrpcCode::ResourceExhausted, Verdict::Ignored)
///     .build();
/// assert_eq!(classifier.verdict(GrpcCode::Aborted), Verdict::Failure(FailureType::Error));
/// assert_eq!(classifier.verdict(GrpcCode::ResourceExhausted), Verdict::Ignored);
/// ```
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct GrpcClassifierBuilder {
    classifier: GrpcClassifier,
}

impl GrpcClassifierBuilder {
    /// `code` gets `verdict`.
    pub fn code(mut self, code: GrpcCode, verdict: Verdict) -> Self {
        self.classifier.verdicts[code as usize] = verdict;
        self
    }

    /// The classifier. Every code has a verdict, so this cannot fail.
    pub fn build(self) -> GrpcClassifier {
        self.classifier
    }
}

/// Which [`TransportFailure`] an error is, by its source chain: tower's
/// `Elapsed` (with the feature `tower`), tokio's `Elapsed` (with `tokio`)
/// or an [`io::Error`] of kind `TimedOut` anywhere in it is a
/// [`Timeout`](TransportFailure::Timeout); an `io::Error` of kind
/// `ConnectionRefused` or `AddrNotAvailable` is
/// [`Connect`](TransportFailure::Connect); anything else is
/// [`Other`](TransportFailure::Other). For a classifier of your own
/// service's error type; the classifiers' [`Classify`] impls use it.
///
/// ```
/// use std::io;
/// use breaker_runtime::http::{transport_failure, TransportFailure};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("upstream call failed")]
/// struct Upstream(#[source] io::Error);
///
/// let timed_out = Upstream(io::Error::new(io::ErrorKind::TimedOut, "read"));
/// assert_eq!(transport_failure(&timed_out), TransportFailure::Timeout);
/// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
/// assert_eq!(transport_failure(&refused), TransportFailure::Connect);
/// let other = io::Error::from(io::ErrorKind::InvalidData);
/// assert_eq!(transport_failure(&other), TransportFailure::Other);
/// ```
pub fn transport_failure(error: &(dyn StdError + 'static)) -> TransportFailure {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(kind) = one_transport_failure(error) {
            return kind;
        }
        next = error.source();
    }
    TransportFailure::Other
}

/// [`transport_failure`] of one link of a source chain; `None` when the
/// link does not say.
pub(crate) fn one_transport_failure(error: &(dyn StdError + 'static)) -> Option<TransportFailure> {
    #[cfg(feature = "tower")]
    if error.is::<::tower::timeout::error::Elapsed>() {
        return Some(TransportFailure::Timeout);
    }
    #[cfg(feature = "tokio")]
    if error.is::<tokio::time::error::Elapsed>() {
        return Some(TransportFailure::Timeout);
    }
    match error.downcast_ref::<io::Error>()?.kind() {
        io::ErrorKind::TimedOut => Some(TransportFailure::Timeout),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::AddrNotAvailable => {
            Some(TransportFailure::Connect)
        }
        _ => None,
    }
}

/// [`transport_failure`] of a service's error of a type only known as
/// `E`: tower's `BoxError` (and the other boxed `dyn Error`s) and
/// `io::Error` are looked into; any other type is
/// [`Other`](TransportFailure::Other).
fn transport_failure_of<E: 'static>(error: &E) -> TransportFailure {
    let error: &dyn Any = error;
    if let Some(error) = error.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
        return transport_failure(&**error);
    }
    if let Some(error) = error.downcast_ref::<Box<dyn StdError + Send>>() {
        return transport_failure(&**error);
    }
    if let Some(error) = error.downcast_ref::<Box<dyn StdError>>() {
        return transport_failure(&**error);
    }
    if let Some(error) = error.downcast_ref::<io::Error>() {
        return transport_failure(error);
    }
    #[cfg(feature = "tower")]
    if error.is::<::tower::timeout::error::Elapsed>() {
        return TransportFailure::Timeout;
    }
    TransportFailure::Other
}

/// Classifies an HTTP service's result: a response by its status, an
/// error of the service as the transport failure [`transport_failure`]
/// finds in it (for `tower::BoxError`, other boxed errors and
/// `io::Error`; an error of another type is `Other`: classify it with a
/// closure calling [`transport_failure`]).
impl<B, E: 'static> Classify<http::Response<B>, E> for HttpClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(error) => self.classify_transport(transport_failure_of(error)),
        }
    }
}

/// Classifies a gRPC service's result: a response by its `grpc-status`,
/// an error of the service as a failure: a
/// [`Timeout`](FailureType::Timeout) when [`transport_failure`] finds a
/// timeout in it (as for [`HttpClassifier`]), else an
/// [`Error`](FailureType::Error).
///
/// A status sent only in trailers (after a streamed body) is not seen
/// here: the response is classified when its headers arrive, before the
/// body is read, and a `200` without `grpc-status` in its headers counts
/// as a success. [`GrpcClassifier::classify_trailers`] reads trailers for
/// a caller that has them.
impl<B, E: 'static> Classify<http::Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => self.classify_response(response),
            Err(error) => match transport_failure_of(error) {
                TransportFailure::Timeout => Outcome::Failure(FailureType::Timeout),
                _ => Outcome::Failure(FailureType::Error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn epoch_2015() -> SystemTime {
        httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap()
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = epoch_2015();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retry_after_saturates_and_never_panics() {
        let now = epoch_2015();
        // 30 years in seconds, more seconds than fit in a u64, a date in 9999.
        assert_eq!(
            parse_retry_after("946080000", now),
            Some(Duration::from_secs(946_080_000))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).unwrap();
        assert!(far > Duration::from_secs(250_000_000_000), "{far:?}");
        assert_eq!(
            parse_retry_after("3599", now),
            Some(Duration::from_secs(3599))
        );
        for refused in [
            "-99999999999999999999",
            "+7",
            "1.5",
            "7s",
            "",
            " ",
            "NaN",
            "inf",
        ] {
            assert_eq!(parse_retry_after(refused, now), None, "{refused:?}");
        }
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        // The earliest date the format can hold is a past date: retry now.
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn default_http_rules_cover_every_class() {
        let classifier = HttpClassifier::new();
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:05 GMT"),
        );
        let at = |code: u16| {
            classifier.classify_at(StatusCode::from_u16(code).unwrap(), &headers, epoch_2015())
        };
        for code in [100, 101, 200, 204, 299, 301, 304, 399] {
            assert_eq!(at(code), Outcome::Success, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 418, 422, 499] {
            assert_eq!(at(code), Outcome::Ignored, "{code}");
        }
        for code in [500, 501, 502, 503, 505, 599] {
            assert_eq!(at(code), Outcome::Failure(FailureType::Error), "{code}");
        }
        for code in [408, 504] {
            assert_eq!(at(code), Outcome::Failure(FailureType::Timeout), "{code}");
        }
        assert_eq!(
            at(429),
            Outcome::DependencyRateLimited {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        // Codes past 599 are nobody's failure unless a rule says so.
        assert_eq!(at(600), Outcome::Success);
        assert_eq!(at(999), Outcome::Success);
    }

    #[test]
    fn later_rules_win_and_bad_ranges_are_refused() {
        let classifier = HttpClassifier::builder()
            .status_range(500..=599, Verdict::Ignored)
            .status(
                StatusCode::SERVICE_UNAVAILABLE,
                Verdict::Failure(FailureType::Custom),
            )
            .build()
            .unwrap();
        assert_eq!(
            classifier.verdict(StatusCode::INTERNAL_SERVER_ERROR),
            Verdict::Ignored
        );
        assert_eq!(
            classifier.verdict(StatusCode::SERVICE_UNAVAILABLE),
            Verdict::Failure(FailureType::Custom)
        );
        for (start, end) in [(99, 200), (500, 1000), (0, 0), (600, 500)] {
            let error = HttpClassifier::builder()
                .status_range(start..=end, Verdict::Ignored)
                .status_range(500..=599, Verdict::Ignored)
                .build()
                .unwrap_err();
            assert_eq!(error, StatusRangeError { start, end });
        }
        assert!(
            HttpClassifier::empty()
                .status_range(100..=999, Verdict::Ignored)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn transport_failures_are_configurable() {
        let classifier = HttpClassifier::builder()
            .transport(TransportFailure::Other, Verdict::Ignored)
            .build()
            .unwrap();
        assert_eq!(
            classifier.classify_transport(TransportFailure::Other),
            Outcome::Ignored
        );
        assert_eq!(
            HttpClassifier::new().classify_transport(TransportFailure::Other),
            Outcome::Failure(FailureType::Error)
        );
        assert_eq!(
            classifier.classify_transport(TransportFailure::Timeout),
            Outcome::Failure(FailureType::Timeout)
        );
    }

    #[test]
    fn one_host_spelled_several_ways_is_one_key() {
        let key = |uri: &str| {
            uri_host_key(&uri.parse().unwrap())
                .unwrap()
                .as_str()
                .to_owned()
        };
        for spelling in [
            "http://UP.example/a",
            "http://up.example:80/b",
            "http://up.example./c",
            "HTTP://Up.Example",
        ] {
            assert_eq!(key(spelling), "up.example:80", "{spelling}");
        }
        assert_eq!(key("https://up.example/"), "up.example:443");
        assert_eq!(key("https://up.example:8443/"), "up.example:8443");
        assert_eq!(key("http://[::1]:3000/"), "[::1]:3000");
        assert_eq!(key("grpc://up.example/"), "up.example");
        let long = format!("http://{}.example/", "A".repeat(100));
        assert_eq!(key(&long), format!("{}.example:80", "a".repeat(100)));
    }

    #[test]
    fn grpc_codes_map_as_documented() {
        let classifier = GrpcClassifier::new();
        let outcome = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_STATUS, HeaderValue::from_static(value));
            classifier.classify(StatusCode::OK, &headers)
        };
        assert_eq!(outcome("0"), Outcome::Success);
        for failed in ["2", "13", "14", "15", "17", "4294967296", "x"] {
            assert_eq!(
                outcome(failed),
                Outcome::Failure(FailureType::Error),
                "{failed}"
            );
        }
        assert_eq!(outcome("4"), Outcome::Failure(FailureType::Timeout));
        assert_eq!(
            outcome("8"),
            Outcome::DependencyRateLimited { retry_after: None }
        );
        for ignored in ["1", "3", "5", "6", "7", "9", "10", "11", "12", "16"] {
            assert_eq!(outcome(ignored), Outcome::Ignored, "{ignored}");
        }
        let none = HeaderMap::new();
        assert_eq!(
            classifier.classify(StatusCode::SERVICE_UNAVAILABLE, &none),
            Outcome::Failure(FailureType::Error)
        );
        assert_eq!(
            classifier.classify(StatusCode::NOT_FOUND, &none),
            Outcome::Ignored
        );
    }
}
