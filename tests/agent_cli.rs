//! The `agent` example as a user runs it: `--demo`, and questions piped on
//! standard input.
//!
//! `cargo test --workspace` builds the example next to this test binary.
//! When it is missing or older than its sources (say, after
//! `cargo test --test agent_cli`), the test builds it first, with the same
//! cargo, target directory and profile.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The built example, once per test binary.
fn agent_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let profile_dir = support::profile_dir();
        let binary = support::agent_path(&profile_dir);
        // `cargo test --workspace` has just built it. Building again here
        // could resolve features differently from the outer build and
        // recompile half the dependency tree, so only a stale one is rebuilt.
        if !is_newer_than_sources(&binary) {
            support::build_agent(&profile_dir, &[]);
        }
        assert!(binary.exists(), "{} was not built", binary.display());
        binary
    })
}

/// Whether `binary` exists and is newer than every source it is built from.
fn is_newer_than_sources(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = [
        "Cargo.toml",
        "Cargo.lock",
        "examples",
        "breaker-runtime/Cargo.toml",
        "breaker-runtime/src",
        "breaker-macros/Cargo.toml",
        "breaker-macros/src",
    ];
    sources
        .iter()
        .all(|source| newest_modification(&root.join(source)).is_some_and(|m| m < built))
}

fn newest_modification(path: &Path) -> Option<std::time::SystemTime> {
    let metadata = path.metadata().ok()?;
    if !metadata.is_dir() {
        return metadata.modified().ok();
    }
    let mut newest = metadata.modified().ok()?;
    for entry in std::fs::read_dir(path).ok()? {
        newest = newest.max(newest_modification(&entry.ok()?.path())?);
    }
    Some(newest)
}

/// Runs the agent with `args` and `stdin`, offline: no API key from the
/// environment or a `.env` file, and no colour.
fn run_agent(args: &[&str], stdin: &str) -> (Output, Duration) {
    let empty_dir = std::env::temp_dir();
    let mut child = Command::new(agent_binary())
        .args(args)
        // A `.env` is looked up from the working directory upwards.
        .current_dir(&empty_dir)
        .env("OPENAI_API_KEY", "")
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent starts");
    let started = Instant::now();
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("the agent reads its input");
    let output = child.wait_with_output().expect("the agent finishes");
    (output, started.elapsed())
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "the agent failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("the output is UTF-8")
}

/// Asserts `needles` appear in `haystack` in this order.
fn assert_in_order(haystack: &str, needles: &[&str]) {
    let mut rest = haystack;
    for needle in needles {
        match rest.find(needle) {
            Some(at) => rest = &rest[at + needle.len()..],
            None => panic!("`{needle}` missing (or out of order) in:\n{haystack}"),
        }
    }
}

#[test]
fn the_demo_goes_through_every_state_in_under_30_seconds() {
    let (output, elapsed) = run_agent(&["--demo"], "");
    let stdout = stdout_of(&output);
    assert!(
        elapsed < Duration::from_secs(30),
        "the demo took {elapsed:?}"
    );
    assert!(!stdout.contains('\x1b'), "no colour when not on a terminal");
    assert_in_order(
        &stdout,
        &[
            "1. Healthy",
            "used_fallback=false  breaker=llm[sim-a]  state=closed",
            "2. The model fails",
            "used_fallback=true  breaker=llm[sim-a]  state=closed",
            "fallback of llm: call failed (error)",
            "used_fallback=true  breaker=llm[sim-a]  state=open",
            "llm[sim-a]: closed -> open (failure threshold)",
            "3. Circuit open",
            "fallback of llm: circuit open, retry in",
            "  llm[sim-a]  open",
            "4. The model recovers",
            "used_fallback=false  breaker=llm[sim-a]  state=half_open",
            "llm[sim-a]: open -> half_open (recovery timeout)",
            "used_fallback=false  breaker=llm[sim-a]  state=closed",
            "llm[sim-a]: half_open -> closed (probes succeeded)",
            "5. Rate limited",
            "fallback of llm: call failed (rate_limit)",
            "llm[sim-a]: closed -> open (retry after)",
            "state=half_open",
            "state=closed",
            "6. A hanging service",
            "fallback of external_api: timed out after 1.0s",
            "7. Poor answers",
            "fallback of llm: quality score",
            "8. A breaker per model",
            "> /fail llm[sim-a] 1.0",
            "used_fallback=true  breaker=llm[sim-a]  state=open",
            "llm[sim-a]: closed -> open (failure threshold)",
            "> /model sim-b",
            "model: sim-b (breaker llm[sim-b])",
            "used_fallback=false  breaker=llm[sim-b]  state=closed",
            "llm           family",
            "  llm[sim-a]  open",
            "  llm[sim-b]  closed",
            "9. Final status",
            "BREAKER",
        ],
    );
}

