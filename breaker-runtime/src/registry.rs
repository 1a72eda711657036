//! The process-global registry: one breaker per name, shared by every call
//! site, and the status snapshot that monitoring reads.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use serde::Serialize;

use crate::breaker::{CircuitBreaker, SystemNow};
use crate::clock::{Clock, ClockHandle};
use crate::config::{CircuitBreakerConfig, ConfigError};
use crate::events::{self, EventKind};
use crate::family::Family;
use crate::metrics::Metrics;
use crate::overrides::{ConfigOverrides, ConfigSources, OverrideError, OverrideErrors};
use crate::state::DetailedState;

/// Named breakers, shared process-wide. Get it with [`registry()`].
#[derive(Debug, Default)]
pub struct Registry {
    /// Sorted by name, so the status needs no sort (and no moving of
    /// large snapshots).
    entries: RwLock<BTreeMap<Box<str>, Entry>>,
    /// The run-time configuration, read from the process on the first
    /// registration unless [`load_config`](Self::load_config) (or a
    /// sibling) read it first.
    overrides: RwLock<Option<Arc<ConfigOverrides>>>,
    /// Clocks for names not registered yet ([`Registry::use_clock`]).
    clocks: RwLock<BTreeMap<Box<str>, ClockPreset>>,
    /// Keyed families, by name (see [`Registry::family`]).
    families: RwLock<BTreeMap<Box<str>, FamilyEntry>>,
    /// The Redis fleet every breaker registered here is shared through.
    #[cfg(feature = "redis")]
    /// Shared with the families made here, whose members are shared too.
    fleet: Arc<std::sync::OnceLock<crate::shared::RedisFleet>>,
}

/// The clock a breaker or family is built on ([`Registry::use_clock`]).
struct ClockPreset(ClockHandle);

impl fmt::Debug for ClockPreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClockPreset")
    }
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
    /// Where each value of the breaker's configuration came from.
    sources: ConfigSources,
    /// Why the run-time configuration was not applied, if it was not.
    override_errors: Vec<OverrideError>,
}

impl Entry {
    fn new(breaker: CircuitBreaker, resolved: Resolved) -> Self {
        Self {
            breaker,
            conflicts: Vec::new(),
            sources: resolved.sources,
            override_errors: resolved.errors,
        }
    }
}

/// A configuration with the run-time overrides applied, or, when they have
/// problems, the configuration asked for and the problems.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The configuration to build the breaker with.
    pub(crate) config: CircuitBreakerConfig,
    /// Where each of its values came from.
    pub(crate) sources: ConfigSources,
    /// Why the overrides were not applied, if they were not.
    pub(crate) errors: Vec<OverrideError>,
}

