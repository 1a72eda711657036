//! An upstream HTTP server on 127.0.0.1 for the adapter tests (the reqwest
//! middleware, the tower layer's review tests): it answers every path with
//! its current [`Reply`] and counts exactly the requests that reached it.
//! Included with `#[path = "common/upstream.rs"] mod upstream;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the upstream answers every request with, until told otherwise.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// 429 with this `Retry-After` value.
    RateLimited(String),
    /// 200 with `x-stale: 1`.
    Stale,
    /// Never answers.
    Hang,
}

/// A server on 127.0.0.1 answering every path with its current [`Reply`].
/// Dropping it stops it.
pub struct Upstream {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    reply: Mutex<Reply>,
    hits: AtomicU64,
}

impl Upstream {
    pub async fn start(reply: Reply) -> Self {
        let shared = Arc::new(Shared {
            reply: Mutex::new(reply),
            hits: AtomicU64::new(0),
        });
        let router = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            address,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/thing", self.address)
    }

    /// The member key the middleware gives this server: `host:port`.
    pub fn key(&self) -> String {
        self.address.to_string()
    }

    pub fn answer(&self, reply: Reply) {
        *self.shared.reply.lock() = reply;
    }

    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(shared): State<Arc<Shared>>) -> Response {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let reply = shared.reply.lock().clone();
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::RateLimited(retry_after) => {
            (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, retry_after)]).into_response()
        }
        Reply::Stale => (StatusCode::OK, [("x-stale", "1")]).into_response(),
        Reply::Hang => std::future::pending().await,
    }
}
