//! The state machine of one breaker.
//!
//! # Implementation notes
//!
//! The state lives in one `AtomicU64`, the *word*:
//!
//! ```text
//!  63                32 31             3 2    0
//! +--------------------+----------------+------+
//! | consecutive fails  |   generation   | mode |
//! +--------------------+----------------+------+
//! ```
//!
//! The hot path (a closed circuit, a successful call) only *loads* the word,
//! so threads share its cache line in read mode and never bounce it. Every
//! *write* to the word, and every change to the rest of the state
//! ([`Slow`]), happens under one mutex: writes are rare (failures,
//! transitions, probes), and a single writer makes the invariants below easy
//! to hold and for loom to check.
//!
//! The generation counts transitions. A permit remembers the generation that
//! admitted it, and its outcome moves the state only if the generation is
//! unchanged: a slow call admitted before the circuit opened cannot close it,
//! and a probe of an earlier half-open period cannot free a slot of the
//! current one.
//!
//! A probe also holds a *ticket*, and the core keeps the tickets of the
//! probes in flight with the time each was admitted. A probe that has been
//! in flight for `timeout_duration` when the next call arrives is
//! *reclaimed*: it counts as a [`Timeout`](FailureType::Timeout) failure, its
//! slot is free, and the circuit reopens
//! ([`TransitionCause::ProbeTimedOut`]). Its ticket is remembered, so the
//! result it brings if it ever returns is counted as late and nothing else.
//!
//! A call admitted by a *closed* circuit holds no slot and no ticket: one
//! that never returns costs its own thread and nothing else. The circuit
//! keeps working for every other call, and that call is counted only when
//! it returns (see [`Permit`](crate::Permit)).
//!
//! # Invariants
//!
//! 1. `slow.probes.len() <= config.half_open_max_calls` at all times, and
//!    it is zero outside half-open. Tickets in `slow.probes` are distinct.
//! 2. Each transition increments the generation exactly once and
//!    `slow.transitions` exactly once.
//! 3. Every admitted permit is settled exactly once: by `record`, or by its
//!    drop (cancellation or panic).
//! 4. `open_until` is written before the word that makes it relevant, so a
//!    reader that sees `Open` in the word (Acquire) sees its deadline.

use crate::clock::{ClockHandle, duration_nanos};
use crate::config::CircuitBreakerConfig;
use crate::counters::{Count, Counters};
use crate::error::{FailureType, FallbackReason, Outcome};
use crate::state::{CircuitState, DetailedState};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::telemetry::LazyTelemetry;
use std::time::Duration;

const MODE_BITS: u32 = 3;
const MODE_MASK: u64 = (1 << MODE_BITS) - 1;
const GENERATION_BITS: u32 = 29;
const GENERATION_MASK: u64 = ((1 << GENERATION_BITS) - 1) << MODE_BITS;
const FAILS_SHIFT: u32 = 32;

const MODE_CLOSED: u64 = 0;
const MODE_OPEN: u64 = 1;
const MODE_HALF_OPEN: u64 = 2;
const MODE_FORCED_OPEN: u64 = 3;
const MODE_FORCED_CLOSED: u64 = 4;

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(mode: u64, generation: u32, fails: u32) -> Self {
        Self(
            mode | ((u64::from(generation) << MODE_BITS) & GENERATION_MASK)
                | (u64::from(fails) << FAILS_SHIFT),
        )
    }
    fn mode(self) -> u64 {
        self.0 & MODE_MASK
    }
    fn generation(self) -> u32 {
        ((self.0 & GENERATION_MASK) >> MODE_BITS) as u32
    }
    fn fails(self) -> u32 {
        (self.0 >> FAILS_SHIFT) as u32
    }
    fn detailed(self) -> DetailedState {
        match self.mode() {
            MODE_OPEN => DetailedState::Open,
            MODE_HALF_OPEN => DetailedState::HalfOpen,
            MODE_FORCED_OPEN => DetailedState::ForcedOpen,
            MODE_FORCED_CLOSED => DetailedState::ForcedClosed,
            _ => DetailedState::Closed,
        }
    }
}

fn mode_of(state: DetailedState) -> u64 {
    match state {
        DetailedState::Closed => MODE_CLOSED,
        DetailedState::Open => MODE_OPEN,
        DetailedState::HalfOpen => MODE_HALF_OPEN,
        DetailedState::ForcedOpen => MODE_FORCED_OPEN,
        DetailedState::ForcedClosed => MODE_FORCED_CLOSED,
    }
}

/// What admitted a call, remembered until its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted by a closed circuit of this generation.
    Closed(u32),
    /// Admitted as a half-open probe, holding a slot.
    Probe {
        /// The generation of its half-open period.
        generation: u32,
        /// Which probe of its period: see [`Slow::probes`].
        ticket: u32,
    },
    /// Admitted by a forced-closed circuit: counted, never moves the state.
    Bypass,
}

/// An admission, with the transition it caused, if any.
pub(crate) type Admitted = (Admission, Option<Transition>);

