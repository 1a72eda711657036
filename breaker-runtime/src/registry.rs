//! The process-global registry: one breaker per name, shared by every call
//! site, and the status snapshot that monitoring reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use serde::Serialize;

use crate::breaker::{CircuitBreaker, SystemNow};
use crate::config::{CircuitBreakerConfig, ConfigError};
use crate::events::{self, EventKind};
use crate::metrics::Metrics;
use crate::state::DetailedState;

/// Named breakers, shared process-wide. Get it with [`registry()`].
#[derive(Debug, Default)]
pub struct Registry {
    /// Sorted by name, so the status needs no sort (and no moving of
    /// large snapshots).
    entries: RwLock<BTreeMap<Box<str>, Entry>>,
}

#[derive(Debug)]
struct Entry {
    breaker: CircuitBreaker,
    /// Configurations asked for under this name that differ from the one
    /// kept, each recorded once.
    conflicts: Vec<CircuitBreakerConfig>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

/// How many times a breaker has been put in place of another
/// ([`Registry::replace`]). While it is 0, as in a service that never
/// replaces one, a call site trusts the breaker it resolved without a
/// look at the registry.
/// On a cache line of its own, so that no write to a neighbouring static
/// (the coarse clock's ticks, say) evicts it from the readers' caches.
static REPLACEMENTS: OwnLine = OwnLine(AtomicU64::new(0));

#[repr(align(128))]
struct OwnLine(AtomicU64);

/// [`REPLACEMENTS`], for call sites.
#[inline]
pub(crate) fn replacements() -> u64 {
    // Relaxed: see `Registry::replace`.
    REPLACEMENTS.0.load(Ordering::Relaxed)
}

/// The process-global registry, created on first use.
///
/// `std::sync::LazyLock` does this job since Rust 1.80, so the crate needs
/// no `once_cell`.
///
/// ```
/// use breaker_runtime::{CircuitBreakerConfig, registry};
///
/// let llm = registry().get_or_register("registry-doc-llm", CircuitBreakerConfig::default())?;
/// let again = registry().get("registry-doc-llm").expect("registered");
/// assert!(llm.ptr_eq(&again), "one name, one breaker");
///
/// let status = registry().status();
/// assert!(status.breakers.iter().any(|b| &*b.name == "registry-doc-llm"));
/// println!("{status}"); // an aligned table
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
pub fn registry() -> &'static Registry {
    &REGISTRY
}

impl Registry {
    /// A new, empty registry, for code that wants its own namespace (most
    /// code uses [`registry()`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The breaker named `name`, if registered.
    pub fn get(&self, name: &str) -> Option<CircuitBreaker> {
        self.entries.read().get(name).map(|e| e.breaker.clone())
    }

    /// The breaker named `name`, registering it with `config` if absent.
    ///
    /// If it exists with a different configuration, the existing breaker is
    /// returned unchanged: the conflict is emitted as an
    /// [`EventKind::ConfigConflict`] and listed in the status, never merged.
    ///
    /// # Errors
    /// `config`'s first invalid field, whether or not the name exists.
    pub fn get_or_register(
        &self,
        name: &str,
        config: CircuitBreakerConfig,
    ) -> Result<CircuitBreaker, ConfigError> {
        config.validate()?;
        if let Some(entry) = self.entries.read().get(name) {
            if entry.breaker.config() == &config {
                return Ok(entry.breaker.clone());
            }
        }
        let mut entries = self.entries.write();
        if let Some(entry) = entries.get_mut(name) {
            let breaker = entry.breaker.clone();
            if breaker.config() != &config && !entry.conflicts.contains(&config) {
                let requested = format!("{config:?}");
                entry.conflicts.push(config);
                drop(entries);
                events::emit(name, EventKind::ConfigConflict { requested });
            }
            return Ok(breaker);
        }
        let breaker = CircuitBreaker::new(name, config)?;
        entries.insert(
            name.into(),
            Entry {
                breaker: breaker.clone(),
                conflicts: Vec::new(),
            },
        );
        Ok(breaker)
    }

