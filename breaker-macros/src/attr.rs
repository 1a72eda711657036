//! Parsing `#[circuit_breaker(...)]` arguments into [`Args`]: one typed
//! field per key. Only the shape of each value is checked here; ranges and
//! conflicts are `valid.rs`'s job.
//!
//! The arguments are read as `key = expression` pairs and then interpreted
//! key by key, rather than with a `lookahead1()` loop that stops at the
//! first mistake: every argument error of one attribute must show up in the
//! same build.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, ExprLit, ExprPath, ExprUnary, Ident, Lit, LitStr, Token, UnOp};

use crate::errors::Errors;
use crate::grammar::{self, DURATION_UNITS, parse_duration};

/// Every key, in the order the docs list them.
pub(crate) const KEYS: &[&str] = &[
    "name",
    "failure_threshold",
    "recovery_timeout",
    "success_threshold",
    "timeout_duration",
    "max_deadline_workers",
    "quality_threshold",
    "rate_limit_per_minute",
    "rate_limit_burst",
    "sliding_window_size",
    "half_open_max_calls",
    "failure_rate_threshold",
    "minimum_calls",
    "backoff_multiplier",
    "max_open_duration",
    "max_retry_after",
    "fallback",
    "cache_key",
    "quality",
    "classify",
    "map_err",
    "config",
    "crate",
    "key",
];

/// A value and the tokens it was written as.
#[derive(Debug, Clone)]
pub(crate) struct Spanned<T> {
    pub(crate) value: T,
    pub(crate) span: Span,
}

/// What `fallback = ...` names.
#[derive(Debug, Clone)]
pub(crate) enum FallbackArg {
    /// `fallback = cached`: the call site's cache of good results.
    Cached(Ident),
    /// `fallback = path::to::function`.
    Function(ExprPath),
}

/// The parsed arguments. Numbers are kept as written (a negative duration
/// too) so that `valid.rs` can name the rule they break.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub(crate) name: Option<Spanned<String>>,
    /// `name = ...` was written, even if with a value of the wrong type.
    pub(crate) name_given: bool,
    pub(crate) failure_threshold: Option<Spanned<i64>>,
    pub(crate) recovery_timeout: Option<Spanned<f64>>,
    pub(crate) success_threshold: Option<Spanned<i64>>,
    pub(crate) timeout_duration: Option<Spanned<f64>>,
    pub(crate) max_deadline_workers: Option<Spanned<i64>>,
    pub(crate) quality_threshold: Option<Spanned<f64>>,
    pub(crate) rate_limit_per_minute: Option<Spanned<i64>>,
    pub(crate) rate_limit_burst: Option<Spanned<i64>>,
    pub(crate) sliding_window_size: Option<Spanned<i64>>,
    pub(crate) half_open_max_calls: Option<Spanned<i64>>,
    pub(crate) failure_rate_threshold: Option<Spanned<f64>>,
    pub(crate) minimum_calls: Option<Spanned<i64>>,
    pub(crate) backoff_multiplier: Option<Spanned<f64>>,
    pub(crate) max_open_duration: Option<Spanned<f64>>,
    pub(crate) max_retry_after: Option<Spanned<f64>>,
    pub(crate) fallback: Option<FallbackArg>,
    /// `cache_key = expression`: the key written as `cache_key`, and the expression.
    pub(crate) cache_key: Option<(Ident, Expr)>,
    pub(crate) quality: Option<Expr>,
    pub(crate) classify: Option<Expr>,
    /// `map_err = path`: the key, and the function from `BreakerError` to
    /// the function's error type.
    pub(crate) map_err: Option<(Ident, Expr)>,
    /// `config = expression`: the key, and an expression making the whole
    /// `CircuitBreakerConfig` (in place of the keys that set its fields).
    pub(crate) config: Option<(Ident, Expr)>,
    /// `crate = path`: the path of `breaker_runtime`, renamed or
    /// re-exported.
    pub(crate) krate: Option<syn::Path>,
    /// `key = expression`: the key written as `key`, and the expression
    /// whose `Display` text picks the family's member.
    pub(crate) key: Option<(Ident, Expr)>,
}

/// One `key = value` pair, before interpretation.
struct Pair {
    key: Ident,
    value: Expr,
}

impl Parse for Pair {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Err(input.error(format!("expected `=` after `{key}`: write `{key} = value`")));
        }
        input.parse::<Token![=]>()?;
        if input.is_empty() || input.peek(Token![,]) {
            return Err(syn::Error::new_spanned(
                &key,
                format!("`{key}` has no value: write `{key} = value`"),
            ));
        }
        let value = input.parse()?;
        Ok(Self { key, value })
    }
}

