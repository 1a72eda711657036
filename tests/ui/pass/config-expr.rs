//! `config = expr`: the whole configuration from an expression the code
//! and its tests share.

use std::sync::LazyLock;
use std::time::Duration;

use breaker_runtime::{BreakerError, CircuitBreakerConfig, circuit_breaker, registry};

#[derive(Debug)]
pub struct LlmError(BreakerError);

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self(error)
    }
}

pub fn llm_config() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold: 3,
        timeout_duration: Duration::from_secs(20),
        ..CircuitBreakerConfig::default()
    }
}

static SEARCH: LazyLock<CircuitBreakerConfig> = LazyLock::new(|| CircuitBreakerConfig {
    failure_threshold: 7,
    ..CircuitBreakerConfig::default()
});

#[circuit_breaker(name = "config-llm", config = llm_config())]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(name = "config-search", config = &*SEARCH, fallback = cached)]
pub async fn search(query: &str) -> Result<usize, LlmError> {
    Ok(query.len())
}

pub struct Client;

impl Client {
    fn config() -> Result<CircuitBreakerConfig, breaker_runtime::ConfigError> {
        CircuitBreakerConfig::builder().failure_threshold(2).build()
    }

    #[circuit_breaker(name = "config-method", config = Self::config())]
    pub fn call(&self) -> Result<u8, LlmError> {
        Ok(1)
    }
}

fn main() {
    ask("hi").unwrap();
    assert_eq!(registry().get("config-llm").unwrap().config(), &llm_config());
    Client.call().unwrap();
    assert_eq!(registry().get("config-method").unwrap().config().failure_threshold, 2);
    let _ = search("hi");
}