    /// Registers a breaker built by hand (say, on a
    /// [`ManualClock`](crate::ManualClock)), so that annotated functions
    /// naming it use it.
    ///
    /// # Errors
    /// The breaker already registered under that name, left in place.
    pub fn register(&self, breaker: CircuitBreaker) -> Result<CircuitBreaker, CircuitBreaker> {
        let mut entries = self.entries.write();
        if let Some(entry) = entries.get(breaker.name()) {
            return Err(entry.breaker.clone());
        }
        entries.insert(
            breaker.name().into(),
            Entry {
                breaker: breaker.clone(),
                conflicts: Vec::new(),
            },
        );
        Ok(breaker)
    }

    /// Puts `breaker` under its name in place of the breaker registered
    /// there, if any, and returns that one. Every call site of an annotated
    /// function naming it uses `breaker` from its next call on, even a site
    /// that already ran: this is how a test puts a named breaker on a
    /// [`ManualClock`](crate::ManualClock) whatever ran before it (see
    /// [`replace_clock`](Self::replace_clock) for the short way).
    ///
    /// Meant for tests and for rare reconfiguration, not for every request:
    /// once any breaker has been replaced, each annotated call first checks
    /// that its site's breaker is still the registered one (a load, and a
    /// lookup under the registry's read lock the first time after each
    /// replacement, or on every call for a site whose breaker was replaced).
    /// A call already running finishes on the breaker it started with.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, registry};
    ///
    /// let first = registry().get_or_register("replace-doc", CircuitBreakerConfig::default())?;
    /// let second = CircuitBreaker::new("replace-doc", CircuitBreakerConfig::default())?;
    /// let old = registry().replace(second.clone()).expect("one was registered");
    /// assert!(old.ptr_eq(&first));
    /// assert!(registry().get("replace-doc").unwrap().ptr_eq(&second));
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn replace(&self, breaker: CircuitBreaker) -> Option<CircuitBreaker> {
        let mut entries = self.entries.write();
        let old = entries.insert(
            breaker.name().into(),
            Entry {
                breaker,
                conflicts: Vec::new(),
            },
        );
        // Relaxed: a site that sees the new count takes the registry's
        // lock to find the breaker, which orders the insert before it; a
        // thread that learnt of the replacement through any other
        // synchronisation sees the count too.
        REPLACEMENTS.0.fetch_add(1, Ordering::Relaxed);
        old.map(|entry| entry.breaker)
    }

    /// Replaces the breaker named `name` with a fresh one, with the same
    /// configuration, on `clock` (a [`ManualClock`](crate::ManualClock), in
    /// a test), and returns the new one; `None`, changing nothing, if no
    /// breaker has that name. The fresh breaker starts closed, with no
    /// counts.
    ///
    /// An annotated function's breaker is registered by its first call, and
    /// that call site keeps it; a breaker registered by hand *after* that
    /// would be ignored. This works whatever ran before, in this test or in
    /// another one of the same binary:
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::{BreakerError, CircuitState, ManualClock, circuit_breaker, registry};
    /// # #[derive(Debug)] struct E(BreakerError);
    /// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
    ///
    /// #[circuit_breaker(
    ///     name = "replace-clock-doc",
    ///     failure_threshold = 1,
    ///     recovery_timeout = 30,
    ///     success_threshold = 1
    /// )]
    /// fn call(fail: bool) -> Result<(), E> {
    ///     if fail { Err(E(BreakerError::ForcedOpen { name: "db".into() })) } else { Ok(()) }
    /// }
    ///
    /// call(false).unwrap(); // the site has its breaker, on the system clock
    /// let clock = ManualClock::new();
    /// let breaker = registry().replace_clock("replace-clock-doc", clock.clone()).unwrap();
    /// assert!(call(true).is_err());
    /// assert_eq!(breaker.state(), CircuitState::Open);
    /// clock.advance(Duration::from_secs(30));
    /// call(false).unwrap();
    /// assert_eq!(breaker.state(), CircuitState::Closed);
    /// ```
    pub fn replace_clock(&self, name: &str, clock: impl crate::Clock) -> Option<CircuitBreaker> {
        let config = self.get(name)?.config().clone();
        let fresh = CircuitBreaker::builder(name)
            .config(config)
            .clock(clock)
            .build()
            .expect("a registered breaker's configuration was validated when it was built");
        self.replace(fresh.clone());
        Some(fresh)
    }

    /// Removes the breaker named `name`. Call sites that already hold it keep
    /// using it; new lookups get a fresh one.
    pub fn remove(&self, name: &str) -> Option<CircuitBreaker> {
        self.entries.write().remove(name).map(|e| e.breaker)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.read().keys().map(|k| k.to_string()).collect()
    }

