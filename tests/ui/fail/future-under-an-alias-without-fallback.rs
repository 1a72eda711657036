use std::future::Future;
use std::pin::Pin;

use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub enum LlmError {
    Breaker(BreakerError),
}

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self::Breaker(error)
    }
}

type Reply<'a> = Pin<Box<dyn Future<Output = Result<String, LlmError>> + Send + 'a>>;

#[circuit_breaker(name = "llm")]
pub fn ask(prompt: &str) -> Reply<'_> {
    Box::pin(async move { Ok(prompt.to_owned()) })
}

fn main() {}