impl Resolved {
    /// The event to emit once the breaker exists, if the overrides were
    /// rejected.
    pub(crate) fn rejection(&self) -> Option<EventKind> {
        (!self.errors.is_empty()).then(|| EventKind::ConfigOverrideRejected {
            problems: OverrideErrors(self.errors.clone()).to_string(),
        })
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(global_registry);

/// The global registry, shared through the Redis server `BREAKER_REDIS_URL`
/// names, if it is set (feature `redis`). A URL that does not parse is
/// reported as a `tracing` error and the breakers stay local.
fn global_registry() -> Registry {
    let registry = Registry::default();
    #[cfg(feature = "redis")]
    match crate::shared::RedisFleet::from_env() {
        Some(Ok(fleet)) => {
            registry.share_through(&fleet);
        }
        Some(Err(error)) => tracing::error!(%error, "breakers are not shared"),
        None => {}
    }
    registry
}

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
        let base = config;
        let resolved = self.resolve_config(name, base.clone());
        let config = resolved.config.clone();
        if let Some(entry) = self.families.read().get(name) {
            if entry.family.config() == &config {
                return Ok(entry.family.clone());
            }
        }
        // Events go out after the lock is released: a listener may read
        // the registry.
        let mut emitted = Vec::new();
        let mut families = self.families.write();
        let entry = match families.entry(name.into()) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let builder = Family::builder(name)
                    .config(config.clone())
                    .run_time(base, self.overrides());
                #[cfg(feature = "redis")]
                let builder = builder.shared_through(Arc::clone(&self.fleet));
                let builder = match self.clocks.write().remove(name) {
                    Some(ClockPreset(clock)) => builder.clock_handle(clock),
                    None => builder,
                };
                let family = builder.build()?;
                emitted.extend(resolved.rejection());
                entry.insert(FamilyEntry::new(family))
            }
        };
        let family = entry.family.clone();
        if family.config() != &config && !entry.conflicts.contains(&config) {
            let requested = format!("{config:?}");
            entry.conflicts.push(config);
            emitted.push(EventKind::ConfigConflict { requested });
        }
        drop(families);
        for kind in emitted {
            events::emit(name, kind);
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
    /// The breaker is built with `config` overridden by the run-time
    /// configuration (`BREAKER_<NAME>__<FIELD>` variables and the TOML file
    /// `BREAKER_CONFIG` names; see the README's "Configuration at run
    /// time"). If that configuration has problems for this breaker, none of
    /// it applies: the breaker gets `config`, an
    /// [`EventKind::ConfigOverrideRejected`] is emitted, and the status
    /// lists the problems.
    ///
    /// If the name exists with a different (effective) configuration, the
    /// existing breaker is returned unchanged: the conflict is emitted as an
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
        let resolved = self.resolve_config(name, config);
        let config = resolved.config.clone();
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
        let builder = CircuitBreaker::builder(name).config(config);
        let breaker = match self.clocks.write().remove(name) {
            Some(ClockPreset(clock)) => builder.clock_handle(clock),
            None => builder,
        }
        .build()?;
        let rejected = resolved.rejection();
        entries.insert(name.into(), Entry::new(breaker.clone(), resolved));
        drop(entries);
        self.share_new(&breaker);
        if let Some(rejected) = rejected {
            events::emit(name, rejected);
        }
        Ok(breaker)
    }

    /// `base` with the run-time overrides for `name` applied, and where
    /// each value came from; the configuration is read on first use.
    ///
    /// # Errors
    /// Every problem of the run-time configuration that concerns `name`.
    #[allow(dead_code)] // for keyed families, which resolve member by member
    pub(crate) fn effective_config(
        &self,
        name: &str,
        base: &CircuitBreakerConfig,
    ) -> Result<(CircuitBreakerConfig, ConfigSources), OverrideErrors> {
        self.overrides().effective(name, base)
    }

    /// The configuration to register `name` with: [`effective_config`](Self::effective_config),
    /// or `base` and the problems when it has any (the documented policy).
    pub(crate) fn resolve_config(&self, name: &str, base: CircuitBreakerConfig) -> Resolved {
        match self.overrides().effective(name, &base) {
            Ok((config, sources)) => Resolved {
                config,
                sources,
                errors: Vec::new(),
            },
            Err(OverrideErrors(errors)) => Resolved {
                config: base,
                sources: ConfigSources::default(),
                errors,
            },
        }
    }

    /// The run-time configuration, read from the process the first time.
    fn overrides(&self) -> Arc<ConfigOverrides> {
        if let Some(overrides) = &*self.overrides.read() {
            return Arc::clone(overrides);
        }
        let mut slot = self.overrides.write();
        Arc::clone(slot.get_or_insert_with(|| Arc::new(ConfigOverrides::from_process())))
    }

    fn set_overrides(&self, overrides: ConfigOverrides) -> Result<(), OverrideErrors> {
        let problems = overrides.problems();
        *self.overrides.write() = Some(Arc::new(overrides));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(OverrideErrors(problems))
        }
    }

    /// Reads the run-time configuration now: the process's
    /// `BREAKER_<NAME>__<FIELD>` variables and the TOML file `BREAKER_CONFIG`
    /// names. Without this call it is read on the first registration.
    ///
    /// Call it at startup, before any breaker is used, to fail fast:
    /// breakers already registered keep their configuration.
    ///
    /// # Errors
    /// Every problem found: an unreadable file, bad TOML, an unknown key or
    /// variable (with the nearest valid one), a value that is malformed or
    /// out of its field's range. Checks between two fields of one breaker
    /// (`minimum_calls` against `sliding_window_size`) need the breaker's
    /// own configuration and happen when it is registered. The
    /// configuration is kept even so: breakers it concerns fall back to
    /// their attribute's values, and the status shows why.
    ///
    /// ```
    /// use breaker_runtime::Registry;
    ///
    /// let registry = Registry::new();
    /// // With no BREAKER_ variables set, there is nothing to refuse.
    /// # if std::env::vars().all(|(k, _)| !k.starts_with("BREAKER_")) {
    /// registry.load_config()?;
    /// # }
    /// # Ok::<(), breaker_runtime::OverrideErrors>(())
    /// ```
    pub fn load_config(&self) -> Result<(), OverrideErrors> {
        self.set_overrides(ConfigOverrides::from_process())
    }

    /// As [`load_config`](Self::load_config), with the TOML file at `path`
    /// in place of the one `BREAKER_CONFIG` names. The variables still win
    /// over the file.
    ///
    /// # Errors
    /// As [`load_config`](Self::load_config).
    pub fn load_config_file(&self, path: impl AsRef<Path>) -> Result<(), OverrideErrors> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        let overrides = match std::fs::read_to_string(path) {
            Ok(text) => ConfigOverrides::from_env_and_toml(vars, &label, &text),
            Err(error) => {
                let mut overrides = ConfigOverrides::from_env_and_toml(vars, &label, "");
                overrides.push_unreadable(label, &error);
                overrides
            }
        };
        self.set_overrides(overrides)
    }

    /// As [`load_config`](Self::load_config), with the TOML `text` (called
    /// `name` in messages) in place of the file `BREAKER_CONFIG` names.
    ///
    /// # Errors
    /// As [`load_config`](Self::load_config).
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreakerConfig, Registry, ValueSource};
    ///
    /// let registry = Registry::new();
    /// registry.load_config_toml("breaker.toml", "[llm]\nfailure_threshold = 10\n")?;
    /// # if std::env::vars().all(|(k, _)| !k.starts_with("BREAKER_")) {
    /// let llm = registry.get_or_register("llm", CircuitBreakerConfig::default())?;
    /// assert_eq!(llm.config().failure_threshold, 10);
    /// let status = registry.status();
    /// assert_eq!(
    ///     status.breakers[0].config_sources.get("failure_threshold"),
    ///     &ValueSource::File { path: "breaker.toml".into(), line: 2 },
    /// );
    ///
    /// let typo = registry.load_config_toml("breaker.toml", "[llm]\nfailur_threshold = 10\n");
    /// assert_eq!(
    ///     typo.unwrap_err().to_string(),
    ///     "unknown key `failur_threshold` in [llm] at breaker.toml:2; did you mean `failure_threshold`?",
    /// );
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_config_toml(&self, name: &str, text: &str) -> Result<(), OverrideErrors> {
        self.set_overrides(ConfigOverrides::from_env_and_toml(
            std::env::vars_os(),
            name,
            text,
        ))
    }

    /// Registers a breaker built by hand (say, on a
    /// [`ManualClock`](crate::ManualClock)), so that annotated functions
    /// naming it use it. It is taken as built: the run-time configuration
    /// does not apply to it (see [`use_clock`](Self::use_clock) for a
    /// breaker on a manual clock that keeps its effective configuration).
    ///
    /// # Errors
    /// The breaker already registered under that name, left in place.
    pub fn register(&self, breaker: CircuitBreaker) -> Result<CircuitBreaker, CircuitBreaker> {
        let mut entries = self.entries.write();
        if let Some(entry) = entries.get(breaker.name()) {
            return Err(entry.breaker.clone());
        }
        let resolved = Resolved {
            config: breaker.config().clone(),
            sources: ConfigSources::default(),
            errors: Vec::new(),
        };
        entries.insert(breaker.name().into(), Entry::new(breaker.clone(), resolved));
        drop(entries);
        self.share_new(&breaker);
        Ok(breaker)
    }

    /// Builds the breaker named `name`, when it is registered by
    /// [`get_or_register`](Self::get_or_register) (the path annotated
    /// functions take), on `clock` instead of the system clock; or the keyed
    /// family `name` and all its members, when it is made by
    /// [`family`](Self::family) (the path of `key = ...` functions). Its
    /// configuration is still the attribute's, with the run-time overrides.
    ///
    /// For tests that drive an annotated function's breaker through a
    /// [`ManualClock`](crate::ManualClock) without restating its
    /// configuration. It must run before the name's first registration
    /// (its first call), and applies to that registration only; it returns
    /// `false`, and does nothing, when the name is registered already.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::{CircuitBreakerConfig, CircuitState, ManualClock, Registry};
    ///
    /// let registry = Registry::new();
    /// let clock = ManualClock::new();
    /// assert!(registry.use_clock("use-clock-doc", clock.clone()));
    /// let config = CircuitBreakerConfig::builder().failure_threshold(1).build()?;
    /// let breaker = registry.get_or_register("use-clock-doc", config)?;
    /// let _ = breaker.call(|| Err::<(), _>("down"));
    /// assert_eq!(breaker.state(), CircuitState::Open);
    /// clock.advance(breaker.config().recovery_timeout);
    /// let _ = breaker.call(|| Ok::<_, &str>(()));
    /// assert_eq!(breaker.state(), CircuitState::HalfOpen, "time is the manual clock's");
    /// assert!(!registry.use_clock("use-clock-doc", clock), "already registered");
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn use_clock(&self, name: &str, clock: impl Clock + Clone) -> bool {
        let entries = self.entries.read();
        let families = self.families.read();
        if entries.contains_key(name) || families.contains_key(name) {
            return false;
        }
        // Under the entries' read lock, so no registration slips in between.
        self.clocks
            .write()
            .insert(name.into(), ClockPreset(ClockHandle::from_clock(clock)));
        true
    }

    /// The run-time settings (a file's table, a variable) for breaker names
    /// that no registered breaker has, each with the nearest registered
    /// name: a misspelt name, or a breaker not used yet. They are listed,
    /// not refused, since a breaker may be registered later; the status
    /// shows them too. Empty before the configuration is read.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreakerConfig, Registry};
    ///
    /// let registry = Registry::new();
    /// registry.load_config_toml("breaker.toml", "[lmm]\nfailure_threshold = 2\n")?;
    /// registry.get_or_register("llm", CircuitBreakerConfig::default())?;
    /// # if std::env::vars().all(|(k, _)| !k.starts_with("BREAKER_")) {
    /// assert_eq!(
    ///     registry.unmatched_overrides(),
    ///     ["[lmm] at breaker.toml:1 names no registered breaker; did you mean `llm`?"]
    /// );
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unmatched_overrides(&self) -> Vec<String> {
        let Some(overrides) = self.overrides.read().clone() else {
            return Vec::new();
        };
        let entries = self.entries.read();
        let families = self.families.read();
        // A family's name and its members' names are matched too.
        let members: Vec<String> = families
            .values()
            .flat_map(|entry| entry.family.members())
            .map(|(_, member)| member.name().to_owned())
            .collect();
        let names: Vec<&str> = entries
            .keys()
            .chain(families.keys())
            .map(|name| &**name)
            .chain(members.iter().map(String::as_str))
            .collect();
        overrides.unmatched(&names)
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
    /// # Errors
    /// `breaker` itself, changing nothing, when its name is a member's of a
    /// registered keyed family (`llm[gpt-4o]`): a family makes its members
    /// and calls only them, so a breaker put beside it would never be
    /// called. Put a family on a manual clock with
    /// [`use_clock`](Self::use_clock) before its first call, or register one
    /// built with [`Family::builder`](crate::Family::builder).
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, registry};
    ///
    /// let first = registry().get_or_register("replace-doc", CircuitBreakerConfig::default())?;
    /// let second = CircuitBreaker::new("replace-doc", CircuitBreakerConfig::default())?;
    /// let old = registry().replace(second.clone()).unwrap().expect("one was registered");
    /// assert!(old.ptr_eq(&first));
    /// assert!(registry().get("replace-doc").unwrap().ptr_eq(&second));
    ///
    /// registry().family("replace-doc-llm", CircuitBreakerConfig::default())?;
    /// let member = CircuitBreaker::new("replace-doc-llm[a]", CircuitBreakerConfig::default())?;
    /// assert!(registry().replace(member).is_err(), "a family's member is the family's");
    /// # Ok::<(), breaker_runtime::ConfigError>(())
    /// ```
    pub fn replace(
        &self,
        breaker: CircuitBreaker,
    ) -> Result<Option<CircuitBreaker>, CircuitBreaker> {
        if self.is_member_name(breaker.name()) {
            return Err(breaker);
        }
        let mut entries = self.entries.write();
        // A breaker with the configuration of the one it replaces (as from
        // `replace_clock`) keeps that configuration's sources; another is
        // taken as built, like a `register`ed one.
        let resolved = match entries.get(breaker.name()) {
            Some(old) if old.breaker.config() == breaker.config() => Resolved {
                config: breaker.config().clone(),
                sources: old.sources.clone(),
                errors: old.override_errors.clone(),
            },
            _ => Resolved {
                config: breaker.config().clone(),
                sources: ConfigSources::default(),
                errors: Vec::new(),
            },
        };
        self.share_new(&breaker);
        let old = entries.insert(breaker.name().into(), Entry::new(breaker, resolved));
        // Relaxed: a site that sees the new count takes the registry's
        // lock to find the breaker, which orders the insert before it; a
        // thread that learnt of the replacement through any other
        // synchronisation sees the count too.
        REPLACEMENTS.0.fetch_add(1, Ordering::Relaxed);
        Ok(old.map(|entry| entry.breaker))
    }

    /// Whether `name` is `family[key]` for a registered keyed family.
    fn is_member_name(&self, name: &str) -> bool {
        name.strip_suffix(']')
            .and_then(|rest| rest.split_once('['))
            .is_some_and(|(family, _)| self.families.read().contains_key(family))
    }

    /// Replaces the breaker named `name` with a fresh one, with the same
    /// configuration, on `clock` (a [`ManualClock`](crate::ManualClock), in
    /// a test), and returns the new one; `None`, changing nothing, if no
    /// breaker is registered under that name (a keyed family's member is
    /// not: see [`replace`](Self::replace)'s errors). The fresh breaker
    /// starts closed, with no counts.
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
        let config = self.entries.read().get(name)?.breaker.config().clone();
        let fresh = CircuitBreaker::builder(name)
            .config(config)
            .clock(clock)
            .build()
            .expect("a registered breaker's configuration was validated when it was built");
        self.replace(fresh.clone()).ok()?;
        Some(fresh)
    }

    /// Removes the breaker named `name`. Call sites that already hold it keep
    /// using it; new lookups get a fresh one.
    pub fn remove(&self, name: &str) -> Option<CircuitBreaker> {
        self.entries.write().remove(name).map(|e| e.breaker)
    }

    /// The names of every breaker, sorted: the registered breakers and the
    /// members of the keyed families (`llm[gpt-4o]`), as in the status.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreakerConfig, Registry};
    ///
    /// let registry = Registry::new();
    /// registry.get_or_register("db", CircuitBreakerConfig::default())?;
    /// registry.family("llm", CircuitBreakerConfig::default())?.breaker("gpt-4o")?;
    /// assert_eq!(registry.names(), ["db", "llm[gpt-4o]"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.entries.read().keys().map(|k| k.to_string()).collect();
        names.extend(
            self.family_members()
                .iter()
                .map(|member| member.name().to_owned()),
        );
        names.sort_unstable();
        names
    }

    /// Every member of every family. The families are copied out of the
    /// registry's lock first: a family's own lock is never taken under it.
    fn family_members(&self) -> Vec<CircuitBreaker> {
        let families: Vec<Family> = self
            .families
            .read()
            .values()
            .map(|e| e.family.clone())
            .collect();
        families
            .iter()
            .flat_map(|family| family.members().into_iter().map(|(_, member)| member))
            .collect()
    }

    /// Shares a newly registered breaker through the registry's fleet.
    #[inline]
    fn share_new(&self, _breaker: &CircuitBreaker) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.fleet.get() {
            fleet.share(_breaker);
        }
    }

    /// Shares every breaker, and every one registered from now on, through
    /// `fleet`; `false` if another fleet was set first.
    #[cfg(feature = "redis")]
    pub(crate) fn share_through(&self, fleet: &crate::shared::RedisFleet) -> bool {
        if self.fleet.set(fleet.clone()).is_err() {
            return false;
        }
        let mut breakers: Vec<CircuitBreaker> = self
            .entries
            .read()
            .values()
            .map(|e| e.breaker.clone())
            .collect();
        // A keyed family's members are shared key by key; the ones it makes
        // from now on are shared as they are made.
        breakers.extend(self.family_members());
        for breaker in &breakers {
            fleet.share(breaker);
        }
        true
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
            let mut status = BreakerStatus::new(&entry.breaker, entry.conflicts.clone(), &mut now);
            status.config_sources = entry.sources.clone();
            status.config_errors = entry.override_errors.clone();
            breakers.push(status);
        }
        drop(entries);
        for family in families {
            add_family(family, &mut breakers, &mut now);
        }
        RegistryStatus {
            breakers,
            families: family_status,
            unmatched_overrides: self.unmatched_overrides(),
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
    /// Run-time settings for breaker names that no registered breaker has
    /// (see [`Registry::unmatched_overrides`]).
    pub unmatched_overrides: Vec<String>,
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
    /// Where each value of `config` came from: the code (the attribute), a
    /// line of the TOML file, or a variable.
    pub config_sources: ConfigSources,
    /// Why the run-time configuration was not applied to this breaker
    /// (which runs on its attribute's values); empty when it was, or when
    /// there was none. Serialised as messages.
    #[serde(serialize_with = "messages")]
    pub config_errors: Vec<OverrideError>,
    /// For a member of a keyed family, the family's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family: Option<Arc<str>>,
    /// For a member of a keyed family, its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Arc<str>>,
    /// Whether the breaker is shared through Redis, whether that server
    /// answers, and the fleet's failure count (feature `redis`).
    #[cfg(feature = "redis")]
    pub fleet: Option<crate::shared::FleetStatus>,
}

