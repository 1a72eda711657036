//! User code written with `#[circuit_breaker]` in every supported shape stays
//! clean under strict lints: `cargo clippy --all-targets -- -D warnings`
//! checks this file, and `cargo test` runs it.
#![deny(clippy::all, unused_qualifications, unused, rust_2018_idioms)]
#![allow(clippy::unused_async)]

use std::future::Future;
use std::sync::Arc;

use breaker_runtime::{BreakerError, FailureType, Outcome, circuit_breaker};

/// An error that can carry the breaker's own errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// The service failed.
    #[error("service failed: {0}")]
    Service(String),
    /// The breaker refused or timed out the call.
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

/// A free sync fn, every numeric key.
#[circuit_breaker(
    name = "lints-sync",
    failure_threshold = 5,
    recovery_timeout = 60.0,
    success_threshold = 2,
    quality_threshold = 0.5,
    rate_limit_per_minute = 600,
    rate_limit_burst = 10,
    sliding_window_size = 20,
    half_open_max_calls = 3,
    failure_rate_threshold = 0.5,
    minimum_calls = 5
)]
pub fn sync_free(prompt: &str) -> Result<String, LlmError> {
    if prompt.is_empty() {
        return Err(LlmError::Service("empty".to_owned()));
    }
    let first = prompt
        .chars()
        .next()
        .ok_or_else(|| LlmError::Service("none".to_owned()))?;
    Ok(first.to_string())
}

fn cached_answer(prompt: &str) -> Result<String, LlmError> {
    Ok(format!("cached: {prompt}"))
}

fn classify(result: &Result<String, LlmError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure(FailureType::Custom),
    }
}

/// A path fallback, a quality evaluator and a classifier.
#[circuit_breaker(name = "lints-fallback", fallback = cached_answer, quality = |answer: &String| if answer.is_empty() { 0.0 } else { 1.0 }, classify = classify)]
pub fn with_fallback(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

/// A cached fallback over an owned and a borrowed argument.
#[circuit_breaker(name = "lints-cached", fallback = cached)]
pub fn with_cache(prompt: &str, attempt: u32) -> Result<String, LlmError> {
    Ok(format!("{prompt}{attempt}"))
}

fn default_count(_items: Vec<u32>) -> usize {
    0
}

/// A plain return type with a fallback, and an owned argument it consumes.
#[circuit_breaker(name = "lints-plain", fallback = default_count)]
pub fn plain(items: Vec<u32>) -> usize {
    let owned = items;
    owned.len()
}

/// A hard deadline on a sync fn with owned arguments.
#[circuit_breaker(name = "lints-deadline", timeout_duration = "250ms")]
pub fn deadline(prompt: String) -> Result<String, LlmError> {
    Ok(prompt)
}

/// An async fn with a string-unit duration.
#[circuit_breaker(name = "lints-async", timeout_duration = "2s", recovery_timeout = "1m")]
pub async fn async_free(prompt: &str) -> Result<String, LlmError> {
    tokio::task::yield_now().await;
    Ok(prompt.to_owned())
}

async fn async_answer(prompt: &str) -> Result<String, LlmError> {
    Ok(format!("async cached: {prompt}"))
}

/// An async fn with an async fallback.
#[circuit_breaker(name = "lints-async-fallback", fallback = async_answer)]
pub async fn async_with_fallback(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn sync_plain_answer(_n: u64) -> u64 {
    0
}

/// An async fn with a plain return type and a sync fallback.
#[circuit_breaker(name = "lints-async-plain", fallback = sync_plain_answer)]
pub async fn async_plain(n: u64) -> u64 {
    n * 2
}

/// A generic fn.
#[circuit_breaker(name = "lints-generic")]
pub fn generic<T>(value: T) -> Result<String, LlmError>
where
    T: std::fmt::Display + Send,
{
    Ok(value.to_string())
}

/// A fn returning `impl Future`.
#[circuit_breaker(name = "lints-impl-future")]
pub fn returns_future(prompt: String) -> impl Future<Output = Result<String, LlmError>> {
    async move { Ok(prompt) }
}

/// A service with methods.
#[derive(Debug, Default)]
pub struct Service {
    prefix: String,
}

impl Service {
    fn fallback_answer(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}fallback {prompt}", self.prefix))
    }

    /// A `&self` method with a method fallback.
    #[circuit_breaker(name = "lints-method", fallback = Self::fallback_answer)]
    pub fn ask(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}{prompt}", self.prefix))
    }

    /// An async `&self` method.
    #[circuit_breaker(name = "lints-async-method")]
    pub async fn ask_async(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}{prompt}", self.prefix))
    }

    /// A deadline on a method taking `self: Arc<Self>`.
    #[circuit_breaker(name = "lints-arc-method", timeout_duration = 1)]
    pub fn ask_owned(self: Arc<Self>, prompt: String) -> Result<String, LlmError> {
        Ok(format!("{}{prompt}", self.prefix))
    }
}

