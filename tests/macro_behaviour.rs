//! `#[circuit_breaker]` functions driven through their breaker's states.
//!
//! State-machine tests never sleep: each registers its breaker on a
//! `ManualClock` first (under a name no other test uses, the registry being
//! process-global), so the annotated function's call site finds it, and then
//! advances the clock. Only the timeout tests use real time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, FallbackReason, ManualClock,
    circuit_breaker, fallback_reason, registry,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum LlmError {
    #[error("service failed: {0}")]
    Service(String),
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

fn down() -> LlmError {
    LlmError::Service("503".to_owned())
}

/// Registers `name` on a fresh manual clock with `config`, which must be
/// the configuration the attribute writes.
fn register(name: &str, config: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(name)
        .config(config)
        .clock(clock.clone())
        .build()
        .expect("valid config");
    let breaker = registry()
        .register(breaker)
        .expect("the name is unique to this test");
    (breaker, clock)
}

fn config(
    failure_threshold: u32,
    recovery_secs: u64,
    success_threshold: u32,
) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        failure_threshold,
        recovery_timeout: Duration::from_secs(recovery_secs),
        success_threshold,
        ..CircuitBreakerConfig::default()
    }
}

fn is_open(result: &Result<u32, LlmError>) -> bool {
    matches!(result, Err(LlmError::Breaker(BreakerError::Open { .. })))
}

static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[circuit_breaker(
    name = "behaviour-sync",
    failure_threshold = 2,
    recovery_timeout = 10,
    success_threshold = 2
)]
fn sync_call(fail: bool) -> Result<u32, LlmError> {
    SYNC_RUNS.fetch_add(1, Ordering::Relaxed);
    if fail {
        return Err(down());
    }
    Ok(7)
}

#[test]
fn sync_fn_goes_closed_open_half_open_closed() {
    let (breaker, clock) = register("behaviour-sync", config(2, 10, 2));
    assert_eq!(sync_call(false), Ok(7));
    assert_eq!(sync_call(true), Err(down()));
    assert_eq!(sync_call(true), Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);

    let runs = SYNC_RUNS.load(Ordering::Relaxed);
    assert!(is_open(&sync_call(false)), "an open circuit rejects");
    assert_eq!(
        SYNC_RUNS.load(Ordering::Relaxed),
        runs,
        "a rejected call does not run"
    );

    clock.advance(Duration::from_secs(10));
    assert_eq!(sync_call(false), Ok(7), "the first probe goes through");
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    assert_eq!(sync_call(false), Ok(7));
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn a_failed_probe_reopens() {
    let (breaker, clock) = register("behaviour-reopen", config(1, 5, 1));
    #[circuit_breaker(
        name = "behaviour-reopen",
        failure_threshold = 1,
        recovery_timeout = 5,
        success_threshold = 1
    )]
    fn call(fail: bool) -> Result<u32, LlmError> {
        if fail { Err(down()) } else { Ok(1) }
    }
    assert_eq!(call(true), Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(5));
    assert_eq!(call(true), Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(is_open(&call(false)));
}

#[circuit_breaker(
    name = "behaviour-async",
    failure_threshold = 2,
    recovery_timeout = 10,
    success_threshold = 1
)]
async fn async_call(fail: bool) -> Result<u32, LlmError> {
    tokio::task::yield_now().await;
    if fail {
        return Err(down());
    }
    Ok(9)
}

