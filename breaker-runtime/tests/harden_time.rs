//! Hardening of the parts around a call: listeners that panic, and the
//! average response time of breakers that share a thread.
//!
//! A scenario that could abort the process runs in a child: the test runs
//! this binary again, selecting the scenario with [`SCENARIO`], and checks
//! how the child exited.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::manual_breaker;

use breaker_runtime::{CircuitBreaker, CircuitBreakerConfig, CircuitState, EventKind, subscribe};

/// The environment variable that makes a test run its scenario in place
/// rather than in a child.
const SCENARIO: &str = "BREAKER_HARDEN_SCENARIO";

/// Runs the test `name` of this binary in a child process with [`SCENARIO`]
/// set, and returns its exit status and output.
fn run_in_child(name: &str) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, name)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the test binary runs again");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

/// Whether this process is the child running `name`.
fn in_child(name: &str) -> bool {
    std::env::var(SCENARIO).is_ok_and(|scenario| scenario == name)
}

#[cfg(unix)]
fn signal_of(status: std::process::ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

#[cfg(not(unix))]
fn signal_of(_status: std::process::ExitStatus) -> Option<i32> {
    None
}

/// A protected call panics; its permit, dropped while the thread unwinds,
/// opens the circuit, and the transition's listener panics too. That
/// second panic must be caught: a panic escaping a destructor during
/// unwinding aborts the process.
#[test]
fn a_listener_panicking_while_a_call_unwinds_does_not_abort() {
    const NAME: &str = "a_listener_panicking_while_a_call_unwinds_does_not_abort";
    if in_child(NAME) {
        let _subscription = subscribe(|event| {
            if event.breaker == "harden-unwinding" {
                panic!("the listener panicked on {:?}", event.kind);
            }
        });
        let config = CircuitBreakerConfig::builder()
            .failure_threshold(1)
            .build()
            .expect("valid configuration");
        let (breaker, _clock) = manual_breaker("harden-unwinding", config);
        let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            breaker.call(|| -> Result<(), &str> { panic!("the protected call panicked") })
        }));
        let payload = call.expect_err("the call's own panic reaches the caller");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the protected call panicked"),
            "the caller sees the call's panic, not the listener's"
        );
        assert_eq!(breaker.state(), CircuitState::Open);
        return;
    }
    let (status, output) = run_in_child(NAME);
    assert_eq!(
        signal_of(status),
        None,
        "the child was killed by a signal (6 is SIGABRT):\n{output}"
    );
    assert!(status.success(), "the child failed: {status}\n{output}");
    assert!(
        output.contains("1 passed"),
        "the child ran the scenario:\n{output}"
    );
}

/// One listener panics on every event; the one subscribed after it still
/// hears every event, and the calls that caused them carry on.
#[test]
fn a_panicking_listener_does_not_skip_the_others() {
    const NAME: &str = "harden-skip";
    let panicked = Arc::new(AtomicU64::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let first = {
        let panicked = Arc::clone(&panicked);
        subscribe(move |event| {
            if event.breaker == NAME {
                panicked.fetch_add(1, Ordering::Relaxed);
                panic!("listener 1 always panics");
            }
        })
    };
    let second = {
        let heard = Arc::clone(&heard);
        subscribe(move |event| {
            if event.breaker == NAME && matches!(event.kind, EventKind::Transition { .. }) {
                heard.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .recovery_timeout(Duration::from_secs(1))
        .build()
        .expect("valid configuration");
    let (breaker, clock) = manual_breaker(NAME, config);
    for round in 1..=3 {
        // Closed -> Open, then Open -> HalfOpen -> Closed.
        let _ = breaker.call(|| Err::<(), _>("down"));
        assert_eq!(breaker.state(), CircuitState::Open, "round {round}");
        clock.advance(Duration::from_secs(1));
        breaker
            .call(|| Ok::<_, &str>(()))
            .expect("the probe's result reaches the caller despite listener 1");
        assert_eq!(breaker.state(), CircuitState::Closed, "round {round}");
    }
    first.unsubscribe();
    second.unsubscribe();
    let transitions = breaker.get_metrics().transitions;
    assert_eq!(transitions, 9);
    assert_eq!(heard.load(Ordering::Relaxed), transitions);
    assert!(panicked.load(Ordering::Relaxed) >= transitions);
}

/// Busy work for about `duration`: a spin, so the call's time is its own.
fn spin(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// Calls `a` and `b` in turn, `calls` times each, with calls to `b` twice
/// as long; the mean time each breaker's calls took, measured around them.
fn alternate(a: &CircuitBreaker, b: &CircuitBreaker, calls: u32) -> (Duration, Duration) {
    let (mut spent_a, mut spent_b) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..calls {
        for (breaker, work, spent) in [
            (a, Duration::from_micros(200), &mut spent_a),
            (b, Duration::from_micros(400), &mut spent_b),
        ] {
            let start = Instant::now();
            breaker
                .call(|| {
                    spin(work);
                    Ok::<_, &str>(())
                })
                .expect("a closed circuit runs the call");
            *spent += start.elapsed();
        }
    }
    (spent_a / calls, spent_b / calls)
}

/// A thread alternating between two breakers samples both: a tick shared
/// by every breaker of the thread gave `b` no sample at all (0 ns).
#[test]
fn alternating_breakers_each_report_a_true_average_response_time() {
    // A sampled call that the scheduler preempts weighs 1/32 of its
    // breaker's average: calls of a few hundred microseconds keep a
    // preemption of a few milliseconds from doubling it, and a busy machine
    // gets three attempts. A missing sample fails at once.
    let mut misses = Vec::new();
    for attempt in 0..3 {
        let a = CircuitBreaker::new(
            format!("harden-alternate-a-{attempt}"),
            CircuitBreakerConfig::default(),
        )
        .expect("valid configuration");
        let b = CircuitBreaker::new(
            format!("harden-alternate-b-{attempt}"),
            CircuitBreakerConfig::default(),
        )
        .expect("valid configuration");
        let (truth_a, truth_b) = alternate(&a, &b, 2000);
        let mut within = true;
        for (breaker, truth) in [(&a, truth_a), (&b, truth_b)] {
            let average = breaker.get_metrics().average_response_time;
            assert!(
                !average.is_zero(),
                "{} was never sampled (true average {truth:?})",
                breaker.name()
            );
            if average < truth / 2 || average > truth * 2 {
                within = false;
                misses.push(format!("{}: {average:?}, truth {truth:?}", breaker.name()));
            }
        }
        if within {
            return;
        }
    }
    panic!("an average was off by more than 2x in every attempt: {misses:?}");
}

/// The average response time is the mean of the sampled calls' durations:
/// on a manual clock every call takes exactly 3 ms, so the average is
/// exactly 3 ms, whichever calls were sampled.
#[test]
fn the_average_response_time_is_the_mean_call_duration() {
    let (breaker, clock) = manual_breaker("harden-average", CircuitBreakerConfig::default());
    for _ in 0..200 {
        breaker
            .call(|| {
                clock.advance(Duration::from_millis(3));
                Ok::<_, &str>(())
            })
            .expect("a closed circuit runs the call");
    }
    assert_eq!(
        breaker.get_metrics().average_response_time,
        Duration::from_millis(3)
    );
}
