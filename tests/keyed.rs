//! `#[circuit_breaker(key = ...)]`: one declaration, a breaker per key.
//!
//! Each test uses a family name no other test uses (the registry is
//! process-global). Tests that need a clock or a bound register the family
//! by hand first, so the call site finds it; nothing sleeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use breaker_runtime::{
    BreakerError, CircuitBreakerConfig, CircuitState, Family, ManualClock, circuit_breaker,
    registry,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum LlmError {
    #[error("the model failed")]
    Down,
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

fn state(name: &str) -> CircuitState {
    registry().get(name).expect("the member exists").state()
}

static SYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[circuit_breaker(name = "keyed-sync", failure_threshold = 2, key = model)]
fn ask(model: &str, fail: bool) -> Result<String, LlmError> {
    SYNC_RUNS.fetch_add(1, Ordering::Relaxed);
    if fail {
        Err(LlmError::Down)
    } else {
        Ok(format!("{model} answers"))
    }
}

#[test]
fn an_outage_of_one_key_leaves_the_other_closed() {
    assert_eq!(ask("a", true), Err(LlmError::Down));
    assert_eq!(ask("a", true), Err(LlmError::Down));
    assert_eq!(state("keyed-sync[a]"), CircuitState::Open);

    let runs = SYNC_RUNS.load(Ordering::Relaxed);
    match ask("a", false) {
        Err(LlmError::Breaker(BreakerError::Open { name, .. })) => {
            assert_eq!(name, "keyed-sync[a]")
        }
        other => panic!("expected the open circuit of `a`, got {other:?}"),
    }
    assert_eq!(
        SYNC_RUNS.load(Ordering::Relaxed),
        runs,
        "the body did not run"
    );

    assert_eq!(ask("b", false).unwrap(), "b answers");
    assert_eq!(state("keyed-sync[b]"), CircuitState::Closed);
    let family = registry().get_family("keyed-sync").unwrap();
    assert_eq!(family.keys(), ["a", "b"]);
    assert_eq!(
        family.config().failure_threshold,
        2,
        "every key shares the attribute's config"
    );
}

#[circuit_breaker(name = "keyed-async", failure_threshold = 1, key = model)]
async fn ask_async(model: String, fail: bool) -> Result<String, LlmError> {
    tokio::task::yield_now().await;
    if fail { Err(LlmError::Down) } else { Ok(model) }
}

#[tokio::test]
async fn an_async_outage_of_one_key_leaves_the_other_closed() {
    assert_eq!(ask_async("a".into(), true).await, Err(LlmError::Down));
    assert_eq!(state("keyed-async[a]"), CircuitState::Open);
    assert!(matches!(
        ask_async("a".into(), false).await,
        Err(LlmError::Breaker(BreakerError::Open { .. }))
    ));
    assert_eq!(ask_async("b".into(), false).await.unwrap(), "b");
    assert_eq!(state("keyed-async[b]"), CircuitState::Closed);
}

#[test]
fn the_async_future_is_send() {
    fn send<T: Send>(_: T) {}
    send(ask_async("x".into(), false));
}

struct Gateway {
    host: String,
}

impl Gateway {
    #[circuit_breaker(name = "keyed-method", failure_threshold = 1, key = self.host)]
    fn get(&self, path: &str, fail: bool) -> Result<String, LlmError> {
        if fail {
            Err(LlmError::Down)
        } else {
            Ok(format!("{}{path}", self.host))
        }
    }

    #[circuit_breaker(name = "keyed-async-method", failure_threshold = 1, key = &self.host)]
    async fn fetch(&self, fail: bool) -> Result<String, LlmError> {
        if fail {
            Err(LlmError::Down)
        } else {
            Ok(self.host.clone())
        }
    }
}

#[tokio::test]
async fn methods_key_on_their_receiver() {
    let a = Gateway {
        host: "a.example".into(),
    };
    let b = Gateway {
        host: "b.example".into(),
    };
    assert_eq!(a.get("/", true), Err(LlmError::Down));
    assert!(a.get("/", false).is_err(), "open");
    assert_eq!(b.get("/x", false).unwrap(), "b.example/x");
    assert_eq!(state("keyed-method[a.example]"), CircuitState::Open);
    assert_eq!(state("keyed-method[b.example]"), CircuitState::Closed);

    assert_eq!(a.fetch(true).await, Err(LlmError::Down));
    assert_eq!(b.fetch(false).await.unwrap(), "b.example");
    assert_eq!(state("keyed-async-method[a.example]"), CircuitState::Open);
    assert_eq!(state("keyed-async-method[b.example]"), CircuitState::Closed);
}

#[circuit_breaker(name = "keyed-int", key = shard)]
fn per_shard(shard: u32) -> Result<u32, LlmError> {
    Ok(shard)
}

#[circuit_breaker(name = "keyed-owned", key = tenant)]
fn per_tenant(tenant: String) -> Result<String, LlmError> {
    // The key was read before the body, which may consume its arguments.
    Ok(tenant)
}

#[test]
fn any_display_value_is_a_key_and_names_its_breaker() {
    assert_eq!(per_shard(7).unwrap(), 7);
    assert_eq!(
        registry()
            .get("keyed-int[7]")
            .unwrap()
            .get_metrics()
            .total_calls,
        1
    );
    assert_eq!(per_tenant("acme".into()).unwrap(), "acme");
    assert_eq!(
        registry()
            .get("keyed-owned[acme]")
            .unwrap()
            .get_metrics()
            .total_calls,
        1
    );
}

fn full_fallback(model: &str) -> Result<String, LlmError> {
    Ok(format!("fallback for {model}"))
}

#[circuit_breaker(name = "keyed-full", key = model, fallback = full_fallback)]
fn ask_full(model: &str) -> Result<String, LlmError> {
    Ok(format!("{model} answers"))
}

#[circuit_breaker(name = "keyed-full-bare", key = model)]
fn ask_full_bare(model: &str) -> Result<String, LlmError> {
    Ok(format!("{model} answers"))
}

#[test]
fn a_new_key_in_a_full_family_is_refused_and_served_by_the_fallback() {
    for name in ["keyed-full", "keyed-full-bare"] {
        let family = Family::builder(name).max_keys(1).build().unwrap();
        registry().register_family(family).unwrap();
    }
    assert_eq!(ask_full("a").unwrap(), "a answers");
    registry().get("keyed-full[a]").unwrap().force_open();
    assert_eq!(ask_full("b").unwrap(), "fallback for b");
    assert_eq!(
        registry().get_family("keyed-full").unwrap().refused_keys(),
        1
    );

    assert_eq!(ask_full_bare("a").unwrap(), "a answers");
    registry().get("keyed-full-bare[a]").unwrap().force_open();
    assert_eq!(
        ask_full_bare("b"),
        Err(LlmError::Breaker(BreakerError::FamilyFull {
            family: "keyed-full-bare".into(),
            limit: 1
        }))
    );
}

#[circuit_breaker(name = "keyed-long", key = model, fallback = full_fallback)]
fn ask_long(model: &str) -> Result<String, LlmError> {
    Ok(format!("{model} answers"))
}

#[circuit_breaker(name = "keyed-long-bare", key = model)]
fn ask_long_bare(model: &str) -> Result<String, LlmError> {
    Ok(format!("{model} answers"))
}

#[test]
fn a_key_longer_than_the_limit_is_refused_and_served_by_the_fallback() {
    let long = "m".repeat(Family::MAX_KEY_BYTES + 1);
    assert_eq!(ask_long(&long).unwrap(), format!("fallback for {long}"));
    assert_eq!(
        ask_long_bare(&long),
        Err(LlmError::Breaker(BreakerError::KeyTooLong {
            family: "keyed-long-bare".into(),
            len: Family::MAX_KEY_BYTES + 1,
            max: Family::MAX_KEY_BYTES,
        }))
    );
    assert!(registry().get_family("keyed-long").unwrap().is_empty());
    assert_eq!(ask_long("m").unwrap(), "m answers");
}

static CACHED_FAIL: AtomicUsize = AtomicUsize::new(0);

#[circuit_breaker(name = "keyed-cached", failure_threshold = 1, key = model, fallback = cached)]
fn ask_cached(model: &str, question: &str) -> Result<String, LlmError> {
    if CACHED_FAIL.load(Ordering::Relaxed) == 1 {
        return Err(LlmError::Down);
    }
    Ok(format!("{model}: {question}"))
}

#[test]
fn a_cached_fallback_serves_the_open_keys_last_answer_while_the_other_key_runs() {
    assert_eq!(ask_cached("a", "q").unwrap(), "a: q");
    CACHED_FAIL.store(1, Ordering::Relaxed);
    assert_eq!(
        ask_cached("a", "q").unwrap(),
        "a: q",
        "served from the cache"
    );
    assert_eq!(state("keyed-cached[a]"), CircuitState::Open);
    CACHED_FAIL.store(0, Ordering::Relaxed);
    assert_eq!(
        ask_cached("b", "q").unwrap(),
        "b: q",
        "b's own circuit is closed"
    );
    assert_eq!(
        ask_cached("a", "q").unwrap(),
        "a: q",
        "a is open: the cache answers"
    );
    assert_eq!(
        registry()
            .get("keyed-cached[a]")
            .unwrap()
            .get_metrics()
            .rejected_calls,
        1
    );
}

#[circuit_breaker(name = "keyed-clock", failure_threshold = 1, recovery_timeout = 30, key = host)]
fn call_host(host: &str, fail: bool) -> Result<(), LlmError> {
    if fail { Err(LlmError::Down) } else { Ok(()) }
}

#[test]
fn a_family_registered_on_a_manual_clock_drives_its_members_recovery() {
    let clock = ManualClock::new();
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let family = Family::builder("keyed-clock")
        .config(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    registry().register_family(family).unwrap();

    assert!(call_host("a", true).is_err());
    assert_eq!(state("keyed-clock[a]"), CircuitState::Open);
    call_host("b", false).unwrap();
    clock.advance(Duration::from_secs(30));
    call_host("a", false).unwrap();
    assert_eq!(state("keyed-clock[a]"), CircuitState::HalfOpen);
    assert_eq!(state("keyed-clock[b]"), CircuitState::Closed);
}

#[circuit_breaker(name = "keyed-deadline", timeout_duration = "5s", key = host)]
fn with_deadline(host: String) -> Result<String, LlmError> {
    Ok(host)
}

#[test]
fn a_hard_deadline_function_takes_a_key_too() {
    assert_eq!(with_deadline("a".into()).unwrap(), "a");
    assert_eq!(
        registry()
            .get("keyed-deadline[a]")
            .unwrap()
            .get_metrics()
            .successful_calls,
        1
    );
}

#[circuit_breaker(name = "keyed-full-cached", key = model, fallback = cached)]
fn ask_full_cached(model: &str, question: &str) -> Result<String, LlmError> {
    Ok(format!("{model}: {question}"))
}

#[test]
fn a_refused_key_is_answered_from_the_cache_when_it_can_be() {
    let clock = ManualClock::new();
    let family = Family::builder("keyed-full-cached")
        .max_keys(1)
        .idle_after(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    registry().register_family(family.clone()).unwrap();
    assert_eq!(ask_full_cached("b", "q").unwrap(), "b: q");
    // `b` goes idle and is evicted; `a` takes the only slot and trips.
    family.sweep();
    clock.advance(Duration::from_secs(10));
    assert_eq!(family.sweep(), 1);
    assert_eq!(ask_full_cached("a", "q").unwrap(), "a: q");
    registry().get("keyed-full-cached[a]").unwrap().force_open();

    assert_eq!(
        ask_full_cached("b", "q").unwrap(),
        "b: q",
        "served from the cache"
    );
    assert_eq!(
        ask_full_cached("b", "other"),
        Err(LlmError::Breaker(BreakerError::FamilyFull {
            family: "keyed-full-cached".into(),
            limit: 1
        })),
        "nothing cached for this question"
    );
    assert_eq!(family.refused_keys(), 2);
}

fn owned_fallback(model: String, fail: bool) -> Result<String, LlmError> {
    Ok(format!("fallback for {model} (fail={fail})"))
}

#[circuit_breaker(
    name = "keyed-owned",
    failure_threshold = 1,
    key = model,
    fallback = owned_fallback
)]
fn ask_owned(model: String, fail: bool) -> Result<String, LlmError> {
    if fail {
        Err(LlmError::Down)
    } else {
        Ok(format!("{model} answers"))
    }
}

#[test]
fn an_owned_key_argument_picks_the_member_and_still_reaches_the_fallback() {
    assert_eq!(ask_owned("a".to_owned(), false).unwrap(), "a answers");
    assert_eq!(
        ask_owned("a".to_owned(), true).unwrap(),
        "fallback for a (fail=true)",
        "the failed call's fallback gets the owned argument"
    );
    assert_eq!(state("keyed-owned[a]"), CircuitState::Open);
    assert_eq!(
        ask_owned("a".to_owned(), false).unwrap(),
        "fallback for a (fail=false)",
        "the open member's fallback gets the argument itself"
    );
    assert_eq!(ask_owned("b".to_owned(), false).unwrap(), "b answers");
    assert_eq!(state("keyed-owned[b]"), CircuitState::Closed);
}
