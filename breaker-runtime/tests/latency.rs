//! Latency percentiles from the timed sample: which calls feed the
//! histogram, and what p50 and p99 read. Driven by a `ManualClock`: a
//! sampled call "takes" exactly what the test advances the clock by.

mod common;

use std::time::Duration;

use breaker_runtime::{CircuitBreakerConfig, DetailedState};
use common::manual_breaker;

/// Calls per thread between two timed calls of one breaker.
const SAMPLE_EVERY: usize = 64;

#[test]
fn only_the_sampled_calls_feed_the_histogram_and_p50_p99_read_it() {
    let (breaker, clock) = manual_breaker("latency", CircuitBreakerConfig::default());
    assert_eq!(
        breaker.get_metrics().p50_response_time,
        None,
        "no sample yet"
    );
    // 100 timed calls: 50 of 0.8 ms, 49 of 20 ms, 1 of 3 s. The untimed
    // calls between them take 7 s each, which no percentile may show.
    let takes = |sample: usize| match sample {
        0..50 => Duration::from_micros(800),
        50..99 => Duration::from_millis(20),
        _ => Duration::from_secs(3),
    };
    for call in 0..100 * SAMPLE_EVERY {
        let took = if call % SAMPLE_EVERY == 0 {
            takes(call / SAMPLE_EVERY)
        } else {
            Duration::from_secs(7)
        };
        breaker
            .call(|| {
                clock.advance(took);
                Ok::<_, String>(())
            })
            .expect("closed: the default timeout is not enforced on a sync call's result");
    }
    let metrics = breaker.get_metrics();
    let times = metrics.response_times;
    assert_eq!(times.count(), 100, "one call in {SAMPLE_EVERY}");
    assert_eq!(
        times.sum(),
        Duration::from_micros(800) * 50 + Duration::from_millis(20) * 49 + Duration::from_secs(3)
    );
    let p50 = metrics.p50_response_time.expect("samples");
    assert!(
        p50 > Duration::from_micros(500) && p50 <= Duration::from_millis(1),
        "p50 {p50:?} in the bucket of 0.8 ms"
    );
    let p99 = metrics.p99_response_time.expect("samples");
    assert!(
        p99 > Duration::from_millis(10) && p99 <= Duration::from_millis(25),
        "p99 {p99:?} in the bucket of 20 ms"
    );
    let max = times.quantile(1.0).expect("samples");
    assert!(
        max > Duration::from_millis(2_500) && max <= Duration::from_secs(5),
        "p100 {max:?} in the bucket of 3 s"
    );
    assert_eq!(times.quantile(1.5), None, "q outside [0, 1]");
}

#[test]
fn transitions_are_counted_by_the_state_they_enter() {
    let config = CircuitBreakerConfig::builder()
        .failure_threshold(1)
        .recovery_timeout(Duration::from_secs(1))
        .build()
        .expect("valid");
    let (breaker, clock) = manual_breaker("transitions", config);
    let _ = breaker.call(|| Err::<(), _>("503"));
    clock.advance(Duration::from_secs(1));
    let _ = breaker.call(|| Err::<(), _>("503")); // half-open, then open
    breaker.force_closed();
    breaker.reset();
    let metrics = breaker.get_metrics();
    let to = metrics.transitions_to;
    assert_eq!(
        DetailedState::ALL.map(|s| to.get(s)),
        [1, 2, 1, 0, 1],
        "closed, open, half_open, forced_open, forced_closed"
    );
    assert_eq!(
        DetailedState::ALL.map(|s| to.get(s)).iter().sum::<u64>(),
        metrics.transitions
    );
}

#[test]
fn a_breaker_holds_no_histogram_until_its_first_timed_call() {
    let (breaker, _clock) = manual_breaker("lazy", CircuitBreakerConfig::default());
    let idle = breaker.memory_size();
    breaker.call(|| Ok::<_, String>(())).expect("closed");
    let used = breaker.memory_size();
    assert!(
        used > idle && used - idle <= 256,
        "the histogram is allocated on the first timed call: {idle} -> {used} bytes"
    );
}
