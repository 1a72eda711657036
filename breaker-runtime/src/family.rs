//! Keyed families: one declaration, one breaker per key.
//!
//! A [`Family`] holds a full [`CircuitBreaker`] per key, named
//! `family[key]` and built from the family's configuration, so an outage of
//! one model or host trips that key's circuit and no other.
//!
//! # Implementation notes
//!
//! * **Identity.** A key is identified by its `Display` text. A string key
//!   is read as it is ([`Family::member`], and the attribute for any
//!   `AsRef<str>` key); any other key is written into a stack buffer
//!   ([`KeyText`], 64 bytes inline), so a key that prints short allocates
//!   nothing, and a longer one goes to a `String`, which is correct, only
//!   slower. Two values that print the same share a breaker, as they would
//!   share its name.
//! * **Lookup.** The members live in [`SHARDS`] copy-on-write tables, each
//!   behind an [`ArcSwap`]; after every write the family also publishes a
//!   snapshot of all of them under a new generation, taken from one counter
//!   for all families, so a generation names one snapshot of one family.
//!   Each thread caches the snapshots of the families it calls ([`Hot`],
//!   [`Owned`]): a lookup reads the family's generation, finds the slot
//!   holding it, and compares the key with the one this thread found last
//!   there; only another key is hashed (foldhash, seeded per family so that
//!   flooding keys cannot aim at one bucket) and probed. No lock, no
//!   allocation, no reference count touched, nothing shared written; the
//!   attribute's sync call inlines that much and gets a two-word result. A
//!   thread whose cache cannot serve (a new key, or the thread exiting)
//!   does one `ArcSwap::load` of the key's shard.
//! * **Writes** (a new key, an eviction) take the family's mutex, copy one
//!   shard's table and publish it. They are rare: once per key, and once
//!   per sweep.
//! * **Idleness without a shared write.** The call path records nothing for
//!   the family. A sweep reads each member's lifetime call count and keeps
//!   it with the time it last changed; a member whose count has not moved
//!   for [`idle_after`](FamilyBuilder::idle_after) is idle.
//!
//! # Invariants
//!
//! * A family never holds more than [`max_keys`](Family::max_keys) members.
//! * Only a member that is closed (not forced), has no consecutive failure,
//!   no failure in the last `idle_after`, no probe in flight, and no call
//!   seen for `idle_after` is ever evicted. After publishing an eviction
//!   the sweep looks again and puts back any member that changed in
//!   between, so a circuit that tripped while it was being evicted stays.
//!   An open, half-open or forced circuit is never evicted: flooding new
//!   keys cannot reset a tripped one.
//! * "No call seen" means no call *finished* (or was refused): the call
//!   path writes nothing for the family, so a call still running on an
//!   idle member is invisible to a sweep, and the member can be evicted
//!   under it. An evicted member therefore goes to a holding area, not
//!   away: the running call finishes on it and is counted there, and if it
//!   trips the circuit, the key's next call gets that tripped breaker back
//!   (as does [`Family::get`]). The area holds at most `max_keys` breakers,
//!   so a family keeps at most `2 × max_keys` breakers in all. Each stays
//!   at least `idle_after`; one still closed and idle then is let go, one
//!   a call tripped is kept until its key is called again or its room is
//!   needed for a newer eviction.
//! * **Memory, in truth.** The family itself holds at most `2 × max_keys`
//!   breakers. Each thread's lookup cache holds, besides, the snapshot of
//!   the tables it read last for each of up to [`CACHED_FAMILIES`] (4)
//!   families, and while a member it lent is in use at most
//!   [`MAX_RETIRED`] (4) snapshots it replaced: a breaker the family let
//!   go stays alive while such a snapshot holds it, until the thread's
//!   next call to that family, or its exit. The family cannot reach
//!   another thread's cache, so the bound is threads × 8 snapshots of at
//!   most `max_keys` members each, on top of the family's. What a
//!   breaker holds beyond memory ends when the family lets it go, not
//!   when it is dropped: its membership of a Redis fleet ends when the
//!   holding area lets it go, and every member's when the family is
//!   dropped (see [`let_go`]).
//! * The limit: a call that runs longer than its member's holding period
//!   (at least `idle_after` after the eviction) and then trips the circuit
//!   trips a breaker the family may have let go; the key's next call may
//!   then get a fresh, closed breaker.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::{self, Display, Write as _};
use std::hash::BuildHasher;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hashbrown::HashTable;
use parking_lot::Mutex;

use crate::breaker::CircuitBreaker;
use crate::clock::{ClockHandle, duration_nanos};
use crate::config::{CircuitBreakerConfig, ConfigError};
use crate::error::BreakerError;
use crate::events::{self, EventKind};
use crate::overrides::ConfigOverrides;
use crate::state::DetailedState;
use crate::{Clock, Metrics};

/// How many keys a family holds unless told otherwise.
///
/// ```
/// use breaker_runtime::{CircuitBreakerConfig, DEFAULT_IDLE_AFTER, DEFAULT_MAX_KEYS, Family};
///
/// let family = Family::new("defaults-doc", CircuitBreakerConfig::default())?;
/// assert_eq!(family.max_keys(), DEFAULT_MAX_KEYS);
/// assert_eq!(DEFAULT_MAX_KEYS, 1_000);
/// assert_eq!(family.idle_after(), DEFAULT_IDLE_AFTER);
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
pub const DEFAULT_MAX_KEYS: usize = 1_000;

/// How long a member must go without calls before it may be evicted,
/// unless told otherwise.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(60);

/// The number of copy-on-write tables a family's members are spread over,
/// so that adding a key copies a sixteenth of them.
const SHARDS: usize = 16;

/// Bytes of a key's text kept on the stack.
const INLINE: usize = 64;

/// A key's `Display` text, written on the stack when it fits in 64 bytes.
///
/// ```
/// use breaker_runtime::KeyText;
///
/// assert_eq!(KeyText::new(&"gpt-4o").as_str(), "gpt-4o");
/// assert_eq!(KeyText::new(&42).as_str(), "42");
/// let long = "x".repeat(100);
/// assert_eq!(KeyText::new(&long).as_str(), long, "long keys are kept whole");
/// ```
pub struct KeyText {
    len: usize,
    inline: [u8; INLINE],
    heap: Option<String>,
}

impl KeyText {
    /// The text `key` displays as.
    #[inline]
    pub fn new<K: Display + ?Sized>(key: &K) -> Self {
        let mut text = Self {
            len: 0,
            inline: [0; INLINE],
            heap: None,
        };
        // Writing to a `KeyText` cannot fail; a `Display` impl that reports
        // an error leaves what it wrote, which still names the key.
        let _ = write!(text, "{key}");
        text
    }

