use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub struct LlmError(BreakerError);

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self(error)
    }
}

#[circuit_breaker(name = "llm", crate = 42)]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
