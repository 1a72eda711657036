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

pub struct Model {
    pub id: u32,
}

#[circuit_breaker(name = "llm", key = model)]
pub fn ask(model: &Model, prompt: &str) -> Result<String, LlmError> {
    Ok(format!("{}: {prompt}", model.id))
}

fn main() {}
