//! A local HTTP server that speaks the OpenAI chat-completions protocol and
//! misbehaves on command.
//!
//! Tests and demos point a real [`LlmClient`](crate::llm::LlmClient) at
//! [`FaultServer::base_url`] and switch the server's [`Mode`] while it runs, so
//! every failure the client classifies travels over a real socket. The server
//! only listens on `127.0.0.1`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sim::HANG_DURATION;

/// What the server answers to `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 with a completion whose text is the given string.
    Ok(String),
    /// 500 with an OpenAI-style error body.
    ServerError,
    /// 429, with `Retry-After: <secs>` when `retry_after_secs` is set.
    RateLimited {
        /// The `Retry-After` header in whole seconds; `None` omits it.
        retry_after_secs: Option<u64>,
    },
    /// Holds the request for [`HANG_DURATION`], or until the server is
    /// dropped, then answers 503.
    Hang,
    /// 200 with a truncated JSON body.
    Malformed,
    /// 400 with an OpenAI-style error body.
    BadRequest,
    /// 500 for the first `failures` requests after this mode is set, then
    /// [`Mode::Ok`] with `content`: a service that comes back after a while.
    SlowRecovery {
        /// How many requests fail before the service recovers.
        failures: u64,
        /// The completion text once recovered.
        content: String,
    },
}

/// What the server last received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The `Authorization` header, if there was one.
    pub authorization: Option<String>,
    /// The JSON body, or [`Value::Null`] if it was not JSON.
    pub body: Value,
}

/// A running fault server. Dropping it stops the server and releases hanging
/// requests.
#[derive(Debug)]
pub struct FaultServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    // Never sent on: dropping it is the stop signal.
    _stop: watch::Sender<()>,
}

#[derive(Debug)]
struct Shared {
    script: Mutex<Script>,
    requests: AtomicU64,
    last_request: Mutex<Option<RecordedRequest>>,
    stopped: watch::Receiver<()>,
}

#[derive(Debug)]
struct Script {
    mode: Mode,
    /// Requests answered since `mode` was set.
    answered: u64,
}

impl FaultServer {
    /// Starts a server on a free port of `127.0.0.1`, in [`Mode::Ok`] with the
    /// text "Hello from the fault server."
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or if no local port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("a free port on 127.0.0.1 can be bound");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = watch::channel(());
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                mode: Mode::Ok("Hello from the fault server.".to_owned()),
                answered: 0,
            }),
            requests: AtomicU64::new(0),
            last_request: Mutex::new(None),
            stopped: stopped.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let mut stopped = stopped;
            // The server can only end through the stop signal, and then there
            // is no one left to report an error to.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Errs once the sender is dropped, which is the signal.
                    let _ = stopped.changed().await;
                })
                .await;
        });
        Self {
            address,
            shared,
            _stop: stop,
        }
    }

    /// The API root to configure a client with: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Changes how the following requests are answered; requests already
    /// being answered are not affected.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.script.lock() = Script { mode, answered: 0 };
    }

    /// How many chat-completion requests have arrived, including ones still
    /// hanging.
    pub fn request_count(&self) -> u64 {
        // Relaxed: a plain counter, read by tests after the requests returned.
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The most recent chat-completion request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.last_request.lock().clone()
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Relaxed: see `request_count`.
    shared.requests.fetch_add(1, Ordering::Relaxed);
    *shared.last_request.lock() = Some(RecordedRequest {
        authorization: headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });

    let (mode, answered) = {
        let mut script = shared.script.lock();
        script.answered += 1;
        (script.mode.clone(), script.answered)
    };
    match mode {
        Mode::Ok(content) => completion(&content),
        Mode::ServerError => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        Mode::RateLimited { retry_after_secs } => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
            if let Some(seconds) = retry_after_secs {
                response.headers_mut().insert(RETRY_AFTER, seconds.into());
            }
            response
        }
        Mode::Hang => {
            let mut stopped = shared.stopped.clone();
            tokio::select! {
                () = tokio::time::sleep(HANG_DURATION) => {}
                _ = stopped.changed() => {}
            }
            error(StatusCode::SERVICE_UNAVAILABLE, "server_error")
        }
        Mode::Malformed => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            r#"{"id":"chatcmpl-fault","choices":[{"message":{"content":"#,
        )
            .into_response(),
        Mode::BadRequest => error(StatusCode::BAD_REQUEST, "invalid_request_error"),
        Mode::SlowRecovery { failures, content } => {
            if answered <= failures {
                error(StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            } else {
                completion(&content)
            }
        }
    }
}

fn completion(content: &str) -> Response {
    axum::Json(json!({
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault-server",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop",
        }],
    }))
    .into_response()
}

fn error(status: StatusCode, kind: &str) -> Response {
    let body = json!({
        "error": {
            "message": format!("scripted {status}"),
            "type": kind,
            "param": null,
            "code": null,
        }
    });
    (status, axum::Json(body)).into_response()
}
