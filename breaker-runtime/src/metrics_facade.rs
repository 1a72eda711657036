//! The series of the Prometheus exposition, published through the
//! [`metrics`] facade (feature `metrics`), for services whose metrics go
//! through a `metrics` recorder (`metrics-exporter-prometheus`, StatsD,
//! …).
//!
//! The facade is push-based, and a breaker records nothing on its call
//! path for it: call [`publish`] periodically (every few seconds, or
//! before each export). Counters are set to the engine's exact totals
//! with `Counter::absolute`, gauges to their current value. The latency
//! histogram goes out as a summary: gauges
//! `breaker_sampled_call_duration_seconds{quantile="0.5"|"0.9"|"0.99"}`,
//! plus its `_count` (a counter) and `_sum` (a gauge, in seconds).

use metrics::{Label, counter, describe_counter, describe_gauge, gauge};

use crate::exposition::{self, Kind, LATENCY_HELP, LATENCY_NAME, SERIES, Value};
use crate::registry::Registry;

/// The quantiles [`publish`] reports for the latency histogram.
pub const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// Sets every series of every breaker in `registry` in the current
/// `metrics` recorder. Cheap enough to call every few seconds with a
/// thousand breakers; calls nothing when no recorder is installed.
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, Registry};
/// use metrics_util::debugging::{DebugValue, DebuggingRecorder};
///
/// let own = Registry::new();
/// let db = own.register(CircuitBreaker::new("db", CircuitBreakerConfig::default())?)
///     .expect("a new name");
/// db.call(|| Ok::<_, String>(())).expect("closed");
///
/// let recorder = DebuggingRecorder::new();
/// let snapshotter = recorder.snapshotter();
/// metrics::with_local_recorder(&recorder, || breaker_runtime::metrics_facade::publish(&own));
///
/// let successes = snapshotter.snapshot().into_vec().into_iter().find_map(|(key, _, _, value)| {
///     let key = key.key();
///     let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
///     (key.name() == "breaker_calls_total"
///         && labels == [("breaker", "db"), ("outcome", "success")])
///     .then_some(value)
/// });
/// assert_eq!(successes, Some(DebugValue::Counter(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn publish(registry: &Registry) {
    let status = registry.status();
    for series in SERIES {
        let name = series.exposed_name();
        match series.kind {
            Kind::Counter => describe_counter!(name.clone(), series.help),
            Kind::Gauge => describe_gauge!(name.clone(), series.help),
        }
        for breaker in &status.breakers {
            let labels = labels_of(breaker);
            (series.read)(breaker, &mut |value_label, value| {
                let mut all = labels.clone();
                if let (Some(key), Some(label)) = (series.label, value_label) {
                    all.push(Label::new(key, label));
                }
                match (series.kind, value) {
                    (Kind::Counter, Value::Count(n)) => counter!(name.clone(), all).absolute(n),
                    // No counter here reads as a float; one that did would
                    // round down, never go up by a fraction.
                    (Kind::Counter, Value::Float(x)) => {
                        counter!(name.clone(), all).absolute(x as u64);
                    }
                    (Kind::Gauge, Value::Count(n)) => gauge!(name.clone(), all).set(n as f64),
                    (Kind::Gauge, Value::Float(x)) => gauge!(name.clone(), all).set(x),
                }
            });
        }
    }
    describe_gauge!(LATENCY_NAME, LATENCY_HELP);
    for breaker in &status.breakers {
        let labels = labels_of(breaker);
        let times = &breaker.metrics.response_times;
        for q in QUANTILES {
            if let Some(at) = times.quantile(q) {
                let mut all = labels.clone();
                all.push(Label::new("quantile", q.to_string()));
                gauge!(LATENCY_NAME, all).set(at.as_secs_f64());
            }
        }
        counter!(format!("{LATENCY_NAME}_count"), labels.clone()).absolute(times.count());
        gauge!(format!("{LATENCY_NAME}_sum"), labels).set(times.sum().as_secs_f64());
    }
}

fn labels_of(breaker: &crate::BreakerStatus) -> Vec<Label> {
    exposition::breaker_labels(breaker)
        .into_iter()
        .map(|(key, value)| Label::new(key, value.to_owned()))
        .collect()
}
