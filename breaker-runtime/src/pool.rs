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
//! # `fork()`
//!
//! A child made by `fork()` has only the thread that forked: none of the
//! parent's workers. A `pthread_atfork` child handler, registered when the
//! pool first runs a job, bumps [`FORK_GENERATION`] (one atomic add, which
//! is async-signal-safe). The child's next use of the pool then finds the
//! pool it inherited stale and puts a new, empty one in its place: no
//! idle workers that do not exist, no threads counted against the limit,
//! a mutex and a condvar no parent thread is parked on. The parent's
//! queued jobs are never run in the child: their callers are not there.
//! The inherited pool is leaked, never freed (its memory may still be
//! named by the parent's parked threads' records). Each breaker's
//! [`Bulkhead`] likewise counts only the slots taken since the fork.
//!
//! A job that calls `fork()` itself leaves, in the child, a thread that
//! was a worker of the inherited pool: it finishes that job and then
//! exits, without running the inherited pool's queue.
//!
//! # Invariants
//!
//! Of the current pool (the one of this process's fork generation), under
//! its lock:
//! * `jobs.len() <= idle`: a job is queued only for a worker that is
//!   waiting, and a waiting worker leaves only when no job is queued. So no
//!   queued job is ever left without a worker to run it.
//! * `threads` counts the workers alive or being started; a thread is
//!   counted before it is started and uncounted under the lock as it exits,
//!   so it never exceeds the limit by a start.
//!
//! A worker belongs to the pool that started it, and only the current
//! pool is given jobs. A pool inherited by a forked child still counts the
//! parent's workers, so it is replaced before the child's first job.

use std::collections::VecDeque;
use std::io;
use std::ptr;
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
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

/// How many `fork()`s separate this process from the one that started the
/// pool: bumped in each forked child, never in a parent.
static FORK_GENERATION: AtomicU32 = AtomicU32::new(0);

/// The most threads the pool may have, over all breakers.
static LIMIT: AtomicU32 = AtomicU32::new(DEFAULT_LIMIT);

/// Test hook: how many coming starts fail as if no thread could start.
static FAILING_STARTS: AtomicU32 = AtomicU32::new(0);

struct Pool {
    /// The fork generation this pool's workers live in.
    generation: u32,
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    /// Workers alive, or being started.
    threads: usize,
}

impl Pool {
    const fn new(generation: u32) -> Self {
        Self {
            generation,
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                idle: 0,
                threads: 0,
            }),
            ready: Condvar::new(),
        }
    }

    /// Whether this pool's workers are threads of this process.
    fn is_current(&self) -> bool {
        // Relaxed: the generation changes only in a child's fork handler,
        // while the child has one thread; threads it starts later are
        // ordered after it by their spawn.
        self.generation == FORK_GENERATION.load(Ordering::Relaxed)
    }
}

static FIRST_POOL: Pool = Pool::new(0);

/// The pool of this fork generation. Pools are only ever leaked, so a
/// pointer loaded from here stays valid for the life of the process.
static POOL: AtomicPtr<Pool> = AtomicPtr::new(ptr::addr_of!(FIRST_POOL).cast_mut());

/// The pool of this process: the one it was started with, or after a
/// `fork()` a new, empty one (see the module docs).
fn pool() -> &'static Pool {
    // Acquire: pairs with the Release that published a new pool, so its
    // fields are seen initialized.
    let current = POOL.load(Ordering::Acquire);
    // SAFETY: `POOL` only holds `&FIRST_POOL` or a leaked `Box<Pool>`,
    // neither ever freed.
    let pool = unsafe { &*current };
    if pool.is_current() {
        return pool;
    }
    replace_after_fork(current)
}

