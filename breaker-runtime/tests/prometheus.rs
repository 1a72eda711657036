//! The Prometheus exposition: what a scrape shows, parsed back to exact
//! values, and checked by `promtool check metrics` when it is installed.
#![cfg(feature = "prometheus")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use breaker_runtime::prometheus::{self, BreakerCollector};
use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, Family, ManualClock, Registry};
use common::manual_breaker;

/// One sample: its name and labels.
type Key = (String, BTreeMap<String, String>);

/// A parsed exposition: every sample's value, and each family's
/// `# TYPE`.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<Key, f64>,
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the Prometheus text format, label escapes included; panics
    /// on anything it does not understand, so a malformed line fails the
    /// test.
    fn parse(text: &str) -> Self {
        let mut scrape = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    scrape.types.insert(name.into(), kind.into()).is_none(),
                    "{name} typed twice"
                );
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                scrape.helps.insert(name.into(), help.into());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                let (key, value) = parse_sample(line);
                assert!(
                    scrape.samples.insert(key.clone(), value).is_none(),
                    "{key:?} twice"
                );
            }
        }
        scrape
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (
            name.to_owned(),
            labels
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        );
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key:?}"))
    }

    /// Every sample of `name` for `breaker`, by the value of `label`.
    fn by(&self, name: &str, breaker: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|((n, labels), _)| n == name && labels["breaker"] == breaker)
            .map(|((_, labels), v)| (labels[label].clone(), *v))
            .collect()
    }

    fn breakers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .samples
            .keys()
            .filter(|(n, _)| n == "breaker_state")
            .map(|(_, labels)| labels["breaker"].clone())
            .collect();
        names.dedup();
        names
    }
}

fn parse_sample(line: &str) -> (Key, f64) {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (name, value) = line.split_once(' ').expect("name value");
            return ((name.into(), BTreeMap::new()), parse_value(value));
        }
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "a quoted value in {line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => value.push(match chars.next() {
                    Some('n') => '\n',
                    Some('\\') => '\\',
                    Some('"') => '"',
                    other => panic!("bad escape {other:?} in {line}"),
                }),
                c => value.push(c),
            }
        }
        assert!(labels.insert(key, value).is_none(), "a label twice: {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("{other:?} after a label in {line}"),
        }
    }
    let value = chars
        .as_str()
        .strip_prefix(' ')
        .expect("a space, then the value");
    ((name.into(), labels), parse_value(value))
}

fn parse_value(value: &str) -> f64 {
    match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("value {v:?}")),
    }
}

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .failure_threshold(2)
        .recovery_timeout(Duration::from_secs(10))
        .build()
        .expect("valid")
}

/// A breaker with 3 successes (the first, the sampled one, taking 3 ms),
/// 2 failures that open it, then 1 rejected call, 4 s into the open period.
fn tripped(registry: &Registry, name: &str) -> (CircuitBreaker, ManualClock) {
    let (breaker, clock) = manual_breaker(name, config());
    registry.register(breaker.clone()).expect("a new name");
    breaker
        .call(|| {
            clock.advance(Duration::from_millis(3));
            Ok::<_, String>(())
        })
        .expect("closed");
    for _ in 0..2 {
        breaker.call(|| Ok::<_, String>(())).expect("closed");
    }
    for _ in 0..2 {
        let _ = breaker.call(|| Err::<(), _>("503"));
    }
    let _ = breaker.call(|| Ok::<_, String>(()));
    clock.advance(Duration::from_secs(4));
    (breaker, clock)
}