#[tokio::test]
async fn async_fn_goes_closed_open_half_open_closed() {
    let (breaker, clock) = register("behaviour-async", config(2, 10, 1));
    assert_eq!(async_call(true).await, Err(down()));
    assert_eq!(async_call(true).await, Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(is_open(&async_call(false).await));
    clock.advance(Duration::from_secs(10));
    assert_eq!(async_call(false).await, Ok(9));
    assert_eq!(breaker.state(), CircuitState::Closed);
}

fn fallback_answer(prompt: &str, _fail: bool) -> Result<String, LlmError> {
    let reason = fallback_reason().expect("called as a fallback");
    Ok(format!(
        "fallback for {prompt}: {}",
        if reason.is_rejection() {
            "rejected"
        } else {
            "failed"
        }
    ))
}

#[circuit_breaker(name = "behaviour-fallback", failure_threshold = 1, fallback = fallback_answer)]
fn with_fallback(prompt: &str, fail: bool) -> Result<String, LlmError> {
    if fail {
        Err(down())
    } else {
        Ok(format!("live {prompt}"))
    }
}

#[test]
fn a_fallback_function_answers_and_learns_why() {
    let (breaker, _clock) = register("behaviour-fallback", config(1, 60, 3));
    assert_eq!(with_fallback("a", false), Ok("live a".to_owned()));
    assert_eq!(
        with_fallback("b", true),
        Ok("fallback for b: failed".to_owned())
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(
        with_fallback("c", false),
        Ok("fallback for c: rejected".to_owned())
    );
    assert_eq!(breaker.get_metrics().fallback_calls, 2);
}

async fn async_fallback_answer(prompt: String) -> Result<String, LlmError> {
    tokio::task::yield_now().await;
    Ok(format!(
        "async fallback for {prompt} ({})",
        fallback_reason().unwrap()
    ))
}

#[circuit_breaker(name = "behaviour-async-fallback", failure_threshold = 1, fallback = async_fallback_answer)]
async fn async_with_fallback(prompt: String) -> Result<String, LlmError> {
    // Consumes its argument: the fallback gets its own copy.
    let prompt = prompt;
    Err(LlmError::Service(prompt))
}

#[tokio::test]
async fn an_async_fallback_function_answers() {
    let (_breaker, _clock) = register("behaviour-async-fallback", config(1, 60, 3));
    let answer = async_with_fallback("q".to_owned()).await.unwrap();
    assert_eq!(answer, "async fallback for q (call failed (error))");
    let answer = async_with_fallback("r".to_owned()).await.unwrap();
    assert!(
        answer.starts_with("async fallback for r (circuit open"),
        "{answer}"
    );
}

static CACHED_FAILS: AtomicBool = AtomicBool::new(false);

#[circuit_breaker(name = "behaviour-cached", failure_threshold = 1, recovery_timeout = 10, success_threshold = 1, fallback = cached)]
fn cached_call(prompt: &str, attempt: u32) -> Result<String, LlmError> {
    if CACHED_FAILS.load(Ordering::Relaxed) {
        Err(down())
    } else {
        Ok(format!("answer to {prompt} #{attempt}"))
    }
}

#[test]
fn the_cached_fallback_serves_the_last_good_result_or_a_seeded_one() {
    let (breaker, _clock) = register("behaviour-cached", config(1, 10, 1));
    assert_eq!(cached_call("x", 1), Ok("answer to x #1".to_owned()));
    CACHED_FAILS.store(true, Ordering::Relaxed);
    assert_eq!(
        cached_call("x", 1),
        Ok("answer to x #1".to_owned()),
        "the last good result"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(
        cached_call("x", 1),
        Ok("answer to x #1".to_owned()),
        "served while open"
    );
    assert!(
        matches!(
            cached_call("x", 2),
            Err(LlmError::Breaker(BreakerError::Open { .. }))
        ),
        "nothing cached for other arguments"
    );

    // Pre-populated: the site id is the function's path, the key the tuple
    // of owned arguments.
    registry()
        .get("behaviour-cached")
        .unwrap()
        .site_cache::<(String, u32), String>(concat!(module_path!(), "::cached_call"))
        .add_to_cache(("y".to_owned(), 7), "seeded".to_owned());
    assert_eq!(cached_call("y", 7), Ok("seeded".to_owned()));
}

static KEYED_FAILS: AtomicBool = AtomicBool::new(false);

#[circuit_breaker(name = "behaviour-cache-key", failure_threshold = 1, recovery_timeout = 10, success_threshold = 1, fallback = cached, cache_key = prompt.trim().to_lowercase())]
fn keyed_call(prompt: &str, attempt: u32) -> Result<String, LlmError> {
    if KEYED_FAILS.load(Ordering::Relaxed) {
        Err(down())
    } else {
        Ok(format!("answer to {prompt} #{attempt}"))
    }
}

#[test]
fn cache_key_replaces_the_arguments_as_the_key() {
    let (breaker, _clock) = register("behaviour-cache-key", config(1, 10, 1));
    assert_eq!(
        keyed_call("Hello ", 1),
        Ok("answer to Hello  #1".to_owned())
    );
    KEYED_FAILS.store(true, Ordering::Relaxed);
    assert_eq!(
        keyed_call("hello", 2),
        Ok("answer to Hello  #1".to_owned()),
        "same key: the attempt is not part of it"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(matches!(
        keyed_call("bye", 1),
        Err(LlmError::Breaker(BreakerError::Open { .. }))
    ));
    breaker
        .site_cache::<String, String>(concat!(module_path!(), "::keyed_call"))
        .add_to_cache("bye".to_owned(), "seeded".to_owned());
    assert_eq!(keyed_call(" BYE", 9), Ok("seeded".to_owned()));
}

fn length_score(answer: &Answer) -> f64 {
    (answer.0.len() as f64 / 10.0).min(1.0)
}

#[derive(Debug, Clone, PartialEq)]
struct Answer(String);

#[circuit_breaker(name = "behaviour-quality", failure_threshold = 2, quality_threshold = 0.5, quality = length_score)]
fn judged(text: &str) -> Result<Answer, LlmError> {
    Ok(Answer(text.to_owned()))
}

#[test]
fn a_low_quality_result_is_a_failure() {
    let quality = CircuitBreakerConfig {
        failure_threshold: 2,
        quality_threshold: 0.5,
        ..CircuitBreakerConfig::default()
    };
    let (breaker, _clock) = register("behaviour-quality", quality);
    assert_eq!(judged("long enough"), Ok(Answer("long enough".to_owned())));
    assert!(matches!(
        judged("meh"),
        Err(LlmError::Breaker(BreakerError::LowQuality { .. }))
    ));
    assert_eq!(breaker.get_metrics().failures_by_type.quality_threshold, 1);
    let _ = judged("bad");
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[circuit_breaker(name = "behaviour-async-timeout", timeout_duration = 0.1)]
async fn hangs_async() -> Result<u32, LlmError> {
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(1)
}

#[tokio::test]
async fn a_hanging_async_call_is_cancelled_at_its_deadline() {
    let start = Instant::now();
    let result = hangs_async().await;
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(LlmError::Breaker(BreakerError::Timeout { .. }))),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[circuit_breaker(name = "behaviour-sync-timeout", timeout_duration = "100ms")]
fn hangs_sync(for_secs: u64) -> Result<u32, LlmError> {
    std::thread::sleep(Duration::from_secs(for_secs));
    Ok(1)
}

#[test]
fn a_hanging_sync_call_with_a_deadline_releases_its_caller() {
    let start = Instant::now();
    let result = hangs_sync(3);
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(LlmError::Breaker(BreakerError::Timeout { .. }))),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
    let metrics = registry()
        .get("behaviour-sync-timeout")
        .unwrap()
        .get_metrics();
    assert_eq!(metrics.failures_by_type.timeout, 1);
}

#[circuit_breaker(name = "behaviour-rate", rate_limit_per_minute = 2)]
fn limited() -> Result<u32, LlmError> {
    Ok(3)
}

#[test]
fn the_local_rate_limit_refuses_calls_over_it() {
    let limit = CircuitBreakerConfig {
        rate_limit_per_minute: Some(2),
        ..CircuitBreakerConfig::default()
    };
    let (breaker, clock) = register("behaviour-rate", limit);
    assert_eq!(limited(), Ok(3));
    assert_eq!(limited(), Ok(3));
    assert!(matches!(
        limited(),
        Err(LlmError::Breaker(BreakerError::LocalRateLimit { .. }))
    ));
    assert_eq!(breaker.get_metrics().local_rate_limited_calls, 1);
    clock.advance(Duration::from_secs(30));
    assert_eq!(limited(), Ok(3), "a permit comes back with time");
}

#[circuit_breaker(name = "behaviour-shared", failure_threshold = 2)]
fn shared_one(fail: bool) -> Result<u32, LlmError> {
    if fail { Err(down()) } else { Ok(1) }
}

#[circuit_breaker(name = "behaviour-shared", failure_threshold = 2)]
async fn shared_two() -> Result<u32, LlmError> {
    Ok(2)
}

#[tokio::test]
async fn one_name_is_one_breaker_for_every_function() {
    let (breaker, _clock) = register("behaviour-shared", config(2, 60, 3));
    assert_eq!(shared_two().await, Ok(2));
    let _ = shared_one(true);
    let _ = shared_one(true);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(
        is_open(&shared_two().await),
        "the other function's failures opened it"
    );
    assert_eq!(breaker.get_metrics().total_calls, 4);
}

struct Client {
    calls: AtomicUsize,
    healthy: bool,
}

impl Client {
    fn offline(&self, prompt: &str) -> Result<String, LlmError> {
        Ok(format!(
            "offline answer to {prompt} after {} calls",
            self.calls.load(Ordering::Relaxed)
        ))
    }

    #[circuit_breaker(name = "behaviour-method", failure_threshold = 1, fallback = Self::offline)]
    fn ask(&self, prompt: &str) -> Result<String, LlmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.healthy {
            Ok(prompt.to_uppercase())
        } else {
            Err(down())
        }
    }

    #[circuit_breaker(name = "behaviour-method-async", failure_threshold = 1)]
    async fn ask_async(&self, prompt: &str) -> Result<String, LlmError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.healthy {
            Ok(prompt.to_uppercase())
        } else {
            Err(down())
        }
    }
}

#[tokio::test]
async fn methods_with_self_receivers() {
    let (breaker, _clock) = register("behaviour-method", config(1, 60, 3));
    let sick = Client {
        calls: AtomicUsize::new(0),
        healthy: false,
    };
    assert_eq!(
        sick.ask("hi"),
        Ok("offline answer to hi after 1 calls".to_owned())
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(
        sick.ask("hi"),
        Ok("offline answer to hi after 1 calls".to_owned())
    );

    let (breaker, _clock) = register("behaviour-method-async", config(1, 60, 3));
    let well = Client {
        calls: AtomicUsize::new(0),
        healthy: true,
    };
    assert_eq!(well.ask_async("hi").await, Ok("HI".to_owned()));
    assert_eq!(sick.ask_async("hi").await, Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(matches!(
        well.ask_async("hi").await,
        Err(LlmError::Breaker(BreakerError::Open { .. }))
    ));
}

#[circuit_breaker(name = "behaviour-generic", failure_threshold = 2)]
fn describe<T: std::fmt::Debug>(value: T, fail: bool) -> Result<String, LlmError> {
    if fail {
        Err(down())
    } else {
        Ok(format!("{value:?}"))
    }
}

#[test]
fn generic_functions_share_their_breaker_across_instantiations() {
    let (breaker, _clock) = register("behaviour-generic", config(2, 60, 3));
    assert_eq!(describe(1, false), Ok("1".to_owned()));
    assert_eq!(describe("s", false), Ok("\"s\"".to_owned()));
    let _ = describe(1u8, true);
    let _ = describe(vec![1], true);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(matches!(
        describe((), false),
        Err(LlmError::Breaker(BreakerError::Open { .. }))
    ));
}

fn zero_tokens(_prompt: &str) -> usize {
    0
}

#[circuit_breaker(name = "behaviour-plain", failure_threshold = 1, fallback = zero_tokens)]
fn count_tokens(prompt: &str) -> usize {
    prompt.split_whitespace().count()
}

#[test]
fn a_plain_function_falls_back_while_open() {
    let (breaker, _clock) = register("behaviour-plain", config(1, 60, 3));
    assert_eq!(count_tokens("a b c"), 3);
    breaker.force_open();
    assert_eq!(count_tokens("a b c"), 0);
    assert_eq!(breaker.get_metrics().fallback_calls, 1);
    let reason = FallbackReason::ForcedOpen;
    assert!(reason.is_rejection());
}

static BULKHEAD_RELEASE: AtomicBool = AtomicBool::new(false);

#[circuit_breaker(
    name = "behaviour-new-keys",
    timeout_duration = "50ms",
    max_deadline_workers = 1,
    max_retry_after = "90s"
)]
fn held_until_released(hang: bool) -> Result<u32, LlmError> {
    while hang && !BULKHEAD_RELEASE.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(7)
}

#[test]
fn max_deadline_workers_and_max_retry_after_reach_the_breaker() {
    assert_eq!(held_until_released(false), Ok(7));
    let breaker = registry()
        .get("behaviour-new-keys")
        .expect("registered by the call");
    let config = breaker.config();
    assert_eq!(config.max_deadline_workers, 1);
    assert_eq!(config.max_retry_after, Duration::from_secs(90));

    // The bound is in force: one hung call holds the only worker slot.
    let hung = held_until_released(true);
    let refused = held_until_released(false);
    BULKHEAD_RELEASE.store(true, Ordering::Relaxed);
    assert!(
        matches!(hung, Err(LlmError::Breaker(BreakerError::Timeout { .. }))),
        "{hung:?}"
    );
    assert!(
        matches!(
            refused,
            Err(LlmError::Breaker(BreakerError::BulkheadFull {
                limit: 1,
                ..
            }))
        ),
        "{refused:?}"
    );
}

/// A panic payload no one would mistake for a message.
#[derive(Debug, PartialEq)]
struct FallbackPanic(u32);

/// Runs `f`, expecting a panic with a [`FallbackPanic`]; its value.
fn fallback_panic_of(f: impl FnOnce()) -> u32 {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the fallback's panic goes on");
    payload
        .downcast::<FallbackPanic>()
        .map(|payload| payload.0)
        .unwrap_or_else(|other| panic!("the fallback's payload was replaced: {other:?}"))
}

fn exploding_answer(_prompt: &str) -> Result<String, LlmError> {
    std::panic::panic_any(FallbackPanic(1))
}

#[circuit_breaker(name = "behaviour-fallback-panics", failure_threshold = 1, fallback = exploding_answer)]
fn with_exploding_fallback(prompt: &str) -> Result<String, LlmError> {
    Ok(prompt.to_owned())
}

fn exploding_tokens(_prompt: &str) -> usize {
    std::panic::panic_any(FallbackPanic(2))
}

#[circuit_breaker(name = "behaviour-plain-fallback-panics", failure_threshold = 1, fallback = exploding_tokens)]
fn count_tokens_or_explode(prompt: &str) -> usize {
    prompt.len()
}

async fn exploding_async_answer(_prompt: String) -> Result<String, LlmError> {
    tokio::task::yield_now().await;
    std::panic::panic_any(FallbackPanic(3))
}

#[circuit_breaker(name = "behaviour-async-fallback-panics", failure_threshold = 1, fallback = exploding_async_answer)]
async fn async_with_exploding_fallback(prompt: String) -> Result<String, LlmError> {
    Ok(prompt)
}

#[test]
fn a_panicking_fallback_function_panics_with_its_own_payload() {
    let (breaker, _clock) = register("behaviour-fallback-panics", config(1, 60, 3));
    breaker.force_open();
    assert_eq!(fallback_panic_of(|| drop(with_exploding_fallback("a"))), 1);
    assert_eq!(breaker.get_metrics().fallback_failures, 1);

    let (breaker, _clock) = register("behaviour-plain-fallback-panics", config(1, 60, 3));
    breaker.force_open();
    assert_eq!(fallback_panic_of(|| _ = count_tokens_or_explode("a")), 2);

    let (breaker, _clock) = register("behaviour-async-fallback-panics", config(1, 60, 3));
    breaker.force_open();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let seen = fallback_panic_of(|| {
        drop(runtime.block_on(async_with_exploding_fallback("a".to_owned())));
    });
    assert_eq!(seen, 3);
}

fn failing_answer(_prompt: &str) -> Result<String, LlmError> {
    Err(LlmError::Service("cache offline".to_owned()))
}

#[circuit_breaker(name = "behaviour-fallback-fails", failure_threshold = 1, fallback = failing_answer)]
fn with_failing_fallback(prompt: &str) -> Result<String, LlmError> {
    Err(LlmError::Service(format!("{prompt} down")))
}

#[test]
fn a_fallback_function_error_is_the_function_error() {
    let (breaker, _clock) = register("behaviour-fallback-fails", config(1, 60, 3));
    assert_eq!(
        with_failing_fallback("a"),
        Err(LlmError::Service("cache offline".to_owned()))
    );
    assert_eq!(breaker.get_metrics().fallback_failures, 1);
}

/// A user's alias: the attribute sees `Reply`, the compiler sees a `Result`.
type Reply<T> = Result<T, LlmError>;

mod redis {
    /// An alias named like a client library's (`redis::RedisResult<T>`).
    pub type RedisResult<T> = Result<T, super::LlmError>;
}

#[circuit_breaker(name = "behaviour-alias-sync", failure_threshold = 2)]
fn alias_sync(fail: bool) -> Reply<u32> {
    if fail { Err(down()) } else { Ok(3) }
}

#[test]
fn an_aliased_result_err_counts_as_a_failure_and_trips_the_circuit() {
    let (breaker, _clock) = register("behaviour-alias-sync", config(2, 60, 3));
    assert_eq!(alias_sync(false), Ok(3));
    assert_eq!(alias_sync(true), Err(down()));
    assert_eq!(alias_sync(true), Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(is_open(&alias_sync(false)), "the breaker's error, as `E`");
}

async fn offline_reply(_fail: bool) -> redis::RedisResult<u32> {
    Ok(0)
}

#[circuit_breaker(name = "behaviour-alias-async", failure_threshold = 2, fallback = offline_reply)]
async fn alias_async(fail: bool) -> redis::RedisResult<u32> {
    tokio::task::yield_now().await;
    if fail { Err(down()) } else { Ok(4) }
}

#[tokio::test]
async fn an_aliased_async_result_err_counts_as_a_failure_and_trips_the_circuit() {
    let (breaker, _clock) = register("behaviour-alias-async", config(2, 60, 3));
    assert_eq!(alias_async(false).await, Ok(4));
    assert_eq!(
        alias_async(true).await,
        Ok(0),
        "the fallback answers a failure"
    );
    assert_eq!(alias_async(true).await, Ok(0));
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(breaker.get_metrics().failed_calls, 2);
    assert_eq!(alias_async(false).await, Ok(0), "rejected, then served");
}

static DISK_FAILS: AtomicBool = AtomicBool::new(false);

#[circuit_breaker(name = "behaviour-io", failure_threshold = 2, map_err = std::io::Error::other)]
fn read_disk(block: u32) -> std::io::Result<u32> {
    if DISK_FAILS.load(Ordering::Relaxed) {
        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
    }
    Ok(block)
}

#[circuit_breaker(name = "behaviour-io-async", failure_threshold = 1, map_err = std::io::Error::other)]
async fn read_disk_async(fail: bool) -> std::io::Result<u32> {
    tokio::task::yield_now().await;
    if fail {
        Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
    } else {
        Ok(1)
    }
}

fn breaker_error_in(error: &std::io::Error) -> Option<&BreakerError> {
    error.get_ref()?.downcast_ref::<BreakerError>()
}

#[test]
fn map_err_turns_the_breakers_errors_into_an_io_error() {
    let (breaker, _clock) = register("behaviour-io", config(2, 60, 3));
    assert_eq!(read_disk(5).unwrap(), 5);
    DISK_FAILS.store(true, Ordering::Relaxed);
    for _ in 0..2 {
        let error = read_disk(5).unwrap_err();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::TimedOut,
            "the call's own error"
        );
        assert!(breaker_error_in(&error).is_none());
    }
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "an io::Error is a failure"
    );
    DISK_FAILS.store(false, Ordering::Relaxed);
    let error = read_disk(5).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::Other);
    assert!(
        matches!(breaker_error_in(&error), Some(BreakerError::Open { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn map_err_serves_async_functions_too() {
    let (breaker, _clock) = register("behaviour-io-async", config(1, 60, 3));
    let error = read_disk_async(true).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(breaker.state(), CircuitState::Open);
    let error = read_disk_async(false).await.unwrap_err();
    assert!(matches!(
        breaker_error_in(&error),
        Some(BreakerError::Open { .. })
    ));
}

// Functions that return a future (not `async fn`): the breaker guards the
// future's work, admitted when the future is first polled.

fn offline_future(_fail: bool) -> futures::future::BoxFuture<'static, Result<u32, LlmError>> {
    Box::pin(async { Ok(0) })
}

#[circuit_breaker(
    name = "behaviour-box-future",
    failure_threshold = 2,
    recovery_timeout = 10,
    success_threshold = 1,
    fallback = offline_future
)]
fn box_future_call(fail: bool) -> futures::future::BoxFuture<'static, Result<u32, LlmError>> {
    Box::pin(async move {
        tokio::task::yield_now().await;
        if fail { Err(down()) } else { Ok(9) }
    })
}

#[tokio::test]
async fn a_failing_returned_box_future_trips_the_circuit() {
    let (breaker, clock) = register("behaviour-box-future", config(2, 10, 1));
    assert_eq!(box_future_call(false).await, Ok(9));
    assert_eq!(
        box_future_call(true).await,
        Ok(0),
        "the fallback answers the future's failure"
    );
    assert_eq!(box_future_call(true).await, Ok(0));
    assert_eq!(breaker.get_metrics().failed_calls, 2);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(box_future_call(false).await, Ok(0), "rejected, then served");
    clock.advance(Duration::from_secs(10));
    assert_eq!(box_future_call(false).await, Ok(9), "a probe");
    assert_eq!(breaker.state(), CircuitState::Closed);
}

static PINNED_POLLS: AtomicUsize = AtomicUsize::new(0);

#[circuit_breaker(
    name = "behaviour-pin-box-future",
    failure_threshold = 1,
    recovery_timeout = 10,
    success_threshold = 1
)]
fn pinned_call<'a>(
    prompt: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, LlmError>> + Send + 'a>> {
    Box::pin(async move {
        PINNED_POLLS.fetch_add(1, Ordering::Relaxed);
        if prompt == "fail" {
            Err(down())
        } else {
            Ok(prompt.len() as u32)
        }
    })
}

