//! The process-global registry: one breaker per name, shared by every call
//! site, and the status snapshot that monitoring reads.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use serde::Serialize;

use crate::breaker::{CircuitBreaker, SystemNow};
use crate::config::{CircuitBreakerConfig, ConfigError};
use crate::events::{self, EventKind};
use crate::family::Family;
use crate::metrics::Metrics;
use crate::state::DetailedState;

/// Named breakers, shared process-wide. Get it with [`registry()`].
#[derive(Debug, Default)]
pub struct Registry {
    /// Sorted by name, so the status needs no sort (and no moving of
    /// large snapshots).
    entries: RwLock<BTreeMap<Box<str>, Entry>>,
    /// Keyed families, by name (see [`Registry::family`]).
    families: RwLock<BTreeMap<Box<str>, FamilyEntry>>,
}

#[derive(Debug)]
struct FamilyEntry {
    family: Family,
    /// Configurations asked for under this name that differ from the
    /// family's, each recorded once.
    conflicts: Vec<CircuitBreakerConfig>,
}

impl FamilyEntry {
    fn new(family: Family) -> Self {
        Self {
            family,
            conflicts: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    breaker: CircuitBreaker,
    /// Configurations asked for under this name that differ from the one
    /// kept, each recorded once.
    conflicts: Vec<CircuitBreakerConfig>,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);

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

    /// The breaker named `name`, if registered. A family's member is found
    /// by its full name, `family[key]`.
    pub fn get(&self, name: &str) -> Option<CircuitBreaker> {
        if let Some(entry) = self.entries.read().get(name) {
            return Some(entry.breaker.clone());
        }
        let (family, key) = name.strip_suffix(']')?.split_once('[')?;
        self.families.read().get(family)?.family.get(key)
    }

    /// The keyed family named `name`, registering it with `config` and the
    /// default bound ([`DEFAULT_MAX_KEYS`](crate::DEFAULT_MAX_KEYS)) if
    /// absent. Its members are breakers named `name[key]`.
    ///
    /// If it exists with a different configuration, the existing family is
    /// returned unchanged and the conflict is emitted as an
    /// [`EventKind::ConfigConflict`], as for breakers.
    ///
    /// # Errors
    /// `config`'s first invalid field.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreakerConfig, registry};
    ///
    /// let llm = registry().family("registry-family-doc", CircuitBreakerConfig::default())?;
    /// let member = llm.breaker("gpt-4o").expect("room for a key");
    /// assert_eq!(member.name(), "registry-family-doc[gpt-4o]");
    /// assert!(registry().get("registry-family-doc[gpt-4o]").unwrap().ptr_eq(&member));
    /// assert!(registry().status().breakers.iter().any(|b| b.key.as_deref() == Some("gpt-4o")));
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn family(&self, name: &str, config: CircuitBreakerConfig) -> Result<Family, ConfigError> {
        config.validate()?;
        if let Some(entry) = self.families.read().get(name) {
            if entry.family.config() == &config {
                return Ok(entry.family.clone());
            }
        }
        let mut families = self.families.write();
        let entry = match families.entry(name.into()) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(FamilyEntry::new(Family::new(name, config.clone())?))
            }
        };
        let family = entry.family.clone();
        if family.config() != &config && !entry.conflicts.contains(&config) {
            let requested = format!("{config:?}");
            entry.conflicts.push(config);
            drop(families);
            events::emit(name, EventKind::ConfigConflict { requested });
        }
        Ok(family)
    }

    /// Registers a family built by hand (with its own bound, idleness or a
    /// [`ManualClock`](crate::ManualClock)), so that `key = ...` functions
    /// naming it use it.
    ///
    /// # Errors
    /// The family already registered under that name, left in place.
    pub fn register_family(&self, family: Family) -> Result<Family, Family> {
        let mut families = self.families.write();
        if let Some(existing) = families.get(family.name()) {
            return Err(existing.family.clone());
        }
        families.insert(family.name().into(), FamilyEntry::new(family.clone()));
        Ok(family)
    }

    /// The family named `name`, if registered.
    pub fn get_family(&self, name: &str) -> Option<Family> {
        self.families.read().get(name).map(|e| e.family.clone())
    }

    /// Removes the family named `name`. Call sites that already hold it
    /// keep using it.
    pub fn remove_family(&self, name: &str) -> Option<Family> {
        self.families.write().remove(name).map(|e| e.family)
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

    /// Removes the breaker named `name`. Call sites that already hold it keep
    /// using it; new lookups get a fresh one.
    pub fn remove(&self, name: &str) -> Option<CircuitBreaker> {
        self.entries.write().remove(name).map(|e| e.breaker)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.read().keys().map(|k| k.to_string()).collect()
    }

    /// A snapshot of every breaker, sorted by name. A family's members
    /// come together, sorted by key, where the family's name sorts; each
    /// has its [`family`](BreakerStatus::family) and
    /// [`key`](BreakerStatus::key).
    pub fn status(&self) -> RegistryStatus {
        // Snapshotting under the read lock is safe: a breaker's own lock is
        // never held while the registry's is taken.
        // One reading of the system clock serves every breaker on it.
        let mut now = SystemNow::default();
        let families: Vec<(Family, Vec<CircuitBreakerConfig>)> = self
            .families
            .read()
            .values()
            .map(|e| (e.family.clone(), e.conflicts.clone()))
            .collect();
        let entries = self.entries.read();
        let mut breakers = Vec::with_capacity(entries.len());
        let mut family_status = Vec::with_capacity(families.len());
        let mut families = families.into_iter().peekable();
        let mut add_family = |(family, conflicts): (Family, Vec<CircuitBreakerConfig>),
                              breakers: &mut Vec<BreakerStatus>,
                              now: &mut SystemNow| {
            let mut members = family.members();
            members.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            family_status.push(FamilyStatus {
                name: Arc::from(family.name()),
                keys: members.len(),
                max_keys: family.max_keys(),
                idle_after: family.idle_after(),
                refused_keys: family.refused_keys(),
                evicted_keys: family.evicted_keys(),
                config_conflicts: conflicts.clone(),
            });
            let name: Arc<str> = Arc::from(family.name());
            breakers.extend(members.into_iter().map(|(key, breaker)| BreakerStatus {
                family: Some(Arc::clone(&name)),
                key: Some(key),
                ..BreakerStatus::new(&breaker, conflicts.clone(), now)
            }));
        };
        for (name, entry) in entries.iter() {
            while let Some(family) = families.next_if(|(f, _)| f.name() <= &**name) {
                add_family(family, &mut breakers, &mut now);
            }
            breakers.push(BreakerStatus::new(
                &entry.breaker,
                entry.conflicts.clone(),
                &mut now,
            ));
        }
        drop(entries);
        for family in families {
            add_family(family, &mut breakers, &mut now);
        }
        RegistryStatus {
            breakers,
            families: family_status,
        }
    }
}

