//! Breaker state shared across replicas on Redis (feature `redis`).
//!
//! # Implementation notes
//!
//! A [`RedisFleet`] owns one thread running a single-threaded tokio
//! runtime: every Redis operation runs there, each with a timeout. The call
//! path only sends on an unbounded channel, and only from cold paths: a
//! counted failure while closed, a success that clears a non-zero failure
//! count, a transition, and, for a breaker with a failure-rate window, a
//! closed-state success (counted, and pushed in batches at most every
//! 10 ms, or with the next failure). A closed-state success with no failure
//! counted (and no window, or a fleet window full of successes), and a
//! rejection while open, send nothing.
//!
//! The failure-rate window is the fleet's while connected: the scripts
//! keep it in the breaker's hash and trip every replica when its rate
//! reaches the threshold; a replica's own window only decides while cut
//! off from Redis. The one place a call waits for
//! Redis is a half-open probe's fleet-wide lease, for at most
//! [`RedisFleetBuilder::lease_wait`]; without an answer in time the probe
//! goes ahead on the local decision.
//!
//! Each shared breaker is one hash, `<prefix>:<name>` (see [`scripts`] for
//! its fields), changed only by single-key Lua scripts; changes are
//! published on the channel `<prefix>:fleet`, and a periodic resync reads
//! every hash as a safety net, rebuilds flushed keys from local state and,
//! after a reconnection, merges local open periods back.
//!
//! # Invariants
//!
//! 1. No lock of this module or of a breaker is held across a Redis
//!    operation or across a protected call.
//! 2. A state taken on from the fleet is not written back (no echo): the
//!    core's `adopt` bypasses [`Member::note_transition`].
//! 3. While disconnected, every breaker decides on its local state alone.

mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::breaker::{CircuitBreaker, Inner};
use crate::core::TransitionCause;
use crate::events::{self, EventKind};
use crate::state::DetailedState;

/// The environment variable naming the Redis server that
/// [`registry()`](crate::registry) shares its breakers through.
pub const URL_VAR: &str = "BREAKER_REDIS_URL";
/// The environment variable naming the key prefix (default `breaker`).
pub const PREFIX_VAR: &str = "BREAKER_REDIS_PREFIX";

/// Why a [`RedisFleet`] could not be set up. Never names a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The URL does not parse as a Redis URL.
    #[error(
        "`BREAKER_REDIS_URL` {url} is not a Redis URL ({reason}); expected redis://[:password@]host[:port][/db] or rediss://..."
    )]
    InvalidUrl {
        /// The URL, its password replaced by `***`.
        url: RedactedUrl,
        /// What was wrong, with any password removed.
        reason: String,
    },
    /// `resync_interval` or `lease_wait` is out of range.
    #[error("`{field}` must be between {min:?} and {max:?}, got {got:?}")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// The smallest allowed.
        min: Duration,
        /// The largest allowed.
        max: Duration,
        /// What was asked for.
        got: Duration,
    },
    /// The fleet's worker thread could not start.
    #[error("the Redis fleet's thread could not start: {0}")]
    Thread(String),
    /// The root certificates given with
    /// [`tls_root_certificates`](RedisFleetBuilder::tls_root_certificates)
    /// are not PEM, or the URL is not `rediss://`.
    #[error("`tls_root_certificates` cannot be used for {url}: {reason}")]
    Tls {
        /// The URL, its password replaced by `***`.
        url: RedactedUrl,
        /// What was wrong, with any password removed.
        reason: String,
    },
}

/// A Redis URL that shows its password as `***` in `Display` and `Debug`.
///
/// ```
/// use breaker_runtime::RedactedUrl;
///
/// let url = RedactedUrl::new("redis://:hunter2@cache:6379/0");
/// assert_eq!(url.to_string(), "redis://:***@cache:6379/0");
/// assert!(!format!("{url:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl {
    shown: String,
    secret: Option<String>,
}

impl RedactedUrl {
    /// Wraps `url`, finding the password between `://user:` and `@`.
    pub fn new(url: &str) -> Self {
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return Self {
                shown: url.to_owned(),
                secret: None,
            };
        };
        let rest = &url[scheme_end..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let Some(at) = rest[..authority_end].rfind('@') else {
            return Self {
                shown: url.to_owned(),
                secret: None,
            };
        };
        let userinfo = &rest[..at];
        let (user, secret) = match userinfo.find(':') {
            Some(colon) => (&userinfo[..colon], &userinfo[colon + 1..]),
            // `redis://password@host`: redis-rs reads a lone user as a name,
            // but some write the password there; hide it either way.
            None => ("", userinfo),
        };
        let shown = format!("{}{user}:***@{}", &url[..scheme_end], &rest[at + 1..]);
        Self {
            shown,
            secret: (!secret.is_empty()).then(|| secret.to_owned()),
        }
    }

    /// `text` with every occurrence of the password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        match &self.secret {
            Some(secret) => text.replace(secret.as_str(), "***"),
            None => text.to_owned(),
        }
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

impl serde::Serialize for RedactedUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

/// A breaker's view of the fleet, in its [`BreakerStatus`](crate::BreakerStatus).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetStatus {
    /// The Redis server, without its password.
    pub store: RedactedUrl,
    /// The breaker's hash.
    pub key: String,
    /// Whether the last Redis operation succeeded.
    pub connected: bool,
    /// The fleet's consecutive failures, as last read.
    pub fleet_failures: u32,
    /// The outcomes the fleet's failure-rate window holds, as last read
    /// (0 without a `failure_rate_threshold`).
    pub window_calls: u32,
    /// The failures among them.
    pub window_failures: u32,
}

