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
pub fn ask(prompt: String, tokens: u32) -> Result<String, LlmError> {
    Ok(format!("{prompt}{tokens}"))
}

fn offline(prompt: String) -> usize {
    prompt.len()
}

#[circuit_breaker(name = "llm-plain", timeout_duration = 1, fallback = offline)]
pub fn count(prompt: String) -> usize {
    prompt.len()
}

fn main() {
    let _ = ask("a".to_owned(), 1);
    let _ = count("a".to_owned());
}
