//! A live dashboard page for the breakers of a [`Registry`] (feature
//! `dashboard`), served with axum. Everything is embedded in the binary:
//! one HTML page, its stylesheet and a small vanilla script; no CDN, no
//! network.
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page |
//! | `GET /metrics` | [`prometheus::encode`](crate::prometheus::encode) |
//! | `GET /status.json` | a snapshot: every breaker's state, counts, p50/p99, open countdown, last transitions |
//! | `GET /events` | server-sent events: a `snapshot` once a second, and a `transition` for each state change |
//! | `POST /control` | only with [`Dashboard::with_controls`]: `{"breaker": name, "action": "force_open" \| "force_closed" \| "reset"}` with `Authorization: Bearer <token>` |
//!
//! Security: [`Dashboard::serve`] binds only a loopback address unless
//! [`Dashboard::allow_remote`] says otherwise, and then answers 403 to a
//! request whose `Host` is a name other than `localhost` (DNS rebinding: a
//! web page whose name resolves to 127.0.0.1 cannot read the dashboard
//! from a browser on the same machine); the controls do not exist
//! (404) unless enabled, and then answer 401 without the token; the page
//! writes every name with `textContent`, never as HTML, under a
//! `Content-Security-Policy` that allows only its own script.
//!
//! ```no_run
//! use breaker_runtime::dashboard::Dashboard;
//!
//! # async fn run() -> Result<(), breaker_runtime::dashboard::DashboardError> {
//! // http://127.0.0.1:9898/ until the task ends.
//! let running = Dashboard::new().serve(Dashboard::DEFAULT_ADDR).await?;
//! println!("dashboard on http://{}/", running.local_addr());
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::events::{self, EventKind, Subscription};
use crate::registry::{BreakerStatus, Registry, registry};
use crate::state::DetailedState;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Only the page's own files may load or run; nothing may frame it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Transitions kept for the page, across all breakers.
const TRANSITIONS_KEPT: usize = 1_000;
/// Transitions listed per breaker.
const TRANSITIONS_SHOWN: usize = 5;
/// A controls token shorter than this is refused.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a dashboard was not started or not configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The address is not a loopback one, and remote access was not
    /// allowed with [`Dashboard::allow_remote`].
    #[error(
        "the dashboard address {addr} is not a loopback address: use 127.0.0.1 or ::1, or call allow_remote() to expose it"
    )]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The controls token is too short to be a secret.
    #[error("the dashboard's controls `token` must be at least {min} characters, not {len}")]
    WeakToken {
        /// Its length.
        len: usize,
        /// [`MIN_TOKEN_LEN`].
        min: usize,
    },
    /// The address could not be bound.
    #[error("the dashboard could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The dashboard: which registry it shows, and whether its controls are
/// on. Build one, then [`serve`](Self::serve) it or mount its
/// [`router`](Self::router) in your own axum app.
#[derive(Clone)]
pub struct Dashboard {
    shared: Arc<Shared>,
    allow_remote: bool,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("controls", &self.shared.token.is_some())
            .field("allow_remote", &self.allow_remote)
            .finish_non_exhaustive()
    }
}

struct Shared {
    registry: Source,
    /// The controls' bearer token; `None`: no controls.
    token: Option<Box<str>>,
    transitions: Arc<Transitions>,
    /// Unsubscribed when the last clone of the dashboard drops.
    subscription: Mutex<Option<Subscription>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.get_mut().take() {
            subscription.unsubscribe();
        }
    }
}

enum Source {
    Static(&'static Registry),
    Shared(Arc<Registry>),
}

impl Source {
    fn clone_handle(&self) -> Self {
        match self {
            Self::Static(registry) => Self::Static(registry),
            Self::Shared(registry) => Self::Shared(Arc::clone(registry)),
        }
    }

