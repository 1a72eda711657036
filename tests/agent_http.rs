//! The agent's real HTTP model client, through its `#[circuit_breaker]`
//! methods, against the local `FaultServer` (127.0.0.1 only).
//!
//! The registry is process-global and each annotated method resolves its
//! breaker once, so the whole scenario is one test, in order. Before the
//! first call it puts the `"llm"` family (a breaker per model) on a
//! `ManualClock` (its members keep the attribute's configuration), and recovery is driven by advancing that
//! clock, never by sleeping. Only the deadline step uses real time, as the
//! deadline is enforced by tokio's timer.

use std::time::{Duration, Instant};

use breaker_examples::agent::{
    Agent, AgentError, AgentResponse, BREAKERS, Backend, LLM_BREAKER, llm_breaker_of,
};
use breaker_examples::fault_server::{FaultServer, Mode};
use breaker_examples::llm::{LlmClient, LlmConfig, LlmError};
use breaker_runtime::{CircuitState, FailureType, FallbackReason, ManualClock, registry};

const QUESTION: &str = "What is a circuit breaker?";
const ANSWER: &str = "A circuit breaker stops calling a failing dependency until it recovers.";

fn http_agent(server: &FaultServer) -> Agent {
    let config = LlmConfig::new("sk-test")
        .with_base_url(server.base_url())
        .with_model("test-model");
    // No proxy: requests to 127.0.0.1 must stay local.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    Agent::with_backend(Backend::Http(LlmClient::with_http_client(config, http)))
}

async fn ask(agent: &Agent, question: &str) -> AgentResponse {
    agent
        .query(question)
        .await
        .unwrap_or_else(|error| panic!("{question:?} got no answer: {error}"))
}

fn assert_live(response: &AgentResponse) {
    assert!(!response.used_fallback, "{response:#?}");
    assert_eq!(response.breaker, llm_breaker_of("test-model"));
    assert_eq!(response.fallback_reason, None);
}

fn assert_fallback(response: &AgentResponse, reason: impl Fn(&FallbackReason) -> bool) {
    assert!(response.used_fallback, "{response:#?}");
    assert_eq!(response.breaker, llm_breaker_of("test-model"));
    let got = response.fallback_reason.expect("a fallback has a reason");
    assert!(reason(&got), "unexpected reason {got:?}");
    assert!(
        response
            .degraded
            .iter()
            .any(|d| d.breaker == LLM_BREAKER && d.reason == got),
        "{response:#?}"
    );
}

fn is_failure(failure_type: FailureType) -> impl Fn(&FallbackReason) -> bool {
    move |reason| *reason == FallbackReason::Failure { failure_type }
}

