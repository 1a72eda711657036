//! The `metrics` facade: `publish` sets the same series as the Prometheus
//! exposition, read by `metrics-util`'s debugging recorder.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use breaker_runtime::{CircuitBreakerConfig, Family, ManualClock, Registry, metrics_facade};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Every series in the recorder: name and sorted labels, to its value.
fn read(snapshotter: &Snapshotter) -> BTreeMap<(String, Vec<(String, String)>), DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|&(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

#[test]
fn publish_sets_exact_totals_and_publishing_again_does_not_add_them_twice() {
    let registry = Registry::new();
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(2)
        .recovery_timeout(Duration::from_secs(10))
        .build()
        .expect("valid");
    let clock = ManualClock::new();
    let family = Family::builder("llm")
        .config(config)
        .clock(clock.clone())
        .build()
        .expect("valid");
    registry
        .register_family(family.clone())
        .expect("a new name");
    let breaker = family.breaker("gpt-4o").expect("room for it");
    breaker
        .call(|| {
            clock.advance(Duration::from_millis(3));
            Ok::<_, String>(())
        })
        .expect("closed");
    for _ in 0..2 {
        let _ = breaker.call(|| Err::<(), _>("503"));
    }
    let _ = breaker.call(|| Ok::<_, String>(()));

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || metrics_facade::publish(&registry));
    metrics::with_local_recorder(&recorder, || metrics_facade::publish(&registry));
    let series = read(&snapshotter);

    let b = [
        ("breaker", "llm[gpt-4o]"),
        ("family", "llm"),
        ("key", "gpt-4o"),
    ];
    let with = |label: (&'static str, &'static str)| [b[0], b[1], b[2], label];
    let expect = [
        (
            key("breaker_calls_total", &with(("outcome", "success"))),
            DebugValue::Counter(1),
        ),
        (
            key("breaker_calls_total", &with(("outcome", "failure"))),
            DebugValue::Counter(2),
        ),
        (
            key("breaker_calls_total", &with(("outcome", "rejected"))),
            DebugValue::Counter(1),
        ),
        (
            key("breaker_failures_total", &with(("type", "error"))),
            DebugValue::Counter(2),
        ),
        (
            key("breaker_rejected_calls_total", &with(("reason", "open"))),
            DebugValue::Counter(1),
        ),
        (
            key("breaker_transitions_total", &with(("to", "open"))),
            DebugValue::Counter(1),
        ),
        (
            key("breaker_state", &with(("state", "open"))),
            DebugValue::Gauge(1.0.into()),
        ),
        (
            key("breaker_state", &with(("state", "closed"))),
            DebugValue::Gauge(0.0.into()),
        ),
        (
            key("breaker_open_remaining_seconds", &b),
            DebugValue::Gauge(10.0.into()),
        ),
        (
            key("breaker_fallback_calls_total", &b),
            DebugValue::Counter(0),
        ),
        (
            key("breaker_sampled_call_duration_seconds_count", &b),
            DebugValue::Counter(1),
        ),
        (
            key("breaker_sampled_call_duration_seconds_sum", &b),
            DebugValue::Gauge(0.003.into()),
        ),
    ];
    for (key, value) in expect {
        assert_eq!(series.get(&key), Some(&value), "{key:?}");
    }
    let DebugValue::Gauge(p99) = series[&key(
        "breaker_sampled_call_duration_seconds",
        &with(("quantile", "0.99")),
    )] else {
        panic!("p99 is a gauge");
    };
    assert!(
        p99.0 > 0.0025 && p99.0 <= 0.005,
        "p99 {p99} in the bucket of the one 3 ms sample"
    );
}
