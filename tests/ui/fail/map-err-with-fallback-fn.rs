use breaker_runtime::circuit_breaker;

fn empty(_path: &str) -> std::io::Result<String> {
    Ok(String::new())
}

#[circuit_breaker(name = "disk", fallback = empty, map_err = std::io::Error::other)]
pub fn read(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
