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

#[circuit_breaker(name = "llm", timeout_duration = 0.5)]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

pub struct Client;

impl Client {
    #[circuit_breaker(name = "llm", timeout_duration = 0.5)]
    pub fn ask(&self, prompt: String) -> Result<String, LlmError> {
        Ok(prompt)
    }
}

fn main() {}
