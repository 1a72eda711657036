//! Behaviour of `call.rs` and `deadline.rs` that mutation testing found
//! unchecked: where exactly a call becomes late on each timing path, the
//! async fallback, and the async deadline without tokio. All on a manual
//! clock: a call "takes" exactly the time the test advances the clock by.

mod common;

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use breaker_runtime::{
    AsyncFallback, BreakerError, CallError, CallOptions, CircuitBreaker, CircuitBreakerConfig,
    CircuitState, EventKind, FallbackReason, ManualClock, Outcome, subscribe,
};

const NANO: Duration = Duration::from_nanos(1);
/// Under one second: timed on the precise clock.
const SHORT: Duration = Duration::from_millis(50);
/// One second or more: timed on the coarse clock (exact when injected).
const LONG: Duration = Duration::from_secs(2);

fn breaker(name: &str, timeout: Duration) -> (CircuitBreaker, ManualClock) {
    let config = CircuitBreakerConfig::builder()
        .timeout_duration(timeout)
        .build()
        .expect("valid configuration");
    common::manual_breaker(name, config)
}

/// Runs one sync call that takes `took`, as the breaker's `warm_up + 1`-th
/// call (the first call of a thread is the timed sample, the next 63 are
/// not), and tells whether it counted as a timeout. Its result is returned
/// either way.
fn sync_call_is_late(timeout: Duration, warm_up: u32, took: Duration) -> bool {
    let (breaker, clock) = breaker("mutants-sync-late", timeout);
    for _ in 0..warm_up {
        breaker
            .call(|| Ok::<_, ()>(0))
            .expect("an instant call succeeds");
    }
    let result = breaker.call(|| {
        clock.advance(took);
        Ok::<_, ()>(7)
    });
    assert_eq!(result, Ok(7), "a late result is still returned");
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.total_calls, u64::from(warm_up) + 1);
    match metrics.timeouts {
        0 => {
            assert_eq!(metrics.successful_calls, u64::from(warm_up) + 1);
            false
        }
        1 => {
            assert_eq!(metrics.failures_by_type.timeout, 1);
            assert_eq!(metrics.successful_calls, u64::from(warm_up));
            true
        }
        n => panic!("{n} timeouts for one call"),
    }
}

/// Each timing path (the sampled call, a short timeout on the precise
/// clock, a long one on the coarse clock) counts a call as late only when
/// it took strictly longer than `timeout_duration`.
#[test]
fn a_sync_call_is_late_only_past_its_timeout_on_every_timing_path() {
    for (path, timeout, warm_up) in [
        ("sampled, short", SHORT, 0),
        ("sampled, long", LONG, 0),
        ("precise", SHORT, 1),
        ("coarse", LONG, 1),
    ] {
        assert!(
            !sync_call_is_late(timeout, warm_up, Duration::ZERO),
            "{path}: an instant call is on time"
        );
        assert!(
            !sync_call_is_late(timeout, warm_up, timeout - NANO),
            "{path}: a call just under its timeout is on time"
        );
        assert!(
            !sync_call_is_late(timeout, warm_up, timeout),
            "{path}: a call of exactly its timeout is on time"
        );
        assert!(
            sync_call_is_late(timeout, warm_up, timeout + NANO),
            "{path}: a call one nanosecond past its timeout is late"
        );
        assert!(
            sync_call_is_late(timeout, warm_up, timeout * 3),
            "{path}: a call well past its timeout is late"
        );
    }
}

