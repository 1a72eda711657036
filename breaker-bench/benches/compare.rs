//! Peer comparison (issue 5): the same trivial protected function behind each
//! circuit breaker, closed and open, sync and async, plus governor's limiter.
//!
//! Group and id names come from `breaker_bench::{groups, ids}` so the table
//! printer (`cargo run -p breaker-bench -- --quick`) finds every case.
//! The `// OURS:` blocks measure breaker-runtime and `#[circuit_breaker]`.
//!
//! With `BREAKER_PAIRED_OUT` set, the run ends with paired rounds for the
//! ratios the targets name (see `breaker_bench::paired`), written to that
//! file as a Markdown table.
//!
//! Multi-threaded cases use `iter_custom`: two scoped threads each make
//! `iters` calls on one shared breaker, and the routine returns wall time / 2.
//! Criterion divides by `iters`, so the reported time is per call of total
//! throughput (perfect scaling on 2 cores = half the 1-thread time).
//!
//! Async cases run the whole sample inside one `block_on` on a current-thread
//! runtime, so runtime entry is not charged to each call.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use breaker_bench::{groups, ids, paired};
use circuitbreaker_rs::{BreakerError, CircuitBreaker as CbrsBreaker, DefaultPolicy};
use criterion::{BenchmarkId, Criterion, criterion_group};
use failsafe::CircuitBreaker as FailsafeSync;
use failsafe::futures::CircuitBreaker as FailsafeAsync;
use governor::{Quota, RateLimiter};
use recloser::{AsyncRecloser, Recloser};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};
use tower_resilience_circuitbreaker::{CircuitBreakerError, CircuitBreakerLayer};

/// Far longer than any benchmark, so a tripped breaker never half-opens.
const LONG_RECOVERY: Duration = Duration::from_secs(3600);
/// The deadline of the async cases; never reached.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound on failures needed to trip any peer (recloser's default window
/// is 100 calls); more means the peer's trip logic is not what we think.
const MAX_FAILURES_TO_TRIP: usize = 1_000;

/// The protected function every case calls.
#[inline(never)]
fn work(x: u64) -> Result<u64, ()> {
    Ok(black_box(x) + 1)
}

/// circuitbreaker-rs (and tower's error classifier) needs `E: std::error::Error`;
/// `work`'s `()` is mapped to this for them.
#[derive(Debug)]
struct WorkFailed;

impl std::fmt::Display for WorkFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("work failed")
    }
}

impl std::error::Error for WorkFailed {}

fn work_cbrs(x: u64) -> Result<u64, WorkFailed> {
    work(x).map_err(|()| WorkFailed)
}

/// `work` under the deadline every async case pays; the bare async baseline.
async fn timed_work(x: u64) -> Result<u64, WorkFailed> {
    match tokio::time::timeout(CALL_TIMEOUT, async { work(x) }).await {
        Ok(result) => result.map_err(|()| WorkFailed),
        Err(_elapsed) => Err(WorkFailed),
    }
}

/// The error of the annotated functions: it must carry the breaker's own.
#[derive(Debug)]
struct MacroError;

impl From<breaker_runtime::BreakerError> for MacroError {
    fn from(_: breaker_runtime::BreakerError) -> Self {
        MacroError
    }
}

#[breaker_runtime::circuit_breaker(name = "bench_macro")]
fn ours_macro_work(x: u64) -> Result<u64, MacroError> {
    work(x).map_err(|()| MacroError)
}

#[breaker_runtime::circuit_breaker(name = "bench_macro_async", timeout_duration = 30)]
async fn ours_macro_timed_work(x: u64) -> Result<u64, MacroError> {
    work(x).map_err(|()| MacroError)
}

#[breaker_runtime::circuit_breaker(name = "bench_macro_keyed", key = model)]
fn ours_macro_keyed_work(model: &str, x: u64) -> Result<u64, MacroError> {
    work(x).map_err(|()| MacroError)
}

