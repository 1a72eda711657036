use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub struct LlmError(BreakerError);

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self(error)
    }
}

mod my_app {}

#[circuit_breaker(name = "llm", crate = my_app::breaker)]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
