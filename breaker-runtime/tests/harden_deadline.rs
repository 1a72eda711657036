//! Hardening of deadlines (issue 9, items 3, 5, 6, 8 and 11): hard-deadline
//! calls are bounded by bulkheads and refused past them, a worker that
//! cannot start is refused too, `Duration::MAX` means no deadline, a late
//! but good result is kept, and the coarse clock never makes a short call
//! late.
//!
//! The tests that use the worker pool share it (it is process-wide), so
//! they take [`POOL`] to run one at a time. Real-time tests use small
//! durations and count rather than time: the hanging calls block on a
//! [`Gate`] the test opens at the end.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use breaker_runtime::{
    BreakerError, CachedFallback, CallError, CallOptions, CircuitBreaker, CircuitBreakerConfig,
    ConfigError, EventKind, FallbackReason, ManualClock, circuit_breaker, subscribe,
};

/// Serialises the tests that use the process-wide worker pool.
static POOL: Mutex<()> = Mutex::new(());

fn pool_lock() -> MutexGuard<'static, ()> {
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What hung calls block on until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// The process's threads, as the kernel counts them.
fn os_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("a Threads: line")
}

/// Polls `done` every few milliseconds for up to ten seconds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A breaker for hung calls: a short hard deadline, and a failure threshold
/// out of reach so the circuit stays closed and only the bulkheads refuse.
fn hanging_breaker(name: &str, max_deadline_workers: u32) -> CircuitBreaker {
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(Duration::from_millis(20))
        .failure_threshold(1_000_000)
        .max_deadline_workers(max_deadline_workers)
        .build()
        .expect("valid configuration");
    CircuitBreaker::new(name, config).expect("valid configuration")
}

/// How each call of a storm ended.
#[derive(Default)]
struct Storm {
    runs: AtomicUsize,
    timeouts: AtomicUsize,
    refused: AtomicUsize,
    refused_limits: Mutex<Vec<u32>>,
    max_pool_threads: AtomicUsize,
    max_os_threads: AtomicUsize,
}

