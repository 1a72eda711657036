//! Names shared by the `compare` benchmark and the `breaker-bench` table
//! printer, and the Markdown table itself.
//!
//! The benchmark and the printer agree on group and id names through the
//! constants here, so renaming a case cannot silently drop it from the table.
//! Each group names the id that is "ours"; once that id has results, every row
//! of the group gets an `ours / this` ratio. Until then the table shows
//! absolute times only.

use std::fmt::Write as _;

/// Benchmark group names (criterion's `group_id`).
pub mod groups {
    /// One thread, breaker closed, trivial protected function.
    pub const CLOSED_1T: &str = "closed_1t";
    /// Two threads hammering one shared closed breaker.
    pub const CLOSED_2T: &str = "closed_2t";
    /// Breaker tripped open with a long recovery: the rejection path.
    pub const OPEN_REJECT: &str = "open_reject";
    /// Async call under `tokio::time::timeout` on a current-thread runtime.
    pub const ASYNC_TIMEOUT: &str = "async_timeout";
    /// Rate limiter admission (`check`) with a quota that never denies.
    pub const RATE_LIMIT: &str = "rate_limit";
    /// `registry().status()` over 10 000 registered breakers.
    pub const SCALE: &str = "scale";
    /// Paired rounds only: a keyed family's member for an existing key
    /// against the same call through an unkeyed breaker.
    pub const CLOSED_KEYED: &str = "closed_1t, keyed";
    /// A tower layer around a trivial `service_fn`, closed, driven with
    /// `ready().await` and `call().await` on a current-thread runtime.
    pub const TOWER_LAYER: &str = "tower_layer";
}

/// Benchmark ids (criterion's `function_id`).
pub mod ids {
    /// The protected function with no breaker around it.
    pub const BARE: &str = "bare";
    /// `breaker_runtime` called directly.
    pub const OURS_DIRECT: &str = "ours_direct";
    /// A `#[circuit_breaker]` function.
    pub const OURS_MACRO: &str = "ours_macro";
    /// `breaker_runtime`'s keyed family, an existing key, called directly.
    pub const OURS_KEYED: &str = "ours_keyed";
    /// A `#[circuit_breaker(key = ...)]` function, an existing key.
    pub const OURS_MACRO_KEYED: &str = "ours_macro_keyed";
    /// `breaker_runtime`'s rate limiter.
    pub const OURS_RATE_LIMIT: &str = "ours";
    /// failsafe 1.3.
    pub const FAILSAFE: &str = "failsafe";
    /// recloser 1.4.
    pub const RECLOSER: &str = "recloser";
    /// circuitbreaker-rs 0.1.
    pub const CIRCUITBREAKER_RS: &str = "circuitbreaker-rs";
    /// tower-resilience-circuitbreaker 0.14.
    pub const TOWER_RESILIENCE: &str = "tower-resilience";
    /// governor 0.10 direct rate limiter.
    pub const GOVERNOR: &str = "governor";
    /// `Registry::status()` with 10 000 breakers.
    pub const STATUS_10K: &str = "status_10k";
    /// `Registry::status()` with one keyed family of 10 000 members.
    pub const STATUS_10K_KEYED: &str = "status_10k_keyed";
    /// Parameter for single-threaded cases inside a group.
    pub const ONE_THREAD: &str = "1t";
    /// Parameter for two-thread cases inside a group.
    pub const TWO_THREADS: &str = "2t";
}

/// Paired rounds: ours and one peer timed alternately in one process, for
/// the ratios the targets name.
///
/// Criterion measures one case after another, seconds apart. On a shared
/// machine whose speed changes from one second to the next, the ratio of two
/// such measurements moves with the machine. Here each round times ours and
/// the peer back to back, in alternating order, for about 20 ms each; the
/// table reports the median of the rounds' ratios and their range.
pub mod paired {
    use std::fmt::Write as _;
    use std::time::Duration;