/// The pairs as written, separated by commas.
pub(crate) struct RawArgs(Punctuated<Pair, Token![,]>);

impl Parse for RawArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(Self)
    }
}

impl RawArgs {
    /// Interprets every pair, recording each mistake in `errors`.
    pub(crate) fn interpret(self, errors: &mut Errors) -> Args {
        let mut args = Args::default();
        for Pair { key, value } in self.0 {
            let name = key.unraw().to_string();
            macro_rules! set {
                ($field:ident, $read:expr) => {{
                    if args.$field.is_some() {
                        errors.push(syn::Error::new_spanned(
                            &key,
                            format!("duplicate key `{name}`: give it once"),
                        ));
                    } else if let Some(read) = $read {
                        args.$field = Some(read);
                    }
                }};
            }
            match name.as_str() {
                "name" => {
                    args.name_given = true;
                    set!(name, read_name(&value, errors))
                }
                "failure_threshold" => set!(failure_threshold, read_count(&name, &value, errors)),
                "success_threshold" => set!(success_threshold, read_count(&name, &value, errors)),
                "rate_limit_per_minute" => {
                    set!(rate_limit_per_minute, read_count(&name, &value, errors))
                }
                "rate_limit_burst" => set!(rate_limit_burst, read_count(&name, &value, errors)),
                "sliding_window_size" => {
                    set!(sliding_window_size, read_count(&name, &value, errors))
                }
                "half_open_max_calls" => {
                    set!(half_open_max_calls, read_count(&name, &value, errors))
                }
                "minimum_calls" => set!(minimum_calls, read_count(&name, &value, errors)),
                "max_deadline_workers" => {
                    set!(max_deadline_workers, read_count(&name, &value, errors))
                }
                "recovery_timeout" => set!(recovery_timeout, read_secs(&name, &value, errors)),
                "timeout_duration" => set!(timeout_duration, read_secs(&name, &value, errors)),
                "quality_threshold" => {
                    set!(
                        quality_threshold,
                        read_float(&name, &value, FRACTION, errors)
                    )
                }
                "failure_rate_threshold" => {
                    set!(
                        failure_rate_threshold,
                        read_float(&name, &value, FRACTION, errors)
                    )
                }
                "backoff_multiplier" => {
                    set!(
                        backoff_multiplier,
                        read_float(&name, &value, FACTOR, errors)
                    )
                }
                "max_open_duration" => set!(max_open_duration, read_secs(&name, &value, errors)),
                "max_retry_after" => set!(max_retry_after, read_secs(&name, &value, errors)),
                "fallback" => set!(fallback, read_fallback(&value, errors)),
                "cache_key" => set!(cache_key, Some((key.clone(), value))),
                "quality" => set!(quality, read_function(&name, &value, "eval_answer", errors)),
                "classify" => {
                    set!(
                        classify,
                        read_function(&name, &value, "classify_error", errors)
                    )
                }
                "map_err" => set!(
                    map_err,
                    read_function(&name, &value, "std::io::Error::other", errors)
                        .map(|f| (key.clone(), f))
                ),
                "config" => set!(config, Some((key.clone(), value))),
                "crate" => set!(krate, read_crate(&value, errors)),
                "key" => set!(key, Some((key.clone(), value))),
                _ => errors.push(unknown_key(&key, &name)),
            }
        }
        args
    }
}

fn unknown_key(key: &Ident, name: &str) -> syn::Error {
    let valid = KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = match nearest_key(name) {
        Some(near) => {
            format!("unknown key `{name}`: did you mean `{near}`? valid keys are {valid}")
        }
        None => format!("unknown key `{name}`: valid keys are {valid}"),
    };
    syn::Error::new_spanned(key, message)
}

/// The key `name` was most likely meant to be.
fn nearest_key(name: &str) -> Option<&'static str> {
    grammar::nearest(name, KEYS)
}

fn read_name(value: &Expr, errors: &mut Errors) -> Option<Spanned<String>> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(Spanned {
            value: lit.value(),
            span: lit.span(),
        }),
        _ => {
            errors.push(syn::Error::new_spanned(
                value,
                "`name` takes a string literal, like `name = \"llm\"`",
            ));
            None
        }
    }
}

/// A literal number, possibly negated: the value, whether it was an
/// integer literal, and its span.
fn number(value: &Expr) -> Option<(f64, bool)> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Int(int) => int.base10_parse::<f64>().ok().map(|v| (v, true)),
            Lit::Float(float) => float.base10_parse::<f64>().ok().map(|v| (v, false)),
            _ => None,
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => number(expr).map(|(v, int)| (-v, int)),
        Expr::Group(group) => number(&group.expr),
        _ => None,
    }
}

