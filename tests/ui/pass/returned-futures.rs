//! Functions that return a future rather than being `async`: the breaker
//! guards the future's work, and the return type stays as written.

use std::future::Future;
use std::pin::Pin;

use breaker_runtime::{BreakerError, circuit_breaker};
use futures::future::{BoxFuture, LocalBoxFuture};

#[derive(Debug)]
pub enum LlmError {
    Service(String),
    Breaker(BreakerError),
}

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self::Breaker(error)
    }
}

#[circuit_breaker(name = "box-future")]
pub fn boxed(prompt: &str) -> BoxFuture<'_, Result<String, LlmError>> {
    Box::pin(async move { Ok(prompt.to_owned()) })
}

#[circuit_breaker(name = "box-future", timeout_duration = 5)]
pub fn boxed_owned(prompt: String) -> futures::future::BoxFuture<'static, Result<String, LlmError>> {
    Box::pin(async move { Ok(prompt) })
}

#[circuit_breaker(name = "local-box-future")]
pub fn local(prompt: &str) -> LocalBoxFuture<'_, Result<usize, LlmError>> {
    Box::pin(async move { Ok(prompt.len()) })
}

#[circuit_breaker(name = "pin-box-future")]
pub fn pinned<'a>(
    prompt: &'a str,
) -> Pin<Box<dyn Future<Output = Result<String, LlmError>> + Send + 'a>> {
    Box::pin(async move { Ok(prompt.to_owned()) })
}

fn no_tokens(_prompt: String) -> usize {
    0
}

#[circuit_breaker(name = "box-future-plain", fallback = no_tokens)]
pub fn tokens(prompt: String) -> BoxFuture<'static, usize> {
    Box::pin(async move { prompt.len() })
}

pub struct Client;

impl Client {
    #[circuit_breaker(name = "box-future-method")]
    pub fn ask<'a>(&'a self, prompt: &'a str) -> BoxFuture<'a, Result<String, LlmError>> {
        Box::pin(async move { Ok(prompt.to_owned()) })
    }
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let future = boxed("hi");
    assert_send(&future);
    let _: BoxFuture<'_, Result<String, LlmError>> = future;
    let _ = boxed_owned("hi".to_owned());
    let _: LocalBoxFuture<'_, Result<usize, LlmError>> = local("hi");
    let _ = pinned("hi");
    let _ = tokens("hi".to_owned());
    let _ = Client.ask("hi");
}
