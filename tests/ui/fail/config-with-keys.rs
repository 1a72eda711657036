use breaker_runtime::{BreakerError, CircuitBreakerConfig, circuit_breaker};

#[derive(Debug)]
pub struct LlmError(BreakerError);

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self(error)
    }
}

fn llm_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::default()
}

#[circuit_breaker(name = "llm", config = llm_config(), failure_threshold = 3, timeout_duration = "10s")]
pub fn ask(prompt: String) -> Result<String, LlmError> {
    Ok(prompt)
}

fn main() {}
