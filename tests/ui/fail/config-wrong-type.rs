use breaker_runtime::{BreakerError, CircuitBreakerConfig, circuit_breaker};

#[derive(Debug)]
pub struct LlmError(BreakerError);

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self(error)
    }
}

/// The builder, not what it builds.
fn llm_config() -> breaker_runtime::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder().failure_threshold(3)
}

#[circuit_breaker(name = "llm", config = llm_config())]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
