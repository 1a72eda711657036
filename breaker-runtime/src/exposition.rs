//! The series an operator scrapes, in one table shared by the Prometheus
//! exposition ([`crate::prometheus`]) and the `metrics` facade
//! ([`crate::metrics_facade`]): each series' name, help, kind, label, and
//! how it reads a [`BreakerStatus`]. Everything here runs at scrape or
//! publish time, from a status snapshot; the call path never sees it.

use crate::error::FailureType;
use crate::registry::BreakerStatus;
use crate::state::DetailedState;

/// What a series is, in Prometheus terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only goes up; exposed with a `_total` suffix.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One value of a series, under one value of its label (if it has one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Count(u64),
    Float(f64),
}

/// Takes one value of a series, with its label's value (if it has one).
pub(crate) type Emit<'a> = dyn FnMut(Option<&'static str>, Value) + 'a;

/// One metric family.
pub(crate) struct Series {
    /// The name without the `_total` a counter gets in the exposition.
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: Kind,
    /// The label telling this series' values apart, beside the breaker's
    /// own labels; `None` for one value per breaker.
    pub(crate) label: Option<&'static str>,
    /// Calls `emit` once per value of the label (with that value), or once
    /// (with `None`) for a series without a label.
    pub(crate) read: fn(&BreakerStatus, &mut Emit<'_>),
}

impl Series {
    /// The name as exposed: counters end in `_total`.
    #[cfg(any(feature = "metrics", test))]
    pub(crate) fn exposed_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{}_total", self.name),
            Kind::Gauge => self.name.to_owned(),
        }
    }
}

/// The latency histogram's name (its buckets come from
/// [`ResponseTimes`](crate::ResponseTimes)).
pub(crate) const LATENCY_NAME: &str = "breaker_sampled_call_duration_seconds";
pub(crate) const LATENCY_HELP: &str = "Duration of the calls the breaker timed: one call in 64 of each breaker, per thread. _count counts samples, not calls.";

/// Every series but the latency histogram, in exposition order.
pub(crate) const SERIES: &[Series] = &[
    Series {
        name: "breaker_state",
        help: "1 for the state the breaker is in, 0 for the others.",
        kind: Kind::Gauge,
        label: Some("state"),
        read: |b, emit| {
            for state in DetailedState::ALL {
                emit(
                    Some(state.as_str()),
                    Value::Count(u64::from(b.state == state)),
                );
            }
        },
    },
    Series {
        name: "breaker_calls",
        help: "Calls that reached the breaker, by outcome; rejected includes the local rate limit's refusals.",
        kind: Kind::Counter,
        label: Some("outcome"),
        read: |b, emit| {
            let m = &b.metrics;
            emit(Some("success"), Value::Count(m.successful_calls));
            emit(Some("failure"), Value::Count(m.failed_calls));
            emit(Some("ignored"), Value::Count(m.ignored_calls));
            emit(Some("cancelled"), Value::Count(m.cancelled_calls));
            emit(
                Some("rejected"),
                Value::Count(m.rejected_calls + m.local_rate_limited_calls),
            );
        },
    },
    Series {
        name: "breaker_failures",
        help: "Failed calls, by failure type.",
        kind: Kind::Counter,
        label: Some("type"),
        read: |b, emit| {
            for failure_type in FailureType::ALL {
                emit(
                    Some(failure_type.as_str()),
                    Value::Count(b.metrics.failures_by_type.get(failure_type)),
                );
            }
        },
    },
    Series {
        name: "breaker_rejected_calls",
        help: "Calls refused without being made, by reason: open circuit, every slot taken (half-open probes, deadline workers), or the local rate limit.",
        kind: Kind::Counter,
        label: Some("reason"),
        read: |b, emit| {
            let m = &b.metrics;
            emit(Some("open"), Value::Count(m.rejected_by_reason.open));
            emit(Some("full"), Value::Count(m.rejected_by_reason.full));
            emit(
                Some("rate_limited"),
                Value::Count(m.local_rate_limited_calls),
            );
        },
    },
    Series {
        name: "breaker_fallback_calls",
        help: "Calls a fallback answered.",
        kind: Kind::Counter,
        label: None,
        read: |b, emit| emit(None, Value::Count(b.metrics.fallback_calls)),
    },
    Series {
        name: "breaker_fallback_failures",
        help: "Fallbacks that themselves failed.",
        kind: Kind::Counter,
        label: None,
        read: |b, emit| emit(None, Value::Count(b.metrics.fallback_failures)),
    },
    Series {
        name: "breaker_transitions",
        help: "State changes, by the state they went to.",
        kind: Kind::Counter,
        label: Some("to"),
        read: |b, emit| {
            for state in DetailedState::ALL {
                emit(
                    Some(state.as_str()),
                    Value::Count(b.metrics.transitions_to.get(state)),
                );
            }
        },
    },
    Series {
        name: "breaker_open_remaining_seconds",
        help: "While open: seconds until the circuit admits a probe; 0 otherwise.",
        kind: Kind::Gauge,
        label: None,
        read: |b, emit| {
            let remaining = b.metrics.open_remaining.unwrap_or_default();
            emit(None, Value::Float(remaining.as_secs_f64()));
        },
    },
    Series {
        name: "breaker_consecutive_failures",
        help: "Failures since the last success (closed state).",
        kind: Kind::Gauge,
        label: None,
        read: |b, emit| {
            emit(
                None,
                Value::Count(u64::from(b.metrics.consecutive_failures)),
            );
        },
    },
    Series {
        name: "breaker_late_results",
        help: "Results that arrived after their call was counted as a timeout, and were discarded.",
        kind: Kind::Counter,
        label: None,
        read: |b, emit| emit(None, Value::Count(b.metrics.late_results)),
    },
];

/// The labels of one breaker's series: `breaker`, and for a member of a
/// keyed family its `family` and `key`, as the registry knows them (a
/// breaker merely *named* `x[y]` is not a member).
pub(crate) fn breaker_labels(b: &crate::BreakerStatus) -> Vec<(&'static str, &str)> {
    let mut labels = vec![("breaker", &*b.name)];
    if let (Some(family), Some(key)) = (&b.family, &b.key) {
        labels.push(("family", &**family));
        labels.push(("key", &**key));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_member_carries_its_family_and_key() {
        let registry = crate::Registry::new();
        let llm = registry
            .family("llm", crate::CircuitBreakerConfig::default())
            .unwrap();
        llm.breaker("a[b]").unwrap();
        registry
            .get_or_register("plain[x]", crate::CircuitBreakerConfig::default())
            .unwrap();
        let status = registry.status();
        let labels: Vec<_> = status.breakers.iter().map(breaker_labels).collect();
        assert_eq!(
            labels,
            [
                vec![("breaker", "llm[a[b]]"), ("family", "llm"), ("key", "a[b]")],
                vec![("breaker", "plain[x]")],
            ],
            "a member is labelled from the registry; a name that looks keyed is not a member"
        );
    }

    #[test]
    fn series_names_are_unique_and_valid_prometheus_names() {
        let mut names: Vec<String> = SERIES.iter().map(Series::exposed_name).collect();
        names.push(LATENCY_NAME.to_owned());
        for name in &names {
            assert!(
                name.starts_with("breaker_")
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "no name twice");
    }
}
