use breaker_runtime::circuit_breaker;

// `io::Error` is another crate's type: it cannot implement `From<BreakerError>`.
#[circuit_breaker(name = "disk")]
pub fn read(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
