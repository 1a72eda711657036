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


#[circuit_breaker(name = "llm", key = "gpt-4o")]
pub fn ask(model: &str, prompt: &str) -> Result<String, LlmError> {
    Ok(format!("{}: {prompt}", model))
}

fn main() {}
