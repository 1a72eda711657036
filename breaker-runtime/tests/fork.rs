//! A breaker keeps its sense of time in a child made by `fork()`.
//!
//! The coarse clock is stored by a ticker thread, and a forked child has no
//! threads but the one that forked: without care, an open circuit would
//! never reach half-open there, the rate limiter would never refill and
//! soft deadlines would never fire. This binary (no test harness, so its
//! main thread is the only one it starts and forking it is safe) builds
//! breakers on the system clock, opens one, forks, and lets the child check
//! each of those; the child reports through its exit status.
//!
//! The same goes for the pool of hard-deadline workers: the parent leaves
//! one worker idle and one hung (holding the only slot of a breaker's
//! bulkhead), and the child, which has neither thread, must still run
//! hard-deadline calls on both breakers.

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(not(unix))]
fn main() {
    println!("fork: not a unix system, nothing to check");
}

#[cfg(unix)]
mod unix {
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::mpsc;
    use std::thread::sleep;
    use std::time::{Duration, Instant};

    use breaker_runtime::{
        BreakerError, CallError, CallOptions, CircuitBreaker, CircuitBreakerConfig, CircuitState,
    };

    const RECOVERY: Duration = Duration::from_millis(50);
    const DEADLINE: Duration = Duration::from_millis(20);
    /// Well past [`RECOVERY`], and past the limiter's refill of one permit.
    const CHILD_WAITS: Duration = Duration::from_millis(200);
    const BURST: u32 = 5;
    /// The hard deadline of the worker breakers: generous, since a call
    /// that runs at all returns at once.
    const HARD_DEADLINE: Duration = Duration::from_millis(500);

    struct Breakers {
        open: CircuitBreaker,
        deadline: CircuitBreaker,
        limited: CircuitBreaker,
        /// Hard-deadline calls; the parent leaves its worker idle.
        worker: CircuitBreaker,
        /// Hard-deadline calls, one worker at most; the parent's one call
        /// hangs.
        bulkhead: CircuitBreaker,
    }

    fn breaker(name: &str, config: CircuitBreakerConfig) -> CircuitBreaker {
        // `new` uses the system clock, and starts its coarse ticker.
        CircuitBreaker::new(name, config).expect("valid configuration")
    }

    fn build() -> Breakers {
        let open = breaker(
            "fork-open",
            CircuitBreakerConfig::builder()
                .failure_threshold(1)
                .success_threshold(1)
                .recovery_timeout(RECOVERY)
                .build()
                .expect("valid configuration"),
        );
        let deadline = breaker(
            "fork-deadline",
            CircuitBreakerConfig::builder()
                .failure_threshold(100)
                .timeout_duration(DEADLINE)
                .build()
                .expect("valid configuration"),
        );
        // 100 permits a second and a burst of 5 (50 ms of permits, so the
        // limiter reads the coarse clock).
        let limited = breaker(
            "fork-limited",
            CircuitBreakerConfig::builder()
                .rate_limit_per_minute(6000)
                .rate_limit_burst(BURST)
                .build()
                .expect("valid configuration"),
        );
        let worker = breaker(
            "fork-worker",
            CircuitBreakerConfig::builder()
                .timeout_duration(HARD_DEADLINE)
                .build()
                .expect("valid configuration"),
        );
        let bulkhead = breaker(
            "fork-bulkhead",
            CircuitBreakerConfig::builder()
                .timeout_duration(HARD_DEADLINE)
                .max_deadline_workers(1)
                .build()
                .expect("valid configuration"),
        );
        Breakers {
            open,
            deadline,
            limited,
            worker,
            bulkhead,
        }
    }

