//! A client for OpenAI-compatible chat-completions endpoints.
//!
//! The client sends one user message and returns the first choice's text. Its
//! errors say what went wrong in terms a circuit breaker can act on:
//! [`LlmError::kind`] separates "the service is unhealthy" from "slow down"
//! from "our request was wrong", which must not count against the service.
//! Statuses and transport errors are read by the runtime's shared
//! classification ([`breaker_runtime::http`]), the rules the tower layer and
//! the reqwest middleware use too.
//!
//! There is deliberately no request timeout: the caller (the breaker) owns the
//! deadline and drops the future when it passes. Only connecting has a
//! generous limit, [`CONNECT_TIMEOUT`], so a black-holed address cannot pin a
//! socket forever when nobody else is watching.

use std::fmt;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use breaker_runtime::http::{HttpClassifier, TransportFailure};
use breaker_runtime::{FailureType, Outcome};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// The endpoint used when `OPENAI_BASE_URL` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The model used when `OPENAI_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// How long [`LlmClient::new`] lets a TCP (and TLS) connection take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of an error response body [`LlmError::BadRequest`] keeps.
const MAX_ERROR_BODY_BYTES: usize = 2048;

/// Where and how to reach the chat-completions API.
///
/// `Debug` prints the key redacted, so a config can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// Sent as `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// The API root without the trailing slash, e.g. `https://api.openai.com/v1`;
    /// requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    /// The `model` field of every request.
    pub model: String,
}