/// A trait implemented with `#[async_trait]`.
#[async_trait::async_trait]
pub trait Ask {
    /// Asks.
    async fn ask(&self, prompt: &str) -> Result<String, LlmError>;
}

#[async_trait::async_trait]
impl Ask for Service {
    #[circuit_breaker(name = "lints-async-trait", timeout_duration = 5)]
    async fn ask(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}{prompt}", self.prefix))
    }
}

fn owned_answer(prompt: String, _count: u32) -> Result<String, LlmError> {
    Ok(prompt)
}

/// Owned arguments that wait for the body or the fallback, one `mut`.
#[circuit_breaker(name = "lints-owned-fallback", fallback = owned_answer)]
pub fn owned_fallback(mut prompt: String, count: u32) -> Result<String, LlmError> {
    prompt.push_str(&count.to_string());
    Ok(prompt)
}

/// A boxed future, as the `futures` crate names it.
#[circuit_breaker(name = "lints-box-future", timeout_duration = 5)]
pub fn box_future(prompt: &str) -> futures::future::BoxFuture<'_, Result<String, LlmError>> {
    Box::pin(async move { Ok(prompt.to_owned()) })
}

fn lints_config() -> breaker_runtime::CircuitBreakerConfig {
    breaker_runtime::CircuitBreakerConfig::default()
}

/// The whole configuration from an expression.
#[circuit_breaker(name = "lints-config", config = lints_config())]
pub fn configured(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

mod renamed {
    pub(crate) use breaker_runtime as resilience;
}

/// Through a re-export under another name.
#[circuit_breaker(name = "lints-crate", crate = renamed::resilience)]
pub async fn through_reexport(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[tokio::test]
async fn every_shape_answers() {
    assert_eq!(owned_fallback("o".to_owned(), 1), Ok("o1".to_owned()));
    assert_eq!(box_future("b").await, Ok("b".to_owned()));
    assert_eq!(configured("c"), Ok("c".to_owned()));
    assert_eq!(through_reexport("r").await, Ok("r".to_owned()));
    assert_eq!(sync_free("hi"), Ok("h".to_owned()));
    assert_eq!(with_fallback("x"), Ok("x".to_owned()));
    assert_eq!(with_cache("x", 1), Ok("x1".to_owned()));
    assert_eq!(plain(vec![1, 2]), 2);
    assert_eq!(deadline("d".to_owned()), Ok("d".to_owned()));
    assert_eq!(async_free("a").await, Ok("a".to_owned()));
    assert_eq!(async_with_fallback("a").await, Ok("a".to_owned()));
    assert_eq!(async_plain(2).await, 4);
    assert_eq!(generic(5), Ok("5".to_owned()));
    assert_eq!(returns_future("f".to_owned()).await, Ok("f".to_owned()));
    let service = Arc::new(Service {
        prefix: "> ".to_owned(),
    });
    assert_eq!(service.ask("m"), Ok("> m".to_owned()));
    assert_eq!(service.ask_async("m").await, Ok("> m".to_owned()));
    assert_eq!(
        Arc::clone(&service).ask_owned("o".to_owned()),
        Ok("> o".to_owned())
    );
    assert_eq!(Ask::ask(&*service, "t").await, Ok("> t".to_owned()));
}