    /// A hard-deadline call of `breaker` that returns `value` at once.
    fn hard_call(breaker: &CircuitBreaker, value: u32) -> Result<u32, CallError<&'static str>> {
        breaker.call_with_deadline(&CallOptions::new(), move || Ok(value))
    }

    fn breaker_error<'a, T>(result: &'a Result<T, CallError<&str>>) -> Option<&'a BreakerError> {
        result.as_ref().err().and_then(CallError::breaker_error)
    }

    /// Waits until the pool has `idle` workers waiting for a job.
    fn wait_for_idle_workers(idle: usize) -> bool {
        let give_up = Instant::now() + Duration::from_secs(5);
        while breaker_runtime::__deadline_workers_idle() < idle {
            if Instant::now() > give_up {
                return false;
            }
            sleep(Duration::from_millis(1));
        }
        true
    }

    pub fn main() {
        let breakers = build();
        // One worker hangs, holding the only slot of `bulkhead`...
        let (release_hung, hung) = mpsc::channel::<()>();
        let timed_out = breakers
            .bulkhead
            .call_with_deadline(&CallOptions::new(), move || {
                let _ = hung.recv();
                Ok::<u32, &str>(0)
            });
        assert!(
            matches!(
                breaker_error(&timed_out),
                Some(BreakerError::Timeout { .. })
            ),
            "{timed_out:?}"
        );
        assert!(
            matches!(
                breaker_error(&hard_call(&breakers.bulkhead, 2)),
                Some(BreakerError::BulkheadFull { limit: 1, .. })
            ),
            "the parent's bulkhead is full"
        );
        // ...and another ran a call and now waits for the next one.
        assert_eq!(hard_call(&breakers.worker, 1).expect("runs"), 1);
        assert!(wait_for_idle_workers(1), "the worker did not go idle");
        assert_eq!(breaker_runtime::__deadline_worker_threads(), 2);

        // Last before the fork, so that only the child's own clock can see
        // the recovery timeout pass and the limiter refill (the hung call
        // above takes longer than both): the parent opens one circuit and
        // drains the limiter.
        let _ = breakers.open.call(|| Err::<(), _>("down"));
        assert_eq!(breakers.open.state(), CircuitState::Open);
        for _ in 0..BURST {
            breakers
                .limited
                .call(|| Ok::<_, &str>(()))
                .expect("within the burst");
        }
        assert!(
            breakers.limited.call(|| Ok::<_, &str>(())).is_err(),
            "the burst is spent"
        );

        // SAFETY: this process's other threads are the breakers' ticker,
        // which holds no lock while it sleeps, and two deadline workers,
        // one waiting for a job and one blocked on a channel, neither
        // holding a lock; the test's own main thread forks. The child uses
        // the breakers and then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let checked = panic::catch_unwind(AssertUnwindSafe(|| child(&breakers)));
            // SAFETY: `_exit` skips the parent's atexit handlers and the
            // test harness's teardown, which belong to the parent.
            unsafe { libc::_exit(i32::from(checked.is_err())) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid int.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid failed");
        assert!(
            libc::WIFEXITED(status),
            "the child did not exit normally: status {status:#x}"
        );
        let _ = release_hung.send(());
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "the child's checks failed (its message is above)"
        );
        println!("fork: the child's breakers kept time");
    }

    /// The checks, in the child: each failure is printed, and any fails it.
    fn child(breakers: &Breakers) {
        sleep(CHILD_WAITS);
        let mut failures = Vec::new();

        // The open circuit's recovery timeout has passed: a probe is
        // admitted and its success closes the circuit.
        let probe = breakers.open.call(|| Ok::<_, &str>("probe"));
        if probe.is_err() || breakers.open.state() != CircuitState::Closed {
            failures.push(format!(
                "the open circuit did not close on a probe {CHILD_WAITS:?} after a recovery \
                 timeout of {RECOVERY:?}: {probe:?}, now {:?}",
                breakers.open.state()
            ));
        }

        // The limiter refilled while the child waited.
        let limited = breakers.limited.call(|| Ok::<_, &str>(()));
        if limited.is_err() {
            failures.push(format!(
                "the rate limiter did not refill in {CHILD_WAITS:?}: {limited:?}"
            ));
        }

        // Every call that sleeps past the soft deadline counts as a
        // timeout, not only the sampled ones that read the precise clock:
        // the coarse clock must move while a call runs.
        const LATE_CALLS: u64 = 4;
        for _ in 0..LATE_CALLS {
            let _ = breakers.deadline.call(|| {
                sleep(DEADLINE * 3);
                Ok::<_, &str>(())
            });
        }
        let timeouts = breakers.deadline.get_metrics().timeouts;
        if timeouts != LATE_CALLS {
            failures.push(format!(
                "{timeouts} of {LATE_CALLS} calls of {:?} under a soft deadline of {DEADLINE:?} \
                 counted as timeouts",
                DEADLINE * 3
            ));
        }

        // The parent's workers do not exist here: a call must get a worker
        // of the child's own, and the bulkhead must not count the parent's
        // hung call. Twice each, so the second call reuses the child's
        // idle worker.
        for round in 1..=2 {
            for (name, breaker) in [
                ("worker", &breakers.worker),
                ("bulkhead", &breakers.bulkhead),
            ] {
                let start = Instant::now();
                let result = hard_call(breaker, 7);
                if !matches!(result, Ok(7)) {
                    failures.push(format!(
                        "hard-deadline call {round} on `{name}` after {:?}: {result:?} (held by \
                         the breaker: {}, pool threads: {}, idle: {})",
                        start.elapsed(),
                        breaker.__deadline_workers_held(),
                        breaker_runtime::__deadline_worker_threads(),
                        breaker_runtime::__deadline_workers_idle(),
                    ));
                }
                if !wait_for_idle_workers(1) {
                    failures.push(format!(
                        "no worker went idle after call {round} on `{name}`"
                    ));
                }
            }
        }

        for failure in &failures {
            eprintln!("fork child: {failure}");
        }
        assert!(failures.is_empty(), "{} check(s) failed", failures.len());
    }
}
