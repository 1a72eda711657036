//! Run-time configuration through a registry: effective configs, conflicts
//! judged on them, the error policy, and what the status shows.
//!
//! Each test uses its own [`Registry`] and feeds it TOML text, so nothing
//! here reads or writes the process's environment (the end-to-end tests
//! with real variables run in a child process: `tests/runtime_config.rs`
//! at the workspace root).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use breaker_runtime::{
    CircuitBreakerConfig, EventKind, OverrideError, Registry, ValueSource, subscribe,
};

/// A registry reading `toml`, labelled `breaker.toml`.
fn registry_with(toml: &str) -> (Registry, Result<(), breaker_runtime::OverrideErrors>) {
    assert!(
        std::env::vars().all(|(var, _)| !var.starts_with("BREAKER_")),
        "these tests assume no BREAKER_ variable is set"
    );
    let registry = Registry::new();
    let loaded = registry.load_config_toml("breaker.toml", toml);
    (registry, loaded)
}

fn attribute() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .failure_threshold(3)
        .timeout_duration(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn the_registered_breaker_runs_on_the_effective_config() {
    let (registry, loaded) =
        registry_with("[llm]\nfailure_threshold = 10\n\n[default]\ntimeout_duration = \"750ms\"\n");
    loaded.unwrap();
    let llm = registry.get_or_register("llm", attribute()).unwrap();
    assert_eq!(llm.config().failure_threshold, 10);
    assert_eq!(llm.config().timeout_duration, Duration::from_millis(750));
    assert_eq!(
        llm.config().success_threshold,
        attribute().success_threshold
    );
    let db = registry.get_or_register("db", attribute()).unwrap();
    assert_eq!(db.config().failure_threshold, 3, "[llm] is llm's only");
    assert_eq!(db.config().timeout_duration, Duration::from_millis(750));
}

#[test]
fn the_same_attribute_registered_twice_is_no_conflict() {
    let (registry, loaded) = registry_with("[llm]\nfailure_threshold = 10\n");
    loaded.unwrap();
    let first = registry.get_or_register("llm", attribute()).unwrap();
    let second = registry.get_or_register("llm", attribute()).unwrap();
    assert!(first.ptr_eq(&second));
    let other = CircuitBreakerConfig {
        success_threshold: 1,
        ..attribute()
    };
    registry.get_or_register("llm", other).unwrap();
    let status = registry.status();
    let conflicts = &status.breakers[0].config_conflicts;
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    assert_eq!(
        conflicts[0].failure_threshold, 10,
        "the conflicting config is recorded as effective, overrides applied"
    );
    assert_eq!(conflicts[0].success_threshold, 1);
}

#[test]
fn a_rejected_override_leaves_the_attribute_in_force_and_says_why() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let subscription = subscribe(move |event| {
        if event.breaker == "overrides-rejected" {
            sink.lock().unwrap().push(event.kind.clone());
        }
    });
    let (registry, loaded) = registry_with(
        "[overrides-rejected]\nfailure_threshold = 10\nfailur_threshold = 4\n\n[db]\nfailure_threshold = 0\n",
    );
    let problems: Vec<String> = loaded
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        problems,
        [
            "breaker.toml:6: `failure_threshold` is 0, but it must be at least 1",
            "unknown key `failur_threshold` in [overrides-rejected] at breaker.toml:3; did you mean `failure_threshold`?",
        ],
        "load_config reports every problem at once"
    );

    let breaker = registry
        .get_or_register("overrides-rejected", attribute())
        .unwrap();
    registry
        .get_or_register("overrides-rejected", attribute())
        .unwrap();
    subscription.unsubscribe();
    assert_eq!(
        breaker.config(),
        &attribute(),
        "none of a broken table applies, not even its good line"
    );
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "reported once: {events:?}");
    let EventKind::ConfigOverrideRejected { problems } = &events[0] else {
        panic!("{events:?}");
    };
    assert!(
        problems.contains("did you mean `failure_threshold`?"),
        "{problems}"
    );

    let status = registry.status();
    let entry = &status.breakers[0];
    assert!(entry.config_conflicts.is_empty());
    assert!(matches!(
        entry.config_errors[..],
        [OverrideError::UnknownKey { .. }]
    ));
    assert!(entry.config_sources.is_empty());
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(
        json["breakers"][0]["config_errors"][0],
        "unknown key `failur_threshold` in [overrides-rejected] at breaker.toml:3; did you mean `failure_threshold`?"
    );
    let table = status.to_string();
    assert!(
        table.contains("CONFIG OVERRIDE REJECTED (1 problem; attribute values in force)"),
        "{table}"
    );
}

