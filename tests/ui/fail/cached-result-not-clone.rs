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
pub struct Answer(pub String);

#[circuit_breaker(name = "llm", fallback = cached)]
pub fn ask(prompt: &str) -> Result<Answer, LlmError> {
    Ok(Answer(prompt.to_owned()))
}

fn main() {}