    /// `key` itself, copied: what [`new`](Self::new) gives for a string,
    /// without going through `Display`'s formatter (about 10 ns here).
    ///
    /// ```
    /// use breaker_runtime::KeyText;
    ///
    /// assert_eq!(KeyText::from_text("gpt-4o").as_str(), KeyText::new("gpt-4o").as_str());
    /// ```
    #[inline]
    pub fn from_text(key: &str) -> Self {
        let mut text = Self {
            len: 0,
            inline: [0; INLINE],
            heap: None,
        };
        let _ = text.write_str(key);
        text
    }

    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.heap {
            Some(heap) => heap,
            // SAFETY: `inline[..len]` holds only whole `&str`s written by
            // `write_str`, so it is valid UTF-8.
            None => unsafe { std::str::from_utf8_unchecked(&self.inline[..self.len]) },
        }
    }
}

impl fmt::Write for KeyText {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(heap) = &mut self.heap {
            heap.push_str(s);
        } else if let Some(room) = self.inline.get_mut(self.len..self.len + s.len()) {
            room.copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut heap = String::with_capacity(self.len + s.len());
            heap.push_str(self.as_str());
            heap.push_str(s);
            self.heap = Some(heap);
        }
        Ok(())
    }
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A keyed family of circuit breakers: one declaration, a breaker per key.
/// Cheap to clone: clones share one family.
///
/// Each member is a full [`CircuitBreaker`] named `name[key]`, with the
/// family's configuration. The family holds at most
/// [`max_keys`](Self::max_keys) members (default [`DEFAULT_MAX_KEYS`]).
/// When a new key finds it full, idle members are evicted; if none can be,
/// the new key is refused with [`BreakerError::FamilyFull`]. See the module
/// notes in the README for the eviction rule.
///
/// ```
/// use breaker_runtime::{CircuitBreakerConfig, CircuitState, Family};
///
/// let config = CircuitBreakerConfig::builder().failure_threshold(1).build()?;
/// let llm = Family::new("family-doc-llm", config)?;
///
/// let _ = llm.with("model-a", |breaker| breaker.call(|| Err::<(), _>("503")));
/// let answer = llm.with("model-b", |breaker| breaker.call(|| Ok::<_, &str>("hi")));
/// assert_eq!(answer, Ok(Ok("hi")));
///
/// assert_eq!(llm.get("model-a").unwrap().state(), CircuitState::Open);
/// assert_eq!(llm.get("model-b").unwrap().state(), CircuitState::Closed);
/// assert_eq!(llm.get("model-a").unwrap().name(), "family-doc-llm[model-a]");
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Family {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    /// For a family of the registry: the run-time configuration, applied
    /// member by member (see [`Family::member_config`]).
    run_time: Option<RunTime>,
    /// For a family of a registry that may share its breakers on Redis:
    /// the registry's fleet, once it has one; each new member joins it.
    #[cfg(feature = "redis")]
    fleet: Option<Arc<std::sync::OnceLock<crate::shared::RedisFleet>>>,
    max_keys: usize,
    idle_after: Duration,
    clock: ClockHandle,
    hasher: foldhash::fast::RandomState,
    shards: [ArcSwap<Table>; SHARDS],
    /// Every shard's table, republished after each write, for the threads'
    /// caches (see [`Hot`]).
    snapshot: ArcSwap<Snapshot>,
    /// The generation of the current snapshot, taken anew from
    /// [`NEXT_GENERATION`] at each publish, so that no two snapshots of any
    /// families share one: a thread whose cached snapshot has this
    /// generation holds this family's current tables (or newer ones).
    generation: AtomicU64,
    /// Tells families apart in the threads' caches (never reused, unlike
    /// an address).
    id: u64,
    writer: Mutex<Writer>,
    /// New keys refused because the family was full.
    refused_keys: AtomicU64,
    /// Members evicted as idle.
    evicted_keys: AtomicU64,
}

/// What a registered family needs to give each member its run-time
/// configuration.
#[derive(Debug)]
struct RunTime {
    /// The configuration the family was asked for (the attribute's), before
    /// any override.
    base: CircuitBreakerConfig,
    overrides: Arc<ConfigOverrides>,
}

#[derive(Clone, Default)]
struct Table(HashTable<Entry>);

#[derive(Clone)]
struct Entry {
    hash: u64,
    key: Arc<str>,
    breaker: CircuitBreaker,
}

/// What only writers touch, under the family's mutex.
#[derive(Default)]
struct Writer {
    len: usize,
    /// Each member's lifetime call count as a sweep last saw it, and when
    /// it last changed.
    seen: HashMap<Arc<str>, Seen>,
    last_sweep: Option<u64>,
    /// Members evicted lately, by key: at most `max_keys`, each kept for
    /// at least `idle_after` (see [`Family::sweep_locked`]). A call that
    /// was running on one when it was evicted lands on it, and the key's
    /// next call gets it back instead of a fresh breaker.
    held: HashMap<Arc<str>, Evicted>,
}

/// A member in the holding area, and when it was evicted.
struct Evicted {
    entry: Entry,
    at: u64,
}