impl LlmConfig {
    /// A config for `api_key` with [`DEFAULT_BASE_URL`] and [`DEFAULT_MODEL`].
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
        }
    }

    /// Replaces the API root; a trailing `/` is dropped.
    #[must_use]
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Replaces the model name.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Reads `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `OPENAI_MODEL` from the
    /// environment, after loading a `.env` file from the current directory or
    /// its parents if there is one (variables already set win over the file).
    ///
    /// Returns `None` when no (non-blank) key is configured: the examples then
    /// fall back to the simulated model.
    pub fn from_env() -> Option<Self> {
        // A missing `.env` is the normal case, and a broken one should not stop
        // the example from running on the simulator: the error is not needed.
        let _ = dotenvy::dotenv();
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) over any source of variables, without
    /// touching the process environment or `.env`. Blank values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let mut config = Self::new(var("OPENAI_API_KEY")?.trim());
        if let Some(base_url) = var("OPENAI_BASE_URL") {
            config = config.with_base_url(base_url.trim());
        }
        if let Some(model) = var("OPENAI_MODEL") {
            config = config.with_model(model.trim());
        }
        Some(config)
    }
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("api_key", &"<redacted>")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish()
    }
}

/// Why a completion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// HTTP 429: the service is up but wants fewer requests.
    #[error("rate limited by the service{}", RetryAfterSuffix(*retry_after))]
    RateLimited {
        /// The `Retry-After` header, as seconds or an HTTP date, if present
        /// and readable.
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx other than 504: the service failed.
    #[error("service failed with HTTP {status}")]
    Server {
        /// The status code, 500 to 599 except 504.
        status: u16,
    },
    /// HTTP 4xx other than 408 and 429: the service rejected our request
    /// (bad key, unknown model, oversized prompt). Not the service's fault.
    #[error("service rejected the request with HTTP {status}: {body}")]
    BadRequest {
        /// The status code, 400 to 499 except 408 and 429.
        status: u16,
        /// The start of the response body, which usually says what was wrong.
        body: String,
    },
    /// The request did not reach the service, or the connection broke before
    /// the whole response arrived.
    #[error("could not reach the service: {0}")]
    Connect(String),
    /// The call ran out of time: a transport timeout, or HTTP 408 or 504
    /// (someone on the way gave up waiting).
    #[error("the service did not answer in time")]
    Timeout,
    /// The service answered, but not with a usable completion.
    #[error("unusable response from the service: {0}")]
    Malformed(String),
}

/// How an [`LlmError`] should count against the service that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmErrorKind {
    /// Back off, for the given time if the service said how long.
    RateLimit(Option<Duration>),
    /// The service is unhealthy.
    Failure,
    /// The service was too slow.
    Timeout,
    /// The caller's mistake; says nothing about the service's health.
    NotHeldAgainstService,
}

impl LlmError {
    /// Classifies the error for failure accounting: 429 is a rate limit, 5xx,
    /// connection errors and unusable responses are failures, a timeout is a
    /// timeout, and other 4xx are not held against the service.
    pub fn kind(&self) -> LlmErrorKind {
        match self {
            Self::RateLimited { retry_after } => LlmErrorKind::RateLimit(*retry_after),
            Self::Server { .. } | Self::Connect(_) | Self::Malformed(_) => LlmErrorKind::Failure,
            Self::Timeout => LlmErrorKind::Timeout,
            Self::BadRequest { .. } => LlmErrorKind::NotHeldAgainstService,
        }
    }
}

/// Formats `Some(d)` as ", retry after 7s" and `None` as nothing.
struct RetryAfterSuffix(Option<Duration>);

impl fmt::Display for RetryAfterSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(delay) => write!(f, ", retry after {delay:?}"),
            None => Ok(()),
        }
    }
}

/// The longest wait a `Retry-After` header can ask of this client: one hour.
/// A longer value (30 years, a date in 9999, more seconds than fit in a
/// `u64`) is read as this. The breaker caps it again with its own
/// `max_retry_after`; capping here keeps the error message sane too.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The shared default rules: 5xx, 408 and 429 count, other 4xx do not.
static CLASSIFIER: LazyLock<HttpClassifier> = LazyLock::new(HttpClassifier::new);

/// A chat-completions client. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    endpoint: String,
    config: LlmConfig,
}

impl LlmClient {
    /// A client with its own connection pool and a [`CONNECT_TIMEOUT`].
    ///
    /// # Panics
    ///
    /// If the TLS backend cannot be initialised, as [`reqwest::Client::new`].
    pub fn new(config: LlmConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("the TLS backend initialises");
        Self::with_http_client(config, http)
    }

    /// A client that sends through `http`, e.g. to share its pool or to set
    /// proxy rules. Any timeout configured on `http` surfaces as
    /// [`LlmError::Timeout`].
    pub fn with_http_client(config: LlmConfig, http: reqwest::Client) -> Self {
        let endpoint = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Self {
            http,
            endpoint,
            config,
        }
    }

    /// The config this client was built from.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Sends `prompt` as a single user message and returns the text of the
    /// first choice.
    ///
    /// # Errors
    ///
    /// See [`LlmError`]: one variant per way the exchange can fail, and
    /// [`LlmError::kind`] for how each should be counted.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the request and closes its connection;
    /// nothing else is affected.
    pub async fn complete(&self, prompt: &str) -> Result<String, LlmError> {
        self.complete_as(&self.config.model, prompt).await
    }

    /// [`complete`](Self::complete), asking `model` instead of the
    /// configured one (the agent's `/model` command).
    ///
    /// # Errors
    /// As [`complete`](Self::complete).
    ///
    /// # Cancel safety
    /// As [`complete`](Self::complete).
    pub async fn complete_as(&self, model: &str, prompt: &str) -> Result<String, LlmError> {
        let request = ChatRequest {
            model,
            messages: [ChatMessage {
                role: "user",
                content: prompt,
            }],
        };
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(&self.config.api_key)
            .json(&request)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let outcome = CLASSIFIER.classify_at(status, response.headers(), SystemTime::now());
        let body = response.bytes().await.map_err(transport_error)?;
        match classify_status(status, outcome, &body) {
            Some(error) => Err(error),
            None => parse_completion(&body),
        }
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 1],
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
}

#[derive(Deserialize)]
struct ResponseMessage {
    // `null` when the model answered with a tool call or a refusal instead.
    content: Option<String>,
}

/// The `Retry-After` wait of `headers`, capped at [`MAX_RETRY_AFTER`].
#[cfg(test)]
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    breaker_runtime::http::retry_after(headers, now).map(|wait| wait.min(MAX_RETRY_AFTER))
}

/// The error a response stands for, given how the shared classification
/// counts it (`outcome`), or `None` when the body should hold a completion.
fn classify_status(status: StatusCode, outcome: Outcome, body: &[u8]) -> Option<LlmError> {
    match outcome {
        Outcome::Success if status.is_success() => None,
        // 1xx and 3xx: redirects are followed, so one that is left over is
        // a broken service, not a completion.
        Outcome::Success => Some(LlmError::Malformed(format!("unexpected HTTP {status}"))),
        Outcome::DependencyRateLimited { retry_after } => Some(LlmError::RateLimited {
            retry_after: retry_after.map(|wait| wait.min(MAX_RETRY_AFTER)),
        }),
        Outcome::Failure(FailureType::Timeout) => Some(LlmError::Timeout),
        Outcome::Failure(_) => Some(LlmError::Server {
            status: status.as_u16(),
        }),
        Outcome::Ignored => {
            let kept = &body[..body.len().min(MAX_ERROR_BODY_BYTES)];
            Some(LlmError::BadRequest {
                status: status.as_u16(),
                body: String::from_utf8_lossy(kept).into_owned(),
            })
        }
    }
}

fn parse_completion(body: &[u8]) -> Result<String, LlmError> {
    let response: ChatResponse = serde_json::from_slice(body)
        .map_err(|error| LlmError::Malformed(format!("invalid completion JSON: {error}")))?;
    response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::Malformed("the response has no choices".to_owned()))?
        .message
        .content
        .ok_or_else(|| LlmError::Malformed("the first choice has no text content".to_owned()))
}

fn transport_error(error: reqwest::Error) -> LlmError {
    // A connect timeout means the service is unreachable, not slow, so
    // `is_connect` is asked first.
    let failure = if error.is_connect() {
        TransportFailure::Connect
    } else if error.is_timeout() {
        TransportFailure::Timeout
    } else {
        TransportFailure::Other
    };
    match CLASSIFIER.classify_transport(failure) {
        Outcome::Failure(FailureType::Timeout) => LlmError::Timeout,
        _ => LlmError::Connect(error_chain(&error)),
    }
}

/// `error` and its sources, because reqwest's own message ("error sending
/// request") hides the cause.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: &'static str) -> Option<Duration> {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static(value),
        );
        retry_after(&headers, now)
    }

    #[test]
    fn retry_after_is_read_by_the_runtime_and_capped_here() {
        // The reading itself (seconds, dates, refusals) is tested in
        // `breaker_runtime::http`; this client only caps the wait.
        assert_eq!(at(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            at("Wed, 21 Oct 2015 07:28:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(at("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        assert_eq!(at("soon"), None);
        let capped = Some(MAX_RETRY_AFTER);
        assert_eq!(at("946080000"), capped);
        assert_eq!(at("99999999999999999999"), capped);
        assert_eq!(at("Fri, 31 Dec 9999 23:59:59 GMT"), capped);
        assert_eq!(at("3600"), capped);
        assert_eq!(at("3599"), Some(Duration::from_secs(3599)));
    }

    #[test]
    fn statuses_map_through_the_shared_classification() {
        let error = |code: u16| {
            let status = StatusCode::from_u16(code).unwrap();
            let outcome = CLASSIFIER.classify(status, &reqwest::header::HeaderMap::new());
            classify_status(status, outcome, b"")
        };
        assert_eq!(error(200), None);
        assert_eq!(error(503), Some(LlmError::Server { status: 503 }));
        assert_eq!(error(504), Some(LlmError::Timeout));
        assert_eq!(error(408), Some(LlmError::Timeout));
        assert_eq!(
            error(429),
            Some(LlmError::RateLimited { retry_after: None })
        );
        assert!(matches!(
            error(404),
            Some(LlmError::BadRequest { status: 404, .. })
        ));
        assert!(matches!(error(302), Some(LlmError::Malformed(_))));
    }

    #[test]
    fn completion_needs_a_first_choice_with_text() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(parse_completion(ok), Ok("hi".to_owned()));

        for body in [
            &br#"{"choices":[]}"#[..],
            br#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#,
            br#"{"id":"x"}"#,
            b"<html>bad gateway</html>",
        ] {
            assert!(
                matches!(parse_completion(body), Err(LlmError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn bad_request_body_is_truncated() {
        let body = vec![b'x'; MAX_ERROR_BODY_BYTES * 2];
        let Some(LlmError::BadRequest { status, body }) =
            classify_status(StatusCode::UNAUTHORIZED, Outcome::Ignored, &body)
        else {
            panic!("401 is a bad request");
        };
        assert_eq!(status, 401);
        assert_eq!(body.len(), MAX_ERROR_BODY_BYTES);
    }

    #[test]
    fn config_from_lookup_applies_defaults_and_ignores_blanks() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(LlmConfig::from_lookup(vars(&[])), None);
        assert_eq!(
            LlmConfig::from_lookup(vars(&[("OPENAI_API_KEY", "  ")])),
            None
        );

        let config =
            LlmConfig::from_lookup(vars(&[("OPENAI_API_KEY", "sk-test"), ("OPENAI_MODEL", "")]))
                .unwrap();
        assert_eq!(config, LlmConfig::new("sk-test"));
        assert_eq!(config.base_url, DEFAULT_BASE_URL);
        assert_eq!(config.model, DEFAULT_MODEL);

        let config = LlmConfig::from_lookup(vars(&[
            ("OPENAI_API_KEY", "sk-test"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1/"),
            ("OPENAI_MODEL", "local"),
        ]))
        .unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(config.model, "local");
        assert!(!format!("{config:?}").contains("sk-test"));
    }
}
