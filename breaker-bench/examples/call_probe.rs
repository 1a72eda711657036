//! The closed path's cases one at a time, for counting instructions with
//! callgrind, which repeats to the instruction where timings on a shared
//! machine do not:
//!
//! ```sh
//! cargo build --release -p breaker-bench --example call_probe
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/call_probe macro_keyed $n 2>&1 | grep refs
//! done   # (the second count - the first) / 100000 = instructions per call
//! ```
//!
//! Cases: `direct` (a `CircuitBreaker::call`), `open` (an open circuit's
//! rejection answered by a fallback), `limited` (a call under a rate limit
//! that never refuses), `macro` (a
//! `#[circuit_breaker]` function), `keyed_direct` (`Family::member` and a
//! call), `macro_keyed` (a `key = model` function), each for an existing
//! key among eight, and `macro_keyed_turns` (the eight keys in turn: a hash
//! and a probe each call). With no case (or `all`) it prints each case's best of
//! seven timed loops, an ad-hoc figure; the paired rounds of
//! `benches/compare.rs` are the ones the targets are judged by.
use std::hint::black_box;
use std::time::Instant;

#[inline(never)]
fn work(x: u64) -> Result<u64, ()> {
    Ok(black_box(x) + 1)
}

#[derive(Debug)]
struct MacroError;

impl From<breaker_runtime::BreakerError> for MacroError {
    fn from(_: breaker_runtime::BreakerError) -> Self {
        MacroError
    }
}

#[breaker_runtime::circuit_breaker(name = "probe_macro")]
fn unkeyed(x: u64) -> Result<u64, MacroError> {
    work(x).map_err(|()| MacroError)
}

#[breaker_runtime::circuit_breaker(name = "probe_keyed", key = model)]
fn keyed(model: &str, x: u64) -> Result<u64, MacroError> {
    work(x).map_err(|()| MacroError)
}

/// One case: a name, and a loop of `n` calls.
type Case<'a> = (&'static str, Box<dyn Fn(u64) + 'a>);

const MODEL: &str = "gpt-4o";
const OTHER_MODELS: [&str; 7] = ["a", "b", "claude", "llama-3", "mistral", "o1", "sim"];

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "all".into());
    let n: u64 = args
        .next()
        .map(|n| n.parse().unwrap())
        .unwrap_or(10_000_000);
    let direct = breaker_runtime::CircuitBreaker::new("probe", Default::default()).unwrap();
    let family = breaker_runtime::Family::new("probe_family", Default::default()).unwrap();
    for model in OTHER_MODELS.iter().chain([&MODEL]) {
        family
            .with(*model, |b| b.call(|| work(1)))
            .unwrap()
            .unwrap();
        keyed(model, 1).unwrap();
    }
    unkeyed(1).unwrap();
    let open = breaker_runtime::CircuitBreaker::new(
        "probe_open",
        breaker_runtime::CircuitBreakerConfig::builder()
            .failure_threshold(1)
            .recovery_timeout(std::time::Duration::from_secs(24 * 3600))
            .build()
            .unwrap(),
    )
    .unwrap();
    let _ = open.call(|| Err::<u64, ()>(()));
    let limited = breaker_runtime::CircuitBreaker::new(
        "probe_limited",
        breaker_runtime::CircuitBreakerConfig::builder()
            .rate_limit_per_minute(u32::MAX)
            .build()
            .unwrap(),
    )
    .unwrap();
    let cases: Vec<Case> = vec![
        (
            "direct",
            Box::new(|n| {
                for _ in 0..n {
                    let _ = black_box(direct.call(|| work(1)));
                }
            }),
        ),
        (
            "open",
            Box::new(|n| {
                for _ in 0..n {
                    let _ = black_box(open.call_with_fallback(|| work(1), || 0));
                }
            }),
        ),
        (
            "limited",
            Box::new(|n| {
                for _ in 0..n {
                    let _ = black_box(limited.call(|| work(1)));
                }
            }),
        ),
        (
            "macro",
            Box::new(|n| {
                for _ in 0..n {
                    let _ = black_box(unkeyed(1));
                }
            }),
        ),
        (
            "keyed_direct",
            Box::new(|n| {
                for _ in 0..n {
                    let _ = black_box(
                        family
                            .member(black_box(MODEL))
                            .ok()
                            .map(|b| b.call(|| work(1))),
                    );
                }
            }),
        ),
        (
            "macro_keyed",
            Box::new(|n| {
                for _ in 0..n {
                    let _ = black_box(keyed(black_box(MODEL), 1));
                }
            }),
        ),
        (
            "macro_keyed_turns",
            Box::new(|n| {
                let keys: Vec<&str> = OTHER_MODELS.iter().copied().chain([MODEL]).collect();
                for i in 0..n {
                    let model = keys[i as usize % keys.len()];
                    let _ = black_box(keyed(black_box(model), 1));
                }
            }),
        ),
    ];
    for (name, run) in &cases {
        if case != "all" && case != *name {
            continue;
        }
        let mut best = f64::MAX;
        for _ in 0..if case == "all" { 7 } else { 1 } {
            let start = Instant::now();
            run(n);
            best = best.min(start.elapsed().as_secs_f64() * 1e9 / n as f64);
        }
        println!("{name:14} {best:6.2} ns");
    }
}
