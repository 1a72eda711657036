use breaker_runtime::circuit_breaker;

#[derive(Debug)]
pub struct LlmError;

#[circuit_breaker(name = "llm")]
pub fn ask(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn main() {}