/// Every breaker's state, configuration and metrics at one moment.
/// `Display` prints an aligned table; `Serialize` gives JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegistryStatus {
    /// One entry per breaker, sorted by name; a family's members together,
    /// sorted by key.
    pub breakers: Vec<BreakerStatus>,
    /// One entry per keyed family, sorted by name.
    pub families: Vec<FamilyStatus>,
}

/// One keyed family in a [`RegistryStatus`]; its members are in
/// [`RegistryStatus::breakers`], with [`BreakerStatus::family`] set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FamilyStatus {
    /// The family's name.
    pub name: Arc<str>,
    /// Its members now.
    pub keys: usize,
    /// The most members it holds.
    pub max_keys: usize,
    /// How long a member goes without calls before it may be evicted.
    #[serde(serialize_with = "crate::config::secs")]
    pub idle_after: std::time::Duration,
    /// New keys refused so far because it was full.
    pub refused_keys: u64,
    /// Members evicted as idle so far.
    pub evicted_keys: u64,
    /// Different configurations other call sites asked for under this
    /// name (they got this family, unchanged); each member lists them too.
    pub config_conflicts: Vec<CircuitBreakerConfig>,
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
    /// For a member of a keyed family, the family's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<Arc<str>>,
    /// For a member of a keyed family, its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Arc<str>>,
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
            family: None,
            key: None,
        }
    }
}

impl RegistryStatus {
    /// The table's heading row for a family: its name and its bound.
    fn family_row(&self, family: &str) -> [String; 11] {
        let mut row: [String; 11] = Default::default();
        row[0] = family.to_owned();
        row[1] = "family".to_owned();
        if let Some(f) = self.families.iter().find(|f| &*f.name == family) {
            row[10] = format!(
                "{} of {} keys; {} refused; {} evicted",
                f.keys, f.max_keys, f.refused_keys, f.evicted_keys
            );
            if !f.config_conflicts.is_empty() {
                row[10].push_str("; CONFIG CONFLICT");
            }
        }
        row
    }
}

impl fmt::Display for RegistryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEADER: [&str; 11] = [
            "BREAKER", "STATE", "CALLS", "OK", "FAILED", "REJECTED", "LOCAL-RL", "FALLBACK",
            "SUCCESS", "AVG", "NOTES",
        ];
        let mut rows: Vec<[String; 11]> = Vec::with_capacity(self.breakers.len());
        let mut current_family: Option<&str> = None;
        for b in &self.breakers {
            if let Some(family) = b.family.as_deref() {
                if current_family != Some(family) {
                    rows.push(self.family_row(family));
                }
            }
            current_family = b.family.as_deref();
            rows.push({
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
                    if b.family.is_some() {
                        format!("  {}", b.name)
                    } else {
                        b.name.to_string()
                    },
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
            });
        }
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