#[derive(Clone, Copy)]
struct Seen {
    calls: u64,
    since: u64,
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Family")
            .field("name", &self.name())
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Family`]: its configuration, bound, idleness and clock.
///
/// Register the family before the first call of a `key = ...` function
/// naming it, and the function uses it:
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::{CircuitBreakerConfig, Family, ManualClock, registry};
///
/// let clock = ManualClock::new();
/// let hosts = Family::builder("family-builder-doc")
///     .config(CircuitBreakerConfig::builder().failure_threshold(2).build()?)
///     .max_keys(100)
///     .idle_after(Duration::from_secs(30))
///     .clock(clock.clone())
///     .build()?;
/// registry().register_family(hosts.clone()).expect("a new name");
///
/// let found = registry().get_family("family-builder-doc").unwrap();
/// assert!(found.ptr_eq(&hosts));
/// assert_eq!((found.max_keys(), found.idle_after()), (100, Duration::from_secs(30)));
/// assert_eq!(found.config().failure_threshold, 2);
///
/// found.breaker("a.example")?;
/// found.breaker(&8080)?;
/// assert_eq!(found.keys(), ["8080", "a.example"]);
/// assert_eq!((found.len(), found.is_empty()), (2, false));
/// assert_eq!((found.refused_keys(), found.evicted_keys()), (0, 0));
/// assert!(found.get("b.example").is_none(), "`get` creates nothing");
///
/// assert!(registry().remove_family("family-builder-doc").is_some());
/// assert!(registry().get_family("family-builder-doc").is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct FamilyBuilder {
    name: String,
    config: CircuitBreakerConfig,
    max_keys: usize,
    idle_after: Duration,
    clock: ClockHandle,
    run_time: Option<RunTime>,
    #[cfg(feature = "redis")]
    fleet: Option<Arc<std::sync::OnceLock<crate::shared::RedisFleet>>>,
}

impl FamilyBuilder {
    /// Members join the fleet in `fleet` once the registry has one.
    #[cfg(feature = "redis")]
    pub(crate) fn shared_through(
        mut self,
        fleet: Arc<std::sync::OnceLock<crate::shared::RedisFleet>>,
    ) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// The clock as the registry holds it (a clock set with
    /// [`Registry::use_clock`](crate::Registry::use_clock)).
    pub(crate) fn clock_handle(mut self, clock: ClockHandle) -> Self {
        self.clock = clock;
        self
    }

    /// Members get `overrides` applied to `base` under the family's name
    /// and their own (`[llm]`, then `["llm[gpt-4o]"]`).
    pub(crate) fn run_time(
        mut self,
        base: CircuitBreakerConfig,
        overrides: Arc<ConfigOverrides>,
    ) -> Self {
        self.run_time = Some(RunTime { base, overrides });
        self
    }

    /// The configuration every member gets.
    pub fn config(mut self, config: CircuitBreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// The most members the family holds (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How long a member must go without calls before it may be evicted
    /// (default [`DEFAULT_IDLE_AFTER`]).
    pub fn idle_after(mut self, idle_after: Duration) -> Self {
        self.idle_after = idle_after;
        self
    }

    /// The clock of every member and of the idleness sweeps, such as a
    /// [`ManualClock`](crate::ManualClock) in tests.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    /// The family.
    ///
    /// # Errors
    /// The configuration's first invalid field, or
    /// [`ConfigError::OutOfRange`] naming `max_keys` (at least 1) or
    /// `idle_after` (longer than zero).
    ///
    /// ```
    /// use breaker_runtime::{ConfigError, Family};
    ///
    /// let error = Family::builder("hosts").max_keys(0).build().unwrap_err();
    /// assert!(error.to_string().contains("max_keys"), "{error}");
    /// ```
    pub fn build(self) -> Result<Family, ConfigError> {
        self.config.validate()?;
        if self.max_keys == 0 {
            return Err(ConfigError::OutOfRange {
                field: "max_keys",
                value: "0".to_owned(),
                allowed: "at least 1",
            });
        }
        if self.idle_after.is_zero() {
            return Err(ConfigError::OutOfRange {
                field: "idle_after",
                value: "0s".to_owned(),
                allowed: "longer than zero",
            });
        }
        Ok(Family {
            inner: Arc::new(Inner {
                name: Arc::from(self.name),
                config: self.config,
                run_time: self.run_time,
                #[cfg(feature = "redis")]
                fleet: self.fleet,
                max_keys: self.max_keys,
                idle_after: self.idle_after,
                clock: self.clock.ready(),
                hasher: foldhash::fast::RandomState::default(),
                shards: std::array::from_fn(|_| ArcSwap::default()),
                snapshot: ArcSwap::default(),
                generation: AtomicU64::new(NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)),
                id: NEXT_FAMILY_ID.fetch_add(1, Ordering::Relaxed),
                writer: Mutex::default(),
                refused_keys: AtomicU64::new(0),
                evicted_keys: AtomicU64::new(0),
            }),
        })
    }
}

impl Family {
    /// The longest key a family takes, in bytes of its text. A new key
    /// longer than this is refused with [`BreakerError::KeyTooLong`]: a
    /// key becomes a breaker's name and a metric label, and a request
    /// must not choose a megabyte of either.
    ///
    /// ```
    /// use breaker_runtime::{BreakerError, CircuitBreakerConfig, Family};
    ///
    /// let hosts = Family::new("family-key-len-doc", CircuitBreakerConfig::default())?;
    /// assert_eq!(Family::MAX_KEY_BYTES, 256);
    /// hosts.breaker(&"h".repeat(256))?;
    /// let refused = hosts.breaker(&"h".repeat(257)).unwrap_err();
    /// assert!(matches!(refused, BreakerError::KeyTooLong { len: 257, max: 256, .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const MAX_KEY_BYTES: usize = 256;

