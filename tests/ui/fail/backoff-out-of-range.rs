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

#[circuit_breaker(name = "llm", backoff_multiplier = 0.5, max_open_duration = 600)]
pub fn shrinking(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(name = "llm", backoff_multiplier = 2, max_open_duration = "30s")]
pub fn capped_below_the_default_recovery(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(
    name = "llm",
    recovery_timeout = 120,
    backoff_multiplier = 2,
    max_open_duration = 90
)]
pub fn capped_below_its_recovery(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