    /// The environment variable naming the file the rounds' table goes to;
    /// the benchmark runs the rounds only when it is set.
    pub const OUT_ENV: &str = "BREAKER_PAIRED_OUT";
    /// Rounds per pairing; odd, so the median is one round's ratio.
    pub const ROUNDS: usize = 21;
    /// About how long each side of a round runs.
    const ROUND: Duration = Duration::from_millis(20);

    /// The ratios of one pairing, `ours / peer` per round.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Pairing {
        /// The benchmark group the pairing belongs to.
        pub group: &'static str,
        /// The peer's id.
        pub peer: &'static str,
        /// `ours / peer`, time per call, one ratio per round.
        pub ratios: Vec<f64>,
    }

    impl Pairing {
        /// The median ratio.
        pub fn median(&self) -> f64 {
            let mut sorted = self.ratios.clone();
            sorted.sort_by(f64::total_cmp);
            sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
        }

        /// The lowest and highest ratio.
        pub fn range(&self) -> (f64, f64) {
            let low = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = self
                .ratios
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            (low, high)
        }
    }

    /// Times `ours` and `peer` in [`ROUNDS`] alternating rounds. Each
    /// closure makes the given number of calls and returns their time.
    pub fn pair(
        group: &'static str,
        peer: &'static str,
        mut ours: impl FnMut(u64) -> Duration,
        mut theirs: impl FnMut(u64) -> Duration,
    ) -> Pairing {
        let ours_calls = calibrate(&mut ours);
        let their_calls = calibrate(&mut theirs);
        let per_call = |time: Duration, calls: u64| time.as_secs_f64() / calls as f64;
        let ratios = (0..ROUNDS)
            .map(|round| {
                let (mine, their) = if round % 2 == 0 {
                    let mine = ours(ours_calls);
                    (mine, theirs(their_calls))
                } else {
                    let their = theirs(their_calls);
                    (ours(ours_calls), their)
                };
                per_call(mine, ours_calls) / per_call(their, their_calls)
            })
            .collect();
        Pairing {
            group,
            peer,
            ratios,
        }
    }

    /// How many calls take about one [`ROUND`], warming `calls` up on the way.
    fn calibrate(calls: &mut impl FnMut(u64) -> Duration) -> u64 {
        let mut n = 1_000;
        loop {
            let time = calls(n);
            if time >= ROUND / 4 || n >= 1 << 40 {
                let scale = ROUND.as_secs_f64() / time.as_secs_f64().max(1e-9);
                return ((n as f64 * scale) as u64).max(1);
            }
            n *= 4;
        }
    }

    /// The pairings as a Markdown table.
    pub fn render(pairings: &[Pairing]) -> String {
        let mut out = format!(
            "| case | peer | ours / peer, median of {ROUNDS} paired rounds | lowest – highest |\n|---|---|---:|---:|\n"
        );
        for pairing in pairings {
            let (low, high) = pairing.range();
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {low:.2} – {high:.2} |",
                pairing.group,
                pairing.peer,
                pairing.median()
            );
        }
        out
    }
}

/// How the table treats one benchmark group.
#[derive(Debug, Clone, Copy)]
pub struct GroupSpec {
    /// Criterion group id.
    pub name: &'static str,
    /// The id whose time is the numerator of the `ours / this` ratio.
    pub ours: &'static str,
    /// The id whose time is subtracted for the "overhead" column, if any.
    pub baseline: Option<&'static str>,
    /// Row order; ids not listed follow in alphabetical order.
    pub order: &'static [&'static str],
    /// Footnote printed under the table for this group.
    pub note: &'static str,
}

