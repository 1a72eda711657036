use breaker_runtime::{BreakerError, circuit_breaker};

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

use std::future::Future;

#[circuit_breaker(name = "llm")]
pub fn ask(prompt: String) -> impl Future<Output = Result<String, LlmError>> + Send {
    async move { Ok(prompt) }
}

fn main() {
    let _future = ask("hi".to_owned());
}
