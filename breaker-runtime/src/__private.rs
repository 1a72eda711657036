//! Support for the code `#[circuit_breaker]` generates. Not a public API:
//! nothing here is covered by semver.
//!
//! Only re-exports, the per-call-site handle ([`Site`]) and small glue whose
//! bounds carry the diagnostics a user sees; every decision about a call is
//! made by [`CallOptions`] and the `call_*` methods of [`CircuitBreaker`].

pub use ::core;
pub use ::std;

pub use ::core::time::Duration;

pub use crate::{
    AsyncFallback, Backoff, BreakerError, CallError, CallOptions, CircuitBreaker,
    CircuitBreakerConfig, ConfigError, FallbackReason, Outcome,
};

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::CachedFallback;

/// A `config = ...` value: a configuration, a reference to one (say, to a
/// `static LazyLock<CircuitBreakerConfig>`), or the `Result` of
/// [`CircuitBreakerConfig::builder`]'s `build()`.
#[diagnostic::on_unimplemented(
    message = "`config` takes a `CircuitBreakerConfig`, but this is a `{Self}`",
    label = "not a `CircuitBreakerConfig`",
    note = "write an expression making one, like `config = llm_config()` with `fn llm_config() -> CircuitBreakerConfig`"
)]
pub trait ConfigValue {
    /// The configuration, or why it could not be made.
    fn into_config(self) -> Result<CircuitBreakerConfig, ConfigError>;
}

impl ConfigValue for CircuitBreakerConfig {
    #[inline]
    fn into_config(self) -> Result<CircuitBreakerConfig, ConfigError> {
        Ok(self)
    }
}

impl ConfigValue for &CircuitBreakerConfig {
    #[inline]
    fn into_config(self) -> Result<CircuitBreakerConfig, ConfigError> {
        Ok(self.clone())
    }
}

impl ConfigValue for Result<CircuitBreakerConfig, ConfigError> {
    #[inline]
    fn into_config(self) -> Result<CircuitBreakerConfig, ConfigError> {
        self
    }
}

/// A `config = ...` value, checked where it is written.
#[inline]
pub fn config_value<C: ConfigValue>(config: C) -> Result<CircuitBreakerConfig, ConfigError> {
    config.into_config()
}

/// Names the function's return type `R` for inference, where a type
/// annotation could not be written.
pub struct Returns<R>(core::marker::PhantomData<fn() -> R>);

/// A [`Returns`] for `R`.
#[inline]
pub const fn returns<R>() -> Returns<R> {
    Returns(core::marker::PhantomData)
}

/// One annotated function's handle on its breaker, resolved through the
/// registry on the first call and kept in a `static` for every later one.
///
/// A `fallback = cached` site also keeps its own cache, found on the
/// breaker by the site's id (`module_path!()` and the function's name) and
/// claimed by the site's address, so no other function, even one with the
/// same id, is ever served from it.
///
/// A test can put another breaker under the name after the site resolved
/// it ([`Registry::replace`](crate::Registry::replace)): the site then
/// uses the registered one. Until any breaker is replaced in the process,
/// the check is one relaxed load of a counter no one writes.
#[derive(Debug)]
pub struct Site {
    name: &'static str,
    id: &'static str,
    breaker: OnceLock<Result<CircuitBreaker, BreakerError>>,
    /// The replacement count at which the resolved breaker was last found
    /// to be the registered one.
    checked: AtomicU64,
    cache: OnceLock<Arc<dyn Any + Send + Sync>>,
}

/// The breaker a [`Site`] calls through: its own, or the one that replaced
/// it in the registry.
#[derive(Debug)]
pub enum SiteBreaker {
    /// The breaker the site resolved on its first call.
    Kept(&'static CircuitBreaker),
    /// The breaker registered under the name in place of the site's own.
    /// Dropped out of line (see the `Drop` impl).
    Replaced(ManuallyDrop<CircuitBreaker>),
}

impl Drop for SiteBreaker {
    /// A kept breaker owns nothing; a replacement's handle is let go by a
    /// shared call, so no annotated function inlines a reference count's
    /// drop on its return and unwind paths.
    #[inline]
    fn drop(&mut self) {
        if let Self::Replaced(breaker) = self {
            drop_replaced(breaker);
        }
    }
}

#[cold]
#[inline(never)]
fn drop_replaced(breaker: &mut ManuallyDrop<CircuitBreaker>) {
    // SAFETY: called once, from `SiteBreaker::drop`; never used after.
    unsafe { ManuallyDrop::drop(breaker) }
}

impl Deref for SiteBreaker {
    type Target = CircuitBreaker;

