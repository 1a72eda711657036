//! Deadlines: the rule that decides whether a call was late, the async
//! deadline, and the hard deadline's worker start and handoff (the worker
//! pool itself is [`crate::pool`]).
//!
//! # When a call is late
//!
//! A call is a timeout only if it really took longer than
//! `timeout_duration`. Most breakers time their calls on the coarse clock
//! ([`COARSE_TICK`], 10 ms), which is a plain load but may lag real time by
//! a tick or more, so its verdict is only a hint:
//!
//! * A breaker whose timeout is under [`PRECISE_BELOW`] (one second, 100
//!   ticks) reads the precise clock at both ends of each call, and its
//!   verdict is exact. At such a deadline a tick is over 1% of the budget,
//!   too coarse to judge it. The cost, two precise reads per call (about
//!   60 ns on a virtual machine), is paid only by breakers configured with
//!   such short deadlines, never with the default 30 s.
//! * A longer timeout reads the coarse clock at both ends. When the coarse
//!   clock says "late" (only calls near or past the deadline), the precise
//!   clock is read once, and the call counts as late only if
//!   [`surely_late`] holds: the precise end is more than the timeout plus
//!   [`START_LAG`] (two ticks) after the coarse start. While the ticker
//!   runs, the coarse start trails the real start by one tick plus the
//!   ticker's wake-up delay, which the second tick covers, so the real
//!   elapsed time surely passed the deadline. Only a ticker stalled for
//!   more than two ticks when the call began could count a call that fell
//!   short of its deadline, and by no more than the stall beyond two ticks.
//!   The other way, a call less than about three ticks (30 ms) past its
//!   deadline may go uncounted: under 3% of any such deadline.
//!
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
#[cfg(feature = "tokio")]
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::breaker::Inner;
use crate::clock::{COARSE_TICK, ClockHandle};
use crate::pool::{self, Refused};
use crate::sync::{Condvar, Mutex};

/// Timeouts shorter than this are timed on the precise clock; see the
/// module docs.
pub(crate) const PRECISE_BELOW: u64 = 100 * duration_nanos_const(COARSE_TICK);

/// How far the coarse clock may trail the real one when it is read at a
/// call's start: one tick, doubled for the ticker's sleep overshooting.
pub(crate) const START_LAG: u64 = 2 * duration_nanos_const(COARSE_TICK);

const fn duration_nanos_const(duration: Duration) -> u64 {
    duration.as_nanos() as u64
}

/// Whether a call that started at `coarse_start` (coarse clock) and ended
/// at `precise_end` (precise clock) surely ran longer than `timeout`.
#[inline]
pub(crate) fn surely_late(coarse_start: u64, precise_end: u64, timeout: u64) -> bool {
    precise_end.saturating_sub(coarse_start.saturating_add(START_LAG)) > timeout
}

/// Whether a call that started at `coarse_start` on `clock`'s coarse
/// reading, and that the coarse reading found late, really was: confirmed
/// on the precise clock for the system clock (an injected clock's coarse
/// reading is exact).
#[cold]
#[inline(never)]
pub(crate) fn confirm_late(clock: &ClockHandle, coarse_start: u64, timeout: u64) -> bool {
    !clock.is_system() || surely_late(coarse_start, clock.now(), timeout)
}

/// Times one call by the rule in the module docs: on the precise clock for
/// a short timeout, else on the coarse clock confirmed by the precise one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch {
    start: u64,
    precise: bool,
}

impl Stopwatch {
    /// Starts timing a call under a timeout of `timeout` ns.
    #[inline]
    pub(crate) fn start(clock: &ClockHandle, timeout: u64) -> Self {
        let precise = timeout < PRECISE_BELOW;
        let start = if precise {
            clock.now()
        } else {
            clock.coarse_now()
        };
        Self { start, precise }
    }

    /// When the call started, on the clock it is timed on.
    #[cfg(feature = "tokio")]
    pub(crate) fn started(self) -> u64 {
        self.start
    }

    /// The call's time (to the resolution of the clock read) and whether it
    /// surely ran past `timeout` ns.
    pub(crate) fn stop(self, clock: &ClockHandle, timeout: u64) -> (u64, bool) {
        if self.precise {
            let elapsed = clock.now().saturating_sub(self.start);
            return (elapsed, elapsed > timeout);
        }
        let elapsed = clock.coarse_now().saturating_sub(self.start);
        let late = elapsed > timeout && confirm_late(clock, self.start, timeout);
        (elapsed, late)
    }
}