    fn get(&self) -> &Registry {
        match self {
            Self::Static(registry) => registry,
            Self::Shared(registry) => registry,
        }
    }
}

/// One state change, as the page lists it.
#[derive(Debug, Clone, Serialize)]
struct TransitionRecord {
    /// Counts every transition heard, for the SSE stream to send each once.
    seq: u64,
    breaker: Box<str>,
    from: DetailedState,
    to: DetailedState,
    cause: crate::TransitionCause,
    /// Milliseconds since the Unix epoch.
    at_ms: u64,
}

#[derive(Default)]
struct Transitions {
    recent: Mutex<(u64, VecDeque<TransitionRecord>)>,
}

impl Transitions {
    fn hear(&self, breaker: &str, kind: &EventKind) {
        let EventKind::Transition { from, to, cause } = kind else {
            return;
        };
        let mut recent = self.recent.lock();
        let (seq, list) = &mut *recent;
        *seq += 1;
        if list.len() == TRANSITIONS_KEPT {
            list.pop_front();
        }
        list.push_back(TransitionRecord {
            seq: *seq,
            breaker: breaker.into(),
            from: *from,
            to: *to,
            cause: *cause,
            at_ms: unix_ms(),
        });
    }

    fn since(&self, seq: u64) -> Vec<TransitionRecord> {
        let recent = self.recent.lock();
        recent.1.iter().filter(|t| t.seq > seq).cloned().collect()
    }

    fn last_seq(&self) -> u64 {
        self.recent.lock().0
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for Dashboard {
    fn default() -> Self {
        Self::new()
    }
}

impl Dashboard {
    /// Where [`serve`](Self::serve) listens unless told otherwise: the
    /// loopback interface, port 9898.
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9898));

    /// A dashboard of the process-global [`registry()`], without controls.
    pub fn new() -> Self {
        Self::with_source(Source::Static(registry()))
    }

    /// A dashboard of a registry that lives for the whole program.
    pub fn of(registry: &'static Registry) -> Self {
        Self::with_source(Source::Static(registry))
    }

    /// A dashboard of a registry shared through an `Arc`.
    pub fn shared(registry: Arc<Registry>) -> Self {
        Self::with_source(Source::Shared(registry))
    }

    fn with_source(registry: Source) -> Self {
        let transitions = Arc::new(Transitions::default());
        let heard = Arc::clone(&transitions);
        // Events name their breaker but not its registry: a transition is
        // kept when this registry holds a breaker of that name.
        let shown = registry.clone_handle();
        let subscription = events::subscribe(move |event| {
            if matches!(event.kind, EventKind::Transition { .. })
                && shown.get().get(event.breaker).is_some()
            {
                heard.hear(event.breaker, &event.kind);
            }
        });
        Self {
            shared: Arc::new(Shared {
                registry,
                token: None,
                transitions,
                subscription: Mutex::new(Some(subscription)),
            }),
            allow_remote: false,
        }
    }

    /// Turns the controls on (force open, force closed, reset), for callers
    /// that send `Authorization: Bearer <token>`.
    ///
    /// ```
    /// use breaker_runtime::dashboard::{Dashboard, DashboardError};
    ///
    /// assert!(matches!(
    ///     Dashboard::new().with_controls("short"),
    ///     Err(DashboardError::WeakToken { len: 5, min: 16 })
    /// ));
    /// assert!(Dashboard::new().with_controls("a-long-random-secret").is_ok());
    /// ```
    ///
    /// # Errors
    /// [`DashboardError::WeakToken`] for a token shorter than
    /// [`MIN_TOKEN_LEN`].
    pub fn with_controls(self, token: impl Into<String>) -> Result<Self, DashboardError> {
        let token: String = token.into();
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(DashboardError::WeakToken {
                len: token.chars().count(),
                min: MIN_TOKEN_LEN,
            });
        }
        let Self {
            shared,
            allow_remote,
        } = self;
        let subscription = shared.subscription.lock().take();
        let shared = Arc::new(Shared {
            registry: shared.registry.clone_handle(),
            token: Some(token.into()),
            transitions: Arc::clone(&shared.transitions),
            subscription: Mutex::new(subscription),
        });
        Ok(Self {
            shared,
            allow_remote,
        })
    }