/// One state change, reported to the caller so it can emit events after the
/// lock is released.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Transition {
    pub(crate) from: DetailedState,
    pub(crate) to: DetailedState,
    pub(crate) cause: TransitionCause,
    /// Probes this transition reclaimed as timeouts, each due a `Timeout`
    /// event.
    pub(crate) probes_timed_out: u32,
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionCause {
    /// Consecutive failures reached `failure_threshold`.
    FailureThreshold,
    /// The failure rate over the window reached `failure_rate_threshold`.
    FailureRate,
    /// The dependency answered "rate limited" with a retry-after.
    RetryAfter,
    /// The open period ended and a call arrived.
    RecoveryTimeout,
    /// A half-open probe failed.
    ProbeFailed,
    /// A half-open probe was still running `timeout_duration` after it was
    /// admitted when the next call arrived: it counts as a timeout, its
    /// slot is reclaimed, and the circuit opens for another
    /// `recovery_timeout`. A result it brings later is counted only in
    /// [`Metrics::late_results`](crate::Metrics::late_results).
    ProbeTimedOut,
    /// Enough half-open probes succeeded.
    ProbesSucceeded,
    /// An operator forced the state.
    Manual,
}

/// State that only changes under the mutex.
#[derive(Debug)]
struct Slow {
    /// The probes in flight, oldest first: ticket and admission time.
    /// (A `Vec`, not a `VecDeque`: it holds at most `half_open_max_calls`
    /// entries, usually one, and is 8 bytes smaller in every breaker.)
    probes: Vec<(u32, u64)>,
    /// The ticket of the next probe; wraps.
    next_ticket: u32,
    /// Probes reclaimed as timeouts whose result has not come back yet, by
    /// [`probe_key`]: their result is late and counts nowhere else.
    /// A `Vec`, not a set: it is almost always empty, and 24 bytes smaller
    /// in every breaker than a `HashSet`.
    reclaimed: Vec<u64>,
    probe_successes: u32,
    /// Trips since the circuit last closed, for backoff.
    trips_in_a_row: u32,
    transitions: u64,
    last_transition_at: Option<u64>,
    last_failure: Option<(FailureType, u64)>,
    window: Option<Window>,
    /// Results of deadline workers that arrived after their caller left,
    /// and of reclaimed probes: rare, so kept here rather than in a counter
    /// slot.
    late_results: u64,
}

impl Slow {
    /// Takes the probe `(generation, ticket)` out of the books: `Current`
    /// (its slot is freed) when it is a probe in flight of the half-open
    /// period `word` shows, `Late` (counted) when it was reclaimed, `Stale`
    /// otherwise.
    fn settle_probe(&mut self, word: Word, generation: u32, ticket: u32) -> ProbeStatus {
        if word.mode() == MODE_HALF_OPEN && word.generation() == generation {
            if let Some(at) = self.probes.iter().position(|&(t, _)| t == ticket) {
                self.probes.remove(at);
                return ProbeStatus::Current;
            }
        }
        let key = probe_key(generation, ticket);
        if let Some(at) = self
            .reclaimed
            .iter()
            .position(|&reclaimed| reclaimed == key)
        {
            self.reclaimed.swap_remove(at);
            self.late_results += 1;
            return ProbeStatus::Late;
        }
        ProbeStatus::Stale
    }
}

/// Where a probe's outcome stands; see [`Slow::settle_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeStatus {
    Current,
    Stale,
    Late,
}

fn probe_key(generation: u32, ticket: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(ticket)
}

/// The last `size` outcomes of closed-state calls, for the failure rate.
#[derive(Debug)]
struct Window {
    /// The ring, grown on demand up to `size`.
    failed: Vec<bool>,
    size: usize,
    next: usize,
    len: usize,
    failures: usize,
}

impl Window {
    /// An empty window of `size` outcomes. Its memory grows with the
    /// outcomes pushed, so a huge `size` costs nothing up front.
    fn new(size: u32) -> Self {
        Self {
            failed: Vec::new(),
            size: size.max(1) as usize,
            next: 0,
            len: 0,
            failures: 0,
        }
    }

    fn push(&mut self, failed: bool) {
        if self.next == self.failed.len() {
            // Still growing: the slot does not exist yet.
            self.failed.push(false);
        }
        if self.len == self.size {
            self.failures -= usize::from(self.failed[self.next]);
        } else {
            self.len += 1;
        }
        self.failed[self.next] = failed;
        self.failures += usize::from(failed);
        self.next = (self.next + 1) % self.size;
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.failures = 0;
    }

    fn rate(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            self.failures as f64 / self.len as f64
        }
    }
}

/// A consistent view of the state for metrics and status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateSnapshot {
    pub(crate) state: DetailedState,
    pub(crate) consecutive_failures: u32,
    pub(crate) transitions: u64,
    pub(crate) last_transition_at: Option<u64>,
    pub(crate) last_failure: Option<(FailureType, u64)>,
    pub(crate) probes_in_flight: u32,
    pub(crate) window: Option<(usize, usize)>,
    pub(crate) open_until: Option<u64>,
    pub(crate) late_results: u64,
}

