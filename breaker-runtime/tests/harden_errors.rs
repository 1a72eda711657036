//! Error cases and unwinding (issue 9, item 11): a future cancelled while a
//! sibling panics is a cancellation, not a failure; a call's own panic is a
//! failure and keeps its payload. Every state-machine test runs on a manual
//! clock.

mod common;

use std::future::pending;
use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use breaker_runtime::{
    AsyncFallback, BreakerError, BreakerFailure, CallError, CallOptions, CircuitBreaker,
    CircuitBreakerConfig, CircuitState, FailureType, FallbackReason, Outcome,
};
use common::{manual_breaker, ready_to_probe, single_probe_config};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A payload no one would mistake for a message.
#[derive(Debug, PartialEq)]
struct Payload(u32);

/// Runs `f`, expecting it to panic with a [`Payload`]; its value.
fn payload_of(f: impl FnOnce()) -> u32 {
    let payload = panic::catch_unwind(AssertUnwindSafe(f)).expect_err("it panicked");
    payload
        .downcast::<Payload>()
        .map(|payload| payload.0)
        .unwrap_or_else(|other| panic!("the original payload was lost: {other:?}"))
}

/// Asserts `breaker` is still half-open with its one probe cancelled: no
/// failure beyond the one that opened it.
fn assert_probe_cancelled(breaker: &CircuitBreaker) {
    let metrics = breaker.get_metrics();
    assert_eq!(breaker.state(), CircuitState::HalfOpen, "{metrics:?}");
    assert_eq!(metrics.cancelled_calls, 1, "{metrics:?}");
    assert_eq!(
        metrics.failures_by_type.error, 1,
        "only the opening failure"
    );
    assert_eq!(metrics.probes_in_flight, 0, "the slot was given back");
}

#[test]
fn a_probe_dropped_by_join_while_a_sibling_panics_is_cancelled() {
    let (breaker, _clock) = ready_to_probe("errors-join");
    let rt = runtime();
    let seen = payload_of(|| {
        rt.block_on(async {
            let probe = breaker.call_async(async { pending::<Result<(), String>>().await });
            let sibling = async {
                tokio::task::yield_now().await;
                panic::panic_any(Payload(1));
            };
            let _: (Result<(), _>, ()) = tokio::join!(probe, sibling);
        });
    });
    assert_eq!(seen, 1);
    assert_probe_cancelled(&breaker);
}

#[test]
fn a_probe_dropped_by_select_while_a_sibling_panics_is_cancelled() {
    let (breaker, _clock) = ready_to_probe("errors-select");
    let rt = runtime();
    let seen = payload_of(|| {
        rt.block_on(async {
            let probe = breaker.call_async(async { pending::<Result<(), String>>().await });
            let sibling = async {
                tokio::task::yield_now().await;
                panic::panic_any(Payload(2));
            };
            tokio::select! {
                biased;
                _ = probe => unreachable!("the probe never finishes"),
                () = sibling => {}
            }
        });
    });
    assert_eq!(seen, 2);
    assert_probe_cancelled(&breaker);
}

#[test]
fn an_async_call_whose_own_future_panics_is_an_error_and_keeps_its_payload() {
    let (breaker, _clock) = ready_to_probe("errors-own-async-panic");
    let rt = runtime();
    let seen = payload_of(|| {
        rt.block_on(async {
            let _ = breaker
                .call_async(async {
                    tokio::task::yield_now().await;
                    panic::panic_any(Payload(3));
                    #[allow(unreachable_code)]
                    Ok::<(), String>(())
                })
                .await;
        });
    });
    assert_eq!(seen, 3);
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.error, 2, "{metrics:?}");
    assert_eq!(metrics.cancelled_calls, 0);
    assert_eq!(breaker.state(), CircuitState::Open, "the probe failed");
}

#[test]
fn an_async_call_panicking_in_its_first_poll_is_an_error_without_a_runtime() {
    let (breaker, _clock) = manual_breaker("errors-async-no-runtime", single_probe_config());
    let seen = payload_of(|| {
        let call = breaker.call_async(async {
            panic::panic_any(Payload(4));
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        });
        let _ = futures_lite_block_on(call);
    });
    assert_eq!(seen, 4);
    assert_eq!(breaker.get_metrics().failures_by_type.error, 1);
    assert_eq!(breaker.get_metrics().cancelled_calls, 0);
}