/// Builds a [`RedisFleet`].
#[derive(Debug)]
#[must_use]
pub struct RedisFleetBuilder {
    url: String,
    prefix: String,
    resync_interval: Duration,
    lease_wait: Duration,
    op_timeout: Duration,
    key_ttl: Duration,
    root_certificates: Option<Vec<u8>>,
}

impl RedisFleetBuilder {
    /// Namespaces the keys and the channel (default `breaker`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How often every shared breaker is read back from Redis, as a safety
    /// net for lost messages and to rebuild a flushed server (default 1 s;
    /// 10 ms to 1 min).
    pub fn resync_interval(mut self, every: Duration) -> Self {
        self.resync_interval = every;
        self
    }

    /// How long a half-open probe waits for its fleet-wide lease before it
    /// goes ahead on the local decision (default 5 ms; 0 to 100 ms).
    pub fn lease_wait(mut self, wait: Duration) -> Self {
        self.lease_wait = wait;
        self
    }

    /// Trusts the CA certificates in `pem` (one or more PEM blocks) for a
    /// `rediss://` server, instead of the system's store: a server with a
    /// certificate from a private CA. Without it, `rediss://` trusts the
    /// system's roots, which `SSL_CERT_FILE` may name (so a private CA works
    /// through `BREAKER_REDIS_URL` alone too).
    ///
    /// ```
    /// use breaker_runtime::{FleetError, RedisFleet};
    ///
    /// let error = RedisFleet::builder("rediss://:secret@cache:6380/0")
    ///     .tls_root_certificates(b"not a certificate".to_vec())
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, FleetError::Tls { .. }), "{error}");
    /// assert!(!error.to_string().contains("secret"));
    /// ```
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates = Some(pem.into());
        self
    }

    /// Starts the fleet's thread. It connects in the background: until it
    /// does, shared breakers decide locally.
    ///
    /// # Errors
    /// The URL does not parse, a duration is out of range, or the thread
    /// could not start.
    pub fn build(self) -> Result<RedisFleet, FleetError> {
        let url = RedactedUrl::new(&self.url);
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| FleetError::InvalidUrl {
                url: url.clone(),
                reason: url.scrub(&e.to_string()),
            })?;
        if let Some(pem) = &self.root_certificates {
            check_certificates(pem).map_err(|reason| FleetError::Tls {
                url: url.clone(),
                reason,
            })?;
        }
        let client = match self.root_certificates {
            None => client,
            Some(pem) => redis::Client::build_with_tls(
                client.get_connection_info().clone(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(|e| FleetError::Tls {
                url: url.clone(),
                reason: url.scrub(&e.to_string()),
            })?,
        };
        check_range(
            "resync_interval",
            self.resync_interval,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )?;
        check_range(
            "lease_wait",
            self.lease_wait,
            Duration::ZERO,
            Duration::from_millis(100),
        )?;
        if self.url.starts_with("rediss") {
            // rustls needs a process-wide crypto provider; another crate
            // may have installed one already, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            url,
            channel: format!("{}:fleet", self.prefix),
            prefix: self.prefix,
            origin: origin(),
            tx,
            connected: AtomicBool::new(false),
            members: Mutex::new(HashMap::new()),
            lease_wait: self.lease_wait,
            key_ttl_ms: millis(self.key_ttl),
        });
        let worker = Worker {
            link: Arc::downgrade(&link),
            client,
            op_timeout: self.op_timeout,
            resync_interval: self.resync_interval,
        };
        std::thread::Builder::new()
            .name("breaker-redis".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| FleetError::Thread(e.to_string()))?;
        Ok(RedisFleet { link })
    }
}

/// At least one certificate, and every PEM block a certificate: redis-rs
/// takes text with no certificate in it for an empty store.
fn check_certificates(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certificates.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned());
    }
    Ok(())
}

fn check_range(
    field: &'static str,
    got: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), FleetError> {
    if got < min || got > max {
        return Err(FleetError::OutOfRange {
            field,
            min,
            max,
            got,
        });
    }
    Ok(())
}

/// A connection to the Redis server the fleet's replicas share breaker
/// state through. Cheap to clone.
///
/// Share one breaker with [`share`](Self::share), or every breaker of a
/// registry, present and future, with [`share_registry`](Self::share_registry)
/// (which [`registry()`](crate::registry) does by itself when
/// `BREAKER_REDIS_URL` is set).
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, RedisFleet};
///
/// // Nothing listens on port 1: the breaker works on its local state.
/// let fleet = RedisFleet::builder("redis://:secret@127.0.0.1:1/0").build()?;
/// let breaker = CircuitBreaker::new("fleet-doc", CircuitBreakerConfig::default()).unwrap();
/// fleet.share(&breaker);
/// assert_eq!(breaker.call(|| Ok::<_, String>(1)), Ok(1));
/// let status = breaker_runtime::BreakerStatus::of(&breaker).fleet.expect("shared");
/// assert!(!status.connected);
/// assert_eq!(status.store.to_string(), "redis://:***@127.0.0.1:1/0");
/// # Ok::<(), breaker_runtime::FleetError>(())
/// ```
#[derive(Clone)]
pub struct RedisFleet {
    link: Arc<Link>,
}