/// Every group of the `compare` benchmark, in table order.
pub const GROUPS: &[GroupSpec] = &[
    GroupSpec {
        name: groups::CLOSED_1T,
        ours: ids::OURS_DIRECT,
        baseline: Some(ids::BARE),
        order: &[
            ids::BARE,
            ids::OURS_DIRECT,
            ids::OURS_MACRO,
            ids::OURS_KEYED,
            ids::OURS_MACRO_KEYED,
            ids::FAILSAFE,
            ids::RECLOSER,
            ids::CIRCUITBREAKER_RS,
        ],
        note: "one thread, breaker closed, protected fn always succeeds; \
               the keyed rows look up an existing key (\"gpt-4o\") among 8",
    },
    GroupSpec {
        name: groups::CLOSED_2T,
        ours: ids::OURS_DIRECT,
        baseline: Some(ids::BARE),
        order: &[
            ids::BARE,
            ids::OURS_DIRECT,
            ids::FAILSAFE,
            ids::RECLOSER,
            ids::CIRCUITBREAKER_RS,
        ],
        note: "two threads share one breaker; time = wall time / (2 x iters), \
               i.e. per call of total throughput (perfect scaling = half of closed_1t)",
    },
    GroupSpec {
        name: groups::OPEN_REJECT,
        ours: ids::OURS_DIRECT,
        baseline: None,
        order: &[
            ids::OURS_DIRECT,
            ids::FAILSAFE,
            ids::RECLOSER,
            ids::CIRCUITBREAKER_RS,
            ids::TOWER_RESILIENCE,
        ],
        note: "breaker tripped by failures, 1 h recovery; every call is rejected \
               (tower-resilience runs inside one block_on on a current-thread runtime)",
    },
    GroupSpec {
        name: groups::ASYNC_TIMEOUT,
        ours: ids::OURS_DIRECT,
        baseline: Some(ids::BARE),
        order: &[
            ids::BARE,
            ids::OURS_DIRECT,
            ids::OURS_MACRO,
            ids::FAILSAFE,
            ids::RECLOSER,
            ids::TOWER_RESILIENCE,
        ],
        note: "current-thread tokio runtime, one block_on per sample; \
               every case awaits tokio::time::timeout(30 s) around the fn",
    },
    GroupSpec {
        name: groups::RATE_LIMIT,
        ours: ids::OURS_RATE_LIMIT,
        baseline: None,
        order: &[ids::OURS_RATE_LIMIT, ids::GOVERNOR],
        note: "check() with a quota that never denies; 2t = wall time / (2 x iters)",
    },
    GroupSpec {
        name: groups::SCALE,
        ours: ids::STATUS_10K,
        baseline: None,
        order: &[ids::STATUS_10K, ids::STATUS_10K_KEYED],
        note: "one `status()` snapshot of 10 000 registered breakers (target: under 10 ms = 10 000 000 ns)",
    },
    GroupSpec {
        name: groups::TOWER_LAYER,
        ours: ids::OURS_DIRECT,
        baseline: Some(ids::BARE),
        order: &[ids::BARE, ids::OURS_DIRECT, ids::TOWER_RESILIENCE],
        note: "a trivial service_fn behind breaker_runtime::tower::CircuitBreakerLayer \
               (ours_direct, default config: 30 s timeout armed) or tower-resilience's layer; \
               current-thread tokio runtime, one block_on per sample",
    },
];

/// One criterion result: where it belongs and its headline time.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Criterion group id.
    pub group: String,
    /// Criterion function id.
    pub function: String,
    /// Criterion parameter (`BenchmarkId::new(function, param)`), if any.
    pub param: Option<String>,
    /// Point estimate in nanoseconds per iteration.
    pub ns: f64,
    /// Lower bound of the confidence interval, in nanoseconds.
    pub lower_ns: f64,
    /// Upper bound of the confidence interval, in nanoseconds.
    pub upper_ns: f64,
}