    #[inline]
    fn deref(&self) -> &CircuitBreaker {
        match self {
            Self::Kept(breaker) => breaker,
            Self::Replaced(breaker) => breaker,
        }
    }
}

/// The breaker a call runs on, as [`Site::cache`] needs it: the breaker,
/// and whether it replaced the site's own (then its cache is its own).
pub trait CacheOwner {
    /// The breaker, and whether it was put in place of the site's own.
    fn cache_owner(&self) -> (&CircuitBreaker, bool);
}

impl CacheOwner for SiteBreaker {
    #[inline]
    fn cache_owner(&self) -> (&CircuitBreaker, bool) {
        match self {
            Self::Kept(breaker) => (breaker, false),
            Self::Replaced(breaker) => (&**breaker, true),
        }
    }
}

/// A keyed family's member: the site's cache serves every member.
impl CacheOwner for &CircuitBreaker {
    #[inline]
    fn cache_owner(&self) -> (&CircuitBreaker, bool) {
        (self, false)
    }
}

impl Site {
    /// A site for the breaker named `name`, not yet resolved.
    pub const fn new(name: &'static str) -> Self {
        Self::cached(name, "")
    }

    /// A `fallback = cached` site with id `id` for the breaker named `name`.
    pub const fn cached(name: &'static str, id: &'static str) -> Self {
        Self {
            name,
            id,
            breaker: OnceLock::new(),
            checked: AtomicU64::new(0),
            cache: OnceLock::new(),
        }
    }

    /// The breaker, registered with `config` unless the name exists. The
    /// macro validated the keys it wrote into `config`; a `config = ...`
    /// expression is validated here, and an invalid one makes every call
    /// of the site fail with [`BreakerError::InvalidConfig`].
    ///
    /// Only the check is generic, so each annotated function compiles a
    /// load and a branch; the registration is shared.
    #[inline]
    pub fn breaker<C: ConfigValue>(
        &'static self,
        config: impl FnOnce() -> C,
    ) -> Result<SiteBreaker, &'static BreakerError> {
        match self.breaker.get() {
            Some(resolved) if crate::registry::replacements() == 0 => {
                resolved.as_ref().map(SiteBreaker::Kept)
            }
            Some(_) => self.recheck(),
            None => self.resolve_with(config),
        }
    }

