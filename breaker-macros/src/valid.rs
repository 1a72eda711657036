//! The semantic checks: value ranges, keys that conflict, and keys the
//! annotated function cannot honour. They mirror
//! `CircuitBreakerConfig::validate` in the runtime, so a configuration that
//! passes here never fails there.

use proc_macro2::Span;
use quote::ToTokens;
use syn::Type;

use crate::attr::{Args, FallbackArg, Spanned};
use crate::errors::Errors;
use crate::func::{Flavor, Func, Param};

/// The defaults of the two window settings, as in the runtime.
const DEFAULT_SLIDING_WINDOW_SIZE: i64 = 100;
const DEFAULT_MINIMUM_CALLS: i64 = 10;
/// The default `recovery_timeout`, in seconds, as in the runtime.
const DEFAULT_RECOVERY_SECS: f64 = 60.0;

/// The longest duration a `Duration::from_nanos(u64)` holds, in seconds.
const MAX_SECS: f64 = u64::MAX as f64 / 1e9;

pub(crate) fn check_args(args: &Args, errors: &mut Errors) {
    match &args.name {
        None if args.name_given => {}
        None => errors.push(syn::Error::new(
            Span::call_site(),
            "`#[circuit_breaker]` needs a `name`: add `name = \"...\"` (functions with the same name share one breaker)",
        )),
        Some(name) if name.value.trim().is_empty() => errors.push(syn::Error::new(
            name.span,
            "`name` must not be empty: name the dependency, like `name = \"llm\"`",
        )),
        Some(_) => {}
    }
    let counts = [
        ("failure_threshold", &args.failure_threshold),
        ("success_threshold", &args.success_threshold),
        ("rate_limit_per_minute", &args.rate_limit_per_minute),
        ("rate_limit_burst", &args.rate_limit_burst),
        ("sliding_window_size", &args.sliding_window_size),
        ("half_open_max_calls", &args.half_open_max_calls),
        ("minimum_calls", &args.minimum_calls),
        ("max_deadline_workers", &args.max_deadline_workers),
    ];
    for (key, count) in counts {
        if let Some(count) = count {
            if count.value < 1 {
                errors.push(syn::Error::new(
                    count.span,
                    format!("`{key}` must be at least 1"),
                ));
            }
        }
    }
    // With an example of a sensible value for each.
    for (key, example, duration) in [
        ("recovery_timeout", "0.5", &args.recovery_timeout),
        ("timeout_duration", "0.5", &args.timeout_duration),
        ("max_open_duration", "0.5", &args.max_open_duration),
        ("max_retry_after", "3600", &args.max_retry_after),
    ] {
        if let Some(duration) = duration {
            check_duration(key, example, duration, errors);
        }
    }
    if let Some(quality) = &args.quality_threshold {
        if !(0.0..=1.0).contains(&quality.value) {
            errors.push(syn::Error::new(
                quality.span,
                "`quality_threshold` must be between 0 and 1 (a score of 0.7 means 70% good)",
            ));
        }
    }
    if let Some(rate) = &args.failure_rate_threshold {
        if !(rate.value > 0.0 && rate.value <= 1.0) {
            errors.push(syn::Error::new(
                rate.span,
                "`failure_rate_threshold` must be greater than 0 and at most 1 (0.5 opens the circuit when half the calls fail)",
            ));
        }
    }
    check_window(args, errors);
    check_backoff(args, errors);
    check_config(args, errors);
    check_key(args, errors);
    if let (Some(burst), None) = (&args.rate_limit_burst, &args.rate_limit_per_minute) {
        errors.push(syn::Error::new(
            burst.span,
            "`rate_limit_burst` only applies with `rate_limit_per_minute`: add `rate_limit_per_minute = ...` or remove `rate_limit_burst`",
        ));
    }
}