/// The key the keyed cases call with, and the others the family holds.
const MODEL: &str = "gpt-4o";
const OTHER_MODELS: [&str; 7] = ["a", "b", "claude", "llama-3", "mistral", "o1", "sim"];

/// A keyed family holding [`MODEL`] among 8 keys, default config.
fn ours_keyed() -> breaker_runtime::Family {
    let family = breaker_runtime::Family::new("bench_keyed", Default::default()).unwrap();
    for model in OTHER_MODELS.iter().chain([&MODEL]) {
        assert!(family.with(*model, |b| b.call(|| work(1))).unwrap().is_ok());
        assert!(ours_macro_keyed_work(model, 1).is_ok());
    }
    family
}

fn failsafe_default() -> impl FailsafeSync + FailsafeAsync + Clone + Sync {
    failsafe::Config::new().build()
}

fn cbrs_default() -> CbrsBreaker<DefaultPolicy, WorkFailed> {
    CbrsBreaker::<DefaultPolicy, WorkFailed>::builder().build()
}

/// Runs `call` `iters` times on each of two threads started together and
/// returns wall time / 2 (see the module docs).
fn two_threads<R>(iters: u64, call: impl Fn() -> R + Sync) -> Duration {
    let start_line = Barrier::new(3);
    let start = thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                start_line.wait();
                for _ in 0..iters {
                    black_box(call());
                }
            });
        }
        start_line.wait();
        Instant::now()
    });
    start.elapsed() / 2
}

/// Awaits `call` `iters` times inside one `block_on` and returns the time.
fn async_loop<R>(rt: &Runtime, iters: u64, mut call: impl AsyncFnMut() -> R) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(call().await);
        }
        start.elapsed()
    })
}

/// Calls `fail` until it reports a rejection, proving the breaker is open.
fn trip(peer: &str, mut fail_until_rejected: impl FnMut() -> bool) {
    let tripped = (0..MAX_FAILURES_TO_TRIP).any(|_| fail_until_rejected());
    assert!(
        tripped,
        "{peer}: still closed after {MAX_FAILURES_TO_TRIP} failures"
    );
}

fn closed_1t(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::CLOSED_1T);

    group.bench_function(ids::BARE, |b| b.iter(|| work(1)));

    // OURS: breaker_runtime direct. Default config, like the peers below.
    let ours = breaker_runtime::CircuitBreaker::new("bench", Default::default()).unwrap();
    assert!(ours.call(|| work(1)).is_ok());
    group.bench_function(ids::OURS_DIRECT, |b| b.iter(|| ours.call(|| work(1))));

    // The `#[circuit_breaker]` fn declared at the top of this file.
    assert!(ours_macro_work(1).is_ok());
    group.bench_function(ids::OURS_MACRO, |b| b.iter(|| ours_macro_work(1)));

    let keyed = ours_keyed();
    group.bench_function(ids::OURS_KEYED, |b| {
        b.iter(|| {
            keyed
                .member(black_box(MODEL))
                .ok()
                .map(|breaker| breaker.call(|| work(1)))
        })
    });
    group.bench_function(ids::OURS_MACRO_KEYED, |b| {
        b.iter(|| ours_macro_keyed_work(black_box(MODEL), 1))
    });

    let failsafe = failsafe_default();
    assert!(FailsafeSync::call(&failsafe, || work(1)).is_ok());
    group.bench_function(ids::FAILSAFE, |b| {
        b.iter(|| FailsafeSync::call(&failsafe, || work(1)))
    });

    let recloser = Recloser::default();
    assert!(recloser.call(|| work(1)).is_ok());
    group.bench_function(ids::RECLOSER, |b| b.iter(|| recloser.call(|| work(1))));

    let cbrs = cbrs_default();
    assert!(cbrs.call(|| work_cbrs(1)).is_ok());
    group.bench_function(ids::CIRCUITBREAKER_RS, |b| {
        b.iter(|| cbrs.call(|| work_cbrs(1)))
    });

    group.finish();
}