impl Estimate {
    /// Reads criterion's `benchmark.json` and `estimates.json` contents.
    ///
    /// The headline statistic is the one criterion prints: the slope of the
    /// linear regression when it exists (linear sampling), the mean otherwise.
    ///
    /// # Errors
    ///
    /// Returns a description when either document lacks a field it needs.
    pub fn from_criterion_json(
        benchmark: &serde_json::Value,
        estimates: &serde_json::Value,
    ) -> Result<Self, String> {
        let text = |key: &str| {
            benchmark
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let group = text("group_id").ok_or("benchmark.json: no `group_id`")?;
        let function = text("function_id").ok_or("benchmark.json: no `function_id`")?;
        let param = text("value_str");
        let statistic = estimates
            .get("slope")
            .filter(|slope| !slope.is_null())
            .or_else(|| estimates.get("mean"))
            .ok_or("estimates.json: neither `slope` nor `mean`")?;
        let number = |pointer: &str| {
            statistic
                .pointer(pointer)
                .and_then(serde_json::Value::as_f64)
                .ok_or_else(|| format!("estimates.json: no `{pointer}`"))
        };
        Ok(Self {
            group,
            function,
            param,
            ns: number("/point_estimate")?,
            lower_ns: number("/confidence_interval/lower_bound")?,
            upper_ns: number("/confidence_interval/upper_bound")?,
        })
    }
}

/// Renders the results as one Markdown table, grouped as in [`GROUPS`].
///
/// Groups that are not in [`GROUPS`] follow, without ratios. A group whose
/// `ours` id has no result for a row's parameter shows `n/a` in the ratio
/// column and says so under the table.
pub fn render_markdown(estimates: &[Estimate]) -> String {
    let mut group_names: Vec<&str> = GROUPS.iter().map(|spec| spec.name).collect();
    let mut unknown: Vec<&str> = estimates
        .iter()
        .map(|e| e.group.as_str())
        .filter(|name| !group_names.contains(name))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    group_names.extend(unknown);

    let mut out = String::new();
    let mut notes = Vec::new();
    out.push_str(
        "| case | implementation | time/call (ns) | 95% CI (ns) | overhead vs baseline (ns) | ours / this |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|\n");

    for name in group_names {
        let spec = GROUPS.iter().find(|spec| spec.name == name);
        let mut rows: Vec<&Estimate> = estimates.iter().filter(|e| e.group == name).collect();
        if rows.is_empty() {
            continue;
        }
        let rank = |function: &str| {
            spec.and_then(|spec| spec.order.iter().position(|id| *id == function))
                .unwrap_or(usize::MAX)
        };
        rows.sort_by(|a, b| {
            (&a.param, rank(&a.function), &a.function).cmp(&(
                &b.param,
                rank(&b.function),
                &b.function,
            ))
        });
        let find = |function: Option<&str>, param: &Option<String>| {
            function.and_then(|function| {
                rows.iter()
                    .find(|e| e.function == function && e.param == *param)
                    .copied()
            })
        };

        let mut ours_missing = false;
        for row in &rows {
            let case = match &row.param {
                Some(param) => format!("{name} ({param})"),
                None => name.to_owned(),
            };
            let overhead = match find(spec.and_then(|s| s.baseline), &row.param) {
                Some(base) if base.function != row.function => {
                    format!("{:+.1}", row.ns - base.ns)
                }
                _ => String::from("-"),
            };
            let ratio = match find(spec.map(|s| s.ours), &row.param) {
                Some(ours) => format!("{:.2}", ours.ns / row.ns),
                None => {
                    ours_missing = true;
                    String::from("n/a")
                }
            };
            let _ = writeln!(
                out,
                "| {case} | {} | {:.1} | {:.1} – {:.1} | {overhead} | {ratio} |",
                row.function, row.ns, row.lower_ns, row.upper_ns
            );
        }

        if let Some(spec) = spec {
            let mut note = format!("`{name}`: {}.", spec.note);
            if ours_missing {
                let _ = write!(
                    note,
                    " Ours (`{}`) not measured yet: absolute times only.",
                    spec.ours
                );
            }
            notes.push(note);
        }
    }

    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push_str(
            "- `ours / this` < 1 means ours is faster; the `ours` row itself shows 1.00.\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimate(group: &str, function: &str, param: Option<&str>, ns: f64) -> Estimate {
        Estimate {
            group: group.to_owned(),
            function: function.to_owned(),
            param: param.map(str::to_owned),
            ns,
            lower_ns: ns * 0.9,
            upper_ns: ns * 1.1,
        }
    }

    #[test]
    fn without_ours_the_table_shows_absolute_times_and_says_why() {
        let table = render_markdown(&[
            estimate(groups::CLOSED_1T, ids::FAILSAFE, None, 40.0),
            estimate(groups::CLOSED_1T, ids::BARE, None, 1.0),
        ]);
        let rows: Vec<&str> = table.lines().skip(2).take(2).collect();
        assert_eq!(
            rows,
            [
                "| closed_1t | bare | 1.0 | 0.9 – 1.1 | - | n/a |",
                "| closed_1t | failsafe | 40.0 | 36.0 – 44.0 | +39.0 | n/a |",
            ]
        );
        assert!(table.contains("Ours (`ours_direct`) not measured yet"));
    }

    #[test]
    fn with_ours_every_row_of_the_same_parameter_gets_a_ratio() {
        let table = render_markdown(&[
            estimate(
                groups::RATE_LIMIT,
                ids::GOVERNOR,
                Some(ids::ONE_THREAD),
                20.0,
            ),
            estimate(
                groups::RATE_LIMIT,
                ids::GOVERNOR,
                Some(ids::TWO_THREADS),
                40.0,
            ),
            estimate(
                groups::RATE_LIMIT,
                ids::OURS_RATE_LIMIT,
                Some(ids::ONE_THREAD),
                10.0,
            ),
        ]);
        assert!(table.contains("| rate_limit (1t) | ours | 10.0 | 9.0 – 11.0 | - | 1.00 |"));
        assert!(table.contains("| rate_limit (1t) | governor | 20.0 | 18.0 – 22.0 | - | 0.50 |"));
        assert!(table.contains("| rate_limit (2t) | governor | 40.0 | 36.0 – 44.0 | - | n/a |"));
    }

    #[test]
    fn a_pairing_reports_the_median_round_and_the_range() {
        let pairing = paired::Pairing {
            group: groups::CLOSED_1T,
            peer: ids::FAILSAFE,
            ratios: vec![0.12, 0.08, 0.3, 0.09, 0.1],
        };
        assert_eq!(pairing.median(), 0.1);
        assert_eq!(pairing.range(), (0.08, 0.3));
        let table = paired::render(&[pairing]);
        assert!(
            table.contains("| closed_1t | failsafe | 0.10 | 0.08 – 0.30 |"),
            "{table}"
        );
    }

    #[test]
    fn paired_rounds_alternate_and_divide_time_per_call() {
        // Ours takes 2 ns a call, the peer 10 ns: every round says 0.2.
        let pairing = paired::pair(
            groups::CLOSED_1T,
            ids::RECLOSER,
            |calls| std::time::Duration::from_nanos(2 * calls),
            |calls| std::time::Duration::from_nanos(10 * calls),
        );
        assert_eq!(pairing.ratios.len(), paired::ROUNDS);
        assert!(
            pairing.ratios.iter().all(|r| (r - 0.2).abs() < 1e-9),
            "{:?}",
            pairing.ratios
        );
    }

    #[test]
    fn the_headline_is_the_slope_when_criterion_has_one_and_the_mean_otherwise() {
        let benchmark = serde_json::json!({
            "group_id": "closed_1t", "function_id": "recloser", "value_str": null
        });
        let stat = |ns: f64| {
            serde_json::json!({
                "point_estimate": ns,
                "confidence_interval": { "lower_bound": ns - 1.0, "upper_bound": ns + 1.0 }
            })
        };
        let with_slope = serde_json::json!({ "mean": stat(9.0), "slope": stat(7.0) });
        let without = serde_json::json!({ "mean": stat(9.0), "slope": null });
        let parsed = Estimate::from_criterion_json(&benchmark, &with_slope).unwrap();
        assert_eq!((parsed.ns, parsed.param), (7.0, None));
        let parsed = Estimate::from_criterion_json(&benchmark, &without).unwrap();
        assert_eq!(parsed.ns, 9.0);
    }
}
