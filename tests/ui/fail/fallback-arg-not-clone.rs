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

#[derive(Debug)]
pub struct Prompt(pub String);

fn offline(prompt: Prompt) -> Result<String, LlmError> {
    Ok(prompt.0)
}

#[circuit_breaker(name = "llm", fallback = offline)]
pub fn ask(prompt: Prompt) -> Result<String, LlmError> {
    Ok(prompt.0)
}

fn main() {}