fn is_open(reason: &FallbackReason) -> bool {
    matches!(reason, FallbackReason::Open { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_a_misbehaving_model_server() {
    let server = FaultServer::start().await;
    let clock = ManualClock::new();
    assert!(
        registry().use_clock(LLM_BREAKER, clock.clone()),
        "nothing registered `llm` before this test"
    );
    let agent = http_agent(&server);

    // Healthy: the server's answer, scored by the quality service.
    server.set_mode(Mode::Ok(ANSWER.to_owned()));
    let response = ask(&agent, QUESTION).await;
    // The first call registered the breaker: its effective configuration
    // (the attribute's) is what the rest of the scenario relies on.
    // The breaker of the model the agent asks.
    let llm = registry()
        .get(&llm_breaker_of("test-model"))
        .expect("registered by the call");
    let config = llm.config().clone();
    assert_live(&response);
    assert!(response.content.starts_with(ANSWER), "{}", response.content);
    assert!(response.quality.unwrap() >= config.quality_threshold);
    assert_eq!(response.circuit_state, CircuitState::Closed);
    assert_eq!(server.request_count(), 1);

    // 500s: the fallback answers (the last good answer to the same
    // question, else an apology), and the circuit opens at the threshold.
    server.set_mode(Mode::ServerError);
    let questions = [QUESTION, "What is AI?", "Explain rate limits"];
    assert_eq!(questions.len() as u32, config.failure_threshold);
    for (i, question) in questions.iter().enumerate() {
        let response = ask(&agent, question).await;
        assert_fallback(&response, is_failure(FailureType::Error));
        let expected = if i + 1 < questions.len() {
            CircuitState::Closed
        } else {
            CircuitState::Open
        };
        assert_eq!(response.circuit_state, expected, "after failure {}", i + 1);
    }
    assert!(
        ask(&agent, QUESTION).await.content.starts_with(ANSWER),
        "the cached answer is served"
    );
    assert_eq!(server.request_count(), 4);

    // Open: fallbacks are served at once and the server is not called.
    let started = Instant::now();
    let response = ask(&agent, "What is machine learning?").await;
    assert_fallback(&response, is_open);
    assert!(response.content.contains("can't reach my language model"));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.request_count(), 4);

    // A slow recovery: the first probe fails and reopens, the next ones
    // succeed, and the circuit closes through half-open.
    server.set_mode(Mode::SlowRecovery {
        failures: 1,
        content: ANSWER.to_owned(),
    });
    clock.advance(config.recovery_timeout);
    let response = ask(&agent, QUESTION).await;
    assert_fallback(&response, is_failure(FailureType::Error));
    assert_eq!(
        response.circuit_state,
        CircuitState::Open,
        "a failed probe reopens"
    );
    assert_fallback(&ask(&agent, QUESTION).await, is_open);
    clock.advance(config.recovery_timeout);
    let response = ask(&agent, QUESTION).await;
    assert_live(&response);
    assert_eq!(response.circuit_state, CircuitState::HalfOpen);
    let response = ask(&agent, QUESTION).await;
    assert_live(&response);
    assert_eq!(response.circuit_state, CircuitState::Closed);

    // Malformed JSON is a failure; a poor answer fails the quality check.
    server.set_mode(Mode::Malformed);
    assert_fallback(&ask(&agent, QUESTION).await, is_failure(FailureType::Error));
    server.set_mode(Mode::Ok("error".to_owned()));
    assert_fallback(&ask(&agent, QUESTION).await, |reason| {
        matches!(reason, FallbackReason::LowQuality { .. })
    });
    let metrics = llm.get_metrics();
    assert_eq!(metrics.failures_by_type.quality_threshold, 1);
    assert_eq!(metrics.consecutive_failures, 2);

    // Our own bad request (a 4xx other than 429) reaches the caller and is
    // not held against the service.
    server.set_mode(Mode::BadRequest);
    let error = agent.query(QUESTION).await.unwrap_err();
    assert!(
        matches!(
            error,
            AgentError::Llm(LlmError::BadRequest { status: 400, .. })
        ),
        "{error:?}"
    );
    let after = llm.get_metrics();
    assert_eq!(after.ignored_calls, metrics.ignored_calls + 1);
    assert_eq!(after.consecutive_failures, 2);
    assert_eq!(llm.state(), CircuitState::Closed);
    server.set_mode(Mode::Ok(ANSWER.to_owned()));
    assert_live(&ask(&agent, QUESTION).await);

    // 429 with Retry-After: 7 opens the circuit at once, for 7 s, longer
    // than the 2 s recovery timeout.
    server.set_mode(Mode::RateLimited {
        retry_after_secs: Some(7),
    });
    let response = ask(&agent, QUESTION).await;
    assert_fallback(&response, is_failure(FailureType::RateLimit));
    assert_eq!(response.circuit_state, CircuitState::Open);
    assert_eq!(
        llm.get_metrics().open_remaining,
        Some(Duration::from_secs(7))
    );
    server.set_mode(Mode::Ok(ANSWER.to_owned()));
    let requests = server.request_count();
    clock.advance(config.recovery_timeout);
    let response = ask(&agent, QUESTION).await;
    assert_fallback(&response, |reason| {
        *reason
            == FallbackReason::Open {
                retry_after: Duration::from_secs(5),
            }
    });
    assert_eq!(
        server.request_count(),
        requests,
        "still open past recovery_timeout"
    );
    clock.advance(Duration::from_secs(5));
    let response = ask(&agent, QUESTION).await;
    assert_live(&response);
    assert_eq!(response.circuit_state, CircuitState::HalfOpen);
    assert_live(&ask(&agent, QUESTION).await);
    assert_eq!(llm.state(), CircuitState::Closed);

    // A hang: the caller is released at the deadline, and the fallback
    // answers. The deadline is tokio's, in real time.
    server.set_mode(Mode::Hang);
    let started = Instant::now();
    let response = ask(&agent, "What is AI?").await;
    let elapsed = started.elapsed();
    assert_fallback(&response, |reason| {
        *reason
            == FallbackReason::Timeout {
                after: config.timeout_duration,
            }
    });
    assert!(elapsed >= config.timeout_duration, "{elapsed:?}");
    assert!(
        elapsed < config.timeout_duration + Duration::from_millis(500),
        "the caller was held {elapsed:?}"
    );
    assert_eq!(llm.get_metrics().failures_by_type.timeout, 1);

    // No call site asked for a different configuration.
    let status = registry().status();
    for name in BREAKERS {
        let breaker = status
            .breakers
            .iter()
            .find(|b| *b.name == *name || b.family.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("`{name}` is registered"));
        assert!(breaker.config_conflicts.is_empty(), "{name}: {breaker:#?}");
        assert!(breaker.metrics.total_calls > 0, "{name} was called");
    }
}
