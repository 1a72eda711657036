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

#[derive(Clone)]
pub struct Client {
    prefix: String,
}

impl Client {
    fn offline(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}offline {prompt}", self.prefix))
    }

    #[circuit_breaker(name = "llm", fallback = Self::offline)]
    pub fn ask(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}{prompt}", self.prefix))
    }

    #[circuit_breaker(name = "llm-mut")]
    pub fn ask_mut(&mut self, prompt: &str) -> Result<String, LlmError> {
        self.prefix.push_str(prompt);
        Ok(self.prefix.clone())
    }

    #[circuit_breaker(name = "llm-owned", timeout_duration = "2s")]
    pub fn into_answer(self, prompt: String) -> Result<String, LlmError> {
        Ok(self.prefix + &prompt)
    }

    #[circuit_breaker(name = "llm-async")]
    pub async fn ask_async(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!("{}{prompt}", self.prefix))
    }

    /// # Safety
    /// None needed; `unsafe` is kept as written.
    #[circuit_breaker(name = "llm-unsafe")]
    pub unsafe fn ask_unsafe(&self) -> Result<String, LlmError> {
        Ok(self.prefix.clone())
    }
}

fn main() {
    let mut client = Client { prefix: String::new() };
    let _ = client.ask("a");
    let _ = client.ask_mut("b");
    let _ = client.clone().into_answer("c".to_owned());
    let _ = client.ask_async("d");
}
