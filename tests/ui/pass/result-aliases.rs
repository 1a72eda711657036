//! A `Result` under any name is a `Result`: the std aliases, a library's,
//! the user's own, and a generic one.

use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub struct DbError;

impl From<BreakerError> for DbError {
    fn from(_: BreakerError) -> Self {
        DbError
    }
}

mod db {
    pub type DbResult<T> = Result<T, super::DbError>;
}

type Reply = Result<String, DbError>;

#[circuit_breaker(name = "alias-io", map_err = std::io::Error::other)]
pub fn read(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[circuit_breaker(name = "alias-fmt", map_err = |_| std::fmt::Error)]
pub fn render(text: &str) -> std::fmt::Result {
    let _ = text;
    Ok(())
}

#[circuit_breaker(name = "alias-lib")]
pub async fn query(id: u32) -> db::DbResult<u32> {
    Ok(id)
}

#[circuit_breaker(name = "alias-own", fallback = cached)]
pub fn reply(id: u32) -> Reply {
    Ok(id.to_string())
}

#[circuit_breaker(name = "alias-async-io", map_err = std::io::Error::other)]
pub async fn read_async(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