fn closed_2t(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::CLOSED_2T);

    group.bench_function(ids::BARE, |b| {
        b.iter_custom(|iters| two_threads(iters, || work(1)))
    });

    // OURS: one breaker_runtime breaker shared by both threads.
    let ours = breaker_runtime::CircuitBreaker::new("bench", Default::default()).unwrap();
    group.bench_function(ids::OURS_DIRECT, |b| {
        b.iter_custom(|iters| two_threads(iters, || ours.call(|| work(1))))
    });

    let failsafe = failsafe_default();
    group.bench_function(ids::FAILSAFE, |b| {
        b.iter_custom(|iters| two_threads(iters, || FailsafeSync::call(&failsafe, || work(1))))
    });

    let recloser = Recloser::default();
    group.bench_function(ids::RECLOSER, |b| {
        b.iter_custom(|iters| two_threads(iters, || recloser.call(|| work(1))))
    });

    // Sync: `CircuitBreaker` is an `Arc` around atomics and parking_lot locks.
    let cbrs = cbrs_default();
    group.bench_function(ids::CIRCUITBREAKER_RS, |b| {
        b.iter_custom(|iters| two_threads(iters, || cbrs.call(|| work_cbrs(1))))
    });

    group.finish();
}

/// Our breaker, tripped by failures and open for the whole run.
fn tripped_ours() -> breaker_runtime::CircuitBreaker {
    let ours = breaker_runtime::CircuitBreaker::new(
        "bench",
        breaker_runtime::CircuitBreakerConfig::builder()
            .recovery_timeout(LONG_RECOVERY)
            .build()
            .unwrap(),
    )
    .unwrap();
    trip("ours", || {
        ours.call(|| Err::<u64, ()>(()))
            .is_err_and(|e| e.breaker_error().is_some_and(|b| b.retry_after().is_some()))
    });
    ours
}

/// recloser, tripped by failures and open for the whole run.
fn tripped_recloser() -> Recloser {
    let recloser = Recloser::custom().open_wait(LONG_RECOVERY).build();
    trip(ids::RECLOSER, || {
        matches!(
            recloser.call(|| Err::<u64, ()>(())),
            Err(recloser::Error::Rejected)
        )
    });
    recloser
}

/// Our breaker with `timeout_duration` at [`CALL_TIMEOUT`].
fn ours_timed() -> breaker_runtime::CircuitBreaker {
    breaker_runtime::CircuitBreaker::new(
        "bench",
        breaker_runtime::CircuitBreakerConfig::builder()
            .timeout_duration(CALL_TIMEOUT)
            .build()
            .unwrap(),
    )
    .unwrap()
}