impl fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFleet")
            .field("url", &self.link.url)
            .field("prefix", &self.link.prefix)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl RedisFleet {
    /// A builder for a fleet on the Redis server at `url`
    /// (`redis://[:password@]host[:port][/db]`, or `rediss://` for TLS).
    pub fn builder(url: impl Into<String>) -> RedisFleetBuilder {
        RedisFleetBuilder {
            url: url.into(),
            prefix: "breaker".into(),
            resync_interval: Duration::from_secs(1),
            lease_wait: Duration::from_millis(5),
            op_timeout: Duration::from_millis(250),
            key_ttl: Duration::from_secs(600),
            root_certificates: None,
        }
    }

    /// The fleet `BREAKER_REDIS_URL` and `BREAKER_REDIS_PREFIX` describe;
    /// `None` when the URL is not set.
    ///
    /// # Errors
    /// As [`RedisFleetBuilder::build`].
    pub fn from_env() -> Option<Result<Self, FleetError>> {
        let url = std::env::var(URL_VAR).ok().filter(|u| !u.is_empty())?;
        let mut builder = Self::builder(url);
        if let Ok(prefix) = std::env::var(PREFIX_VAR) {
            if !prefix.is_empty() {
                builder = builder.prefix(prefix);
            }
        }
        Some(builder.build())
    }

    /// Shares `breaker`'s state under its name. Sharing a breaker twice, or
    /// one already shared by another fleet, does nothing.
    pub fn share(&self, breaker: &CircuitBreaker) {
        let core = &breaker.inner.core;
        if core.fleet.is_set() {
            return;
        }
        let config = breaker.config();
        let lease_ttl = if config.timeout_duration < Duration::from_secs(60) {
            config.timeout_duration.max(Duration::from_millis(100))
        } else {
            Duration::from_secs(60)
        };
        let window = config.failure_rate_threshold.map(|rate| FleetWindow {
            size: config.sliding_window_size,
            minimum: config.minimum_calls,
            // Display prints the shortest text that parses back to the same
            // f64, so the script compares with exactly this threshold.
            rate: rate.to_string(),
        });
        let member = Arc::new(Member {
            name: breaker.inner.name.clone(),
            key: format!("{}:{}", self.link.prefix, breaker.name()),
            breaker: Arc::downgrade(&breaker.inner),
            link: self.link.clone(),
            fleet_failures: AtomicU32::new(0),
            last_ver: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            pending: AtomicU32::new(0),
            window,
            window_successes: AtomicU32::new(0),
            outcomes_queued: AtomicBool::new(false),
            outcomes_due_ms: AtomicU64::new(0),
            window_seen: AtomicU64::new(0),
            threshold: config.failure_threshold,
            recovery_ms: millis(config.recovery_timeout),
            max_probes: config.half_open_max_calls,
            lease_ttl_ms: millis(lease_ttl),
        });
        if !core.fleet.set(member.clone()) {
            return;
        }
        self.link
            .members
            .lock()
            .insert(member.name.clone(), member.clone());
        let _ = self.link.tx.send(Cmd::Sync(member));
    }

    /// Shares every breaker of `registry`, and every breaker registered in
    /// it from now on. A registry shares through one fleet: the first wins,
    /// and `false` says another was there already.
    pub fn share_registry(&self, registry: &crate::Registry) -> bool {
        registry.share_through(self)
    }

    /// How many live breakers this fleet shares. A dropped breaker (an
    /// evicted family key, say) is no longer counted, resynced or told of
    /// the fleet's messages.
    ///
    /// ```
    /// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, RedisFleet};
    ///
    /// let fleet = RedisFleet::builder("redis://127.0.0.1:1/0").build()?;
    /// let breaker = CircuitBreaker::new("counted", CircuitBreakerConfig::default()).unwrap();
    /// fleet.share(&breaker);
    /// assert_eq!(fleet.shared_breakers(), 1);
    /// drop(breaker);
    /// assert_eq!(fleet.shared_breakers(), 0);
    /// # Ok::<(), breaker_runtime::FleetError>(())
    /// ```
    pub fn shared_breakers(&self) -> usize {
        self.link.members.lock().len()
    }

    /// Whether the last Redis operation succeeded.
    pub fn is_connected(&self) -> bool {
        self.link.connected.load(Ordering::Relaxed)
    }

    /// The server, without its password.
    pub fn url(&self) -> &RedactedUrl {
        &self.link.url
    }
}

/// The members of live shared breakers, so a breaker finds its own through
/// a 4-byte index (see [`FleetSlot`]). A breaker's slot is emptied when the
/// breaker is dropped (an evicted family key, say) and taken again by the
/// next one shared, so the table is as long as the most breakers shared at
/// once, not as every breaker ever shared.
static MEMBERS: parking_lot::RwLock<Slots> = parking_lot::RwLock::new(Slots {
    members: Vec::new(),
    free: Vec::new(),
});

struct Slots {
    members: Vec<Option<Arc<Member>>>,
    /// Indices of empty slots in `members`.
    free: Vec<usize>,
}

/// A breaker's link to its fleet: in the low 31 bits, an index into
/// [`MEMBERS`] plus one, or zero while unshared; in the top bit,
/// [`WINDOW_QUIET`]. Four bytes, which fit in the core's padding: an
/// unshared breaker is no larger than without the feature.
#[derive(Debug, Default)]
pub(crate) struct FleetSlot(AtomicU32);

/// The fleet's failure-rate window, as last read, is full and holds no
/// failure: a closed-state success has nothing to tell it, and the breaker
/// skips looking its member up.
const WINDOW_QUIET: u32 = 1 << 31;
const SLOT_INDEX: u32 = WINDOW_QUIET - 1;

impl FleetSlot {
    pub(crate) fn is_set(&self) -> bool {
        // Acquire: pairs with the Release in `set`, so the member is there.
        self.0.load(Ordering::Acquire) & SLOT_INDEX != 0
    }

    /// The member, if shared. Cold paths only: takes a read lock.
    pub(crate) fn get(&self) -> Option<Arc<Member>> {
        // An unshared breaker takes no lock.
        if !self.is_set() {
            return None;
        }
        // The index is read again under the lock: `release` empties it
        // under the write lock, so a released index is never read after its
        // slot was given to another breaker.
        let slots = MEMBERS.read();
        // Acquire: see `is_set`.
        let index = (self.0.load(Ordering::Acquire) & SLOT_INDEX).checked_sub(1)?;
        slots.members.get(index as usize)?.clone()
    }