/// `now + timeout`, or `None` when that is too far to represent: then there
/// is no deadline.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Starts `f` on a worker for a hard-deadline call of the breaker `inner`,
/// holding one of its bulkhead slots until `f` returns; the handoff that
/// will carry `f`'s result (or panic) to the caller.
///
/// # Errors
/// [`Refused::Full`] when the breaker holds its `max_deadline_workers` or
/// the pool has its limit of threads, [`Refused::Unavailable`] when no
/// thread could be started. `f` is then dropped unrun.
pub(crate) fn start_on_worker<R: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<Arc<Handoff<std::thread::Result<R>>>, Refused> {
    let limit = inner.config.max_deadline_workers;
    let Some(held) = inner.deadline_workers.try_hold(limit) else {
        return Err(Refused::Full { limit });
    };
    // Given back when the job ends, however it ends: run, or dropped
    // unrun because the pool refused it.
    let slot = WorkerSlot(Arc::clone(inner), held);
    let handoff = Arc::new(Handoff::new());
    let worker_handoff = Arc::clone(&handoff);
    pool::execute(Box::new(move || {
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        // The call is over: its slot is free before its caller hears, so a
        // caller calling again finds it free.
        let inner = Arc::clone(&slot.0);
        drop(slot);
        if let Err(late) = worker_handoff.deliver(result) {
            inner.core.count_late_result();
            // Dropped last: a drop that panics is counted all the same.
            drop(late);
        }
    }))?;
    Ok(handoff)
}

/// A worker slot of a breaker's bulkhead, held by a hard-deadline job and
/// given back when the job ends or is dropped unrun.
struct WorkerSlot(Arc<crate::breaker::Inner>, pool::Slot);

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        self.0.deadline_workers.release(self.1);
    }
}

/// How an async call under a deadline ended.
pub(crate) enum Finished<R> {
    #[cfg(feature = "tokio")]
    OnTime(R),
    /// No timer was available; the call ran for the given time (ns of the
    /// breaker's clock), and was late or not by the rule of
    /// [`deadline`](self).
    Unenforced(R, u64, bool),
    #[cfg(feature = "tokio")]
    Late,
}

/// Awaits `fut`, cancelling it `timeout` after this is first polled.
///
/// Like `tokio::time::timeout`, but the timer is armed only when `fut`
/// first has to wait: a call that finishes in its first poll, the common
/// case, reads no clock and never touches tokio's timer or runtime handle.
/// The deadline is then set from the moment of arming, less the first
/// poll's time:
///
/// * for a timeout under [`PRECISE_BELOW`] (1 s),
///   the start is read on the real clock, so the first poll is taken off
///   exactly: the deadline is never early, and late only by the timer's
///   own resolution;
/// * for a longer one, the start is read on the coarse clock, and the first
///   poll is taken off as the coarse clock saw it less two ticks. The
///   deadline is never early unless the coarse clock was more than two
///   ticks behind when the call started (a stalled ticker); it is late by
///   at most the first poll's time, and by at most the two ticks plus the
///   coarse clock's lag when it is armed (30 ms with a running ticker)
///   however long that poll took.
///
/// A timeout too long to represent (`Duration::MAX`) arms no timer: no
/// deadline.
///
/// Outside a runtime with timers the deadline cannot be enforced; the call's
/// time is then measured on the breaker's clock, as for sync calls.
///
/// A panic of `fut` is caught and given back as `Err(payload)`: the caller
/// counts it as its call's failure and re-raises it. A panic elsewhere
/// (a sibling future's) that drops this future is the caller's cancellation.
#[cfg(feature = "tokio")]
pub(crate) async fn under_deadline<F: Future>(
    fut: F,
    timeout: Duration,
    timeout_nanos: u64,
    clock: &ClockHandle,
    own_panic: &AtomicBool,
) -> Finished<F::Output> {
    use crate::Clock;
    use crate::clock::{SystemClock, coarse_system_now};
    use tokio::time::{Instant, Sleep};

    enum Wait {
        /// Not polled yet, or finished in the first poll.
        First,
        /// Waiting under the timer (if the deadline is representable).
        Timed,
        /// Waiting with no runtime to time it.
        Unenforced,
    }

    // A short timeout reads the real clock now; a long one makes plain
    // atomic loads, and reads the real clock only if `fut` waits.
    let precise = timeout_nanos < PRECISE_BELOW;
    let stopwatch = Stopwatch::start(clock, timeout_nanos);
    // The same reading when the breaker is on the system clock.
    let started_system = if clock.is_system() {
        stopwatch.started()
    } else if precise {
        SystemClock.now_nanos()
    } else {
        coarse_system_now()
    };
    let mut fut = std::pin::pin!(fut);
    let mut timer = std::pin::pin!(None::<Sleep>);
    let mut wait = Wait::First;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(output) = poll_marked(fut.as_mut(), cx, own_panic) {
            return Poll::Ready(match wait {
                Wait::Unenforced => {
                    let (elapsed, late) = stopwatch.stop(clock, timeout_nanos);
                    Finished::Unenforced(output, elapsed, late)
                }
                _ => Finished::OnTime(output),
            });
        }
        if let Wait::First = wait {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Take off only what surely elapsed: all of it on the real
                // clock; on the coarse one, less the lag it may have had at
                // the start.
                let first_poll = if precise {
                    SystemClock.now_nanos().saturating_sub(started_system)
                } else {
                    coarse_system_now()
                        .saturating_sub(started_system)
                        .saturating_sub(START_LAG)
                };
                let deadline = Instant::now()
                    .checked_sub(Duration::from_nanos(first_poll))
                    .and_then(|start| start.checked_add(timeout));
                if let Some(deadline) = deadline {
                    timer.set(Some(tokio::time::sleep_until(deadline)));
                }
                wait = Wait::Timed;
            } else {
                wait = Wait::Unenforced;
            }
        }
        match timer.as_mut().as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Finished::Late),
            _ => Poll::Pending,
        }
    })
    .await
}

