//! The code `#[circuit_breaker]` becomes.
//!
//! The function keeps its signature; only its body changes, into:
//!
//! 1. a `static` [`Site`] that resolves the named breaker through the
//!    registry on the first call and keeps it for every later one;
//! 2. copies of the arguments a fallback needs (taken before the body can
//!    move them);
//! 3. one call into a generic runtime method (`call_with`,
//!    `call_with_deadline` or `call_async_with`) with the original body as a
//!    closure or an `async` block, so `return` and `?` keep working;
//! 4. one conversion of the call's result into the declared return type.
//!
//! Calls to the user's `fallback`, `quality` and `classify` functions, and
//! the bounds on the return type, are spanned at the user's tokens so type
//! errors point there. Locals are `__breaker_*` at `Span::mixed_site()`.
//!
//! [`Site`]: ../../breaker_runtime/__private/struct.Site.html

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt as _;
use syn::spanned::Spanned;
use syn::{Item, Type};

use crate::attr::{Args, FallbackArg, RawArgs};
use crate::errors::Errors;
use crate::func::{Flavor, Func, Param};
use crate::valid;

/// The attribute: expansion, or the function as written plus every error.
pub(crate) fn circuit_breaker(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = match syn::parse2::<RawArgs>(args) {
        Ok(raw) => {
            let args = raw.interpret(&mut errors);
            valid::check_args(&args, &mut errors);
            Some(args)
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let func = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(item_fn)) => Some(Func::new(item_fn)),
        Ok(other) => {
            errors.push(syn::Error::new(
                not_a_function_span(&other),
                "`#[circuit_breaker]` goes on a function with a body: a free `fn` or a method in an `impl` block",
            ));
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    if let (Some(args), Some(func)) = (&args, &func) {
        valid::check_function(args, func, &mut errors);
    }
    match (errors.finish(), args, func) {
        (None, Some(args), Some(func)) => expand(&args, func),
        (error, _, _) => {
            // The function as written, so the rest of the crate still
            // type-checks against it and only the attribute's errors show.
            let error = error.map(|e| e.to_compile_error());
            quote!(#item #error)
        }
    }
}

fn not_a_function_span(item: &Item) -> Span {
    match item {
        Item::Struct(s) => s.struct_token.span,
        Item::Enum(e) => e.enum_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Trait(t) => t.trait_token.span,
        Item::Mod(m) => m.mod_token.span,
        Item::Static(s) => s.static_token.span,
        Item::Const(c) => c.const_token.span,
        Item::Type(t) => t.type_token.span,
        other => other.span(),
    }
}

/// Idents of the generated locals, hygienic so they cannot collide with
/// the user's.
struct Locals {
    site: Ident,
    breaker: Ident,
    options: Ident,
    result: Ident,
    error: Ident,
    answer: Ident,
    served: Ident,
    key: Ident,
    cache: Ident,
    future: Ident,
    config: Ident,
    shape: Ident,
    arguments: Ident,
    copies: Ident,
}

impl Locals {
    fn new() -> Self {
        let local = |name: &str| Ident::new(name, Span::mixed_site());
        Self {
            site: local("__BREAKER_SITE"),
            breaker: local("__breaker"),
            options: local("__breaker_options"),
            result: local("__breaker_result"),
            error: local("__breaker_error"),
            answer: local("__breaker_answer"),
            served: local("__breaker_served"),
            key: local("__breaker_key"),
            cache: local("__breaker_cache"),
            future: local("__breaker_future"),
            config: local("__breaker_config"),
            shape: local("__breaker_shape"),
            arguments: local("__breaker_arguments"),
            copies: local("__breaker_copies"),
        }
    }
}

fn expand(args: &Args, func: Func) -> TokenStream {
    // Every path of the expansion goes through `p`, so `crate = ...`
    // reaches all of them. A renamed crate is named once, by a `use` at the
    // top of the body, so a wrong path is reported once.
    let (p, use_crate) = match &args.krate {
        Some(krate) => {
            let alias = Ident::new("__breaker_private", Span::mixed_site());
            (
                alias.to_token_stream(),
                quote!(use #krate::__private as #alias;),
            )
        }
        None => (quote!(::breaker_runtime::__private), TokenStream::new()),
    };
    let l = Locals::new();
    let Locals {
        site,
        breaker,
        options,
        result,
        error,
        answer,
        served,
        key,
        cache,
        future,
        shape,
        ..
    } = &l;
    let name = args
        .name
        .as_ref()
        .map(|name| name.value.clone())
        .unwrap_or_default();
    let config = config_fn(args, &p, &l);
    let out_ty = &func.output.ty;
    let out_span = func.output.span;
    let returns = quote_spanned!(out_span=> #p::returns::<#out_ty>());
    // Whether the function returns a `Result` is decided by its type, not
    // by how it is spelled, so aliases count (see `__private::shape`).
    let shape_init = quote_spanned! {out_span=>
        let #shape = {
            #[allow(unused_imports)]
            use #p::shape::{IsPlain as _, IsResult as _};
            (&#returns).breaker_shape()
        };
    };
    // The result, named where the return type is written, so that a missing
    // `From<BreakerError>` is reported there.
    let result_at_output = Ident::new("__breaker_result", Span::mixed_site().located_at(out_span));
    let asynchronous = func.flavor != Flavor::Sync;
    let deadline = func.flavor == Flavor::Sync && args.timeout_duration.is_some();
    let block = &func.item.block;

    // Before the body runs: copies for a fallback, or the cache key.
    let mut before = TokenStream::new();
    // Just before the breaker is resolved: the fallback's answer closure.
    let mut prepare = TokenStream::new();
    // In the resolved arm, before the options: the cache handle.
    let mut resolved = TokenStream::new();
    let mut option_calls = TokenStream::new();
    // At the start of a sync body: its arguments, taken from their cell.
    let mut body_prelude = TokenStream::new();
    let mut strip_mut = false;
    let unavailable;
    let finish;
    match &args.fallback {
        Some(FallbackArg::Function(path)) => {
            let copies: Vec<Ident> = (0..func.params.len())
                .map(|i| format_ident!("__breaker_arg{}", i, span = Span::mixed_site()))
                .collect();
            // A sync call without a hard deadline runs its body here, so
            // its named arguments can wait in a cell: a rejected call hands
            // them to the fallback as they are, and an admitted one copies
            // them only as its body starts (see `lazy_arguments`).
            let lazy = (func.flavor == Flavor::Sync && !deadline)
                .then(|| lazy_arguments(&func, &p, &l, &copies));
            let mut fallback_args = Vec::new();
            for (param, copy) in func.params.iter().zip(&copies) {
                let span = param.span();
                let argument = match param {
                    Param::Named { .. } if lazy.is_some() => {
                        fallback_args.push(copy.to_token_stream());
                        continue;
                    }
                    Param::Receiver { .. } => quote_spanned!(span=> self),
                    Param::Named { ident, .. } => ident.to_token_stream(),
                    Param::Pattern { .. } => unreachable!("rejected by valid.rs"),
                };
                before.extend(quote_spanned! {span=>
                    let #copy = #p::fallback_arg(&#argument);
                });
                fallback_args.push(quote_spanned!(span=> #p::fallback_arg(&#copy)));
            }
            let mut take_lazy = TokenStream::new();
            if let Some(lazy) = &lazy {
                strip_mut = true;
                before.extend(lazy.cells.clone());
                take_lazy = lazy.for_fallback.clone();
                body_prelude = lazy.for_body.clone();
            }
            let path_span = path.span();
            let call = quote_spanned! {path_span=>
                #path(#(#fallback_args),*)
            };
            let answer_fn = if asynchronous {
                quote_spanned! {path_span=>
                    let #answer = || {
                        let #served = #call;
                        #[allow(unused_imports)]
                        use #p::serve::{IsFuture as _, IsValue as _};
                        (&#served).breaker_answer_kind().answer(#served, #shape)
                    };
                }
            } else {
                quote_spanned! {path_span=>
                    let #answer = || {
                        #take_lazy
                        let #served: #out_ty = #call;
                        #served
                    };
                }
            };
            prepare.extend(answer_fn);
            let answered = if asynchronous {
                quote!(#answer().await)
            } else {
                quote!(#p::shape::Shape::lift(#shape, #answer()))
            };
            option_calls.extend(if asynchronous {
                quote! {
                    .fallback(#p::AsyncFallback(|_: &#p::FallbackReason| {
                        #p::core::option::Option::Some(#answer())
                    }))
                }
            } else {
                quote! {
                    .fallback(|_: &#p::FallbackReason| #p::core::option::Option::Some(#answered))
                }
            });
            unavailable = quote!(#p::answered(#answered));
            finish = quote!(#shape.finish_served(#result));
        }
        Some(FallbackArg::Cached(_)) => {
            if let Some((_, expression)) = &args.cache_key {
                // A tuple is checked part by part, so that a part which
                // cannot be hashed is the one underlined.
                let checked = match expression {
                    syn::Expr::Tuple(tuple) => {
                        let parts = tuple.elems.iter().map(|part| {
                            let span = part.span();
                            quote_spanned!(span=> #p::cache_key_value(#part))
                        });
                        quote!((#(#parts,)*))
                    }
                    _ => {
                        let span = expression.span();
                        quote_spanned!(span=> #p::cache_key_value(#expression))
                    }
                };
                before.extend(quote! {
                    let #key = #checked;
                });
            } else {
                // A receiver needs a `cache_key` and a pattern a name (valid.rs).
                let parts = func.params.iter().map(|param| match param {
                    Param::Named { ident, ty, span } if is_reference(ty) => {
                        quote_spanned!(*span=> #p::cache_key(#ident))
                    }
                    Param::Named { ident, span, .. } => {
                        quote_spanned!(*span=> #p::cache_key(&#ident))
                    }
                    Param::Receiver { .. } | Param::Pattern { .. } => {
                        unreachable!("rejected by valid.rs")
                    }
                });
                before.extend(quote! {
                    let #key = (#(#parts,)*);
                });
            }
            before.extend(quote_spanned!(out_span=> #p::cache_value(#returns);));
            resolved.extend(quote! {
                let #cache = #site.cache(&#breaker, &#key, #returns);
            });
            option_calls.extend(quote!(.fallback_for(&*#cache, &#key)));
            unavailable = quote!(#p::unavailable(#error));
            finish = match &args.map_err {
                Some((_, map_err)) => {
                    let span = map_err.span();
                    quote_spanned!(span=> #shape.finish_mapped(#result, #map_err))
                }
                None => quote_spanned!(out_span=> #shape.finish_cached(#result_at_output)),
            };
        }
        None => {
            unavailable = quote!(#p::unavailable(#error));
            finish = match &args.map_err {
                Some((_, map_err)) => {
                    let span = map_err.span();
                    quote_spanned!(span=> #shape.finish_mapped(#result, #map_err))
                }
                None => quote_spanned!(out_span=> #shape.finish(#result_at_output)),
            };
        }
    }
    if let Some(quality) = &args.quality {
        let span = quality.span();
        option_calls.extend(quote_spanned!(span=> .quality(#p::shape::quality(#shape, #quality))));
    }
    if let Some(classify) = &args.classify {
        let span = classify.span();
        option_calls
            .extend(quote_spanned!(span=> .classify(#p::shape::classify(#shape, #classify))));
    }
    let error_binding = if matches!(args.fallback, Some(FallbackArg::Function(_))) {
        quote!(_)
    } else {
        error.to_token_stream()
    };

    let call = match func.flavor {
        Flavor::Sync => {
            let (method, capture) = if deadline {
                (quote!(call_with_deadline), quote!(move))
            } else {
                (quote!(call_with), quote!())
            };
            quote!(#breaker.#method(&#options, #shape.body(#capture || { #body_prelude #block })))
        }
        Flavor::Async => {
            quote!(#breaker.call_async_with(&#options, #shape.future(async #block)).await)
        }
        Flavor::Future { .. } => {
            quote!(#breaker.call_async_with(&#options, #shape.future(#future)).await)
        }
    };

    let keyed = args.key.as_ref().map(|(_, expression)| {
        // With `fallback = cached`, a key the family refused is answered
        // from the cache when it can be.
        let unavailable = if matches!(args.fallback, Some(FallbackArg::Cached(_))) {
            quote! {
                match #site.refused_cached(&#key, #returns) {
                    #p::core::option::Option::Some(#answer) => {
                        #p::core::result::Result::Ok(#answer)
                    }
                    #p::core::option::Option::None => #unavailable,
                }
            }
        } else {
            unavailable.clone()
        };
        keyed_call(
            &p,
            &l,
            &config,
            expression,
            asynchronous,
            &resolved,
            &option_calls,
            &call,
            &unavailable,
        )
    });
    let guarded = if let Some((before_keyed, keyed_result)) = &keyed {
        // First, before the arguments move into the fallback's cells: the
        // key only borrows them, and its borrow ends with the lookup.
        before = quote!(#before_keyed #before);
        quote! {
            #prepare
            let #result = #keyed_result;
            #finish
        }
    } else {
        quote! {
        #prepare
        let #result = match #site.breaker(#config) {
            #p::core::result::Result::Ok(#breaker) => {
                #resolved
                let #options = #p::CallOptions::new() #option_calls;
                #call
            }
            #p::core::result::Result::Err(#error_binding) => #unavailable,
        };
        #finish
        }
    };
    let site_type = if args.key.is_some() {
        quote!(#p::KeyedSite)
    } else {
        quote!(#p::Site)
    };
    let site_static = if matches!(args.fallback, Some(FallbackArg::Cached(_))) {
        // The id under which the site's cache can be filled by hand.
        let function = func.item.sig.ident.unraw().to_string();
        quote! {
            static #site: #site_type = #site_type::cached(
                #name,
                #p::core::concat!(#p::core::module_path!(), "::", #function),
            );
        }
    } else {
        quote! {
            static #site: #site_type = #site_type::new(#name);
        }
    };
    let new_body = match func.flavor {
        Flavor::Sync => {
            // A future under an alias the attribute cannot see through.
            let sync_check = quote_spanned! {out_span=>
                {
                    #[allow(unused_imports)]
                    use #p::sync_check::{ReturnsFuture as _, ReturnsValue as _};
                    (&#returns).breaker_sync_check().ok();
                }
            };
            quote! {{
                #use_crate
                #site_static
                #sync_check
                #shape_init
                #before
                #guarded
            }}
        }
        Flavor::Async => quote! {{
            #use_crate
            #site_static
            #shape_init
            #before
            #guarded
        }},
        Flavor::Future { boxed } => {
            let wrapped = quote!(async move { #guarded });
            let wrapped = if boxed {
                quote!(#p::std::boxed::Box::pin(#wrapped))
            } else {
                wrapped
            };
            quote! {{
                #use_crate
                #site_static
                #shape_init
                #before
                let #future = (|| #block)();
                #wrapped
            }}
        }
    };
    let mut item = func.item;
    if strip_mut {
        // The body's `mut` binding is the one in the closure now: the
        // parameter itself is only moved, and `mut` on it would warn.
        for input in &mut item.sig.inputs {
            if let syn::FnArg::Typed(typed) = input {
                if let syn::Pat::Ident(pat) = &mut *typed.pat {
                    pat.mutability = None;
                }
            }
        }
    }
    item.block = Box::new(syn::parse2(new_body).expect("the expansion is a block"));
    item.into_token_stream()
}

/// The code that keeps a sync function's named arguments in a cell until
/// either its body or its fallback takes them.
struct LazyArguments {
    /// Before the call: the cell of the arguments, and the cell of their
    /// copies.
    cells: TokenStream,
    /// At the start of the body: the arguments under their own names,
    /// copied for a fallback that may answer a failure.
    for_body: TokenStream,
    /// In the fallback: the copies if the body ran, else the arguments,
    /// bound to the `copies` idents of the named parameters.
    for_fallback: TokenStream,
}

/// Where the language allows it, a fallback's arguments cost nothing
/// until they are needed: a call the breaker rejects (open circuit, rate
/// limit) passes the fallback the arguments themselves. A call that runs
/// still copies them before its body, which may consume them and then
/// fail; only then can the fallback need them, and only the body knows.
fn lazy_arguments(func: &Func, p: &TokenStream, l: &Locals, copies: &[Ident]) -> LazyArguments {
    let (arguments, copied) = (&l.arguments, &l.copies);
    let mut names = Vec::new();
    let mut bindings = Vec::new();
    let mut clones = Vec::new();
    let mut taken = Vec::new();
    for ((param, input), copy) in func.params.iter().zip(&func.item.sig.inputs).zip(copies) {
        let Param::Named { ident, span, .. } = param else {
            continue;
        };
        let mutability = match input {
            syn::FnArg::Typed(typed) => match &*typed.pat {
                syn::Pat::Ident(pat) => pat.mutability,
                _ => None,
            },
            syn::FnArg::Receiver(_) => None,
        };
        names.push(ident.clone());
        bindings.push(quote!(#mutability #ident));
        clones.push(quote_spanned!(*span=> #p::fallback_arg(&#ident)));
        taken.push(copy.clone());
    }
    let none = quote!(#p::core::option::Option::None);
    let some = quote!(#p::core::option::Option::Some);
    LazyArguments {
        cells: quote! {
            let #arguments = #p::core::cell::Cell::new(#some((#(#names,)*)));
            let #copied = #p::core::cell::Cell::new(#none);
        },
        for_body: quote! {
            let (#(#bindings,)*) = #p::body_arguments(&#arguments);
            #copied.set(#some((#(#clones,)*)));
        },
        for_fallback: quote! {
            let (#(#taken,)*) = #p::fallback_arguments(&#copied, &#arguments);
        },
    }
}

/// For `key = expression`: the statement that finds the key's member of the
/// family before the body runs (the key's borrow of the arguments ends
/// there, so the body may move them), and the expression giving the call's
/// result through it. A sync call holds the member found in the family's
/// table (no reference count is touched); an async one keeps a handle of
/// its own across awaits, so the future stays `Send`.
#[allow(clippy::too_many_arguments)]
fn keyed_call(
    p: &TokenStream,
    l: &Locals,
    config: &TokenStream,
    expression: &syn::Expr,
    asynchronous: bool,
    resolved: &TokenStream,
    option_calls: &TokenStream,
    call: &TokenStream,
    unavailable: &TokenStream,
) -> (TokenStream, TokenStream) {
    let Locals {
        site,
        breaker,
        options,
        error,
        ..
    } = l;
    let member = Ident::new("__breaker_member", Span::mixed_site());
    let find = if asynchronous {
        quote!(member_owned)
    } else {
        quote!(member)
    };
    let span = expression.span();
    // A string key is read as it is; any other goes through `Display`
    // (see `__private::KeyRef`).
    let key = quote_spanned! {span=>
        (&#p::KeyRef(&(#expression))).breaker_key_text().text()
    };
    let before = quote! {
        let #member = {
            #[allow(unused_imports)]
            use #p::{KeyIsDisplay as _, KeyIsText as _};
            #site.#find(#config, #key.as_str())
        };
    };
    let result = quote! {
        match &#member {
            #p::core::result::Result::Ok(#breaker) => {
                let #breaker: &#p::CircuitBreaker = #breaker;
                #resolved
                let #options = #p::CallOptions::new() #option_calls;
                #call
            }
            #p::core::result::Result::Err(#error) => {
                #[allow(unused_variables)]
                let #error: &#p::BreakerError = #error;
                #unavailable
            }
        }
    };
    (before, result)
}

fn is_reference(ty: &Type) -> bool {
    match ty {
        Type::Reference(_) => true,
        Type::Paren(paren) => is_reference(&paren.elem),
        Type::Group(group) => is_reference(&group.elem),
        _ => false,
    }
}

/// A `Duration` of `secs` seconds, to the nanosecond (`valid.rs` has
/// checked that it fits).
fn duration(p: &TokenStream, secs: f64) -> TokenStream {
    let nanos = Literal::u64_unsuffixed((secs * 1e9).round() as u64);
    quote!(#p::Duration::from_nanos(#nanos))
}

/// `|| { let mut c = Default::default(); c.field = value; ...; c }`, or the
/// default constructor itself when no field is set.
fn config_fn(args: &Args, p: &TokenStream, l: &Locals) -> TokenStream {
    if let Some((_, expression)) = &args.config {
        // Spanned at the expression, so a value of another type is
        // reported there.
        let span = expression.span();
        return quote_spanned!(span=> || #p::config_value(#expression));
    }
    let config = &l.config;
    let default = quote!(<#p::CircuitBreakerConfig as #p::core::default::Default>::default);
    let mut fields = TokenStream::new();
    let some = quote!(#p::core::option::Option::Some);
    let mut set = |field: &str, value: TokenStream| {
        let field = Ident::new(field, Span::call_site());
        fields.extend(quote!(#config.#field = #value;));
    };
    for (field, count, optional) in [
        ("failure_threshold", &args.failure_threshold, false),
        ("success_threshold", &args.success_threshold, false),
        ("rate_limit_per_minute", &args.rate_limit_per_minute, true),
        ("rate_limit_burst", &args.rate_limit_burst, true),
        ("sliding_window_size", &args.sliding_window_size, false),
        ("half_open_max_calls", &args.half_open_max_calls, false),
        ("minimum_calls", &args.minimum_calls, false),
        ("max_deadline_workers", &args.max_deadline_workers, false),
    ] {
        if let Some(count) = count {
            let value = Literal::u32_unsuffixed(count.value as u32);
            set(
                field,
                if optional {
                    quote!(#some(#value))
                } else {
                    quote!(#value)
                },
            );
        }
    }
    for (field, secs) in [
        ("recovery_timeout", &args.recovery_timeout),
        ("timeout_duration", &args.timeout_duration),
        ("max_retry_after", &args.max_retry_after),
    ] {
        if let Some(secs) = secs {
            set(field, duration(p, secs.value));
        }
    }
    if let Some(quality) = &args.quality_threshold {
        let value = Literal::f64_unsuffixed(quality.value);
        set("quality_threshold", quote!(#value));
    }
    if let Some(rate) = &args.failure_rate_threshold {
        let value = Literal::f64_unsuffixed(rate.value);
        set("failure_rate_threshold", quote!(#some(#value)));
    }
    if let (Some(multiplier), Some(cap)) = (&args.backoff_multiplier, &args.max_open_duration) {
        let multiplier = Literal::f64_unsuffixed(multiplier.value);
        let cap = duration(p, cap.value);
        set(
            "backoff",
            quote!(#some(#p::Backoff {
                multiplier: #multiplier,
                max_open_duration: #cap,
            })),
        );
    }
    if fields.is_empty() {
        return default;
    }
    quote! {
        || {
            let mut #config = #default();
            #fields
            #config
        }
    }
}

#[cfg(test)]
mod tests {
    /// `crate = ...` reaches every path: nothing names `breaker_runtime`.
    #[test]
    fn a_renamed_crate_is_the_only_path_to_the_runtime() {
        let functions = [
            quote::quote!(
                fn sync_fn(prompt: String, n: u32) -> Result<String, E> {
                    Ok(prompt)
                }
            ),
            quote::quote!(
                async fn async_fn(prompt: &str) -> Result<String, E> {
                    Ok(prompt.to_owned())
                }
            ),
            quote::quote!(
                fn boxed(prompt: &str) -> BoxFuture<'_, Result<String, E>> {
                    Box::pin(async move { Ok(prompt.to_owned()) })
                }
            ),
        ];
        let keys = [
            quote::quote!(fallback = cached),
            quote::quote!(fallback = canned, quality = score),
            quote::quote!(config = my_config(), classify = judge, map_err = to_e),
            quote::quote!(timeout_duration = 1, failure_threshold = 2),
        ];
        for function in &functions {
            for keys in &keys {
                let args = quote::quote!(name = "x", crate = my_app::breaker, #keys);
                let expanded = super::circuit_breaker(args, function.clone()).to_string();
                assert!(!expanded.contains("compile_error"), "{expanded}");
                assert!(
                    expanded.contains("my_app :: breaker :: __private"),
                    "{expanded}"
                );
                assert!(!expanded.contains("breaker_runtime"), "{expanded}");
            }
        }
    }

    #[test]
    #[ignore = "prints an expansion for reading"]
    fn print_expansion() {
        let args = quote::quote!(
            name = "llm",
            failure_threshold = 5,
            fallback = cached_answer,
            quality = eval_fn
        );
        let item = quote::quote!(
            async fn ask_llm(prompt: &str) -> Result<String, LlmError> {
                client().complete(prompt).await
            }
        );
        println!("{}", super::circuit_breaker(args, item));
    }
}
