//! `loom_guest::module!`: the reducers of an ABI v2 module. Re-exported by `loom-guest`; see
//! its documentation.
//!
//! The macro only checks the list (names, kinds, which may share a name) and emits small
//! shims; whether each type implements its trait is checked by trait bounds, which report the
//! traits' own `on_unimplemented` messages.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, LitStr, Token, Type};

const KINDS: [&str; 4] = ["projection", "decider", "query", "reactor"];

struct Entry {
    kind: Ident,
    name: String,
    name_span: Span,
    ty: Type,
    entity: Option<LitStr>,
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let _docs = input.call(Attribute::parse_outer)?;
        let kind: Ident = input.parse()?;
        if !KINDS.contains(&kind.to_string().as_str()) {
            return Err(syn::Error::new(
                kind.span(),
                format!(
                    "unknown reducer kind `{kind}`: write `projection`, `decider`, `query` or `reactor`"
                ),
            ));
        }
        let (name, name_span) = if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            (lit.value(), lit.span())
        } else {
            let id: Ident = input.parse()?;
            (id.to_string(), id.span())
        };
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(syn::Error::new(
                name_span,
                "a reducer name is 1-128 ASCII letters, digits, '_', '-' or '.'",
            ));
        }
        input.parse::<Token![:]>()?;
        let ty: Type = input.parse()?;
        let entity = if input.peek(Token![in]) {
            input.parse::<Token![in]>()?;
            Some(input.parse::<LitStr>()?)
        } else {
            None
        };
        Ok(Entry {
            kind,
            name,
            name_span,
            ty,
            entity,
        })
    }
}

struct Module {
    entries: Punctuated<Entry, Token![;]>,
}

impl Parse for Module {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        Ok(Module {
            entries: Punctuated::parse_terminated(input)?,
        })
    }
}

/// One reducer: the entries that share its name.
struct Reducer<'a> {
    name: &'a str,
    ty: &'a Type,
    kinds: Vec<String>,
    entity: Option<&'a LitStr>,
}

fn tokens(ty: &Type) -> String {
    quote!(#ty).to_string()
}

fn group(entries: &[Entry]) -> syn::Result<Vec<Reducer<'_>>> {
    let mut reducers: Vec<Reducer<'_>> = Vec::new();
    for e in entries {
        let kind = e.kind.to_string();
        let err = |m: String| syn::Error::new(e.name_span, m);
        match reducers.iter_mut().find(|r| r.name == e.name) {
            None => reducers.push(Reducer {
                name: &e.name,
                ty: &e.ty,
                kinds: vec![kind],
                entity: e.entity.as_ref(),
            }),
            Some(r) => {
                if r.kinds.contains(&kind) {
                    return Err(err(format!("`{kind} {}` is listed twice", e.name)));
                }
                if tokens(r.ty) != tokens(&e.ty) {
                    return Err(err(format!(
                        "reducer `{}` is `{}` and `{}`: the kinds of one reducer share its type",
                        e.name,
                        tokens(r.ty),
                        tokens(&e.ty)
                    )));
                }
                if let (Some(a), Some(b)) = (r.entity, e.entity.as_ref())
                    && a.value() != b.value()
                {
                    return Err(err(format!(
                        "reducer `{}` is in \"{}\" and in \"{}\"",
                        e.name,
                        a.value(),
                        b.value()
                    )));
                }
                r.entity = r.entity.or(e.entity.as_ref());
                r.kinds.push(kind);
            }
        }
    }
    for r in &reducers {
        let has = |k: &str| r.kinds.iter().any(|x| x == k);
        let span = entries
            .iter()
            .find(|e| e.name == r.name)
            .map_or_else(Span::call_site, |e| e.name_span);
        if has("projection") && has("decider") {
            return Err(syn::Error::new(
                span,
                format!(
                    "`decider {0}` folds its state too and serves projections as well: drop `projection {0}`",
                    r.name
                ),
            ));
        }
        if has("query") && !has("projection") && !has("decider") {
            return Err(syn::Error::new(
                span,
                format!(
                    "`query {0}` answers from the state of a projection or decider named `{0}`: add `projection {0}: …` (or `decider {0}: …`)",
                    r.name
                ),
            ));
        }
        if has("reactor") && r.kinds.len() > 1 {
            return Err(syn::Error::new(
                span,
                format!(
                    "`reactor {0}` shares its name with a {1}: give the reactor a name of its own",
                    r.name,
                    r.kinds
                        .iter()
                        .find(|k| *k != "reactor")
                        .expect("more than one kind")
                ),
            ));
        }
    }
    Ok(reducers)
}

/// A wasm export `export_name` that runs `run` on the call's input.
fn shim(export_name: String, run: Tokens) -> Tokens {
    quote! {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            #[allow(unsafe_code)]
            #[unsafe(export_name = #export_name)]
            extern "C" fn __loom_entry(ptr: i32, len: i32) -> i64 {
                ::loom_guest::__export::raw::call(ptr, len, #run)
            }
        };
    }
}