/// [`under_deadline`] with no timer: the call runs to completion, timed on
/// `clock`; a panic of `fut` is caught and given back, as there.
#[cfg(not(feature = "tokio"))]
pub(crate) async fn under_deadline<F: Future>(
    fut: F,
    _timeout: Duration,
    timeout_nanos: u64,
    clock: &ClockHandle,
    own_panic: &AtomicBool,
) -> Finished<F::Output> {
    let stopwatch = Stopwatch::start(clock, timeout_nanos);
    let mut fut = std::pin::pin!(fut);
    let output = std::future::poll_fn(|cx| poll_marked(fut.as_mut(), cx, own_panic)).await;
    let (elapsed, late) = stopwatch.stop(clock, timeout_nanos);
    Finished::Unenforced(output, elapsed, late)
}

/// Polls `fut` once; if the poll panics, marks `own_panic` on the way out,
/// so the call's permit, dropped further up the same unwinding, counts the
/// panic as its call's failure. Nothing is caught: the panic goes on with
/// its payload, and a poll that returns costs one forgotten guard.
#[inline(always)]
fn poll_marked<F: Future>(
    fut: std::pin::Pin<&mut F>,
    cx: &mut std::task::Context<'_>,
    own_panic: &AtomicBool,
) -> std::task::Poll<F::Output> {
    /// Dropped only when the poll unwinds.
    struct Unwinding<'a>(&'a AtomicBool);
    impl Drop for Unwinding<'_> {
        fn drop(&mut self) {
            // Relaxed: the permit that reads it is dropped later in this
            // same unwinding, on this thread.
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let guard = Unwinding(own_panic);
    let polled = fut.poll(cx);
    std::mem::forget(guard);
    polled
}

/// A one-shot handoff from a deadline worker to its caller, exact about who
/// gave up first: the result is either taken by the caller or counted late,
/// never both, never neither.
#[doc(hidden)]
#[derive(Debug)]
pub struct Handoff<R> {
    slot: Mutex<HandoffState<R>>,
    ready: Condvar,
}

#[derive(Debug)]
enum HandoffState<R> {
    Waiting,
    Delivered(R),
    Abandoned,
}

impl<R> Default for Handoff<R> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(HandoffState::Waiting),
            ready: Condvar::new(),
        }
    }
}

impl<R> Handoff<R> {
    /// An empty handoff.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands over the result; gives it back when the caller has already
    /// gone (so it is counted late before it is dropped).
    ///
    /// # Errors
    /// The result, late.
    pub fn deliver(&self, result: R) -> Result<(), R> {
        let mut slot = self.slot.lock();
        if matches!(*slot, HandoffState::Abandoned) {
            return Err(result);
        }
        *slot = HandoffState::Delivered(result);
        drop(slot);
        self.ready.notify_one();
        Ok(())
    }