    /// Unlinks the breaker from its fleet, if shared: its slot is freed,
    /// and its fleet stops tracking it (no more resyncs or messages for
    /// it). From then on the breaker decides alone, as one never shared.
    /// When a family lets a member go, and when the breaker is dropped.
    pub(crate) fn release(&self) {
        // Relaxed: an unshared breaker (most of them) skips the lock; one
        // shared meanwhile by another thread stays shared.
        if self.0.load(Ordering::Relaxed) & SLOT_INDEX == 0 {
            return;
        }
        let member = {
            let mut slots = MEMBERS.write();
            // Relaxed: under the write lock, which `get` and `set` take.
            let linked = self.0.swap(0, Ordering::Relaxed) & SLOT_INDEX;
            let Some(index) = linked.checked_sub(1) else {
                return;
            };
            let member = slots.members.get_mut(index as usize).and_then(Option::take);
            if member.is_some() {
                slots.free.push(index as usize);
            }
            member
        };
        // Outside the table's lock: the last handle on the member may drop
        // its link, and with it the fleet.
        if let Some(member) = member {
            member.leave();
        }
    }

    /// Whether the fleet's window, as last read, is full of successes.
    pub(crate) fn window_quiet(&self) -> bool {
        // Relaxed: a hint; a stale answer sends or skips one success.
        self.0.load(Ordering::Relaxed) & WINDOW_QUIET != 0
    }

    fn set_window_quiet(&self, quiet: bool) {
        if self.window_quiet() == quiet {
            return;
        }
        // Relaxed: as `window_quiet`; the RMW leaves the index as it is.
        if quiet {
            self.0.fetch_or(WINDOW_QUIET, Ordering::Relaxed);
        } else {
            self.0.fetch_and(!WINDOW_QUIET, Ordering::Relaxed);
        }
    }

    /// Links `member`; `false` if the breaker was linked already.
    fn set(&self, member: Arc<Member>) -> bool {
        let mut slots = MEMBERS.write();
        let index = match slots.free.last() {
            Some(&free) => free,
            None => slots.members.len(),
        };
        let Some(linked) = u32::try_from(index + 1)
            .ok()
            .filter(|&linked| linked <= SLOT_INDEX)
        else {
            return false;
        };
        // Release: publishes the slot (written under the write lock, which
        // `get` waits for) to `get`.
        if self
            .0
            .compare_exchange(0, linked, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        if index == slots.members.len() {
            slots.members.push(Some(member));
        } else {
            slots.free.pop();
            slots.members[index] = Some(member);
        }
        true
    }
}

impl Drop for FleetSlot {
    /// The breaker is gone: it leaves its fleet, if it had not yet.
    fn drop(&mut self) {
        self.release();
    }
}

/// How often, at most, one member's closed-state successes are pushed
/// into the fleet's failure-rate window; a failure pushes them at once.
const OUTCOMES_EVERY: Duration = Duration::from_millis(10);

/// What the fleet's thread shares with the breakers.
struct Link {
    url: RedactedUrl,
    prefix: String,
    channel: String,
    /// This replica, in the hash's `origin` field.
    origin: String,
    tx: mpsc::UnboundedSender<Cmd>,
    /// Relaxed everywhere: a hint for the status and for skipping leases.
    connected: AtomicBool,
    members: Mutex<HashMap<Arc<str>, Arc<Member>>>,
    lease_wait: Duration,
    key_ttl_ms: u64,
}

/// One shared breaker.
pub(crate) struct Member {
    name: Arc<str>,
    key: String,
    breaker: Weak<Inner>,
    link: Arc<Link>,
    /// The fleet's consecutive failures as last read (Relaxed: a hint).
    fleet_failures: AtomicU32,
    /// The last `ver` of the hash taken on.
    last_ver: AtomicU64,
    /// A transition could not be written: merge it back on reconnection.
    dirty: AtomicBool,
    /// Transitions queued and not yet written: a resync then neither
    /// rebuilds nor merges from the local state, which they will write.
    pending: AtomicU32,
    /// The breaker's failure-rate window, shared in its hash.
    window: Option<FleetWindow>,
    /// Closed-state successes not yet pushed into the fleet's window.
    window_successes: AtomicU32,
    /// An `Outcomes` command is queued: successes only add to the count.
    outcomes_queued: AtomicBool,
    /// When the next push of successes may go (Unix ms; Relaxed: the
    /// fleet's thread alone reads and writes it).
    outcomes_due_ms: AtomicU64,
    /// The fleet's window as last read: outcomes in the high half,
    /// failures in the low (Relaxed: a hint, like `fleet_failures`).
    window_seen: AtomicU64,
    threshold: u32,
    recovery_ms: u64,
    max_probes: u32,
    lease_ttl_ms: u64,
}

/// A shared failure-rate window's settings, as the scripts take them.
#[derive(Debug)]
struct FleetWindow {
    size: u32,
    minimum: u32,
    rate: String,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

enum Cmd {
    Transition {
        member: Arc<Member>,
        to: DetailedState,
        cause: TransitionCause,
        until_ms: u64,
    },
    Failure(Arc<Member>),
    Success(Arc<Member>),
    /// Pushes the member's pending window successes.
    Outcomes(Arc<Member>),
    Lease {
        member: Arc<Member>,
        id: String,
        reply: std::sync::mpsc::SyncSender<bool>,
    },
    Release {
        member: Arc<Member>,
        id: String,
    },
    Sync(Arc<Member>),
}

impl Member {
    /// A failure counted while closed. Called under the core's lock: sends
    /// and returns.
    pub(crate) fn note_failure(self: Arc<Self>) {
        let tx = self.link.tx.clone();
        let _ = tx.send(Cmd::Failure(self));
    }