#[test]
fn a_scrape_shows_the_engine_s_exact_counts() {
    let registry = Registry::new();
    let _held = tripped(&registry, "inventory");
    let scrape = Scrape::parse(&prometheus::encode(&registry).expect("encodes"));
    let b = [("breaker", "inventory")];
    let with = |label: (&'static str, &'static str)| [b[0], label];

    assert_eq!(scrape.get("breaker_state", &with(("state", "open"))), 1.0);
    for state in ["closed", "half_open", "forced_open", "forced_closed"] {
        assert_eq!(scrape.get("breaker_state", &with(("state", state))), 0.0);
    }
    let calls = scrape.by("breaker_calls_total", "inventory", "outcome");
    let expected_calls = [
        ("cancelled", 0.0),
        ("failure", 2.0),
        ("ignored", 0.0),
        ("rejected", 1.0),
        ("success", 3.0),
    ];
    assert_eq!(calls, expected_calls.map(|(k, v)| (k.to_owned(), v)).into());
    assert_eq!(
        scrape.get("breaker_failures_total", &with(("type", "error"))),
        2.0
    );
    assert_eq!(
        scrape.get("breaker_failures_total", &with(("type", "timeout"))),
        0.0
    );
    assert_eq!(
        scrape.get("breaker_rejected_calls_total", &with(("reason", "open"))),
        1.0
    );
    assert_eq!(
        scrape.get("breaker_transitions_total", &with(("to", "open"))),
        1.0
    );
    assert_eq!(
        scrape.get("breaker_transitions_total", &with(("to", "closed"))),
        0.0
    );
    assert_eq!(scrape.get("breaker_open_remaining_seconds", &b), 6.0);
    assert_eq!(scrape.get("breaker_fallback_calls_total", &b), 0.0);

    // One sampled call of 3 ms: in the bucket (2.5 ms, 5 ms].
    let latency = "breaker_sampled_call_duration_seconds";
    assert_eq!(scrape.get(&format!("{latency}_count"), &b), 1.0);
    assert_eq!(scrape.get(&format!("{latency}_sum"), &b), 0.003);
    let bucket = |le: &'static str| scrape.get(&format!("{latency}_bucket"), &with(("le", le)));
    assert_eq!(bucket("0.0025"), 0.0);
    assert_eq!(bucket("0.005"), 1.0);
    assert_eq!(bucket("+Inf"), 1.0);
    assert_eq!(scrape.types[latency], "histogram");
    assert_eq!(scrape.types["breaker_calls_total"], "counter");
    assert_eq!(scrape.types["breaker_state"], "gauge");
}

/// Breakers in every state, with a name that needs escaping, for the
/// consistency checks and for promtool.
fn a_busy_registry() -> (Registry, Vec<(CircuitBreaker, ManualClock)>) {
    let registry = Registry::new();
    let mut held = vec![tripped(&registry, "tripped")];
    for (name, force) in [
        ("closed", None),
        ("forced-open", Some(true)),
        ("forced-closed", Some(false)),
        ("llm[gpt-4o]", None),
        (
            "<img src=x onerror=alert(1)> \"quoted\" \\ and\nnewline",
            None,
        ),
    ] {
        let (breaker, clock) = match name.split_once('[') {
            // A keyed family's member, as the registry holds it.
            Some((family, key)) => {
                let clock = ManualClock::new();
                let family = Family::builder(family)
                    .config(config())
                    .clock(clock.clone())
                    .build()
                    .expect("valid");
                registry
                    .register_family(family.clone())
                    .expect("a new name");
                let key = key.trim_end_matches(']');
                (family.breaker(key).expect("room for it"), clock)
            }
            None => {
                let (breaker, clock) = manual_breaker(name, config());
                registry.register(breaker.clone()).expect("a new name");
                (breaker, clock)
            }
        };
        for i in 0..70 {
            clock.advance(Duration::from_micros(i * 40));
            let _ = breaker.call(|| if i % 7 == 0 { Err("503") } else { Ok(()) });
        }
        match force {
            Some(true) => breaker.force_open(),
            Some(false) => breaker.force_closed(),
            None => {}
        }
        held.push((breaker, clock));
    }
    // Half-open: the tripped breaker's open period ends, a probe is in.
    let (half_open, clock) = manual_breaker("half-open", config());
    registry.register(half_open.clone()).expect("a new name");
    for _ in 0..2 {
        let _ = half_open.call(|| Err::<(), _>("503"));
    }
    clock.advance(Duration::from_secs(10));
    let permit = half_open.try_acquire().expect("a probe is admitted");
    std::mem::forget(permit);
    held.push((half_open, clock));
    (registry, held)
}