#[test]
fn piped_lines_run_as_typed_until_the_end_of_input() {
    let input = "What is AI?\n/status\n/fail llm 1.0\nWhat is AI?\nhello\nWhy?\n\
                 /force-open quality\n/json\n/nonsense\n/reset quality\n/heal\n";
    let (output, _) = run_agent(&[], input);
    let stdout = stdout_of(&output);
    assert!(!stdout.contains('\x1b'), "no colour when not on a terminal");
    assert_in_order(
        &stdout,
        &[
            "answering with the simulated model",
            "> What is AI?",
            "Artificial intelligence",
            "used_fallback=false  breaker=llm[sim-a]  state=closed",
            "> /status",
            "BREAKER",
            "external_api",
            "llm",
            "quality",
            "> /fail llm 1.0",
            "> What is AI?",
            "Artificial intelligence",
            "used_fallback=true",
            "> hello",
            "Hello!",
            "> Why?",
            "llm[sim-a]: closed -> open (failure threshold)",
            "> /force-open quality",
            "quality: closed -> forced_open (manual)",
            "> /json",
            "\"breakers\"",
            "> /nonsense",
            "error: unknown command `/nonsense`",
            "> /reset quality",
            "quality: forced_open -> closed (manual)",
            "> /heal",
        ],
    );
    let json_start = stdout.find("> /json\n").unwrap() + "> /json\n".len();
    let json_end = stdout[json_start..].find("\n> ").unwrap() + json_start;
    let status: serde_json::Value = serde_json::from_str(&stdout[json_start..json_end])
        .expect("/json prints the status as JSON");
    assert_eq!(status["breakers"].as_array().unwrap().len(), 3);
    let model = &status["breakers"][1];
    assert_eq!(
        (&model["family"], &model["key"]),
        (&"llm".into(), &"sim-a".into())
    );
}

/// A GET on a fresh connection; the body.
#[test]
fn piped_with_dashboard_serves_the_agent_s_breakers_until_the_end_of_input() {
    use std::io::BufRead;
    let mut child = Command::new(agent_binary())
        .args(["--dashboard", "127.0.0.1:0"])
        .current_dir(std::env::temp_dir())
        .env("OPENAI_API_KEY", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent starts");
    let mut stdin = child.stdin.take().expect("piped");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the agent says where");
    let addr = line
        .trim()
        .strip_prefix("dashboard: http://")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not a dashboard address: {line:?}"))
        .to_owned();
    writeln!(stdin, "What is AI?").expect("the agent reads");
    stdin.flush().expect("flushed");
    // The question goes through the llm breaker, which then shows.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = support::http_get(&addr, "/status.json");
        if status.contains(r#""family":"llm""#) || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.contains(r#""name":"llm[sim-a]","family":"llm","key":"sim-a""#),
        "{status}"
    );
    let metrics = support::http_get(&addr, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("breaker_calls_total{")
                && line.contains(r#"breaker="llm[sim-a]""#)
                && line.contains(r#"family="llm""#)
                && line.contains(r#"key="sim-a""#)
                && line.contains(r#"outcome="success""#)),
        "{metrics}"
    );
    support::promtool_accepts(&metrics);
    drop(stdin);
    let status = child.wait().expect("the agent exits at the end of input");
    assert!(status.success(), "{status}");
}

#[test]
fn dashboard_refuses_an_address_it_cannot_parse() {
    let (output, _) = run_agent(&["--dashboard", "nowhere"], "");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--dashboard needs an address"));
}