/// Our breaker with a rate limit that never denies.
fn ours_rate_limited() -> breaker_runtime::CircuitBreaker {
    breaker_runtime::CircuitBreaker::new(
        "bench",
        breaker_runtime::CircuitBreakerConfig::builder()
            .rate_limit_per_minute(u32::MAX)
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn open_reject(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::OPEN_REJECT);

    // OURS: trip with failures, then measure the rejection. The rejection
    // serves a fallback, as an application would.
    let ours = tripped_ours();
    group.bench_function(ids::OURS_DIRECT, |b| {
        b.iter(|| ours.call_with_fallback(|| work(1), || 0))
    });

    // The default policy's backoff is jittered 5-10 s; a constant hour keeps
    // the breaker open for the whole run.
    let failsafe = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            1,
            failsafe::backoff::constant(LONG_RECOVERY),
        ))
        .build();
    trip(ids::FAILSAFE, || {
        matches!(
            FailsafeSync::call(&failsafe, || Err::<u64, ()>(())),
            Err(failsafe::Error::Rejected)
        )
    });
    group.bench_function(ids::FAILSAFE, |b| {
        b.iter(|| FailsafeSync::call(&failsafe, || work(1)))
    });

    let recloser = tripped_recloser();
    group.bench_function(ids::RECLOSER, |b| b.iter(|| recloser.call(|| work(1))));

    let cbrs = CbrsBreaker::<DefaultPolicy, WorkFailed>::builder()
        .cooldown(LONG_RECOVERY)
        .build();
    trip(ids::CIRCUITBREAKER_RS, || {
        matches!(
            cbrs.call(|| Err::<u64, _>(WorkFailed)),
            Err(BreakerError::Open)
        )
    });
    group.bench_function(ids::CIRCUITBREAKER_RS, |b| {
        b.iter(|| cbrs.call(|| work_cbrs(1)))
    });

    // tower-resilience only exists as a Service, so its rejection is async:
    // `ready()` sees the open state, `call` returns a boxed future that
    // resolves to `OpenCircuit`.
    let rt = current_thread_runtime();
    let mut tower_svc = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .wait_duration_in_open(LONG_RECOVERY)
        .build()
        .expect("valid tower-resilience config")
        .layer(tower::service_fn(|fail: bool| async move {
            if fail { Err(WorkFailed) } else { work_cbrs(1) }
        }));
    trip(ids::TOWER_RESILIENCE, || {
        rt.block_on(async {
            let result = ServiceExt::<bool>::ready(&mut tower_svc)
                .await
                .unwrap()
                .call(true)
                .await;
            matches!(result, Err(CircuitBreakerError::OpenCircuit))
        })
    });
    group.bench_function(ids::TOWER_RESILIENCE, |b| {
        b.iter_custom(|iters| {
            async_loop(&rt, iters, async || {
                ServiceExt::<bool>::ready(&mut tower_svc)
                    .await
                    .unwrap()
                    .call(false)
                    .await
            })
        })
    });

    group.finish();
}

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn async_timeout(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::ASYNC_TIMEOUT);
    let rt = current_thread_runtime();

    group.bench_function(ids::BARE, |b| {
        b.iter_custom(|iters| async_loop(&rt, iters, async || timed_work(1).await))
    });

    // OURS: `call_async` applies the breaker's own `timeout_duration`, so set
    // it to CALL_TIMEOUT and pass the bare fn; plus the `#[circuit_breaker]`
    // async fn declared at the top of this file.
    let ours = ours_timed();
    group.bench_function(ids::OURS_DIRECT, |b| {
        b.iter_custom(|iters| {
            async_loop(&rt, iters, async || {
                ours.call_async(async { work(1) }).await
            })
        })
    });
    group.bench_function(ids::OURS_MACRO, |b| {
        b.iter_custom(|iters| async_loop(&rt, iters, async || ours_macro_timed_work(1).await))
    });

    // The peers have no timeout of their own: the deadline goes inside the
    // breaker so that an elapsed deadline would count as a failure.
    let failsafe = failsafe_default();
    group.bench_function(ids::FAILSAFE, |b| {
        b.iter_custom(|iters| {
            async_loop(&rt, iters, async || {
                FailsafeAsync::call(&failsafe, timed_work(1)).await
            })
        })
    });

    let recloser = AsyncRecloser::from(Recloser::default());
    group.bench_function(ids::RECLOSER, |b| {
        b.iter_custom(|iters| async_loop(&rt, iters, async || recloser.call(timed_work(1)).await))
    });

    let mut tower_svc = CircuitBreakerLayer::builder()
        .build()
        .expect("default tower-resilience config")
        .layer(tower::service_fn(timed_work));
    group.bench_function(ids::TOWER_RESILIENCE, |b| {
        b.iter_custom(|iters| {
            async_loop(&rt, iters, async || {
                ServiceExt::<u64>::ready(&mut tower_svc)
                    .await
                    .unwrap()
                    .call(1)
                    .await
            })
        })
    });

    group.finish();
}

/// A trivial `service_fn`: the service every `tower_layer` case wraps.
fn trivial_service() -> impl Service<u64, Response = u64, Error = (), Future: Send> + Clone + Send {
    tower::service_fn(|x: u64| async move { work(x) })
}

