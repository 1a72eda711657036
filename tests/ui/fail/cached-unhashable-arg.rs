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

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub temperature: f64,
}

#[circuit_breaker(name = "llm", fallback = cached)]
pub fn ask(prompt: Prompt) -> Result<String, LlmError> {
    Ok(format!("{prompt:?}"))
}

fn main() {}
