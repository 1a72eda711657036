use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub enum LlmError {
    Service(String),
    Breaker(BreakerError),
}

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self::Breaker(error)
    }
}

/// Doc comments and attributes stay.
#[circuit_breaker(name = "llm", failure_threshold = 5, recovery_timeout = 60.0, success_threshold = 3)]
#[inline]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    if prompt.is_empty() {
        return Err(LlmError::Service("empty".to_owned()));
    }
    let n: u32 = prompt.len().try_into().map_err(|_| LlmError::Service("long".to_owned()))?;
    Ok(format!("{prompt}{n}"))
}

fn main() {
    let _ = ask("hi");
}
