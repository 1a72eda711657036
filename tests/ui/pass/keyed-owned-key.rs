//! `key = arg` where the argument is owned and the function has a fallback:
//! the key is read before the arguments are kept for the fallback.
use breaker_runtime::{BreakerError, circuit_breaker};

#[derive(Debug)]
pub struct E(#[allow(dead_code)] BreakerError);
impl From<BreakerError> for E {
    fn from(e: BreakerError) -> Self {
        E(e)
    }
}

fn answer_later(model: String) -> Result<String, E> {
    Ok(format!("fallback for {model}"))
}

#[circuit_breaker(name = "ui-owned-key", key = model, fallback = answer_later)]
fn ask(model: String) -> Result<String, E> {
    Ok(format!("{model} answers"))
}

#[circuit_breaker(name = "ui-owned-key-moved", key = model, fallback = answer_later)]
fn consume(model: String) -> Result<String, E> {
    let owned: String = model; // the body may move the key's argument
    Ok(owned)
}

fn main() {
    assert_eq!(ask("a".to_owned()).unwrap(), "a answers");
    assert_eq!(consume("b".to_owned()).unwrap(), "b");
}
