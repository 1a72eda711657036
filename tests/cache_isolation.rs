//! `fallback = cached` serves a remembered answer only to the call site, and
//! the instance, that produced it (issue 9, item 1: a data leak).
//!
//! Each test registers its breaker on a `ManualClock` under a name no other
//! test uses (the registry is process-global), so the annotated functions'
//! call sites find it; `failure_threshold = 1` opens it on the first failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use breaker_runtime::{
    BreakerError, CircuitBreaker, CircuitBreakerConfig, CircuitState, ManualClock, circuit_breaker,
    registry,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum UserError {
    #[error("the user service failed")]
    Down,
    #[error(transparent)]
    Breaker(#[from] BreakerError),
}

fn register(name: &str) -> CircuitBreaker {
    let config = CircuitBreakerConfig {
        failure_threshold: 1,
        recovery_timeout: Duration::from_secs(10),
        ..CircuitBreakerConfig::default()
    };
    let breaker = CircuitBreaker::builder(name)
        .config(config)
        .clock(ManualClock::new())
        .build()
        .expect("valid config");
    registry()
        .register(breaker)
        .expect("the name is unique to this test")
}

fn is_open(result: &Result<String, UserError>) -> bool {
    matches!(result, Err(UserError::Breaker(BreakerError::Open { .. })))
}

// Two functions on one breaker, with the same argument and result types.

static USERS_DOWN: AtomicBool = AtomicBool::new(false);

#[circuit_breaker(name = "isolation-users", failure_threshold = 1, recovery_timeout = 10, fallback = cached)]
fn user_name(id: u32) -> Result<String, UserError> {
    if USERS_DOWN.load(Ordering::Relaxed) {
        return Err(UserError::Down);
    }
    Ok(format!("name-{id}"))
}

#[circuit_breaker(name = "isolation-users", failure_threshold = 1, recovery_timeout = 10, fallback = cached)]
fn user_email(id: u32) -> Result<String, UserError> {
    if USERS_DOWN.load(Ordering::Relaxed) {
        return Err(UserError::Down);
    }
    Ok(format!("email-{id}"))
}

#[test]
fn a_function_never_serves_its_siblings_cached_answer() {
    let breaker = register("isolation-users");
    assert_eq!(user_name(7), Ok("name-7".to_owned()));
    assert_eq!(user_name(8), Ok("name-8".to_owned()));
    assert_eq!(user_email(8), Ok("email-8".to_owned()));

    USERS_DOWN.store(true, Ordering::Relaxed);
    // The failing call opens the circuit; user_email never answered for 7.
    assert_eq!(
        user_email(7),
        Err(UserError::Down),
        "user_email(7) must not be served user_name(7)'s answer"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    let rejected = user_email(7);
    assert!(
        is_open(&rejected),
        "user_email(7) while open: {rejected:?}, expected the open circuit, never \"name-7\""
    );

    // Both answered for 8: each gets its own answer back.
    assert_eq!(user_name(8), Ok("name-8".to_owned()));
    assert_eq!(user_email(8), Ok("email-8".to_owned()));
    assert_eq!(user_name(7), Ok("name-7".to_owned()));
}

// One method, two instances.

static TENANTS_DOWN: AtomicBool = AtomicBool::new(false);

struct TenantClient {
    tenant: String,
}

impl TenantClient {
    #[circuit_breaker(name = "isolation-tenants", failure_threshold = 1, recovery_timeout = 10, fallback = cached, cache_key = (self.tenant.clone(), id))]
    fn profile(&self, id: u32) -> Result<String, UserError> {
        if TENANTS_DOWN.load(Ordering::Relaxed) {
            return Err(UserError::Down);
        }
        Ok(format!("{}-profile-{id}", self.tenant))
    }
}

#[test]
fn an_instance_never_serves_another_instances_cached_answer() {
    let breaker = register("isolation-tenants");
    let acme = TenantClient {
        tenant: "acme".to_owned(),
    };
    let globex = TenantClient {
        tenant: "globex".to_owned(),
    };
    assert_eq!(acme.profile(1), Ok("acme-profile-1".to_owned()));
    assert_eq!(acme.profile(2), Ok("acme-profile-2".to_owned()));
    assert_eq!(globex.profile(2), Ok("globex-profile-2".to_owned()));

    TENANTS_DOWN.store(true, Ordering::Relaxed);
    assert_eq!(
        globex.profile(1),
        Err(UserError::Down),
        "globex must not be served acme's profile 1"
    );
    assert_eq!(breaker.state(), CircuitState::Open);
    let rejected = globex.profile(1);
    assert!(
        is_open(&rejected),
        "globex.profile(1) while open: {rejected:?}, never acme's answer"
    );
    assert_eq!(acme.profile(2), Ok("acme-profile-2".to_owned()));
    assert_eq!(globex.profile(2), Ok("globex-profile-2".to_owned()));
    assert_eq!(acme.profile(1), Ok("acme-profile-1".to_owned()));
}

// Pre-population reaches one function, not its sibling.

#[circuit_breaker(name = "isolation-seeded", failure_threshold = 1, recovery_timeout = 10, fallback = cached)]
fn seeded_name(id: u32) -> Result<String, UserError> {
    let _ = id;
    Err(UserError::Down)
}

#[circuit_breaker(name = "isolation-seeded", failure_threshold = 1, recovery_timeout = 10, fallback = cached)]
fn seeded_email(id: u32) -> Result<String, UserError> {
    let _ = id;
    Err(UserError::Down)
}

#[test]
fn a_pre_populated_entry_is_served_by_its_function_only() {
    let breaker = register("isolation-seeded");
    breaker
        .site_cache::<(u32,), String>(concat!(module_path!(), "::seeded_name"))
        .add_to_cache((9,), "seeded-name-9".to_owned());
    breaker.force_open();
    assert_eq!(seeded_name(9), Ok("seeded-name-9".to_owned()));
    let sibling = seeded_email(9);
    assert!(
        matches!(
            sibling,
            Err(UserError::Breaker(BreakerError::ForcedOpen { .. }))
        ),
        "seeded_email(9): {sibling:?}, must not be seeded_name's entry"
    );
}

// An async method, and the id a method's cache is filled under.

static ASYNC_DOWN: AtomicBool = AtomicBool::new(false);

impl TenantClient {
    #[circuit_breaker(name = "isolation-async", failure_threshold = 1, recovery_timeout = 10, fallback = cached, cache_key = (self.tenant.clone(), query.to_owned()))]
    async fn search(&self, query: &str) -> Result<String, UserError> {
        if ASYNC_DOWN.load(Ordering::Relaxed) {
            return Err(UserError::Down);
        }
        Ok(format!("{}: results for {query}", self.tenant))
    }
}

#[tokio::test]
async fn an_async_method_keeps_instances_apart_and_can_be_pre_populated() {
    let breaker = register("isolation-async");
    let acme = TenantClient {
        tenant: "acme".to_owned(),
    };
    let globex = TenantClient {
        tenant: "globex".to_owned(),
    };
    assert_eq!(
        acme.search("rust").await,
        Ok("acme: results for rust".to_owned())
    );
    // A method's id is its module path and its name; the key is `cache_key`.
    breaker
        .site_cache::<(String, String), String>(concat!(module_path!(), "::search"))
        .add_to_cache(
            ("globex".to_owned(), "go".to_owned()),
            "globex: seeded".to_owned(),
        );
    ASYNC_DOWN.store(true, Ordering::Relaxed);
    assert_eq!(globex.search("rust").await, Err(UserError::Down));
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(is_open(&globex.search("rust").await), "never acme's answer");
    assert!(is_open(&acme.search("go").await), "never globex's entry");
    assert_eq!(
        acme.search("rust").await,
        Ok("acme: results for rust".to_owned())
    );
    assert_eq!(globex.search("go").await, Ok("globex: seeded".to_owned()));
}

// Two functions whose ids collide: nested functions of the same name.

static SAME_ID_DOWN: AtomicBool = AtomicBool::new(false);

#[test]
fn functions_with_the_same_id_still_keep_their_own_caches() {
    let breaker = register("isolation-same-id");
    // Both ids are `cache_isolation::lookup`: module paths skip function bodies.
    let first = {
        #[circuit_breaker(name = "isolation-same-id", failure_threshold = 1, recovery_timeout = 10, fallback = cached)]
        fn lookup(id: u32) -> Result<String, UserError> {
            if SAME_ID_DOWN.load(Ordering::Relaxed) {
                return Err(UserError::Down);
            }
            Ok(format!("first-{id}"))
        }
        lookup
    };
    let second = {
        #[circuit_breaker(name = "isolation-same-id", failure_threshold = 1, recovery_timeout = 10, fallback = cached)]
        fn lookup(id: u32) -> Result<String, UserError> {
            if SAME_ID_DOWN.load(Ordering::Relaxed) {
                return Err(UserError::Down);
            }
            Ok(format!("second-{id}"))
        }
        lookup
    };
    breaker
        .site_cache::<(u32,), String>(concat!(module_path!(), "::lookup"))
        .add_to_cache((2,), "seeded-2".to_owned());
    assert_eq!(first(1), Ok("first-1".to_owned()));
    assert_eq!(second(3), Ok("second-3".to_owned()));
    SAME_ID_DOWN.store(true, Ordering::Relaxed);
    breaker.force_open();
    assert_eq!(first(1), Ok("first-1".to_owned()), "remembered");
    assert_eq!(
        first(2),
        Ok("seeded-2".to_owned()),
        "the first called owns the id"
    );
    assert_eq!(second(3), Ok("second-3".to_owned()), "remembered");
    assert!(second(1).is_err(), "never the first one's answer");
    assert!(second(2).is_err(), "never the first one's entry");
    assert!(first(3).is_err(), "never the second one's answer");
}
