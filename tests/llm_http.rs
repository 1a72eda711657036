//! The chat-completions client against a real local server, and the simulated
//! model's fault injection. Nothing here leaves 127.0.0.1.

use std::time::Duration;

use breaker_examples::fault_server::{FaultServer, Mode};
use breaker_examples::llm::{LlmClient, LlmConfig, LlmError, LlmErrorKind};
use breaker_examples::sim::{FaultBoard, LLM_SERVICE, QUALITY_SERVICE, SimulatedLlm};

/// A client for `base_url` that ignores any proxy settings of the machine, so
/// requests to 127.0.0.1 stay local.
fn client(base_url: &str) -> LlmClient {
    client_with(base_url, reqwest::Client::builder())
}

fn client_with(base_url: &str, http: reqwest::ClientBuilder) -> LlmClient {
    let config = LlmConfig::new("sk-test")
        .with_base_url(base_url)
        .with_model("test-model");
    let http = http.no_proxy().build().unwrap();
    LlmClient::with_http_client(config, http)
}

#[tokio::test]
async fn ok_response_yields_the_first_choice_text() {
    let server = FaultServer::start().await;
    server.set_mode(Mode::Ok("forty-two".to_owned()));

    let answer = client(&server.base_url()).complete("the question").await;

    assert_eq!(answer, Ok("forty-two".to_owned()));
    assert_eq!(server.request_count(), 1);
    let request = server.last_request().unwrap();
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(request.body["model"], "test-model");
    assert_eq!(request.body["messages"][0]["role"], "user");
    assert_eq!(request.body["messages"][0]["content"], "the question");
}

#[tokio::test]
async fn server_error_is_a_failure() {
    let server = FaultServer::start().await;
    server.set_mode(Mode::ServerError);

    let error = client(&server.base_url()).complete("q").await.unwrap_err();

    assert_eq!(error, LlmError::Server { status: 500 });
    assert_eq!(error.kind(), LlmErrorKind::Failure);
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = FaultServer::start().await;
    let client = client(&server.base_url());

    server.set_mode(Mode::RateLimited {
        retry_after_secs: Some(7),
    });
    let error = client.complete("q").await.unwrap_err();
    assert_eq!(
        error,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        error.kind(),
        LlmErrorKind::RateLimit(Some(Duration::from_secs(7)))
    );

    server.set_mode(Mode::RateLimited {
        retry_after_secs: None,
    });
    let error = client.complete("q").await.unwrap_err();
    assert_eq!(error, LlmError::RateLimited { retry_after: None });
}

#[tokio::test]
async fn unparseable_body_is_malformed() {
    let server = FaultServer::start().await;
    server.set_mode(Mode::Malformed);

    let error = client(&server.base_url()).complete("q").await.unwrap_err();

    assert!(matches!(error, LlmError::Malformed(_)), "{error:?}");
    assert_eq!(error.kind(), LlmErrorKind::Failure);
}

#[tokio::test]
async fn bad_request_is_not_held_against_the_service() {
    let server = FaultServer::start().await;
    server.set_mode(Mode::BadRequest);

    let error = client(&server.base_url()).complete("q").await.unwrap_err();

    let LlmError::BadRequest { status, body } = &error else {
        panic!("expected BadRequest, got {error:?}");
    };
    assert_eq!(*status, 400);
    assert!(body.contains("invalid_request_error"), "{body}");
    assert_eq!(error.kind(), LlmErrorKind::NotHeldAgainstService);
}

#[tokio::test]
async fn closed_port_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };

    let error = client(&format!("http://127.0.0.1:{port}/v1"))
        .complete("q")
        .await
        .unwrap_err();

    assert!(matches!(error, LlmError::Connect(_)), "{error:?}");
    assert_eq!(error.kind(), LlmErrorKind::Failure);
}

