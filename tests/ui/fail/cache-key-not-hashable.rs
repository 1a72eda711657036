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

pub struct Client {
    pub weight: f64,
}

impl Client {
    #[circuit_breaker(name = "scores", fallback = cached, cache_key = (self.weight, id))]
    pub fn score(&self, id: u32) -> Result<String, ApiError> {
        Ok(format!("{id}"))
    }
}

fn main() {}
