//! Fallbacks: what a call returns when the protected call cannot or did not
//! produce a good result. The three strategies of the seed design are here:
//! [`SimpleFallback`], [`CachedFallback`] and [`DegradedServiceFallback`].
//! Each is told why it runs through a [`FallbackReason`].

use std::any::{Any, TypeId};
use std::borrow::Borrow;
use std::cell::Cell;
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use lru::LruCache;
use parking_lot::Mutex;

use crate::clock::{Clock, ClockHandle, duration_nanos};
use crate::error::{FailureType, FallbackReason};

/// A fallback strategy for calls whose input is `K` and whose result is `T`.
///
/// Returning `None` means "nothing to serve": the caller then gets the
/// original error (or the breaker's).
pub trait Fallback<K: ?Sized, T>: Send + Sync {
    /// The value to serve instead of the call's own result.
    fn fallback(&self, input: &K, reason: &FallbackReason) -> Option<T>;

    /// Told of every good result, so a strategy can remember it.
    fn record_success(&self, _input: &K, _value: &T) {}
}

/// Serves one fixed value, whatever the input.
///
/// ```
/// use breaker_runtime::{Fallback, FallbackReason, SimpleFallback};
///
/// let fallback = SimpleFallback::new("Service temporarily unavailable");
/// assert_eq!(
///     fallback.fallback(&(), &FallbackReason::ForcedOpen),
///     Some("Service temporarily unavailable")
/// );
/// ```
#[derive(Debug, Clone)]
pub struct SimpleFallback<T>(T);

impl<T> SimpleFallback<T> {
    /// A fallback serving `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }
}

impl<K: ?Sized, T: Clone + Send + Sync> Fallback<K, T> for SimpleFallback<T> {
    fn fallback(&self, _input: &K, _reason: &FallbackReason) -> Option<T> {
        Some(self.0.clone())
    }
}

/// Serves a function of the call's input: a cheaper, degraded answer.
///
/// ```
/// use breaker_runtime::{DegradedServiceFallback, Fallback, FallbackReason};
///
/// let fallback = DegradedServiceFallback::new(|query: &String| {
///     format!("I received your query: {query}. Please try again later.")
/// });
/// let answer = fallback.fallback(&"hi".to_owned(), &FallbackReason::HalfOpenFull);
/// assert_eq!(answer.as_deref(), Some("I received your query: hi. Please try again later."));
/// ```
#[derive(Debug, Clone)]
pub struct DegradedServiceFallback<F>(F);

impl<F> DegradedServiceFallback<F> {
    /// A fallback computing its answer with `function`.
    pub fn new(function: F) -> Self {
        Self(function)
    }
}

impl<K: ?Sized, T, F> Fallback<K, T> for DegradedServiceFallback<F>
where
    F: Fn(&K) -> T + Send + Sync,
{
    fn fallback(&self, input: &K, _reason: &FallbackReason) -> Option<T> {
        Some((self.0)(input))
    }
}

/// Serves the last good result for an equal input, or an entry added by
/// hand; bounded by LRU eviction, with an optional time to live.
///
/// ```
/// use std::time::Duration;
/// use breaker_runtime::{CachedFallback, Fallback, FallbackReason, ManualClock};
///
/// let clock = ManualClock::new();
/// let cache = CachedFallback::<String, String>::new()
///     .with_ttl(Duration::from_secs(60))
///     .with_clock(clock.clone());
/// cache.add_to_cache("greeting".to_owned(), "Hello! Service is temporarily down.".to_owned());
///
/// let reason = FallbackReason::ForcedOpen;
/// assert!(cache.fallback(&"greeting".to_owned(), &reason).is_some());
/// assert!(cache.fallback(&"unknown".to_owned(), &reason).is_none());
///
/// clock.advance(Duration::from_secs(61));
/// assert!(cache.fallback(&"greeting".to_owned(), &reason).is_none(), "expired");
/// ```
#[derive(Debug)]
pub struct CachedFallback<K: Hash + Eq, V> {
    entries: Mutex<LruCache<K, (V, u64)>>,
    ttl_nanos: Option<u64>,
    clock: ClockHandle,
}