    /// A closed-state success of a breaker with a failure-rate window.
    /// Called under the core's lock: counts, and queues one push for
    /// however many successes arrive before the fleet's thread takes them.
    /// Sends nothing while the fleet's window is full and holds no failure
    /// (a success then changes nothing), nor while disconnected (the local
    /// window decides then).
    pub(crate) fn note_window_success(self: Arc<Self>) {
        let Some(window) = &self.window else { return };
        if !self.link.connected.load(Ordering::Relaxed) {
            return;
        }
        let seen = self.window_seen.load(Ordering::Relaxed);
        if seen == u64::from(window.size) << 32 {
            return;
        }
        // Relaxed: the count is taken with a swap on the fleet's thread;
        // the channel's send orders it before the command.
        self.window_successes.fetch_add(1, Ordering::Relaxed);
        if !self.outcomes_queued.swap(true, Ordering::Relaxed) {
            let tx = self.link.tx.clone();
            let _ = tx.send(Cmd::Outcomes(self));
        }
    }

    /// Whether the fleet's window, not this replica's, decides a trip on
    /// the failure rate: while connected. Cut off, the local window does.
    pub(crate) fn decides_rate(&self) -> bool {
        self.window.is_some() && self.link.connected.load(Ordering::Relaxed)
    }

    /// A success cleared this replica's failure count. Called under the
    /// core's lock: sends and returns.
    pub(crate) fn note_success(self: Arc<Self>) {
        let tx = self.link.tx.clone();
        let _ = tx.send(Cmd::Success(self));
    }

    /// A transition this replica made.
    pub(crate) fn note_transition(self: Arc<Self>, to: DetailedState, cause: TransitionCause) {
        let until_ms = match self.breaker.upgrade() {
            Some(inner) => match inner.core.open_until() {
                Some(until) => {
                    let left = until.saturating_sub(inner.core.clock.now());
                    wall_ms().saturating_add(left / 1_000_000)
                }
                None => 0,
            },
            None => return,
        };
        self.pending.fetch_add(1, Ordering::Relaxed);
        let tx = self.link.tx.clone();
        let _ = tx.send(Cmd::Transition {
            member: self,
            to,
            cause,
            until_ms,
        });
    }

    /// A probe ended without a transition: its lease is given back.
    /// Called under the core's lock: sends and returns.
    pub(crate) fn note_probe_done(self: Arc<Self>, generation: u32, ticket: u32) {
        let id = lease_id(&self.link.origin, generation, ticket);
        let tx = self.link.tx.clone();
        let _ = tx.send(Cmd::Release { member: self, id });
    }

    /// Asks the fleet for a half-open probe slot; `true` when granted, or
    /// when Redis does not answer within the lease wait.
    pub(crate) fn lease_probe(self: Arc<Self>, generation: u32, ticket: u32) -> bool {
        if !self.link.connected.load(Ordering::Relaxed) {
            return true;
        }
        let member = self.clone();
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let id = lease_id(&self.link.origin, generation, ticket);
        if self.link.tx.send(Cmd::Lease { member, id, reply }).is_err() {
            return true;
        }
        answer.recv_timeout(self.link.lease_wait).unwrap_or(true)
    }

    /// Stops tracking this member in its fleet, unless a newer breaker of
    /// the same name took its place there.
    fn leave(&self) {
        let mut members = self.link.members.lock();
        if members
            .get(&self.name)
            .is_some_and(|tracked| std::ptr::eq(&**tracked, self))
        {
            members.remove(&self.name);
        }
    }

    pub(crate) fn status(&self) -> FleetStatus {
        FleetStatus {
            store: self.link.url.clone(),
            key: self.key.clone(),
            connected: self.link.connected.load(Ordering::Relaxed),
            fleet_failures: self.fleet_failures.load(Ordering::Relaxed),
            window_calls: (self.window_seen.load(Ordering::Relaxed) >> 32) as u32,
            window_failures: self.window_seen.load(Ordering::Relaxed) as u32,
        }
    }

    /// Takes on the hash as a script returned it, or as a message carried it.
    fn adopt(&self, hash: &Hash) {
        let Some(inner) = self.breaker.upgrade() else {
            return;
        };
        self.fleet_failures.store(hash.fails, Ordering::Relaxed);
        let window = if hash.state == DetailedState::Closed {
            (u64::from(hash.wlen) << 32) | u64::from(hash.wfails)
        } else {
            0
        };
        self.window_seen.store(window, Ordering::Relaxed);
        inner.core.fleet.set_window_quiet(
            self.window
                .as_ref()
                .is_some_and(|w| window == u64::from(w.size) << 32),
        );
        let last = self.last_ver.load(Ordering::Relaxed);
        // A write this replica asked for and the script refused: the hash
        // holds a state this replica must take on, whatever it saw before.
        if hash.ver > last || hash.kept {
            self.last_ver.store(hash.ver, Ordering::Relaxed);
            if hash.origin != self.link.origin {
                let core = &inner.core;
                let until = core.clock.now().saturating_add(
                    hash.until_ms
                        .saturating_sub(wall_ms())
                        .saturating_mul(1_000_000),
                );
                let transition = core.adopt(hash.state, until, hash.cause);
                CircuitBreaker {
                    inner: inner.clone(),
                }
                .emit_events(transition);
            }
        }
        if hash.state == DetailedState::Closed {
            inner.core.adopt_failures(hash.fails);
        }
    }
}

/// A breaker's hash as a script returns it or a message carries it.
#[derive(Debug)]
struct Hash {
    ver: u64,
    state: DetailedState,
    until_ms: u64,
    cause: TransitionCause,
    origin: String,
    fails: u32,
    /// The fleet's failure-rate window: outcomes and failures held.
    wlen: u32,
    wfails: u32,
    /// The script refused this replica's write and kept its own state.
    kept: bool,
}

fn state_name(state: DetailedState) -> &'static str {
    match state {
        DetailedState::Closed => "closed",
        DetailedState::Open => "open",
        DetailedState::HalfOpen => "half_open",
        DetailedState::ForcedOpen => "forced_open",
        DetailedState::ForcedClosed => "forced_closed",
    }
}

fn parse_state(text: &str) -> DetailedState {
    match text {
        "open" => DetailedState::Open,
        "half_open" => DetailedState::HalfOpen,
        "forced_open" => DetailedState::ForcedOpen,
        "forced_closed" => DetailedState::ForcedClosed,
        _ => DetailedState::Closed,
    }
}

fn cause_name(cause: TransitionCause) -> &'static str {
    match cause {
        TransitionCause::FailureThreshold => "failure_threshold",
        TransitionCause::FailureRate => "failure_rate",
        TransitionCause::RetryAfter => "retry_after",
        TransitionCause::RecoveryTimeout => "recovery_timeout",
        TransitionCause::ProbeFailed => "probe_failed",
        TransitionCause::ProbeTimedOut => "probe_timed_out",
        TransitionCause::ProbesSucceeded => "probes_succeeded",
        TransitionCause::Manual => "manual",
    }
}

