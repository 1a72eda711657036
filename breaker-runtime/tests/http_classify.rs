//! The HTTP classification (feature `http`) driving a real breaker on a
//! manual clock: a 429's `Retry-After` opens the circuit for that long, and
//! the breaker's `max_retry_after` caps a header that asks for more.

mod common;

use std::time::{Duration, SystemTime};

use breaker_runtime::http::HttpClassifier;
use breaker_runtime::{CallOptions, CircuitBreakerConfig, CircuitState, FailureType, Outcome};
use common::manual_breaker;
use http::{Response, StatusCode, header::RETRY_AFTER};

fn response(status: u16, retry_after: Option<&str>) -> Result<Response<()>, ()> {
    let mut builder = Response::builder().status(status);
    if let Some(value) = retry_after {
        builder = builder.header(RETRY_AFTER, value);
    }
    Ok(builder.body(()).unwrap())
}

#[test]
fn a_429_opens_the_circuit_for_its_retry_after_capped_by_max_retry_after() {
    let cap = Duration::from_secs(90);
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(5)
        .max_retry_after(cap)
        .build()
        .unwrap();
    // Whole seconds, as HTTP dates have.
    let now = httpdate::parse_http_date(&httpdate::fmt_http_date(SystemTime::now())).unwrap();
    let in_a_minute = httpdate::fmt_http_date(now + Duration::from_secs(60));
    let classifier = HttpClassifier::new();
    let classify = |result: &Result<Response<()>, ()>| match result {
        Ok(response) => classifier.classify_at(response.status(), response.headers(), now),
        Err(()) => Outcome::Failure(FailureType::Error),
    };
    let options = CallOptions::new().classify(classify);

    // Seconds, a date, and a number past u64: each opens at once.
    for (value, open_for) in [
        ("30", Duration::from_secs(30)),
        (in_a_minute.as_str(), Duration::from_secs(60)),
        ("99999999999999999999", cap),
    ] {
        let (breaker, clock) = manual_breaker("http-429", config.clone());
        let answered = breaker.call_with(&options, || response(429, Some(value)));
        assert_eq!(
            answered.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the 429 itself reaches the caller"
        );
        assert_eq!(breaker.state(), CircuitState::Open, "{value}");
        assert_eq!(
            breaker.get_metrics().open_remaining,
            Some(open_for),
            "{value}"
        );
        assert_eq!(breaker.get_metrics().failures_by_type.rate_limit, 1);
        clock.advance(open_for - Duration::from_nanos(1));
        assert!(breaker.call_with(&options, || response(200, None)).is_err());
        clock.advance(Duration::from_nanos(1));
        assert!(breaker.call_with(&options, || response(200, None)).is_ok());
        assert_eq!(breaker.state(), CircuitState::HalfOpen, "{value}");
    }
}

#[test]
fn client_errors_do_not_count_and_server_errors_do() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .build()
        .unwrap();
    let (breaker, _clock) = manual_breaker("http-4xx-5xx", config);
    let classifier = HttpClassifier::new();
    let options = CallOptions::new().classify(|result: &Result<Response<()>, ()>| match result {
        Ok(response) => classifier.classify_response(response),
        Err(()) => Outcome::Failure(FailureType::Error),
    });
    for _ in 0..10 {
        let answered = breaker.call_with(&options, || response(404, None));
        assert_eq!(answered.unwrap().status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().ignored_calls, 10);
    for status in [500, 408, 504] {
        assert!(
            breaker
                .call_with(&options, || response(status, None))
                .is_ok()
        );
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let failures = breaker.get_metrics().failures_by_type;
    assert_eq!((failures.error, failures.timeout), (1, 2));
}
