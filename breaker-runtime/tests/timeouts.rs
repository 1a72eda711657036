//! Deadlines: a hanging call releases its caller at `timeout_duration`.
//!
//! These tests run on the system clock and measure wall time, so their
//! upper bounds are generous (the timeout plus [`SLACK`]): they prove the
//! caller is released near the deadline, not how precisely on a busy
//! machine. Each prints the time it measured.

#[cfg(feature = "tokio")]
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use breaker_runtime::{
    BreakerError, CallError, CallOptions, CircuitBreaker, CircuitBreakerConfig, ManualClock,
    Metrics,
};

const TIMEOUT: Duration = Duration::from_millis(100);
/// Room for a loaded two-core machine to schedule the caller again.
const SLACK: Duration = Duration::from_millis(250);

fn breaker(name: &str) -> CircuitBreaker {
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(TIMEOUT)
        .build()
        .expect("valid configuration");
    CircuitBreaker::new(name, config).expect("valid configuration")
}

/// Asserts the caller waited for the deadline, and not much longer.
fn assert_released_at_deadline(what: &str, elapsed: Duration) {
    eprintln!("{what}: released after {elapsed:?} (timeout {TIMEOUT:?})");
    assert!(
        elapsed >= TIMEOUT,
        "{what}: released early, after {elapsed:?}"
    );
    assert!(
        elapsed < TIMEOUT + SLACK,
        "{what}: released after {elapsed:?}, past the deadline {TIMEOUT:?} plus {SLACK:?}"
    );
}

fn assert_timed_out<T: std::fmt::Debug, E: std::fmt::Debug>(
    breaker: &CircuitBreaker,
    result: Result<T, CallError<E>>,
) {
    match result.as_ref().map_err(CallError::breaker_error) {
        Err(Some(BreakerError::Timeout { name, after })) => {
            assert_eq!(name, breaker.name());
            assert_eq!(*after, TIMEOUT);
        }
        _ => panic!("expected a timeout, got {result:?}"),
    }
}

fn assert_one_timeout(metrics: &Metrics) {
    assert_eq!(metrics.timeouts, 1);
    assert_eq!(metrics.failures_by_type.timeout, 1);
    assert_eq!(metrics.failed_calls, 1);
    assert_eq!(metrics.successful_calls, 0);
    assert_eq!(metrics.total_calls, 1);
}

/// Sets its flag when dropped, to see a future cancelled.
#[cfg(feature = "tokio")]
struct DropFlag(Arc<AtomicBool>);

#[cfg(feature = "tokio")]
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn a_pending_async_call_is_cancelled_at_its_deadline() {
    let breaker = breaker("timeouts-async-pending");
    let start = Instant::now();
    let result = breaker
        .call_async(std::future::pending::<Result<u32, String>>())
        .await;
    assert_released_at_deadline("pending future", start.elapsed());
    assert_timed_out(&breaker, result);
    assert_one_timeout(&breaker.get_metrics());
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn a_sleeping_async_call_is_dropped_at_its_deadline() {
    let breaker = breaker("timeouts-async-sleep");
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(Arc::clone(&dropped));
    let start = Instant::now();
    let result = breaker
        .call_async(async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<u32, String>(1)
        })
        .await;
    assert_released_at_deadline("10 s sleep", start.elapsed());
    assert_timed_out(&breaker, result);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the future was dropped, not left running"
    );
    assert_one_timeout(&breaker.get_metrics());
}

/// The timer is armed only once a call first waits, but its deadline still
/// runs from the start of the call: a first poll that blocks past the
/// deadline is cut off as soon as the call waits. On tokio's paused clock,
/// the timer then fires without the clock moving; a deadline armed from the
/// moment of waiting would need the whole timeout to pass first.
#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn a_first_poll_that_blocks_past_the_deadline_times_out_once_the_call_waits() {
    let breaker = breaker("timeouts-async-first-poll");
    let paused_start = tokio::time::Instant::now();
    let mut first_poll = true;
    let blocking_then_pending = std::future::poll_fn(|_| {
        if std::mem::take(&mut first_poll) {
            // Real time: the paused clock does not see it.
            thread::sleep(TIMEOUT * 3);
        }
        std::task::Poll::<Result<u32, String>>::Pending
    });
    let result = breaker.call_async(blocking_then_pending).await;
    assert_timed_out(&breaker, result);
    assert_one_timeout(&breaker.get_metrics());
    let waited = paused_start.elapsed();
    assert!(
        waited < TIMEOUT,
        "the deadline ran from when the call first waited: the paused clock moved {waited:?}"
    );
}

#[test]
fn a_hanging_sync_call_releases_its_caller_at_a_hard_deadline() {
    let breaker = breaker("timeouts-deadline-hang");
    let start = Instant::now();
    let result = breaker.call_with_deadline(&CallOptions::new(), || {
        // Left to finish on its worker; the process exits without it.
        thread::sleep(Duration::from_secs(10));
        Ok::<u32, String>(1)
    });
    assert_released_at_deadline("10 s sync body", start.elapsed());
    assert_timed_out(&breaker, result);
    let metrics = breaker.get_metrics();
    assert_one_timeout(&metrics);
    assert_eq!(metrics.late_results, 0, "the body is still running");
}

