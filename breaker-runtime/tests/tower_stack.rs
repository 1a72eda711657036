//! The layer (feature `tower`) in a `tower::ServiceBuilder` stack with
//! tower's own middleware: `Buffer` above it, `Timeout` and
//! `ConcurrencyLimit` below it. Rejections come from `call`, so `Buffer`
//! keeps serving after the circuit has refused calls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use breaker_runtime::tower::{CircuitBreakerLayer, ServiceError};
use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, FailureType, ManualClock,
    Outcome,
};
use tower::buffer::BufferLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower::timeout::error::Elapsed;
use tower::{BoxError, Layer, ServiceBuilder, ServiceExt};

/// The service at the bottom of the stack, counting exactly.
#[derive(Default)]
struct Upstream {
    calls: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    hang: AtomicBool,
}

/// Counts a call in flight until dropped, also when tower's timeout drops
/// the call.
struct InFlight(Arc<Upstream>);

impl InFlight {
    fn enter(upstream: &Arc<Upstream>) -> Self {
        upstream.calls.fetch_add(1, Ordering::SeqCst);
        let now = upstream.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        upstream.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(upstream))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn classify(result: &Result<u64, BoxError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        // tower's own timeout, below the breaker, counts as a timeout.
        Err(error) if error.is::<Elapsed>() => Outcome::Failure(FailureType::Timeout),
        Err(_) => Outcome::Failure(FailureType::Error),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_composes_with_buffer_timeout_and_concurrency_limit() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(2)
        .build()
        .unwrap();
    let breaker = CircuitBreaker::builder("tower-stack")
        .config(config)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let upstream = Arc::new(Upstream::default());
    let inner = {
        let upstream = Arc::clone(&upstream);
        tower::service_fn(move |n: u64| {
            let upstream = Arc::clone(&upstream);
            async move {
                let _in_flight = InFlight::enter(&upstream);
                let wait = if upstream.hang.load(Ordering::SeqCst) {
                    Duration::from_secs(3600)
                } else {
                    // Long enough for calls to overlap, so the limit shows.
                    Duration::from_millis(30)
                };
                tokio::time::sleep(wait).await;
                Ok::<u64, BoxError>(n * 2)
            }
        })
    };
    let stack = ServiceBuilder::new()
        .layer(BufferLayer::new(16))
        .map_err(|error: ServiceError<BoxError>| error.into_box_error())
        .layer(CircuitBreakerLayer::new(breaker.clone()).classify(classify))
        .layer(TimeoutLayer::new(Duration::from_millis(100)))
        .layer(ConcurrencyLimitLayer::new(2))
        .service(inner);

    // Eight at once through the buffer: all answered, never more than two
    // inside the limit.
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..8 {
        // Boxed outside the async block: rustc cannot prove the block
        // `Send` through the `map_err` closure's higher-ranked error type
        //, but proves the box.
        let call: Pin<Box<dyn Future<Output = Result<u64, BoxError>> + Send>> =
            Box::pin(stack.clone().oneshot(n));
        calls.spawn(async move { (n, call.await) });
    }
    while let Some(joined) = calls.join_next().await {
        let (n, answer) = joined.unwrap();
        assert_eq!(answer.unwrap(), n * 2);
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 8);
    assert_eq!(upstream.max_in_flight.load(Ordering::SeqCst), 2);

    // Two hangs, cut by tower's timeout: the breaker counts them and opens.
    upstream.hang.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let error = stack.clone().oneshot(1).await.unwrap_err();
        assert!(error.is::<Elapsed>(), "{error}");
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.get_metrics().failures_by_type.timeout, 2);
    assert_eq!(upstream.in_flight.load(Ordering::SeqCst), 0);

    // Refused from `call`, one request at a time: the upstream is not
    // reached, and the buffer's worker lives on.
    upstream.hang.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let error = stack.clone().oneshot(1).await.unwrap_err();
        assert!(
            matches!(
                error.downcast_ref::<BreakerError>(),
                Some(BreakerError::Open { .. })
            ),
            "{error}"
        );
    }
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 10);
    assert_eq!(breaker.get_metrics().rejected_calls, 5);

    breaker.reset();
    assert_eq!(stack.clone().oneshot(21).await.unwrap(), 42);
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 11);
}

