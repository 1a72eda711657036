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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model(String);

#[circuit_breaker(name = "llm", fallback = cached)]
pub fn ask(prompt: &str, model: Model, retries: u8) -> Result<String, LlmError> {
    Ok(format!("{prompt} {model:?} {retries}"))
}

#[circuit_breaker(name = "llm-async", fallback = cached)]
pub async fn ask_async(prompt: String, history: &[String]) -> Result<Vec<String>, LlmError> {
    Ok(vec![prompt, history.join(",")])
}

#[circuit_breaker(name = "llm-none", fallback = cached)]
pub fn ping() -> Result<u64, LlmError> {
    Ok(1)
}

fn main() {
    let _ = ask("a", Model("m".to_owned()), 1);
    let _ = ask_async("a".to_owned(), &[]);
    let _ = ping();
}