/// Our layer around [`trivial_service`], with the default configuration.
fn ours_tower() -> impl Service<u64, Response = u64, Error = OursTowerError> + Clone {
    let breaker = breaker_runtime::CircuitBreaker::new("bench_tower", Default::default()).unwrap();
    breaker_runtime::tower::CircuitBreakerLayer::new(breaker).layer(trivial_service())
}

type OursTowerError = breaker_runtime::tower::ServiceError<()>;

/// tower-resilience's layer around [`trivial_service`], default config.
fn their_tower() -> impl Service<u64, Response = u64, Error = CircuitBreakerError<()>> + Clone {
    CircuitBreakerLayer::builder()
        .build()
        .expect("default tower-resilience config")
        .layer(trivial_service())
}

/// One call through `service`, as a tower client makes it.
async fn tower_call<S: Service<u64>>(service: &mut S) -> Result<S::Response, S::Error> {
    ServiceExt::<u64>::ready(service).await?.call(1).await
}

fn tower_layer(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::TOWER_LAYER);
    let rt = current_thread_runtime();

    let mut bare = trivial_service();
    group.bench_function(ids::BARE, |b| {
        b.iter_custom(|iters| async_loop(&rt, iters, async || tower_call(&mut bare).await))
    });
    // OURS: breaker_runtime::tower::CircuitBreakerLayer.
    let mut ours = ours_tower();
    group.bench_function(ids::OURS_DIRECT, |b| {
        b.iter_custom(|iters| async_loop(&rt, iters, async || tower_call(&mut ours).await))
    });
    let mut theirs = their_tower();
    group.bench_function(ids::TOWER_RESILIENCE, |b| {
        b.iter_custom(|iters| async_loop(&rt, iters, async || tower_call(&mut theirs).await))
    });
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::RATE_LIMIT);

    // u32::MAX per second with a burst of the same size: one cell every
    // ~0.23 ns, far faster than two threads can ask, so `check` never denies.
    let quota = Quota::per_second(NonZeroU32::MAX);

    // OURS: breaker_runtime's limiter is crate-private and runs inside a call,
    // so this row is "breaker + limiter" against governor's bare `check`.
    let ours = ours_rate_limited();
    group.bench_function(
        BenchmarkId::new(ids::OURS_RATE_LIMIT, ids::ONE_THREAD),
        |b| b.iter(|| ours.call(|| work(1))),
    );
    group.bench_function(
        BenchmarkId::new(ids::OURS_RATE_LIMIT, ids::TWO_THREADS),
        |b| b.iter_custom(|iters| two_threads(iters, || ours.call(|| work(1)))),
    );

    let limiter = RateLimiter::direct(quota);
    // A denial takes a cheaper path than an admission; count them (only on
    // that cold branch) and prove there were none.
    let denied = AtomicU64::new(0);
    let check = || {
        if limiter.check().is_err() {
            denied.fetch_add(1, Ordering::Relaxed);
        }
    };
    group.bench_function(BenchmarkId::new(ids::GOVERNOR, ids::ONE_THREAD), |b| {
        b.iter(check)
    });
    group.bench_function(BenchmarkId::new(ids::GOVERNOR, ids::TWO_THREADS), |b| {
        b.iter_custom(|iters| two_threads(iters, check))
    });
    assert_eq!(
        denied.load(Ordering::Relaxed),
        0,
        "governor denied under a never-deny quota"
    );

    group.finish();
}

fn scale(c: &mut Criterion) {
    let mut group = c.benchmark_group(groups::SCALE);
    group.sample_size(10);
    let registry = breaker_runtime::Registry::new();
    for i in 0..10_000 {
        registry
            .get_or_register(&format!("breaker-{i:05}"), Default::default())
            .unwrap();
    }
    group.bench_function(ids::STATUS_10K, |b| b.iter(|| black_box(registry.status())));

    let keyed = breaker_runtime::Registry::new();
    let family = breaker_runtime::Family::builder("hosts")
        .max_keys(10_000)
        .build()
        .unwrap();
    let family = keyed.register_family(family).unwrap();
    for i in 0..10_000 {
        family.breaker(&format!("host-{i:05}")).unwrap();
    }
    group.bench_function(ids::STATUS_10K_KEYED, |b| {
        b.iter(|| black_box(keyed.status()))
    });
    group.finish();
}

