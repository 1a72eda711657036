//! The reqwest middleware against real servers on 127.0.0.1: each test
//! starts its own upstream on a free port, scripts its faults, and counts
//! exactly the requests that reached it. Breakers run on a `ManualClock`
//! wherever their clock decides (open periods, `Retry-After`); the
//! timeouts are real, short, and bounded generously.

use std::net::TcpListener as StdListener;
use std::time::{Duration, SystemTime};

use breaker_runtime::reqwest::{BreakerMiddleware, breaker_error};
use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, FallbackReason, Family,
    ManualClock, Registry,
};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

#[path = "common/upstream.rs"]
mod upstream;
use upstream::{Reply, Upstream};

/// A family on `clock` with `config`, and a client that goes through it.
fn client_for(
    name: &str,
    config: CircuitBreakerConfig,
    clock: &ManualClock,
) -> (ClientWithMiddleware, Family) {
    let family = Family::builder(name)
        .config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::per_host(family.clone()))
        .build();
    (client, family)
}

fn config() -> breaker_runtime::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .success_threshold(1)
        .half_open_max_calls(1)
        .recovery_timeout(RECOVERY)
}

const RECOVERY: Duration = Duration::from_secs(30);

/// Sends a GET to `url` and returns the breaker's error for it, failing
/// the test if the request got anything else.
async fn refused(client: &ClientWithMiddleware, url: &str) -> BreakerError {
    let error = client.get(url).send().await.unwrap_err();
    breaker_error(&error)
        .unwrap_or_else(|| panic!("not the breaker's error: {error:?}"))
        .clone()
}

