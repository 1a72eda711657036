//! `crate = path`: the attribute used through a re-export of
//! `breaker_runtime` under another name, as a framework crate would offer it.

mod my_app {
    pub mod resilience {
        pub use breaker_runtime as breaker;
    }
}

use my_app::resilience::breaker::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub struct LlmError(BreakerError);

impl From<BreakerError> for LlmError {
    fn from(error: BreakerError) -> Self {
        Self(error)
    }
}

fn canned(prompt: String) -> usize {
    prompt.len()
}

#[circuit_breaker(name = "crate-sync", crate = my_app::resilience::breaker, failure_threshold = 2)]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(name = "crate-async", crate = "crate::my_app::resilience::breaker", fallback = cached)]
pub async fn ask_async(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

#[circuit_breaker(name = "crate-fallback", crate = my_app::resilience::breaker, fallback = canned, timeout_duration = 1)]
pub fn count(prompt: String) -> usize {
    prompt.len()
}

fn main() {
    ask("hi").unwrap();
    assert_eq!(count("four".to_owned()), 4);
    let _ = ask_async("hi");
}