    /// Lets [`serve`](Self::serve) bind an address other than a loopback
    /// one. The page then shows your breakers' names to your network.
    pub fn allow_remote(mut self) -> Self {
        self.allow_remote = true;
        self
    }

    /// The routes, to serve or to nest in an app of your own.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/", get(page))
            .route("/app.js", get(script))
            .route("/app.css", get(style))
            .route("/metrics", get(metrics))
            .route("/status.json", get(status_json))
            .route("/events", get(events_stream));
        if self.shared.token.is_some() {
            router = router.route("/control", post(control));
        }
        router.with_state(Arc::clone(&self.shared))
    }

    /// Binds `addr` and serves the dashboard on a tokio task until the
    /// returned [`Running`] is dropped or shut down. Port 0 picks a free
    /// port; [`Running::local_addr`] tells which.
    ///
    /// # Errors
    /// [`DashboardError::NotLoopback`] for an address that is not a
    /// loopback one without [`allow_remote`](Self::allow_remote), and
    /// [`DashboardError::Bind`] when the address cannot be bound.
    pub async fn serve(self, addr: SocketAddr) -> Result<Running, DashboardError> {
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(DashboardError::NotLoopback { addr });
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind { addr, source })?;
        let mut router = self.router();
        if !self.allow_remote {
            router = router.layer(axum::middleware::from_fn(local_host_only));
        }
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the breaker dashboard stopped");
            }
        });
        Ok(Running { local_addr, task })
    }
}

/// A dashboard being served. Dropping it stops the server.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type AppState = State<Arc<Shared>>;

/// Lets a request through when its `Host` is `localhost` (or a name under
/// `.localhost`) or an IP address, as a browser sends for a loopback
/// dashboard; any other name came through somebody's DNS and gets 403. A
/// request without `Host` (HTTP/1.0 tools) is let through.
async fn local_host_only(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST);
    if host.is_none_or(|host| host.to_str().is_ok_and(is_local_host)) {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        "this dashboard answers only to localhost or an IP address in Host; \
         serve it with Dashboard::allow_remote to reach it by name\n",
    )
        .into_response()
}