/// `threads` threads each make `calls` hard-deadline calls that hang on
/// `gate`, watching the thread counts after every call.
fn storm(breaker: &CircuitBreaker, gate: &Arc<Gate>, threads: usize, calls: usize) -> Arc<Storm> {
    let storm = Arc::new(Storm::default());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let breaker = breaker.clone();
            let gate = Arc::clone(gate);
            let storm = Arc::clone(&storm);
            thread::spawn(move || {
                for _ in 0..calls {
                    let gate = Arc::clone(&gate);
                    let seen = Arc::clone(&storm);
                    let result = breaker.call_with_deadline(&CallOptions::new(), move || {
                        seen.runs.fetch_add(1, Ordering::SeqCst);
                        gate.wait();
                        Ok::<u32, String>(1)
                    });
                    match result.as_ref().map_err(CallError::breaker_error) {
                        Err(Some(BreakerError::Timeout { .. })) => {
                            storm.timeouts.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(Some(BreakerError::BulkheadFull { name, limit })) => {
                            assert_eq!(name, breaker.name());
                            storm.refused.fetch_add(1, Ordering::SeqCst);
                            storm.refused_limits.lock().unwrap().push(*limit);
                        }
                        _ => panic!("expected a timeout or a refusal, got {result:?}"),
                    }
                    storm.max_pool_threads.fetch_max(
                        breaker_runtime::__deadline_worker_threads(),
                        Ordering::SeqCst,
                    );
                    storm
                        .max_os_threads
                        .fetch_max(os_threads(), Ordering::SeqCst);
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a storm thread panicked");
    }
    storm
}

#[test]
fn hung_calls_hold_at_most_max_deadline_workers_and_the_rest_are_refused_unrun() {
    let _pool = pool_lock();
    const BOUND: u32 = 8;
    const THREADS: usize = 16;
    const CALLS: usize = 60;
    let breaker = hanging_breaker("harden-bulkhead-per-breaker", BOUND);
    let gate = Arc::new(Gate::default());
    let pool_before = breaker_runtime::__deadline_worker_threads();
    let os_before = os_threads();

    let storm = storm(&breaker, &gate, THREADS, CALLS);

    let total = THREADS * CALLS;
    let runs = storm.runs.load(Ordering::SeqCst);
    let refused = storm.refused.load(Ordering::SeqCst);
    let max_pool = storm.max_pool_threads.load(Ordering::SeqCst);
    let max_os = storm.max_os_threads.load(Ordering::SeqCst);
    eprintln!(
        "{total} calls: {runs} ran (and hung), {refused} refused; pool threads {pool_before} -> max {max_pool}; OS threads {os_before} -> max {max_os}"
    );
    assert_eq!(runs, BOUND as usize, "only the bound's calls ran");
    assert_eq!(storm.timeouts.load(Ordering::SeqCst), BOUND as usize);
    assert_eq!(refused, total - BOUND as usize);
    assert!(
        storm
            .refused_limits
            .lock()
            .unwrap()
            .iter()
            .all(|&limit| limit == BOUND)
    );
    assert!(
        max_pool <= pool_before + BOUND as usize,
        "the pool grew to {max_pool} threads from {pool_before}"
    );
    // The storm's own threads, the workers, and a little slack for the
    // test harness's threads.
    assert!(
        max_os <= os_before + THREADS + BOUND as usize + 4,
        "the process grew to {max_os} threads from {os_before}"
    );
    assert_eq!(breaker.__deadline_workers_held(), BOUND);

    let metrics = breaker.get_metrics();
    assert_eq!(metrics.total_calls, total as u64);
    assert_eq!(metrics.failures_by_type.timeout, u64::from(BOUND));
    assert_eq!(metrics.rejected_calls, (total - BOUND as usize) as u64);
    assert_eq!(metrics.cancelled_calls, 0);

    // Released, the hung calls give their slots back, and calls run again.
    gate.open();
    eventually("every hung call has ended", || {
        breaker.get_metrics().late_results == u64::from(BOUND)
    });
    assert_eq!(breaker.__deadline_workers_held(), 0);
    for _ in 0..2 * BOUND {
        assert_eq!(
            breaker.call_with_deadline(&CallOptions::new(), || Ok::<_, String>(7)),
            Ok(7)
        );
    }
}

#[test]
fn the_pool_starts_no_thread_past_its_limit() {
    let _pool = pool_lock();
    // Every worker alive now is idle (earlier tests released theirs), so
    // the limit leaves room for exactly four more.
    let before = breaker_runtime::__deadline_worker_threads();
    let limit = u32::try_from(before).unwrap() + 4;
    breaker_runtime::set_deadline_worker_limit(limit).expect("a valid limit");
    assert_eq!(breaker_runtime::deadline_worker_limit(), limit);
    let breaker = hanging_breaker("harden-bulkhead-pool", 1_000);
    let gate = Arc::new(Gate::default());

    let storm = storm(&breaker, &gate, 8, 20);

    let runs = storm.runs.load(Ordering::SeqCst);
    let refused = storm.refused.load(Ordering::SeqCst);
    let max_pool = storm.max_pool_threads.load(Ordering::SeqCst);
    eprintln!(
        "limit {limit}: {runs} ran (and hung), {refused} refused, pool threads {before} -> max {max_pool}"
    );
    assert!(
        max_pool <= limit as usize,
        "{max_pool} threads, limit {limit}"
    );
    assert!(runs <= limit as usize && runs >= 4, "{runs} calls ran");
    assert_eq!(runs + refused, 160);
    assert!(
        storm
            .refused_limits
            .lock()
            .unwrap()
            .iter()
            .all(|&refused_at| refused_at == limit),
        "refused at the pool's limit"
    );
    assert_eq!(breaker.get_metrics().rejected_calls, refused as u64);

    gate.open();
    eventually("every hung call has ended", || {
        breaker.get_metrics().late_results == runs as u64
    });
    assert_eq!(breaker.__deadline_workers_held(), 0);
    breaker_runtime::set_deadline_worker_limit(breaker_runtime::DEFAULT_DEADLINE_WORKER_LIMIT)
        .expect("the default is valid");
    assert_eq!(
        breaker.call_with_deadline(&CallOptions::new(), || Ok::<_, String>(7)),
        Ok(7)
    );
}

#[test]
fn past_the_bulkhead_the_fallback_serves() {
    let _pool = pool_lock();
    let breaker = hanging_breaker("harden-bulkhead-fallback", 1);
    let rejections = Arc::new(AtomicU32::new(0));
    let _subscription = {
        let rejections = Arc::clone(&rejections);
        subscribe(move |event| {
            if event.breaker == "harden-bulkhead-fallback"
                && matches!(
                    event.kind,
                    EventKind::Rejected {
                        reason: FallbackReason::BulkheadFull { limit: 1 }
                    }
                )
            {
                rejections.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let gate = Arc::new(Gate::default());
    let hung = Arc::clone(&gate);
    let first = breaker.call_with_deadline(&CallOptions::new(), move || {
        hung.wait();
        Ok::<_, String>("live".to_owned())
    });
    assert!(matches!(
        first.unwrap_err().breaker_error(),
        Some(BreakerError::Timeout { .. })
    ));

    let asked = Arc::new(Mutex::new(None));
    let options = CallOptions::new().fallback({
        let asked = Arc::clone(&asked);
        move |reason: &FallbackReason| {
            *asked.lock().unwrap() = Some(*reason);
            Some(Ok("fallback".to_owned()))
        }
    });
    let served = breaker.call_with_deadline(&options, || -> Result<String, String> {
        unreachable!("a refused call never runs")
    });
    assert_eq!(served, Ok("fallback".to_owned()));
    let reason = asked.lock().unwrap().expect("the fallback was asked");
    assert_eq!(reason, FallbackReason::BulkheadFull { limit: 1 });
    assert!(reason.is_rejection());
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.rejected_calls, 1);
    assert_eq!(metrics.fallback_calls, 1);
    assert_eq!(metrics.fallback_failures, 0);
    assert_eq!(rejections.load(Ordering::SeqCst), 1, "one Rejected event");

    gate.open();
    eventually("the hung call has ended", || {
        breaker.get_metrics().late_results == 1
    });
    assert_eq!(
        breaker.call_with_deadline(&options, || Ok::<_, String>("live".to_owned())),
        Ok("live".to_owned())
    );
}

#[circuit_breaker(name = "harden-spawn-macro", timeout_duration = 0.5, fallback = spawn_fallback)]
fn spawn_protected(id: u32) -> String {
    format!("live-{id}")
}

fn spawn_fallback(id: u32) -> String {
    format!("fallback-{id}")
}

#[test]
fn a_worker_that_cannot_start_refuses_the_call_and_the_fallback_serves() {
    let _pool = pool_lock();
    let breaker = hanging_breaker("harden-spawn-failure", 4);
    let threads_before = breaker_runtime::__deadline_worker_threads();

    breaker_runtime::__fail_deadline_worker_starts(1);
    let refused = breaker.call_with_deadline(&CallOptions::new(), || -> Result<u32, String> {
        unreachable!("no worker started")
    });
    match refused.unwrap_err().breaker_error() {
        Some(BreakerError::WorkerUnavailable { name, cause }) => {
            assert_eq!(name, "harden-spawn-failure");
            assert!(cause.contains("test hook"), "{cause}");
        }
        other => panic!("expected WorkerUnavailable, got {other:?}"),
    }
    assert_eq!(breaker.__deadline_workers_held(), 0, "the slot came back");
    assert_eq!(
        breaker_runtime::__deadline_worker_threads(),
        threads_before,
        "the thread that never started is not counted"
    );

    breaker_runtime::__fail_deadline_worker_starts(1);
    let options = CallOptions::new().fallback(|reason: &FallbackReason| {
        assert_eq!(*reason, FallbackReason::WorkerUnavailable);
        assert!(reason.is_rejection());
        Some(Ok(0))
    });
    let served = breaker.call_with_deadline(&options, || -> Result<u32, String> {
        unreachable!("no worker started")
    });
    assert_eq!(served, Ok(0));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.rejected_calls, 2);
    assert_eq!(metrics.cancelled_calls, 0);
    assert_eq!(metrics.fallback_calls, 1);
    assert_eq!(metrics.fallback_failures, 0);

    // The attribute's fallback answers too: no panic.
    breaker_runtime::__fail_deadline_worker_starts(1);
    assert_eq!(spawn_protected(3), "fallback-3");
    assert_eq!(spawn_protected(4), "live-4");
}

#[test]
fn max_deadline_workers_and_the_pool_limit_are_validated() {
    let err = CircuitBreakerConfig::builder()
        .max_deadline_workers(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`max_deadline_workers` is 0, but it must be at least 1"
    );
    assert_eq!(CircuitBreakerConfig::default().max_deadline_workers, 32);
    assert!(matches!(
        breaker_runtime::set_deadline_worker_limit(0),
        Err(ConfigError::OutOfRange {
            field: "deadline_worker_limit",
            ..
        })
    ));
    assert_eq!(breaker_runtime::DEFAULT_DEADLINE_WORKER_LIMIT, 256);
}

fn unbounded_breaker(name: &str) -> CircuitBreaker {
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(Duration::MAX)
        .build()
        .expect("Duration::MAX is a valid timeout");
    CircuitBreaker::new(name, config).expect("valid configuration")
}

#[test]
fn a_timeout_of_duration_max_means_no_deadline() {
    let _pool = pool_lock();
    let breaker = unbounded_breaker("harden-duration-max");
    let hard = breaker.call_with_deadline(&CallOptions::new(), || {
        thread::sleep(Duration::from_millis(30));
        Ok::<_, String>(5)
    });
    assert_eq!(hard, Ok(5));
    assert_eq!(breaker.call(|| Ok::<_, String>(6)), Ok(6));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.successful_calls, 2);
    assert_eq!(metrics.timeouts, 0);
}

#[tokio::test]
async fn an_async_timeout_of_duration_max_means_no_deadline() {
    let breaker = unbounded_breaker("harden-duration-max-async");
    let result = breaker
        .call_async(async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, String>(5)
        })
        .await;
    assert_eq!(result, Ok(5));
    assert_eq!(breaker.get_metrics().timeouts, 0);
}

#[test]
fn a_late_but_good_result_is_kept_counted_as_a_timeout_and_cached() {
    let clock = ManualClock::new();
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(Duration::from_secs(1))
        .build()
        .expect("valid configuration");
    let breaker = CircuitBreaker::builder("harden-late-good")
        .config(config)
        .clock(clock.clone())
        .build()
        .expect("valid configuration");
    let cache = CachedFallback::<u32, String>::new();
    cache.add_to_cache(7, "stale".to_owned());
    let options = CallOptions::new().fallback_for(&cache, &7);

    let answer = breaker.call_with(&options, || {
        clock.advance(Duration::from_secs(2));
        Ok::<_, String>("fresh".to_owned())
    });
    assert_eq!(answer, Ok("fresh".to_owned()), "the fresh result is kept");
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.timeout, 1);
    assert_eq!(metrics.successful_calls, 0);
    assert_eq!(metrics.fallback_calls, 0);
    assert_eq!(cache.get(&7), Some("fresh".to_owned()), "the cache is fed");

    // A late error is still answered by the fallback.
    let answer = breaker.call_with(&options, || {
        clock.advance(Duration::from_secs(2));
        Err::<String, _>("down".to_owned())
    });
    assert_eq!(answer, Ok("fresh".to_owned()));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.timeout, 2);
    assert_eq!(metrics.fallback_calls, 1);
}

fn short_deadline_breaker(name: &str) -> CircuitBreaker {
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(Duration::from_millis(5))
        .failure_threshold(1_000_000)
        .build()
        .expect("valid configuration");
    CircuitBreaker::new(name, config).expect("valid configuration")
}

/// Runs `calls` calls of `work` through `call`, timing each from outside;
/// how many took longer than `limit` by that outer measure.
fn count_slow(calls: usize, limit: Duration, mut call: impl FnMut()) -> u64 {
    let mut slow = 0;
    for _ in 0..calls {
        let started = Instant::now();
        call();
        if started.elapsed() > limit {
            slow += 1;
        }
    }
    slow
}

#[test]
fn short_calls_are_never_counted_late_under_a_short_deadline() {
    let breaker = short_deadline_breaker("harden-coarse-short");
    let slow = count_slow(300, Duration::from_millis(5), || {
        let result = breaker.call(|| {
            thread::sleep(Duration::from_millis(1));
            Ok::<_, String>(())
        });
        assert_eq!(result, Ok(()));
    });
    let timeouts = breaker.get_metrics().timeouts;
    eprintln!("300 calls of 1 ms under 5 ms: {timeouts} counted late, {slow} really over 5 ms");
    // A call counted late really took longer than the deadline, and the
    // outer measure (which contains the breaker's) saw it too.
    assert!(
        timeouts <= slow,
        "{timeouts} calls counted late, but only {slow} took over 5 ms"
    );
}

#[test]
fn calls_well_past_a_short_deadline_are_all_counted() {
    let breaker = short_deadline_breaker("harden-coarse-long");
    for _ in 0..20 {
        let result = breaker.call(|| {
            thread::sleep(Duration::from_millis(30));
            Ok::<_, String>(())
        });
        assert_eq!(result, Ok(()), "a late good result is kept");
    }
    assert_eq!(breaker.get_metrics().timeouts, 20);
}

/// Drives `fut` to completion on this thread with no runtime, so an async
/// call's deadline is unenforced and only measured.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}

/// Sleeps `time` (blocking), after returning `Pending` once.
async fn blocking_after_a_wait(time: Duration) {
    let mut waited = false;
    std::future::poll_fn(|cx| {
        if waited {
            return std::task::Poll::Ready(());
        }
        waited = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
    thread::sleep(time);
}

#[test]
fn short_async_calls_without_a_runtime_are_never_counted_late() {
    let breaker = short_deadline_breaker("harden-coarse-async");
    let slow = count_slow(300, Duration::from_millis(5), || {
        let result = block_on(breaker.call_async(async {
            blocking_after_a_wait(Duration::from_millis(1)).await;
            Ok::<_, String>(())
        }));
        assert_eq!(result, Ok(()));
    });
    let timeouts = breaker.get_metrics().timeouts;
    eprintln!(
        "300 async calls of 1 ms under 5 ms: {timeouts} counted late, {slow} really over 5 ms"
    );
    assert!(timeouts <= slow, "{timeouts} counted late, {slow} slow");

    for _ in 0..5 {
        let result = block_on(breaker.call_async(async {
            blocking_after_a_wait(Duration::from_millis(30)).await;
            Ok::<_, String>(())
        }));
        assert_eq!(result, Ok(()));
    }
    assert_eq!(breaker.get_metrics().timeouts, timeouts + 5);
}

/// The first poll's real time is taken off the deadline exactly for a
/// short timeout: a call whose first poll blocks 25 ms and which then waits
/// 27 ms (tokio time) has used up a 50 ms deadline before its wait ends.
/// Time is paused, so the wait takes no real time and only the first poll's
/// real 25 ms can bring the deadline forward.
#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn a_long_first_poll_is_taken_off_a_short_async_deadline() {
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(Duration::from_millis(50))
        .build()
        .expect("valid configuration");
    let breaker = CircuitBreaker::new("harden-first-poll", config).expect("valid configuration");
    let result = breaker
        .call_async(async {
            thread::sleep(Duration::from_millis(25));
            tokio::time::sleep(Duration::from_millis(27)).await;
            Ok::<_, String>(())
        })
        .await;
    assert!(
        matches!(
            result.as_ref().map_err(CallError::breaker_error),
            Err(Some(BreakerError::Timeout { .. }))
        ),
        "expected a timeout, got {result:?}"
    );
}

/// Panics when dropped: a late result the worker must still count.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a late result that panics when dropped");
    }
}

#[test]
fn a_late_result_whose_drop_panics_is_counted_and_keeps_its_worker() {
    let _pool = pool_lock();
    let breaker = hanging_breaker("harden-late-drop-panics", 4);
    let gate = Arc::new(Gate::default());
    let hung = Arc::clone(&gate);
    let result = breaker.call_with_deadline(&CallOptions::new(), move || {
        hung.wait();
        Ok::<_, String>(PanicsOnDrop)
    });
    assert!(matches!(
        result.map(std::mem::forget).unwrap_err().breaker_error(),
        Some(BreakerError::Timeout { .. })
    ));
    let threads = breaker_runtime::__deadline_worker_threads();
    gate.open();
    eventually("the late result is counted", || {
        breaker.get_metrics().late_results == 1
    });
    // The worker lives on, and waits for the next call.
    eventually("every worker is idle again", || {
        breaker_runtime::__deadline_workers_idle() == threads
    });
    assert_eq!(breaker_runtime::__deadline_worker_threads(), threads);
    assert_eq!(breaker.__deadline_workers_held(), 0);
    assert_eq!(
        breaker.call_with_deadline(&CallOptions::new(), || Ok::<_, String>(1)),
        Ok(1)
    );
}
