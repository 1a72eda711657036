//! `cache_key` on methods with every kind of receiver, and on free functions.
use std::sync::Arc;

use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub enum ApiError {
    Service(String),
    Breaker(BreakerError),
}

impl From<BreakerError> for ApiError {
    fn from(error: BreakerError) -> Self {
        Self::Breaker(error)
    }
}

#[derive(Clone)]
pub struct Client {
    tenant: String,
    calls: u32,
}

impl Client {
    #[circuit_breaker(name = "key-ref", fallback = cached, cache_key = (self.tenant.clone(), id))]
    pub fn by_ref(&self, id: u32) -> Result<String, ApiError> {
        Ok(format!("{} {id}", self.tenant))
    }

    #[circuit_breaker(name = "key-mut", fallback = cached, cache_key = (self.tenant.clone(), name.to_owned()))]
    pub fn by_mut(&mut self, name: &str) -> Result<String, ApiError> {
        self.calls += 1;
        Ok(format!("{name} {}", self.calls))
    }

    #[circuit_breaker(name = "key-owned", fallback = cached, cache_key = self.tenant.clone())]
    pub fn by_value(self) -> Result<String, ApiError> {
        Ok(self.tenant)
    }

    #[circuit_breaker(name = "key-arc", timeout_duration = "2s", fallback = cached, cache_key = (self.tenant.clone(), query.clone()))]
    pub fn by_arc(self: Arc<Self>, query: String) -> Result<String, ApiError> {
        Ok(query + &self.tenant)
    }

    #[circuit_breaker(name = "key-async", fallback = cached, cache_key = (self.tenant.clone(), query.to_owned()))]
    pub async fn by_ref_async(&self, query: &str) -> Result<Vec<String>, ApiError> {
        Ok(vec![self.tenant.clone(), query.to_owned()])
    }
}

/// A destructured argument is fine when `cache_key` names the key.
#[circuit_breaker(name = "key-free", fallback = cached, cache_key = (x, y))]
pub fn free((x, y): (i32, i32), noise: f64) -> Result<i32, ApiError> {
    if noise > 1.0 {
        return Err(ApiError::Service("noisy".to_owned()));
    }
    Ok(x + y)
}

fn main() {
    let mut client = Client { tenant: "acme".to_owned(), calls: 0 };
    let _ = client.by_ref(1);
    let _ = client.by_mut("a");
    let _ = client.clone().by_value();
    let _ = Arc::new(client.clone()).by_arc("q".to_owned());
    let _ = client.by_ref_async("q");
    let _ = free((1, 2), 0.5);
}