/// Drives `fut` to completion on this thread with no runtime: an async
/// call's deadline is then unenforced and only measured.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Waits once (returns `Pending`, waking itself), then advances `clock`
/// by `took`: a call that has to wait, and takes `took`.
async fn wait_then_take(clock: &ManualClock, took: Duration) -> Result<u32, ()> {
    let mut waited = false;
    std::future::poll_fn(|cx| {
        if waited {
            return Poll::Ready(());
        }
        waited = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    clock.advance(took);
    Ok(7)
}

/// Runs one async call with no runtime that waits once and takes `took`,
/// as the breaker's `warm_up + 1`-th call; whether it counted as a timeout.
fn async_call_is_late(timeout: Duration, warm_up: u32, took: Duration) -> bool {
    let (breaker, clock) = breaker("mutants-async-late", timeout);
    for _ in 0..warm_up {
        let instant = block_on(breaker.call_async(wait_then_take(&clock, Duration::ZERO)));
        assert_eq!(instant, Ok(7));
    }
    let result = block_on(breaker.call_async(wait_then_take(&clock, took)));
    assert_eq!(result, Ok(7), "an unenforced deadline returns the result");
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.total_calls, u64::from(warm_up) + 1);
    metrics.timeouts == 1
}

/// Outside a runtime, an async call that had to wait is measured on the
/// breaker's clock, by the same rule as a sync one, on both clocks.
#[test]
fn an_unenforced_async_call_is_late_only_past_its_timeout() {
    for (path, timeout, warm_up) in [
        ("sampled, short", SHORT, 0),
        ("precise", SHORT, 1),
        ("coarse", LONG, 1),
    ] {
        assert!(
            !async_call_is_late(timeout, warm_up, Duration::ZERO),
            "{path}: an instant call is on time"
        );
        assert!(
            !async_call_is_late(timeout, warm_up, timeout),
            "{path}: a call of exactly its timeout is on time"
        );
        assert!(
            async_call_is_late(timeout, warm_up, timeout + NANO),
            "{path}: a call one nanosecond past its timeout is late"
        );
    }
}

/// The sampled async call feeds the average response time with its own
/// duration, measured on the breaker's clock.
#[test]
fn a_sampled_async_call_feeds_the_average_response_time() {
    let (breaker, clock) = breaker("mutants-async-average", LONG);
    let result = block_on(breaker.call_async(wait_then_take(&clock, Duration::from_millis(3))));
    assert_eq!(result, Ok(7));
    assert_eq!(
        breaker.get_metrics().average_response_time,
        Duration::from_millis(3)
    );
}

/// Built without tokio, an async call has no timer at all: even a call
/// that finishes in its first poll is measured, and counted late when it
/// took longer than its timeout.
#[cfg(not(feature = "tokio"))]
#[test]
fn without_tokio_every_async_call_is_measured() {
    for timeout in [SHORT, LONG] {
        let (breaker, clock) = breaker("mutants-no-tokio", timeout);
        let on_time = block_on(breaker.call_async(async {
            clock.advance(timeout);
            Ok::<_, ()>(1)
        }));
        assert_eq!(on_time, Ok(1));
        assert_eq!(breaker.get_metrics().timeouts, 0, "{timeout:?}: on time");
        let late = block_on(breaker.call_async(async {
            clock.advance(timeout + NANO);
            Ok::<_, ()>(2)
        }));
        assert_eq!(late, Ok(2), "{timeout:?}: the late result is returned");
        let metrics = breaker.get_metrics();
        assert_eq!(metrics.timeouts, 1, "{timeout:?}: one late call");
        assert_eq!(metrics.successful_calls, 1);
    }
}

/// An [`AsyncFallback`] serves the future it makes when the call is
/// refused, and sees why; one that has nothing lets the error through.
#[test]
fn an_async_fallback_serves_a_refused_call() {
    let (breaker, _clock) = breaker("mutants-async-fallback", LONG);
    breaker.force_open();
    let options = CallOptions::new().fallback(AsyncFallback(|reason: &FallbackReason| {
        let forced = matches!(reason, FallbackReason::ForcedOpen);
        Some(async move { if forced { Ok(42) } else { Err("wrong reason") } })
    }));
    let served = block_on(breaker.call_async_with(&options, async { Ok::<u32, &str>(1) }));
    assert_eq!(served, Ok(42), "the fallback's future answers");
    assert_eq!(breaker.get_metrics().fallback_calls, 1);

    let nothing = CallOptions::new().fallback(AsyncFallback(|_: &FallbackReason| {
        None::<std::future::Ready<Result<u32, &str>>>
    }));
    let refused = block_on(breaker.call_async_with(&nothing, async { Ok::<u32, &str>(1) }));
    assert!(
        matches!(
            refused.as_ref().map_err(|e| e.breaker_error()),
            Err(Some(BreakerError::ForcedOpen { .. }))
        ),
        "no fallback: the breaker's error, got {refused:?}"
    );
}

/// A late call's own outcome gives way to the timeout: a late error counts
/// as a timeout, not as an error, and the caller still gets the error; an
/// ignored one stays ignored. Each late call is reported by one `Timeout`
/// event.
#[test]
fn a_late_call_counts_as_a_timeout_unless_ignored_and_is_reported() {
    let name = "mutants-late-outcome";
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let subscription = subscribe(move |event| {
        if event.breaker == name {
            sink.lock().unwrap().push(event.kind.clone());
        }
    });
    let (breaker, clock) = breaker(name, SHORT);
    let late_error = breaker.call(|| {
        clock.advance(SHORT + NANO);
        Err::<u32, _>("boom")
    });
    assert_eq!(late_error, Err(CallError::Inner("boom")));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.failures_by_type.timeout, 1);
    assert_eq!(metrics.failures_by_type.error, 0);
    assert_eq!(
        *events.lock().unwrap(),
        [EventKind::Timeout { after: SHORT }],
        "one timeout event"
    );

    let ignore = CallOptions::new().classify(|_: &Result<u32, &str>| Outcome::Ignored);
    let late_ignored = breaker.call_with(&ignore, || {
        clock.advance(SHORT + NANO);
        Err::<u32, _>("not ours")
    });
    assert_eq!(late_ignored, Err(CallError::Inner("not ours")));
    let metrics = breaker.get_metrics();
    assert_eq!(metrics.ignored_calls, 1);
    assert_eq!(metrics.failures_by_type.timeout, 1, "still one timeout");
    assert_eq!(metrics.failed_calls, 1);

    let ignore_ok = CallOptions::new().classify(|_: &Result<u32, &str>| Outcome::Ignored);
    let late_ignored_ok = breaker.call_with(&ignore_ok, || {
        clock.advance(SHORT + NANO);
        Ok::<u32, &str>(5)
    });
    assert_eq!(late_ignored_ok, Ok(5));
    let metrics = breaker.get_metrics();
    assert_eq!(
        metrics.ignored_calls, 2,
        "a late ignored result stays ignored"
    );
    assert_eq!(metrics.failures_by_type.timeout, 1, "still one timeout");

    // A late result that scored low is neither returned nor fed to the
    // fallback: with no fallback, the caller gets the breaker's error.
    let judged = CallOptions::new().quality(|_: &u32| 0.0);
    let late_low = breaker.call_with(&judged, || {
        clock.advance(SHORT + NANO);
        Ok::<u32, &str>(6)
    });
    assert!(
        matches!(late_low, Err(CallError::Breaker(_))),
        "a late low-quality result is not returned: {late_low:?}"
    );
    assert_eq!(breaker.get_metrics().failures_by_type.timeout, 2);

    let late_success = breaker.call(|| {
        clock.advance(SHORT + NANO);
        Ok::<u32, &str>(3)
    });
    assert_eq!(late_success, Ok(3));
    assert_eq!(breaker.get_metrics().failures_by_type.timeout, 3);
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|kind| matches!(kind, EventKind::Timeout { .. }))
            .count(),
        3,
        "a late low-quality result and a late success are reported too"
    );
    subscription.unsubscribe();
}