/// Times `iters` calls of `call` in a loop, as criterion's `iter` does.
fn sync_loop<R>(iters: u64, mut call: impl FnMut() -> R) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(call());
    }
    start.elapsed()
}

/// Paired rounds (see `breaker_bench::paired`): ours against the peer each
/// target names, timed alternately within one process.
fn paired_rounds() -> Vec<paired::Pairing> {
    let rt = current_thread_runtime();
    let ours = breaker_runtime::CircuitBreaker::new("bench", Default::default()).unwrap();
    let failsafe = failsafe_default();
    let recloser = Recloser::default();
    let ours_open = tripped_ours();
    let recloser_open = tripped_recloser();
    let ours_async = ours_timed();
    let ours_limited = ours_rate_limited();
    let limiter = RateLimiter::direct(Quota::per_second(NonZeroU32::MAX));
    let keyed = ours_keyed();
    let mut ours_layer = ours_tower();
    let mut their_layer = their_tower();
    vec![
        paired::pair(
            groups::CLOSED_KEYED,
            ids::OURS_DIRECT,
            |n| {
                sync_loop(n, || {
                    keyed
                        .member(black_box(MODEL))
                        .ok()
                        .map(|b| b.call(|| work(1)))
                })
            },
            |n| sync_loop(n, || ours.call(|| work(1))),
        ),
        paired::pair(
            groups::CLOSED_KEYED,
            ids::OURS_MACRO,
            |n| sync_loop(n, || ours_macro_keyed_work(black_box(MODEL), 1)),
            |n| sync_loop(n, || ours_macro_work(1)),
        ),
        paired::pair(
            groups::CLOSED_1T,
            ids::FAILSAFE,
            |n| sync_loop(n, || ours.call(|| work(1))),
            |n| sync_loop(n, || FailsafeSync::call(&failsafe, || work(1))),
        ),
        paired::pair(
            groups::CLOSED_1T,
            ids::RECLOSER,
            |n| sync_loop(n, || ours.call(|| work(1))),
            |n| sync_loop(n, || recloser.call(|| work(1))),
        ),
        paired::pair(
            groups::OPEN_REJECT,
            ids::RECLOSER,
            |n| sync_loop(n, || ours_open.call_with_fallback(|| work(1), || 0)),
            |n| sync_loop(n, || recloser_open.call(|| work(1))),
        ),
        paired::pair(
            groups::ASYNC_TIMEOUT,
            ids::BARE,
            |n| {
                async_loop(&rt, n, async || {
                    ours_async.call_async(async { work(1) }).await
                })
            },
            |n| async_loop(&rt, n, async || timed_work(1).await),
        ),
        paired::pair(
            groups::RATE_LIMIT,
            ids::GOVERNOR,
            |n| sync_loop(n, || ours_limited.call(|| work(1))),
            |n| sync_loop(n, || limiter.check()),
        ),
        paired::pair(
            groups::TOWER_LAYER,
            ids::TOWER_RESILIENCE,
            |n| async_loop(&rt, n, async || tower_call(&mut ours_layer).await),
            |n| async_loop(&rt, n, async || tower_call(&mut their_layer).await),
        ),
    ]
}

criterion_group!(
    compare,
    closed_1t,
    closed_2t,
    open_reject,
    async_timeout,
    rate_limit,
    scale,
    tower_layer
);

fn main() {
    compare();
    Criterion::default().configure_from_args().final_summary();
    // The table printer asks for paired rounds by naming a file for them.
    if let Some(out) = std::env::var_os(paired::OUT_ENV) {
        let table = paired::render(&paired_rounds());
        std::fs::write(&out, table).expect("write the paired rounds");
    }
}
