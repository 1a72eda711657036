use breaker_runtime::circuit_breaker;

#[circuit_breaker(name = "disk", map_err = "io")]
pub fn read(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
