//! Breakers shared through a real Redis server (feature `redis`).
//!
//! Each test starts its own `redis-server` on a free loopback port with a
//! temporary directory and kills it when done. A replica is a registry with
//! a fleet of its own (its own connection and origin); the first test runs
//! replicas as separate processes of this test binary.
#![cfg(feature = "redis")]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use breaker_runtime::{
    BreakerError, BreakerStatus, CircuitBreaker, CircuitBreakerConfig, CircuitState, EventKind,
    RedisFleet, Registry, circuit_breaker, registry,
};

/// A `redis-server` of this test's own, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// TLS only (`rediss://`), with a certificate from a CA of its own,
    /// whose certificate is this file.
    tls_ca: Option<PathBuf>,
}

impl Server {
    fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that speaks only TLS, its certificate (for `127.0.0.1`)
    /// signed by a CA made for it with `openssl`.
    fn start_tls() -> Self {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("breaker-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let tls_ca = tls.then(|| make_certificates(&dir));
        let mut server = Self {
            child: None,
            port,
            dir,
            tls_ca,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls_ca {
            None => command.args(["--port", &self.port.to_string()]),
            Some(ca) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` against this server: its output, trimmed.
    fn cli(&self, args: &[&str]) -> String {
        if TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            return String::new();
        }
        let mut command = Command::new("redis-cli");
        if let Some(ca) = &self.tls_ca {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = command
            .args(["-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA and a server certificate for `127.0.0.1` signed by it, in `dir`
/// (`ca.crt`, `server.crt`, `server.key`); the CA's certificate.
fn make_certificates(dir: &std::path::Path) -> PathBuf {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=breaker test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.cnf",
        "-out",
        "server.crt",
    ]);
    dir.join("ca.crt")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A replica: a registry sharing through a fleet of its own.
fn replica(server: &Server, prefix: &str) -> (Registry, RedisFleet) {
    let registry = Registry::new();
    let fleet = RedisFleet::builder(server.url())
        .prefix(prefix)
        .resync_interval(Duration::from_millis(200))
        .lease_wait(Duration::from_millis(100))
        .build()
        .expect("a fleet");
    assert!(fleet.share_registry(&registry));
    wait_for("the fleet to connect", Duration::from_secs(5), || {
        fleet.is_connected()
    });
    (registry, fleet)
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "waited {within:?} for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn config(threshold: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .failure_threshold(threshold)
        .recovery_timeout(Duration::from_secs(60))
        .build()
        .expect("valid")
}

fn fail(breaker: &CircuitBreaker) {
    let _ = breaker.call(|| Err::<(), _>("down".to_owned()));
}

fn wall_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

// ---- the multi-process case -------------------------------------------

const CHILD: &str = "BREAKER_REDIS_TEST_CHILD";
const THRESHOLD: u32 = 5;

#[derive(Debug)]
struct AppError;
impl From<BreakerError> for AppError {
    fn from(_: BreakerError) -> Self {
        AppError
    }
}

static BODIES: AtomicU32 = AtomicU32::new(0);

#[circuit_breaker(name = "fleet-failing", failure_threshold = 5, recovery_timeout = 60.0)]
fn failing_dependency() -> Result<(), AppError> {
    BODIES.fetch_add(1, Ordering::SeqCst);
    Err(AppError)
}

/// The child role: not a test of its own (it returns at once unless this
/// binary was started as a child). Calls the failing function every 10 ms
/// from the agreed start time for 1.5 s, and prints how often its body ran.
#[test]
fn fleet_child() {
    let Ok(start_at) = std::env::var(CHILD) else {
        return;
    };
    let start_at: u64 = start_at.parse().unwrap();
    if std::env::var("BREAKER_REDIS_URL").is_ok() {
        // Any breaker of the registry tells whether its fleet is up.
        let probe = registry()
            .get_or_register("fleet-warmup", CircuitBreakerConfig::default())
            .unwrap();
        wait_for("the child's fleet", Duration::from_secs(5), || {
            BreakerStatus::of(&probe)
                .fleet
                .is_some_and(|fleet| fleet.connected)
        });
    }
    while wall_ms() < start_at {
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let _ = failing_dependency();
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("bodies={}", BODIES.load(Ordering::SeqCst));
}

/// Runs 4 children, shared through `url` or not; the bodies they ran.
fn run_fleet(url: Option<&str>, prefix: &str) -> u32 {
    let exe = std::env::current_exe().unwrap();
    let start_at = wall_ms() + 1500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut command = Command::new(&exe);
            command
                .args(["--exact", "fleet_child", "--nocapture", "--test-threads=1"])
                .env(CHILD, start_at.to_string())
                .env("BREAKER_REDIS_PREFIX", prefix)
                .env_remove("BREAKER_REDIS_URL")
                .stdout(Stdio::piped());
            if let Some(url) = url {
                command.env("BREAKER_REDIS_URL", url);
            }
            command.spawn().unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines()
                .find_map(|l| l.split_once("bodies=").map(|(_, n)| n))
                .unwrap_or_else(|| panic!("no count in {text}"))
                .trim()
                .parse::<u32>()
                .unwrap()
        })
        .sum()
}

#[test]
fn four_processes_trip_together_and_alone_each_trips_on_its_own() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let server = Server::start();
    let shared = run_fleet(Some(&server.url()), "multi");
    let alone = run_fleet(None, "multi");
    eprintln!("bodies run: shared {shared}, unshared {alone}");
    assert!(
        shared <= THRESHOLD + 4,
        "shared: the fleet ran the failing body {shared} times"
    );
    assert!(shared >= THRESHOLD, "the fleet tripped before {THRESHOLD}");
    assert_eq!(alone, 4 * THRESHOLD, "unshared: each process trips alone");
}

// ---- replicas in one process --------------------------------------------

#[test]
fn force_open_on_one_replica_reaches_the_others_and_reset_closes_them() {
    let server = Server::start();
    let replicas: Vec<_> = (0..3).map(|_| replica(&server, "force")).collect();
    let breakers: Vec<_> = replicas
        .iter()
        .map(|(r, _)| r.get_or_register("pay", config(5)).unwrap())
        .collect();
    breakers[0].force_open();
    for b in &breakers[1..] {
        let took = wait_for("force_open to arrive", Duration::from_millis(100), || {
            b.call(|| Ok::<_, String>(())).is_err()
        });
        eprintln!("force_open arrived in {took:?}");
    }
    breakers[2].reset();
    for b in &breakers[..2] {
        let start = Instant::now();
        while b.state() != CircuitState::Closed {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "reset did not arrive: {:?}, hash {}",
                breakers
                    .iter()
                    .map(|b| b.detailed_state())
                    .collect::<Vec<_>>(),
                server.cli(&["HGETALL", "force:pay"]).replace('\n', " ")
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn failures_count_across_the_fleet() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "count");
    let (b, _fb) = replica(&server, "count");
    let a = a.get_or_register("llm", config(4)).unwrap();
    let b = b.get_or_register("llm", config(4)).unwrap();
    // Two failures on each replica: four across the fleet.
    for _ in 0..2 {
        fail(&a);
        fail(&b);
    }
    for breaker in [&a, &b] {
        wait_for("the fleet to trip", Duration::from_secs(1), || {
            breaker.state() == CircuitState::Open
        });
    }
    let status = BreakerStatus::of(&a).fleet.expect("shared");
    assert!(status.connected);
    assert_eq!(status.key, "count:llm");
}

#[test]
fn a_success_clears_the_fleets_count() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "clear");
    let (b, _fb) = replica(&server, "clear");
    let a = a.get_or_register("llm", config(3)).unwrap();
    let b = b.get_or_register("llm", config(3)).unwrap();
    fail(&a);
    fail(&a);
    wait_for("the count to reach b", Duration::from_secs(1), || {
        BreakerStatus::of(&b).fleet.unwrap().fleet_failures == 2
    });
    assert_eq!(b.call(|| Ok::<_, String>(())), Ok(()));
    wait_for("the count to clear", Duration::from_secs(1), || {
        server.cli(&["HGET", "clear:llm", "fails"]) == "0"
    });
    // a learns of the success on b: its own count goes back to zero.
    wait_for("a to hear of it", Duration::from_secs(1), || {
        a.get_metrics().consecutive_failures == 0
    });
    fail(&a);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.state(), CircuitState::Closed, "1 failure after a success");
}

#[test]
fn probes_are_limited_across_the_fleet() {
    let server = Server::start();
    let quick = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_millis(300))
        .half_open_max_calls(1)
        .success_threshold(1)
        .timeout_duration(Duration::from_secs(10))
        .build()
        .unwrap();
    let (a, _fa) = replica(&server, "probe");
    let (b, _fb) = replica(&server, "probe");
    let a = a.get_or_register("llm", quick.clone()).unwrap();
    let b = b.get_or_register("llm", quick).unwrap();
    fail(&a);
    wait_for("b to open", Duration::from_secs(1), || {
        b.state() == CircuitState::Open
    });
    std::thread::sleep(Duration::from_millis(400));
    let probe = a.try_acquire().expect("a probes");
    assert!(probe.is_probe());
    let refused = b.try_acquire();
    assert!(refused.is_err(), "a second probe across the fleet");
    drop(refused);
    probe.record(breaker_runtime::Outcome::Success);
    wait_for("b to close", Duration::from_secs(1), || {
        b.state() == CircuitState::Closed
    });
}

#[test]
fn a_probe_gives_its_lease_back_when_it_ends() {
    let server = Server::start();
    let two_successes = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_millis(300))
        .half_open_max_calls(1)
        .success_threshold(2)
        .timeout_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    let (a, _fa) = replica(&server, "lease");
    let (b, _fb) = replica(&server, "lease");
    let a = a.get_or_register("llm", two_successes.clone()).unwrap();
    let b = b.get_or_register("llm", two_successes).unwrap();
    fail(&a);
    wait_for("b to open", Duration::from_secs(1), || {
        b.state() == CircuitState::Open
    });
    std::thread::sleep(Duration::from_millis(400));
    let probe = a.try_acquire().expect("a probes");
    assert!(probe.is_probe());
    assert!(b.try_acquire().is_err(), "a holds the only slot");
    assert!(
        b.try_acquire().is_err(),
        "still, for a probe admitted without a transition"
    );
    // One success of two: still half-open, and the slot is free again.
    probe.record(breaker_runtime::Outcome::Success);
    wait_for("b to get the slot", Duration::from_secs(1), || {
        match b.try_acquire() {
            Ok(permit) => {
                assert!(permit.is_probe());
                permit.record(breaker_runtime::Outcome::Success);
                true
            }
            Err(_) => false,
        }
    });
}

#[test]
fn keys_have_a_ttl_and_a_flushed_server_is_rebuilt() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "ttl");
    let open = a.get_or_register("open", config(1)).unwrap();
    let counted = a.get_or_register("counted", config(5)).unwrap();
    fail(&open);
    fail(&counted);
    let (b, _fb) = replica(&server, "ttl");
    let forced = a.get_or_register("forced", config(5)).unwrap();
    let forced_b = b.get_or_register("forced", config(5)).unwrap();
    // Three writes before the flush, so versions count past the rebuild's.
    forced.force_open();
    forced.reset();
    forced.force_open();
    wait_for("b to be forced open", Duration::from_secs(1), || {
        forced_b.state() == CircuitState::Open && forced.state() == CircuitState::Open
    });
    std::thread::sleep(Duration::from_millis(500));
    let keys = server.cli(&["KEYS", "ttl:*"]);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in &keys {
        let ttl: i64 = server.cli(&["PTTL", key]).parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    assert_eq!(server.cli(&["FLUSHALL"]), "OK");
    wait_for("the resync to rebuild", Duration::from_secs(3), || {
        server.cli(&["HGET", "ttl:forced", "state"]) == "forced_open"
            && server.cli(&["HGET", "ttl:open", "state"]) == "open"
    });
    let ttl: i64 = server.cli(&["PTTL", "ttl:forced"]).parse().unwrap();
    assert!(ttl > 0);
    // After the rebuild, a reset still reaches the replica that saw the
    // versions before the flush.
    forced.reset();
    wait_for("the reset to reach b", Duration::from_secs(1), || {
        forced_b.state() == CircuitState::Closed
    });
}

/// Calls through each of `breakers` every 5 ms for `run`, a third of the
/// calls failing, while `during` runs once after `after`; the slowest call.
fn slowest_call_while(
    breakers: &[&CircuitBreaker],
    run: Duration,
    after: Duration,
    during: impl FnOnce(),
) -> Duration {
    let start = Instant::now();
    let mut during = Some(during);
    let mut slowest = Duration::ZERO;
    let mut i = 0u32;
    while start.elapsed() < run {
        if start.elapsed() >= after {
            if let Some(f) = during.take() {
                f();
            }
        }
        i += 1;
        for breaker in breakers {
            let t = Instant::now();
            let _ = breaker.call(|| {
                if i % 3 == 0 {
                    Err("x".to_owned())
                } else {
                    Ok(())
                }
            });
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    slowest
}

/// Seen red by making a failure wait for the fleet to be connected again
/// (every call slower than 50 ms after the kill). A killed server on
/// loopback refuses at once, so a call that waits for a Redis round trip
/// does not stall here: `a_frozen_redis_does_not_stall_calls` catches that.
#[test]
fn redis_killed_then_restarted_calls_do_not_stall_and_the_fleet_resyncs() {
    let mut server = Server::start();
    let (a, fa) = replica(&server, "kill");
    let (b, _fb) = replica(&server, "kill");
    let seen = std::sync::Arc::new(parking_lot_free::Seen::default());
    let sink = seen.clone();
    let _subscription = breaker_runtime::subscribe(move |event| {
        if event.breaker == "killed-llm" {
            if let EventKind::FleetDisconnected { store } = &event.kind {
                sink.push(store.clone());
            }
        }
    });
    let a = a.get_or_register("killed-llm", config(1000)).unwrap();
    let b = b.get_or_register("killed-llm", config(1000)).unwrap();
    let slowest = slowest_call_while(
        &[&a],
        Duration::from_millis(800),
        Duration::from_millis(200),
        || server.kill9(),
    );
    assert!(
        slowest < Duration::from_millis(50),
        "a call took {slowest:?}"
    );
    wait_for(
        "the fleet to see Redis gone",
        Duration::from_secs(2),
        || !fa.is_connected(),
    );
    assert!(!BreakerStatus::of(&a).fleet.unwrap().connected);
    assert!(
        seen.all().iter().any(|store| store == &server.url()),
        "a disconnection event names the server"
    );
    // Opened while Redis is away: kept open, and merged back.
    a.force_open();
    server.spawn();
    wait_for(
        "b to learn of the open circuit",
        Duration::from_secs(5),
        || b.state() == CircuitState::Open,
    );
}

/// Seen red by making each failure wait for a Redis round trip (a call
/// took the 250 ms operation timeout once the server froze).
#[test]
fn a_frozen_redis_does_not_stall_calls() {
    let server = Server::start();
    // The default lease wait: the one place a call waits for Redis.
    let registry = Registry::new();
    let fleet = RedisFleet::builder(server.url())
        .prefix("frozen")
        .build()
        .unwrap();
    fleet.share_registry(&registry);
    wait_for("the fleet", Duration::from_secs(5), || fleet.is_connected());
    // Trips at once and probes every 30 ms, each probe asking for a lease.
    let flapping = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_millis(30))
        .half_open_max_calls(1)
        .success_threshold(1)
        .build()
        .unwrap();
    let a = registry.get_or_register("llm", flapping).unwrap();
    // Stays closed: each failure is counted, and sent to the fleet.
    let counting = registry.get_or_register("counting", config(1000)).unwrap();
    let slowest = slowest_call_while(
        &[&a, &counting],
        Duration::from_millis(1000),
        Duration::from_millis(200),
        || server.signal("-STOP"),
    );
    server.signal("-CONT");
    assert!(
        slowest < Duration::from_millis(50),
        "a call took {slowest:?}"
    );
    assert!(a.get_metrics().transitions > 4, "the breaker flapped");
}

#[test]
fn a_password_never_shows() {
    let url = "redis://:hunter2@127.0.0.1:1/0";
    let fleet = RedisFleet::builder(url).build().unwrap();
    let breaker = CircuitBreaker::new("secret", CircuitBreakerConfig::default()).unwrap();
    let seen = std::sync::Arc::new(parking_lot_free::Seen::default());
    let sink = seen.clone();
    let _subscription = breaker_runtime::subscribe(move |event| {
        if let EventKind::FleetDisconnected { store } = &event.kind {
            sink.push(store.clone());
        }
    });
    fleet.share(&breaker);
    fail(&breaker);
    let status = BreakerStatus::of(&breaker);
    let json = serde_json::to_string(&status).unwrap();
    assert!(json.contains("redis://:***@127.0.0.1:1/0"), "{json}");
    for text in [json, format!("{fleet:?}"), format!("{status:?}")] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    let bad = RedisFleet::builder("redis://:hunter2@")
        .build()
        .unwrap_err();
    assert!(!bad.to_string().contains("hunter2"), "{bad}");
    assert!(!format!("{bad:?}").contains("hunter2"), "{bad:?}");
    for store in seen.all() {
        assert!(!store.contains("hunter2"));
    }
}

mod parking_lot_free {
    #[derive(Default)]
    pub struct Seen(std::sync::Mutex<Vec<String>>);
    impl Seen {
        pub fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        pub fn all(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }
}

#[test]
fn an_open_made_while_cut_off_is_merged_back_over_a_later_closed() {
    let server = Server::start();
    // A user of its own for replica A, whose rights the test can take away
    // while the server keeps running for everyone else.
    let user = ["ACL", "SETUSER", "cut", "on", ">pw", "~*", "&*", "+@all"];
    assert_eq!(server.cli(&user), "OK");
    let a = Registry::new();
    let fa = RedisFleet::builder(format!("redis://cut:pw@127.0.0.1:{}/0", server.port))
        .prefix("merge")
        .resync_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    fa.share_registry(&a);
    wait_for("a to connect", Duration::from_secs(5), || fa.is_connected());
    let (b, _fb) = replica(&server, "merge");
    let a = a.get_or_register("llm", config(1)).unwrap();
    let b = b.get_or_register("llm", config(1)).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(server.cli(&["ACL", "SETUSER", "cut", "-@all"]), "OK");
    wait_for("a to lose Redis", Duration::from_secs(3), || {
        !fa.is_connected()
    });
    fail(&a);
    assert_eq!(a.state(), CircuitState::Open);
    // Meanwhile the hash says closed, at a later version than a has seen.
    server.cli(&[
        "HSET",
        "merge:llm",
        "state",
        "closed",
        "ver",
        "99999999999999",
    ]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.state(), CircuitState::Closed, "a could not write");

    assert_eq!(server.cli(&["ACL", "SETUSER", "cut", "+@all"]), "OK");
    wait_for("a's open to be merged back", Duration::from_secs(5), || {
        b.state() == CircuitState::Open
    });
    assert_eq!(a.state(), CircuitState::Open, "open anywhere stays open");
}

#[test]
fn a_keyed_family_is_shared_key_by_key() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "keyed");
    let (b, _fb) = replica(&server, "keyed");
    let a = a.family("llm", config(4)).unwrap();
    let b = b.family("llm", config(4)).unwrap();
    let (a_model, b_model) = (a.breaker("gpt-4o").unwrap(), b.breaker("gpt-4o").unwrap());
    let (a_other, b_other) = (a.breaker("claude").unwrap(), b.breaker("claude").unwrap());
    // Two failures of one model on each replica: four across the fleet.
    for _ in 0..2 {
        fail(&a_model);
        fail(&b_model);
    }
    for breaker in [&a_model, &b_model] {
        wait_for(
            "the model's circuit to trip fleet-wide",
            Duration::from_secs(1),
            || breaker.state() == CircuitState::Open,
        );
    }
    for breaker in [&a_other, &b_other] {
        assert_eq!(
            breaker.state(),
            CircuitState::Closed,
            "the other model's circuit"
        );
    }
    let status = BreakerStatus::of(&a_model)
        .fleet
        .expect("a member is shared");
    assert_eq!(status.key, "keyed:llm[gpt-4o]");
}

// ---- the failure-rate window ----------------------------------------------

fn rate_config(window: u32, minimum: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .failure_threshold(1000)
        .failure_rate_threshold(0.5)
        .sliding_window_size(window)
        .minimum_calls(minimum)
        .recovery_timeout(Duration::from_secs(60))
        .build()
        .expect("valid")
}

fn succeed(breaker: &CircuitBreaker) {
    assert_eq!(breaker.call(|| Ok::<_, String>(())), Ok(()));
}

/// Waits until the fleet's window in `key` holds `calls` outcomes and
/// `failures` failures.
fn wait_for_window(server: &Server, key: &str, calls: u32, failures: u32) {
    let start = Instant::now();
    loop {
        let seen = server.cli(&["HMGET", key, "wl", "wf"]);
        if seen == format!("{calls}\n{failures}") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the window in {key} holds {seen:?}, not {calls} calls with {failures} failures"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn the_failure_rate_window_counts_outcomes_across_the_fleet() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "rate");
    let (b, _fb) = replica(&server, "rate");
    let a = a.get_or_register("llm", rate_config(10, 10)).unwrap();
    let b = b.get_or_register("llm", rate_config(10, 10)).unwrap();
    for _ in 0..5 {
        succeed(&a);
    }
    wait_for_window(&server, "rate:llm", 5, 0);
    for _ in 0..4 {
        fail(&b);
    }
    // Nine outcomes, four failures: under the minimum of ten, so closed.
    wait_for_window(&server, "rate:llm", 9, 4);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.state(), CircuitState::Closed);
    assert_eq!(b.state(), CircuitState::Closed);
    let status = BreakerStatus::of(&b).fleet.expect("shared");
    assert_eq!((status.window_calls, status.window_failures), (9, 4));
    // The tenth, on a: five failures in ten across the fleet, where neither
    // replica's own window (six calls, four calls) reaches the minimum.
    fail(&a);
    for breaker in [&a, &b] {
        wait_for(
            "the fleet to trip on its rate",
            Duration::from_secs(1),
            || breaker.state() == CircuitState::Open,
        );
    }
    assert_eq!(server.cli(&["HGET", "rate:llm", "cause"]), "failure_rate");
    let (local_a, local_b) = (a.get_metrics(), b.get_metrics());
    assert_eq!((local_a.failed_calls, local_b.failed_calls), (1, 4));
}

#[test]
fn the_fleets_window_slides_and_a_full_clean_window_takes_no_round_trip() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "slide");
    let (b, _fb) = replica(&server, "slide");
    let a = a.get_or_register("llm", rate_config(4, 4)).unwrap();
    let b = b.get_or_register("llm", rate_config(4, 4)).unwrap();
    fail(&a);
    fail(&a);
    wait_for_window(&server, "slide:llm", 2, 2);
    // One success at a time, each pushed before the next: the third and
    // fourth outcomes fill the window, and each later one pushes out the
    // oldest, a failure, until the last four are successes.
    succeed(&b);
    wait_for_window(&server, "slide:llm", 3, 2);
    succeed(&b);
    wait_for_window(&server, "slide:llm", 4, 2);
    succeed(&b);
    wait_for_window(&server, "slide:llm", 4, 1);
    succeed(&b);
    wait_for_window(&server, "slide:llm", 4, 0);
    wait_for("b to read the clean window", Duration::from_secs(1), || {
        let status = BreakerStatus::of(&b).fleet.unwrap();
        (status.window_calls, status.window_failures) == (4, 0)
    });
    // A full window without a failure: more successes change nothing, and
    // none is sent (the ring's position stays where it is).
    let position = server.cli(&["HGET", "slide:llm", "wn"]);
    // Not a multiple of the window's size, so a push would move it.
    for _ in 0..99 {
        succeed(&b);
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(server.cli(&["HGET", "slide:llm", "wn"]), position);
    // One failure in four: under the rate of one half.
    fail(&a);
    wait_for_window(&server, "slide:llm", 4, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.state(), CircuitState::Closed);
    assert_eq!(b.state(), CircuitState::Closed);
    // Two in four, the second on the other replica: the fleet trips.
    fail(&b);
    for breaker in [&a, &b] {
        wait_for(
            "the fleet to trip on its rate",
            Duration::from_secs(1),
            || breaker.state() == CircuitState::Open,
        );
    }
    assert_eq!(server.cli(&["HGET", "slide:llm", "cause"]), "failure_rate");
}

#[test]
fn while_connected_the_fleets_window_decides_not_a_replicas_own() {
    let server = Server::start();
    let (a, _fa) = replica(&server, "own");
    let (b, _fb) = replica(&server, "own");
    let a = a.get_or_register("llm", rate_config(10, 3)).unwrap();
    let b = b.get_or_register("llm", rate_config(10, 3)).unwrap();
    for _ in 0..10 {
        succeed(&b);
    }
    wait_for_window(&server, "own:llm", 10, 0);
    // a's own window: three failures in three, over its minimum. The
    // fleet's: three in ten, under the rate.
    for _ in 0..3 {
        fail(&a);
    }
    wait_for_window(&server, "own:llm", 10, 3);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(a.state(), CircuitState::Closed);
    assert_eq!(b.state(), CircuitState::Closed);
}

// ---- members of a keyed family come and go ---------------------------------

/// A thread that called a family and then idles keeps, in its lookup
/// cache, the snapshot it read last, and with it a breaker the family has
/// since let go: its memory, until the thread's next call to the family or
/// its exit. Not its fleet membership: a member leaves its fleet when the
/// family lets it go out of the holding area, and every member leaves when
/// the family is dropped, whatever threads still cache them.
#[test]
fn a_member_let_go_leaves_the_fleet_while_an_idle_thread_caches_it() {
    use breaker_runtime::{CachedFallback, Family, ManualClock};
    use std::sync::{Arc, Weak, mpsc};
    const IDLE: Duration = Duration::from_secs(60);
    let server = Server::start();
    let fleet = RedisFleet::builder(server.url())
        .prefix("idle-cache")
        .resync_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    wait_for("the fleet to connect", Duration::from_secs(5), || {
        fleet.is_connected()
    });
    let clock = ManualClock::new();
    let family = Family::builder("llm-idle")
        .config(config(3))
        .idle_after(IDLE)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (called, wait_called) = mpsc::channel();
    let (finish, wait_finish) = mpsc::channel::<()>();
    let worker = {
        let (family, fleet) = (family.clone(), fleet.clone());
        std::thread::spawn(move || {
            for key in ["a", "b"] {
                fleet.share(&family.breaker(key).unwrap());
            }
            // Served by, and cached in, this thread's cache.
            family.with("a", |_| ()).unwrap();
            family.with("b", |_| ()).unwrap();
            drop(family);
            called.send(()).unwrap();
            // A pool thread with no more work for this family.
            wait_finish.recv().unwrap();
        })
    };
    wait_called.recv().unwrap();
    assert_eq!(fleet.shared_breakers(), 2);
    let a: Weak<CachedFallback<u8, u8>> =
        Arc::downgrade(&family.get("a").unwrap().site_cache("liveness"));
    // A failure keeps `b` from being evicted.
    let b = family.get("b").unwrap();
    assert!(b.call(|| Err::<(), _>("503")).is_err());
    drop(b);
    clock.advance(IDLE);
    assert_eq!(family.sweep(), 1, "`a` evicted into the holding area");
    assert_eq!(fleet.shared_breakers(), 2, "a held member stays shared");
    clock.advance(IDLE);
    family.sweep();
    assert!(family.get("a").is_none(), "the family let `a` go");
    wait_for(
        "the let-go member to leave the fleet",
        Duration::from_secs(1),
        || fleet.shared_breakers() == 1,
    );
    assert!(
        a.strong_count() > 0,
        "the idle thread's cache still pins the breaker's memory"
    );
    drop(family);
    wait_for(
        "the dropped family's members to leave the fleet",
        Duration::from_secs(1),
        || fleet.shared_breakers() == 0,
    );
    finish.send(()).unwrap();
    worker.join().unwrap();
    // The fleet's thread may hold it a moment longer, mid-message.
    wait_for(
        "the breaker to be freed once the idle thread exits",
        Duration::from_secs(1),
        || a.strong_count() == 0,
    );
}

#[test]
fn an_evicted_family_key_leaves_the_fleet() {
    use breaker_runtime::{Family, ManualClock};
    const IDLE: Duration = Duration::from_secs(60);
    let server = Server::start();
    // No resync in the test's time: it too forgets a dropped breaker, but
    // only on its next pass.
    let fleet = RedisFleet::builder(server.url())
        .prefix("churn")
        .resync_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    wait_for("the fleet to connect", Duration::from_secs(5), || {
        fleet.is_connected()
    });
    let clock = ManualClock::new();
    let family = Family::builder("llm")
        .config(config(3))
        .max_keys(10)
        .idle_after(IDLE)
        .clock(clock.clone())
        .build()
        .unwrap();
    // Fifty waves of ten new keys, each shared, then evicted and let go:
    // the fleet tracks only the breakers the family still has.
    for wave in 0..50 {
        // On a thread of their own: a thread's lookup cache holds the last
        // snapshot of the family it read (evicted members included) until
        // its next lookup, or its exit.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..10 {
                    let breaker = family.breaker(&format!("model-{wave}-{i}")).unwrap();
                    fleet.share(&breaker);
                }
            });
        });
        assert_eq!(fleet.shared_breakers(), 10, "wave {wave}");
        clock.advance(IDLE);
        assert_eq!(family.sweep(), 10, "evicted, and held");
        clock.advance(IDLE);
        family.sweep();
        // The fleet's thread may hold one a moment longer, mid-resync.
        wait_for(
            "the let-go breakers to leave the fleet",
            Duration::from_secs(1),
            || fleet.shared_breakers() == 0,
        );
    }
    // A key made again after it was let go is shared afresh, and a
    // message for it reaches the new breaker.
    let again = family.breaker("model-0-0").unwrap();
    fleet.share(&again);
    assert_eq!(fleet.shared_breakers(), 1);
    let (other, _fo) = replica(&server, "churn");
    let other = other.get_or_register("llm[model-0-0]", config(3)).unwrap();
    other.force_open();
    wait_for(
        "the new breaker to hear of it",
        Duration::from_secs(1),
        || again.state() == CircuitState::Open,
    );
}

// ---- rediss:// through rustls -------------------------------------------------

fn tls_url(server: &Server) -> String {
    format!("rediss://127.0.0.1:{}/0", server.port)
}

#[test]
fn rediss_through_rustls_with_the_servers_ca_shares_and_without_it_stays_local() {
    let server = Server::start_tls();
    assert_eq!(server.cli(&["PING"]), "PONG", "the server speaks TLS");
    let ca = std::fs::read(server.tls_ca.as_ref().unwrap()).unwrap();
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let registry = Registry::new();
            let fleet = RedisFleet::builder(tls_url(&server))
                .prefix("tls")
                .tls_root_certificates(ca.clone())
                .build()
                .expect("a fleet");
            fleet.share_registry(&registry);
            wait_for("a TLS connection", Duration::from_secs(5), || {
                fleet.is_connected()
            });
            (registry, fleet)
        })
        .collect();
    let a = replicas[0].0.get_or_register("llm", config(5)).unwrap();
    let b = replicas[1].0.get_or_register("llm", config(5)).unwrap();
    a.force_open();
    wait_for(
        "force_open to arrive over TLS",
        Duration::from_secs(1),
        || b.state() == CircuitState::Open,
    );
    assert_eq!(server.cli(&["HGET", "tls:llm", "state"]), "forced_open");

    // The system's store does not hold this CA: the handshake fails, and
    // the breaker decides on its own.
    let untrusting = RedisFleet::builder(tls_url(&server))
        .prefix("tls")
        .build()
        .unwrap();
    let alone = CircuitBreaker::new("llm", config(5)).unwrap();
    untrusting.share(&alone);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!untrusting.is_connected());
    assert_eq!(alone.state(), CircuitState::Closed, "not told of the open");
    assert_eq!(alone.call(|| Ok::<_, String>(1)), Ok(1));
}

const TLS_CHILD: &str = "BREAKER_REDIS_TLS_CHILD";

/// The child role of the next test: not a test of its own. Reports whether
/// `registry()`, set up from the environment alone, reached the server.
#[test]
fn tls_child() {
    if std::env::var(TLS_CHILD).is_err() {
        return;
    }
    let breaker = registry()
        .get_or_register("tls-from-env", CircuitBreakerConfig::default())
        .unwrap();
    let start = Instant::now();
    let connected = loop {
        let connected = BreakerStatus::of(&breaker)
            .fleet
            .is_some_and(|fleet| fleet.connected);
        if connected || start.elapsed() > Duration::from_secs(5) {
            break connected;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    println!("connected={connected}");
}

#[test]
fn rediss_from_the_environment_trusts_the_ca_ssl_cert_file_names() {
    if std::env::var(TLS_CHILD).is_ok() {
        return;
    }
    let server = Server::start_tls();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tls_child", "--nocapture", "--test-threads=1"])
        .env(TLS_CHILD, "1")
        .env("BREAKER_REDIS_URL", tls_url(&server))
        .env("SSL_CERT_FILE", server.tls_ca.as_ref().unwrap())
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("connected=true"), "{text}");
}
