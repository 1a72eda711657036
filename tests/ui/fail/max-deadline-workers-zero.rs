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

#[circuit_breaker(name = "llm", timeout_duration = 1, max_deadline_workers = 0)]
pub fn ask(prompt: String) -> Result<String, LlmError> {
    Ok(prompt)
}

fn main() {}
