//! Sharing through Redis (feature `redis`, issue 11): what it costs the
//! closed path, and how fast a transition reaches another process.
//!
//! 1. The closed-state success path of a breaker shared through a connected
//!    fleet against an unshared one, as paired rounds (target: at most 1.1);
//!    then the same for a breaker with a failure-rate window, whose
//!    successes are pushed to the fleet's window until it is full of
//!    successes (the round's calls run long past that).
//! 2. Propagation: this process forces a shared breaker open and resets it,
//!    200 times each; a second process (this binary again) reports when it
//!    saw each transition. p50 and p99 of the delay, on the wall clock both
//!    processes share.
//!
//! Starts its own `redis-server` on a free loopback port.
//!
//! `cargo bench -p breaker-bench --features redis --bench fleet`

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breaker_bench::paired;
use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, EventKind, RedisFleet, Registry};

const CHILD: &str = "BREAKER_FLEET_BENCH_CHILD";
const ROUNDS: usize = 200;

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn replica(url: &str) -> (Registry, RedisFleet) {
    let registry = Registry::new();
    let fleet = RedisFleet::builder(url).prefix("bench").build().unwrap();
    fleet.share_registry(&registry);
    let start = Instant::now();
    while !fleet.is_connected() {
        assert!(start.elapsed() < Duration::from_secs(5), "no Redis");
        std::thread::sleep(Duration::from_millis(5));
    }
    (registry, fleet)
}

/// The second process: prints `<state> <wall ns>` for every transition of
/// `propagated` it takes on.
fn child(url: &str) {
    let (registry, _fleet) = replica(url);
    let _breaker = registry
        .get_or_register("propagated", Default::default())
        .unwrap();
    let _subscription = breaker_runtime::subscribe(|event| {
        if let (EventKind::Transition { to, .. }, "propagated") = (&event.kind, event.breaker) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{} {}", to.as_str(), wall_ns());
            let _ = out.flush();
        }
    });
    println!("ready");
    // Until the parent closes stdin.
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

fn work() -> Result<u64, ()> {
    Ok(black_box(1))
}

fn sync_loop(
    iters: u64,
    call: impl Fn() -> Result<u64, breaker_runtime::CallError<()>>,
) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let _ = black_box(call());
    }
    start.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if let Ok(url) = std::env::var(CHILD) {
        return child(&url);
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("breaker-fleet-bench-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let _server = Server(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed"),
    );
    let url = format!("redis://127.0.0.1:{port}/0");
    std::thread::sleep(Duration::from_millis(200));

    // 1. The closed path, shared against local.
    let (registry, _fleet) = replica(&url);
    let shared = registry
        .get_or_register("closed", Default::default())
        .unwrap();
    let local = CircuitBreaker::new("closed", Default::default()).unwrap();
    let pairing = paired::pair(
        "closed success, shared through Redis",
        "unshared",
        |n| sync_loop(n, || shared.call(work)),
        |n| sync_loop(n, || local.call(work)),
    );
    let windowed = CircuitBreakerConfig::builder()
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    let shared_rate = registry
        .get_or_register("closed-rate", windowed.clone())
        .unwrap();
    let local_rate = CircuitBreaker::new("closed-rate", windowed).unwrap();
    let rate_pairing = paired::pair(
        "closed success, failure-rate window, shared through Redis",
        "unshared",
        |n| sync_loop(n, || shared_rate.call(work)),
        |n| sync_loop(n, || local_rate.call(work)),
    );
    print!("{}", paired::render(&[pairing, rate_pairing]));

    // 2. Propagation to another process.
    let mut other = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, &url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(other.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let breaker = registry
        .get_or_register("propagated", Default::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut delays = Vec::with_capacity(2 * ROUNDS);
    for _ in 0..ROUNDS {
        for (act, expect) in [("forced_open", true), ("closed", false)] {
            let sent = wall_ns();
            if expect {
                breaker.force_open();
            } else {
                breaker.reset();
            }
            let line = lines.next().unwrap().unwrap();
            let (state, at) = line.split_once(' ').unwrap();
            assert_eq!(state, act);
            let at: u128 = at.parse().unwrap();
            delays.push(at.saturating_sub(sent) as f64 / 1e6);
        }
    }
    drop(other.stdin.take());
    let _ = other.wait();
    delays.sort_by(f64::total_cmp);
    println!(
        "\npropagation to a second process over {} transitions: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