    /// A family named `name` whose members get `config`, with the default
    /// bound and idleness, on the system clock. It is not registered; see
    /// [`Registry::family`](crate::Registry::family) for shared ones.
    ///
    /// # Errors
    /// The configuration's first invalid field.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::builder(name).config(config).build()
    }

    /// A builder for a family named `name`, starting from the default
    /// configuration, bound and idleness, and the system clock.
    pub fn builder(name: impl Into<String>) -> FamilyBuilder {
        FamilyBuilder {
            name: name.into(),
            config: CircuitBreakerConfig::default(),
            max_keys: DEFAULT_MAX_KEYS,
            idle_after: DEFAULT_IDLE_AFTER,
            clock: ClockHandle::System,
            run_time: None,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// The family's name; members are named `name[key]`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The configuration each member is built with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// The most members the family holds.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys
    }

    /// How long a member goes without calls before it may be evicted.
    pub fn idle_after(&self) -> Duration {
        self.inner.idle_after
    }

    /// The number of members now.
    pub fn len(&self) -> usize {
        self.inner.writer.lock().len
    }

    /// Whether the family has no member.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// New keys refused with [`BreakerError::FamilyFull`] so far.
    pub fn refused_keys(&self) -> u64 {
        self.inner.refused_keys.load(Ordering::Relaxed)
    }

    /// Members evicted as idle so far.
    pub fn evicted_keys(&self) -> u64 {
        self.inner.evicted_keys.load(Ordering::Relaxed)
    }

    /// Whether `self` and `other` are the same family.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The breaker a call for `key` would use now, if it has one (none is
    /// created): its member, or one evicted within the holding period,
    /// which the key's next call reinstates (see [`with`](Self::with)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::{Family, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let hosts = Family::builder("family-get-doc")
    ///     .idle_after(Duration::from_secs(10))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// let a = hosts.breaker("a")?;
    /// assert!(hosts.get("a").unwrap().ptr_eq(&a));
    /// assert!(hosts.get("b").is_none(), "`get` creates nothing");
    ///
    /// clock.advance(Duration::from_secs(10));
    /// assert_eq!(hosts.sweep(), 1);
    /// assert!(hosts.get("a").unwrap().ptr_eq(&a), "held after its eviction");
    /// assert!(hosts.breaker("a")?.ptr_eq(&a), "and reinstated");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get<K: Display + ?Sized>(&self, key: &K) -> Option<CircuitBreaker> {
        let text = KeyText::new(key);
        let hash = self.hash(text.as_str());
        if let Some(member) = self.shard(hash).load().find(hash, text.as_str()) {
            return Some(member.breaker.clone());
        }
        let writer = self.inner.writer.lock();
        if let Some(member) = self.shard(hash).load().find(hash, text.as_str()) {
            return Some(member.breaker.clone());
        }
        writer
            .held
            .get(text.as_str())
            .map(|held| held.entry.breaker.clone())
    }

    /// Lends the member for `key` to `call`, creating it if it is new.
    ///
    /// For a key that has a member this takes no lock, allocates nothing
    /// (for a key whose text fits in 64 bytes) and writes nothing shared:
    /// the call path of an unkeyed breaker plus one hash and one table read.
    ///
    /// # Errors
    /// [`BreakerError::FamilyFull`] for a new key when no member can be
    /// evicted: every one is open, half-open, forced, recently failed, or
    /// has had a call finish within `idle_after` (`call` is not run); or
    /// [`BreakerError::KeyTooLong`] for a new key longer than
    /// [`MAX_KEY_BYTES`](Self::MAX_KEY_BYTES); or
    /// [`BreakerError::InvalidConfig`] should a member's configuration be
    /// invalid. A member whose only call is still running counts as idle:
    /// it can be evicted under that call, and is held so that its key gets
    /// it back (see the module notes).
    ///
    /// ```
    /// use breaker_runtime::{BreakerError, CircuitBreakerConfig, Family};
    ///
    /// let hosts = Family::builder("family-with-doc").max_keys(1).build()?;
    /// hosts.with("a.example", |b| b.force_open())?;
    /// let refused = hosts.with("b.example", |_| ()).unwrap_err();
    /// assert!(matches!(refused, BreakerError::FamilyFull { limit: 1, .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn with<K, R>(
        &self,
        key: &K,
        call: impl FnOnce(&CircuitBreaker) -> R,
    ) -> Result<R, BreakerError>
    where
        K: Display + ?Sized,
    {
        self.with_text(&KeyText::new(key), call)
    }

    /// [`with`](Self::with) for a key already written as text.
    #[inline]
    pub fn with_text<R>(
        &self,
        key: &KeyText,
        call: impl FnOnce(&CircuitBreaker) -> R,
    ) -> Result<R, BreakerError> {
        self.member(key.as_str()).map(|member| call(&member))
    }

    /// The member for the key whose text is `key`, created if it is new,
    /// held for as long as the returned [`Member`] lives: the hot path of
    /// [`with`](Self::with), for a key that is already text. No lock, no
    /// allocation, no reference count written for a key that has a member.
    ///
    /// # Errors
    /// As [`with`](Self::with).
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreakerConfig, Family};
    ///
    /// let llm = Family::new("family-member-doc", CircuitBreakerConfig::default())?;
    /// let member = llm.member("gpt-4o")?;
    /// assert_eq!(member.call(|| Ok::<_, ()>(1)), Ok(1));
    /// assert_eq!(member.name(), "family-member-doc[gpt-4o]");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn member(&self, key: &str) -> Result<Member, BreakerError> {
        self.member_or_refused(key).map_err(|refused| *refused)
    }

    /// [`member`](Self::member), with the refusal boxed so that the result
    /// is two words, returned in registers: the attribute's hot path.
    #[inline(always)]
    pub(crate) fn member_or_refused(&self, key: &str) -> Result<Member, Box<BreakerError>> {
        match self.lend_cached(key) {
            Some(breaker) => Ok(Member(Held::Cached(breaker))),
            None => self.member_uncached(key),
        }
    }

    /// [`member`](Self::member) when this thread's cache does not hold the
    /// key's entry under the family's current generation: the snapshot is
    /// loaded into the cache, or the key is new, or the cache is gone
    /// (thread exit). Out of line and not generic: one copy for all.
    #[inline(never)]
    fn member_uncached(&self, key: &str) -> Result<Member, Box<BreakerError>> {
        if let Some(breaker) = self.lend_reloaded(key) {
            return Ok(Member(Held::Cached(breaker)));
        }
        let hash = self.hash(key);
        if let Some(member) = self.shard(hash).load().find(hash, key) {
            return Ok(Member::owned(member.breaker.clone()));
        }
        self.insert(hash, key).map(Member::owned).map_err(Box::new)
    }

    /// The member for `key`, created if it is new: a handle to keep, for
    /// async calls. Cloning it writes the breaker's reference count; prefer
    /// [`with`](Self::with) on hot sync paths.
    ///
    /// # Errors
    /// As [`with`](Self::with).
    #[inline]
    pub fn breaker<K: Display + ?Sized>(&self, key: &K) -> Result<CircuitBreaker, BreakerError> {
        self.breaker_text(&KeyText::new(key))
    }

    /// [`breaker`](Self::breaker) for a key already written as text.
    #[inline]
    pub fn breaker_text(&self, key: &KeyText) -> Result<CircuitBreaker, BreakerError> {
        self.with_text(key, CircuitBreaker::clone)
    }

    /// [`breaker`](Self::breaker) for a key that is already text.
    #[inline]
    pub fn breaker_str(&self, key: &str) -> Result<CircuitBreaker, BreakerError> {
        self.member(key)
            .map(|member| CircuitBreaker::clone(&member))
    }

    /// The keys of every member, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .members()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Every member with its key, in no order.
    pub(crate) fn members(&self) -> Vec<(Arc<str>, CircuitBreaker)> {
        let mut members = Vec::new();
        for shard in &self.inner.shards {
            members.extend(
                shard
                    .load()
                    .0
                    .iter()
                    .map(|m| (Arc::clone(&m.key), m.breaker.clone())),
            );
        }
        members
    }

    /// Evicts every idle member now, whatever the time since the last
    /// sweep, and returns how many went. New keys sweep on their own when
    /// they find the family full; this is for operators and tests.
    ///
    /// ```
    /// use std::time::Duration;
    /// use breaker_runtime::{Family, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let hosts = Family::builder("family-sweep-doc")
    ///     .idle_after(Duration::from_secs(10))
    ///     .clock(clock.clone())
    ///     .build()?;
    /// hosts.with("a", |b| b.call(|| Ok::<_, ()>(())))?.unwrap();
    /// assert_eq!(hosts.sweep(), 0, "just used");
    /// clock.advance(Duration::from_secs(10));
    /// assert_eq!(hosts.sweep(), 1, "no call for 10 s");
    /// assert!(hosts.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sweep(&self) -> usize {
        let mut writer = self.inner.writer.lock();
        self.sweep_locked(&mut writer, self.inner.clock.now())
    }

    #[inline]
    fn hash(&self, text: &str) -> u64 {
        self.inner.hasher.hash_one(text)
    }

    /// The shard for `hash` (see [`shard_index`]).
    #[inline]
    fn shard(&self, hash: u64) -> &ArcSwap<Table> {
        &self.inner.shards[shard_index(hash)]
    }

    /// The breaker for `key` from this thread's cached snapshot of the
    /// tables, lent (see [`Hot`]), if the snapshot is current and holds the
    /// key; `None` sends the caller to [`member_uncached`](Self::member_uncached).
    #[inline(always)]
    fn lend_cached(&self, key: &str) -> Option<NonNull<CircuitBreaker>> {
        // Acquire: pairs with the Release store in `publish`, so a snapshot
        // cached under this generation is at least as new as the tables it
        // counts.
        let generation = self.inner.generation.load(Ordering::Acquire);
        Hot::get()?.lend(generation, key, |slot| self.probe(slot, key))
    }

    /// Loads the family's current snapshot into this thread's cache, then
    /// lends the breaker for `key` from it. `None` when the snapshot was
    /// current already (the key is new), or has no such key, or the cache
    /// is gone (thread exit) or busy.
    fn lend_reloaded(&self, key: &str) -> Option<NonNull<CircuitBreaker>> {
        let inner = &*self.inner;
        // Acquire: as in `lend_cached`.
        let generation = inner.generation.load(Ordering::Acquire);
        let replaced = HOT
            .try_with(|hot| {
                if hot
                    .slots
                    .iter()
                    .any(|slot| slot.generation.get() == generation)
                {
                    return Err(());
                }
                hot.install(inner.id, generation, inner.snapshot.load_full())
            })
            .ok()?
            .ok()?;
        // Outside the cache: a breaker's drop may call a family again.
        drop(replaced);
        self.lend_cached(key)
    }

    /// The entry for `key` in `slot`'s snapshot, remembered as the slot's
    /// last: a key other than the one this thread asked for last. Out of
    /// line and not generic, so the attribute's keyed functions share it.
    #[inline(never)]
    fn probe(&self, slot: &HotSlot, key: &str) -> Option<NonNull<CircuitBreaker>> {
        // SAFETY: a slot holding this family's generation points into this
        // family's snapshot, which the thread's cache keeps alive (see `Hot`).
        let snapshot = unsafe { &*slot.snapshot.get() };
        let hash = self.hash(key);
        let entry = snapshot.tables.get(shard_index(hash))?.find(hash, key)?;
        slot.remember(entry);
        Some(NonNull::from(&entry.breaker))
    }

    /// Publishes every shard's current table as one snapshot, under a new
    /// generation. Under the writer's mutex.
    fn publish(&self) {
        let inner = &*self.inner;
        let tables = inner.shards.iter().map(ArcSwap::load_full).collect();
        inner.snapshot.store(Arc::new(Snapshot { tables }));
        // Relaxed: the counter only hands out distinct values.
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        // Release: a reader that sees the new generation sees the snapshot.
        inner.generation.store(generation, Ordering::Release);
    }

    /// The configuration of the member named `member_name`. Every member
    /// is made through here.
    /// A registered family's member gets the run-time configuration for
    /// the family's name and then for its own; when that has problems,
    /// the family's configuration, and the problems are emitted as an
    /// event (the same policy as a breaker's).
    ///
    /// The event is returned, not emitted: members are made under the
    /// family's mutex, and a listener may ask the family anything.
    fn member_config(&self, member_name: &str) -> (CircuitBreakerConfig, Option<EventKind>) {
        let inner = &*self.inner;
        let Some(run_time) = &inner.run_time else {
            return (inner.config.clone(), None);
        };
        match run_time
            .overrides
            .effective_for(&[&inner.name, member_name], &run_time.base)
        {
            Ok((config, _)) => (config, None),
            Err(problems) => (
                inner.config.clone(),
                Some(EventKind::ConfigOverrideRejected {
                    problems: problems.to_string(),
                }),
            ),
        }
    }

    /// A new member for `key`, and the event to emit once the family's
    /// mutex is released, if any.
    fn new_member(
        &self,
        key: &str,
        emit: &mut Option<Pending>,
    ) -> Result<CircuitBreaker, BreakerError> {
        let member_name = format!("{}[{key}]", self.inner.name);
        let (config, event) = self.member_config(&member_name);
        if let Some(event) = event {
            *emit = Some((member_name.clone(), event));
        }
        let member = CircuitBreaker::builder(member_name.clone())
            .config(config)
            .clock_handle(self.inner.clock.clone())
            .build()
            .map_err(|source| BreakerError::InvalidConfig {
                name: member_name,
                source,
            })?;
        // Joining only queues the member for the fleet's own thread.
        #[cfg(feature = "redis")]
        if let Some(fleet) = self.inner.fleet.as_ref().and_then(|fleet| fleet.get()) {
            fleet.share(&member);
        }
        Ok(member)
    }

    /// Adds a member for a key the table did not have, sweeping first if
    /// the family is full; emits the member's configuration event, if any,
    /// after the family's mutex is released.
    #[cold]
    #[inline(never)]
    fn insert(&self, hash: u64, key: &str) -> Result<CircuitBreaker, BreakerError> {
        let mut pending = None;
        let added = self.insert_locking(hash, key, &mut pending);
        if let Some((member_name, event)) = pending {
            events::emit(&member_name, event);
        }
        added
    }

    /// [`insert`](Self::insert)'s work, under the family's mutex.
    fn insert_locking(
        &self,
        hash: u64,
        key: &str,
        pending: &mut Option<Pending>,
    ) -> Result<CircuitBreaker, BreakerError> {
        let inner = &*self.inner;
        if key.len() > Self::MAX_KEY_BYTES {
            return Err(BreakerError::KeyTooLong {
                family: inner.name.to_string(),
                len: key.len(),
                max: Self::MAX_KEY_BYTES,
            });
        }
        let mut writer = inner.writer.lock();
        let shard = self.shard(hash);
        if let Some(member) = shard.load().find(hash, key) {
            return Ok(member.breaker.clone());
        }
        let now = inner.clock.now();
        // A member evicted within the holding period comes back as it was
        // (same key, same configuration): a circuit a call tripped after
        // its eviction stays tripped. Taken out first, so that the sweep
        // below has room to hold another.
        let reinstated = writer.held.remove(key);
        if writer.len >= inner.max_keys {
            let interval = duration_nanos(inner.idle_after) / 4;
            let due = writer
                .last_sweep
                .is_none_or(|last| now.saturating_sub(last) >= interval);
            if due {
                self.sweep_locked(&mut writer, now);
            }
            if writer.len >= inner.max_keys {
                if let Some(held) = reinstated {
                    writer.held.insert(Arc::clone(&held.entry.key), held);
                }
                inner.refused_keys.fetch_add(1, Ordering::Relaxed);
                return Err(BreakerError::FamilyFull {
                    family: inner.name.to_string(),
                    limit: inner.max_keys,
                });
            }
        }
        let entry = match reinstated {
            Some(held) => held.entry,
            None => Entry {
                hash,
                key: Arc::from(key),
                breaker: self.new_member(key, pending)?,
            },
        };
        let (key, breaker) = (Arc::clone(&entry.key), entry.breaker.clone());
        let calls = lifetime_calls(&breaker.get_metrics());
        let mut table = Table::clone(&shard.load());
        table.0.insert_unique(hash, entry, |m| m.hash);
        shard.store(Arc::new(table));
        self.publish();
        writer.len += 1;
        writer.seen.insert(key, Seen { calls, since: now });
        Ok(breaker)
    }

    /// Evicts the idle members (see the module notes) into the holding
    /// area and returns how many.
    ///
    /// The holding area keeps at most `max_keys` breakers, each for at
    /// least `idle_after`: one held that long and still idle is let go; one
    /// that a call tripped after its eviction is kept until its key is
    /// called again, or until its room is needed. When the area is full of
    /// breakers held for less than `idle_after`, the sweep evicts fewer.
    fn sweep_locked(&self, writer: &mut Writer, now: u64) -> usize {
        let inner = &*self.inner;
        writer.last_sweep = Some(now);
        let idle_after = duration_nanos(inner.idle_after);
        writer.held.retain(|_, held| {
            let keep = now.saturating_sub(held.at) < idle_after
                || !evictable(&held.entry.breaker.get_metrics(), inner.idle_after);
            if !keep {
                let_go(&held.entry);
            }
            keep
        });
        let mut evicted = 0;
        for shard in &inner.shards {
            let table = shard.load_full();
            let mut leaving = Vec::new();
            for member in table.0.iter() {
                let metrics = member.breaker.get_metrics();
                let calls = lifetime_calls(&metrics);
                let seen = writer
                    .seen
                    .entry(Arc::clone(&member.key))
                    .or_insert(Seen { calls, since: now });
                if seen.calls != calls {
                    *seen = Seen { calls, since: now };
                    continue;
                }
                if now.saturating_sub(seen.since) >= idle_after
                    && evictable(&metrics, inner.idle_after)
                {
                    leaving.push((member.clone(), calls));
                }
            }
            // Room to hold them: the breakers held longest go first, once
            // held for `idle_after`; members beyond the room stay.
            while writer.held.len() + leaving.len() > inner.max_keys {
                let oldest = writer
                    .held
                    .iter()
                    .filter(|(_, held)| now.saturating_sub(held.at) >= idle_after)
                    .min_by_key(|(_, held)| held.at)
                    .map(|(key, _)| Arc::clone(key));
                match oldest {
                    Some(key) => {
                        if let Some(held) = writer.held.remove(&key) {
                            let_go(&held.entry);
                        }
                    }
                    None => {
                        leaving.truncate(inner.max_keys.saturating_sub(writer.held.len()));
                        break;
                    }
                }
            }
            if leaving.is_empty() {
                continue;
            }
            let mut next = Table::clone(&table);
            for (member, _) in &leaving {
                if let Ok(entry) = next.0.find_entry(member.hash, |m| *m.key == *member.key) {
                    entry.remove();
                }
            }
            shard.store(Arc::new(next));
            self.publish();
            // A call that loaded the old table may have tripped or used the
            // member meanwhile: put such a member back.
            let mut back = Vec::new();
            for (member, calls) in leaving {
                let metrics = member.breaker.get_metrics();
                if lifetime_calls(&metrics) != calls || !evictable(&metrics, inner.idle_after) {
                    back.push(member);
                } else {
                    writer.seen.remove(&member.key);
                    let replaced = writer.held.insert(
                        Arc::clone(&member.key),
                        Evicted {
                            entry: member,
                            at: now,
                        },
                    );
                    if let Some(replaced) = replaced {
                        let_go(&replaced.entry);
                    }
                    evicted += 1;
                }
            }
            if !back.is_empty() {
                let mut again = Table::clone(&shard.load());
                for member in back {
                    again.0.insert_unique(member.hash, member, |m| m.hash);
                }
                shard.store(Arc::new(again));
                self.publish();
            }
        }
        writer.len -= evicted;
        inner
            .evicted_keys
            .fetch_add(evicted as u64, Ordering::Relaxed);
        evicted
    }
}