/// Puts an empty pool of the current fork generation in place of `stale`,
/// the inherited one, which is leaked.
#[cold]
fn replace_after_fork(stale: *mut Pool) -> &'static Pool {
    let fresh = Box::into_raw(Box::new(Pool::new(FORK_GENERATION.load(Ordering::Relaxed))));
    // AcqRel: publishes the fresh pool (Release) and, on failure, sees the
    // one another thread published (Acquire).
    match POOL.compare_exchange(stale, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just leaked into `POOL`, never freed.
        Ok(_) => unsafe { &*fresh },
        Err(_) => {
            // Another thread replaced it first; ours was never shared.
            // SAFETY: `fresh` came from `Box::into_raw` above.
            drop(unsafe { Box::from_raw(fresh) });
            pool()
        }
    }
}

/// Registers, once per process, the `fork()` child handler that bumps
/// [`FORK_GENERATION`]. A child inherits the registration.
fn watch_forks() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        #[cfg(unix)]
        {
            /// Runs in the child, right after `fork()`, on its only
            /// thread: one atomic add, which is async-signal-safe.
            extern "C" fn pool_lost_in_child() {
                // Relaxed: the child has a single thread at this point.
                FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
            }
            // SAFETY: registers a handler that only touches an atomic and
            // never unwinds. A failure (ENOMEM) leaves a forked child with
            // the parent's counts, as before the handler existed.
            unsafe {
                libc::pthread_atfork(None, None, Some(pool_lost_in_child));
            }
        }
    });
}

/// Why [`execute`] did not run a job.
#[derive(Debug)]
pub(crate) enum Refused {
    /// No worker is idle and the pool has its limit of threads.
    Full { limit: u32 },
    /// No worker is idle and no thread could be started.
    Unavailable(io::Error),
}