#[test]
fn a_sync_call_whose_body_panics_is_an_error_and_keeps_its_payload() {
    let (breaker, _clock) = ready_to_probe("errors-own-sync-panic");
    let seen = payload_of(|| {
        let _ = breaker.call(|| -> Result<(), String> { panic::panic_any(Payload(5)) });
    });
    assert_eq!(seen, 5);
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.error, 2, "{metrics:?}");
    assert_eq!(metrics.cancelled_calls, 0);
    assert_eq!(breaker.state(), CircuitState::Open, "the probe failed");

    // And on the closed path.
    let (closed, _clock) = manual_breaker("errors-own-sync-panic-closed", single_probe_config());
    let seen = payload_of(|| {
        let _ = closed.call(|| -> Result<(), String> { panic::panic_any(Payload(6)) });
    });
    assert_eq!(seen, 6);
    assert_eq!(closed.get_metrics().failures_by_type.error, 1);
    assert_eq!(closed.state(), CircuitState::Open);
}

/// Polls `fut` to completion on this thread, with no runtime at all.
fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

/// An error with a cause, as a client library's errors have.
#[derive(Debug, thiserror::Error)]
#[error("request failed")]
struct RequestError {
    #[source]
    cause: std::io::Error,
}

#[test]
fn an_inner_error_keeps_its_display_and_its_source() {
    use std::error::Error as _;
    let error = CallError::Inner(RequestError {
        cause: std::io::Error::other("connection reset"),
    });
    let CallError::Inner(inner) = &error else {
        unreachable!()
    };
    assert_eq!(error.to_string(), inner.to_string());
    assert_eq!(error.to_string(), "request failed");
    let source = error.source().expect("the inner error's source");
    assert_eq!(source.to_string(), "connection reset");
    let own = inner.source().unwrap();
    assert!(
        std::ptr::addr_eq(source, own),
        "source() is the inner error's own source, not the inner error"
    );
}

#[test]
fn a_fallback_returning_an_error_keeps_why_it_ran_and_its_error() {
    use std::error::Error as _;
    let (breaker, _clock) = manual_breaker("errors-fallback-err", single_probe_config());
    let options = CallOptions::new().fallback(|_: &FallbackReason| {
        Some(Err::<u32, _>(RequestError {
            cause: std::io::Error::other("cache offline"),
        }))
    });
    let error = breaker
        .call_with(&options, || {
            Err(RequestError {
                cause: std::io::Error::other("connection reset"),
            })
        })
        .unwrap_err();
    let original = FallbackReason::Failure {
        failure_type: FailureType::Error,
    };
    assert_eq!(error.fallback_reason(), Some(&original), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the fallback failed: request failed (it ran because: call failed (error))"
    );
    let CallError::Breaker(failure) = &error else {
        panic!("expected the fallback's error with its reason: {error:?}");
    };
    let BreakerFailure::FallbackFailed(failed) = &**failure else {
        panic!("expected the fallback's error with its reason: {error:?}");
    };
    assert!(std::ptr::eq(error.fallback_error().unwrap(), failed));
    assert_eq!(error.breaker_error(), None);
    assert_eq!(failed.reason, original);
    let own = &failed.error;
    assert_eq!(own.cause.to_string(), "cache offline");
    assert!(
        std::ptr::addr_eq(error.source().unwrap(), own),
        "source() is the fallback's error"
    );
    assert_eq!(breaker.get_metrics().fallback_failures, 1);

    // A rejection is named too, and `into_inner` gives the fallback's error.
    breaker.force_open();
    let error = breaker.call_with(&options, || Ok(1)).unwrap_err();
    assert_eq!(error.fallback_reason(), Some(&FallbackReason::ForcedOpen));
    assert_eq!(
        error.into_inner().unwrap().cause.to_string(),
        "cache offline"
    );
}

#[test]
fn a_panicking_fallback_keeps_its_payload() {
    let (breaker, _clock) = manual_breaker("errors-fallback-panic", single_probe_config());
    breaker.force_open();
    let error = breaker
        .call_with_fallback(|| Ok::<u32, String>(1), || panic::panic_any(Payload(7)))
        .unwrap_err();
    let breaker_error = error.breaker_error().expect("a breaker error");
    assert!(
        matches!(
            breaker_error,
            BreakerError::FallbackFailed {
                reason: FallbackReason::ForcedOpen,
                ..
            }
        ),
        "{breaker_error:?}"
    );
    assert!(
        breaker_error
            .to_string()
            .ends_with("the fallback panicked: a non-string panic payload (it ran because: circuit forced open)"),
        "{breaker_error}"
    );
    let copy = breaker_error.clone();
    assert_eq!(
        &copy, breaker_error,
        "the payload takes no part in equality"
    );
    let payload = copy.take_panic_payload().expect("the original payload");
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(7)));
    assert!(
        breaker_error.take_panic_payload().is_none(),
        "clones share one payload, taken once"
    );
}