/// A family's member for one key, held for a call: derefs to its
/// [`CircuitBreaker`]. From [`Family::member`].
///
/// It keeps the table it was found in alive, not the family's current one:
/// hold it for a call, not for good (clone the breaker to keep it). It is
/// not `Send`: a thread's cache counts the members it lent.
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, Family};
///
/// let llm = Family::new("member-doc", CircuitBreakerConfig::default())?;
/// let member = llm.member("gpt-4o")?;
/// let kept: CircuitBreaker = (*member).clone();
/// drop(member);
/// assert!(kept.ptr_eq(&llm.breaker_str("gpt-4o")?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Member(Held);

enum Held {
    /// Lent by this thread's cache: points into a snapshot the cache keeps
    /// alive while this member lives (see [`Hot`]).
    Cached(NonNull<CircuitBreaker>),
    /// A handle of its own: a new key, or a thread whose cache is gone.
    /// Dropped out of line (see the `Drop` impl).
    Owned(ManuallyDrop<CircuitBreaker>),
}

impl Member {
    fn owned(breaker: CircuitBreaker) -> Self {
        Self(Held::Owned(ManuallyDrop::new(breaker)))
    }
}

impl std::ops::Deref for Member {
    type Target = CircuitBreaker;

    #[inline]
    fn deref(&self) -> &CircuitBreaker {
        match &self.0 {
            // SAFETY: the pointer is into a snapshot this thread's cache
            // holds. While this member lives, the cache counts it
            // (`depth > 0`), and a snapshot is freed only when `depth` is
            // 0: one replaced meanwhile waits in `retired`, and a cache
            // dropped at thread exit (before a member kept in another
            // thread-local) leaks its snapshots instead of freeing them
            // (see `Owned`'s `Drop`). `Member` is `!Send`, so it is
            // dropped on the thread whose cache counted it.
            Held::Cached(breaker) => unsafe { breaker.as_ref() },
            Held::Owned(breaker) => breaker,
        }
    }
}