    /// The first call: builds the config out of line, so the function's
    /// own code holds only the call.
    #[cold]
    #[inline(never)]
    fn resolve_with<C: ConfigValue>(
        &'static self,
        config: impl FnOnce() -> C,
    ) -> Result<SiteBreaker, &'static BreakerError> {
        self.resolve(config().into_config()).map(SiteBreaker::Kept)
    }

    /// After a replacement somewhere in the registry: the breaker the
    /// registry holds under this site's name, if it is not the site's own.
    /// (A name removed from the registry leaves the site its own breaker.)
    #[cold]
    #[inline(never)]
    fn recheck(&'static self) -> Result<SiteBreaker, &'static BreakerError> {
        let kept = match self.breaker.get() {
            Some(Ok(kept)) => kept,
            Some(Err(error)) => return Err(error),
            None => unreachable!("rechecked only once resolved"),
        };
        let replacements = crate::registry::replacements();
        // Relaxed: a hint that saves the lookup; a stale value only costs one.
        if self.checked.load(Ordering::Relaxed) == replacements {
            return Ok(SiteBreaker::Kept(kept));
        }
        match crate::registry().get(self.name) {
            Some(current) if !current.ptr_eq(kept) => {
                Ok(SiteBreaker::Replaced(ManuallyDrop::new(current)))
            }
            _ => {
                self.checked.store(replacements, Ordering::Relaxed);
                Ok(SiteBreaker::Kept(kept))
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn resolve(
        &'static self,
        config: Result<CircuitBreakerConfig, ConfigError>,
    ) -> Result<&'static CircuitBreaker, &'static BreakerError> {
        self.breaker
            .get_or_init(|| {
                config
                    .and_then(|config| crate::registry().get_or_register(self.name, config))
                    .map_err(|source| BreakerError::InvalidConfig {
                        name: self.name.to_owned(),
                        source,
                    })
            })
            .as_ref()
    }

    /// This site's cached fallback for keys `K` and values `V`, remembered
    /// at the site. A method in a generic `impl` can meet several `K`/`V`;
    /// the types the site did not remember are looked up on the breaker
    /// each call, still under this site's claim.
    ///
    /// A breaker that replaced the site's own has a cache of its own, which
    /// the site claims on it.
    #[inline]
    pub fn cache<K, R, B: CacheOwner>(
        &'static self,
        breaker: &B,
        _key: &K,
        _: Returns<R>,
    ) -> CacheRef<K, R::Ok>
    where
        K: Hash + Eq + Send + 'static,
        R: Fallible,
        R::Ok: Send + 'static,
    {
        type V<R> = <R as Fallible>::Ok;
        let breaker = match breaker.cache_owner() {
            (breaker, false) => breaker,
            (breaker, true) => return CacheRef::Breaker(self.claim::<K, V<R>>(breaker)),
        };
        let erased = self.cache.get_or_init(|| self.claim::<K, V<R>>(breaker));
        match erased.downcast_ref::<CachedFallback<K, V<R>>>() {
            Some(cache) => CacheRef::Site(cache),
            None => CacheRef::Breaker(self.claim::<K, V<R>>(breaker)),
        }
    }

    #[cold]
    fn claim<K, V>(&'static self, breaker: &CircuitBreaker) -> Arc<CachedFallback<K, V>>
    where
        K: Hash + Eq + Send + 'static,
        V: Send + 'static,
    {
        breaker.claim_site_cache::<K, V>(self.id, std::ptr::from_ref(self).addr())
    }
}

/// A cached fallback, borrowed from a [`Site`] or held for one call.
#[derive(Debug)]
pub enum CacheRef<K: Hash + Eq + 'static, V: 'static> {
    /// The site's remembered cache.
    Site(&'static CachedFallback<K, V>),
    /// A cache looked up on the breaker for this call.
    Breaker(Arc<CachedFallback<K, V>>),
}

impl<K: Hash + Eq, V> Deref for CacheRef<K, V> {
    type Target = CachedFallback<K, V>;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Site(cache) => cache,
            Self::Breaker(cache) => cache,
        }
    }
}

/// The `Ok` and `Err` types of a function returning some `Result` alias.
#[diagnostic::on_unimplemented(
    message = "`fallback = cached` remembers good results, which needs a function returning a `Result`, but `{Self}` is not one",
    label = "not a `Result`",
    note = "return `Result<T, E>` (an alias of it will do), or name a fallback function: `fallback = some_fn`"
)]
pub trait Fallible {
    /// The `Ok` type.
    type Ok;
    /// The `Err` type.
    type Err;
}

impl<T, E> Fallible for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// An error type that can carry the breaker's own errors.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot carry the circuit breaker's errors: it does not implement `From<BreakerError>`",
    label = "no `From<breaker_runtime::BreakerError>` for `{Self}`",
    note = "when the breaker rejects or times out a call and no fallback answers, the function returns `Err(From::from(breaker_error))`",
    note = "add `map_err = some_fn`, a `fn(BreakerError) -> {Self}` (for `std::io::Error`: `map_err = std::io::Error::other`); or, for an error type of your own crate, implement `From<breaker_runtime::BreakerError>` for it (with thiserror: a `#[from]` variant); or add `fallback = some_fn`"
)]
pub trait FromBreakerError: Sized {
    /// `E::from(error)`.
    fn from_breaker_error(error: BreakerError) -> Self;
}

impl<E: From<BreakerError>> FromBreakerError for E {
    #[inline]
    fn from_breaker_error(error: BreakerError) -> Self {
        E::from(error)
    }
}

/// A part of a `fallback = cached` key.
#[diagnostic::on_unimplemented(
    message = "`fallback = cached` needs every argument to be part of a hashable key, but `{Self}` is not `Hash + Eq + Clone + Send + 'static`",
    label = "this argument cannot be part of the cache key",
    note = "derive `Hash, PartialEq, Eq, Clone` for the argument's type, or use `fallback = some_fn` instead"
)]
pub trait CacheKey: Hash + Eq + Clone + Send + 'static {}

impl<K: Hash + Eq + Clone + Send + 'static> CacheKey for K {}

/// A value a `fallback = cached` function can remember.
#[diagnostic::on_unimplemented(
    message = "`fallback = cached` remembers results, but `{Self}` is not `Clone + Send + 'static`",
    label = "the `Ok` type must be `Clone + Send + 'static` to be cached",
    note = "derive `Clone` for the result type, or use `fallback = some_fn` instead"
)]
pub trait CacheValue: Clone + Send + 'static {}

impl<V: Clone + Send + 'static> CacheValue for V {}

/// One argument's part of a `fallback = cached` key: an owned copy.
#[inline]
pub fn cache_key<B>(argument: &B) -> B::Owned
where
    B: ?Sized + ToOwned,
    B::Owned: CacheKey,
{
    argument.to_owned()
}

/// The value of a `cache_key = ...` expression, or of one part of a tuple.
#[diagnostic::on_unimplemented(
    message = "`cache_key` must be `Hash + Eq + Clone + Send + 'static`, but `{Self}` is not",
    label = "this cannot be part of the key of the function's cache",
    note = "build the key from owned, hashable values (`name.to_owned()` for a `&str`, `x.to_bits()` for a float, a type deriving `Hash, PartialEq, Eq, Clone`), like `cache_key = (self.tenant.clone(), id)`"
)]
pub trait CacheKeyValue: Hash + Eq + Clone + Send + 'static {}