#[tokio::test]
async fn a_returned_future_is_admitted_when_first_polled() {
    let (breaker, clock) = register("behaviour-pin-box-future", config(1, 10, 1));
    let built_while_closed = pinned_call("early");
    let never_polled = pinned_call("dropped");
    drop(never_polled);
    assert_eq!(
        breaker.get_metrics().total_calls,
        0,
        "building a future is not a call"
    );
    assert_eq!(pinned_call("fail").await, Err(down()));
    assert_eq!(breaker.state(), CircuitState::Open);
    let polls = PINNED_POLLS.load(Ordering::Relaxed);
    assert!(
        is_open(&built_while_closed.await),
        "polled after the circuit opened: rejected"
    );
    assert_eq!(PINNED_POLLS.load(Ordering::Relaxed), polls, "and not run");
    clock.advance(Duration::from_secs(10));
    assert_eq!(pinned_call("late").await, Ok(4));
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().total_calls, 3);
}

#[cfg(any())]
#[circuit_breaker(name = "behaviour-box-future-timeout", timeout_duration = 0.1)]
fn hangs_boxed() -> futures::future::BoxFuture<'static, Result<u32, LlmError>> {
    Box::pin(async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(1)
    })
}

#[circuit_breaker(name = "behaviour-box-future-timeout", timeout_duration = 0.1)]
fn hangs_boxed() -> futures::future::BoxFuture<'static, Result<u32, LlmError>> {
    Box::pin(async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(1)
    })
}

