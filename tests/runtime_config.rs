//! Run-time configuration end to end: an annotated function in a child
//! process started with `BREAKER_*` variables and a `BREAKER_CONFIG` file,
//! as an operator would start a service.
//!
//! The child is this test binary again, running only the ignored test
//! `child`, which calls the annotated functions and prints what the
//! registry reports. The parent never sets a variable in its own process,
//! so no other test sees one.

use std::process::Command;

use breaker_runtime::{circuit_breaker, registry, subscribe};
use serde_json::Value;

/// Marks the child's mode (not `BREAKER_`: that prefix is the registry's).
const CHILD: &str = "RUNCFG_CHILD";
/// Asks the child to call `registry().load_config()` first.
const STRICT: &str = "RUNCFG_STRICT";

fn declined(error: breaker_runtime::BreakerError) -> String {
    error.to_string()
}

#[circuit_breaker(name = "payments", failure_threshold = 3, timeout_duration = "2s", map_err = declined)]
fn charge(fail: bool) -> Result<u32, String> {
    if fail { Err("declined".into()) } else { Ok(1) }
}

/// A second call site of the same breaker, with the same attribute.
#[circuit_breaker(name = "payments", failure_threshold = 3, timeout_duration = "2s", map_err = declined)]
fn refund(fail: bool) -> Result<u32, String> {
    if fail { Err("declined".into()) } else { Ok(1) }
}

#[test]
#[ignore = "run by the other tests, in a child process with the variables they set"]
fn child() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run only as a child, with {CHILD} set"
    );
    // The harness has printed `test child ... ` without a newline.
    println!();
    let _listener = subscribe(|event| {
        if let breaker_runtime::EventKind::ConfigOverrideRejected { problems } = &event.kind {
            println!(
                "EVENT {} rejected: {}",
                event.breaker,
                problems.replace('\n', " | ")
            );
        }
    });
    if std::env::var_os(STRICT).is_some() {
        match registry().load_config() {
            Ok(()) => println!("LOAD ok"),
            Err(errors) => {
                for error in errors.errors() {
                    println!("LOAD error: {error}");
                }
            }
        }
    }
    let _ = charge(true);
    let _ = refund(false);
    println!(
        "STATUS {}",
        serde_json::to_string(&registry().status()).unwrap()
    );
    println!("TABLE\n{}", registry().status());
}

/// What the child printed.
struct Child {
    stdout: String,
    status: Value,
}

impl Child {
    fn payments(&self) -> &Value {
        &self.status["breakers"][0]
    }

    fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .collect()
    }
}

fn run_child(vars: &[(&str, &str)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("BREAKER_") {
            command.env_remove(var);
        }
    }
    command.env(CHILD, "1").envs(vars.iter().copied());
    let output = command.output().expect("the test binary runs again");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix("STATUS "))
        .unwrap_or_else(|| panic!("no status in:\n{stdout}"));
    let status = serde_json::from_str(json).unwrap();
    Child { stdout, status }
}

/// A TOML file in the temporary directory, removed on drop.
struct TempToml(std::path::PathBuf);