impl<K: Hash + Eq + Clone + Send + 'static> CacheKeyValue for K {}

/// A `cache_key = ...` value (or one part of a tuple), checked.
#[inline]
pub fn cache_key_value<K: CacheKeyValue>(key: K) -> K {
    key
}

/// An argument a fallback function gets its own copy of.
#[diagnostic::on_unimplemented(
    message = "a `fallback` function gets its own copy of every argument, but `{Self}` is not `Clone`",
    label = "this argument is cloned for the fallback",
    note = "take the argument by reference (`&T`), derive `Clone` for its type, or use `fallback = cached`"
)]
pub trait FallbackArg: Clone {}

impl<A: Clone> FallbackArg for A {}

/// A copy of an argument for the fallback (for a reference, the reference).
#[inline]
pub fn fallback_arg<A: FallbackArg>(argument: &A) -> A {
    argument.clone()
}

/// A sync body's arguments, which wait in a cell until the body or the
/// fallback takes them (each call takes them once).
#[inline]
#[track_caller]
pub fn body_arguments<A>(arguments: &core::cell::Cell<Option<A>>) -> A {
    match arguments.take() {
        Some(arguments) => arguments,
        None => arguments_taken(),
    }
}

/// A fallback's arguments: the copies the body made if it ran, else the
/// arguments themselves (the call was rejected before its body).
#[inline]
#[track_caller]
pub fn fallback_arguments<A>(
    copies: &core::cell::Cell<Option<A>>,
    arguments: &core::cell::Cell<Option<A>>,
) -> A {
    match copies.take() {
        Some(copies) => copies,
        None => body_arguments(arguments),
    }
}

/// A call's arguments were asked for twice: a bug in the expansion or the
/// runtime (the body and the fallback each run at most once per call).
#[cold]
#[track_caller]
fn arguments_taken() -> ! {
    panic!("#[circuit_breaker]: a call's arguments were taken twice (a bug in breaker-runtime)")
}

/// A fallback function's answer as a call result.
#[inline]
pub fn answered<T, E>(answer: Result<T, E>) -> Result<T, CallError<E>> {
    answer.map_err(CallError::Inner)
}

/// Checks that the `Ok` type of `R` can be cached.
#[inline]
pub fn cache_value<R>(_: Returns<R>)
where
    R: Fallible,
    R::Ok: CacheValue,
{
}

/// The caller's error for a breaker failure, no fallback or a cached one:
/// out of line, and generic only over the error type, so functions with
/// one error type share it.
#[cold]
#[inline(never)]
// The box itself is passed, so the caller moves a pointer, not the failure.
#[allow(clippy::boxed_local)]
fn breaker_failure<E: FromBreakerError>(failure: Box<crate::BreakerFailure<E>>) -> E {
    match *failure {
        crate::BreakerFailure::FallbackFailed(failed) => failed.error,
        crate::BreakerFailure::Breaker(error) => E::from_breaker_error(error),
    }
}

/// The call result for a site whose breaker could not be created.
#[cold]
pub fn unavailable<T, E>(error: &BreakerError) -> Result<T, CallError<E>> {
    Err(CallError::from(error.clone()))
}

/// How the function's return type is called and returned, picked by type
/// rather than by how the type is spelled: a [`ResultShape`](shape::ResultShape)
/// for any `Result<T, E>` (under an alias too: `io::Result<T>`,
/// `RedisResult<T>`, `type Reply = Result<..>`), a
/// [`ValueShape`](shape::ValueShape) for everything else.
///
/// The expansion writes `(&returns::<R>()).breaker_shape()` with both
/// traits in scope: method lookup tries the receiver `&Returns<R>` first,
/// where only [`IsResult`](shape::IsResult) can apply, and takes
/// [`IsPlain`](shape::IsPlain) (on `&&Returns<R>`) only when `R` is not a
/// `Result`.
pub mod shape {
    use super::{BreakerError, CallError, FromBreakerError, Future, Infallible, Outcome, Returns};
    use core::marker::PhantomData;

    /// The shape of a function returning `Result<T, E>`: its `Err` counts
    /// as a failure, and the breaker's own errors become `E`.
    pub struct ResultShape<T, E>(PhantomData<fn() -> (T, E)>);

    /// The shape of a function returning a plain `R`: every value is a
    /// success unless `classify` or `quality` says otherwise, and a
    /// rejected call needs a fallback to return something.
    pub struct ValueShape<R>(PhantomData<fn() -> R>);