fn parse_cause(text: &str) -> TransitionCause {
    match text {
        "failure_threshold" => TransitionCause::FailureThreshold,
        "failure_rate" => TransitionCause::FailureRate,
        "retry_after" => TransitionCause::RetryAfter,
        "recovery_timeout" => TransitionCause::RecoveryTimeout,
        "probe_failed" => TransitionCause::ProbeFailed,
        "probe_timed_out" => TransitionCause::ProbeTimedOut,
        "probes_succeeded" => TransitionCause::ProbesSucceeded,
        _ => TransitionCause::Manual,
    }
}

/// `kind|ver|state|until|cause|origin|fails|wl|wf|name`.
fn parse_message(text: &str) -> Option<(String, Hash)> {
    let mut parts = text.splitn(10, '|');
    let _kind = parts.next()?;
    let ver = parts.next()?.parse().ok()?;
    let state = parse_state(parts.next()?);
    let until_ms = parts.next()?.parse().ok()?;
    let cause = parse_cause(parts.next()?);
    let origin = parts.next()?.to_owned();
    let fails = parts.next()?.parse().ok()?;
    let wlen = parts.next()?.parse().ok()?;
    let wfails = parts.next()?.parse().ok()?;
    let name = parts.next()?.to_owned();
    Some((
        name,
        Hash {
            ver,
            state,
            until_ms,
            cause,
            origin,
            fails,
            wlen,
            wfails,
            kept: false,
        },
    ))
}

/// A script's reply: `ver, state, until, cause, fails, wl, wf, outcome`.
fn parse_reply(reply: Vec<String>, origin: &str) -> Option<Hash> {
    let [ver, state, until, cause, fails, wlen, wfails, outcome] =
        <[String; 8]>::try_from(reply).ok()?;
    Some(Hash {
        ver: ver.parse().ok()?,
        state: parse_state(&state),
        until_ms: until.parse().ok()?,
        cause: parse_cause(&cause),
        // Replies are for the replica that asked; `adopt` takes them on
        // whatever their origin, as "not this replica".
        origin: if outcome == "set" || outcome == "merged" || outcome == "rebuilt" {
            origin.to_owned()
        } else {
            String::new()
        },
        fails: fails.parse().ok()?,
        wlen: wlen.parse().ok()?,
        wfails: wfails.parse().ok()?,
        kept: outcome == "kept",
    })
}

