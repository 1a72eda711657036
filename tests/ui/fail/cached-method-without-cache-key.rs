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

pub struct TenantClient {
    pub tenant: String,
}

impl TenantClient {
    // Two clients for two tenants would serve each other's profiles.
    #[circuit_breaker(name = "profiles", fallback = cached)]
    pub fn profile(&self, id: u32, locale: &str) -> Result<String, ApiError> {
        Ok(format!("{} {id} {locale}", self.tenant))
    }
}

fn main() {}