#[derive(Debug)]
pub(crate) struct Core {
    word: AtomicU64,
    /// Clock time (ns) at which an open circuit may admit a probe.
    open_until: AtomicU64,
    slow: Mutex<Slow>,
    pub(crate) counters: Counters,
    /// The sampled latency histogram and transitions by target state.
    pub(crate) telemetry: LazyTelemetry,
    pub(crate) clock: ClockHandle,
    failure_threshold: u32,
    success_threshold: u32,
    half_open_max_calls: u32,
    recovery_nanos: u64,
    /// `timeout_duration` in nanoseconds; `u64::MAX` means "never".
    pub(crate) timeout_nanos: u64,
    /// The longest open period a retry-after may ask for.
    max_retry_nanos: u64,
    backoff: Option<(f64, u64)>,
    failure_rate: Option<(f64, u32)>,
    /// The fleet this breaker shares its state with, once shared: told of
    /// failures and of cleared failure counts, from cold paths only, and
    /// with a failure-rate window of closed-state successes (which take
    /// the lock already) until the fleet's window is full of successes.
    #[cfg(feature = "redis")]
    pub(crate) fleet: crate::shared::FleetSlot,
}

impl Core {
    pub(crate) fn new(config: &CircuitBreakerConfig, clock: ClockHandle) -> Self {
        Self {
            word: AtomicU64::new(Word::new(MODE_CLOSED, 0, 0).0),
            open_until: AtomicU64::new(0),
            slow: Mutex::new(Slow {
                probes: Vec::new(),
                next_ticket: 0,
                reclaimed: Vec::new(),
                probe_successes: 0,
                trips_in_a_row: 0,
                transitions: 0,
                last_transition_at: None,
                last_failure: None,
                window: config
                    .failure_rate_threshold
                    .map(|_| Window::new(config.sliding_window_size)),
                late_results: 0,
            }),
            counters: Counters::new(),
            telemetry: LazyTelemetry::default(),
            clock,
            failure_threshold: config.failure_threshold,
            success_threshold: config.success_threshold,
            half_open_max_calls: config.half_open_max_calls,
            recovery_nanos: duration_nanos(config.recovery_timeout),
            timeout_nanos: duration_nanos(config.timeout_duration),
            // A retry-after is capped by `max_retry_after` and, with
            // backoff, by `max_open_duration`: the smaller cap wins.
            max_retry_nanos: duration_nanos(match config.backoff {
                Some(backoff) => backoff.max_open_duration.min(config.max_retry_after),
                None => config.max_retry_after,
            }),
            backoff: config
                .backoff
                .map(|b| (b.multiplier, duration_nanos(b.max_open_duration))),
            failure_rate: config
                .failure_rate_threshold
                .map(|rate| (rate, config.minimum_calls)),
            #[cfg(feature = "redis")]
            fleet: crate::shared::FleetSlot::default(),
        }
    }

    #[inline]
    fn load(&self) -> Word {
        // Acquire: pairs with the Release store in `store`, so a reader that
        // sees `Open` also sees the `open_until` written before it.
        Word(self.word.load(Ordering::Acquire))
    }

    /// Writes the word; the caller holds the mutex.
    fn store(&self, word: Word) {
        // Release: publishes `open_until` (written before) with the word.
        self.word.store(word.0, Ordering::Release);
    }

    pub(crate) fn state(&self) -> DetailedState {
        self.load().detailed()
    }