fn expand(module: Module) -> syn::Result<Tokens> {
    let entries: Vec<Entry> = module.entries.into_iter().collect();
    if entries.is_empty() {
        return Err(syn::Error::new(
            Span::call_site(),
            "a module needs at least one reducer, e.g. `projection books: BookState;`",
        ));
    }
    let reducers = group(&entries)?;
    let mut items = Vec::new();
    let mut descs = Vec::new();
    for r in &reducers {
        let ty = r.ty;
        let name = r.name;
        let has = |k: &str| r.kinds.iter().any(|x| x == k);
        let export = |entry: &str| format!("{entry}.{name}");
        if has("projection") || has("decider") {
            items.push(
                quote! { const _: fn() = || ::loom_guest::__export::assert_projection::<#ty>(); },
            );
            items.push(shim(
                export("evolve"),
                quote!(::loom_guest::__export::run_evolve::<#ty>),
            ));
            items.push(shim(
                export("evolve_groups"),
                quote!(::loom_guest::__export::run_evolve_groups::<#ty>),
            ));
        }
        if has("decider") {
            items.push(
                quote! { const _: fn() = || ::loom_guest::__export::assert_decider::<#ty>(); },
            );
            items.push(shim(
                export("decide"),
                quote!(::loom_guest::__export::run_decide::<#ty>),
            ));
        }
        if has("query") {
            items
                .push(quote! { const _: fn() = || ::loom_guest::__export::assert_query::<#ty>(); });
            items.push(shim(
                export("query"),
                quote!(::loom_guest::__export::run_query::<#ty>),
            ));
        }
        if has("reactor") {
            items.push(
                quote! { const _: fn() = || ::loom_guest::__export::assert_reactor::<#ty>(); },
            );
            items.push(shim(
                export("react"),
                quote!(::loom_guest::__export::run_react::<#ty>),
            ));
        }
        let kinds = &r.kinds;
        let entity = match r.entity {
            Some(e) => quote!(::core::option::Option::Some(#e)),
            None => quote!(::core::option::Option::None),
        };
        let events = if has("reactor") {
            quote!(::loom_guest::__export::events_of_reactor::<#ty>)
        } else {
            quote!(::loom_guest::__export::events_of::<#ty>)
        };
        // Which of its types derive `JsonSchema` is settled at compile time by autoref
        // specialisation (`loom_guest::schema`): the types need not derive it.
        let event_ty = if has("reactor") {
            quote!(<#ty as ::loom_guest::Reactor>::Event)
        } else {
            quote!(<#ty as ::loom_guest::Projection>::Event)
        };
        let command = if has("decider") {
            quote! {
                (&::loom_guest::schema::Probe::<<#ty as ::loom_guest::Decider>::Command>::NEW)
                    .json_schema()
            }
        } else {
            quote!(::core::option::Option::None)
        };
        descs.push(quote! {
            ::loom_guest::__export::ReducerDesc {
                name: #name,
                kinds: &[#(#kinds),*],
                entity: #entity,
                events: #events,
                schemas: || {
                    #[allow(unused_imports)]
                    use ::loom_guest::schema::{Derived as _, NotDerived as _};
                    ::loom_guest::schema::reducer_schemas(
                        (&::loom_guest::schema::Probe::<#event_ty>::NEW).json_schema(),
                        #command,
                    )
                },
            }
        });
    }
    let describe = format_ident!("__loom_describe");
    Ok(quote! {
        /// The module's reducers, as `loom_describe` reports them (also for native tests:
        /// `loom_guest::testing::check_registration`).
        pub const LOOM_REDUCERS: &[::loom_guest::__export::ReducerDesc] = &[#(#descs),*];

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn loom_abi_version() -> i32 {
            ::loom_guest::abi::ABI_VERSION_2 as i32
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn loom_alloc(len: i32) -> i32 {
            ::loom_guest::__export::raw::alloc(len)
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(export_name = "loom_describe")]
        extern "C" fn #describe(ptr: i32, len: i32) -> i64 {
            ::loom_guest::__export::raw::call(ptr, len, |_| {
                ::loom_guest::__export::run_describe(LOOM_REDUCERS)
            })
        }

        #(#items)*
    })
}

/// The reducers of a Loom module (ABI version 2): any number of projections, deciders,
/// queries and reactors, each named.
///
/// ```ignore
/// loom_guest::module! {
///     projection books: BookState in "book";
///     query books: BookState;
///     projection holdings: Holdings;
///     decider lending: Loan in "book";
///     reactor reminders: Reminders;
/// }
/// ```
///
/// Each line is `kind name: Type`, optionally `in "entity"`. Kinds of one name share its type
/// and its state: `projection` exports `evolve.{name}` (and `evolve_groups.{name}`), `decider`
/// `decide.{name}` and the fold (a decider serves projections as well), `query`
/// `query.{name}` over that state, `reactor` `react.{name}`. It also exports `loom_describe`,
/// and a `LOOM_REDUCERS` constant with the same description for native tests.
#[proc_macro]
pub fn module(input: TokenStream) -> TokenStream {
    match syn::parse::<Module>(input).and_then(expand) {
        Ok(t) => t.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