fn read_count(key: &str, value: &Expr, errors: &mut Errors) -> Option<Spanned<i64>> {
    match number(value) {
        Some((number, true)) if number.abs() <= u32::MAX as f64 => Some(Spanned {
            value: number as i64,
            span: value.span(),
        }),
        Some((_, true)) => {
            errors.push(syn::Error::new_spanned(
                value,
                format!("`{key}` must be at most {}", u32::MAX),
            ));
            None
        }
        _ => {
            errors.push(syn::Error::new_spanned(
                value,
                format!("`{key}` takes a whole number, like `{key} = 5`"),
            ));
            None
        }
    }
}

/// A literal number, for a key that takes `kind`, like `key = example`.
fn read_float(
    key: &str,
    value: &Expr,
    (kind, example): (&str, &str),
    errors: &mut Errors,
) -> Option<Spanned<f64>> {
    match number(value) {
        Some((number, _)) => Some(Spanned {
            value: number,
            span: value.span(),
        }),
        None => {
            errors.push(syn::Error::new_spanned(
                value,
                format!("`{key}` takes {kind}, like `{key} = {example}`"),
            ));
            None
        }
    }
}

const FRACTION: (&str, &str) = ("a number between 0 and 1", "0.5");
const FACTOR: (&str, &str) = ("a number of at least 1", "2.0");

/// A duration in seconds: a number, or a string with a unit.
fn read_secs(key: &str, value: &Expr, errors: &mut Errors) -> Option<Spanned<f64>> {
    let span = value.span();
    if let Some((secs, _)) = number(value) {
        return Some(Spanned { value: secs, span });
    }
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    {
        return match parse_duration(&lit.value()) {
            Some(secs) => Some(Spanned { value: secs, span }),
            None => {
                errors.push(malformed_duration(key, lit));
                None
            }
        };
    }
    errors.push(syn::Error::new_spanned(
        value,
        format!(
            "`{key}` takes a number of seconds or a string with a unit, like `{key} = 2.5` or `{key} = \"500ms\"`"
        ),
    ));
    None
}

fn malformed_duration(key: &str, lit: &LitStr) -> syn::Error {
    syn::Error::new_spanned(
        lit,
        format!(
            "`{key}` = {:?} is not a duration: write a number and a unit ({DURATION_UNITS}), like \"500ms\" or \"2m\"",
            lit.value()
        ),
    )
}

fn read_fallback(value: &Expr, errors: &mut Errors) -> Option<FallbackArg> {
    match value {
        Expr::Path(path) if path.qself.is_none() && path.path.is_ident("cached") => {
            Some(FallbackArg::Cached(path.path.segments[0].ident.clone()))
        }
        Expr::Path(path) => Some(FallbackArg::Function(path.clone())),
        _ => {
            errors.push(syn::Error::new_spanned(
                value,
                "`fallback` takes `cached` or the path of a function with the same parameters and return type, like `fallback = cached_answer`",
            ));
            None
        }
    }
}

/// `crate = some::path` or, as serde and tokio write it,
/// `crate = "some::path"`.
fn read_crate(value: &Expr, errors: &mut Errors) -> Option<syn::Path> {
    let path = match value {
        Expr::Path(path) if path.qself.is_none() => Some(path.path.clone()),
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => lit.parse::<syn::Path>().ok(),
        _ => None,
    };
    if path.is_none() {
        errors.push(syn::Error::new_spanned(
            value,
            "`crate` takes the path `breaker_runtime` is known by in this crate, like `crate = my_app::breaker` or `crate = \"my_app::breaker\"`",
        ));
    }
    path
}

fn read_function(key: &str, value: &Expr, example: &str, errors: &mut Errors) -> Option<Expr> {
    match value {
        Expr::Path(_) | Expr::Closure(_) => Some(value.clone()),
        _ => {
            errors.push(syn::Error::new_spanned(
                value,
                format!(
                    "`{key}` takes the path of a function or a closure, like `{key} = {example}`"
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key_prefers_prefixes_then_small_edits() {
        assert_eq!(nearest_key("timeout"), Some("timeout_duration"));
        assert_eq!(nearest_key("failure_treshold"), Some("failure_threshold"));
        assert_eq!(nearest_key("fallbak"), Some("fallback"));
        assert_eq!(nearest_key("zzzzzzzz"), None);
    }
}