/// A breaker with a timeout under one second times its calls on the real
/// clock: a call a few milliseconds past its deadline is late, though the
/// coarse clock (10 ms ticks, read with two ticks of lag) could not tell.
/// Real time, with a margin: each call sleeps a few milliseconds longer
/// than its timeout, and only its exceeding the timeout is asserted.
#[test]
fn a_short_deadline_is_judged_on_the_real_clock() {
    for (timeout_ms, sleep_ms) in [(1, 3), (20, 25)] {
        let config = CircuitBreakerConfig::builder()
            .timeout_duration(Duration::from_millis(timeout_ms))
            .build()
            .expect("valid configuration");
        let breaker = CircuitBreaker::new("mutants-short-real", config).expect("valid");
        // The first call is the timed sample, which always reads the real
        // clock: the calls after it take the breaker's own path.
        breaker.call(|| Ok::<_, ()>(())).expect("succeeds");
        for _ in 0..3 {
            let result = breaker.call(|| {
                std::thread::sleep(Duration::from_millis(sleep_ms));
                Ok::<_, ()>(())
            });
            assert_eq!(result, Ok(()));
        }
        assert_eq!(
            breaker.get_metrics().timeouts,
            3,
            "each {sleep_ms} ms sync call is late for {timeout_ms} ms"
        );

        // The same for an async call outside a runtime, which is measured.
        let sleepy = || async move {
            let mut waited = false;
            std::future::poll_fn(|cx| {
                if waited {
                    return Poll::Ready(());
                }
                waited = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await;
            std::thread::sleep(Duration::from_millis(sleep_ms));
            Ok::<_, ()>(())
        };
        assert_eq!(block_on(breaker.call_async(sleepy())), Ok(()));
        assert_eq!(
            breaker.get_metrics().timeouts,
            4,
            "a {sleep_ms} ms async call is late for {timeout_ms} ms"
        );
    }
}

/// An async call's error, and a hard-deadline call's, are failures: each
/// counts as one and opens a circuit whose failure threshold is one, and
/// the caller gets the error as it was. (Both are judged by the code that
/// the sync path does not use.)
#[test]
fn async_and_hard_deadline_errors_count_as_failures() {
    for hard in [false, true] {
        let name = if hard {
            "mutants-hard-error"
        } else {
            "mutants-async-error"
        };
        let config = CircuitBreakerConfig::builder()
            .timeout_duration(LONG)
            .failure_threshold(1)
            .build()
            .expect("valid configuration");
        let (breaker, _clock) = common::manual_breaker(name, config);
        let result = if hard {
            breaker.call_with_deadline(&CallOptions::new(), || Err::<u32, _>("down"))
        } else {
            block_on(breaker.call_async(async { Err::<u32, _>("down") }))
        };
        assert_eq!(result, Err(CallError::Inner("down")), "{name}");
        let metrics = breaker.get_metrics();
        assert_eq!(
            (metrics.failed_calls, metrics.successful_calls),
            (1, 0),
            "{name}: the error counts as a failure"
        );
        assert_eq!(metrics.failures_by_type.error, 1, "{name}");
        assert_eq!(breaker.state(), CircuitState::Open, "{name}");
    }
}
