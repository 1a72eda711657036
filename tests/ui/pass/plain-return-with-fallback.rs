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

fn no_tokens(_prompt: &str) -> usize {
    0
}

async fn no_tokens_async(_prompt: &str) -> usize {
    0
}

#[circuit_breaker(name = "tokens", fallback = no_tokens)]
pub fn count(prompt: &str) -> usize {
    if prompt.is_empty() {
        return 0;
    }
    prompt.len()
}

#[circuit_breaker(name = "tokens", fallback = no_tokens_async)]
pub async fn count_async(prompt: &str) -> usize {
    prompt.len()
}

fn log_nothing() {}

#[circuit_breaker(name = "logger", fallback = log_nothing)]
pub fn log() {}

fn main() {
    let _ = count("a b");
    let _ = count_async("a b");
    log();
}