/// `Host` header values a loopback dashboard answers to.
fn is_local_host(host: &str) -> bool {
    // "[::1]:9898" or "[::1]": an IPv6 literal in brackets.
    if let Some(rest) = host.strip_prefix('[') {
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<Ipv4Addr>().is_ok()
}

fn with_type(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn page() -> Response {
    with_type("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    with_type("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    with_type("text/css; charset=utf-8", STYLE)
}

async fn metrics(State(shared): AppState) -> Response {
    match crate::prometheus::encode(shared.registry.get()) {
        Ok(body) => (
            [(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What `/status.json` and each `snapshot` event carry.
#[derive(Serialize)]
struct Snapshot {
    /// Milliseconds since the Unix epoch.
    now_ms: u64,
    controls: bool,
    breakers: Vec<BreakerView>,
}

/// One breaker, as the page shows it: counts are lifetime totals; the
/// page turns their differences into rates.
#[derive(Serialize)]
struct BreakerView {
    name: Arc<str>,
    family: Option<String>,
    key: Option<String>,
    state: DetailedState,
    calls: u64,
    successes: u64,
    failures: u64,
    rejected: u64,
    rate_limited: u64,
    fallbacks: u64,
    fallback_failures: u64,
    p50_seconds: Option<f64>,
    p99_seconds: Option<f64>,
    open_remaining_seconds: Option<f64>,
    consecutive_failures: u32,
    transitions: Vec<TransitionRecord>,
}

fn snapshot(shared: &Shared) -> Snapshot {
    let status = shared.registry.get().status();
    let recent = shared.transitions.since(0);
    Snapshot {
        now_ms: unix_ms(),
        controls: shared.token.is_some(),
        breakers: status.breakers.iter().map(|b| view(b, &recent)).collect(),
    }
}

fn view(b: &BreakerStatus, recent: &[TransitionRecord]) -> BreakerView {
    let m = &b.metrics;
    let labels = crate::exposition::breaker_labels(b);
    let label = |key: &str| {
        labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    };
    let mut transitions: Vec<TransitionRecord> = recent
        .iter()
        .rev()
        .filter(|t| *t.breaker == *b.name)
        .take(TRANSITIONS_SHOWN)
        .cloned()
        .collect();
    transitions.reverse();
    BreakerView {
        name: Arc::clone(&b.name),
        family: label("family"),
        key: label("key"),
        state: b.state,
        calls: m.total_calls,
        successes: m.successful_calls,
        failures: m.failed_calls,
        rejected: m.rejected_calls,
        rate_limited: m.local_rate_limited_calls,
        fallbacks: m.fallback_calls,
        fallback_failures: m.fallback_failures,
        p50_seconds: m.p50_response_time.map(|d| d.as_secs_f64()),
        p99_seconds: m.p99_response_time.map(|d| d.as_secs_f64()),
        open_remaining_seconds: m.open_remaining.map(|d| d.as_secs_f64()),
        consecutive_failures: m.consecutive_failures,
        transitions,
    }
}

fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn status_json(State(shared): AppState) -> Response {
    json_response(&snapshot(&shared))
}

/// How often `/events` pushes a snapshot.
const PUSH_EVERY: Duration = Duration::from_secs(1);

async fn events_stream(State(shared): AppState) -> impl IntoResponse {
    let start = shared.transitions.last_seq();
    let ticks = tokio::time::interval(PUSH_EVERY);
    let stream = futures_util::stream::unfold(
        (shared, ticks, start, VecDeque::<SseEvent>::new()),
        |(shared, mut ticks, mut seen, mut queued)| async move {
            loop {
                if let Some(event) = queued.pop_front() {
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (shared, ticks, seen, queued),
                    ));
                }
                ticks.tick().await;
                for transition in shared.transitions.since(seen) {
                    seen = seen.max(transition.seq);
                    if let Ok(data) = serde_json::to_string(&transition) {
                        queued.push_back(SseEvent::default().event("transition").data(data));
                    }
                }
                if let Ok(data) = serde_json::to_string(&snapshot(&shared)) {
                    queued.push_back(SseEvent::default().event("snapshot").data(data));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A control request.
#[derive(Deserialize)]
struct Control {
    breaker: String,
    action: Action,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Action {
    ForceOpen,
    ForceClosed,
    Reset,
}

async fn control(State(shared): AppState, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(token) = shared.token.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if !presented.is_some_and(|presented| same_secret(presented, token)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response();
    }
    let Ok(request) = serde_json::from_slice::<Control>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected {\"breaker\": name, \"action\": \"force_open\" | \"force_closed\" | \"reset\"}\n",
        )
            .into_response();
    };
    let Some(breaker) = shared.registry.get().get(&request.breaker) else {
        return (StatusCode::NOT_FOUND, "no breaker of that name\n").into_response();
    };
    match request.action {
        Action::ForceOpen => breaker.force_open(),
        Action::ForceClosed => breaker.force_closed(),
        Action::Reset => breaker.reset(),
    }
    json_response(&view(
        &BreakerStatus::of(&breaker),
        &shared.transitions.since(0),
    ))
}

/// Compares a presented token with the secret in time that does not
/// depend on where they first differ.
fn same_secret(presented: &str, secret: &str) -> bool {
    let (a, b) = (presented.as_bytes(), secret.as_bytes());
    let mut differ = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        differ |= usize::from(byte ^ a.get(i).copied().unwrap_or(!byte));
    }
    differ == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_is_the_same_secret() {
        let secret = "0123456789abcdef";
        assert!(same_secret(secret, secret));
        assert!(!same_secret("0123456789abcdeF", secret));
        assert!(!same_secret("0123456789abcde", secret), "a prefix");
        assert!(!same_secret("0123456789abcdef0", secret), "longer");
        assert!(!same_secret("", secret));
    }
}
