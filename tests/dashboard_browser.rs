//! The dashboard in a real browser: headless Chromium driven through
//! chromedriver with fantoccini. Skipped (with a message) when
//! `chromedriver` is not installed; `.ci/run` installs Debian's `chromium`
//! and `chromium-driver` when they are missing.
//!
//! Screenshots land in `target/tmp/` (`dashboard.png`,
//! `dashboard-controls.png`), for a reviewer.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use breaker_runtime::dashboard::{Dashboard, Running};
use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, DetailedState, Registry};
use fantoccini::{Client, ClientBuilder, Locator};

const EVIL: &str = "<img src=x onerror=alert(1)>";
const TOKEN: &str = "browser-token-0123456789";

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Starts chromedriver, or `None` when it is not installed.
fn start_driver() -> Option<Driver> {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(driver)
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,900"],
        }),
    );
    // Chromium can fail to start when the machine is loaded (four tests
    // start one each at once): try three times before calling it a failure.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(error) if attempt < 3 => {
                eprintln!("Chromium session attempt {attempt} failed: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("a Chromium session starts: {error}"),
        }
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(name)
}

async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let path = screenshot_path(name);
    std::fs::write(&path, png).expect("the screenshot is saved");
    eprintln!("screenshot: {}", path.display());
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after
/// `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, started.elapsed());
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The names the page lists, in its order.
async fn listed(client: &Client) -> Vec<String> {
    let mut names = Vec::new();
    for cell in client
        .find_all(Locator::Css("#rows tr.breaker td.name"))
        .await
        .unwrap_or_default()
    {
        names.push(cell.text().await.unwrap_or_default());
    }
    names
}

async fn state_shown(client: &Client, name: &str) -> Option<String> {
    let rows = client
        .find_all(Locator::Css("#rows tr.breaker"))
        .await
        .ok()?;
    for row in rows {
        if row.attr("data-breaker").await.ok()?? == name {
            return row.attr("data-state").await.ok()?;
        }
    }
    None
}

/// A breaker named `name`: a member of a keyed family when written
/// `family[key]`, else a plain one.
fn add(registry: &Registry, name: &str) -> CircuitBreaker {
    let config = CircuitBreakerConfig::default;
    match name.split_once('[') {
        Some((family, key)) => registry
            .family(family, config())
            .expect("valid")
            .breaker(key.trim_end_matches(']'))
            .expect("room for it"),
        None => registry
            .register(CircuitBreaker::new(name, config()).expect("valid"))
            .expect("a new name"),
    }
}

fn registry() -> Arc<Registry> {
    let registry = Arc::new(Registry::new());
    let mut names: Vec<String> = vec!["inventory".into(), "payments".into(), EVIL.into()];
    names.extend(["gpt-4o", "claude", "llama"].map(|key| format!("llm[{key}]")));
    for name in names {
        let breaker = add(&registry, &name);
        for i in 0..20 {
            let _ = breaker.call(|| if i % 5 == 0 { Err("503") } else { Ok(()) });
        }
    }
    registry
}