#[test]
fn a_late_result_of_a_hard_deadline_call_is_counted() {
    let breaker = breaker("timeouts-deadline-late");
    let start = Instant::now();
    let result = breaker.call_with_deadline(&CallOptions::new(), || {
        thread::sleep(TIMEOUT * 2);
        Ok::<u32, String>(1)
    });
    assert_released_at_deadline("200 ms sync body", start.elapsed());
    assert_timed_out(&breaker, result);
    assert_one_timeout(&breaker.get_metrics());

    let give_up = Instant::now() + Duration::from_secs(5);
    let mut metrics = breaker.get_metrics();
    while metrics.late_results == 0 && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(10));
        metrics = breaker.get_metrics();
    }
    eprintln!(
        "late result counted {:?} after the call began",
        start.elapsed()
    );
    assert_eq!(metrics.late_results, 1, "the discarded result is counted");
    // Discarded, not counted again as a call.
    assert_one_timeout(&metrics);
}

#[test]
fn a_hard_deadline_call_that_finishes_in_time_returns_its_result() {
    let breaker = breaker("timeouts-deadline-on-time");
    let result = breaker.call_with_deadline(&CallOptions::new(), || Ok::<u32, String>(7));
    assert_eq!(result, Ok(7));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.successful_calls, 1);
    assert_eq!(metrics.timeouts, 0);
}

/// Hard-deadline calls run on pooled workers: sequential calls reuse a few
/// threads instead of starting one each, and a worker left behind by a
/// hanging call does not stop the next call from running.
#[test]
fn hard_deadline_calls_reuse_their_worker_threads() {
    const CALLS: usize = 50;
    let breaker = breaker("timeouts-deadline-pool");
    let caller = thread::current().id();
    let mut workers = std::collections::HashSet::new();
    for _ in 0..CALLS {
        let worker = breaker
            .call_with_deadline(&CallOptions::new(), || {
                Ok::<_, String>(thread::current().id())
            })
            .expect("on time");
        assert_ne!(worker, caller, "the body ran on a worker");
        workers.insert(worker);
    }
    eprintln!("{CALLS} calls ran on {} worker threads", workers.len());
    assert!(
        workers.len() <= 8,
        "{CALLS} sequential calls started {} threads",
        workers.len()
    );

    let hung = breaker.call_with_deadline(&CallOptions::new(), || {
        thread::sleep(TIMEOUT * 3);
        Ok::<_, String>(thread::current().id())
    });
    assert_timed_out(&breaker, hung);
    let next = breaker.call_with_deadline(&CallOptions::new(), || {
        Ok::<_, String>(thread::current().id())
    });
    assert!(
        next.is_ok(),
        "a hung worker does not block the pool: {next:?}"
    );
}

/// A sync call cannot be interrupted: one that overruns returns its result
/// and counts as a timeout failure. Driven by a manual clock, no sleeping.
#[test]
fn a_slow_sync_call_returns_its_result_and_counts_as_a_timeout() {
    let clock = ManualClock::new();
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(Duration::from_secs(1))
        .build()
        .expect("valid configuration");
    let breaker = CircuitBreaker::builder("timeouts-soft")
        .config(config)
        .clock(clock.clone())
        .build()
        .expect("valid configuration");

    let on_time = breaker.call(|| {
        clock.advance(Duration::from_secs(1));
        Ok::<u32, String>(1)
    });
    assert_eq!(on_time, Ok(1), "exactly the timeout is still on time");
    assert_eq!(breaker.get_metrics().timeouts, 0);

    let late = breaker.call(|| {
        clock.advance(Duration::from_secs(1) + Duration::from_nanos(1));
        Ok::<u32, String>(2)
    });
    assert_eq!(late, Ok(2), "the late result still reaches the caller");
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.timeouts, 1);
    assert_eq!(metrics.failures_by_type.timeout, 1);
    assert_eq!(metrics.successful_calls, 1);
    assert_eq!(metrics.consecutive_failures, 1);

    let late_error = breaker.call(|| {
        clock.advance(Duration::from_secs(2));
        Err::<u32, _>("slow and failed".to_owned())
    });
    assert_eq!(
        late_error,
        Err(CallError::Inner("slow and failed".to_owned())),
        "the call's own error still reaches the caller"
    );
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.timeouts, 2, "lateness wins over the error type");
    assert_eq!(metrics.failures_by_type.error, 0);
}

/// As with `tokio::time::timeout`, a deadline needs the runtime's timer: a
/// call that has to wait inside a runtime built without `enable_time` panics
/// with tokio's own message, which says what to do.
#[cfg(feature = "tokio")]
#[test]
#[should_panic(expected = "timers are disabled")]
fn a_waiting_call_in_a_runtime_without_timers_panics_as_tokio_timeout_does() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let breaker = breaker("timeouts-no-timer");
    let _ = runtime.block_on(breaker.call_async(async {
        tokio::task::yield_now().await;
        Ok::<u32, String>(3)
    }));
}