impl Drop for Member {
    /// A lent member is one fewer in use; an owned one lets its handle go
    /// in a shared call, so that no annotated function inlines a reference
    /// count's drop.
    #[inline(always)]
    fn drop(&mut self) {
        match &mut self.0 {
            Held::Cached(_) => Hot::leave(),
            Held::Owned(breaker) => drop_owned(breaker),
        }
    }
}

#[cold]
#[inline(never)]
fn drop_owned(breaker: &mut ManuallyDrop<CircuitBreaker>) {
    // SAFETY: called once, from `Member::drop`; never used after.
    unsafe { ManuallyDrop::drop(breaker) }
}

/// An event to emit once the family's mutex is released: the breaker's
/// name and the event.
type Pending = (String, EventKind);

/// Every shard's table at one moment.
#[derive(Default)]
struct Snapshot {
    tables: Vec<Arc<Table>>,
}

/// The source of every family's snapshot generations: one counter for all
/// families, so that a generation names one snapshot of one family, and a
/// thread's cache finds a family's snapshot by its generation alone. 0
/// marks an empty slot.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

static NEXT_FAMILY_ID: AtomicU64 = AtomicU64::new(1);

/// How many families a thread keeps a snapshot of.
const CACHED_FAMILIES: usize = 4;

/// How many replaced snapshots a thread's cache keeps for members in use
/// (see [`Hot`]): past that, a thread with a member in use is served
/// from the shared tables for a family whose snapshot changed.
const MAX_RETIRED: usize = CACHED_FAMILIES;