#[test]
fn the_status_says_where_each_value_came_from() {
    let (registry, loaded) = registry_with("[llm]\n\nfailure_threshold = 10\n");
    loaded.unwrap();
    registry.get_or_register("llm", attribute()).unwrap();
    let status = registry.status();
    assert_eq!(
        status.breakers[0].config_sources.get("failure_threshold"),
        &ValueSource::File {
            path: "breaker.toml".into(),
            line: 3
        }
    );
    let json = serde_json::to_value(&status).unwrap();
    let sources = &json["breakers"][0]["config_sources"];
    assert_eq!(
        sources["failure_threshold"],
        serde_json::json!({"from": "file", "path": "breaker.toml", "line": 3})
    );
    assert_eq!(
        sources["timeout_duration"],
        serde_json::json!({"from": "code"})
    );
    let table = status.to_string();
    assert!(
        table.contains("config: failure_threshold from breaker.toml:3"),
        "{table}"
    );
}

#[test]
fn a_hand_built_breaker_is_taken_as_is() {
    let (registry, loaded) = registry_with("[manual]\nfailure_threshold = 10\n");
    loaded.unwrap();
    let breaker = breaker_runtime::CircuitBreaker::new("manual", attribute()).unwrap();
    let registered = registry.register(breaker).unwrap();
    assert_eq!(registered.config().failure_threshold, 3);
    assert!(registry.status().breakers[0].config_sources.is_empty());
}

#[test]
fn load_config_file_reads_a_file_and_reports_a_missing_one() {
    let path = std::env::temp_dir().join(format!("breaker-overrides-{}.toml", std::process::id()));
    std::fs::write(&path, "[default]\nsuccess_threshold = 1\n").unwrap();
    let registry = Registry::new();
    registry.load_config_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let db = registry.get_or_register("db", attribute()).unwrap();
    assert_eq!(db.config().success_threshold, 1);
    assert_eq!(
        registry.status().breakers[0]
            .config_sources
            .get("success_threshold"),
        &ValueSource::File {
            path: path.display().to_string(),
            line: 2
        }
    );

    let missing = Registry::new();
    let errors = missing.load_config_file(&path).unwrap_err();
    assert!(
        matches!(errors.errors(), [OverrideError::Unreadable { .. }]),
        "{errors}"
    );
    let db = missing.get_or_register("db", attribute()).unwrap();
    assert_eq!(db.config(), &attribute(), "the attribute stays in force");
}

#[test]
fn a_keyed_family_takes_its_names_table_and_each_member_its_own() {
    let (registry, loaded) = registry_with(
        "[default]\nsuccess_threshold = 4\n\n[llm]\nfailure_threshold = 10\n\n[\"llm[gpt-4o]\"]\nfailure_threshold = 2\n",
    );
    loaded.unwrap();
    let llm = registry.family("llm", attribute()).unwrap();
    assert_eq!(llm.config().failure_threshold, 10, "[llm] is the family's");
    let mini = llm.breaker("gpt-4o-mini").unwrap();
    assert_eq!(
        mini.config().failure_threshold,
        10,
        "[llm] reaches every member"
    );
    assert_eq!(mini.config().success_threshold, 4, "[default] too");
    let big = llm.breaker("gpt-4o").unwrap();
    assert_eq!(
        big.config().failure_threshold,
        2,
        "a member's own table wins"
    );
    assert_eq!(
        big.config().success_threshold,
        4,
        "and [default] does not undo [llm]"
    );
    assert_eq!(big.config().timeout_duration, Duration::from_secs(10));
    assert!(
        registry.unmatched_overrides().is_empty(),
        "a family's and a member's tables match: {:?}",
        registry.unmatched_overrides()
    );
    let again = registry.family("llm", attribute()).unwrap();
    assert!(
        registry.status().families[0].config_conflicts.is_empty(),
        "the same attribute asked again is no conflict"
    );
    drop(again);
}