fn lease_id(origin: &str, generation: u32, ticket: u32) -> String {
    format!("{origin}:{generation}:{ticket}")
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn origin() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

struct Scripts {
    transition: redis::Script,
    failure: redis::Script,
    success: redis::Script,
    outcomes: redis::Script,
    lease: redis::Script,
    sync: redis::Script,
}

struct Worker {
    link: Weak<Link>,
    client: redis::Client,
    op_timeout: Duration,
    resync_interval: Duration,
}

impl Worker {
    fn run(self, rx: mpsc::UnboundedReceiver<Cmd>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(self.serve(rx));
    }

    async fn serve(self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let scripts = Scripts {
            transition: redis::Script::new(&scripts::with_prelude(scripts::TRANSITION)),
            failure: redis::Script::new(&scripts::with_prelude(scripts::FAILURE)),
            success: redis::Script::new(&scripts::with_prelude(scripts::SUCCESS)),
            outcomes: redis::Script::new(&scripts::with_prelude(scripts::OUTCOMES)),
            lease: redis::Script::new(&scripts::with_prelude(scripts::LEASE)),
            sync: redis::Script::new(&scripts::with_prelude(scripts::SYNC)),
        };
        let (resubscribed_tx, mut resubscribed) = mpsc::unbounded_channel();
        tokio::spawn(subscribe(
            self.link.clone(),
            self.client.clone(),
            self.op_timeout,
            resubscribed_tx,
        ));
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        let mut backoff = Backoff::default();
        let mut resync = tokio::time::interval(self.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cmd = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => vec![cmd],
                    None => return,
                },
                _ = resync.tick() => self.all_syncs(),
                Some(()) = resubscribed.recv() => self.all_syncs(),
            };
            let Some(link) = self.link.upgrade() else {
                return;
            };
            if conn.is_none() && backoff.ready() {
                conn = self.connect().await;
                if conn.is_some() {
                    backoff = Backoff::default();
                    set_connected(&link, true);
                } else {
                    backoff.failed();
                    set_connected(&link, false);
                }
            }
            for cmd in cmd {
                let ok = match &mut conn {
                    Some(c) => self.execute(&link, &scripts, c, cmd).await,
                    None => {
                        mark_dirty(&cmd);
                        false
                    }
                };
                if !ok && conn.is_some() {
                    conn = None;
                    backoff.failed();
                    set_connected(&link, false);
                }
            }
        }
    }

    fn all_syncs(&self) -> Vec<Cmd> {
        match self.link.upgrade() {
            Some(link) => link
                .members
                .lock()
                .values()
                .cloned()
                .map(Cmd::Sync)
                .collect(),
            None => Vec::new(),
        }
    }

    async fn connect(&self) -> Option<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(self.op_timeout)
            .set_response_timeout(self.op_timeout);
        tokio::time::timeout(
            self.op_timeout * 2,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .ok()?
        .ok()
    }

    /// Runs one command; `false` when Redis failed to answer.
    async fn execute(
        &self,
        link: &Link,
        scripts: &Scripts,
        conn: &mut redis::aio::MultiplexedConnection,
        cmd: Cmd,
    ) -> bool {
        let ttl = link.key_ttl_ms;
        let (member, result) = match cmd {
            Cmd::Transition {
                member,
                to,
                cause,
                until_ms,
            } => {
                member.pending.fetch_sub(1, Ordering::Relaxed);
                let manual = cause == TransitionCause::Manual;
                // Stale: the replica has moved on since (it took on a newer
                // state from the fleet, or made a later transition, queued
                // behind this one), and writing it would undo the newer
                // state. An operator's command is written whatever.
                if !manual
                    && member
                        .breaker
                        .upgrade()
                        .is_none_or(|inner| inner.core.state() != to)
                {
                    return true;
                }
                let mut call = scripts.transition.key(&member.key);
                call.arg(&link.channel)
                    .arg(&*member.name)
                    .arg(&link.origin)
                    .arg(state_name(to))
                    .arg(until_ms)
                    .arg(cause_name(cause))
                    .arg(ttl)
                    .arg(if manual { "1" } else { "0" });
                let result = self.run_script(conn, &call).await;
                if result.is_none() {
                    member.dirty.store(true, Ordering::Relaxed);
                }
                (member, result)
            }
            Cmd::Failure(member) => {
                // The successes before this failure go first, in one push.
                let successes = member.window_successes.swap(0, Ordering::Relaxed);
                let mut call = scripts.failure.key(&member.key);
                call.arg(&link.channel)
                    .arg(&*member.name)
                    .arg(&link.origin)
                    .arg(member.threshold)
                    .arg(member.recovery_ms)
                    .arg(ttl)
                    .arg(successes);
                match &member.window {
                    Some(w) => call.arg(w.size).arg(w.minimum).arg(&w.rate),
                    None => call.arg(0).arg(0).arg(""),
                };
                let result = self.run_script(conn, &call).await;
                (member, result)
            }
            Cmd::Outcomes(member) => {
                // At most one push per member every OUTCOMES_EVERY: the
                // successes meanwhile add to it (a failure takes them at
                // once). Still queued while it waits.
                let due = member.outcomes_due_ms.load(Ordering::Relaxed);
                let now = wall_ms();
                if now < due {
                    let tx = link.tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(due - now)).await;
                        let _ = tx.send(Cmd::Outcomes(member));
                    });
                    return true;
                }
                member
                    .outcomes_due_ms
                    .store(now + millis(OUTCOMES_EVERY), Ordering::Relaxed);
                // Cleared before the count is taken: a success counted after
                // the swap queues the next push.
                member.outcomes_queued.store(false, Ordering::Relaxed);
                let successes = member.window_successes.swap(0, Ordering::Relaxed);
                let Some(window) = member.window.as_ref().filter(|_| successes > 0) else {
                    return true;
                };
                let mut call = scripts.outcomes.key(&member.key);
                call.arg(successes).arg(window.size).arg(ttl);
                let result = self.run_script(conn, &call).await;
                (member, result)
            }
            Cmd::Success(member) => {
                if member.fleet_failures.load(Ordering::Relaxed) == 0 {
                    return true;
                }
                let mut call = scripts.success.key(&member.key);
                call.arg(&link.channel).arg(&*member.name);
                let result = self.run_script(conn, &call).await;
                (member, result)
            }
            Cmd::Lease { member, id, reply } => {
                let mut call = scripts.lease.key(&member.key);
                call.arg(&id)
                    .arg(member.max_probes)
                    .arg(member.lease_ttl_ms)
                    .arg(ttl);
                let granted = tokio::time::timeout(self.op_timeout, call.invoke_async::<i64>(conn))
                    .await
                    .ok()
                    .and_then(Result::ok);
                let _ = reply.try_send(granted.is_none_or(|g| g == 1));
                return granted.is_some();
            }
            Cmd::Release { member, id } => {
                let mut hdel = redis::cmd("HDEL");
                hdel.arg(&member.key).arg(format!("p:{id}"));
                return tokio::time::timeout(self.op_timeout, hdel.query_async::<i64>(conn))
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
            Cmd::Sync(member) => {
                let Some(inner) = member.breaker.upgrade() else {
                    member.leave();
                    return true;
                };
                if member.pending.load(Ordering::Relaxed) != 0 {
                    return true;
                }
                let state = inner.core.state();
                let until_ms = match inner.core.open_until() {
                    Some(until) => wall_ms()
                        .saturating_add(until.saturating_sub(inner.core.clock.now()) / 1_000_000),
                    None => 0,
                };
                let dirty = member.dirty.swap(false, Ordering::Relaxed);
                let mut call = scripts.sync.key(&member.key);
                call.arg(&link.channel)
                    .arg(&*member.name)
                    .arg(&link.origin)
                    .arg(state_name(state))
                    .arg(until_ms)
                    .arg(ttl)
                    .arg(if dirty { "1" } else { "0" });
                let result = self.run_script(conn, &call).await;
                if result.is_none() && dirty {
                    member.dirty.store(true, Ordering::Relaxed);
                }
                (member, result)
            }
        };
        match result {
            Some(reply) => {
                if let Some(hash) = parse_reply(reply, &link.origin) {
                    member.adopt(&hash);
                }
                true
            }
            None => false,
        }
    }

    async fn run_script(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        call: &redis::ScriptInvocation<'_>,
    ) -> Option<Vec<String>> {
        tokio::time::timeout(self.op_timeout, call.invoke_async(conn))
            .await
            .ok()?
            .ok()
    }
}