async fn serve(dashboard: Dashboard) -> Running {
    dashboard
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the dashboard serves")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_every_breaker_shows_a_forced_open_within_2_s_and_escapes_names() {
    let Some(driver) = start_driver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: chromedriver is not installed (Debian: chromium chromium-driver)");
        return;
    };
    let registry = registry();
    let running = serve(Dashboard::shared(Arc::clone(&registry))).await;
    let client = browser(&driver).await;
    client
        .goto(&format!("http://{}/", running.local_addr()))
        .await
        .expect("the page loads");

    let mut expected = registry.names();
    expected.sort();
    let (mut shown, _) = eventually(Duration::from_secs(10), "every breaker listed", || async {
        let names = listed(&client).await;
        (names.len() == expected.len()).then_some(names)
    })
    .await;
    shown.sort();
    assert_eq!(
        shown, expected,
        "the page lists every breaker, names as text"
    );

    // The name that is an HTML tag stays text: no <img> anywhere, no alert.
    assert!(
        client
            .find_all(Locator::Css("img"))
            .await
            .expect("a query")
            .is_empty(),
        "a name became an element"
    );
    assert!(client.get_alert_text().await.is_err(), "an alert opened");

    // Keyed family members sit under their family's header.
    let header = client
        .find(Locator::Css("#rows tr.family"))
        .await
        .expect("a family header");
    assert!(
        header
            .text()
            .await
            .expect("text")
            .starts_with("llm — 3 keys")
    );

    // Without the flag, no control is visible and no token is asked for.
    for button in client
        .find_all(Locator::Css("button.control"))
        .await
        .expect("a query")
    {
        assert!(
            !button.is_displayed().await.expect("displayed?"),
            "a control shows"
        );
    }
    let token_box = client
        .find(Locator::Id("token"))
        .await
        .expect("the token input");
    assert!(!token_box.is_displayed().await.expect("displayed?"));

    registry.get("payments").expect("registered").force_open();
    let (_, took) = eventually(Duration::from_secs(2), "the forced open shows", || async {
        (state_shown(&client, "payments").await.as_deref() == Some("forced_open")).then_some(())
    })
    .await;
    eprintln!("force_open() showed on the page after {took:?}");
    let first = listed(&client).await.into_iter().next();
    assert_eq!(
        first.as_deref(),
        Some("payments"),
        "open breakers sort first"
    );

    // The filter narrows by name.
    client
        .find(Locator::Id("filter"))
        .await
        .expect("the filter")
        .send_keys("inv")
        .await
        .expect("typed");
    let (narrowed, _) = eventually(Duration::from_secs(2), "the filter applies", || async {
        let names = listed(&client).await;
        (names.len() == 1).then_some(names)
    })
    .await;
    assert_eq!(narrowed, ["inventory"]);
    client
        .find(Locator::Id("filter"))
        .await
        .expect("the filter")
        .clear()
        .await
        .expect("cleared");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    save_screenshot(&client, "dashboard.png").await;
    client.close().await.expect("the session ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_the_controls_work_only_with_the_token() {
    let Some(driver) = start_driver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: chromedriver is not installed (Debian: chromium chromium-driver)");
        return;
    };
    let registry = registry();
    let dashboard = Dashboard::shared(Arc::clone(&registry))
        .with_controls(TOKEN)
        .expect("a long token");
    let running = serve(dashboard).await;
    let client = browser(&driver).await;
    client
        .goto(&format!("http://{}/", running.local_addr()))
        .await
        .expect("the page loads");
    let inventory = registry.get("inventory").expect("registered");
    let button = |action: &'static str| {
        let client = client.clone();
        async move {
            for row in client
                .find_all(Locator::Css("#rows tr.breaker"))
                .await
                .ok()?
            {
                if row.attr("data-breaker").await.ok()?.as_deref() == Some("inventory") {
                    return row
                        .find(Locator::Css(&format!("button.{action}")))
                        .await
                        .ok();
                }
            }
            None
        }
    };
    let (force_open, _) = eventually(Duration::from_secs(10), "the controls show", || async {
        let found = button("force_open").await?;
        found.is_displayed().await.ok()?.then_some(found)
    })
    .await;

    // Without the token the server refuses, and the page says so.
    force_open.click().await.expect("clicked");
    eventually(Duration::from_secs(5), "the refusal shows", || async {
        let summary = client.find(Locator::Id("summary")).await.ok()?;
        summary.text().await.ok()?.contains("401").then_some(())
    })
    .await;
    assert_eq!(inventory.detailed_state(), DetailedState::Closed);

    client
        .find(Locator::Id("token"))
        .await
        .expect("the token input")
        .send_keys(TOKEN)
        .await
        .expect("typed");
    force_open.click().await.expect("clicked");
    eventually(
        Duration::from_secs(5),
        "the breaker is forced open",
        || async { (inventory.detailed_state() == DetailedState::ForcedOpen).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(3), "the page shows it", || async {
        (state_shown(&client, "inventory").await.as_deref() == Some("forced_open")).then_some(())
    })
    .await;
    save_screenshot(&client, "dashboard-controls.png").await;

    let (reset, _) = eventually(Duration::from_secs(5), "the reset button", || {
        button("reset")
    })
    .await;
    reset.click().await.expect("clicked");
    eventually(Duration::from_secs(5), "the breaker is reset", || async {
        (inventory.detailed_state() == DetailedState::Closed).then_some(())
    })
    .await;
    client.close().await.expect("the session ends");
}

/// The agent example, built next to this test (`cargo test` builds
/// examples; a lone `--test dashboard_browser` builds it here).
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary sits in <target>/<profile>/deps");
    let binary = profile_dir.join("examples").join("agent");
    if !binary.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", "agent"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the agent example failed");
    }
    binary
}