#[tokio::test]
async fn a_returned_future_is_cancelled_at_its_deadline() {
    let future = hangs_boxed();
    // The deadline runs from the first poll, not from the building.
    std::thread::sleep(Duration::from_millis(150));
    let start = Instant::now();
    let result = future.await;
    let elapsed = start.elapsed();
    assert!(
        matches!(result, Err(LlmError::Breaker(BreakerError::Timeout { .. }))),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(95), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
}

#[circuit_breaker(
    name = "behaviour-late-clock",
    failure_threshold = 1,
    recovery_timeout = 30,
    success_threshold = 1,
    fallback = cached
)]
fn late_clock_call(fail: bool) -> Result<u32, LlmError> {
    if fail { Err(down()) } else { Ok(1) }
}

#[test]
fn a_manual_clock_installed_after_the_first_call_drives_recovery() {
    assert_eq!(
        late_clock_call(false),
        Ok(1),
        "resolved on the system clock"
    );
    let clock = ManualClock::new();
    let breaker = registry()
        .replace_clock("behaviour-late-clock", clock.clone())
        .expect("registered by the first call");
    assert_eq!(breaker.get_metrics().total_calls, 0, "a fresh breaker");
    assert_eq!(late_clock_call(true), Err(down()));
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "the site calls through the new breaker"
    );
    assert!(
        is_open(&late_clock_call(false)),
        "the new breaker's cache is its own: nothing cached there yet"
    );
    clock.advance(Duration::from_secs(29));
    assert!(is_open(&late_clock_call(false)));
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        late_clock_call(false),
        Ok(1),
        "the probe, on the manual clock"
    );
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.get_metrics().total_calls, 4);
}

