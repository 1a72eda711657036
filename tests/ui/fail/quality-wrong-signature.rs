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

fn score(answer: &str) -> bool {
    !answer.is_empty()
}

#[circuit_breaker(name = "llm", quality = score)]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