async fn status(client: &ClientWithMiddleware, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_500_burst_opens_the_hosts_circuit_and_later_requests_fail_fast() {
    let upstream = Upstream::start(Reply::Status(500)).await;
    let clock = ManualClock::new();
    let (client, hosts) = client_for("burst", config().build().unwrap(), &clock);

    for _ in 0..3 {
        assert_eq!(
            status(&client, &upstream.url()).await,
            500,
            "the 500 reaches the caller"
        );
    }
    let member = hosts.get(&upstream.key()).expect("keyed by host:port");
    assert_eq!(member.name(), format!("burst[{}]", upstream.key()));
    assert_eq!(member.state(), CircuitState::Open);
    assert_eq!(member.get_metrics().failures_by_type.error, 3);

    upstream.answer(Reply::Status(200));
    for _ in 0..5 {
        let open = refused(&client, &upstream.url()).await;
        assert!(matches!(open, BreakerError::Open { .. }), "{open:?}");
        assert_eq!(
            open.retry_after(),
            Some(RECOVERY),
            "the manual clock stood still"
        );
    }
    assert_eq!(upstream.hits(), 3, "no refused request reached the server");
    assert_eq!(member.get_metrics().rejected_calls, 5);
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_opens_for_that_long() {
    let upstream = Upstream::start(Reply::RateLimited("120".into())).await;
    // Opened by the client's registry, on a manual clock set before the
    // family's first use, as the attribute's families are.
    let registry = Registry::new();
    let clock = ManualClock::new();
    assert!(registry.use_clock("rate-limited", clock.clone()));
    let hosts = registry
        .family("rate-limited", config().build().unwrap())
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::per_host(hosts.clone()))
        .build();

    assert_eq!(status(&client, &upstream.url()).await, 429);
    let member = hosts.get(&upstream.key()).unwrap();
    assert_eq!(
        member.state(),
        CircuitState::Open,
        "one 429 opens, threshold or not"
    );
    assert_eq!(member.get_metrics().failures_by_type.rate_limit, 1);
    let open = refused(&client, &upstream.url()).await;
    assert_eq!(open.retry_after(), Some(Duration::from_secs(120)));

    upstream.answer(Reply::Status(200));
    clock.advance(Duration::from_secs(119));
    let open = refused(&client, &upstream.url()).await;
    assert_eq!(open.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(upstream.hits(), 1);

    clock.advance(Duration::from_secs(1));
    assert_eq!(
        status(&client, &upstream.url()).await,
        200,
        "the probe goes through"
    );
    assert_eq!(member.state(), CircuitState::Closed);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn a_429_with_an_http_date_opens_until_that_date() {
    // HTTP-dates have whole seconds: the wait is 119 to 120 s from now.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    let upstream = Upstream::start(Reply::RateLimited(date)).await;
    let clock = ManualClock::new();
    let (client, hosts) = client_for("rate-limited-date", config().build().unwrap(), &clock);

    assert_eq!(status(&client, &upstream.url()).await, 429);
    let open = refused(&client, &upstream.url()).await;
    let wait = open.retry_after().unwrap();
    assert!(
        (Duration::from_secs(117)..=Duration::from_secs(120)).contains(&wait),
        "{wait:?}"
    );

    upstream.answer(Reply::Status(200));
    clock.advance(Duration::from_secs(116));
    refused(&client, &upstream.url()).await;
    assert_eq!(upstream.hits(), 1);
    clock.advance(Duration::from_secs(5));
    assert_eq!(status(&client, &upstream.url()).await, 200);
    assert_eq!(
        hosts.get(&upstream.key()).unwrap().state(),
        CircuitState::Closed
    );
    assert_eq!(upstream.hits(), 2);
}

/// Generous: a test that fails should fail, not hang.
const BOUND: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_hang_cut_by_the_clients_timeout_counts_as_a_timeout() {
    let upstream = Upstream::start(Reply::Hang).await;
    let family = Family::new(
        "client-timeout",
        config().failure_threshold(1).build().unwrap(),
    )
    .unwrap();
    let reqwest = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest)
        .with(BreakerMiddleware::per_host(family.clone()))
        .build();

    let error = tokio::time::timeout(BOUND, client.get(upstream.url()).send())
        .await
        .expect("the client's timeout cuts it")
        .unwrap_err();
    assert!(
        error.is_timeout(),
        "reqwest's own error, as it came: {error:?}"
    );
    let member = family.get(&upstream.key()).unwrap();
    assert_eq!(member.get_metrics().failures_by_type.timeout, 1);
    assert_eq!(member.state(), CircuitState::Open);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_hang_cut_by_the_breakers_timeout_counts_as_a_timeout() {
    let upstream = Upstream::start(Reply::Hang).await;
    let config = config()
        .failure_threshold(1)
        .timeout_duration(Duration::from_millis(200))
        .build()
        .unwrap();
    let family = Family::new("breaker-timeout", config).unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::per_host(family.clone()))
        .build();

    let error = tokio::time::timeout(BOUND, client.get(upstream.url()).send())
        .await
        .expect("the breaker's timeout cuts it")
        .unwrap_err();
    let timeout = breaker_error(&error).expect("the breaker's error");
    assert!(
        matches!(timeout, BreakerError::Timeout { after, .. } if *after == Duration::from_millis(200)),
        "{timeout:?}"
    );
    let member = family.get(&upstream.key()).unwrap();
    assert_eq!(member.get_metrics().failures_by_type.timeout, 1);
    assert_eq!(member.state(), CircuitState::Open);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_an_error_failure() {
    // Bound then let go: nobody listens there.
    let closed = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let clock = ManualClock::new();
    let (client, hosts) = client_for("refused", config().build().unwrap(), &clock);
    let url = format!("http://{closed}/");

    for _ in 0..3 {
        let error = client.get(&url).send().await.unwrap_err();
        assert!(
            error.is_connect(),
            "reqwest's own error, as it came: {error:?}"
        );
    }
    let member = hosts.get(&closed).unwrap();
    assert_eq!(member.get_metrics().failures_by_type.error, 3);
    assert_eq!(member.state(), CircuitState::Open);
    assert!(matches!(
        refused(&client, &url).await,
        BreakerError::Open { .. }
    ));
}

#[tokio::test]
async fn a_slow_recovery_goes_through_half_open_back_to_closed() {
    let upstream = Upstream::start(Reply::Status(503)).await;
    let clock = ManualClock::new();
    let config = config().success_threshold(2).build().unwrap();
    let (client, hosts) = client_for("slow-recovery", config, &clock);

    for _ in 0..3 {
        assert_eq!(status(&client, &upstream.url()).await, 503);
    }
    let member = hosts.get(&upstream.key()).unwrap();
    assert_eq!(member.state(), CircuitState::Open);

    // Still down at the first probe: open again, for another period.
    clock.advance(RECOVERY);
    assert_eq!(status(&client, &upstream.url()).await, 503);
    assert_eq!(member.state(), CircuitState::Open);
    refused(&client, &upstream.url()).await;
    assert_eq!(upstream.hits(), 4);

    // Back: two good probes close it.
    upstream.answer(Reply::Status(200));
    clock.advance(RECOVERY);
    assert_eq!(status(&client, &upstream.url()).await, 200);
    assert_eq!(member.state(), CircuitState::HalfOpen);
    assert_eq!(status(&client, &upstream.url()).await, 200);
    assert_eq!(member.state(), CircuitState::Closed);
    assert_eq!(upstream.hits(), 6);
}

#[tokio::test]
async fn a_failing_host_leaves_another_hosts_circuit_closed() {
    let failing = Upstream::start(Reply::Status(500)).await;
    let healthy = Upstream::start(Reply::Status(200)).await;
    let clock = ManualClock::new();
    let (client, hosts) = client_for("two-hosts", config().build().unwrap(), &clock);

    for _ in 0..3 {
        assert_eq!(status(&client, &failing.url()).await, 500);
        assert_eq!(status(&client, &healthy.url()).await, 200);
    }
    refused(&client, &failing.url()).await;
    for _ in 0..3 {
        assert_eq!(status(&client, &healthy.url()).await, 200);
    }
    assert_eq!(
        hosts.get(&failing.key()).unwrap().state(),
        CircuitState::Open
    );
    assert_eq!(
        hosts.get(&healthy.key()).unwrap().state(),
        CircuitState::Closed
    );
    assert_eq!((failing.hits(), healthy.hits()), (3, 6));
}

#[tokio::test]
async fn other_4xx_answers_are_ignored() {
    let upstream = Upstream::start(Reply::Status(404)).await;
    let clock = ManualClock::new();
    let (client, hosts) = client_for("not-found", config().build().unwrap(), &clock);

    for _ in 0..5 {
        assert_eq!(status(&client, &upstream.url()).await, 404);
    }
    let metrics = hosts.get(&upstream.key()).unwrap().get_metrics();
    assert_eq!((metrics.ignored_calls, metrics.failed_calls), (5, 0));
    assert_eq!(upstream.hits(), 5);
}

#[tokio::test]
async fn a_retry_after_past_the_cap_opens_for_max_retry_after() {
    let upstream = Upstream::start(Reply::RateLimited("86400".into())).await;
    let clock = ManualClock::new();
    let config = config()
        .max_retry_after(Duration::from_secs(600))
        .build()
        .unwrap();
    let (client, _) = client_for("capped", config, &clock);

    assert_eq!(status(&client, &upstream.url()).await, 429);
    let open = refused(&client, &upstream.url()).await;
    assert_eq!(
        open.retry_after(),
        Some(Duration::from_secs(600)),
        "a day, capped"
    );
    upstream.answer(Reply::Status(200));
    clock.advance(Duration::from_secs(600));
    assert_eq!(status(&client, &upstream.url()).await, 200);
    assert_eq!(upstream.hits(), 2);
}

#[tokio::test]
async fn the_breakers_rate_limit_refuses_without_reaching_the_host() {
    let upstream = Upstream::start(Reply::Status(200)).await;
    let clock = ManualClock::new();
    let config = config()
        .rate_limit_per_minute(2)
        .rate_limit_burst(2)
        .build()
        .unwrap();
    let (client, hosts) = client_for("paced", config, &clock);

    assert_eq!(status(&client, &upstream.url()).await, 200);
    assert_eq!(status(&client, &upstream.url()).await, 200);
    let paced = refused(&client, &upstream.url()).await;
    assert!(
        matches!(paced, BreakerError::LocalRateLimit { .. }),
        "{paced:?}"
    );
    assert_eq!(paced.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(upstream.hits(), 2);

    clock.advance(Duration::from_secs(30));
    assert_eq!(status(&client, &upstream.url()).await, 200);
    let member = hosts.get(&upstream.key()).unwrap();
    assert_eq!(member.state(), CircuitState::Closed, "pacing is no failure");
    assert_eq!(member.get_metrics().local_rate_limited_calls, 1);
    assert_eq!(upstream.hits(), 3);
}

#[tokio::test]
async fn a_low_quality_response_is_a_failure() {
    let upstream = Upstream::start(Reply::Stale).await;
    let clock = ManualClock::new();
    let family = Family::builder("stale")
        .config(config().build().unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let middleware = BreakerMiddleware::per_host(family.clone()).quality(|response| {
        if response.headers().contains_key("x-stale") {
            0.2
        } else {
            1.0
        }
    });
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();

    for _ in 0..3 {
        let low = refused(&client, &upstream.url()).await;
        assert!(
            matches!(low, BreakerError::LowQuality { score, .. } if score == 0.2),
            "{low:?}"
        );
    }
    let member = family.get(&upstream.key()).unwrap();
    assert_eq!(member.get_metrics().failures_by_type.quality_threshold, 3);
    assert_eq!(member.state(), CircuitState::Open);
    upstream.answer(Reply::Status(200));
    clock.advance(RECOVERY);
    assert_eq!(
        status(&client, &upstream.url()).await,
        200,
        "a fresh answer scores 1"
    );
    assert_eq!(member.state(), CircuitState::Closed);
}

#[tokio::test]
async fn one_named_breaker_guards_every_host() {
    let first = Upstream::start(Reply::Status(500)).await;
    let second = Upstream::start(Reply::Status(200)).await;
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("one-for-all")
        .config(config().build().unwrap())
        .clock(clock)
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::single(breaker.clone()))
        .build();

    for _ in 0..3 {
        assert_eq!(status(&client, &first.url()).await, 500);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let open = refused(&client, &second.url()).await;
    assert_eq!(open.breaker_name(), "one-for-all");
    assert_eq!((first.hits(), second.hits()), (3, 0));
}

#[tokio::test]
async fn a_full_family_refuses_a_new_host_without_calling_it() {
    let first = Upstream::start(Reply::Status(500)).await;
    let second = Upstream::start(Reply::Status(200)).await;
    let family = Family::builder("full")
        .config(config().build().unwrap())
        .max_keys(1)
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::per_host(family.clone()))
        .build();

    // The only member is failing, so it cannot make room.
    assert_eq!(status(&client, &first.url()).await, 500);
    let full = refused(&client, &second.url()).await;
    assert!(
        matches!(full, BreakerError::FamilyFull { limit: 1, .. }),
        "{full:?}"
    );
    assert_eq!(second.hits(), 0);
    assert_eq!(family.keys(), [first.key()]);
}

#[tokio::test]
async fn a_request_reqwest_cannot_send_is_ignored() {
    let family = Family::new("unsendable", config().failure_threshold(1).build().unwrap()).unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::per_host(family.clone()))
        .build();

    // reqwest refuses the scheme before any connection: the caller's mistake.
    let error = client.get("ftp://127.0.0.1/file").send().await.unwrap_err();
    assert!(
        error.is_builder(),
        "reqwest's own error, as it came: {error:?}"
    );
    let member = family
        .get("127.0.0.1")
        .expect("keyed by host alone: ftp has no default port in http::host_key");
    let metrics = member.get_metrics();
    assert_eq!((metrics.ignored_calls, metrics.failed_calls), (1, 0));
    assert_eq!(member.state(), CircuitState::Closed);
}

#[tokio::test]
async fn a_request_its_caller_drops_is_cancelled_and_frees_its_probe_slot() {
    let upstream = Upstream::start(Reply::Status(500)).await;
    let clock = ManualClock::new();
    let (client, hosts) = client_for("dropped", config().build().unwrap(), &clock);
    for _ in 0..3 {
        assert_eq!(status(&client, &upstream.url()).await, 500);
    }
    let member = hosts.get(&upstream.key()).unwrap();
    clock.advance(RECOVERY);

    // The one probe slot goes to a request that hangs, and its caller gives up.
    upstream.answer(Reply::Hang);
    {
        let mut probe = std::pin::pin!(client.get(upstream.url()).send());
        let reached = async {
            while upstream.hits() < 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            answered = &mut probe => panic!("the hang answered: {answered:?}"),
            waited = tokio::time::timeout(BOUND, reached) => waited.expect("the probe reached the server"),
        }
    } // dropped here, hanging
    let metrics = member.get_metrics();
    assert_eq!((metrics.cancelled_calls, metrics.failed_calls), (1, 3));
    assert_eq!(member.state(), CircuitState::HalfOpen);

    // The slot is free again: the next probe goes through and closes it.
    upstream.answer(Reply::Status(200));
    assert_eq!(status(&client, &upstream.url()).await, 200);
    assert_eq!(member.state(), CircuitState::Closed);
    assert_eq!(upstream.hits(), 5);
}

#[tokio::test]
async fn a_fallback_answers_failures_and_refusals_in_the_hosts_place() {
    let upstream = Upstream::start(Reply::Status(500)).await;
    let clock = ManualClock::new();
    let family = Family::builder("served")
        .config(config().build().unwrap())
        .clock(clock)
        .build()
        .unwrap();
    let middleware =
        BreakerMiddleware::per_host(family.clone()).fallback(|reason: &FallbackReason| {
            let why = if reason.is_rejection() {
                "refused"
            } else {
                "failed"
            };
            let served = axum::http::Response::builder()
                .header("x-fallback", why)
                .body("cached")
                .ok()?;
            Some(reqwest::Response::from(served))
        });
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();

    let mut answers = Vec::new();
    for _ in 0..5 {
        let response = client.get(upstream.url()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        answers.push(
            response.headers()["x-fallback"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        assert_eq!(response.text().await.unwrap(), "cached");
    }
    assert_eq!(
        answers,
        ["failed", "failed", "failed", "refused", "refused"]
    );
    assert_eq!(
        upstream.hits(),
        3,
        "the refused ones never reached the server"
    );
    let metrics = family.get(&upstream.key()).unwrap().get_metrics();
    assert_eq!((metrics.fallback_calls, metrics.failed_calls), (5, 3));
}

// ---------------------------------------------------------------------------
// The breaker's errors among other middlewares' (reqwest-retry's).

/// The breaker's refusal reads as its `BreakerError` and downcasts to it by
/// hand, as the README says, and its source says who answered.
#[tokio::test]
async fn the_breakers_error_downcasts_by_hand_and_says_who_answered() {
    let upstream = Upstream::start(Reply::Status(500)).await;
    let clock = ManualClock::new();
    let (client, _) = client_for(
        "by-hand",
        config().failure_threshold(1).build().unwrap(),
        &clock,
    );
    assert_eq!(status(&client, &upstream.url()).await, 500);

    let error = client.get(upstream.url()).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(anyhow_error) = &error else {
        panic!("a middleware's error: {error:?}");
    };
    let by_hand = anyhow_error
        .downcast_ref::<BreakerError>()
        .expect("downcasts to the breaker's error");
    assert!(matches!(by_hand, BreakerError::Open { .. }));
    assert_eq!(error.to_string(), by_hand.to_string());
    assert_eq!(
        format!("{anyhow_error:#}"),
        format!(
            "{by_hand}: returned by the circuit breaker middleware in place of the host's answer"
        )
    );
    assert_eq!(breaker_error(&error), Some(by_hand));
}

/// A middleware below the breaker that fails every request with an
/// `io::Error` of `kind` behind a wrapper of its own, as a layer that
/// wraps transport errors would. The request never leaves.
struct FailsWith(std::io::ErrorKind);

#[derive(Debug, thiserror::Error)]
#[error("the transport gave up")]
struct Wrapped(#[source] std::io::Error);

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for FailsWith {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut axum::http::Extensions,
        _: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let cause = std::io::Error::new(self.0, "from below");
        Err(reqwest_middleware::Error::middleware(Wrapped(cause)))
    }
}

/// Below the breaker, another middleware's error that holds a timed-out
/// `io::Error` down its chain is a `Timeout`, one that holds a refused
/// connection is `TransportFailure::Connect` (ignored by this classifier,
/// to tell it from `Other`), and one that holds neither is `Other`.
#[tokio::test]
async fn an_io_error_down_another_middlewares_chain_keeps_its_kind() {
    use breaker_runtime::http::{HttpClassifier, TransportFailure, Verdict};
    use std::io::ErrorKind;

    let classifier = HttpClassifier::builder()
        .transport(TransportFailure::Connect, Verdict::Ignored)
        .build()
        .unwrap();
    let family = Family::new("io-below", config().failure_threshold(10).build().unwrap()).unwrap();
    let through = |kind| {
        ClientBuilder::new(reqwest::Client::new())
            .with(BreakerMiddleware::per_host(family.clone()).classifier(classifier.clone()))
            .with(FailsWith(kind))
            .build()
    };
    // Never contacted: the middleware below answers first.
    let url = "http://127.0.0.1:9/";
    for kind in [
        ErrorKind::TimedOut,
        ErrorKind::ConnectionRefused,
        ErrorKind::PermissionDenied,
    ] {
        let error = through(kind).get(url).send().await.unwrap_err();
        assert_eq!(breaker_error(&error), None, "{error:?}");
    }
    let metrics = family.get("127.0.0.1:9").unwrap().get_metrics();
    assert_eq!(
        (
            metrics.failures_by_type.timeout,
            metrics.ignored_calls,
            metrics.failures_by_type.error
        ),
        (1, 1, 1)
    );
}

fn quick_retries<S>(
    strategy: S,
    max_retries: u32,
) -> reqwest_retry::RetryTransientMiddleware<reqwest_retry::policies::ExponentialBackoff, S>
where
    S: reqwest_retry::RetryableStrategy + Send + Sync + 'static,
{
    let policy = reqwest_retry::policies::ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(2))
        .build_with_max_retries(max_retries);
    reqwest_retry::RetryTransientMiddleware::new_with_policy_and_strategy(policy, strategy)
}

/// reqwest-retry's default strategy, except that the breaker's own timeout
/// is retried: the README's strategy for retries above the breaker.
struct RetryBreakerTimeouts;

impl reqwest_retry::RetryableStrategy for RetryBreakerTimeouts {
    fn handle(
        &self,
        result: &reqwest_middleware::Result<reqwest::Response>,
    ) -> Option<reqwest_retry::Retryable> {
        match result {
            Err(error) if matches!(breaker_error(error), Some(BreakerError::Timeout { .. })) => {
                Some(reqwest_retry::Retryable::Transient)
            }
            Ok(response) => reqwest_retry::default_on_request_success(response),
            Err(error) => reqwest_retry::default_on_request_failure(error),
        }
    }
}

/// Retries above the breaker: each attempt is one call through it. The
/// breaker's timeout reaches reqwest-retry as a middleware error, which its
/// default strategy treats as fatal (one attempt); a strategy that asks
/// `breaker_error` retries it, each attempt a `Timeout` failure.
#[tokio::test]
async fn reqwest_retry_above_the_breaker_retries_its_timeout_only_when_told() {
    let upstream = Upstream::start(Reply::Hang).await;
    let config = config()
        .failure_threshold(10)
        .timeout_duration(Duration::from_millis(50))
        .build()
        .unwrap();
    let family = Family::new("retry-above-timeout", config).unwrap();
    let with = |retries: Box<dyn reqwest_middleware::Middleware>| {
        ClientBuilder::new(reqwest::Client::new())
            .with_arc(retries.into())
            .with(BreakerMiddleware::per_host(family.clone()))
            .build()
    };

    let by_default = with(Box::new(quick_retries(
        reqwest_retry::DefaultRetryableStrategy,
        3,
    )));
    let error = tokio::time::timeout(BOUND, by_default.get(upstream.url()).send())
        .await
        .expect("the breaker's timeout cuts it")
        .unwrap_err();
    assert!(
        matches!(breaker_error(&error), Some(BreakerError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(
        upstream.hits(),
        1,
        "fatal to the default strategy: no retry"
    );

    let told = with(Box::new(quick_retries(RetryBreakerTimeouts, 3)));
    let error = tokio::time::timeout(BOUND, told.get(upstream.url()).send())
        .await
        .expect("the breaker's timeout cuts each attempt")
        .unwrap_err();
    assert!(
        matches!(breaker_error(&error), Some(BreakerError::Timeout { .. })),
        "{error:?}"
    );
    assert_eq!(
        upstream.hits(),
        1 + 4,
        "the first attempt and three retries"
    );
    let member = family.get(&upstream.key()).unwrap();
    assert_eq!(member.get_metrics().failures_by_type.timeout, 5);
}

/// Retries below the breaker: one call through it spans every attempt,
/// so three 500s in a row are one `Error` failure, and the breaker's
/// timeout cuts the whole sequence, backoff included.
#[tokio::test]
async fn reqwest_retry_below_the_breaker_counts_once_per_request() {
    let upstream = Upstream::start(Reply::Status(500)).await;
    let clock = ManualClock::new();
    let family = Family::builder("retry-below")
        .config(config().build().unwrap())
        .clock(clock)
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BreakerMiddleware::per_host(family.clone()))
        .with(quick_retries(reqwest_retry::DefaultRetryableStrategy, 2))
        .build();

    assert_eq!(status(&client, &upstream.url()).await, 500);
    assert_eq!(upstream.hits(), 3, "the request and two retries");
    let metrics = family.get(&upstream.key()).unwrap().get_metrics();
    assert_eq!(
        metrics.failures_by_type.error, 1,
        "one failure for three 500s"
    );
}

/// `per_host` names a host as `http::uri_host_key` does for the same URL
/// (the tower layer's key), so one upstream spelled several ways is one
/// breaker: two 502s, each spelled differently, open its circuit.
#[tokio::test]
async fn one_host_spelled_several_ways_is_one_breaker_named_as_the_tower_layer_names_it() {
    let upstream = Upstream::start(Reply::Status(502)).await;
    let port = upstream.address.port();
    let hosts = Family::builder("spellings")
        .config(config().failure_threshold(2).build().unwrap())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    // Both names reach the upstream, with no DNS.
    let reqwest = reqwest::Client::builder()
        .resolve("up.example", upstream.address)
        .resolve("up.example.", upstream.address)
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest)
        .with(BreakerMiddleware::per_host(hosts.clone()))
        .build();
    let spellings = [
        format!("http://UP.example:{port}/a"),
        format!("http://up.example.:{port}/b"),
        format!("http://up.example:{port}/c"),
    ];
    for url in &spellings[..2] {
        assert_eq!(status(&client, url).await, 502);
    }
    assert!(matches!(
        refused(&client, &spellings[2]).await,
        BreakerError::Open { .. }
    ));
    assert_eq!(upstream.hits(), 2);

    let uri: axum::http::Uri = spellings[1].parse().unwrap();
    let tower_key = breaker_runtime::http::uri_host_key(&uri).unwrap();
    assert_eq!(tower_key.as_str(), format!("up.example:{port}"));
    assert_eq!(hosts.keys(), [tower_key.as_str()]);
}