/// The one value the function's attribute and this test share.
fn shared_config() -> CircuitBreakerConfig {
    config(2, 10, 1)
}

#[circuit_breaker(name = "behaviour-config-expr", config = shared_config())]
fn configured(fail: bool) -> Result<u32, LlmError> {
    if fail { Err(down()) } else { Ok(5) }
}

#[test]
fn config_expr_is_the_breakers_configuration() {
    assert_eq!(configured(false), Ok(5));
    let registered = registry().get("behaviour-config-expr").unwrap();
    assert_eq!(registered.config(), &shared_config());
    let clock = ManualClock::new();
    let breaker = registry()
        .replace_clock("behaviour-config-expr", clock.clone())
        .unwrap();
    let _ = configured(true);
    assert_eq!(breaker.state(), CircuitState::Closed, "threshold 2");
    let _ = configured(true);
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(shared_config().recovery_timeout);
    assert_eq!(configured(false), Ok(5));
    assert_eq!(breaker.state(), CircuitState::Closed, "one success closes");
}

static INVALID_RUNS: AtomicUsize = AtomicUsize::new(0);

#[circuit_breaker(
    name = "behaviour-config-invalid",
    config = CircuitBreakerConfig { failure_threshold: 0, ..CircuitBreakerConfig::default() }
)]
fn badly_configured() -> Result<u32, LlmError> {
    INVALID_RUNS.fetch_add(1, Ordering::Relaxed);
    Ok(1)
}

