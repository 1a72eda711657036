//! Every breaker of a [`Registry`] in the Prometheus / OpenMetrics text
//! format, through the official [`prometheus_client`] crate (feature
//! `prometheus`).
//!
//! Nothing is recorded for it: a scrape takes a [`Registry::status`]
//! snapshot and encodes the engine's own counters, so the call path pays
//! nothing and the counts are exact. The series are listed in the README
//! ("Metrics for Prometheus").
//!
//! Serving `/metrics` yourself, with your other metrics in the same
//! `prometheus_client` registry:
//!
//! ```
//! use prometheus_client::encoding::prometheus_text::encode;
//! use breaker_runtime::{CircuitBreakerConfig, registry};
//! use breaker_runtime::prometheus::BreakerCollector;
//!
//! let llm = registry().get_or_register("prometheus-doc-llm", CircuitBreakerConfig::default())?;
//! llm.call(|| Ok::<_, String>(())).expect("closed");
//!
//! let mut metrics = prometheus_client::registry::Registry::default();
//! metrics.register_collector(Box::new(BreakerCollector::global()));
//! let mut body = String::new();
//! encode(&mut body, &metrics)?; // at each scrape
//! assert!(body.contains(
//!     r#"breaker_calls_total{breaker="prometheus-doc-llm",outcome="success"} 1"#
//! ));
//! assert!(body.contains("# TYPE breaker_calls_total counter"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::exposition::{self, Kind, LATENCY_HELP, LATENCY_NAME, SERIES, Value};
use crate::registry::{Registry, RegistryStatus, registry};

/// The `Content-Type` of what [`encode`] writes: the Prometheus text
/// format, version 0.0.4, the one `promtool check metrics` reads.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `Content-Type` of what [`encode_openmetrics`] writes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A [`prometheus_client`] collector of every breaker in a [`Registry`],
/// read at each scrape.
///
/// ```
/// use std::sync::Arc;
/// use prometheus_client::encoding::text::encode;
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, Registry};
/// use breaker_runtime::prometheus::BreakerCollector;
///
/// let own = Arc::new(Registry::new());
/// own.register(CircuitBreaker::new("db", CircuitBreakerConfig::default())?)
///     .expect("a new name");
/// let mut metrics = prometheus_client::registry::Registry::default();
/// metrics.register_collector(Box::new(BreakerCollector::shared(Arc::clone(&own))));
///
/// own.get("db").expect("registered").force_open();
/// let mut body = String::new();
/// encode(&mut body, &metrics)?;
/// assert!(body.contains(r#"breaker_state{breaker="db",state="forced_open"} 1"#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct BreakerCollector {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Static(&'static Registry),
    Shared(Arc<Registry>),
}

impl BreakerCollector {
    /// Collects the process-global [`registry()`], where the attribute
    /// registers its breakers.
    pub fn global() -> Self {
        Self::of(registry())
    }

    /// Collects a registry that lives for the whole program.
    pub fn of(registry: &'static Registry) -> Self {
        Self {
            source: Source::Static(registry),
        }
    }

    /// Collects a registry shared through an `Arc`.
    pub fn shared(registry: Arc<Registry>) -> Self {
        Self {
            source: Source::Shared(registry),
        }
    }

    fn registry(&self) -> &Registry {
        match &self.source {
            Source::Static(registry) => registry,
            Source::Shared(registry) => registry,
        }
    }
}

impl Default for BreakerCollector {
    fn default() -> Self {
        Self::global()
    }
}

impl Collector for BreakerCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        encode_status(&self.registry().status(), encoder)
    }
}

/// A status taken once, to encode a registry that is only borrowed.
#[derive(Debug)]
struct Snapshot(RegistryStatus);

impl Collector for Snapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        encode_status(&self.0, encoder)
    }
}

