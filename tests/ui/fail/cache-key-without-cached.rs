use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub enum ApiError {
    Breaker(BreakerError),
}

impl From<BreakerError> for ApiError {
    fn from(error: BreakerError) -> Self {
        Self::Breaker(error)
    }
}

#[circuit_breaker(name = "profiles", cache_key = id)]
pub fn profile(id: u32) -> Result<String, ApiError> {
    Ok(format!("{id}"))
}

fn main() {}
