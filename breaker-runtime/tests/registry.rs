//! The process-global registry: one breaker per name, visible conflicts,
//! and a status that prints as a table and serialises to JSON.

use std::sync::{Arc, Mutex};

use breaker_runtime::{
    CircuitBreaker, CircuitBreakerConfig, ConfigError, DetailedState, EventKind, ManualClock,
    Registry, registry, subscribe,
};

#[test]
fn one_name_is_one_breaker() {
    let first = registry()
        .get_or_register("registry-shared", CircuitBreakerConfig::default())
        .unwrap();
    let second = registry()
        .get_or_register("registry-shared", CircuitBreakerConfig::default())
        .unwrap();
    assert!(first.ptr_eq(&second));
    let _ = first.call(|| Err::<(), _>("down"));
    assert_eq!(
        second.get_metrics().failed_calls,
        1,
        "both handles see one breaker"
    );
    assert!(registry().get("registry-shared").unwrap().ptr_eq(&first));
    assert!(registry().get("registry-missing").is_none());
}

#[test]
fn a_second_config_for_a_name_is_reported_not_merged() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let subscription = subscribe(move |event| {
        if event.breaker == "registry-conflict" {
            sink.lock().unwrap().push(event.kind.clone());
        }
    });
    let kept = registry()
        .get_or_register("registry-conflict", CircuitBreakerConfig::default())
        .unwrap();
    let other = CircuitBreakerConfig::builder()
        .failure_threshold(9)
        .build()
        .unwrap();
    let got = registry()
        .get_or_register("registry-conflict", other.clone())
        .unwrap();
    // Asking again with the same conflicting config is not a new conflict.
    registry()
        .get_or_register("registry-conflict", other.clone())
        .unwrap();
    subscription.unsubscribe();

    assert!(got.ptr_eq(&kept));
    assert_eq!(
        got.config().failure_threshold,
        5,
        "the first config stays in force"
    );
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], EventKind::ConfigConflict { .. }));

    let status = registry().status();
    let entry = status
        .breakers
        .iter()
        .find(|b| &*b.name == "registry-conflict")
        .unwrap();
    assert_eq!(entry.config_conflicts, vec![other]);
    assert!(
        status
            .to_string()
            .contains("CONFIG CONFLICT (1 other config)")
    );
}

#[test]
fn an_invalid_config_is_refused_with_its_field() {
    let config = CircuitBreakerConfig {
        half_open_max_calls: 0,
        ..Default::default()
    };
    let err = registry()
        .get_or_register("registry-invalid", config)
        .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::OutOfRange {
            field: "half_open_max_calls",
            ..
        }
    ));
    assert!(
        registry().get("registry-invalid").is_none(),
        "nothing half-registered"
    );
}

#[test]
fn a_breaker_built_by_hand_can_be_registered_once() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("registry-manual")
        .clock(clock)
        .build()
        .unwrap();
    let registered = registry().register(breaker.clone()).unwrap();
    assert!(registered.ptr_eq(&breaker));
    let again = CircuitBreaker::builder("registry-manual").build().unwrap();
    let existing = registry().register(again).unwrap_err();
    assert!(existing.ptr_eq(&breaker), "the first registration stays");
}

#[test]
fn status_prints_an_aligned_table_and_serialises_to_json() {
    let registry = Registry::new();
    let llm = registry
        .get_or_register("llm", CircuitBreakerConfig::default())
        .unwrap();
    let api = registry
        .get_or_register("external_api", CircuitBreakerConfig::default())
        .unwrap();
    llm.call(|| Ok::<_, ()>(1)).unwrap();
    let _ = llm.call(|| Err::<(), _>(()));
    api.force_open();

    let status = registry.status();
    assert_eq!(
        status.breakers.iter().map(|b| &*b.name).collect::<Vec<_>>(),
        ["external_api", "llm"],
        "sorted by name"
    );
    assert_eq!(status.breakers[0].state, DetailedState::ForcedOpen);

    let table = status.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("BREAKER"));
    assert!(lines[1].starts_with("external_api  forced_open"), "{table}");
    assert!(lines[2].starts_with("llm           closed"), "{table}");
    // Columns line up: every row has its STATE column where the header has it.
    let state_column = lines[0].find("STATE").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|line| line[state_column - 2..].starts_with("  "))
    );
    assert!(lines[2].contains("1 consecutive failure;"), "{table}");

    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["breakers"][1]["name"], "llm");
    assert_eq!(json["breakers"][1]["metrics"]["total_calls"], 2);
    assert_eq!(json["breakers"][1]["config"]["recovery_timeout"], 60.0);
    assert_eq!(json["breakers"][0]["state"], "forced_open");
}

#[test]
fn an_empty_registry_says_so() {
    assert!(
        Registry::new()
            .status()
            .to_string()
            .contains("(no circuit breakers registered)")
    );
}

#[test]
fn status_of_ten_thousand_breakers_is_complete() {
    let registry = Registry::new();
    for i in 0..10_000 {
        registry
            .get_or_register(&format!("b{i:05}"), CircuitBreakerConfig::default())
            .unwrap();
    }
    let status = registry.status();
    assert_eq!(status.breakers.len(), 10_000);
    assert_eq!(&*status.breakers[9_999].name, "b09999");
}

#[test]
fn a_keyed_familys_member_cannot_be_replaced_beside_its_family() {
    let registry = breaker_runtime::Registry::new();
    let family = registry
        .family("replace-member", CircuitBreakerConfig::default())
        .unwrap();
    let old = family.breaker("k").unwrap();
    assert!(
        registry
            .replace_clock("replace-member[k]", breaker_runtime::ManualClock::new())
            .is_none(),
        "a member is the family's: replace_clock says it changed nothing"
    );
    let beside =
        breaker_runtime::CircuitBreaker::new("replace-member[k]", CircuitBreakerConfig::default())
            .unwrap();
    let refused = registry.replace(beside.clone()).unwrap_err();
    assert!(refused.ptr_eq(&beside), "the breaker is handed back");
    assert!(
        family.breaker("k").unwrap().ptr_eq(&old),
        "calls keep the member"
    );
    let rows = registry
        .status()
        .breakers
        .iter()
        .filter(|b| &*b.name == "replace-member[k]")
        .count();
    assert_eq!(rows, 1, "one breaker under the name");
}