impl TempToml {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("breaker-runcfg-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn without_overrides_the_attribute_is_in_force() {
    let child = run_child(&[]);
    let payments = child.payments();
    assert_eq!(payments["name"], "payments");
    assert_eq!(payments["config"]["failure_threshold"], 3);
    assert_eq!(payments["config"]["timeout_duration"], 2.0);
    assert_eq!(
        payments["config_sources"]["failure_threshold"]["from"],
        "code"
    );
    assert_eq!(payments["config_conflicts"], serde_json::json!([]));
    assert_eq!(payments["state"], "closed", "one failure of three");
}

#[test]
fn variables_override_the_attribute() {
    let child = run_child(&[
        ("BREAKER_PAYMENTS__FAILURE_THRESHOLD", "1"),
        ("BREAKER_DEFAULT__TIMEOUT_DURATION", "750ms"),
        ("BREAKER_REDIS_URL", "redis://reserved.invalid"),
        ("BREAKER_PAYMENT__SUCCESS_THRESHOLD", "1"),
    ]);
    let payments = child.payments();
    assert_eq!(payments["config"]["failure_threshold"], 1);
    assert_eq!(payments["config"]["timeout_duration"], 0.75);
    assert_eq!(
        payments["state"], "open",
        "the overridden threshold is the one the breaker trips on"
    );
    assert_eq!(
        payments["config_sources"]["failure_threshold"],
        serde_json::json!({"from": "env", "var": "BREAKER_PAYMENTS__FAILURE_THRESHOLD"})
    );
    assert_eq!(
        payments["config_conflicts"],
        serde_json::json!([]),
        "two call sites with one attribute agree on the effective config"
    );
    assert_eq!(payments["config_errors"], serde_json::json!([]));
    assert_eq!(payments["config"]["success_threshold"], 3);
    let unmatched =
        "BREAKER_PAYMENT__SUCCESS_THRESHOLD names no registered breaker; did you mean `payments`?";
    assert_eq!(
        child.status["unmatched_overrides"],
        serde_json::json!([unmatched]),
        "a misspelt name is listed, not silently ignored"
    );
    assert!(
        child.stdout.contains(&format!("note: {unmatched}")),
        "{}",
        child.stdout
    );
    let table = child.stdout.split("TABLE\n").nth(1).unwrap();
    assert!(
        table.contains(
            "config: failure_threshold from BREAKER_PAYMENTS__FAILURE_THRESHOLD, timeout_duration from BREAKER_DEFAULT__TIMEOUT_DURATION"
        ),
        "{table}"
    );
}

#[test]
fn the_file_named_by_breaker_config_applies_and_variables_beat_it() {
    let file = TempToml::new(
        "file",
        "[payments]\nfailure_threshold = 1\nrecovery_timeout = \"2m\"\n",
    );
    let child = run_child(&[
        ("BREAKER_CONFIG", file.path()),
        ("BREAKER_PAYMENTS__RECOVERY_TIMEOUT", "90"),
    ]);
    let payments = child.payments();
    assert_eq!(payments["config"]["failure_threshold"], 1);
    assert_eq!(payments["config"]["recovery_timeout"], 90.0);
    assert_eq!(
        payments["config_sources"]["failure_threshold"],
        serde_json::json!({"from": "file", "path": file.path(), "line": 2})
    );
    assert_eq!(
        payments["config_sources"]["recovery_timeout"]["var"],
        "BREAKER_PAYMENTS__RECOVERY_TIMEOUT"
    );
}

#[test]
fn a_typo_in_the_file_is_reported_and_the_attribute_stays() {
    let file = TempToml::new("typo", "# production\n[payments]\nfailur_threshold = 1\n");
    let child = run_child(&[("BREAKER_CONFIG", file.path()), (STRICT, "1")]);
    let expected = format!(
        "unknown key `failur_threshold` in [payments] at {}:3; did you mean `failure_threshold`?",
        file.path()
    );
    assert_eq!(
        child.lines("LOAD error: "),
        [expected.as_str()],
        "{}",
        child.stdout
    );
    assert_eq!(
        child.lines("EVENT payments rejected: "),
        [expected.as_str()],
        "{}",
        child.stdout
    );
    let payments = child.payments();
    assert_eq!(payments["config"]["failure_threshold"], 3);
    assert_eq!(payments["config_errors"], serde_json::json!([expected]));
    assert!(
        child
            .stdout
            .contains("CONFIG OVERRIDE REJECTED (1 problem; attribute values in force)"),
        "{}",
        child.stdout
    );
}

#[test]
fn a_bad_value_names_its_variable_key_and_range() {
    let child = run_child(&[
        ("BREAKER_PAYMENTS__FAILURE_THRESHOLD", "0"),
        ("BREAKER_PAYMENTS__TIMEOUT_DURATION", "1s"),
        ("BREAKER_PAYMENTS_SUCCESS_THRESHOLD", "2"),
    ]);
    let payments = child.payments();
    assert_eq!(
        payments["config_errors"],
        serde_json::json!([
            "BREAKER_PAYMENTS__FAILURE_THRESHOLD: `failure_threshold` is 0, but it must be at least 1",
        ])
    );
    assert_eq!(
        child.status["unmatched_overrides"],
        serde_json::json!([
            "unknown variable BREAKER_PAYMENTS_SUCCESS_THRESHOLD: a breaker setting is written BREAKER_<NAME>__<FIELD>; did you mean `BREAKER_PAYMENTS__SUCCESS_THRESHOLD`?",
        ]),
        "a stray variable is listed for the whole process, not held against one breaker"
    );
    assert_eq!(payments["config"]["failure_threshold"], 3);
    assert_eq!(
        payments["config"]["timeout_duration"], 2.0,
        "the good variable is not applied alone either"
    );
}