    impl<T, E> Clone for ResultShape<T, E> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<T, E> Copy for ResultShape<T, E> {}
    impl<R> Clone for ValueShape<R> {
        fn clone(&self) -> Self {
            *self
        }
    }
    impl<R> Copy for ValueShape<R> {}

    /// Picked first: `R` is a `Result`.
    pub trait IsResult {
        /// The shape.
        type Shape;
        /// A [`ResultShape`].
        fn breaker_shape(&self) -> Self::Shape;
    }

    impl<T, E> IsResult for Returns<Result<T, E>> {
        type Shape = ResultShape<T, E>;
        #[inline]
        fn breaker_shape(&self) -> ResultShape<T, E> {
            ResultShape(PhantomData)
        }
    }

    /// Picked by autoref when `R` is not a `Result`.
    pub trait IsPlain {
        /// The shape.
        type Shape;
        /// A [`ValueShape`].
        fn breaker_shape(&self) -> Self::Shape;
    }

    impl<R> IsPlain for &Returns<R> {
        type Shape = ValueShape<R>;
        #[inline]
        fn breaker_shape(&self) -> ValueShape<R> {
            ValueShape(PhantomData)
        }
    }

    /// What both shapes share: the function's return type `Returned` as the
    /// call result `Result<Ok, Err>` the breaker judges.
    pub trait Shape: Copy {
        /// The function's return type.
        type Returned;
        /// The call result's `Ok` type.
        type Ok;
        /// The call result's `Err` type.
        type Err;
        /// The return value as a call result.
        fn lift(self, returned: Self::Returned) -> Result<Self::Ok, Self::Err>;
        /// A call result as the return value it came from, for `classify`.
        fn view(result: &Result<Self::Ok, Self::Err>) -> &Self::Returned;
    }

    impl<T, E> Shape for ResultShape<T, E> {
        type Returned = Result<T, E>;
        type Ok = T;
        type Err = E;
        #[inline]
        fn lift(self, returned: Result<T, E>) -> Result<T, E> {
            returned
        }
        #[inline]
        fn view(result: &Result<T, E>) -> &Result<T, E> {
            result
        }
    }

    impl<R> Shape for ValueShape<R> {
        type Returned = R;
        type Ok = R;
        type Err = Infallible;
        #[inline]
        fn lift(self, returned: R) -> Result<R, Infallible> {
            Ok(returned)
        }
        #[inline]
        fn view(result: &Result<R, Infallible>) -> &R {
            match result {
                Ok(value) => value,
                Err(never) => match *never {},
            }
        }
    }

