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

#[circuit_breaker(name = "llm", timeout_duration = 0.25)]
pub async fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {
    let _future = ask("hi");
}
