//! The tower layer (feature `tower`) on real axum servers on 127.0.0.1,
//! each test starting and stopping its own: server side, the breaker wraps
//! the router; client side, a keyed layer wraps a reqwest-backed service
//! and gives each upstream host its own breaker. State-machine time is a
//! `ManualClock`; only the hang test waits on a real (short) timeout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, StatusCode};
use axum::routing::get;
use breaker_runtime::http::HttpClassifier;
use breaker_runtime::tower::{CircuitBreakerLayer, ServiceError, authority};
use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, Family, ManualClock,
};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

/// What the fault server answers.
#[derive(Debug, Clone)]
enum Mode {
    Ok,
    Status(u16, Option<String>),
    Hang,
}

#[derive(Default)]
struct Faults {
    mode: Mutex<Option<Mode>>,
    hits: AtomicU64,
}

impl Faults {
    fn set(&self, mode: Mode) {
        *self.mode.lock() = Some(mode);
    }

    /// How many requests reached the handler.
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn handler(State(faults): State<Arc<Faults>>) -> Response<Body> {
    faults.hits.fetch_add(1, Ordering::SeqCst);
    let mode = faults.mode.lock().clone().unwrap_or(Mode::Ok);
    match mode {
        Mode::Ok => Response::new(Body::from("ok")),
        Mode::Status(status, retry_after) => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            if let Some(value) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_str(&value).unwrap());
            }
            response
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(Body::from("too late"))
        }
    }
}

/// A server on a free port of 127.0.0.1; stops when dropped.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A hung handler would hold graceful shutdown forever.
        self.task.abort();
    }
}

/// The fault server behind the breaker layer, answering rejections itself.
async fn guarded(breaker: &CircuitBreaker, classify: HttpClassifierOr) -> (Server, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let routes = Router::new()
        .route("/", get(handler))
        .with_state(Arc::clone(&faults));
    let app = match classify {
        HttpClassifierOr::Default => routes.layer(
            CircuitBreakerLayer::new(breaker.clone())
                .classify(HttpClassifier::new())
                .respond_to_rejections(),
        ),
        HttpClassifierOr::At(now) => {
            let classifier = HttpClassifier::new();
            routes.layer(
                CircuitBreakerLayer::new(breaker.clone())
                    .classify(move |result: &Result<Response<Body>, Infallible>| {
                        let response = result.as_ref().unwrap();
                        classifier.classify_at(response.status(), response.headers(), now)
                    })
                    .respond_to_rejections(),
            )
        }
    };
    (Server::start(app).await, faults)
}

/// The classifier a server uses: the default, or one that reads HTTP
/// dates against a fixed time.
enum HttpClassifierOr {
    Default,
    At(SystemTime),
}

fn manual(name: &str, config: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(name)
        .config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    (breaker, clock)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

async fn get_status(client: &reqwest::Client, url: &str) -> (u16, Option<String>) {
    let response = client.get(url).send().await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    (response.status().as_u16(), retry_after)
}

#[tokio::test]
async fn a_500_burst_opens_the_circuit_and_the_layer_answers_503_without_the_handler() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .recovery_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (breaker, _clock) = manual("axum-500-burst", config);
    let (server, faults) = guarded(&breaker, HttpClassifierOr::Default).await;
    let client = client();

    faults.set(Mode::Status(500, None));
    for _ in 0..3 {
        assert_eq!(get_status(&client, &server.url()).await, (500, None));
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(faults.hits(), 3);

    faults.set(Mode::Ok);
    for _ in 0..5 {
        assert_eq!(
            get_status(&client, &server.url()).await,
            (503, Some("10".to_owned()))
        );
    }
    assert_eq!(faults.hits(), 3, "no refused request reached the handler");
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.error, 3);
    assert_eq!(metrics.rejected_calls, 5);
}

#[tokio::test]
async fn a_429_opens_the_circuit_for_its_retry_after_in_seconds_or_as_a_date() {
    // Whole seconds, as HTTP dates have.
    let now = httpdate::parse_http_date(&httpdate::fmt_http_date(SystemTime::now())).unwrap();
    let in_45s = httpdate::fmt_http_date(now + Duration::from_secs(45));
    for (value, open_secs) in [("30", 30), (in_45s.as_str(), 45)] {
        let config = CircuitBreakerConfig::builder()
            .failure_threshold(5)
            .success_threshold(1)
            .build()
            .unwrap();
        let (breaker, clock) = manual("axum-429", config);
        let (server, faults) = guarded(&breaker, HttpClassifierOr::At(now)).await;
        let client = client();

        faults.set(Mode::Status(429, Some(value.to_owned())));
        let (status, _) = get_status(&client, &server.url()).await;
        assert_eq!(status, 429, "the 429 itself reaches the client");
        assert_eq!(breaker.state(), CircuitState::Open, "one 429 opens it");

        faults.set(Mode::Ok);
        let expect = Some(open_secs.to_string());
        assert_eq!(get_status(&client, &server.url()).await, (503, expect));
        clock.advance(Duration::from_secs(open_secs - 1));
        assert_eq!(
            get_status(&client, &server.url()).await,
            (503, Some("1".to_owned()))
        );
        assert_eq!(faults.hits(), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(get_status(&client, &server.url()).await, (200, None));
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(faults.hits(), 2);
    }
}

#[tokio::test]
async fn a_hang_is_cut_by_the_breakers_timeout_and_answered_504() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .timeout_duration(Duration::from_millis(200))
        .recovery_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let breaker = CircuitBreaker::new("axum-hang", config).unwrap();
    let (server, faults) = guarded(&breaker, HttpClassifierOr::Default).await;
    let client = client();

    faults.set(Mode::Hang);
    let started = Instant::now();
    assert_eq!(get_status(&client, &server.url()).await, (504, None));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the hour-long handler was cut"
    );
    assert_eq!(breaker.get_metrics().failures_by_type.timeout, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
    let (status, _) = get_status(&client, &server.url()).await;
    assert_eq!(status, 503);
    assert_eq!(faults.hits(), 1);
}

