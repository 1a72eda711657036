//! The dashboard's server: where it binds, what each route answers, the
//! controls' gate, and the event stream. (The page itself, in a browser:
//! `tests/browser.rs`.)
#![cfg(feature = "dashboard")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use breaker_runtime::dashboard::{Dashboard, DashboardError, Running};
use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, DetailedState, Registry};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "test-token-0123456789";
const EVIL: &str = "<img src=x onerror=alert(1)>";

/// An answer: status code, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection, read to its end.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("the dashboard listens");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(body);
    stream.write_all(head.as_bytes()).await.expect("sent");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("an answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], "").await
}

fn registry_with_breakers() -> Arc<Registry> {
    let registry = Arc::new(Registry::new());
    for name in ["inventory", EVIL] {
        registry
            .register(CircuitBreaker::new(name, CircuitBreakerConfig::default()).expect("valid"))
            .expect("a new name");
    }
    let llm = registry
        .family("llm", CircuitBreakerConfig::default())
        .expect("valid");
    for model in ["gpt-4o", "claude"] {
        llm.breaker(model).expect("room for it");
    }
    registry
}

async fn serve(dashboard: Dashboard) -> Running {
    dashboard
        .serve("127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("serves on loopback")
}

#[tokio::test]
async fn it_binds_loopback_by_default_and_refuses_other_addresses_unless_allowed() {
    assert!(Dashboard::DEFAULT_ADDR.ip().is_loopback());
    let anywhere: SocketAddr = "0.0.0.0:0".parse().expect("an address");
    let refused = Dashboard::shared(registry_with_breakers())
        .serve(anywhere)
        .await;
    assert!(
        matches!(refused, Err(DashboardError::NotLoopback { addr }) if addr == anywhere),
        "{refused:?}"
    );
    let allowed = Dashboard::shared(registry_with_breakers())
        .allow_remote()
        .serve(anywhere)
        .await
        .expect("allowed explicitly");
    assert!(allowed.local_addr().ip().is_unspecified());
    let running = serve(Dashboard::shared(registry_with_breakers())).await;
    assert!(running.local_addr().ip().is_loopback());
}

#[tokio::test]
async fn a_loopback_dashboard_answers_only_to_local_host_names() {
    // DNS rebinding: evil.example resolves to 127.0.0.1, and a page from it
    // reads the dashboard through the browser. The Host header tells.
    let running = serve(Dashboard::shared(registry_with_breakers())).await;
    let addr = running.local_addr();
    let port = addr.port();
    for host in [
        format!("localhost:{port}"),
        format!("LocalHost.:{port}"),
        format!("app.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.1".to_owned(),
    ] {
        let answer = request(addr, "GET", "/status.json", &[("Host", &host)], "").await;
        assert_eq!(answer.status, 200, "Host: {host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("localhost.evil.example:{port}"),
        format!("[evil]:{port}"),
    ] {
        for path in ["/", "/status.json", "/metrics", "/events"] {
            let answer = request(addr, "GET", path, &[("Host", &host)], "").await;
            assert_eq!(answer.status, 403, "Host: {host} {path}");
            assert!(answer.body.contains("allow_remote"), "{}", answer.body);
            assert!(!answer.body.contains("inventory"));
        }
    }
}

#[tokio::test]
async fn the_page_is_embedded_and_runs_only_its_own_script() {
    let running = serve(Dashboard::shared(registry_with_breakers())).await;
    let page = get(running.local_addr(), "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        page.body
            .contains(r#"<script src="app.js" defer></script>"#)
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no CDN"
    );
    let script = get(running.local_addr(), "/app.js").await;
    assert_eq!(script.status, 200);
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(
            !script.body.contains(sink),
            "the script writes HTML with {sink}"
        );
    }
    assert_eq!(get(running.local_addr(), "/app.css").await.status, 200);
}

#[tokio::test]
async fn status_json_and_metrics_list_every_breaker() {
    let registry = registry_with_breakers();
    registry.get("inventory").expect("registered").force_open();
    let running = serve(Dashboard::shared(Arc::clone(&registry))).await;
    let status = get(running.local_addr(), "/status.json").await;
    assert_eq!(status.status, 200);
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(json["controls"], false);
    let breakers = json["breakers"].as_array().expect("a list");
    let names: Vec<&str> = breakers.iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names.len(), 4);
    for name in ["inventory", "llm[gpt-4o]", "llm[claude]", EVIL] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let inventory = breakers
        .iter()
        .find(|b| b["name"] == "inventory")
        .expect("listed");
    assert_eq!(inventory["state"], "forced_open");
    let keyed = breakers
        .iter()
        .find(|b| b["name"] == "llm[claude]")
        .expect("listed");
    assert_eq!(
        (keyed["family"].as_str(), keyed["key"].as_str()),
        (Some("llm"), Some("claude"))
    );

    let metrics = get(running.local_addr(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some(breaker_runtime::prometheus::CONTENT_TYPE)
    );
    assert!(
        metrics
            .body
            .contains(r#"breaker_state{breaker="inventory",state="forced_open"} 1"#)
    );
}

#[tokio::test]
async fn without_the_flag_there_are_no_controls() {
    let registry = registry_with_breakers();
    let running = serve(Dashboard::shared(Arc::clone(&registry))).await;
    let body = r#"{"breaker":"inventory","action":"force_open"}"#;
    let auth = format!("Bearer {TOKEN}");
    let answer = request(
        running.local_addr(),
        "POST",
        "/control",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 404, "no control route");
    assert_eq!(
        registry
            .get("inventory")
            .expect("registered")
            .detailed_state(),
        DetailedState::Closed
    );
}

#[tokio::test]
async fn with_the_flag_the_controls_need_the_token() {
    let registry = registry_with_breakers();
    let dashboard = Dashboard::shared(Arc::clone(&registry))
        .with_controls(TOKEN)
        .expect("a long token");
    let running = serve(dashboard).await;
    let addr = running.local_addr();
    let inventory = registry.get("inventory").expect("registered");
    let post = |auth: Option<String>, action: &'static str| async move {
        let body = format!(r#"{{"breaker":"inventory","action":"{action}"}}"#);
        let mut headers = vec![("Content-Type", "application/json".to_owned())];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        request(addr, "POST", "/control", &headers, &body).await
    };
    assert_eq!(post(None, "force_open").await.status, 401);
    assert_eq!(
        post(Some("Bearer wrong-token-0123456789".into()), "force_open")
            .await
            .status,
        401
    );
    assert_eq!(
        post(Some(TOKEN.into()), "force_open").await.status,
        401,
        "no Bearer scheme"
    );
    assert_eq!(
        inventory.detailed_state(),
        DetailedState::Closed,
        "nothing changed"
    );

    let forced = post(Some(format!("Bearer {TOKEN}")), "force_open").await;
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert_eq!(inventory.detailed_state(), DetailedState::ForcedOpen);
    assert_eq!(
        post(Some(format!("Bearer {TOKEN}")), "reset").await.status,
        200
    );
    assert_eq!(inventory.detailed_state(), DetailedState::Closed);
    assert_eq!(
        post(Some(format!("Bearer {TOKEN}")), "explode")
            .await
            .status,
        400
    );

    let status = get(addr, "/status.json").await;
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    assert_eq!(json["controls"], true);
}

#[tokio::test]
async fn events_push_snapshots_and_transitions_each_second() {
    let registry = registry_with_breakers();
    let running = serve(Dashboard::shared(Arc::clone(&registry))).await;
    let mut stream = TcpStream::connect(running.local_addr())
        .await
        .expect("listens");
    let head = format!(
        "GET /events HTTP/1.1\r\nHost: {}\r\n\r\n",
        running.local_addr()
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    let mut lines = BufReader::new(stream).lines();
    let next_event = async |lines: &mut tokio::io::Lines<BufReader<TcpStream>>| {
        let mut name = String::new();
        loop {
            let line = lines.next_line().await.expect("reads").expect("open");
            if let Some(event) = line.strip_prefix("event: ") {
                name = event.to_owned();
            } else if let Some(data) = line.strip_prefix("data: ") {
                return (name, data.to_owned());
            }
        }
    };
    let within = Duration::from_secs(5);
    // Transitions of other tests' breakers of the same names may come
    // first: the event bus is process-wide.
    let data = tokio::time::timeout(within, async {
        loop {
            let (name, data) = next_event(&mut lines).await;
            if name == "snapshot" {
                return data;
            }
        }
    })
    .await
    .expect("a snapshot within 5 s");
    let snapshot: serde_json::Value = serde_json::from_str(&data).expect("JSON");
    assert_eq!(snapshot["breakers"].as_array().map(Vec::len), Some(4));

    registry.get(EVIL).expect("registered").force_open();
    let transition = tokio::time::timeout(within, async {
        loop {
            let (name, data) = next_event(&mut lines).await;
            if name == "transition" && data.contains("onerror") {
                return data;
            }
        }
    })
    .await
    .expect("the transition is pushed within 5 s");
    let transition: serde_json::Value = serde_json::from_str(&transition).expect("JSON");
    assert_eq!(transition["breaker"], EVIL);
    assert_eq!(transition["to"], "forced_open");
    assert_eq!(transition["cause"], "manual");
}
