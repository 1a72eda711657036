use breaker_runtime::circuit_breaker;

fn to_io(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

#[circuit_breaker(name = "disk", map_err = to_io)]
pub fn read(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