#[test]
fn every_breaker_s_series_agree_with_each_other_and_with_its_metrics() {
    let (registry, held) = a_busy_registry();
    let scrape = Scrape::parse(&prometheus::encode(&registry).expect("encodes"));
    assert_eq!(scrape.breakers().len(), held.len(), "every breaker listed");
    let mut states_seen = Vec::new();
    for (breaker, _) in &held {
        let name = breaker.name();
        let metrics = breaker.get_metrics();
        let states = scrape.by("breaker_state", name, "state");
        assert_eq!(states.values().sum::<f64>(), 1.0, "{name}: one state");
        assert_eq!(states[metrics.detailed_state.as_str()], 1.0, "{name}");
        states_seen.push(metrics.detailed_state);

        let calls = scrape.by("breaker_calls_total", name, "outcome");
        assert_eq!(
            calls.values().sum::<f64>(),
            metrics.total_calls as f64,
            "{name}"
        );
        let rejected = scrape.by("breaker_rejected_calls_total", name, "reason");
        assert_eq!(rejected.values().sum::<f64>(), calls["rejected"], "{name}");
        let failures = scrape.by("breaker_failures_total", name, "type");
        assert_eq!(failures.values().sum::<f64>(), calls["failure"], "{name}");
        let transitions = scrape.by("breaker_transitions_total", name, "to");
        assert_eq!(
            transitions.values().sum::<f64>(),
            metrics.transitions as f64,
            "{name}"
        );

        let buckets = scrape.by("breaker_sampled_call_duration_seconds_bucket", name, "le");
        let mut cumulative: Vec<(f64, f64)> = buckets
            .iter()
            .map(|(le, n)| (parse_value(le), *n))
            .collect();
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(cumulative.len(), 26, "{name}: 25 bounds and +Inf");
        assert!(
            cumulative.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name}: cumulative"
        );
        let count = scrape.by(
            "breaker_sampled_call_duration_seconds_count",
            name,
            "breaker",
        );
        assert_eq!(
            cumulative.last().map(|b| b.1),
            count.values().next().copied()
        );
        assert_eq!(
            count.values().next().copied(),
            Some(metrics.response_times.count() as f64)
        );
    }
    states_seen.sort_by_key(|s| s.as_str());
    states_seen.dedup();
    assert_eq!(states_seen.len(), 5, "the registry shows every state");
}

#[test]
fn a_keyed_member_carries_family_and_key_labels_and_names_survive_escaping() {
    let (registry, _held) = a_busy_registry();
    let scrape = Scrape::parse(&prometheus::encode(&registry).expect("encodes"));
    let keyed = [
        ("breaker", "llm[gpt-4o]"),
        ("family", "llm"),
        ("key", "gpt-4o"),
    ];
    assert_eq!(scrape.get("breaker_fallback_calls_total", &keyed), 0.0);
    let plain = [("breaker", "closed")];
    assert_eq!(scrape.get("breaker_fallback_calls_total", &plain), 0.0);
    assert!(
        scrape
            .breakers()
            .contains(&"<img src=x onerror=alert(1)> \"quoted\" \\ and\nnewline".to_owned()),
        "the name parses back exactly: {:?}",
        scrape.breakers()
    );
}

#[test]
fn the_collector_reads_the_registry_at_each_scrape() {
    let shared = Arc::new(Registry::new());
    let (breaker, _clock) = manual_breaker("live", config());
    shared.register(breaker.clone()).expect("a new name");
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register_collector(Box::new(BreakerCollector::shared(Arc::clone(&shared))));
    let scrape = || {
        let mut body = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut body, &metrics).expect("encodes");
        Scrape::parse(&body)
    };
    let success = [("breaker", "live"), ("outcome", "success")];
    assert_eq!(scrape().get("breaker_calls_total", &success), 0.0);
    breaker.call(|| Ok::<_, String>(())).expect("closed");
    assert_eq!(scrape().get("breaker_calls_total", &success), 1.0);
    breaker.force_open();
    let forced = [("breaker", "live"), ("state", "forced_open")];
    assert_eq!(scrape().get("breaker_state", &forced), 1.0);
}

#[test]
fn every_family_has_help_and_a_type() {
    let (registry, _held) = a_busy_registry();
    let scrape = Scrape::parse(&prometheus::encode(&registry).expect("encodes"));
    for (name, _) in scrape.samples.keys() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| scrape.types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(scrape.types.contains_key(family), "{name}: no TYPE");
        assert!(scrape.helps.contains_key(family), "{name}: no HELP");
    }
}

#[test]
fn promtool_check_metrics_passes_the_exposition() {
    let Ok(output) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the promtool check: .ci/run installs the prometheus package"
        );
        eprintln!("SKIPPED: promtool is not installed (Debian package `prometheus`)");
        return;
    };
    assert!(output.status.success(), "promtool --version");
    let (registry, _held) = a_busy_registry();
    let body = prometheus::encode(&registry).expect("encodes");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(out_dir.join("breaker-metrics.prom"), &body).expect("saved for a reviewer");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool starts");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(body.as_bytes())
        .expect("promtool reads");
    let result = child.wait_with_output().expect("promtool finishes");
    assert!(
        result.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition:\n{body}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
    );
}