    /// The result, or `None` (and abandoned) once `timeout` passes. A
    /// timeout too long to represent as an instant (`Duration::MAX`) means
    /// no deadline: the caller waits for the result.
    pub fn wait(&self, timeout: Duration) -> Option<R> {
        let deadline = deadline_after(timeout);
        let mut slot = self.slot.lock();
        loop {
            if let HandoffState::Delivered(_) = *slot {
                return take(&mut slot);
            }
            match deadline {
                None => slot = self.ready.wait(slot),
                Some(deadline) => {
                    let (guard, timed_out) = self.ready.wait_until(slot, deadline);
                    slot = guard;
                    if timed_out {
                        // A result delivered in the same instant is taken.
                        let result = take(&mut slot);
                        if result.is_none() {
                            *slot = HandoffState::Abandoned;
                        }
                        return result;
                    }
                }
            }
        }
    }
}

/// The delivered result, leaving the slot abandoned (nothing more can be
/// delivered); `None` if nothing was delivered.
fn take<R>(slot: &mut HandoffState<R>) -> Option<R> {
    match std::mem::replace(slot, HandoffState::Abandoned) {
        HandoffState::Delivered(result) => Some(result),
        other => {
            *slot = other;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_needs_the_precise_end_past_the_deadline_plus_the_start_lag() {
        let timeout = 5_000_000;
        // Ended just at the deadline plus the lag: not surely late.
        assert!(!surely_late(1_000, 1_000 + START_LAG + timeout, timeout));
        assert!(surely_late(1_000, 1_000 + START_LAG + timeout + 1, timeout));
        // A coarse clock that crossed a tick is not enough on its own.
        let tick = COARSE_TICK.as_nanos() as u64;
        assert!(!surely_late(0, tick + 1, 1));
        // No overflow at the extremes.
        assert!(!surely_late(u64::MAX, u64::MAX, 0));
        assert!(!surely_late(0, u64::MAX, u64::MAX));
        assert!(surely_late(0, u64::MAX, u64::MAX - START_LAG - 1));
    }

    #[test]
    fn a_coarse_late_is_confirmed_on_the_real_clock_and_trusted_on_an_injected_one() {
        let system = ClockHandle::System.ready();
        // Started now, by the coarse clock: the real clock has not seen a
        // second pass, whatever the coarse one says.
        let start = system.coarse_now();
        assert!(!confirm_late(&system, start, PRECISE_BELOW));
        // Started more than the lag before a deadline that has passed:
        // surely late.
        while system.now() <= 2 * START_LAG {
            std::thread::sleep(COARSE_TICK);
        }
        assert!(confirm_late(&system, 0, START_LAG / 2));
        // An injected clock's coarse reading is exact.
        let manual = ClockHandle::from_clock(crate::ManualClock::new());
        assert!(confirm_late(&manual, 0, 0));
    }

    #[test]
    fn a_deadline_too_far_to_represent_is_none() {
        assert!(deadline_after(Duration::MAX).is_none());
        assert!(deadline_after(Duration::from_secs(1)).is_some());
    }

    #[test]
    fn a_handoff_with_no_deadline_waits_for_the_result() {
        let handoff = std::sync::Arc::new(Handoff::new());
        let worker = std::sync::Arc::clone(&handoff);
        let thread = std::thread::spawn(move || worker.deliver(7).is_ok());
        assert_eq!(handoff.wait(Duration::MAX), Some(7));
        assert!(thread.join().unwrap());
    }

    #[test]
    fn a_handoff_past_its_deadline_refuses_the_result() {
        let handoff = Handoff::new();
        assert_eq!(handoff.wait(Duration::from_millis(1)), None);
        assert_eq!(handoff.deliver(7), Err(7), "given back, to be counted late");
    }
}

/// Tests that pin the lateness rule's constants, which mutation testing
/// found unchecked.
#[cfg(test)]
mod mutants {
    use super::*;

    #[test]
    fn the_start_lag_is_two_coarse_ticks() {
        let tick = duration_nanos_const(COARSE_TICK);
        // A coarse start up to two ticks behind the real one: a precise end
        // two ticks after it shows no time surely elapsed.
        assert!(!surely_late(0, 2 * tick, 0));
        assert!(surely_late(0, 2 * tick + 1, 0));
        assert_eq!(START_LAG, 2 * tick);
        // Precise timing for timeouts under one hundred ticks (one second).
        assert_eq!(PRECISE_BELOW, 100 * tick);
        assert_eq!(PRECISE_BELOW, 1_000_000_000);
    }
}