    /// A snapshot of every breaker, sorted by name.
    pub fn status(&self) -> RegistryStatus {
        // Snapshotting under the read lock is safe: a breaker's own lock is
        // never held while the registry's is taken.
        // One reading of the system clock serves every breaker on it.
        let mut now = SystemNow::default();
        let breakers = self
            .entries
            .read()
            .values()
            .map(|e| BreakerStatus::new(&e.breaker, e.conflicts.clone(), &mut now))
            .collect();
        RegistryStatus { breakers }
    }
}

/// Every breaker's state, configuration and metrics at one moment.
/// `Display` prints an aligned table; `Serialize` gives JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistryStatus {
    /// One entry per breaker, sorted by name.
    pub breakers: Vec<BreakerStatus>,
}

/// One breaker in a [`RegistryStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerStatus {
    /// Its name (shared with the breaker).
    pub name: Arc<str>,
    /// Its state, telling forced states apart.
    pub state: DetailedState,
    /// The configuration in force.
    pub config: CircuitBreakerConfig,
    /// Its metrics.
    pub metrics: Metrics,
    /// Different configurations other call sites asked for under this name
    /// (they got this breaker, unchanged).
    pub config_conflicts: Vec<CircuitBreakerConfig>,
}

impl BreakerStatus {
    /// The status of one breaker, whether registered or not.
    pub fn of(breaker: &CircuitBreaker) -> Self {
        Self::new(breaker, Vec::new(), &mut SystemNow::default())
    }

    fn new(
        breaker: &CircuitBreaker,
        config_conflicts: Vec<CircuitBreakerConfig>,
        now: &mut SystemNow,
    ) -> Self {
        let metrics = breaker.metrics_at(now);
        Self {
            name: Arc::clone(&breaker.inner.name),
            state: metrics.detailed_state,
            config: breaker.config().clone(),
            metrics,
            config_conflicts,
        }
    }
}

impl fmt::Display for RegistryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEADER: [&str; 11] = [
            "BREAKER", "STATE", "CALLS", "OK", "FAILED", "REJECTED", "LOCAL-RL", "FALLBACK",
            "SUCCESS", "AVG", "NOTES",
        ];
        let rows: Vec<[String; 11]> = self
            .breakers
            .iter()
            .map(|b| {
                let m = &b.metrics;
                let mut notes = Vec::new();
                if m.consecutive_failures > 0 {
                    let plural = if m.consecutive_failures == 1 { "" } else { "s" };
                    notes.push(format!(
                        "{} consecutive failure{plural}",
                        m.consecutive_failures
                    ));
                }
                if let Some(last) = m.last_failure {
                    notes.push(format!(
                        "last failure {} {:.1?} ago",
                        last.failure_type, last.age
                    ));
                }
                if !b.config_conflicts.is_empty() {
                    notes.push(format!(
                        "CONFIG CONFLICT ({} other config{})",
                        b.config_conflicts.len(),
                        if b.config_conflicts.len() == 1 {
                            ""
                        } else {
                            "s"
                        }
                    ));
                }
                [
                    b.name.to_string(),
                    b.state.to_string(),
                    m.total_calls.to_string(),
                    m.successful_calls.to_string(),
                    m.failed_calls.to_string(),
                    m.rejected_calls.to_string(),
                    m.local_rate_limited_calls.to_string(),
                    m.fallback_calls.to_string(),
                    format!("{:.1}%", m.success_rate * 100.0),
                    if m.average_response_time.is_zero() {
                        "-".to_owned()
                    } else {
                        format!("{:.1?}", m.average_response_time)
                    },
                    notes.join("; "),
                ]
            })
            .collect();
        let mut widths = HEADER.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
            let last = cells.len() - 1;
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                if i == last {
                    writeln!(f, "{cell}")?;
                } else if (2..=7).contains(&i) {
                    write!(f, "{cell:>width$}  ")?;
                } else {
                    write!(f, "{cell:<width$}  ")?;
                }
            }
            Ok(())
        };
        line(f, &HEADER)?;
        for row in &rows {
            line(f, &row.each_ref().map(String::as_str))?;
        }
        if rows.is_empty() {
            writeln!(f, "(no circuit breakers registered)")?;
        }
        Ok(())
    }
}