/// `config = ...` is the whole configuration: a key that sets one of its
/// fields as well would leave two values for it, so both are refused.
fn check_config(args: &Args, errors: &mut Errors) {
    let Some((config, _)) = &args.config else {
        return;
    };
    let given: Vec<(&str, Span)> = config_keys(args)
        .into_iter()
        .filter_map(|(key, span)| span.map(|span| (key, span)))
        .collect();
    if given.is_empty() {
        return;
    }
    let listed = given
        .iter()
        .map(|(key, _)| format!("`{key}`"))
        .collect::<Vec<_>>()
        .join(", ");
    errors.push(syn::Error::new_spanned(
        config,
        format!(
            "`config` gives the whole configuration, so it cannot be combined with {listed}: set {} in the config value, or remove `config`",
            if given.len() == 1 { "it" } else { "them" }
        ),
    ));
    for (key, span) in given {
        errors.push(syn::Error::new(
            span,
            format!("`{key}` cannot be given with `config`: set the field `{key}` in the config value instead"),
        ));
    }
}

/// A `key` that is a literal gives every call the same member.
fn check_key(args: &Args, errors: &mut Errors) {
    let Some((_, expression)) = &args.key else {
        return;
    };
    if let syn::Expr::Lit(literal) = expression {
        errors.push(syn::Error::new_spanned(
            literal,
            "`key` is evaluated on every call to pick that call's breaker, so a literal gives every call the same one: write an expression over the arguments, like `key = model`, or remove `key`",
        ));
    }
}