    /// A return type that is not a `Result`, under a breaker with no
    /// fallback: never implemented, so that the build says what to add.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a `Result`, so a call the breaker rejects has nothing to return",
        label = "not a `Result`",
        note = "add `fallback = some_fn` (a function with the same parameters returning `{Self}`), or return a `Result` whose error implements `From<BreakerError>`",
        note = "an alias of `Result` (`io::Result<T>`, `type Reply = Result<T, E>`) is a `Result` and needs no fallback"
    )]
    pub trait NeedsFallback {}

    /// A `map_err = ...` on a function that does not return a `Result`:
    /// never implemented.
    #[diagnostic::on_unimplemented(
        message = "`map_err` maps the breaker's errors into the function's `Err` type, but `{Self}` is not a `Result`",
        label = "not a `Result`",
        note = "remove `map_err`, and add `fallback = some_fn` to answer rejected calls"
    )]
    pub trait MapErrNeedsResult {}

    impl<T, E> ResultShape<T, E> {
        /// The body, already returning a call result.
        #[inline]
        pub fn body<F: FnOnce() -> Result<T, E>>(self, body: F) -> F {
            body
        }

        /// The future, already yielding a call result.
        #[inline]
        pub fn future<F: Future<Output = Result<T, E>>>(self, future: F) -> F {
            future
        }

        /// The return value, no fallback or a cached one: the breaker's
        /// errors become `E`.
        #[inline]
        pub fn finish(self, result: Result<T, CallError<E>>) -> Result<T, E>
        where
            E: FromBreakerError,
        {
            match result {
                Ok(value) => Ok(value),
                Err(CallError::Inner(error)) => Err(error),
                Err(CallError::Breaker(failure)) => Err(super::breaker_failure(failure)),
            }
        }

        /// The return value with `fallback = cached`, as [`finish`](Self::finish).
        #[inline]
        pub fn finish_cached(self, result: Result<T, CallError<E>>) -> Result<T, E>
        where
            E: FromBreakerError,
        {
            self.finish(result)
        }

        /// The return value with `map_err = ...`: the breaker's errors go
        /// through `map_err`.
        #[inline]
        pub fn finish_mapped(
            self,
            result: Result<T, CallError<E>>,
            map_err: impl FnOnce(BreakerError) -> E,
        ) -> Result<T, E> {
            match result {
                Ok(value) => Ok(value),
                Err(CallError::Inner(error)) => Err(error),
                Err(CallError::Breaker(failure)) => match *failure {
                    crate::BreakerFailure::FallbackFailed(failed) => Err(failed.error),
                    crate::BreakerFailure::Breaker(error) => Err(map_err(error)),
                },
            }
        }

        /// The return value with a fallback function: the fallback always
        /// answers, so a breaker error means it panicked, and its panic
        /// goes on with its own payload. A fallback's `Err` is the function's.
        #[inline]
        pub fn finish_served(self, result: Result<T, CallError<E>>) -> Result<T, E> {
            match result {
                Ok(value) => Ok(value),
                Err(CallError::Inner(error)) => Err(error),
                Err(CallError::Breaker(failure)) => match *failure {
                    crate::BreakerFailure::FallbackFailed(failed) => Err(failed.error),
                    crate::BreakerFailure::Breaker(error) => super::fallback_failed(error),
                },
            }
        }
    }

    impl<R> ValueShape<R> {
        /// The body, returning a call result that is always `Ok`.
        #[inline]
        pub fn body<F: FnOnce() -> R>(self, body: F) -> impl FnOnce() -> Result<R, Infallible> {
            move || Ok(body())
        }

        /// The future, yielding a call result that is always `Ok`.
        #[inline]
        pub async fn future<F: Future<Output = R>>(self, future: F) -> Result<R, Infallible> {
            Ok(future.await)
        }

        /// No fallback: refused at compile time by [`NeedsFallback`].
        pub fn finish(self, result: Result<R, CallError<Infallible>>) -> R
        where
            R: NeedsFallback,
        {
            self.finish_served(result)
        }

        /// `fallback = cached`: refused at compile time by
        /// [`Fallible`](super::Fallible), in `cache_value`, so no second
        /// error is reported here.
        pub fn finish_cached(self, result: Result<R, CallError<Infallible>>) -> R {
            self.finish_served(result)
        }

        /// `map_err = ...`: refused at compile time by [`MapErrNeedsResult`].
        pub fn finish_mapped<E>(
            self,
            result: Result<R, CallError<Infallible>>,
            _map_err: impl FnOnce(BreakerError) -> E,
        ) -> R
        where
            R: MapErrNeedsResult,
        {
            self.finish_served(result)
        }

        /// The return value with a fallback function, as
        /// [`ResultShape::finish_served`].
        #[inline]
        pub fn finish_served(self, result: Result<R, CallError<Infallible>>) -> R {
            match result {
                Ok(value) => value,
                Err(CallError::Inner(never)) => match never {},
                Err(CallError::Breaker(failure)) => match *failure {
                    crate::BreakerFailure::FallbackFailed(failed) => match failed.error {},
                    crate::BreakerFailure::Breaker(error) => super::fallback_failed(error),
                },
            }
        }
    }

    /// Checks a `quality = ...` evaluator: it scores the `Ok` value, or the
    /// plain return value.
    #[inline]
    pub fn quality<S: Shape, Q: Fn(&S::Ok) -> f64>(_: S, quality: Q) -> impl Fn(&S::Ok) -> f64 {
        quality
    }

    /// Adapts a `classify = ...` function, which judges the return value as
    /// the function returns it.
    #[inline]
    pub fn classify<S: Shape, C: Fn(&S::Returned) -> Outcome>(
        _: S,
        classify: C,
    ) -> impl Fn(&Result<S::Ok, S::Err>) -> Outcome {
        move |result: &Result<S::Ok, S::Err>| classify(S::view(result))
    }
}

/// Refuses a sync function whose return type is a future the attribute did
/// not recognise by its spelling (a user's alias of
/// `Pin<Box<dyn Future<..>>>`): guarded as a sync call, only the building
/// of the future would be timed and judged, not its work.
///
/// The expansion writes `(&returns::<R>()).breaker_sync_check().ok()`:
/// [`ReturnsFuture`](sync_check::ReturnsFuture) applies to `&Returns<R>`
/// when `R` is a future, and [`ReturnsValue`](sync_check::ReturnsValue) by
/// autoref otherwise.
pub mod sync_check {
    use super::{Future, Returns};
    use core::marker::PhantomData;

    /// A sync function returning the future `R`: refused by [`ok`](Self::ok).
    pub struct FutureReturned<R>(PhantomData<fn() -> R>);

    /// A sync function returning a value: accepted.
    pub struct ValueReturned;

    /// Picked first: `R` is a future.
    pub trait ReturnsFuture {
        /// The verdict.
        type Check;
        /// A [`FutureReturned`].
        fn breaker_sync_check(&self) -> Self::Check;
    }