    /// Admits a call, or says why not. Rejections are counted here. A
    /// transition, if any, is the one this admission caused (open to
    /// half-open) or found the rejection with.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Result<Admitted, (FallbackReason, Option<Transition>)> {
        let word = self.load();
        match word.mode() {
            MODE_CLOSED => Ok((Admission::Closed(word.generation()), None)),
            MODE_FORCED_CLOSED => Ok((Admission::Bypass, None)),
            _ => self.acquire_slow(word),
        }
    }

    #[cold]
    fn acquire_slow(&self, word: Word) -> Result<Admitted, (FallbackReason, Option<Transition>)> {
        if word.mode() == MODE_FORCED_OPEN {
            self.counters.add(Count::RejectedOpen, 1);
            return Err((FallbackReason::ForcedOpen, None));
        }
        if let Some(retry_after) = self.open_rejection() {
            return Err((FallbackReason::Open { retry_after }, None));
        }
        let mut slow = self.slow.lock();
        // Re-read under the lock: another thread may have moved the state.
        let word = self.load();
        let mut transition = None;
        match word.mode() {
            MODE_CLOSED => return Ok((Admission::Closed(word.generation()), None)),
            MODE_FORCED_CLOSED => return Ok((Admission::Bypass, None)),
            MODE_FORCED_OPEN => {
                drop(slow);
                self.counters.add(Count::RejectedOpen, 1);
                return Err((FallbackReason::ForcedOpen, None));
            }
            MODE_OPEN => {
                let now = self.clock.now();
                let until = self.open_until.load(Ordering::Relaxed);
                if now < until {
                    drop(slow);
                    let retry_after = self.count_open_rejection(now, until);
                    return Err((FallbackReason::Open { retry_after }, None));
                }
                transition = Some(self.transition(
                    &mut slow,
                    word,
                    DetailedState::HalfOpen,
                    TransitionCause::RecoveryTimeout,
                    now,
                ));
            }
            _ => {
                // Half-open: a probe that has run too long gives its slot
                // back as a timeout, and the circuit reopens.
                let now = self.clock.now();
                if let Some(transition) = self.reclaim_overdue_probes(&mut slow, word, now) {
                    drop(slow);
                    let until = self.open_until.load(Ordering::Relaxed);
                    let retry_after = self.count_open_rejection(now, until);
                    return Err((FallbackReason::Open { retry_after }, Some(transition)));
                }
            }
        }
        // Half-open: reserve a probe slot, atomically with the check.
        if slow.probes.len() < self.half_open_max_calls as usize {
            let now = self.clock.now();
            let ticket = slow.next_ticket;
            slow.next_ticket = ticket.wrapping_add(1);
            slow.probes.push((ticket, now));
            let generation = self.load().generation();
            return Ok((Admission::Probe { generation, ticket }, transition));
        }
        drop(slow);
        self.counters.add(Count::RejectedHalfOpen, 1);
        Err((FallbackReason::HalfOpenFull, transition))
    }

    /// In half-open, counts every probe in flight for `timeout_duration` or
    /// longer at `now` as a timeout and reopens the circuit; `None` when no
    /// probe is overdue. The caller holds the mutex (`slow`).
    fn reclaim_overdue_probes(&self, slow: &mut Slow, word: Word, now: u64) -> Option<Transition> {
        let mut timed_out = 0u32;
        // Oldest first: admissions are in clock order.
        while let Some(&(ticket, admitted_at)) = slow.probes.first() {
            // `u64::MAX` is a timeout too long to represent: never overdue.
            let overdue = self.timeout_nanos != u64::MAX
                && now.saturating_sub(admitted_at) >= self.timeout_nanos;
            // The ticket about to be issued would repeat this probe's (2^32
            // probes since): count it as overdue too, so tickets in flight
            // stay distinct.
            if !(overdue || ticket == slow.next_ticket) {
                break;
            }
            slow.probes.remove(0);
            slow.reclaimed.push(probe_key(word.generation(), ticket));
            self.counters.add_failure(FailureType::Timeout);
            timed_out = timed_out.saturating_add(1);
        }
        if timed_out == 0 {
            return None;
        }
        slow.last_failure = Some((FailureType::Timeout, now));
        let mut transition = self.transition(
            slow,
            word,
            DetailedState::Open,
            TransitionCause::ProbeTimedOut,
            now,
        );
        transition.probes_timed_out = timed_out;
        Some(transition)
    }

    /// For an open circuit whose period has not ended, counts the rejection
    /// and says how long until a probe; `None` in any other case, for
    /// [`acquire`](Self::acquire) to decide.
    #[inline(always)]
    pub(crate) fn open_rejection(&self) -> Option<Duration> {
        let wait = self.open_wait()?;
        self.counters.add(Count::RejectedOpen, 1);
        Some(wait)
    }

    /// As [`open_rejection`](Self::open_rejection), but counts nothing: the
    /// caller counts the rejection once it knows how its fallback went.
    #[inline(always)]
    pub(crate) fn open_wait(&self) -> Option<Duration> {
        if self.load().mode() != MODE_OPEN {
            return None;
        }
        // Coarse: a probe admitted a tick late does no harm, and the
        // rejection path then reads no clock.
        let now = self.clock.coarse_now();
        // Relaxed: ordered by the Acquire load of the word (invariant 4).
        let until = self.open_until.load(Ordering::Relaxed);
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Counts a deadline worker's result that arrived after its caller left.
    /// (A reclaimed probe's result is counted late by the core itself.)
    pub(crate) fn count_late_result(&self) {
        self.slow.lock().late_results += 1;
    }

    /// Counts a call an open circuit refused at `now`; the time to wait.
    #[inline(always)]
    fn count_open_rejection(&self, now: u64, until: u64) -> Duration {
        self.counters.add(Count::RejectedOpen, 1);
        Duration::from_nanos(until - now)
    }

    /// The generation of a closed circuit, which admits a call with no
    /// further check; `None` in any other state.
    #[inline(always)]
    pub(crate) fn closed_generation(&self) -> Option<u32> {
        let word = self.load();
        (word.mode() == MODE_CLOSED).then(|| word.generation())
    }

    /// Records the success of a call admitted by a closed circuit.
    #[inline(always)]
    pub(crate) fn record_closed_success(&self, generation: u32) {
        // Only reads, unless failures must be reset or a failure-rate
        // window must see the success.
        if self.load().fails() != 0 || self.failure_rate.is_some() {
            self.closed_success_slow(generation);
        }
        // Last, after the loads: in the shared shard the add is a locked
        // instruction, which would hold back any load after it.
        self.counters.add(Count::Success, 1);
    }

    /// Records the outcome of an admitted call and moves the state.
    #[inline(always)]
    pub(crate) fn record(&self, admission: Admission, outcome: Outcome) -> Option<Transition> {
        if let (Outcome::Success, Admission::Closed(generation)) = (outcome, admission) {
            self.record_closed_success(generation);
            return None;
        }
        self.record_slow(admission, outcome)
    }

    #[inline(never)]
    fn record_slow(&self, admission: Admission, outcome: Outcome) -> Option<Transition> {
        match outcome {
            Outcome::Success => match admission {
                Admission::Closed(generation) => {
                    self.record_closed_success(generation);
                    None
                }
                Admission::Probe { generation, ticket } => self.probe_success(generation, ticket),
                Admission::Bypass => {
                    self.counters.add(Count::Success, 1);
                    None
                }
            },
            Outcome::Failure(failure_type) => self.failure(admission, failure_type, None),
            Outcome::DependencyRateLimited { retry_after } => {
                self.failure(admission, FailureType::RateLimit, retry_after)
            }
            Outcome::Ignored => {
                if !self.release(admission) {
                    self.counters.add(Count::Ignored, 1);
                }
                None
            }
        }
    }

    /// Settles a permit whose call never finished: cancelled (dropped) or
    /// panicked. A panic is an `Error` failure; a cancellation counts
    /// neither way. Either way a probe's slot is given back. A reclaimed
    /// probe's abandonment is its late result.
    pub(crate) fn abandon(&self, admission: Admission, panicked: bool) -> Option<Transition> {
        if panicked {
            return self.failure(admission, FailureType::Error, None);
        }
        if !self.release(admission) {
            self.counters.add(Count::Cancelled, 1);
        }
        None
    }

    /// Gives back the slot of a probe whose outcome moves nothing; `true`
    /// when the probe was reclaimed and this is its late result (counted
    /// here, so the caller counts nothing more).
    pub(crate) fn release(&self, admission: Admission) -> bool {
        if let Admission::Probe { generation, ticket } = admission {
            let mut slow = self.slow.lock();
            let word = self.load();
            let status = slow.settle_probe(word, generation, ticket);
            #[cfg(feature = "redis")]
            if status == ProbeStatus::Current {
                self.probe_settled(generation, ticket);
            }
            return status == ProbeStatus::Late;
        }
        false
    }

    /// Gives a probe's fleet-wide lease back when the probe ended without
    /// a transition (which clears every lease itself).
    #[cfg(feature = "redis")]
    #[cold]
    fn probe_settled(&self, generation: u32, ticket: u32) {
        if let Some(member) = self.fleet.get() {
            member.note_probe_done(generation, ticket);
        }
    }

    #[cold]
    fn closed_success_slow(&self, generation: u32) {
        let mut slow = self.slow.lock();
        let word = self.load();
        if word.mode() != MODE_CLOSED || word.generation() != generation {
            return;
        }
        if let Some(window) = &mut slow.window {
            window.push(false);
            // Unless the fleet's window is full of successes, which one
            // more cannot change: then not even the member is looked up.
            #[cfg(feature = "redis")]
            if self.fleet.is_set() && !self.fleet.window_quiet() {
                if let Some(member) = self.fleet.get() {
                    member.note_window_success();
                }
            }
        }
        if word.fails() != 0 {
            self.store(Word::new(MODE_CLOSED, generation, 0));
            #[cfg(feature = "redis")]
            if let Some(member) = self.fleet.get() {
                member.note_success();
            }
        }
    }

    fn probe_success(&self, generation: u32, ticket: u32) -> Option<Transition> {
        let mut slow = self.slow.lock();
        let word = self.load();
        match slow.settle_probe(word, generation, ticket) {
            ProbeStatus::Late => return None,
            // Counted under the lock, before any transition it causes.
            ProbeStatus::Stale => {
                self.counters.add(Count::Success, 1);
                return None;
            }
            ProbeStatus::Current => self.counters.add(Count::Success, 1),
        }
        slow.probe_successes += 1;
        if slow.probe_successes < self.success_threshold {
            #[cfg(feature = "redis")]
            self.probe_settled(generation, ticket);
            return None;
        }
        let now = self.clock.now();
        Some(self.transition(
            &mut slow,
            word,
            DetailedState::Closed,
            TransitionCause::ProbesSucceeded,
            now,
        ))
    }

    fn failure(
        &self,
        admission: Admission,
        failure_type: FailureType,
        retry_after: Option<Duration>,
    ) -> Option<Transition> {
        let now = self.clock.now();
        // Capped: a retry-after of 30 years must not keep the circuit open
        // for 30 years.
        let retry_until =
            retry_after.map(|d| now.saturating_add(duration_nanos(d).min(self.max_retry_nanos)));
        let mut slow = self.slow.lock();
        let word = self.load();
        let current = match admission {
            Admission::Closed(generation) => {
                word.mode() == MODE_CLOSED && word.generation() == generation
            }
            Admission::Probe { generation, ticket } => {
                match slow.settle_probe(word, generation, ticket) {
                    // Already counted as a timeout when it was reclaimed.
                    ProbeStatus::Late => return None,
                    ProbeStatus::Stale => false,
                    ProbeStatus::Current => true,
                }
            }
            Admission::Bypass => false,
        };
        // Under the lock, before any transition it causes: a snapshot that
        // sees the new state also sees this failure.
        self.counters.add_failure(failure_type);
        slow.last_failure = Some((failure_type, now));
        if !current {
            // A stale outcome still honours a retry-after while open.
            if let (Some(until), MODE_OPEN) = (retry_until, word.mode()) {
                self.extend_open(until);
            }
            return None;
        }
        let cause = match admission {
            Admission::Probe { .. } => Some(TransitionCause::ProbeFailed),
            _ => {
                let fails = word.fails().saturating_add(1);
                let rate_tripped = match (&mut slow.window, self.failure_rate) {
                    (Some(window), Some((threshold, minimum))) => {
                        window.push(true);
                        window.len >= minimum as usize
                            && window.rate() >= threshold
                            && !self.fleet_decides_rate()
                    }
                    _ => false,
                };
                if fails >= self.failure_threshold {
                    Some(TransitionCause::FailureThreshold)
                } else if rate_tripped {
                    Some(TransitionCause::FailureRate)
                } else if retry_until.is_some() {
                    Some(TransitionCause::RetryAfter)
                } else {
                    self.store(Word::new(MODE_CLOSED, word.generation(), fails));
                    #[cfg(feature = "redis")]
                    if let Some(member) = self.fleet.get() {
                        member.note_failure();
                    }
                    None
                }
            }
        };
        let cause = cause?;
        let transition = self.transition(&mut slow, word, DetailedState::Open, cause, now);
        if let Some(until) = retry_until {
            if cause == TransitionCause::RetryAfter {
                // Tripped by the retry-after alone: open exactly that long.
                self.open_until.store(until, Ordering::Relaxed);
            } else {
                self.extend_open(until);
            }
        }
        Some(transition)
    }

    /// Whether a shared window across the fleet, not this one, trips the
    /// circuit on the failure rate (while the fleet is connected).
    #[cfg(feature = "redis")]
    fn fleet_decides_rate(&self) -> bool {
        self.fleet.get().is_some_and(|member| member.decides_rate())
    }

    #[cfg(not(feature = "redis"))]
    fn fleet_decides_rate(&self) -> bool {
        false
    }

    /// Keeps an open circuit open until at least `until`.
    fn extend_open(&self, until: u64) {
        // Relaxed: written under the mutex, read after an Acquire of the word.
        if self.open_until.load(Ordering::Relaxed) < until {
            self.open_until.store(until, Ordering::Relaxed);
        }
    }

    /// Moves to `to`; the caller holds the mutex (`slow`).
    fn transition(
        &self,
        slow: &mut Slow,
        word: Word,
        to: DetailedState,
        cause: TransitionCause,
        now: u64,
    ) -> Transition {
        slow.probes.clear();
        slow.probe_successes = 0;
        match to {
            DetailedState::Open => {
                slow.trips_in_a_row = slow.trips_in_a_row.saturating_add(1);
                let open_for = self.open_duration(slow.trips_in_a_row);
                // Written before the word (invariant 4).
                self.open_until
                    .store(now.saturating_add(open_for), Ordering::Relaxed);
            }
            DetailedState::Closed => {
                slow.trips_in_a_row = 0;
                if let Some(window) = &mut slow.window {
                    window.clear();
                }
            }
            _ => {}
        }
        slow.transitions += 1;
        self.telemetry.record_transition(to);
        slow.last_transition_at = Some(now);
        let generation = word.generation().wrapping_add(1);
        self.store(Word::new(mode_of(to), generation, 0));
        Transition {
            from: word.detailed(),
            to,
            cause,
            probes_timed_out: 0,
        }
    }

    fn open_duration(&self, trips_in_a_row: u32) -> u64 {
        match self.backoff {
            None => self.recovery_nanos,
            Some((multiplier, cap)) => {
                let exponent = i32::try_from(trips_in_a_row - 1).unwrap_or(i32::MAX);
                let scaled = self.recovery_nanos as f64 * multiplier.powi(exponent);
                if scaled >= cap as f64 {
                    cap
                } else {
                    scaled as u64
                }
            }
        }
    }

    /// Forces a state, or (with `Closed`) resets to a fresh closed circuit.
    pub(crate) fn force(&self, to: DetailedState) -> Option<Transition> {
        let mut slow = self.slow.lock();
        let word = self.load();
        let now = self.clock.now();
        if to == DetailedState::Closed {
            slow.trips_in_a_row = 0;
            if let Some(window) = &mut slow.window {
                window.clear();
            }
            if word.detailed() == DetailedState::Closed {
                // Already closed: a reset only clears the failure count.
                self.store(Word::new(MODE_CLOSED, word.generation(), 0));
                return None;
            }
        } else if word.detailed() == to {
            return None;
        }
        Some(self.transition(&mut slow, word, to, TransitionCause::Manual, now))
    }

    /// The open period's end (clock nanoseconds) while open.
    #[cfg(feature = "redis")]
    pub(crate) fn open_until(&self) -> Option<u64> {
        let _slow = self.slow.lock();
        (self.load().mode() == MODE_OPEN).then(|| self.open_until.load(Ordering::Relaxed))
    }

    /// Takes on a state another replica wrote: `until` is the end of an
    /// open period on this breaker's clock. An automatic state never
    /// overrides a forced one here, and an open period is only extended.
    /// The transition, if any, is for events only: it is not shared again.
    #[cfg(feature = "redis")]
    pub(crate) fn adopt(
        &self,
        to: DetailedState,
        until: u64,
        cause: TransitionCause,
    ) -> Option<Transition> {
        let mut slow = self.slow.lock();
        let word = self.load();
        let now = self.clock.now();
        let local = word.detailed();
        match to {
            DetailedState::Open => match local {
                DetailedState::Closed | DetailedState::HalfOpen => {
                    let transition = self.transition(&mut slow, word, to, cause, now);
                    // The fleet's period, not this replica's backoff.
                    self.open_until.store(until, Ordering::Relaxed);
                    Some(transition)
                }
                DetailedState::Open => {
                    self.extend_open(until);
                    None
                }
                _ => None,
            },
            DetailedState::ForcedOpen | DetailedState::ForcedClosed | DetailedState::Closed
                if local != to =>
            {
                if to == DetailedState::Closed {
                    slow.trips_in_a_row = 0;
                }
                Some(self.transition(&mut slow, word, to, cause, now))
            }
            _ => None,
        }
    }

    /// Takes on the fleet's consecutive-failure count while closed: a
    /// higher count than this replica's, or zero once a success anywhere
    /// cleared it. Never reaches the threshold here: the fleet trips.
    #[cfg(feature = "redis")]
    pub(crate) fn adopt_failures(&self, fleet: u32) {
        let _slow = self.slow.lock();
        let word = self.load();
        if word.mode() != MODE_CLOSED {
            return;
        }
        let fleet = fleet.min(self.failure_threshold.saturating_sub(1));
        if fleet == 0 || fleet > word.fails() {
            self.store(Word::new(MODE_CLOSED, word.generation(), fleet));
        }
    }

    pub(crate) fn snapshot(&self) -> StateSnapshot {
        let slow = self.slow.lock();
        let word = self.load();
        StateSnapshot {
            state: word.detailed(),
            consecutive_failures: word.fails(),
            transitions: slow.transitions,
            last_transition_at: slow.last_transition_at,
            last_failure: slow.last_failure,
            probes_in_flight: u32::try_from(slow.probes.len()).unwrap_or(u32::MAX),
            window: slow.window.as_ref().map(|w| (w.len, w.failures)),
            open_until: (word.mode() == MODE_OPEN).then(|| self.open_until.load(Ordering::Relaxed)),
            late_results: slow.late_results,
        }
    }

    pub(crate) fn simple_state(&self) -> CircuitState {
        self.state().simple()
    }
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn a_window_grows_with_its_outcomes_not_with_its_size() {
        let mut huge = Window::new(u32::MAX);
        assert_eq!(huge.failed.capacity(), 0, "nothing allocated up front");
        huge.push(true);
        huge.push(false);
        assert_eq!((huge.len, huge.failures, huge.failed.len()), (2, 1, 2));

        let mut small = Window::new(3);
        for failed in [true, true, false, false, true] {
            small.push(failed);
        }
        // The last three: false, false, true.
        assert_eq!((small.len, small.failures, small.failed.len()), (3, 1, 3));
        assert!((small.rate() - 1.0 / 3.0).abs() < 1e-12);
        small.clear();
        small.push(true);
        assert_eq!((small.len, small.failures), (1, 1));
    }
}

