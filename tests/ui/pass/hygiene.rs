//! The expansion does not depend on what the user's module shadows.
#![allow(dead_code, non_camel_case_types)]

mod core {}
mod std {}
mod breaker {}

type Option = ();
struct Some;
struct None;
struct Ok;
struct Err;
struct Box;
struct Duration;
struct Default;
trait Clone {}
trait Into {}

#[derive(Debug)]
pub struct LlmError(::breaker_runtime::BreakerError);

impl ::core::convert::From<::breaker_runtime::BreakerError> for LlmError {
    fn from(error: ::breaker_runtime::BreakerError) -> Self {
        LlmError(error)
    }
}

type Result = ();

fn offline(prompt: ::std::string::String) -> ::core::result::Result<::std::string::String, LlmError> {
    ::core::result::Result::Ok(::std::string::ToString::to_string(&prompt))
}

#[::breaker_runtime::circuit_breaker(name = "hygiene", timeout_duration = 1, rate_limit_per_minute = 5, fallback = offline, quality = |_: &::std::string::String| 1.0)]
pub fn ask(prompt: ::std::string::String) -> ::core::result::Result<::std::string::String, LlmError> {
    let __breaker = 1;
    let __breaker_result = 2;
    let __breaker_options = __breaker + __breaker_result;
    ::core::result::Result::Ok(::std::format!("{prompt}{__breaker_options}"))
}

#[::breaker_runtime::circuit_breaker(name = "hygiene-cached", fallback = cached)]
pub async fn ask_cached(prompt: &str) -> ::core::result::Result<u32, LlmError> {
    ::core::result::Result::Ok(prompt.len() as u32)
}

fn main() {
    let _ = ask("a".to_owned());
    let _ = ask_cached("a");
}
