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

#[async_trait::async_trait]
pub trait Ask {
    async fn ask(&self, prompt: &str) -> Result<String, LlmError>;
    async fn count(&self, prompt: String) -> usize;
}

pub struct Client;

fn no_tokens(_client: &Client, _prompt: String) -> usize {
    0
}

#[async_trait::async_trait]
impl Ask for Client {
    #[circuit_breaker(name = "llm", timeout_duration = 10)]
    async fn ask(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(prompt.to_owned())
    }

    #[circuit_breaker(name = "tokens", fallback = no_tokens)]
    async fn count(&self, prompt: String) -> usize {
        prompt.len()
    }
}

fn main() {}