    impl<R: Future> ReturnsFuture for Returns<R> {
        type Check = FutureReturned<R>;
        #[inline]
        fn breaker_sync_check(&self) -> FutureReturned<R> {
            FutureReturned(PhantomData)
        }
    }

    /// Picked by autoref when `R` is not a future.
    pub trait ReturnsValue {
        /// [`ValueReturned`].
        #[inline]
        fn breaker_sync_check(&self) -> ValueReturned {
            ValueReturned
        }
    }

    impl<R> ReturnsValue for &Returns<R> {}

    /// Never implemented, so that the build says what to write.
    #[diagnostic::on_unimplemented(
        message = "`#[circuit_breaker]` cannot tell that this function returns a future: `{Self}` is one, but it is not written as one",
        label = "a future under a name the attribute does not know",
        note = "as written, the breaker would guard only the building of the future, not its work",
        note = "write the return type as `impl Future<Output = T>`, `Pin<Box<dyn Future<Output = T> + Send + '_>>` or `BoxFuture<'_, T>`, or make the function an `async fn`"
    )]
    pub trait SpelledAsAFuture {}

    impl<R> FutureReturned<R> {
        /// Refused at compile time by [`SpelledAsAFuture`].
        #[inline]
        pub fn ok(self)
        where
            R: SpelledAsAFuture,
        {
        }
    }

    impl ValueReturned {
        /// Accepted.
        #[inline]
        pub fn ok(self) {}
    }
}

/// The value inside an infallible result.
#[inline]
pub fn infallible<R>(result: Result<R, Infallible>) -> R {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

/// Re-raises a fallback's panic with its original payload; a breaker error
/// that holds none (which a fallback function cannot produce) panics with
/// its message.
#[cold]
#[track_caller]
fn fallback_failed(error: BreakerError) -> ! {
    match error.take_panic_payload() {
        Some(payload) => std::panic::resume_unwind(payload),
        None => panic!("{error}"),
    }
}

/// Awaits an async fallback's answer, or takes a sync one as it is: a
/// `fallback = ...` of an async function may be either.
pub mod serve {
    use super::Future;
    use super::shape::Shape;

    /// Marks an answer that is a future.
    #[derive(Debug, Clone, Copy)]
    pub struct Later;

    /// Marks an answer that is already there.
    #[derive(Debug, Clone, Copy)]
    pub struct Now;

    /// Picked first, for futures.
    pub trait IsFuture {
        /// [`Later`].
        fn breaker_answer_kind(&self) -> Later {
            Later
        }
    }

    impl<F: Future> IsFuture for F {}

    /// Picked by autoref when the answer is not a future.
    pub trait IsValue {
        /// [`Now`].
        fn breaker_answer_kind(&self) -> Now {
            Now
        }
    }

    impl<V> IsValue for &V {}

    impl Later {
        /// An async fallback's answer, as a call result of `shape`.
        pub async fn answer<S: Shape>(
            self,
            answer: impl Future<Output = S::Returned>,
            shape: S,
        ) -> Result<S::Ok, S::Err> {
            shape.lift(answer.await)
        }
    }

    impl Now {
        /// A sync fallback's answer, as a call result of `shape`.
        pub fn answer<S: Shape>(
            self,
            answer: S::Returned,
            shape: S,
        ) -> std::future::Ready<Result<S::Ok, S::Err>> {
            std::future::ready(shape.lift(answer))
        }
    }
}

/// A `key = ...` function's handle on its keyed family, resolved through
/// the registry on the first call. It derefs to a [`Site`] for the
/// `fallback = cached` cache, which stays one per call site whatever the
/// key.
#[derive(Debug)]
pub struct KeyedSite {
    site: Site,
    family: OnceLock<Result<crate::Family, BreakerError>>,
}

impl Deref for KeyedSite {
    type Target = Site;

    fn deref(&self) -> &Site {
        &self.site
    }
}

impl KeyedSite {
    /// A site for the family named `name`, not yet resolved.
    pub const fn new(name: &'static str) -> Self {
        Self::cached(name, "")
    }

    /// A `fallback = cached` site with id `id` for the family named `name`.
    pub const fn cached(name: &'static str, id: &'static str) -> Self {
        Self {
            site: Site::cached(name, id),
            family: OnceLock::new(),
        }
    }

    /// The family, resolved on the first call; out of line, with the
    /// configuration.
    #[cold]
    #[inline(never)]
    fn resolved_family(
        &'static self,
        config: impl FnOnce() -> CircuitBreakerConfig,
    ) -> Result<&'static crate::Family, Box<BreakerError>> {
        let name = self.site.name;
        self.family
            .get_or_init(|| {
                crate::registry().family(name, config()).map_err(|source| {
                    BreakerError::InvalidConfig {
                        name: name.to_owned(),
                        source,
                    }
                })
            })
            .as_ref()
            .map_err(|error| Box::new(error.clone()))
    }

    /// The member for `key`, held by a sync call. For a key that has one,
    /// after the first call: one load for the family, then
    /// [`Family::member`](crate::Family::member)'s cached lookup, inline;
    /// the result is two words. The rest is shared, out-of-line code.
    #[inline]
    pub fn member(
        &'static self,
        config: impl FnOnce() -> CircuitBreakerConfig,
        key: &str,
    ) -> Result<crate::Member, Box<BreakerError>> {
        match self.family.get() {
            Some(Ok(family)) => family.member_or_refused(key),
            _ => self.resolved_family(config)?.member_or_refused(key),
        }
    }

    /// For a call the family refused (`FamilyFull`): this site's cached
    /// answer for `key`, if it has one.
    #[cold]
    pub fn refused_cached<K, R>(&'static self, key: &K, _: Returns<R>) -> Option<R::Ok>
    where
        K: Hash + Eq + Send + 'static,
        R: Fallible,
        R::Ok: Clone + Send + 'static,
    {
        self.site
            .cache
            .get()?
            .downcast_ref::<CachedFallback<K, R::Ok>>()?
            .get(key)
    }

    /// The member for `key`, kept by an async call across its awaits.
    #[inline]
    pub fn member_owned(
        &'static self,
        config: impl FnOnce() -> CircuitBreakerConfig,
        key: &str,
    ) -> Result<CircuitBreaker, Box<BreakerError>> {
        let family = match self.family.get() {
            Some(Ok(family)) => family,
            _ => self.resolved_family(config)?,
        };
        family
            .member_or_refused(key)
            .map(|member| CircuitBreaker::clone(&member))
    }
}

/// The value of a `key = ...` expression.
#[diagnostic::on_unimplemented(
    message = "`key` picks a breaker by the key's text, but `{Self}` does not implement `Display`",
    label = "this key cannot be written as text",
    note = "the key's `Display` text names its breaker (`llm[gpt-4o]`): give a `&str`, a number, a field like `self.host`, or a type of yours that implements `Display`"
)]
pub trait FamilyKey: std::fmt::Display {}

