//! What the annotated function looks like, as far as the expansion cares:
//! how it runs (sync, async, or returning a future), what its caller gets,
//! and its parameters.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, GenericParam, ItemFn, Pat, PathArguments, ReturnType, Type,
    TypeParamBound,
};

/// How the function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// A plain `fn`: its body becomes a closure.
    Sync,
    /// An `async fn`: its body becomes an `async` block awaited in place.
    Async,
    /// A `fn` returning a future: `-> impl Future<Output = ...>`,
    /// `Pin<Box<dyn Future<Output = ...> + ...>>` as `#[async_trait]` writes
    /// it, or `BoxFuture<'_, ...>` / `LocalBoxFuture<'_, ...>` as the
    /// `futures` crate names that. The body still builds the future; the
    /// breaker wraps it (boxed again, for a boxed one).
    Future { boxed: bool },
}

/// What the caller finally gets (for a future, its output).
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub(crate) ty: Type,
    /// Where type errors about the output are reported.
    pub(crate) span: Span,
}

/// One parameter.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    /// `self`, `&self`, `&mut self`, `self: Arc<Self>`...
    Receiver {
        by_ref: bool,
        mutable_ref: bool,
        span: Span,
    },
    /// `name: Type` (also `mut name: Type`).
    Named {
        ident: syn::Ident,
        ty: Box<Type>,
        span: Span,
    },
    /// A destructuring pattern or `_`: it has no name to pass on.
    Pattern { span: Span },
}

impl Param {
    pub(crate) fn span(&self) -> Span {
        match self {
            Self::Receiver { span, .. } | Self::Named { span, .. } | Self::Pattern { span } => {
                *span
            }
        }
    }
}

/// The function, analysed.
pub(crate) struct Func {
    pub(crate) item: ItemFn,
    pub(crate) flavor: Flavor,
    pub(crate) output: Output,
    pub(crate) params: Vec<Param>,
    /// A written `impl Trait` return other than a future, which cannot be named.
    pub(crate) opaque_output: Option<Span>,
}

impl Func {
    pub(crate) fn new(item: ItemFn) -> Self {
        let params = item.sig.inputs.iter().map(param).collect();
        let (flavor, declared) = match (&item.sig.asyncness, &item.sig.output) {
            (Some(_), _) => (Flavor::Async, None),
            (None, ReturnType::Type(_, ty)) => match future_output(ty) {
                Some((boxed, output)) => (Flavor::Future { boxed }, Some(output.clone())),
                None => (Flavor::Sync, None),
            },
            (None, ReturnType::Default) => (Flavor::Sync, None),
        };
        let (ty, span) = match (&declared, &item.sig.output) {
            (Some(output), _) => (output.clone(), output.span()),
            (None, ReturnType::Type(_, ty)) => ((**ty).clone(), ty.span()),
            (None, ReturnType::Default) => (syn::parse_quote!(()), item.sig.ident.span()),
        };
        let opaque_output = mentions_impl(ty.to_token_stream()).then_some(span);
        Self {
            flavor,
            output: Output { ty, span },
            params,
            opaque_output,
            item,
        }
    }

    /// Whether the function has type or const parameters (lifetimes do not
    /// count: they do not change the types a cache holds).
    pub(crate) fn generic_over_types(&self) -> Option<Span> {
        self.item
            .sig
            .generics
            .params
            .iter()
            .find(|p| !matches!(p, GenericParam::Lifetime(_)))
            .map(Spanned::span)
            .or_else(|| {
                self.item.sig.inputs.iter().find_map(|input| match input {
                    FnArg::Typed(typed) if mentions_impl(typed.ty.to_token_stream()) => {
                        Some(typed.ty.span())
                    }
                    _ => None,
                })
            })
    }
}

fn param(input: &FnArg) -> Param {
    match input {
        FnArg::Receiver(receiver) => Param::Receiver {
            by_ref: receiver.reference.is_some()
                || matches!(&*receiver.ty, Type::Reference(_)) && receiver.colon_token.is_some(),
            mutable_ref: receiver.reference.is_some() && receiver.mutability.is_some()
                || matches!(&*receiver.ty, Type::Reference(r) if r.mutability.is_some())
                    && receiver.colon_token.is_some(),
            span: receiver.span(),
        },
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => Param::Named {
                ident: pat.ident.clone(),
                ty: typed.ty.clone(),
                span: typed.span(),
            },
            _ => Param::Pattern {
                span: typed.pat.span(),
            },
        },
    }
}

/// The output of `impl Future<Output = X>` or `Pin<Box<dyn Future<Output = X> ...>>`.
fn future_output(ty: &Type) -> Option<(bool, &Type)> {
    match ty {
        Type::ImplTrait(imp) => output_binding(imp.bounds.iter()).map(|out| (false, out)),
        Type::Path(path) => {
            let pin = path.path.segments.last()?;
            // `futures::future::BoxFuture<'a, T>` and `LocalBoxFuture<'a, T>`
            // are `Pin<Box<dyn Future<Output = T> (+ Send) + 'a>>`.
            if pin.ident == "BoxFuture" || pin.ident == "LocalBoxFuture" {
                return only_type_argument(&pin.arguments).map(|out| (true, out));
            }
            if pin.ident != "Pin" {
                return None;
            }
            let Type::Path(boxed) = single_type_argument(&pin.arguments)? else {
                return None;
            };
            let boxed = boxed.path.segments.last()?;
            if boxed.ident != "Box" {
                return None;
            }
            let Type::TraitObject(object) = single_type_argument(&boxed.arguments)? else {
                return None;
            };
            output_binding(object.bounds.iter()).map(|out| (true, out))
        }
        Type::Paren(paren) => future_output(&paren.elem),
        Type::Group(group) => future_output(&group.elem),
        _ => None,
    }
}

fn single_type_argument(arguments: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = arguments else {
        return None;
    };
    args.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    })
}

/// The type argument of `BoxFuture<'a, T>`, when there is exactly one.
fn only_type_argument(arguments: &PathArguments) -> Option<&Type> {
    let PathArguments::AngleBracketed(args) = arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|arg| match arg {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    });
    match (types.next(), types.next()) {
        (Some(ty), None) => Some(ty),
        _ => None,
    }
}

fn output_binding<'a>(mut bounds: impl Iterator<Item = &'a TypeParamBound>) -> Option<&'a Type> {
    bounds.find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let future = bound.path.segments.last()?;
        if future.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &future.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => Some(&assoc.ty),
            _ => None,
        })
    })
}

fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => mentions_impl(group.stream()),
        _ => false,
    })
}