/// The README's screenshot: the agent's demo, watched in the browser
/// until its `llm` breaker opens and then closes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_demo_shows_its_llm_breaker_open_then_closed() {
    let Some(driver) = start_driver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: chromedriver is not installed (Debian: chromium chromium-driver)");
        return;
    };
    use std::io::BufRead;
    let mut agent = Command::new(agent_binary())
        .args(["--demo", "--dashboard", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir())
        .env("OPENAI_API_KEY", "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent starts");
    let mut line = String::new();
    std::io::BufReader::new(agent.stderr.take().expect("piped"))
        .read_line(&mut line)
        .expect("the agent says where");
    let url = line
        .trim()
        .strip_prefix("dashboard: ")
        .expect("an address")
        .to_owned();
    let client = browser(&driver).await;
    client.goto(&url).await.expect("the page loads");
    eventually(Duration::from_secs(20), "the llm breaker opens", || async {
        (state_shown(&client, "llm[sim-a]").await.as_deref() == Some("open")).then_some(())
    })
    .await;
    // Let the sparklines and the countdown run for a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    save_screenshot(&client, "dashboard-demo.png").await;
    // The demo's /metrics, scraped while the circuit is open, passes
    // promtool (the Debian package prometheus, which .ci/run installs).
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let metrics = tokio::task::spawn_blocking(move || support::http_get(&addr, "/metrics"))
        .await
        .expect("the scrape finishes");
    assert!(
        metrics.contains(
            r#"breaker_state{breaker="llm[sim-a]",family="llm",key="sim-a",state="open"} 1"#
        ),
        "{metrics}"
    );
    support::promtool_accepts(&metrics);
    eventually(
        Duration::from_secs(20),
        "the llm breaker closes again",
        || async {
            (state_shown(&client, "llm[sim-a]").await.as_deref() == Some("closed")).then_some(())
        },
    )
    .await;
    client.close().await.expect("the session ends");
    let _ = agent.kill();
    let _ = agent.wait();
}

/// A thousand breakers: the open ones first, a family of 500 collapsed to
/// its open member until its header is clicked, the filter narrows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_breakers_stay_usable() {
    let Some(driver) = start_driver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser tests: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: chromedriver is not installed (Debian: chromium chromium-driver)");
        return;
    };
    let registry = Arc::new(Registry::new());
    for i in 0..1_000 {
        let name = if i < 500 {
            format!("svc-{i:04}")
        } else {
            format!("llm[key-{i:04}]")
        };
        add(&registry, &name);
    }
    for name in ["svc-0377", "svc-0042", "llm[key-0900]"] {
        if let Some(breaker) = registry.get(name) {
            breaker.force_open();
        }
    }
    let running = serve(Dashboard::shared(Arc::clone(&registry))).await;
    let client = browser(&driver).await;
    client
        .goto(&format!("http://{}/", running.local_addr()))
        .await
        .expect("the page loads");
    let rows = || async {
        client
            .find_all(Locator::Css("#rows tr.breaker"))
            .await
            .map(|rows| rows.len())
            .unwrap_or(0)
    };
    // 500 plain breakers, and the family's header over its one open key.
    eventually(Duration::from_secs(20), "501 rows", || async {
        (rows().await == 501).then_some(())
    })
    .await;
    let first: Vec<String> = client
        .execute(
            "return [...document.querySelectorAll('#rows tr')].slice(0, 5)\
             .map(r => r.classList.contains('family') ? 'family' : r.dataset.breaker)",
            vec![],
        )
        .await
        .expect("a script runs")
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        first,
        [
            "family",
            "llm[key-0900]",
            "svc-0042",
            "svc-0377",
            "svc-0000"
        ],
        "the open breakers lead, the family's open key under its header"
    );
    client
        .find(Locator::Css("#rows tr.family"))
        .await
        .expect("the family header")
        .click()
        .await
        .expect("clicked");
    eventually(Duration::from_secs(3), "the family expands", || async {
        (rows().await == 1_000).then_some(())
    })
    .await;
    client
        .find(Locator::Id("filter"))
        .await
        .expect("the filter")
        .send_keys("svc-03")
        .await
        .expect("typed");
    eventually(
        Duration::from_secs(3),
        "the filter narrows to 100",
        || async { (rows().await == 100).then_some(()) },
    )
    .await;
    client.close().await.expect("the session ends");
}
