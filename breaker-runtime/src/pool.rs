//! The worker threads of hard-deadline calls.
//!
//! A sync call with a hard deadline runs on a worker thread so that its
//! caller can leave at the deadline. Starting a thread costs tens of
//! microseconds, so a worker that finishes waits up to [`IDLE`] for the
//! next call, and a new thread starts only when no worker is free. A call
//! that hangs keeps its worker (nothing can stop a sync call), and the pool
//! grows around it.
//!
//! # Invariant
//!
//! Under the lock, `jobs.len() <= idle`: a job is queued only for a worker
//! that is waiting, and a waiting worker leaves only when no job is queued.
//! So no queued job is ever left without a worker to run it.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A call to run on a worker. It must not panic: the deadline call catches
/// its body's panic and hands it to the caller.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a worker waits for another call before its thread exits.
const IDLE: Duration = Duration::from_secs(60);

struct Pool {
    state: Mutex<State>,
    ready: Condvar,
}

struct State {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(State {
        jobs: VecDeque::new(),
        idle: 0,
    }),
    ready: Condvar::new(),
};

/// Runs `job` on an idle worker, or on a new one.
///
/// # Errors
/// When no worker is idle and no thread can be started.
pub(crate) fn execute(job: Job) -> io::Result<()> {
    let mut state = POOL.state.lock();
    if state.idle > state.jobs.len() {
        state.jobs.push_back(job);
        drop(state);
        POOL.ready.notify_one();
        return Ok(());
    }
    drop(state);
    std::thread::Builder::new()
        .name("breaker-deadline".into())
        .spawn(move || {
            job();
            work();
        })
        .map(drop)
}

/// A worker's life after its first job: run queued jobs, wait for more, and
/// exit after [`IDLE`] with none.
fn work() {
    let mut state = POOL.state.lock();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = POOL.state.lock();
            continue;
        }
        state.idle += 1;
        let timed_out = POOL.ready.wait_for(&mut state, IDLE).timed_out();
        state.idle -= 1;
        if timed_out && state.jobs.is_empty() {
            return;
        }
    }
}
