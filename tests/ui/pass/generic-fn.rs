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

use std::fmt::Display;

#[circuit_breaker(name = "llm")]
pub fn describe<T: Display, const N: usize>(items: [T; N]) -> Result<String, LlmError> {
    Ok(items.iter().map(ToString::to_string).collect())
}

#[circuit_breaker(name = "llm")]
pub async fn describe_async<'a, T>(item: &'a T) -> Result<String, LlmError>
where
    T: Display + Sync + ?Sized,
{
    Ok(item.to_string())
}

fn main() {
    let _ = describe([1, 2]);
    let _ = describe_async("x");
}