#[tokio::test]
async fn a_slow_recovery_goes_through_half_open_back_to_closed() {
    let recovery = Duration::from_secs(10);
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(2)
        .success_threshold(2)
        .half_open_max_calls(1)
        .recovery_timeout(recovery)
        .build()
        .unwrap();
    let (breaker, clock) = manual("axum-recovery", config);
    let (server, faults) = guarded(&breaker, HttpClassifierOr::Default).await;
    let client = client();

    faults.set(Mode::Status(503, None));
    for _ in 0..2 {
        assert_eq!(get_status(&client, &server.url()).await.0, 503);
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(faults.hits(), 2);

    // Still failing when the first probe goes: it reopens.
    clock.advance(recovery);
    assert_eq!(get_status(&client, &server.url()).await.0, 503);
    assert_eq!(faults.hits(), 3, "the probe reached the handler");
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(
        get_status(&client, &server.url()).await,
        (503, Some("10".to_owned()))
    );
    assert_eq!(faults.hits(), 3);

    // Recovered: two good probes close it.
    faults.set(Mode::Ok);
    clock.advance(recovery);
    assert_eq!(get_status(&client, &server.url()).await.0, 200);
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(get_status(&client, &server.url()).await.0, 200);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(faults.hits(), 5);
}

#[tokio::test]
async fn client_errors_pass_through_and_are_ignored() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .build()
        .unwrap();
    let (breaker, _clock) = manual("axum-404", config);
    let (server, faults) = guarded(&breaker, HttpClassifierOr::Default).await;
    let client = client();

    faults.set(Mode::Status(404, None));
    for _ in 0..20 {
        assert_eq!(get_status(&client, &server.url()).await, (404, None));
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().ignored_calls, 20);
    assert_eq!(faults.hits(), 20);
}

#[tokio::test]
async fn keyed_by_authority_only_the_failing_upstreams_breaker_opens() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let hosts = Family::builder("tower-upstreams")
        .config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (failing, failing_faults) = upstream().await;
    let (healthy, healthy_faults) = upstream().await;
    failing_faults.set(Mode::Status(502, None));

    // A tower client: sends an `http::Request<()>` with reqwest and gives
    // back the response's status and headers.
    let client = client();
    let send = tower::service_fn(move |request: http::Request<()>| {
        let client = client.clone();
        async move {
            let response = client.get(request.uri().to_string()).send().await?;
            let mut answer = http::Response::new(());
            *answer.status_mut() = response.status();
            *answer.headers_mut() = response.headers().clone();
            Ok::<_, reqwest::Error>(answer)
        }
    });
    let mut service = CircuitBreakerLayer::keyed(hosts.clone(), authority::<()>)
        .classify(HttpClassifier::new())
        .layer(send);
    let request = |server: &Server| http::Request::get(server.url()).body(()).unwrap();

    for _ in 0..6 {
        let answered = service.ready().await.unwrap().call(request(&failing)).await;
        match answered {
            Ok(response) => assert_eq!(response.status(), 502),
            Err(ServiceError::Breaker(BreakerError::Open { name, .. })) => {
                assert_eq!(name, format!("tower-upstreams[{}]", failing.addr));
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
        let healthy_answer = service.ready().await.unwrap().call(request(&healthy)).await;
        assert_eq!(healthy_answer.unwrap().status(), 200);
    }
    assert_eq!(failing_faults.hits(), 3, "refused once its breaker opened");
    assert_eq!(healthy_faults.hits(), 6);
    let failing_key = failing.addr.to_string();
    let healthy_key = healthy.addr.to_string();
    assert_eq!(hosts.get(&failing_key).unwrap().state(), CircuitState::Open);
    assert_eq!(
        hosts.get(&healthy_key).unwrap().state(),
        CircuitState::Closed
    );
    assert_eq!(hosts.keys(), {
        let mut keys = vec![failing_key, healthy_key];
        keys.sort();
        keys
    });
}

async fn upstream() -> (Server, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let app = Router::new()
        .route("/", get(handler))
        .with_state(Arc::clone(&faults));
    (Server::start(app).await, faults)
}

#[tokio::test]
async fn the_breakers_own_rate_limit_answers_429_with_retry_after() {
    let config = CircuitBreakerConfig::builder()
        .rate_limit_per_minute(1)
        .rate_limit_burst(2)
        .build()
        .unwrap();
    let (breaker, _clock) = manual("axum-rate-limit", config);
    let (server, faults) = guarded(&breaker, HttpClassifierOr::Default).await;
    let client = client();

    for _ in 0..2 {
        assert_eq!(get_status(&client, &server.url()).await, (200, None));
    }
    let (status, retry_after) = get_status(&client, &server.url()).await;
    assert_eq!(status, 429);
    let seconds: u64 = retry_after.expect("a Retry-After").parse().unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    assert_eq!(
        faults.hits(),
        2,
        "the refused request never reached the handler"
    );
    assert_eq!(
        breaker.state(),
        CircuitState::Closed,
        "a local refusal is no failure"
    );
}
