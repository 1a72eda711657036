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

#[circuit_breaker(name = "llm", failure_rate_threshold = 0.5, sliding_window_size = 20, minimum_calls = 50)]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(name = "db", failure_rate_threshold = 0.5, sliding_window_size = 5)]
pub fn query(sql: &str) -> Result<String, LlmError> {
    Ok(sql.to_owned())
}

fn main() {}
