use breaker_runtime::circuit_breaker;

#[circuit_breaker(name = "disk", map_err = std::io::Error::other)]
pub fn size(path: &str) -> u64 {
    path.len() as u64
}

fn main() {}