impl<K: Hash + Eq, V> Default for CachedFallback<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> CachedFallback<K, V> {
    /// The default capacity, as in the issue that asked for this cache.
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// An empty cache of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY)
    /// entries, without expiry, on the system clock.
    pub fn new() -> Self {
        Self::with_capacity(NonZeroUsize::new(Self::DEFAULT_CAPACITY).expect("1024 is not zero"))
    }

    /// An empty cache holding at most `capacity` entries.
    pub fn with_capacity(capacity: NonZeroUsize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(capacity)),
            ttl_nanos: None,
            clock: ClockHandle::System,
        }
    }

    /// Entries older than `ttl` are no longer served.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_nanos = Some(duration_nanos(ttl));
        self
    }

    /// Reads entry ages from `clock` (for tests).
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = ClockHandle::from_clock(clock);
        self
    }

    pub(crate) fn with_clock_handle(mut self, clock: ClockHandle) -> Self {
        self.clock = clock;
        self
    }

    /// Adds or replaces an entry.
    pub fn add_to_cache(&self, key: K, value: V) {
        let now = self.clock.now();
        self.entries.lock().put(key, (value, now));
    }

    /// The live entry for `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        let now = self.clock.now();
        let mut entries = self.entries.lock();
        let (value, stored_at) = entries.get(key)?;
        if let Some(ttl) = self.ttl_nanos {
            if now.saturating_sub(*stored_at) > ttl {
                entries.pop(key);
                return None;
            }
        }
        Some(value.clone())
    }

    /// Entries held now, live or expired.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.lock().clear();
    }
}

impl<K, V> Fallback<K, V> for CachedFallback<K, V>
where
    K: Hash + Eq + Clone + Send,
    V: Clone + Send,
{
    fn fallback(&self, input: &K, _reason: &FallbackReason) -> Option<V> {
        self.get(input)
    }

    fn record_success(&self, input: &K, value: &V) {
        self.add_to_cache(input.clone(), value.clone());
    }
}

/// The cached fallbacks of one breaker: one per `fallback = cached` call
/// site and `(K, V)` types, found by the site's id, and the caches shared
/// by type that [`CircuitBreaker::cache`](crate::CircuitBreaker::cache)
/// hands out.
///
/// A call site claims the entry under its id the first time it asks, so an
/// entry added by hand before traffic is served by that site. Site ids come
/// from paths and are not unique in every program (two methods of the same
/// name in one module, nested functions): an entry claimed by one site is
/// never handed to another; the later site gets a cache of its own instead.
/// A shelf is touched once per call site, never on a call's path.
///
/// Boxed and made on first use: most breakers never have a cached
/// fallback, and the box keeps the shelf 16 bytes smaller in every breaker.
#[derive(Default)]
// The box is the point: a `Vec` is 24 bytes inline, an empty `Option<Box>` 8.
#[allow(clippy::box_collection)]
pub(crate) struct CacheShelf(Mutex<Option<Box<Vec<Shelved>>>>);

struct Shelved {
    /// `None`: a cache shared by type.
    site: Option<Box<str>>,
    /// The `TypeId` of the `CachedFallback<K, V>`.
    type_id: TypeId,
    /// The address of the call site that claimed the entry, if any.
    owner: Option<usize>,
    /// Claimed under an id another site already owned: never found by id.
    private: bool,
    cache: Arc<dyn Any + Send + Sync>,
}

