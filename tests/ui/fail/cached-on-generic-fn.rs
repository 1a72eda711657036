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

#[circuit_breaker(name = "llm", fallback = cached)]
pub fn ask<P: AsRef<str>>(prompt: P) -> Result<String, LlmError> {
    Ok(prompt.as_ref().to_owned())
}

fn main() {}
