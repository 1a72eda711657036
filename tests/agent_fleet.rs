//! The README's two-terminal walkthrough, automated: two agent processes
//! with one `BREAKER_REDIS_URL` share the `llm` breaker, so `/fail llm 1.0`
//! in one opens the circuit in the other.
//!
//! `cargo test --features redis --test agent_fleet`: builds the agent with
//! the feature (a no-op when it is fresh) and starts its own `redis-server`
//! on a free loopback port with a temporary directory.
#![cfg(feature = "redis")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `redis-server` of this test's own, killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("breaker-agent-fleet-{port}"));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port, dir }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent example built with the feature `redis`, by the cargo that runs
/// this test, into the same target directory and profile.
fn agent_binary() -> PathBuf {
    let profile_dir = support::profile_dir();
    support::build_agent(&profile_dir, &["redis"]);
    support::agent_path(&profile_dir)
}

/// One terminal: an agent in piped mode, its output gathered as it comes.
struct Terminal {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn open(binary: &PathBuf, redis_url: Option<&str>) -> Self {
        let mut command = Command::new(binary);
        command
            // A `.env` is looked up from the working directory upwards.
            .current_dir(std::env::temp_dir())
            .env("OPENAI_API_KEY", "")
            .env_remove("BREAKER_REDIS_URL")
            .env_remove("BREAKER_REDIS_PREFIX")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(url) = redis_url {
            command.env("BREAKER_REDIS_URL", url);
        }
        let mut child = command.spawn().expect("the agent starts");
        let stdin = child.stdin.take();
        let output = Arc::new(Mutex::new(String::new()));
        let sink = output.clone();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self {
            child,
            stdin,
            output,
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("still open");
        writeln!(stdin, "{line}").expect("the agent reads");
        stdin.flush().expect("flushed");
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output holds `text`, for at most `within`.
    fn wait_for(&self, text: &str, within: Duration) {
        let start = Instant::now();
        while !self.output().contains(text) {
            assert!(
                start.elapsed() < within,
                "waited {within:?} for `{text}` in:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Types `/status` until the table shows `row`, at most `tries` times,
    /// 100 ms apart; whether it did.
    fn status_until(&mut self, row: &str, tries: u32) -> bool {
        for _ in 0..tries {
            let before = self.output().len();
            self.type_line("/status");
            // The table ends with the `quality` breaker's row.
            let start = Instant::now();
            loop {
                let text = self.output();
                let answer = &text[before..];
                if answer.contains("\nquality ") {
                    if answer.contains(row) {
                        return true;
                    }
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "no table");
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Ends the input: the agent leaves; its whole output.
    fn close(mut self) -> String {
        drop(self.stdin.take());
        let status = self.child.wait().expect("the agent exits");
        assert!(status.success(), "the agent failed: {status}");
        // The reader thread sees the end of output after the exit.
        std::thread::sleep(Duration::from_millis(100));
        self.output()
    }
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

/// The walkthrough, with both agents on `redis_url` (or neither); terminal
/// 2's output, and whether its `/status` showed `llm[sim-a]` open.
fn walkthrough(binary: &PathBuf, redis_url: Option<&str>) -> (String, bool) {
    let mut one = Terminal::open(binary, redis_url);
    let mut two = Terminal::open(binary, redis_url);
    one.type_line("What is AI?");
    two.type_line("What is AI?");
    for terminal in [&one, &two] {
        terminal.wait_for(
            "used_fallback=false  breaker=llm[sim-a]",
            Duration::from_secs(20),
        );
    }
    one.type_line("/fail llm 1.0");
    // `failure_threshold = 3`: the third failing question opens it.
    for _ in 0..3 {
        one.type_line("What is AI?");
    }
    one.wait_for(
        "llm[sim-a]: closed -> open (failure threshold)",
        Duration::from_secs(10),
    );
    // Within the open period (`recovery_timeout = 2.0`).
    let opened = two.status_until("  llm[sim-a]  open", 10);
    two.type_line("What is AI?");
    let one = one.close();
    assert!(
        one.contains("fallback of llm: call failed (error)"),
        "{one}"
    );
    (two.close(), opened)
}

#[test]
fn fail_in_one_agent_opens_the_llm_circuit_in_the_other() {
    let binary = agent_binary();
    let server = Server::start();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let (two, opened) = walkthrough(&binary, Some(&url));
    assert!(opened, "terminal 2's /status never showed llm open:\n{two}");
    assert_in_order(
        &two,
        &[
            "> What is AI?",
            "used_fallback=false  breaker=llm[sim-a]  state=closed",
            "> /status",
            "  llm[sim-a]  open",
            &format!("fleet {url} connected"),
            "* llm[sim-a]: closed -> open (failure threshold)",
            "> What is AI?",
            "used_fallback=true  breaker=llm[sim-a]  state=open",
            "fallback of llm: circuit open, retry in",
        ],
    );
    assert!(
        !two.contains("call failed"),
        "terminal 2 never saw a failure of its own:\n{two}"
    );
}

#[test]
fn without_the_url_the_other_agent_stays_closed() {
    let binary = agent_binary();
    let (two, opened) = walkthrough(&binary, None);
    assert!(!opened, "opened without a fleet:\n{two}");
    assert_in_order(
        &two,
        &[
            "> /status",
            "  llm[sim-a]  closed",
            "> What is AI?",
            "used_fallback=false  breaker=llm[sim-a]  state=closed",
        ],
    );
}