fn mark_dirty(cmd: &Cmd) {
    if let Cmd::Transition { member, .. } = cmd {
        member.pending.fetch_sub(1, Ordering::Relaxed);
        member.dirty.store(true, Ordering::Relaxed);
    }
    if let Cmd::Lease { reply, .. } = cmd {
        let _ = reply.try_send(true);
    }
    if let Cmd::Outcomes(member) = cmd {
        // Cut off, the local window decides: these successes are dropped.
        member.outcomes_queued.store(false, Ordering::Relaxed);
        member.window_successes.store(0, Ordering::Relaxed);
    }
}

fn set_connected(link: &Link, connected: bool) {
    if link.connected.swap(connected, Ordering::Relaxed) == connected {
        return;
    }
    let store = link.url.to_string();
    let members: Vec<Arc<str>> = link.members.lock().keys().cloned().collect();
    for name in members {
        let kind = if connected {
            EventKind::FleetConnected {
                store: store.clone(),
            }
        } else {
            EventKind::FleetDisconnected {
                store: store.clone(),
            }
        };
        events::emit(&name, kind);
    }
}

/// Reconnection delays: 50 ms, doubling to 2 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
    next: Option<tokio::time::Instant>,
}

impl Backoff {
    fn ready(&self) -> bool {
        self.next
            .is_none_or(|next| tokio::time::Instant::now() >= next)
    }
    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let delay = Duration::from_millis(50)
            .saturating_mul(1 << self.failures.min(6))
            .min(Duration::from_secs(2));
        self.next = Some(tokio::time::Instant::now() + delay);
    }
}

/// Listens on the fleet's channel, and resubscribes with backoff. Each
/// (re)subscription asks for a resync, which merges state back.
async fn subscribe(
    link: Weak<Link>,
    client: redis::Client,
    op_timeout: Duration,
    resubscribed: mpsc::UnboundedSender<()>,
) {
    use futures_util::StreamExt;
    let mut backoff = Backoff::default();
    loop {
        if !backoff.ready() {
            tokio::time::sleep(Duration::from_millis(25)).await;
            continue;
        }
        let Some(channel) = link.upgrade().map(|l| l.channel.clone()) else {
            return;
        };
        let pubsub = tokio::time::timeout(op_timeout * 2, client.get_async_pubsub()).await;
        let mut pubsub = match pubsub {
            Ok(Ok(pubsub)) => pubsub,
            _ => {
                backoff.failed();
                continue;
            }
        };
        if tokio::time::timeout(op_timeout, pubsub.subscribe(&channel))
            .await
            .map_or(true, |r| r.is_err())
        {
            backoff.failed();
            continue;
        }
        backoff = Backoff::default();
        let _ = resubscribed.send(());
        let mut messages = pubsub.into_on_message();
        // A frozen server sends nothing and closes nothing: the resync's
        // failures mark the link down; messages resume when it thaws.
        while let Some(message) = messages.next().await {
            let Some(link) = link.upgrade() else { return };
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            if let Some((name, hash)) = parse_message(&text) {
                let member = link.members.lock().get(name.as_str()).cloned();
                if let Some(member) = member {
                    member.adopt(&hash);
                }
            }
        }
        backoff.failed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_a_name_with_bars() {
        let (name, hash) = parse_message("s|7|open|123|retry_after|me|0|4|1|llm|a|b").unwrap();
        assert_eq!(name, "llm|a|b");
        assert_eq!(hash.ver, 7);
        assert_eq!(hash.state, DetailedState::Open);
        assert_eq!(hash.cause, TransitionCause::RetryAfter);
        assert_eq!(hash.until_ms, 123);
    }

    #[test]
    fn a_dropped_breakers_slot_is_taken_by_the_next_one_shared() {
        let fleet = RedisFleet::builder("redis://127.0.0.1:1/0")
            .build()
            .unwrap();
        for wave in 0..4 {
            let breakers: Vec<_> = (0..50)
                .map(|i| CircuitBreaker::new(format!("slot-{wave}-{i}"), Default::default()))
                .collect::<Result<_, _>>()
                .unwrap();
            for breaker in &breakers {
                fleet.share(breaker);
            }
            assert_eq!(fleet.shared_breakers(), 50);
        }
        assert_eq!(fleet.shared_breakers(), 0);
        // No other test of this binary shares a breaker.
        let slots = MEMBERS.read();
        assert_eq!(slots.members.len(), 50, "200 shared, 50 at once");
        assert!(slots.members.iter().all(Option::is_none));
    }

    #[test]
    fn a_url_without_a_password_is_shown_as_is() {
        let url = RedactedUrl::new("redis://cache:6379/2");
        assert_eq!(url.to_string(), "redis://cache:6379/2");
        assert_eq!(url.scrub("x"), "x");
    }

    #[test]
    fn a_password_is_hidden_in_display_debug_and_scrubbed_text() {
        let url = RedactedUrl::new("rediss://user:s3cr%40t@cache:6380/0");
        assert_eq!(url.to_string(), "rediss://user:***@cache:6380/0");
        assert!(!format!("{url:?}").contains("s3cr"));
        assert_eq!(url.scrub("auth s3cr%40t failed"), "auth *** failed");
    }
}
