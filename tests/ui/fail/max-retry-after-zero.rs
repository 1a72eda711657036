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

#[circuit_breaker(name = "llm", max_retry_after = "0s")]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
