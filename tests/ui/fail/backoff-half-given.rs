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

#[circuit_breaker(name = "llm", backoff_multiplier = 2.0)]
pub fn without_a_cap(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(name = "llm", max_open_duration = "10m")]
pub fn without_a_multiplier(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