impl<K: std::fmt::Display + ?Sized> FamilyKey for K {}

/// A `key = ...` value's text: the string itself, or its `Display` text.
#[derive(Debug)]
pub enum KeyStr<'a> {
    /// A string key, borrowed.
    Text(&'a str),
    /// Any other key, written out.
    Written(crate::KeyText),
}

impl KeyStr<'_> {
    /// The text.
    #[inline]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Text(text) => text,
            Self::Written(text) => text.as_str(),
        }
    }
}

/// A `key = ...` value, for picking how its text is read: the expansion
/// writes `(&KeyRef(&value)).breaker_key_text()` with both traits in
/// scope. Method lookup tries [`KeyIsText`] first, which borrows a string
/// as it is; any other key goes through `Display` ([`KeyIsDisplay`], on
/// `&&KeyRef`).
pub struct KeyRef<'a, K: ?Sized>(pub &'a K);

/// Picked first: the key is a string (`&str`, `String`, ...), whose text is
/// itself.
pub trait KeyIsText<'a> {
    /// The key's text.
    fn breaker_key_text(&self) -> KeyStr<'a>;
}

impl<'a, K: AsRef<str> + std::fmt::Display + ?Sized> KeyIsText<'a> for KeyRef<'a, K> {
    #[inline]
    fn breaker_key_text(&self) -> KeyStr<'a> {
        KeyStr::Text(self.0.as_ref())
    }
}

/// Picked by autoref for every other key: its `Display` text, written by
/// [`KeyDisplay::text`], whose bound names what is missing.
pub trait KeyIsDisplay<'a, K: ?Sized> {
    /// The key, to be written.
    fn breaker_key_text(&self) -> KeyDisplay<'a, K>;
}

impl<'a, K: ?Sized> KeyIsDisplay<'a, K> for &KeyRef<'a, K> {
    #[inline]
    fn breaker_key_text(&self) -> KeyDisplay<'a, K> {
        KeyDisplay(self.0)
    }
}

/// A key that is not a string, to be written through `Display`.
pub struct KeyDisplay<'a, K: ?Sized>(&'a K);

impl<K: ?Sized> KeyDisplay<'_, K> {
    /// The key's `Display` text.
    #[inline]
    pub fn text(self) -> KeyStr<'static>
    where
        K: FamilyKey,
    {
        KeyStr::Written(crate::KeyText::new(self.0))
    }
}

impl<'a> KeyStr<'a> {
    /// Itself: a string key's text is already read.
    #[inline]
    pub fn text(self) -> Self {
        self
    }
}