/// Who asks the shelf for a cache.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asker<'a> {
    /// Anyone wanting the cache shared by every user of the types.
    Shared,
    /// Code, such as a test or a warm-up, asking for a site's cache by id.
    ById(&'a str),
    /// The call site at address `site`, whose id is `id`.
    Site { id: &'a str, site: usize },
}

impl CacheShelf {
    /// The cache `asker` gets for keys `K` and values `V`, made by `make`
    /// if there is none yet.
    pub(crate) fn get<K, V>(
        &self,
        asker: Asker<'_>,
        make: impl FnOnce() -> CachedFallback<K, V>,
    ) -> Arc<CachedFallback<K, V>>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
    {
        let type_id = TypeId::of::<CachedFallback<K, V>>();
        let (id, claimant) = match asker {
            Asker::Shared => (None, None),
            Asker::ById(id) => (Some(id), None),
            Asker::Site { id, site } => (Some(id), Some(site)),
        };
        let mut guard = self.0.lock();
        let shelf = guard.get_or_insert_with(Box::default);
        let same = |entry: &Shelved| entry.type_id == type_id && entry.site.as_deref() == id;
        let found = match claimant {
            None => shelf.iter().position(|entry| same(entry) && !entry.private),
            Some(site) => shelf
                .iter()
                .position(|entry| same(entry) && entry.owner == Some(site))
                .or_else(|| {
                    shelf
                        .iter()
                        .position(|entry| same(entry) && entry.owner.is_none())
                }),
        };
        let erased = match found {
            Some(index) => {
                let entry = &mut shelf[index];
                entry.owner = entry.owner.or(claimant);
                Arc::clone(&entry.cache)
            }
            None => {
                let private = claimant.is_some() && shelf.iter().any(same);
                if private {
                    tracing::warn!(
                        site = id,
                        "two `fallback = cached` functions on one breaker share the site id {:?}; \
                         each keeps its own cache, and entries added by id reach only the first called",
                        id.unwrap_or_default()
                    );
                }
                let cache: Arc<dyn Any + Send + Sync> = Arc::new(make());
                shelf.push(Shelved {
                    site: id.map(Box::from),
                    type_id,
                    owner: claimant,
                    private,
                    cache: Arc::clone(&cache),
                });
                cache
            }
        };
        drop(guard);
        erased
            .downcast::<CachedFallback<K, V>>()
            .unwrap_or_else(|_| unreachable!("a cache is shelved under its own type id"))
    }
}

thread_local! {
    static CURRENT_REASON: Cell<PackedReason> = const { Cell::new(PackedReason::NONE) };
}

/// An `Option<FallbackReason>` as three whole words, for the thread-local.
///
/// Copying the enum itself moves a tag byte and narrower fields with wide
/// loads that straddle the stores which just wrote them; the CPU then stalls
/// on each copy, and the open-state rejection path copies twice. Words are
/// stored and loaded whole.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PackedReason([u64; 3]);

impl PackedReason {
    const NONE: Self = Self([0; 3]);

    #[inline(always)]
    fn pack(reason: FallbackReason) -> Self {
        let duration = |tag, d: Duration| [tag, d.as_secs(), u64::from(d.subsec_nanos())];
        Self(match reason {
            FallbackReason::Open { retry_after } => duration(1, retry_after),
            FallbackReason::ForcedOpen => [2, 0, 0],
            FallbackReason::HalfOpenFull => [3, 0, 0],
            FallbackReason::LocalRateLimit { retry_after } => duration(4, retry_after),
            FallbackReason::Timeout { after } => duration(5, after),
            FallbackReason::Failure { failure_type } => [6, failure_type.index() as u64, 0],
            FallbackReason::LowQuality { score, threshold } => {
                [7, score.to_bits(), threshold.to_bits()]
            }
            FallbackReason::BulkheadFull { limit } => [8, u64::from(limit), 0],
            FallbackReason::WorkerUnavailable => [9, 0, 0],
        })
    }

    fn unpack(self) -> Option<FallbackReason> {
        let [tag, a, b] = self.0;
        // `b` came from `subsec_nanos`, so it fits and never carries.
        let duration = || Duration::new(a, b as u32);
        Some(match tag {
            1 => FallbackReason::Open {
                retry_after: duration(),
            },
            2 => FallbackReason::ForcedOpen,
            3 => FallbackReason::HalfOpenFull,
            4 => FallbackReason::LocalRateLimit {
                retry_after: duration(),
            },
            5 => FallbackReason::Timeout { after: duration() },
            6 => FallbackReason::Failure {
                failure_type: *FailureType::ALL.get(a as usize)?,
            },
            7 => FallbackReason::LowQuality {
                score: f64::from_bits(a),
                threshold: f64::from_bits(b),
            },
            8 => FallbackReason::BulkheadFull {
                limit: u32::try_from(a).ok()?,
            },
            9 => FallbackReason::WorkerUnavailable,
            _ => return None,
        })
    }
}

/// Why the fallback running on this thread was called, or `None` outside a
/// fallback. This is how a fallback function with the protected function's
/// own parameters (as `#[circuit_breaker(fallback = ...)]` requires) learns
/// the reason; for an async fallback it holds during every poll.
///
/// ```
/// use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, FallbackReason, fallback_reason};
///
/// let breaker = CircuitBreaker::new("reason-doc", CircuitBreakerConfig::default())?;
/// breaker.force_open();
/// let answer = breaker.call_with_fallback(
///     || Ok::<_, ()>("live".to_owned()),
///     || format!("fallback because {}", fallback_reason().unwrap()),
/// );
/// assert_eq!(answer, Ok("fallback because circuit forced open".to_owned()));
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
pub fn fallback_reason() -> Option<FallbackReason> {
    CURRENT_REASON.with(Cell::get).unpack()
}

/// Runs `f` with [`fallback_reason`] answering `reason`.
pub(crate) fn with_reason<R>(reason: FallbackReason, f: impl FnOnce() -> R) -> R {
    struct Restore(PackedReason);
    impl Drop for Restore {
        #[inline]
        fn drop(&mut self) {
            CURRENT_REASON.with(|current| current.set(self.0));
        }
    }
    let packed = PackedReason::pack(reason);
    let _restore = Restore(CURRENT_REASON.with(|current| current.replace(packed)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_inside_its_fallback_and_nesting_restores_the_outer_one() {
        let second = Duration::from_secs(1);
        let odd = Duration::new(7, 999_999_999);
        let mut reasons = vec![
            FallbackReason::Open { retry_after: odd },
            FallbackReason::ForcedOpen,
            FallbackReason::HalfOpenFull,
            FallbackReason::LocalRateLimit {
                retry_after: second,
            },
            FallbackReason::Timeout { after: odd },
            FallbackReason::LowQuality {
                score: -0.0,
                threshold: 0.7,
            },
            FallbackReason::BulkheadFull { limit: u32::MAX },
            FallbackReason::WorkerUnavailable,
        ];
        reasons
            .extend(FailureType::ALL.map(|failure_type| FallbackReason::Failure { failure_type }));
        assert_eq!(fallback_reason(), None);
        for &outer in &reasons {
            for &inner in &reasons {
                with_reason(outer, || {
                    assert_eq!(fallback_reason(), Some(outer));
                    with_reason(inner, || assert_eq!(fallback_reason(), Some(inner)));
                    assert_eq!(fallback_reason(), Some(outer));
                });
            }
        }
        assert_eq!(fallback_reason(), None);
    }

    #[test]
    fn a_shelf_gives_each_site_its_own_cache_and_entries_by_id_to_the_first_claimant() {
        let shelf = CacheShelf::default();
        let get = |asker| shelf.get::<u32, &str>(asker, CachedFallback::new);
        let by_id = get(Asker::ById("app::name"));
        by_id.add_to_cache(1, "seeded");
        let first = get(Asker::Site {
            id: "app::name",
            site: 1,
        });
        assert!(
            Arc::ptr_eq(&first, &by_id),
            "the first site claims the entry"
        );
        let second = get(Asker::Site {
            id: "app::name",
            site: 2,
        });
        assert!(
            !Arc::ptr_eq(&second, &first),
            "a second site never shares it"
        );
        assert_eq!(second.get(&1), None);
        let first_again = get(Asker::Site {
            id: "app::name",
            site: 1,
        });
        let second_again = get(Asker::Site {
            id: "app::name",
            site: 2,
        });
        assert!(Arc::ptr_eq(&first_again, &first) && Arc::ptr_eq(&second_again, &second));
        assert!(
            Arc::ptr_eq(&get(Asker::ById("app::name")), &first),
            "by id: the owner's"
        );

        let other_id = get(Asker::Site {
            id: "app::email",
            site: 3,
        });
        let shared = get(Asker::Shared);
        assert!(!Arc::ptr_eq(&other_id, &first) && !Arc::ptr_eq(&shared, &first));
        assert!(Arc::ptr_eq(&get(Asker::Shared), &shared));
        let other_types = shelf.get::<u64, &str>(
            Asker::Site {
                id: "app::name",
                site: 1,
            },
            CachedFallback::new,
        );
        assert_eq!(other_types.len(), 0, "another (K, V) is another cache");
    }

    #[test]
    fn a_nan_score_reads_back_as_the_same_nan() {
        let reason = FallbackReason::LowQuality {
            score: f64::NAN,
            threshold: 0.5,
        };
        let Some(FallbackReason::LowQuality { score, threshold }) =
            with_reason(reason, fallback_reason)
        else {
            panic!("not read back as LowQuality")
        };
        assert_eq!((score.to_bits(), threshold), (f64::NAN.to_bits(), 0.5));
    }
}
