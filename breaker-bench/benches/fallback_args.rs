//! What `fallback = path` costs a call in copies of its arguments (issue 10,
//! "cheaper fallbacks"): the same function taking a 64-byte `String`, with a
//! fallback and without, closed (the call runs) and open (the fallback
//! answers). A call that runs still copies each owned argument once, before
//! its body, which may consume it; a rejected call copies nothing. A `&str`
//! argument is never copied.
//!
//! `cargo bench -p breaker-bench --bench fallback_args`

use std::hint::black_box;

use breaker_runtime::{BreakerError, circuit_breaker, registry};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// The functions' error: only its type matters here.
#[derive(Debug)]
pub struct E;

impl From<BreakerError> for E {
    fn from(_: BreakerError) -> Self {
        Self
    }
}

fn owned_answer(prompt: String) -> Result<usize, E> {
    Ok(black_box(prompt).len() + 1)
}

fn borrowed_answer(prompt: &str) -> Result<usize, E> {
    Ok(black_box(prompt).len() + 1)
}

#[circuit_breaker(name = "fallback-args-none")]
fn owned_without_fallback(prompt: String) -> Result<usize, E> {
    Ok(black_box(prompt).len())
}

#[circuit_breaker(name = "fallback-args-owned", fallback = owned_answer)]
fn owned_with_fallback(prompt: String) -> Result<usize, E> {
    Ok(black_box(prompt).len())
}

#[circuit_breaker(name = "fallback-args-borrowed", fallback = borrowed_answer)]
fn borrowed_with_fallback(prompt: &str) -> Result<usize, E> {
    Ok(black_box(prompt).len())
}

fn prompt() -> String {
    "x".repeat(64)
}

fn fallback_args(c: &mut Criterion) {
    let mut group = c.benchmark_group("fallback_args");
    let text = prompt();
    group.bench_function("closed/owned/no fallback", |b| {
        b.iter_batched(prompt, owned_without_fallback, BatchSize::SmallInput)
    });
    group.bench_function("closed/owned/fallback", |b| {
        b.iter_batched(prompt, owned_with_fallback, BatchSize::SmallInput)
    });
    group.bench_function("closed/borrowed/fallback", |b| {
        b.iter(|| borrowed_with_fallback(black_box(&text)))
    });
    registry().get("fallback-args-owned").unwrap().force_open();
    registry()
        .get("fallback-args-borrowed")
        .unwrap()
        .force_open();
    group.bench_function("open/owned/fallback", |b| {
        b.iter_batched(prompt, owned_with_fallback, BatchSize::SmallInput)
    });
    group.bench_function("open/borrowed/fallback", |b| {
        b.iter(|| borrowed_with_fallback(black_box(&text)))
    });
    group.finish();
}

criterion_group!(benches, fallback_args);
criterion_main!(benches);