#[tokio::test]
async fn a_forced_open_breaker_refuses_and_a_reset_lets_calls_through() {
    let breaker = CircuitBreaker::new("tower-handles", CircuitBreakerConfig::default()).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let layer = CircuitBreakerLayer::new(breaker);
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(tower::service_fn(move |n: u64| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<u64, std::io::Error>(n) }
        }));

    // The layer's handle is the service's breaker.
    assert!(layer.breaker().ptr_eq(service.breaker()));
    layer.breaker().force_open();
    let refused = service.clone().oneshot(1).await.unwrap_err();
    assert!(refused.is_rejection());
    assert!(matches!(
        refused,
        ServiceError::Breaker(BreakerError::ForcedOpen { .. })
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    layer.breaker().reset();
    assert_eq!(service.oneshot(7).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn grpc_status_codes_count_through_the_layer() {
    use breaker_runtime::http::GrpcClassifier;

    let config = CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .build()
        .unwrap();
    let breaker = CircuitBreaker::builder("tower-grpc")
        .config(config)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    // A trailers-only gRPC answer: the status in the headers.
    let service = CircuitBreakerLayer::new(breaker.clone())
        .classify(GrpcClassifier::new())
        .layer(tower::service_fn(|code: &'static str| async move {
            let response = http::Response::builder()
                .header("grpc-status", code)
                .body(())
                .unwrap();
            Ok::<_, std::io::Error>(response)
        }));

    // Client-side codes: INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED.
    for code in ["3", "5", "16", "0"] {
        service.clone().oneshot(code).await.unwrap();
    }
    assert_eq!(breaker.get_metrics().ignored_calls, 3);
    assert_eq!(breaker.state(), CircuitState::Closed);
    // UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL: three failures open it.
    for code in ["14", "4", "13"] {
        service.clone().oneshot(code).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let failures = breaker.get_metrics().failures_by_type;
    assert_eq!((failures.error, failures.timeout), (2, 1));
    // RESOURCE_EXHAUSTED would open it for its Retry-After; it is open now:
    // the next call is refused.
    let refused = service.oneshot("0").await.unwrap_err();
    assert!(refused.is_rejection());
}

/// Finding 2 of the review of issue 13, beyond the review's own test: the
/// refusal `poll_ready` found is the one `call` gives, even once the
/// circuit has closed in between (the inner service was never driven
/// ready, so it must not be called); it is counted as a rejection and goes
/// through the layer's fallback; and `Buffer` above keeps working, its
/// callers refused at once while `ConcurrencyLimit` below is taken.
#[tokio::test]
async fn an_open_circuit_is_ready_at_once_and_call_keeps_its_refusal() {
    use std::task::{Context, Poll, Waker};
    use tower::Service;

    let breaker = CircuitBreaker::builder("tower-fail-fast")
        .config(CircuitBreakerConfig::default())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    let inner = tower::service_fn(move |hang: bool| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<u64, BoxError>(1)
        }
    });
    let limited = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(ConcurrencyLimitLayer::new(1))
        .service(inner);
    let mut first = limited.clone();
    first.ready().await.unwrap();
    let hung = tokio::spawn(first.call(true));
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }

    // Ready by the breaker's word; the circuit closes before the call.
    breaker.force_open();
    let mut second = limited.clone();
    let ready = second.poll_ready(&mut Context::from_waker(Waker::noop()));
    assert!(matches!(ready, Poll::Ready(Ok(()))), "{ready:?}");
    breaker.reset();
    let refused = second.call(false).await.unwrap_err();
    assert!(
        matches!(
            refused,
            ServiceError::Breaker(BreakerError::ForcedOpen { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the hung call ran");
    assert_eq!(breaker.get_metrics().rejected_calls, 1);
    // Closed again: poll_ready is the inner service's, taken by the hung call.
    let mut third = limited.clone();
    let waiting = third.poll_ready(&mut Context::from_waker(Waker::noop()));
    assert!(waiting.is_pending(), "{waiting:?}");
    // Its queued wait for the permit would take the permit once freed.
    drop(third);

    // The layer's fallback answers such a refusal too.
    breaker.force_open();
    let served = ServiceBuilder::new()
        .layer(
            CircuitBreakerLayer::new(breaker.clone())
                .fallback(|_: &breaker_runtime::FallbackReason| Some(Ok(7))),
        )
        .layer(ConcurrencyLimitLayer::new(1))
        .service(tower::service_fn(|_: bool| async {
            std::future::pending::<()>().await;
            Ok::<u64, BoxError>(0)
        }));
    assert_eq!(served.oneshot(false).await.unwrap(), 7);
    assert_eq!(breaker.get_metrics().fallback_calls, 1);

    // Under Buffer: refused at once while the limit is taken, and the
    // buffer lives on once the circuit closes and the limit frees.
    let buffered = ServiceBuilder::new()
        .layer(BufferLayer::new(4))
        .map_err(|error: ServiceError<BoxError>| error.into_box_error())
        .service(limited.clone());
    for _ in 0..3 {
        let refused =
            tokio::time::timeout(Duration::from_secs(10), buffered.clone().oneshot(false))
                .await
                .expect("an open circuit answers without waiting for the limit")
                .unwrap_err();
        assert!(
            refused.downcast_ref::<BreakerError>().is_some(),
            "{refused}"
        );
    }
    hung.abort();
    let _ = hung.await;
    breaker.reset();
    assert_eq!(buffered.oneshot(false).await.unwrap(), 1);
}