fn messages<S: serde::Serializer>(errors: &[OverrideError], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(errors.iter().map(ToString::to_string))
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
            config_sources: ConfigSources::default(),
            config_errors: Vec::new(),
            family: None,
            key: None,
            #[cfg(feature = "redis")]
            fleet: breaker.inner.core.fleet.get().map(|m| m.status()),
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
                if !b.config_errors.is_empty() {
                    notes.push(format!(
                        "CONFIG OVERRIDE REJECTED ({} problem{}; attribute values in force)",
                        b.config_errors.len(),
                        if b.config_errors.len() == 1 { "" } else { "s" }
                    ));
                }
                if !b.config_sources.is_empty() {
                    let overridden: Vec<String> = b
                        .config_sources
                        .overridden()
                        .map(|(key, source)| format!("{key} from {source}"))
                        .collect();
                    notes.push(format!("config: {}", overridden.join(", ")));
                }
                #[cfg(feature = "redis")]
                if let Some(fleet) = &b.fleet {
                    notes.push(format!(
                        "fleet {} {}, {} failures",
                        fleet.store,
                        if fleet.connected {
                            "connected"
                        } else {
                            "DISCONNECTED"
                        },
                        fleet.fleet_failures
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
        for unmatched in &self.unmatched_overrides {
            writeln!(f, "note: {unmatched}")?;
        }
        Ok(())
    }
}
