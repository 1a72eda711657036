//! The worker threads of hard-deadline calls.
//!
//! A sync call with a hard deadline runs on a worker thread so that its
//! caller can leave at the deadline. Starting a thread costs tens of
//! microseconds, so a worker that finishes waits up to [`IDLE`] for the
//! next call, and a new thread starts only when no worker is free. A call
//! that hangs keeps its worker (nothing can stop a sync call).
//!
//! Two bulkheads keep hung calls from growing the process without bound:
//! each breaker holds at most `max_deadline_workers` workers at once (see
//! [`Bulkhead`]), and the pool starts no thread past its limit
//! ([`DEFAULT_LIMIT`], set by [`set_deadline_worker_limit`]). A call past
//! either is refused before it runs.
//!
//! # Invariants
//!
//! Under the lock:
//! * `jobs.len() <= idle`: a job is queued only for a worker that is
//!   waiting, and a waiting worker leaves only when no job is queued. So no
//!   queued job is ever left without a worker to run it.
//! * `threads` counts the workers alive or being started; a thread is
//!   counted before it is started and uncounted under the lock as it exits,
//!   so it never exceeds `limit` by a start.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::config::ConfigError;

/// A call to run on a worker. The deadline call catches its body's panic
/// and hands it to the caller.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a worker waits for another call before its thread exits.
const IDLE: Duration = Duration::from_secs(60);

/// The default limit on the pool's threads, over all breakers.
pub const DEFAULT_LIMIT: u32 = 256;

struct Pool {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    /// Workers alive, or being started.
    threads: usize,
    /// The most workers there may be.
    limit: usize,
    /// Test hook: how many coming starts fail as if no thread could start.
    failing_starts: u32,
}

static POOL: Pool = Pool {
    state: Mutex::new(State {
        jobs: VecDeque::new(),
        idle: 0,
        threads: 0,
        limit: DEFAULT_LIMIT as usize,
        failing_starts: 0,
    }),
    ready: Condvar::new(),
};

/// Why [`execute`] did not run a job.
#[derive(Debug)]
pub(crate) enum Refused {
    /// No worker is idle and the pool has its limit of threads.
    Full { limit: u32 },
    /// No worker is idle and no thread could be started.
    Unavailable(io::Error),
}

/// Runs `job` on an idle worker, or on a new one if the pool has room.
///
/// # Errors
/// When no worker is idle and no thread may ([`Refused::Full`]) or can
/// ([`Refused::Unavailable`]) be started. `job` is then dropped unrun.
pub(crate) fn execute(job: Job) -> Result<(), Refused> {
    let mut state = POOL.state.lock();
    let fail = state.failing_starts > 0;
    if fail {
        state.failing_starts -= 1;
    } else if state.idle > state.jobs.len() {
        state.jobs.push_back(job);
        drop(state);
        POOL.ready.notify_one();
        return Ok(());
    }
    if state.threads >= state.limit {
        return Err(Refused::Full {
            limit: u32::try_from(state.limit).unwrap_or(u32::MAX),
        });
    }
    state.threads += 1;
    drop(state);
    let started = if fail {
        Err(io::Error::other("the pool's test hook failed this start"))
    } else {
        std::thread::Builder::new()
            .name("breaker-deadline".into())
            .spawn(move || {
                run(job);
                work();
            })
            .map(drop)
    };
    started.map_err(|error| {
        POOL.state.lock().threads -= 1;
        Refused::Unavailable(error)
    })
}

/// Runs one job. A job that panics after all (its body's panic is caught
/// by the deadline call, but a late result whose drop panics is not) loses
/// its result, not its worker: the worker, and the pool's count of it,
/// live on.
fn run(job: Job) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
}

/// A worker's life after its first job: run queued jobs, wait for more, and
/// exit after [`IDLE`] with none.
fn work() {
    let mut state = POOL.state.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            run(job);
            state = POOL.state.lock();
            continue;
        }
        state.idle += 1;
        let timed_out = POOL.ready.wait_for(&mut state, IDLE).timed_out();
        state.idle -= 1;
        if timed_out && state.jobs.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

/// Sets the most threads the pool of hard-deadline workers may have at
/// once, over all breakers (default [`DEFAULT_LIMIT`], 256).
///
/// A hard-deadline call ([`CircuitBreaker::call_with_deadline`], or a sync
/// `#[circuit_breaker]` function with `timeout_duration`) that finds no idle
/// worker and the pool at its limit is refused at once with
/// [`BreakerError::BulkheadFull`], and its fallback serves. Lowering the
/// limit stops no thread: calls are refused until enough workers finish.
/// Each breaker has its own bound too,
/// [`max_deadline_workers`](crate::CircuitBreakerConfig::max_deadline_workers).
///
/// [`CircuitBreaker::call_with_deadline`]: crate::CircuitBreaker::call_with_deadline
/// [`BreakerError::BulkheadFull`]: crate::BreakerError::BulkheadFull
///
/// # Errors
/// [`ConfigError::OutOfRange`] for a limit of 0.
///
/// ```
/// use breaker_runtime::{deadline_worker_limit, set_deadline_worker_limit};
///
/// assert!(set_deadline_worker_limit(0).is_err());
/// set_deadline_worker_limit(64)?;
/// assert_eq!(deadline_worker_limit(), 64);
/// # set_deadline_worker_limit(breaker_runtime::DEFAULT_DEADLINE_WORKER_LIMIT)?;
/// # Ok::<(), breaker_runtime::ConfigError>(())
/// ```
pub fn set_deadline_worker_limit(limit: u32) -> Result<(), ConfigError> {
    if limit == 0 {
        return Err(ConfigError::OutOfRange {
            field: "deadline_worker_limit",
            value: "0".to_owned(),
            allowed: "at least 1",
        });
    }
    POOL.state.lock().limit = limit as usize;
    Ok(())
}

/// The most threads the pool of hard-deadline workers may have at once; see
/// [`set_deadline_worker_limit`].
pub fn deadline_worker_limit() -> u32 {
    u32::try_from(POOL.state.lock().limit).unwrap_or(u32::MAX)
}

/// The pool's threads now: alive, or being started. For tests.
#[doc(hidden)]
pub fn deadline_worker_threads() -> usize {
    POOL.state.lock().threads
}

/// The pool's workers waiting for a job now. For tests.
#[doc(hidden)]
pub fn deadline_workers_idle() -> usize {
    POOL.state.lock().idle
}

/// Test hook: the next `starts` thread starts fail as if the system could
/// start no thread, and until then no idle worker is used (so a start is
/// attempted).
#[doc(hidden)]
pub fn fail_deadline_worker_starts(starts: u32) {
    POOL.state.lock().failing_starts = starts;
}

/// One breaker's bound on the workers its hard-deadline calls hold: a count
/// of held workers, taken before a job is handed to the pool and given back
/// when the job ends (not when its caller gives up).
#[derive(Debug, Default)]
pub(crate) struct Bulkhead {
    held: AtomicU32,
}

impl Bulkhead {
    /// Takes a worker slot if fewer than `limit` are held.
    pub(crate) fn try_hold(&self, limit: u32) -> bool {
        // Relaxed: the count guards no data; each update is one atomic RMW,
        // so the total is exact.
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < limit).then_some(held + 1)
            })
            .is_ok()
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }

    /// Slots held now.
    pub(crate) fn held(&self) -> u32 {
        self.held.load(Ordering::Relaxed)
    }
}
