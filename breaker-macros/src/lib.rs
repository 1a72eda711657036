//! The `#[circuit_breaker]` attribute of `breaker-runtime`. Use it through
//! `breaker_runtime::circuit_breaker`; see that re-export for the keys.
//!
//! `attr.rs` parses the arguments, `valid.rs` checks them against each other
//! and against the function (`func.rs`), and `expand.rs` writes the code.

mod attr;
mod errors;
mod expand;
mod func;
mod valid;

/// The duration grammar and key suggestions, shared with the runtime.
use breaker_grammar as grammar;
use proc_macro::TokenStream;

/// Guards a function with the circuit breaker named `name`.
///
/// Every function annotated with the same `name` shares one breaker, created
/// by the first call through `registry().get_or_register(name, config)`.
/// Each call site keeps its breaker in a `static`, so a call never looks the
/// name up again. The function keeps its signature as written; only the
/// body is wrapped, so `return` and `?` work as before.
///
/// ```
/// use breaker_runtime::{BreakerError, circuit_breaker};
///
/// #[derive(Debug, thiserror::Error)]
/// enum LlmError {
///     #[error("the model failed")]
///     Model,
///     #[error(transparent)]
///     Breaker(#[from] BreakerError),
/// }
///
/// #[circuit_breaker(name = "llm", failure_threshold = 5, timeout_duration = 10.0)]
/// async fn ask_llm(prompt: &str) -> Result<String, LlmError> {
///     if prompt.is_empty() {
///         return Err(LlmError::Model);
///     }
///     Ok(format!("echo: {prompt}"))
/// }
/// # tokio_test(async { assert_eq!(ask_llm("hi").await.unwrap(), "echo: hi") });
/// # fn tokio_test(f: impl std::future::Future) { tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f); }
/// ```
///
/// # One name, several functions
///
/// The first call through any of the functions sharing a name registers
/// the breaker with *that* function's configuration, and which runs first
/// can depend on timing. So give every function under one name the same
/// keys, or the same `config = ...`. A function asking for a different
/// configuration gets the registered breaker unchanged (never a merge);
/// each distinct difference is reported once, as an
/// `EventKind::ConfigConflict` event (logged as a `tracing` warning) and in
/// `registry().status()` (`config_conflicts`, and `CONFIG CONFLICT` in the
/// table).
///
/// # What the caller gets
///
/// For `Result<T, E>`, a call the breaker rejects or fails (open circuit,
/// timeout, rate limit, low quality) with no fallback to answer returns
/// `Err(E::from(BreakerError))`, so `E: From<BreakerError>` is required
/// unless a `fallback` function always answers or `map_err` says how to
/// make an `E`. A function that does not return a `Result` must have a
/// `fallback`.
///
/// Whether the function returns a `Result` is decided by the compiler, from
/// the type, not from how it is spelled: `io::Result<T>`,
/// `anyhow::Result<T>`, `redis::RedisResult<T>` and an alias of your own
/// are all `Result`s, and their `Err` values count as failures.
///
/// ```
/// # use breaker_runtime::{BreakerError, CircuitState, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// type Reply = Result<String, E>;
///
/// #[circuit_breaker(name = "alias-doc", failure_threshold = 1)]
/// fn reply(fail: bool) -> Reply {
///     if fail { Err(E(BreakerError::ForcedOpen { name: "upstream".into() })) } else { Ok("hi".into()) }
/// }
/// assert!(reply(true).is_err());
/// assert_eq!(registry().get("alias-doc").unwrap().state(), CircuitState::Open);
/// assert!(matches!(reply(false), Err(E(BreakerError::Open { .. }))));
/// ```
///
/// # Keys
///
/// Durations are seconds, as an integer or float literal (`0.25`), or a
/// string with a unit: `"500ms"`, `"2s"`, `"2m"`, `"1h"` (also `ns`, `us`).
///
/// | key | default | meaning |
/// |---|---|---|
/// | `name` | required | the breaker's name, a non-empty string literal |
/// | `failure_threshold` | 5 | consecutive failures that open the circuit |
/// | `recovery_timeout` | 60 s | how long an open circuit waits before probing |
/// | `success_threshold` | 3 | probe successes that close a half-open circuit |
/// | `timeout_duration` | 30 s | a call's deadline (see below) |
/// | `max_deadline_workers` | 32 | worker threads this breaker's hard-deadline calls may hold at once, running or hung, at least 1 |
/// | `quality_threshold` | 0.7 | the lowest acceptable `quality` score, in `[0, 1]` |
/// | `rate_limit_per_minute` | none | calls admitted per minute |
/// | `rate_limit_burst` | the limit | calls admitted at once before the pace applies |
/// | `sliding_window_size` | 100 | calls in the failure-rate window |
/// | `half_open_max_calls` | 5 | probes admitted at once while half-open |
/// | `failure_rate_threshold` | none | failure rate in `(0, 1]` over the window that opens the circuit |
/// | `minimum_calls` | 10 | calls the window needs before the rate is judged |
/// | `backoff_multiplier` | none | growth of the open period at each trip in a row, at least 1 |
/// | `max_open_duration` | none | the longest an open period may grow to |
/// | `max_retry_after` | 1 h | the longest a dependency's retry-after (an HTTP 429) may keep the circuit open |
/// | `fallback` | none | `cached`, or a function answering in place of the call |
/// | `cache_key` | the arguments | with `fallback = cached`: the key of the cache, an expression over the arguments and `self` |
/// | `quality` | none | a `Fn(&T) -> f64` scoring good results |
/// | `classify` | none | a `Fn(&Result<T, E>) -> Outcome` deciding how a result counts |
/// | `map_err` | `From::from` | a `Fn(BreakerError) -> E` making the function's error out of the breaker's (for `io::Result`: `std::io::Error::other`) |
/// | `config` | none | an expression making the whole `CircuitBreakerConfig`, in place of the keys above that set its fields |
/// | `crate` | `breaker_runtime` | the path `breaker_runtime` is known by, when renamed or re-exported |
/// | `key` | none | an expression over the arguments and `self` whose `Display` text picks a breaker of the family `name`: one breaker per key |
///
/// `sliding_window_size` and `minimum_calls` need `failure_rate_threshold`;
/// `rate_limit_burst` needs `rate_limit_per_minute`; `backoff_multiplier`
/// and `max_open_duration` go together; `cache_key` needs
/// `fallback = cached`, and a method with `fallback = cached` needs
/// `cache_key`. Every value is checked at compile
/// time, except a `config` expression's (see below).
///
/// ## Thresholds and the failure-rate window
///
/// ```
/// # use breaker_runtime::{BreakerError, circuit_breaker};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(
///     name = "payments",
///     failure_threshold = 3,       // open after 3 failures in a row...
///     failure_rate_threshold = 0.5, // ...or when half the calls in the window fail
///     sliding_window_size = 20,
///     minimum_calls = 10,
///     recovery_timeout = "30s",    // then wait 30 s
///     half_open_max_calls = 2,     // probe with 2 calls at a time
///     success_threshold = 2,       // and close after 2 good probes
/// )]
/// fn charge(cents: u64) -> Result<u64, E> {
///     Ok(cents)
/// }
/// assert_eq!(charge(100).unwrap(), 100);
/// ```
///
/// ## Backoff
///
/// A dependency that keeps failing its probes is probed less and less
/// often: the `n`-th trip in a row stays open for
/// `recovery_timeout * backoff_multiplier^(n-1)`, up to `max_open_duration`.
/// A circuit that closes starts again from `recovery_timeout`.
///
/// ```
/// # use std::time::Duration;
/// # use breaker_runtime::{Backoff, BreakerError, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(
///     name = "flaky-search",
///     recovery_timeout = 10,
///     backoff_multiplier = 2.0, // open 10 s, then 20 s, 40 s...
///     max_open_duration = "5m", // ...but never longer than 5 minutes
/// )]
/// fn search(query: &str) -> Result<usize, E> {
///     Ok(query.len())
/// }
/// assert_eq!(search("rust").unwrap(), 4);
/// let backoff = registry().get("flaky-search").unwrap().config().backoff;
/// assert_eq!(
///     backoff,
///     Some(Backoff { multiplier: 2.0, max_open_duration: Duration::from_secs(300) })
/// );
/// ```
///
/// ## `timeout_duration`
///
/// An `async fn` is cancelled at the deadline. A sync fn with
/// `timeout_duration` written on it gets a hard deadline: it runs on a
/// worker thread and its caller is released at the deadline, so its
/// arguments must be owned (`String`, not `&str`; `self: Arc<Self>`, not
/// `&self`). A sync fn without the key is never interrupted: a late result
/// is returned but counts as a timeout failure.
///
/// ```
/// # use std::time::Duration;
/// # use breaker_runtime::{BreakerError, circuit_breaker};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "slow-disk", timeout_duration = "50ms")]
/// fn read(path: String) -> Result<String, E> {
///     std::thread::sleep(Duration::from_secs(5));
///     Ok(path)
/// }
/// assert!(matches!(read("/data".into()), Err(E(BreakerError::Timeout { .. }))));
/// ```
///
/// ## `max_deadline_workers` and `max_retry_after`
///
/// A hard-deadline call that hangs keeps its worker thread until it really
/// returns. `max_deadline_workers` bounds the workers one breaker's calls
/// hold at once; a call past it is refused at once with
/// `BreakerError::BulkheadFull`, and its fallback serves. The pool's
/// threads over all breakers are bounded too, by
/// [`set_deadline_worker_limit`](../breaker_runtime/fn.set_deadline_worker_limit.html).
///
/// A dependency that answers "too many requests" with a retry-after keeps
/// the circuit open that long, but never longer than `max_retry_after`
/// (nor, with a backoff, than `max_open_duration`).
///
/// ```
/// # use std::time::Duration;
/// # use breaker_runtime::{BreakerError, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(
///     name = "quota-api",
///     timeout_duration = 2,
///     max_deadline_workers = 4, // at most 4 hung calls hold a thread
///     max_retry_after = "10m",  // a 429 keeps the circuit open 10 minutes at most
/// )]
/// fn fetch(id: u32) -> Result<u32, E> {
///     Ok(id)
/// }
/// assert_eq!(fetch(7).unwrap(), 7);
/// let breaker = registry().get("quota-api").unwrap();
/// let config = breaker.config();
/// assert_eq!(config.max_deadline_workers, 4);
/// assert_eq!(config.max_retry_after, Duration::from_secs(600));
/// ```
///
/// ## `rate_limit_per_minute` and `rate_limit_burst`
///
/// ```
/// # use breaker_runtime::{BreakerError, circuit_breaker};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "search-api", rate_limit_per_minute = 60, rate_limit_burst = 2)]
/// fn search(query: &str) -> Result<usize, E> {
///     Ok(query.len())
/// }
/// assert!(search("a").is_ok() && search("b").is_ok());
/// assert!(matches!(search("c"), Err(E(BreakerError::LocalRateLimit { .. }))));
/// ```
///
/// ## `fallback = some_fn`
///
/// A function with the same parameters (a method's receiver included) and
/// the same return type; for an `async fn` it may be `async` or not. It
/// answers whenever the call is rejected or fails, and learns why from
/// [`fallback_reason()`](../breaker_runtime/fn.fallback_reason.html).
///
/// References are passed as they are. Owned arguments must be `Clone`, and
/// are copied only where a copy may be needed. A plain sync `fn` (no
/// `timeout_duration` key) that the breaker rejects (open circuit, rate
/// limit) hands the fallback its arguments themselves, with no copy; one
/// that runs copies each owned argument once, as its body starts, because
/// the body may consume it and then fail, and the fallback then answers
/// with the copy. The language gives no way around that copy short of not
/// letting the body consume the argument, so take `&str`, `&T` or an `Arc`
/// where the copy matters. An `async fn`, a sync fn with a hard deadline
/// and a fn returning a future copy their owned arguments once per call,
/// before it (their body runs elsewhere, or later), and once more when the
/// fallback answers.
///
/// ```
/// # use breaker_runtime::{circuit_breaker, fallback_reason};
/// fn canned(prompt: &str) -> String {
///     format!("no answer for {prompt:?}: {}", fallback_reason().unwrap())
/// }
///
/// #[circuit_breaker(name = "summaries", fallback = canned)]
/// fn summarize(prompt: &str) -> String {
///     prompt.chars().take(10).collect()
/// }
///
/// let _ = summarize("warm up"); // registers the breaker
/// breaker_runtime::registry().get("summaries").unwrap().force_open();
/// assert_eq!(summarize("hello"), "no answer for \"hello\": circuit forced open");
/// ```
///
/// ## `fallback = cached`
///
/// Serves the last good result this function returned for an equal key, or
/// an entry added by hand. The function must return a `Result` whose `T` is
/// `Clone`, and must not be generic.
///
/// Each annotated function has a cache of its own, even when several share
/// a breaker and a signature: `user_email(7)` is never served
/// `user_name(7)`'s answer. The key is the tuple of the arguments as owned
/// values (`&str` becomes `String`), so they must be `Hash + Eq + Clone`.
///
/// To fill a cache before traffic, ask the breaker for it by the function's
/// *site id*: its module path and its name, which
/// `concat!(module_path!(), "::forecast")` spells next to the function
/// (from elsewhere, write it out: `"my_app::weather::forecast"`). See
/// [`CircuitBreaker::site_cache`](../breaker_runtime/struct.CircuitBreaker.html#method.site_cache).
///
/// ```
/// # use breaker_runtime::{BreakerError, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "weather", fallback = cached)]
/// fn forecast(city: &str) -> Result<String, E> {
///     Ok(format!("sunny in {city}"))
/// }
///
/// assert_eq!(forecast("Oslo").unwrap(), "sunny in Oslo");
/// let breaker = registry().get("weather").unwrap();
/// breaker
///     .site_cache::<(String,), String>(concat!(module_path!(), "::forecast"))
///     .add_to_cache(("Lima".into(),), "mild".into());
/// breaker.force_open();
/// assert_eq!(forecast("Oslo").unwrap(), "sunny in Oslo", "the last good result");
/// assert_eq!(forecast("Lima").unwrap(), "mild", "pre-populated");
/// assert!(forecast("Rome").is_err(), "nothing cached");
/// ```
///
/// ### `cache_key`
///
/// `cache_key = <expression>` replaces the key: an expression over the
/// arguments (and `self`), evaluated before the body runs, whose value is
/// `Hash + Eq + Clone + Send + 'static`. It must not move an argument the
/// body still uses: clone it, or borrow it into an owned value.
///
/// A method with a receiver (`&self`, `self: Arc<Self>`...) must have one:
/// the arguments alone would let two instances (two tenants, two
/// endpoints) serve each other's answers, so the key names what tells the
/// instances apart. A method's site id is its module path and its name;
/// the type is not part of it.
///
/// ```
/// # use breaker_runtime::{BreakerError, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// struct Profiles {
///     tenant: String,
/// }
///
/// impl Profiles {
///     #[circuit_breaker(name = "profiles", fallback = cached, cache_key = (self.tenant.clone(), id))]
///     fn profile(&self, id: u32) -> Result<String, E> {
///         Ok(format!("{} user {id}", self.tenant))
///     }
/// }
///
/// let (acme, globex) = (Profiles { tenant: "acme".into() }, Profiles { tenant: "globex".into() });
/// assert_eq!(acme.profile(1).unwrap(), "acme user 1");
/// registry().get("profiles").unwrap().force_open();
/// assert_eq!(acme.profile(1).unwrap(), "acme user 1", "acme's own answer");
/// assert!(globex.profile(1).is_err(), "never acme's answer");
/// ```
///
/// ## `quality` and `quality_threshold`
///
/// A `Fn(&T) -> f64` (a function path or a closure), where `T` is the `Ok`
/// type, or the return type of a function that does not return a `Result`.
/// A score below `quality_threshold` counts as a failure.
///
/// ```
/// # use breaker_runtime::{BreakerError, circuit_breaker};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "writer", quality_threshold = 0.5, quality = |text: &String| if text.len() > 3 { 1.0 } else { 0.0 })]
/// fn write(topic: &str) -> Result<String, E> {
///     Ok(topic.to_owned())
/// }
/// assert!(write("a long text").is_ok());
/// assert!(matches!(write("no"), Err(E(BreakerError::LowQuality { .. }))));
/// ```
///
/// ## `map_err`
///
/// The function's error type needs `From<BreakerError>`, which an error
/// type of another crate (`std::io::Error`) cannot get: the orphan rule
/// forbids it. `map_err = path` (or a closure) makes the `E` instead. It
/// does not apply with `fallback = some_fn`, which answers every rejected
/// call.
///
/// ```
/// # use breaker_runtime::{BreakerError, circuit_breaker, registry};
/// #[circuit_breaker(name = "disk", map_err = std::io::Error::other)]
/// fn read(path: &str) -> std::io::Result<String> {
///     std::fs::read_to_string(path)
/// }
/// # let _ = read("/nonexistent");
/// registry().get("disk").unwrap().force_open();
/// let error = read("/etc/hostname").unwrap_err();
/// assert_eq!(error.kind(), std::io::ErrorKind::Other);
/// let cause = error.get_ref().unwrap().downcast_ref::<BreakerError>().unwrap();
/// assert!(matches!(cause, BreakerError::ForcedOpen { .. }));
/// ```
///
/// ## `config`
///
/// `config = <expression>` gives the breaker's whole configuration, so the
/// code and its tests can share one value (a function call, a constant, or
/// a reference to a `static`). The value is a `CircuitBreakerConfig`, a
/// `&CircuitBreakerConfig`, or the `Result` that
/// `CircuitBreakerConfig::builder()...build()` returns. It is evaluated
/// once, on the first call through the function (and only if the name is
/// not registered yet), so it should not depend on the arguments.
///
/// With `config`, the keys that set a configuration field
/// (`failure_threshold`, `timeout_duration`, ...) are refused at compile
/// time, pointing at both: two sources for one field would leave a reader
/// guessing which wins. The other keys (`name`, `fallback`, `quality`,
/// `classify`, `map_err`, `crate`) go with it.
///
/// Two things differ from the keys, because the value is only known at run
/// time. It is validated on the first call: an invalid configuration makes
/// every call of the function fail with `BreakerError::InvalidConfig`
/// naming the field (or be answered by its fallback), and the body never
/// runs. And a sync function's `timeout_duration` from `config` is a soft
/// deadline: the call is not moved to a worker thread, so a late result is
/// returned and counts as a timeout (write `timeout_duration` as a key, or
/// make the function `async`, to have it cut off).
///
/// ```
/// # use std::time::Duration;
/// # use breaker_runtime::{BreakerError, CircuitBreakerConfig, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// fn llm_config() -> CircuitBreakerConfig {
///     CircuitBreakerConfig {
///         failure_threshold: 3,
///         recovery_timeout: Duration::from_secs(20),
///         ..CircuitBreakerConfig::default()
///     }
/// }
///
/// #[circuit_breaker(name = "config-doc", config = llm_config())]
/// fn ask(prompt: &str) -> Result<String, E> {
///     Ok(prompt.to_owned())
/// }
///
/// ask("hi").unwrap();
/// assert_eq!(registry().get("config-doc").unwrap().config(), &llm_config());
/// ```
///
/// ## `crate`
///
/// The expansion names `::breaker_runtime`. A crate that renamed the
/// dependency (`resilience = { package = "breaker-runtime", ... }`), or that
/// uses the attribute through another crate's re-export, says where to find
/// it, as a path or, as serde and tokio write it, a string:
///
/// ```
/// mod my_app {
///     pub use breaker_runtime as breaker;
/// }
/// # #[derive(Debug)] struct E(my_app::breaker::BreakerError);
/// # impl From<my_app::breaker::BreakerError> for E { fn from(e: my_app::breaker::BreakerError) -> Self { E(e) } }
///
/// #[my_app::breaker::circuit_breaker(name = "crate-doc", crate = my_app::breaker)]
/// fn ask(prompt: &str) -> Result<String, E> {
///     Ok(prompt.to_owned())
/// }
/// assert_eq!(ask("hi").unwrap(), "hi");
/// ```
///
/// ## `key`: a breaker per key
///
/// `key = expr` makes `name` a keyed family (see `breaker_runtime::Family`):
/// each distinct key gets a breaker of its own, named `name[key]`, so an
/// outage of one model or host trips only its own circuit. The expression
/// is evaluated from the arguments (and `self`) before the body runs, and
/// may be any `Display` value borrowed from them; its text is the key. All
/// keys share the attribute's configuration. The family holds at most
/// 1,000 keys (register one built with `Family::builder(..).max_keys(n)`
/// first to change it); a new key that finds it full of breakers that
/// cannot be evicted (open, failing or in use) is refused with
/// `BreakerError::FamilyFull`, which the fallback serves.
///
/// With `fallback = cached` the cache stays one per function: its key is
/// the arguments (or `cache_key`), not the family's key, so two keys asked
/// the same question share a remembered answer. Put the key in `cache_key`
/// when they must not.
///
/// ```
/// # use breaker_runtime::{BreakerError, CircuitState, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "key-doc-llm", failure_threshold = 1, key = model)]
/// fn ask(model: &str, prompt: &str) -> Result<String, E> {
///     if model == "down" { return Err(E(BreakerError::ForcedOpen { name: model.into() })) }
///     Ok(format!("{model}: {prompt}"))
/// }
/// assert!(ask("down", "hi").is_err());
/// assert_eq!(ask("up", "hi").unwrap(), "up: hi");
/// assert_eq!(registry().get("key-doc-llm[down]").unwrap().state(), CircuitState::Open);
/// assert_eq!(registry().get("key-doc-llm[up]").unwrap().state(), CircuitState::Closed);
/// ```
///
/// ## `classify`
///
/// Decides how a result counts: a client's own mistake can be ignored
/// rather than count against the dependency. For a function that does not
/// return a `Result`, it takes `&T`.
///
/// ```
/// # use breaker_runtime::{BreakerError, FailureType, Outcome, circuit_breaker};
/// #[derive(Debug)]
/// enum HttpError { BadRequest, Unavailable, Breaker(BreakerError) }
/// # impl From<BreakerError> for HttpError { fn from(e: BreakerError) -> Self { Self::Breaker(e) } }
///
/// fn by_status(result: &Result<u16, HttpError>) -> Outcome {
///     match result {
///         Err(HttpError::BadRequest) => Outcome::Ignored,
///         Err(_) => Outcome::Failure(FailureType::Error),
///         Ok(_) => Outcome::Success,
///     }
/// }
///
/// #[circuit_breaker(name = "http", failure_threshold = 1, classify = by_status)]
/// fn get(ok: bool) -> Result<u16, HttpError> {
///     if ok { Ok(200) } else { Err(HttpError::BadRequest) }
/// }
/// assert!(matches!(get(false), Err(HttpError::BadRequest)));
/// assert_eq!(get(true).unwrap(), 200, "a bad request did not open the circuit");
/// ```
///
/// # Supported functions
///
/// Free functions and methods (any receiver), `async fn`, `async fn` under
/// `#[async_trait]`, functions returning a future (below), and generic
/// functions. Not `const fn`, and not an `impl Trait` return type other
/// than a future.
///
/// ## Functions returning a future
///
/// A plain `fn` whose return type is written `impl Future<Output = T>`,
/// `Pin<Box<dyn Future<Output = T> + Send + '_>>` or `BoxFuture<'_, T>`
/// (also `LocalBoxFuture`) is guarded like an `async fn`: the breaker
/// guards the future's work, its deadline cuts the future off, and its
/// output is what `quality`, `classify` and the fallback judge. The
/// function still returns the type written (a boxed future is boxed
/// again, around the guarded one).
///
/// The call is admitted when the future is first polled, not when it is
/// built. A future is lazy: one that is built and dropped unpolled (the
/// losing branch of a `select!`) never did its work, so it must not count
/// as a call nor hold a half-open probe slot; and the deadline measures
/// the work, not how long the future waited to be polled. That is how an
/// `async fn` behaves too. The code that *builds* the future runs when the
/// function is called, unguarded, even with the circuit open: keep it
/// cheap, and do the work inside the future.
///
/// ```
/// # use std::{future::Future, pin::Pin};
/// # use breaker_runtime::{BreakerError, CircuitState, circuit_breaker, registry};
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "boxed-doc", failure_threshold = 1)]
/// fn fetch(fail: bool) -> Pin<Box<dyn Future<Output = Result<u32, E>> + Send>> {
///     Box::pin(async move {
///         if fail { Err(E(BreakerError::ForcedOpen { name: "upstream".into() })) } else { Ok(1) }
///     })
/// }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let later = fetch(false); // built while closed, not yet a call
/// assert!(fetch(true).await.is_err()); // the future's failure opens the circuit
/// assert_eq!(registry().get("boxed-doc").unwrap().state(), CircuitState::Open);
/// assert!(matches!(later.await, Err(E(BreakerError::Open { .. }))), "admitted when polled");
/// # });
/// ```
///
/// The attribute recognises a returned future by how its type is written.
/// A future under another name (an alias of your own) is refused at
/// compile time, with a message saying what to write: guarded as a plain
/// value, only its building would be.
///
/// # Testing
///
/// A call site resolves its breaker on its first call and keeps it, so a
/// breaker registered by hand *after* that call (by this test or by
/// another test of the same binary, running in parallel) would be
/// ignored. To put a named breaker on a `ManualClock` whatever ran before,
/// replace it: [`registry().replace_clock(name, clock)`](../breaker_runtime/struct.Registry.html#method.replace_clock)
/// puts a fresh breaker with the same configuration on the clock, and
/// every call site uses it from its next call
/// ([`Registry::replace`](../breaker_runtime/struct.Registry.html#method.replace)
/// takes a breaker you built):
///
/// ```
/// # use std::time::Duration;
/// # use breaker_runtime::*;
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "late-clock", failure_threshold = 1, recovery_timeout = 10, success_threshold = 1)]
/// fn call(fail: bool) -> Result<(), E> {
///     if fail { Err(E(BreakerError::ForcedOpen { name: "test".into() })) } else { Ok(()) }
/// }
///
/// assert!(call(false).is_ok()); // an earlier test, say: the site holds its breaker
/// let clock = ManualClock::new();
/// let breaker = registry().replace_clock("late-clock", clock.clone()).unwrap();
/// let _ = call(true);
/// assert_eq!(breaker.state(), CircuitState::Open);
/// clock.advance(Duration::from_secs(10));
/// assert!(call(false).is_ok());
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// ```
///
/// Registering a breaker on a `ManualClock` *before* the first call works
/// too:
///
/// ```
/// # use std::time::Duration;
/// # use breaker_runtime::*;
/// # #[derive(Debug)] struct E(BreakerError);
/// # impl From<BreakerError> for E { fn from(e: BreakerError) -> Self { E(e) } }
/// #[circuit_breaker(name = "clocked", failure_threshold = 1, recovery_timeout = 10)]
/// fn call(fail: bool) -> Result<(), E> {
///     if fail { Err(E(BreakerError::ForcedOpen { name: "test".into() })) } else { Ok(()) }
/// }
///
/// let clock = ManualClock::new();
/// let config = CircuitBreakerConfig {
///     failure_threshold: 1,
///     recovery_timeout: Duration::from_secs(10),
///     ..Default::default()
/// };
/// let breaker = CircuitBreaker::builder("clocked").config(config).clock(clock.clone()).build()?;
/// let breaker = registry().register(breaker).unwrap();
/// let _ = call(true);
/// assert_eq!(breaker.state(), CircuitState::Open);
/// clock.advance(Duration::from_secs(10));
/// assert!(call(false).is_ok());
/// # Ok::<(), ConfigError>(())
/// ```
#[proc_macro_attribute]
pub fn circuit_breaker(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::circuit_breaker(args.into(), item.into()).into()
}