/// A `last_len` that no key has: the slot remembers no entry.
const NO_LAST: usize = usize::MAX;

/// The part of a thread's cache of family snapshots that a lookup reads:
/// plain cells in a thread-local with no destructor, so that reaching it
/// is an address relative to the thread pointer, with no state to check.
/// A lookup reads the family's generation, finds the slot holding that
/// generation, and compares the key with the one the slot found last;
/// only then does it hash and probe ([`Family::probe`]). No lock, no
/// allocation, no reference count touched, nothing shared written.
///
/// The snapshots themselves are held by [`Owned`], slot for slot: a slot
/// whose generation is not 0 points into the snapshot `Owned` holds at the
/// same index. A snapshot in use is never dropped: while any [`Member`]
/// lent by the cache lives on this thread (`depth > 0`), a snapshot
/// replaced by a newer one goes to `Owned::retired`, freed when the last
/// member is dropped. At most [`MAX_RETIRED`] wait there: once they do, a
/// slot is not refreshed while members are in use, and a family whose
/// snapshot changed serves this thread from its shared tables (an owned
/// member, one reference count) until the members are dropped. So a key
/// flood inside a call, or a member forgotten with `mem::forget`, pins at
/// most `CACHED_FAMILIES + MAX_RETIRED` snapshots, not one per new key. Members are `!Send`, so they are dropped on the
/// thread that counted them. A thread keeps at most [`CACHED_FAMILIES`]
/// snapshots: tables the families have since replaced stay alive until the
/// thread next calls that family, or exits.
struct Hot {
    slots: [HotSlot; CACHED_FAMILIES],
    /// The slot the next family new to this thread takes.
    next: Cell<usize>,
    /// Members lent by this cache and not yet dropped.
    depth: Cell<usize>,
    /// Whether snapshots wait in `Owned::retired` for `depth` to reach 0.
    retired: Cell<bool>,
}

/// One family's snapshot in a thread's cache, as a lookup reads it.
struct HotSlot {
    /// The generation of `snapshot`; 0 when the slot is empty.
    generation: Cell<u64>,
    /// The family the snapshot is of (its `id`), to reuse its slot when
    /// a newer snapshot replaces it.
    family: Cell<u64>,
    snapshot: Cell<*const Snapshot>,
    /// The key of the entry this thread found last in `snapshot` (its
    /// bytes and length, [`NO_LAST`] for none), and its breaker: a thread
    /// that asks for one key again and again compares the key and skips
    /// the hash and the probe.
    last_key: Cell<*const u8>,
    last_len: Cell<usize>,
    last_breaker: Cell<*const CircuitBreaker>,
}

/// The snapshots a thread's cache holds, one per [`HotSlot`], and those
/// replaced while members lent from them were in use.
struct Owned {
    snapshots: [Option<Arc<Snapshot>>; CACHED_FAMILIES],
    retired: Vec<Arc<Snapshot>>,
}

thread_local! {
    static HOT: Hot = const { Hot::new() };
    static OWNED: RefCell<Owned> = const {
        RefCell::new(Owned {
            snapshots: [None, None, None, None],
            retired: Vec::new(),
        })
    };
}

impl Drop for Owned {
    /// At thread exit. The slots are emptied first, so that lookups made
    /// later in the thread's exit go to the shared tables. A [`Member`]
    /// kept in another thread-local may outlive this cache (thread-locals
    /// are destroyed in an order safe code chooses) and still point into
    /// its snapshots: while any is counted, they are leaked rather than
    /// freed. Only a thread that exits holding a member leaks, once, at
    /// most [`CACHED_FAMILIES`] snapshots and those retired.
    fn drop(&mut self) {
        let in_use = HOT
            .try_with(|hot| {
                for slot in &hot.slots {
                    slot.empty();
                }
                hot.retired.set(false);
                hot.depth.get() > 0
            })
            .unwrap_or(true);
        if in_use {
            for snapshot in self.snapshots.iter_mut().filter_map(Option::take) {
                std::mem::forget(snapshot);
            }
            std::mem::forget(std::mem::take(&mut self.retired));
        }
    }
}

impl HotSlot {
    const fn new() -> Self {
        Self {
            generation: Cell::new(0),
            family: Cell::new(0),
            snapshot: Cell::new(std::ptr::null()),
            last_key: Cell::new(std::ptr::null()),
            last_len: Cell::new(NO_LAST),
            last_breaker: Cell::new(std::ptr::null()),
        }
    }

    /// Whether `key` is the key this slot found last.
    #[inline(always)]
    fn last_is(&self, key: &str) -> bool {
        self.last_len.get() == key.len() && {
            // SAFETY: `last_key` points at `last_len` bytes of a key in the
            // slot's snapshot, which is alive (see `Hot`).
            let last = unsafe { std::slice::from_raw_parts(self.last_key.get(), key.len()) };
            same_bytes(last, key.as_bytes())
        }
    }

    fn remember(&self, entry: &Entry) {
        self.last_key.set(entry.key.as_ptr());
        self.last_len.set(entry.key.len());
        self.last_breaker.set(&entry.breaker);
    }

    fn empty(&self) {
        self.generation.set(0);
        self.snapshot.set(std::ptr::null());
        self.last_len.set(NO_LAST);
    }
}

impl Hot {
    const fn new() -> Self {
        Self {
            slots: [
                HotSlot::new(),
                HotSlot::new(),
                HotSlot::new(),
                HotSlot::new(),
            ],
            next: Cell::new(0),
            depth: Cell::new(0),
            retired: Cell::new(false),
        }
    }