#[test]
fn an_invalid_config_expr_fails_every_call_with_its_field() {
    for _ in 0..2 {
        let result = badly_configured();
        assert!(
            matches!(
                &result,
                Err(LlmError::Breaker(BreakerError::InvalidConfig { name, source }))
                    if name == "behaviour-config-invalid"
                        && source.to_string().contains("failure_threshold")
            ),
            "{result:?}"
        );
    }
    assert_eq!(
        INVALID_RUNS.load(Ordering::Relaxed),
        0,
        "the body never runs"
    );
    assert!(registry().get("behaviour-config-invalid").is_none());
}

#[circuit_breaker(name = "behaviour-conflict", failure_threshold = 2)]
fn conflict_first() -> Result<u32, LlmError> {
    Ok(1)
}

#[circuit_breaker(name = "behaviour-conflict", failure_threshold = 4)]
fn conflict_second() -> Result<u32, LlmError> {
    Ok(2)
}

#[test]
fn the_first_call_site_to_run_decides_a_shared_names_config_and_the_other_is_reported() {
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&events);
    let subscription = breaker_runtime::subscribe(move |event| {
        if event.breaker == "behaviour-conflict" {
            seen.lock().unwrap().push(event.kind.clone());
        }
    });
    assert_eq!(conflict_second(), Ok(2), "this site runs first");
    assert_eq!(conflict_first(), Ok(1));
    subscription.unsubscribe();
    let breaker = registry().get("behaviour-conflict").unwrap();
    assert_eq!(breaker.config().failure_threshold, 4, "the first to run");
    let events = events.lock().unwrap();
    assert!(
        matches!(&events[..], [breaker_runtime::EventKind::ConfigConflict { requested }]
            if requested.contains("failure_threshold: 2")),
        "{events:?}"
    );
    let status = registry().status();
    let entry = status
        .breakers
        .iter()
        .find(|b| &*b.name == "behaviour-conflict")
        .unwrap();
    assert_eq!(entry.config_conflicts.len(), 1);
    assert_eq!(entry.config_conflicts[0].failure_threshold, 2);
}