#[tokio::test]
async fn hanging_server_is_cut_off_by_the_caller_deadline() {
    let server = FaultServer::start().await;
    server.set_mode(Mode::Hang);

    let outcome = tokio::time::timeout(
        Duration::from_millis(200),
        client(&server.base_url()).complete("q"),
    )
    .await;

    assert!(outcome.is_err(), "a hanging server answered: {outcome:?}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn timeout_of_the_http_client_is_a_timeout() {
    let server = FaultServer::start().await;
    server.set_mode(Mode::Hang);
    let client = client_with(
        &server.base_url(),
        reqwest::Client::builder().timeout(Duration::from_millis(200)),
    );

    let error = client.complete("q").await.unwrap_err();

    assert_eq!(error, LlmError::Timeout);
    assert_eq!(error.kind(), LlmErrorKind::Timeout);
}

#[tokio::test]
async fn slow_recovery_fails_the_first_requests_then_succeeds() {
    let server = FaultServer::start().await;
    let client = client(&server.base_url());
    server.set_mode(Mode::SlowRecovery {
        failures: 2,
        content: "back".to_owned(),
    });

    assert_eq!(
        client.complete("q").await,
        Err(LlmError::Server { status: 500 })
    );
    assert_eq!(
        client.complete("q").await,
        Err(LlmError::Server { status: 500 })
    );
    assert_eq!(client.complete("q").await, Ok("back".to_owned()));
    assert_eq!(client.complete("q").await, Ok("back".to_owned()));
    assert_eq!(server.request_count(), 4);
}

#[tokio::test]
async fn simulated_llm_answers_deterministically() {
    let llm = SimulatedLlm::new();

    let first = llm.complete("What is a circuit breaker?").await.unwrap();
    let again = llm.complete("What is a circuit breaker?").await.unwrap();
    let generic = llm.complete("How tall is Mont Blanc?").await.unwrap();

    assert_eq!(first, again);
    assert!(first.contains("half-open"), "{first}");
    assert!(generic.contains("How tall is Mont Blanc?"), "{generic}");
}

#[tokio::test]
async fn simulated_llm_fails_at_full_failure_rate_until_healed() {
    let board = FaultBoard::new();
    let llm = SimulatedLlm::with_faults(board.faults(LLM_SERVICE));

    board.set_failure_rate(LLM_SERVICE, 1.0);
    for _ in 0..20 {
        let error = llm.complete("what is AI?").await.unwrap_err();
        assert_eq!(error.kind(), LlmErrorKind::Failure);
    }
    // Faults of one service leave the others alone.
    let quality = board.faults(QUALITY_SERVICE);
    assert!(quality.inject().await.is_ok());

    board.heal();
    for _ in 0..20 {
        assert!(llm.complete("what is AI?").await.is_ok());
    }
}

#[tokio::test]
async fn simulated_llm_failure_rate_hits_a_share_of_calls() {
    let llm = SimulatedLlm::new();
    llm.faults().set_failure_rate(0.5);

    let mut failures = 0;
    for _ in 0..200 {
        if llm.complete("q").await.is_err() {
            failures += 1;
        }
    }

    assert!((50..150).contains(&failures), "{failures} of 200 failed");
}

#[tokio::test]
async fn simulated_llm_rate_limit_and_low_quality() {
    let llm = SimulatedLlm::new();
    let faults = llm.faults();

    faults.rate_limit(Some(Duration::from_secs(3)));
    assert_eq!(
        llm.complete("q").await,
        Err(LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        })
    );

    faults.heal();
    faults.low_quality();
    let answer = llm.complete("Explain machine learning").await.unwrap();
    assert!(answer.len() < 20, "{answer}");

    faults.heal();
    let answer = llm.complete("Explain machine learning").await.unwrap();
    assert!(answer.starts_with("Machine learning"), "{answer}");
}

#[tokio::test]
async fn simulated_llm_latency_and_hang() {
    let llm = SimulatedLlm::new();

    llm.faults().set_latency(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    assert!(llm.complete("q").await.is_ok());
    assert!(started.elapsed() >= Duration::from_millis(50));

    llm.faults().heal();
    llm.faults().hang();
    let outcome = tokio::time::timeout(Duration::from_millis(100), llm.complete("q")).await;
    assert!(outcome.is_err(), "a hanging model answered: {outcome:?}");
}