#[test]
fn a_panicking_async_fallback_keeps_its_payload() {
    let (breaker, _clock) = manual_breaker("errors-async-fallback-panic", single_probe_config());
    breaker.force_open();
    let options = CallOptions::new().fallback(AsyncFallback(|_: &FallbackReason| {
        Some(async {
            tokio::task::yield_now().await;
            panic::panic_any(Payload(8));
            #[allow(unreachable_code)]
            Ok::<u32, String>(0)
        })
    }));
    let error = runtime()
        .block_on(breaker.call_async_with(&options, async { Ok(1) }))
        .unwrap_err();
    let payload = error
        .breaker_error()
        .and_then(BreakerError::take_panic_payload)
        .expect("the original payload");
    assert_eq!(payload.downcast_ref::<Payload>(), Some(&Payload(8)));
}

#[test]
fn the_local_limiter_and_the_dependency_429_say_whose_rate_limit_it_is() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(5)
        .rate_limit_per_minute(60)
        .rate_limit_burst(1)
        .build()
        .unwrap();
    let (breaker, _clock) = manual_breaker("errors-whose-rate-limit", config);

    // The dependency answered 429: a `RateLimit` failure, said so.
    let seen = std::cell::Cell::new(None);
    let options = CallOptions::new()
        .classify(|_: &Result<u32, u16>| Outcome::DependencyRateLimited { retry_after: None })
        .fallback(|reason: &FallbackReason| {
            seen.set(Some(*reason));
            Some(Ok(0))
        });
    breaker.call_with(&options, || Err(429)).unwrap();
    let dependency = seen.take().expect("the fallback ran");
    assert_eq!(
        dependency,
        FallbackReason::Failure {
            failure_type: FailureType::RateLimit
        }
    );
    assert_eq!(
        dependency.to_string(),
        "call failed (rate_limit): the dependency answered rate limited"
    );

    // Our own limiter refused: a rejection, said so, counted apart.
    let error = breaker.call(|| Ok::<u32, u16>(1)).unwrap_err();
    let local = error.breaker_error().expect("refused by the breaker");
    assert!(
        matches!(local, BreakerError::LocalRateLimit { .. }),
        "{local:?}"
    );
    assert!(
        local
            .to_string()
            .starts_with("circuit breaker `errors-whose-rate-limit` is rate limited by the local limiter; next permit in"),
        "{local}"
    );
    let reason = FallbackReason::LocalRateLimit {
        retry_after: Duration::from_secs(1),
    };
    assert!(reason.is_rejection());
    assert_eq!(
        reason.to_string(),
        "rate limited by the local limiter (next permit in 1s)"
    );
    assert_eq!(
        serde_json::to_value(reason).unwrap()["reason"],
        "local_rate_limit"
    );

    let metrics = breaker.get_metrics();
    assert_eq!(metrics.local_rate_limited_calls, 1);
    assert_eq!(metrics.failures_by_type.rate_limit, 1);
    let json = serde_json::to_value(&metrics).unwrap();
    assert_eq!(json["local_rate_limited_calls"], 1, "{json}");
    assert!(json.get("rate_limited_calls").is_none());

    let status = breaker_runtime::Registry::new();
    status.register(breaker.clone()).unwrap();
    let table = status.status().to_string();
    assert!(
        table.lines().next().unwrap().contains(" LOCAL-RL "),
        "{table}"
    );
}

#[test]
fn a_call_error_is_one_word_so_small_results_come_back_in_registers() {
    use std::mem::size_of;
    // The breaker's error and a fallback's failure share one box: a second
    // boxed variant needs a tag beside it (16 bytes), and the paired bench
    // rounds measured open rejections and async calls slower for it.
    assert_eq!(size_of::<CallError<()>>(), size_of::<usize>());
    assert_eq!(size_of::<Result<u64, CallError<()>>>(), 16);
    assert!(size_of::<Result<u32, CallError<u16>>>() <= 2 * size_of::<usize>());
}