/// Every key that sets a field of the configuration, and where its value
/// was written, if it was.
fn config_keys(args: &Args) -> [(&'static str, Option<Span>); 15] {
    fn at<T>(value: &Option<Spanned<T>>) -> Option<Span> {
        value.as_ref().map(|v| v.span)
    }
    [
        ("failure_threshold", at(&args.failure_threshold)),
        ("recovery_timeout", at(&args.recovery_timeout)),
        ("success_threshold", at(&args.success_threshold)),
        ("timeout_duration", at(&args.timeout_duration)),
        ("max_deadline_workers", at(&args.max_deadline_workers)),
        ("quality_threshold", at(&args.quality_threshold)),
        ("rate_limit_per_minute", at(&args.rate_limit_per_minute)),
        ("rate_limit_burst", at(&args.rate_limit_burst)),
        ("sliding_window_size", at(&args.sliding_window_size)),
        ("half_open_max_calls", at(&args.half_open_max_calls)),
        ("failure_rate_threshold", at(&args.failure_rate_threshold)),
        ("minimum_calls", at(&args.minimum_calls)),
        ("backoff_multiplier", at(&args.backoff_multiplier)),
        ("max_open_duration", at(&args.max_open_duration)),
        ("max_retry_after", at(&args.max_retry_after)),
    ]
}

fn check_duration(key: &str, example: &str, duration: &Spanned<f64>, errors: &mut Errors) {
    let secs = duration.value;
    if secs <= 0.0 {
        errors.push(syn::Error::new(
            duration.span,
            format!(
                "`{key}` must be longer than zero: give a number of seconds, like `{key} = {example}`"
            ),
        ));
    } else if (secs * 1e9).round() < 1.0 {
        errors.push(syn::Error::new(
            duration.span,
            format!("`{key}` must be at least 1ns"),
        ));
    } else if secs > MAX_SECS {
        errors.push(syn::Error::new(
            duration.span,
            format!("`{key}` must be at most {MAX_SECS:.0} seconds"),
        ));
    }
}

/// `backoff_multiplier` and `max_open_duration` describe one backoff: each
/// needs the other, and the cap must allow the first open period.
fn check_backoff(args: &Args, errors: &mut Errors) {
    match (&args.backoff_multiplier, &args.max_open_duration) {
        (Some(multiplier), None) => errors.push(syn::Error::new(
            multiplier.span,
            "`backoff_multiplier` needs `max_open_duration`, the longest an open period may grow to: add `max_open_duration = 600` (say)",
        )),
        (None, Some(cap)) => errors.push(syn::Error::new(
            cap.span,
            "`max_open_duration` only applies with `backoff_multiplier`: add `backoff_multiplier = 2.0` (say), or remove `max_open_duration`",
        )),
        _ => {}
    }
    if let Some(multiplier) = &args.backoff_multiplier {
        if !(multiplier.value.is_finite() && multiplier.value >= 1.0) {
            errors.push(syn::Error::new(
                multiplier.span,
                "`backoff_multiplier` must be at least 1 (2.0 doubles the open period at each trip in a row)",
            ));
        }
    }
    if let Some(cap) = &args.max_open_duration {
        let recovery = args
            .recovery_timeout
            .as_ref()
            .map_or(DEFAULT_RECOVERY_SECS, |r| r.value);
        if cap.value > 0.0 && cap.value < recovery {
            errors.push(syn::Error::new(
                cap.span,
                format!(
                    "`max_open_duration` must be at least `recovery_timeout` ({recovery} s{}): the first open period already lasts that long",
                    if args.recovery_timeout.is_none() {
                        ", the default"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
}

/// `minimum_calls` and `sliding_window_size` describe the failure-rate
/// window, so they need `failure_rate_threshold`, and the minimum must fit.
fn check_window(args: &Args, errors: &mut Errors) {
    if args.failure_rate_threshold.is_none() {
        for (key, value) in [
            ("minimum_calls", &args.minimum_calls),
            ("sliding_window_size", &args.sliding_window_size),
        ] {
            if let Some(value) = value {
                errors.push(syn::Error::new(
                    value.span,
                    format!(
                        "`{key}` only applies with `failure_rate_threshold`: add `failure_rate_threshold = 0.5` (say), or remove `{key}`"
                    ),
                ));
            }
        }
    }
    let window = args
        .sliding_window_size
        .as_ref()
        .map_or(DEFAULT_SLIDING_WINDOW_SIZE, |w| w.value);
    let minimum = args
        .minimum_calls
        .as_ref()
        .map_or(DEFAULT_MINIMUM_CALLS, |m| m.value);
    if minimum <= window || minimum < 1 || window < 1 {
        return;
    }
    let error = match (&args.minimum_calls, &args.sliding_window_size) {
        (Some(given), _) => syn::Error::new(
            given.span,
            format!(
                "`minimum_calls` ({minimum}) must be at most `sliding_window_size` ({window}{}): lower it, or widen the window",
                if args.sliding_window_size.is_none() {
                    ", the default"
                } else {
                    ""
                }
            ),
        ),
        (None, Some(given)) => syn::Error::new(
            given.span,
            format!(
                "`sliding_window_size` ({window}) is smaller than the default `minimum_calls` ({minimum}): add `minimum_calls = {window}` or less"
            ),
        ),
        (None, None) => return,
    };
    errors.push(error);
}

/// Checks that `func` can carry the keys in `args`.
pub(crate) fn check_function(args: &Args, func: &Func, errors: &mut Errors) {
    let sig = &func.item.sig;
    if let Some(constness) = &sig.constness {
        errors.push(syn::Error::new_spanned(
            constness,
            "`#[circuit_breaker]` cannot guard a `const fn`: a breaker's state lives at run time, so remove `const`",
        ));
    }
    if let Some(span) = func.opaque_output {
        errors.push(syn::Error::new(
            span,
            "`#[circuit_breaker]` needs to name the return type, but `impl Trait` hides it: write the concrete type (futures: use `async fn`)",
        ));
    }
    match &args.fallback {
        None => {}
        Some(FallbackArg::Cached(cached)) => {
            if func.generic_over_types().is_some() {
                errors.push(syn::Error::new_spanned(
                    cached,
                    "`fallback = cached` cannot serve a generic function: its call site keeps one cache, but each instantiation would need its own; name a fallback function instead",
                ));
            }
            if args.cache_key.is_none() {
                check_named(
                    func,
                    "`fallback = cached` keys the cache on every argument",
                    errors,
                );
                if func
                    .params
                    .iter()
                    .any(|p| matches!(p, Param::Receiver { .. }))
                {
                    errors.push(syn::Error::new_spanned(
                        cached,
                        format!(
                            "`fallback = cached` on a method needs a `cache_key`: without one the key is the arguments alone, so two instances would serve each other's answers; add `cache_key = {}`, with the fields that tell instances apart in place of `tenant`",
                            suggested_key(func)
                        ),
                    ));
                }
            }
        }
        Some(FallbackArg::Function(_)) => {
            check_named(
                func,
                "a `fallback` function gets the same arguments",
                errors,
            );
            for param in &func.params {
                let shared_mut = match param {
                    Param::Receiver { mutable_ref, .. } => *mutable_ref,
                    Param::Named { ty, .. } => is_mut_ref(ty),
                    Param::Pattern { .. } => false,
                };
                if shared_mut {
                    errors.push(syn::Error::new(
                        param.span(),
                        "a `fallback` function gets the same arguments, but a `&mut` argument cannot be lent to both the call and its fallback: take `&T`, or use `fallback = cached`",
                    ));
                }
            }
        }
    }
    if let (Some((key, _)), Some(FallbackArg::Function(_))) = (&args.map_err, &args.fallback) {
        errors.push(syn::Error::new_spanned(
            key,
            "`map_err` never runs with `fallback = some_fn`: the fallback answers every call the breaker rejects; remove `map_err`",
        ));
    }
    if let Some((key, _)) = &args.cache_key {
        if !matches!(args.fallback, Some(FallbackArg::Cached(_))) {
            errors.push(syn::Error::new_spanned(
                key,
                "`cache_key` is the key of the `fallback = cached` cache, but there is none: add `fallback = cached`, or remove `cache_key`",
            ));
        }
    }
    if func.flavor == Flavor::Sync && args.timeout_duration.is_some() {
        check_deadline(func, errors);
    }
}

/// A `cache_key` for a method to start from: the instance's identity and
/// every argument as an owned value, like `(self.tenant.clone(), id)`.
fn suggested_key(func: &Func) -> String {
    let mut parts = vec!["self.tenant.clone()".to_owned()];
    for param in &func.params {
        if let Param::Named { ident, ty, .. } = param {
            parts.push(match &**ty {
                Type::Reference(_) => format!("{ident}.to_owned()"),
                ty if is_copy_primitive(ty) => ident.to_string(),
                _ => format!("{ident}.clone()"),
            });
        }
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        format!("({})", parts.join(", "))
    }
}

fn is_copy_primitive(ty: &Type) -> bool {
    const PRIMITIVES: &[&str] = &[
        "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64",
        "i128", "isize",
    ];
    matches!(ty, Type::Path(path) if path.qself.is_none()
        && PRIMITIVES.iter().any(|p| path.path.is_ident(p)))
}

fn check_named(func: &Func, why: &str, errors: &mut Errors) {
    for param in &func.params {
        if let Param::Pattern { span } = param {
            errors.push(syn::Error::new(
                *span,
                format!("{why}, so this parameter needs a name: write `name: Type` and destructure it in the body"),
            ));
        }
    }
}

/// A sync function with `timeout_duration` runs on a worker thread, so its
/// arguments move there: none may borrow.
fn check_deadline(func: &Func, errors: &mut Errors) {
    let advice = "`timeout_duration` on a sync fn runs it on a worker thread (so the caller can be released at the deadline), which cannot borrow";
    for param in &func.params {
        match param {
            Param::Receiver {
                by_ref: true, span, ..
            } => errors.push(syn::Error::new(
                *span,
                format!(
                    "{advice} `self`: take `self` (say, `self: Arc<Self>`), or make the fn `async`"
                ),
            )),
            Param::Named { ident, ty, .. } if borrows(ty) => errors.push(syn::Error::new_spanned(
                ty,
                format!(
                    "{advice} `{ident}: {}`: take {}, or make the fn `async`",
                    tidy(ty),
                    owned_suggestion(ty)
                ),
            )),
            _ => {}
        }
    }
}

fn borrows(ty: &Type) -> bool {
    match ty {
        Type::Reference(_) | Type::ImplTrait(_) => true,
        Type::Paren(paren) => borrows(&paren.elem),
        Type::Group(group) => borrows(&group.elem),
        _ => false,
    }
}

fn is_mut_ref(ty: &Type) -> bool {
    matches!(ty, Type::Reference(reference) if reference.mutability.is_some())
}

fn owned_suggestion(ty: &Type) -> String {
    let Type::Reference(reference) = ty else {
        return "an owned type".to_owned();
    };
    let inner = tidy(&reference.elem);
    match inner.as_str() {
        "str" => "`String`".to_owned(),
        "Path" => "`PathBuf`".to_owned(),
        _ if inner.starts_with('[') => format!(
            "`Vec<{}>`",
            inner.trim_matches(|c| c == '[' || c == ']').trim()
        ),
        _ => format!("`{inner}`"),
    }
}

/// A type as a user would write it (`&str`, not `& str`).
fn tidy(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace("& ", "&")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" :: ", "::")
}
