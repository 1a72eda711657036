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

use breaker_runtime::{FailureType, Outcome};

fn offline(_prompt: String) -> Result<String, LlmError> {
    Ok(String::new())
}

fn classify(result: &Result<String, LlmError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(LlmError::Service(_)) => Outcome::Failure(FailureType::Error),
        Err(LlmError::Breaker(_)) => Outcome::Ignored,
    }
}

#[circuit_breaker(
    name = "llm",
    failure_threshold = 5,
    recovery_timeout = "2m",
    success_threshold = 3,
    timeout_duration = "500ms",
    max_deadline_workers = 8,
    quality_threshold = 0.7,
    rate_limit_per_minute = 60,
    rate_limit_burst = 5,
    sliding_window_size = 50,
    half_open_max_calls = 2,
    failure_rate_threshold = 0.5,
    minimum_calls = 10,
    backoff_multiplier = 2.0,
    max_open_duration = "10m",
    max_retry_after = "15m",
    fallback = offline,
    quality = |answer: &String| if answer.is_empty() { 0.0 } else { 1.0 },
    classify = classify,
)]
pub fn ask(prompt: String) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {
    let _ = ask("a".to_owned());
}