/// Every breaker of `registry`, now, in the Prometheus text format
/// (version 0.0.4), for a `/metrics` handler to return with
/// [`CONTENT_TYPE`]. Prometheus scrapes it, and `promtool check metrics`
/// passes it.
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, Registry};
///
/// let own = Registry::new();
/// own.register(CircuitBreaker::new("search", CircuitBreakerConfig::default())?)
///     .expect("a new name");
/// let body = breaker_runtime::prometheus::encode(&own)?;
/// assert!(body.contains(r#"breaker_state{breaker="search",state="closed"} 1"#));
/// assert!(body.contains(r#"breaker_state{breaker="search",state="open"} 0"#));
/// assert!(body.contains("# TYPE breaker_calls_total counter"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Only what [`prometheus_client`]'s encoder reports; writing to a
/// `String` does not fail.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut body, &snapshot(registry))?;
    Ok(body)
}

/// [`encode`] in the OpenMetrics text format (ending in `# EOF`), to
/// return with [`OPENMETRICS_CONTENT_TYPE`] to a scraper that asks for it.
/// A counter's `# TYPE` line names it without `_total`, as OpenMetrics
/// wants.
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, Registry};
///
/// let own = Registry::new();
/// own.register(CircuitBreaker::new("search", CircuitBreakerConfig::default())?)
///     .expect("a new name");
/// let body = breaker_runtime::prometheus::encode_openmetrics(&own)?;
/// assert!(body.contains("# TYPE breaker_calls counter"));
/// assert!(body.ends_with("# EOF\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// As [`encode`].
pub fn encode_openmetrics(registry: &Registry) -> Result<String, fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &snapshot(registry))?;
    Ok(body)
}

/// A `prometheus_client` registry holding one status of `registry`.
fn snapshot(registry: &Registry) -> prometheus_client::registry::Registry {
    let mut metrics = prometheus_client::registry::Registry::default();
    metrics.register_collector(Box::new(Snapshot(registry.status())));
    metrics
}

fn encode_status(status: &RegistryStatus, mut encoder: DescriptorEncoder) -> fmt::Result {
    let labels: Vec<_> = status
        .breakers
        .iter()
        .map(exposition::breaker_labels)
        .collect();
    for series in SERIES {
        let metric_type = match series.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        let mut family = encoder.encode_descriptor(series.name, series.help, None, metric_type)?;
        for (breaker, labels) in status.breakers.iter().zip(&labels) {
            let mut result = Ok(());
            (series.read)(breaker, &mut |value_label, value| {
                if result.is_err() {
                    return;
                }
                let mut all = labels.clone();
                if let (Some(name), Some(label)) = (series.label, value_label) {
                    all.push((name, label));
                }
                result = family
                    .encode_family(&all)
                    .and_then(|sample| encode_value(series.kind, value, sample));
            });
            result?;
        }
    }
    let mut family =
        encoder.encode_descriptor(LATENCY_NAME, LATENCY_HELP, None, MetricType::Histogram)?;
    for (breaker, labels) in status.breakers.iter().zip(&labels) {
        let times = &breaker.metrics.response_times;
        let buckets: Vec<(f64, u64)> = times
            .buckets()
            .map(|(bound, n)| (bound.map_or(f64::INFINITY, |b| b.as_secs_f64()), n))
            .collect();
        family
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(
                times.sum().as_secs_f64(),
                times.count(),
                &buckets,
                None,
            )?;
    }
    Ok(())
}

fn encode_value(
    kind: Kind,
    value: Value,
    sample: prometheus_client::encoding::MetricEncoder<'_>,
) -> fmt::Result {
    match (kind, value) {
        (Kind::Counter, Value::Count(n)) => ConstCounter::new(n).encode(sample),
        (Kind::Counter, Value::Float(x)) => ConstCounter::new(x).encode(sample),
        (Kind::Gauge, Value::Count(n)) => {
            ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(sample)
        }
        (Kind::Gauge, Value::Float(x)) => ConstGauge::new(x).encode(sample),
    }
}