static CLONES: AtomicUsize = AtomicUsize::new(0);

/// An owned argument that counts its clones.
#[derive(Debug)]
struct Counted(u32);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::Relaxed);
        Self(self.0)
    }
}

fn counted_answer(counted: Counted, mut label: String) -> Result<u32, LlmError> {
    label.push('!');
    Ok(counted.0 + 100)
}

#[circuit_breaker(name = "behaviour-lazy-args", failure_threshold = 1, fallback = counted_answer)]
fn consumes(counted: Counted, mut label: String) -> Result<u32, LlmError> {
    label.push('?');
    let Counted(n) = counted; // the body consumes its argument
    if n == 0 { Err(down()) } else { Ok(n) }
}

fn clones_of(call: impl FnOnce() -> Result<u32, LlmError>) -> (Result<u32, LlmError>, usize) {
    let before = CLONES.load(Ordering::Relaxed);
    let result = call();
    (result, CLONES.load(Ordering::Relaxed) - before)
}

#[test]
fn a_fallback_clones_owned_arguments_only_for_calls_that_run() {
    let (breaker, _clock) = register("behaviour-lazy-args", config(1, 60, 1));
    assert_eq!(
        clones_of(|| consumes(Counted(5), "a".into())),
        (Ok(5), 1),
        "a call that runs copies its arguments once, for a fallback that may answer its failure"
    );
    assert_eq!(
        clones_of(|| consumes(Counted(0), "b".into())),
        (Ok(100), 1),
        "a failed call's fallback gets that copy, not another"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(
        clones_of(|| consumes(Counted(7), "c".into())),
        (Ok(107), 0),
        "a rejected call hands its arguments to the fallback as they are"
    );
}

#[circuit_breaker(
    name = "behaviour-future-quality",
    failure_threshold = 1,
    quality_threshold = 0.5,
    quality = |answer: &String| if answer.len() > 3 { 1.0 } else { 0.0 }
)]
fn judged_future(text: &str) -> impl std::future::Future<Output = Result<String, LlmError>> + '_ {
    async move {
        tokio::task::yield_now().await;
        Ok(text.to_owned())
    }
}

#[tokio::test]
async fn quality_judges_a_returned_futures_output() {
    let (breaker, _clock) = register(
        "behaviour-future-quality",
        CircuitBreakerConfig {
            failure_threshold: 1,
            quality_threshold: 0.5,
            ..CircuitBreakerConfig::default()
        },
    );
    assert_eq!(
        judged_future("long enough").await,
        Ok("long enough".to_owned())
    );
    assert!(matches!(
        judged_future("no").await,
        Err(LlmError::Breaker(BreakerError::LowQuality { .. }))
    ));
    assert_eq!(breaker.get_metrics().failures_by_type.quality_threshold, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}