    /// The breaker for `key` in this thread's snapshot of `generation`,
    /// counted as one more member in use: the key this slot found last, or
    /// the one `probe` finds. `None` when no slot holds `generation`, or
    /// the snapshot has no such key.
    #[inline(always)]
    fn lend(
        &self,
        generation: u64,
        key: &str,
        probe: impl FnOnce(&HotSlot) -> Option<NonNull<CircuitBreaker>>,
    ) -> Option<NonNull<CircuitBreaker>> {
        let slot = self
            .slots
            .iter()
            .find(|slot| slot.generation.get() == generation)?;
        let breaker = if slot.last_is(key) {
            // SAFETY: `last_breaker` is set with `last_len`, into the
            // slot's snapshot.
            unsafe { NonNull::new_unchecked(slot.last_breaker.get().cast_mut()) }
        } else {
            probe(slot)?
        };
        self.depth.set(self.depth.get() + 1);
        Some(breaker)
    }

    /// Puts `snapshot`, of generation `generation` of family `family`, in
    /// the family's slot (or the next one). The snapshot it replaces waits
    /// in `retired` while members are in use, and is returned to be
    /// dropped otherwise, by the caller, once no cache is borrowed: a
    /// breaker's drop may call a family again. `Err` gives `snapshot` back
    /// when the cache is gone or busy.
    fn install(
        &self,
        family: u64,
        generation: u64,
        snapshot: Arc<Snapshot>,
    ) -> Result<Option<Arc<Snapshot>>, ()> {
        let mut snapshot = Some(snapshot);
        let installed = OWNED.try_with(|owned| {
            let Ok(mut owned) = owned.try_borrow_mut() else {
                return Err(());
            };
            let cached = self.slots.iter().position(|s| s.family.get() == family);
            let index = cached.unwrap_or(self.next.get());
            // A replaced snapshot must wait while members are in use, and
            // at most `CACHED_FAMILIES` wait: with that many, the slot
            // keeps its stale snapshot and the caller is served from the
            // shared tables until the members are dropped.
            if self.depth.get() > 0
                && owned.snapshots[index].is_some()
                && owned.retired.len() >= MAX_RETIRED
            {
                return Err(());
            }
            if cached.is_none() {
                self.next.set((index + 1) % CACHED_FAMILIES);
            }
            let slot = &self.slots[index];
            slot.empty();
            let snapshot = snapshot.take().ok_or(())?;
            slot.snapshot.set(Arc::as_ptr(&snapshot));
            let replaced = owned.snapshots[index].replace(snapshot);
            slot.family.set(family);
            slot.generation.set(generation);
            match replaced {
                Some(replaced) if self.depth.get() > 0 => {
                    owned.retired.push(replaced);
                    self.retired.set(true);
                    Ok(None)
                }
                replaced => Ok(replaced),
            }
        });
        match installed {
            Ok(Ok(replaced)) => Ok(replaced),
            _ => Err(()),
        }
    }

    /// This thread's cache, reached with a closure small enough to be
    /// inlined wherever it is asked for.
    #[inline(always)]
    fn get() -> Option<&'static Self> {
        // SAFETY: `Hot` has no destructor, so with native thread-locals
        // (every tier-1 target) its storage lives as long as the thread.
        // The reference never leaves the thread (`Hot` holds `Cell`s, so
        // `&Hot` is `!Send`) and every caller drops it before returning;
        // a target without native thread-locals tears them down at thread
        // exit one destructor after another, between such calls, and
        // `try_with` fails from then on.
        HOT.try_with(|hot| unsafe { &*std::ptr::from_ref(hot) })
            .ok()
    }

    /// One member fewer in use; the last one frees retired snapshots.
    #[inline(always)]
    fn leave() {
        if let Some(hot) = Self::get() {
            let depth = hot.depth.get() - 1;
            hot.depth.set(depth);
            if depth == 0 && hot.retired.get() {
                hot.free_retired();
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn free_retired(&self) {
        let retired = OWNED.try_with(|owned| {
            owned
                .try_borrow_mut()
                .map(|mut owned| std::mem::take(&mut owned.retired))
        });
        if let Ok(Ok(retired)) = retired {
            self.retired.set(false);
            // Dropped outside the cache: a breaker's drop may call a
            // family again.
            drop(retired);
        }
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl Table {
    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<&Entry> {
        self.0.find(hash, |m| m.hash == hash && *m.key == *key)
    }
}

/// The shard for `hash`, from bits 32..36: hashbrown places entries by
/// the low bits and tags them with the top seven.
#[inline]
fn shard_index(hash: u64) -> usize {
    (hash >> 32) as usize % SHARDS
}

/// `a == b`, without a call to `memcmp` for keys up to 16 bytes: that
/// call was a fifth of a keyed call's time.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(text: &[u8], at: usize) -> [u8; N] {
        let mut word = [0; N];
        word.copy_from_slice(&text[at..at + N]);
        word
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two reads that overlap cover every byte.
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        _ => a == b,
    }
}

/// What must end when the family lets a member go, though the breaker
/// itself may live on: a call still running on it, a handle kept, or a
/// thread's cached snapshot (see [`Hot`]) keeps its memory, not its
/// membership of a Redis fleet.
fn let_go(entry: &Entry) {
    #[cfg(feature = "redis")]
    entry.breaker.leave_fleet();
    #[cfg(not(feature = "redis"))]
    let _ = entry;
}

/// The family is gone (its last handle dropped): each member, and each
/// breaker in the holding area, is let go (see [`let_go`]).
#[cfg(feature = "redis")]
impl Drop for Inner {
    fn drop(&mut self) {
        for shard in &self.shards {
            shard.load().0.iter().for_each(let_go);
        }
        for held in self.writer.get_mut().held.values() {
            let_go(&held.entry);
        }
    }
}

/// Every call a breaker has seen, admitted or not.
fn lifetime_calls(metrics: &Metrics) -> u64 {
    metrics.total_calls + metrics.rejected_calls + metrics.local_rate_limited_calls
}

/// Whether a member's circuit is in a state that may be evicted: closed
/// and not forced, with no failure pending or recent and no probe out.
fn evictable(metrics: &Metrics, idle_after: Duration) -> bool {
    metrics.detailed_state == DetailedState::Closed
        && metrics.consecutive_failures == 0
        && metrics.probes_in_flight == 0
        && metrics
            .last_failure
            .as_ref()
            .is_none_or(|failure| failure.age >= idle_after)
}

#[cfg(test)]
mod tests {
    fn same_text(a: &str, b: &str) -> bool {
        super::same_bytes(a.as_bytes(), b.as_bytes())
    }

    #[test]
    fn same_text_compares_every_byte_of_every_length() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        for n in 0..=text.len() {
            let a = &text[..n];
            assert!(same_text(a, a), "{a}");
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'!';
                let b = std::str::from_utf8(&b).unwrap();
                assert!(!same_text(a, b), "{a} vs {b}");
            }
            assert!(!same_text(a, &text[..n.saturating_sub(1)]) || n == 0);
        }
    }
}