/// Takes one of the test hook's failing starts, if any are left.
fn take_failing_start() -> bool {
    // Relaxed: a test hook's counter, guarding no data.
    FAILING_STARTS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Runs `job` on an idle worker, or on a new one if the pool has room.
///
/// # Errors
/// When no worker is idle and no thread may ([`Refused::Full`]) or can
/// ([`Refused::Unavailable`]) be started. `job` is then dropped unrun.
pub(crate) fn execute(job: Job) -> Result<(), Refused> {
    // Before any thread is counted, so that a child forked from now on
    // forgets it.
    watch_forks();
    let pool = pool();
    let mut state = pool.state.lock();
    let fail = take_failing_start();
    if !fail && state.idle > state.jobs.len() {
        state.jobs.push_back(job);
        drop(state);
        pool.ready.notify_one();
        return Ok(());
    }
    // Relaxed: read under the lock that orders every start; a limit set
    // concurrently applies from the next start on.
    let limit = LIMIT.load(Ordering::Relaxed);
    if state.threads >= limit as usize {
        return Err(Refused::Full { limit });
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
                work(pool);
            })
            .map(drop)
    };
    started.map_err(|error| {
        pool.state.lock().threads -= 1;
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
/// exit after [`IDLE`] with none. A worker that finds itself in a forked
/// child (the job it ran forked) exits at once, touching nothing.
fn work(pool: &'static Pool) {
    if !pool.is_current() {
        return;
    }
    let mut state = pool.state.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            run(job);
            if !pool.is_current() {
                return;
            }
            state = pool.state.lock();
            continue;
        }
        state.idle += 1;
        let timed_out = pool.ready.wait_for(&mut state, IDLE).timed_out();
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
    // Relaxed: read under the pool's lock at each start.
    LIMIT.store(limit, Ordering::Relaxed);
    Ok(())
}

/// The most threads the pool of hard-deadline workers may have at once; see
/// [`set_deadline_worker_limit`].
pub fn deadline_worker_limit() -> u32 {
    LIMIT.load(Ordering::Relaxed)
}

/// The pool's threads now: alive, or being started. For tests.
#[doc(hidden)]
pub fn deadline_worker_threads() -> usize {
    pool().state.lock().threads
}

/// The pool's workers waiting for a job now. For tests.
#[doc(hidden)]
pub fn deadline_workers_idle() -> usize {
    pool().state.lock().idle
}

/// Test hook: the next `starts` thread starts fail as if the system could
/// start no thread, and until then no idle worker is used (so a start is
/// attempted).
#[doc(hidden)]
pub fn fail_deadline_worker_starts(starts: u32) {
    // Relaxed: a test hook's counter, guarding no data.
    FAILING_STARTS.store(starts, Ordering::Relaxed);
}

/// One breaker's bound on the workers its hard-deadline calls hold: a count
/// of held workers, taken before a job is handed to the pool and given back
/// when the job ends (not when its caller gives up).
///
/// The count is tagged with the fork generation it was taken in: in a
/// forked child, the slots of the parent's calls (whose workers the child
/// does not have) count as free, and giving one of them back changes
/// nothing.
#[derive(Debug, Default)]
pub(crate) struct Bulkhead {
    /// The generation in the high 32 bits, the slots held in it in the low.
    held: AtomicU64,
}

/// A slot of a [`Bulkhead`], to give back with [`Bulkhead::release`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a slot must be given back"]
pub(crate) struct Slot {
    generation: u32,
}

const COUNT_BITS: u32 = 32;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn pack(generation: u32, held: u32) -> u64 {
    (u64::from(generation) << COUNT_BITS) | u64::from(held)
}

fn unpack(word: u64) -> (u32, u32) {
    // Truncations intended: the two halves of the word.
    ((word >> COUNT_BITS) as u32, (word & COUNT_MASK) as u32)
}

/// `word` with one more slot held in `generation`, if fewer than `limit`
/// are: a count from another generation is taken as zero.
fn take(word: u64, generation: u32, limit: u32) -> Option<u64> {
    let (taken_in, held) = unpack(word);
    let held = if taken_in == generation { held } else { 0 };
    (held < limit).then(|| pack(generation, held + 1))
}

/// `word` with one slot of `generation` given back; `None` (no change)
/// when the count is of another generation.
fn give_back(word: u64, generation: u32) -> Option<u64> {
    let (taken_in, held) = unpack(word);
    (taken_in == generation && held > 0).then(|| pack(generation, held - 1))
}

impl Bulkhead {
    /// Takes a worker slot if fewer than `limit` are held.
    pub(crate) fn try_hold(&self, limit: u32) -> Option<Slot> {
        // Relaxed: see `Pool::is_current`.
        let generation = FORK_GENERATION.load(Ordering::Relaxed);
        // Relaxed: the count guards no data; each update is one atomic RMW,
        // so the total is exact.
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                take(word, generation, limit)
            })
            .ok()
            .map(|_| Slot { generation })
    }

    /// Gives a slot back; one taken before a `fork()` is forgotten already.
    pub(crate) fn release(&self, slot: Slot) {
        // Relaxed: as in `try_hold`.
        let _ = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                give_back(word, slot.generation)
            });
    }

    /// Slots held now, in this process.
    pub(crate) fn held(&self) -> u32 {
        // Relaxed: a reading for tests.
        let (taken_in, held) = unpack(self.held.load(Ordering::Relaxed));
        if taken_in == FORK_GENERATION.load(Ordering::Relaxed) {
            held
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulkhead_counts_only_its_own_generation() {
        let full = pack(3, 2);
        assert_eq!(take(full, 3, 2), None, "full in its generation");
        assert_eq!(take(full, 4, 2), Some(pack(4, 1)), "free after a fork");
        assert_eq!(give_back(full, 3), Some(pack(3, 1)));
        assert_eq!(
            give_back(pack(4, 1), 3),
            None,
            "a parent's slot is forgotten"
        );
        assert_eq!(give_back(pack(3, 0), 3), None, "never below zero");
        assert_eq!(unpack(pack(u32::MAX, u32::MAX)), (u32::MAX, u32::MAX));
    }

    #[test]
    fn a_bulkhead_holds_up_to_its_limit_and_gives_back() {
        let bulkhead = Bulkhead::default();
        let first = bulkhead.try_hold(2).expect("free");
        let second = bulkhead.try_hold(2).expect("free");
        assert!(bulkhead.try_hold(2).is_none());
        assert_eq!(bulkhead.held(), 2);
        bulkhead.release(first);
        bulkhead.release(second);
        assert_eq!(bulkhead.held(), 0);
    }
}