/// Tests that pin behaviour mutation testing found unchecked: the word's
/// layout, admissions that must not take the lock, and decisions made on
/// the state found under the lock when the caller's view was stale.
#[cfg(test)]
mod mutants {
    use super::*;
    use crate::ManualClock;
    use std::sync::mpsc;

    const ALL_MODES: [u64; 5] = [
        MODE_CLOSED,
        MODE_OPEN,
        MODE_HALF_OPEN,
        MODE_FORCED_OPEN,
        MODE_FORCED_CLOSED,
    ];

    fn core() -> Core {
        let config = CircuitBreakerConfig::builder()
            .failure_threshold(1)
            .half_open_max_calls(1)
            .recovery_timeout(Duration::from_secs(10))
            .build()
            .expect("valid configuration");
        Core::new(&config, ClockHandle::from_clock(ManualClock::new()))
    }

    /// Runs `f` on another thread while this one holds the state mutex:
    /// `Some` of its result when it finished without needing the mutex.
    fn without_the_lock<R: Send>(core: &Core, f: impl FnOnce(&Core) -> R + Send) -> Option<R> {
        let guard = core.slow.lock();
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::channel();
            scope.spawn(move || {
                let _ = tx.send(f(core));
            });
            // Generous: a lock-free admission answers at once; one that
            // waits for the mutex never answers while it is held.
            let result = rx.recv_timeout(Duration::from_secs(5)).ok();
            drop(guard);
            result
        })
    }

    #[test]
    fn the_word_keeps_mode_generation_and_failures_apart() {
        let max_generation = (1u32 << GENERATION_BITS) - 1;
        for mode in ALL_MODES {
            for generation in [0, 1, 0x0555_5555 & max_generation, max_generation] {
                for fails in [0, 1, u32::MAX] {
                    let word = Word::new(mode, generation, fails);
                    assert_eq!(
                        (word.mode(), word.generation(), word.fails()),
                        (mode, generation, fails),
                        "{word:x?}"
                    );
                }
            }
            // The generation wraps within its own bits.
            let wrapped = Word::new(mode, max_generation.wrapping_add(1), 3);
            assert_eq!(
                (wrapped.mode(), wrapped.generation(), wrapped.fails()),
                (mode, 0, 3)
            );
            assert_eq!(mode_of(Word::new(mode, 9, 9).detailed()), mode);
        }
    }

    /// The closed, forced-closed and open-rejection paths never wait for
    /// the mutex (the hot-path rule): they answer while another thread
    /// holds it.
    #[test]
    fn closed_admissions_and_open_rejections_take_no_lock() {
        let core = core();
        assert_eq!(
            without_the_lock(&core, Core::acquire),
            Some(Ok((Admission::Closed(0), None))),
            "closed"
        );

        core.force(DetailedState::ForcedClosed);
        assert_eq!(
            without_the_lock(&core, Core::acquire),
            Some(Ok((Admission::Bypass, None))),
            "forced closed"
        );

        core.force(DetailedState::Closed);
        let (admission, _) = core.acquire().expect("closed admits");
        assert!(
            core.record(admission, Outcome::Failure(FailureType::Error))
                .is_some()
        );
        assert_eq!(core.state(), DetailedState::Open);
        let open = Err((
            FallbackReason::Open {
                retry_after: Duration::from_secs(10),
            },
            None,
        ));
        assert_eq!(without_the_lock(&core, Core::acquire), Some(open), "open");
        assert_eq!(core.counters.totals().get(Count::RejectedOpen), 1);
    }

    /// The closed sync path's own check: a closed circuit gives its
    /// generation without the lock, and every other state gives `None`
    /// (forced closed too: its calls are bypassed, not counted as closed).
    #[test]
    fn only_a_closed_circuit_gives_its_generation_and_without_the_lock() {
        let core = core();
        assert_eq!(
            without_the_lock(&core, Core::closed_generation),
            Some(Some(0))
        );
        for state in [
            DetailedState::ForcedClosed,
            DetailedState::Open,
            DetailedState::HalfOpen,
            DetailedState::ForcedOpen,
        ] {
            core.force(state);
            assert_eq!(core.closed_generation(), None, "{state:?}");
        }
        core.force(DetailedState::Closed);
        let generation = core.closed_generation().expect("closed again");
        assert_ne!(generation, 0, "a new closed period, a new generation");
    }

    /// A reclaimed probe is known by its period and its ticket: the same
    /// ticket in another half-open period is another probe.
    #[test]
    fn a_probe_key_tells_periods_apart() {
        assert_ne!(probe_key(1, 7), probe_key(2, 7));
        assert_ne!(probe_key(1, 7), probe_key(0, 7));
        assert_ne!(probe_key(1, 7), probe_key(1, 8));
        assert_eq!(probe_key(3, 7), probe_key(3, 7));
    }

    /// A caller that read the word, then took the lock after another
    /// thread moved the state, is admitted or refused by the state it
    /// finds under the lock.
    #[test]
    fn an_admission_follows_the_state_found_under_the_lock() {
        let core = core();
        let seen_open = Word::new(MODE_OPEN, 5, 0);
        assert_eq!(
            core.acquire_slow(seen_open),
            Ok((Admission::Closed(0), None)),
            "closed since: a closed call, not a probe"
        );

        core.force(DetailedState::ForcedClosed);
        assert_eq!(
            core.acquire_slow(seen_open),
            Ok((Admission::Bypass, None)),
            "forced closed since: bypassed"
        );

        core.force(DetailedState::ForcedOpen);
        let seen_half_open = Word::new(MODE_HALF_OPEN, 5, 0);
        assert_eq!(
            core.acquire_slow(seen_half_open),
            Err((FallbackReason::ForcedOpen, None)),
            "forced open since: refused"
        );
        assert_eq!(core.snapshot().probes_in_flight, 0);
        assert_eq!(core.counters.totals().get(Count::RejectedOpen), 1);
    }
}
