//! The export shim: the raw ABI functions [`export!`](crate::export!) generates, and the typed
//! glue they call.

use loom_abi::{CallStatus, output};

use crate::context::{DecideContext, ReactContext};
use crate::event::{DecodeEventError, Event, decode_event, encode_event, event_types};
use crate::{Decider, Projection, Query, Reactor};

/// The raw imports of `loom_v1` (ABI v2 modules may import the same `log` from there).
pub(crate) mod sys {
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    #[link(wasm_import_module = "loom_v1")]
    unsafe extern "C" {
        /// Writes a UTF-8 log line.
        ///
        /// # Traps
        /// If `ptr..ptr+len` is outside the module's memory.
        #[link_name = "log"]
        fn loom_log(level: i32, ptr: *const u8, len: usize);
    }

    /// Logs a line through the host.
    #[cfg(target_arch = "wasm32")]
    #[allow(unsafe_code)]
    pub(crate) fn log(message: &str) {
        // SAFETY: the pointer and length describe a live, initialised UTF-8 slice of this
        // module's memory; the host only reads it during the call.
        unsafe { loom_log(1, message.as_ptr(), message.len()) }
    }

    /// Natively (tests), logs go to stderr.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn log(message: &str) {
        eprintln!("[loom guest] {message}");
    }
}

fn error(message: impl std::fmt::Display) -> Vec<u8> {
    output(CallStatus::Error, message.to_string().as_bytes())
}

fn json_ok<T: serde::Serialize>(value: &T) -> Vec<u8> {
    match serde_json::to_vec(value) {
        Ok(bytes) => output(CallStatus::Ok, &bytes),
        Err(e) => error(format_args!("could not serialize the result: {e}")),
    }
}

fn load_state<P: Projection>(state: Option<&[u8]>) -> Result<P, Vec<u8>> {
    match state {
        None => Ok(P::default()),
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| error(format_args!("the stored state does not deserialize: {e}"))),
    }
}

/// `evolve`: folds a batch of events into the state.
pub fn run_evolve<P: Projection>(input: &[u8]) -> Vec<u8> {
    let (state, count, mut reader) = match loom_abi::evolve::decode(input) {
        Ok(x) => x,
        Err(e) => return error(e),
    };
    match fold::<P>(state, count, &mut reader) {
        Ok(state) => json_ok(&state),
        Err(out) => out,
    }
}

/// `evolve_groups`: [`run_evolve`] for each of many independent groups in one call.
pub fn run_evolve_groups<P: Projection>(input: &[u8]) -> Vec<u8> {
    let (groups, mut reader) = match loom_abi::evolve_groups::decode(input) {
        Ok(x) => x,
        Err(e) => return error(e),
    };
    // Each state is written straight into the output, after its length (filled in once the
    // state is written): no buffer per group.
    let mut out = Vec::with_capacity(1 + 64 * groups as usize);
    out.push(CallStatus::Ok as u8);
    for _ in 0..groups {
        let (state, count) = match loom_abi::evolve::decode_group(&mut reader) {
            Ok(x) => x,
            Err(e) => return error(e),
        };
        let state = match fold::<P>(state, count, &mut reader) {
            Ok(s) => s,
            Err(out) => return out,
        };
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        if let Err(e) = serde_json::to_writer(&mut out, &state) {
            return error(format_args!("could not serialize the result: {e}"));
        }
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out
}

/// Folds `count` events from `reader` into `state`; an error is the whole error output.
fn fold<P: Projection>(
    state: Option<&[u8]>,
    count: u32,
    reader: &mut loom_abi::Decoder<'_>,
) -> Result<P, Vec<u8>> {
    let mut state: P = load_state(state)?;
    for _ in 0..count {
        let raw = reader.event().map_err(error)?;
        match decode_event::<P::Event>(&raw) {
            Ok(Some(data)) => state.evolve(Event::new(data, raw)),
            Ok(None) => {}
            Err(e) => {
                return Err(error(format_args!(
                    "event at position {} (type {:?}) does not fit the event type: {e}",
                    raw.position, raw.ty
                )));
            }
        }
    }
    Ok(state)
}

fn rejected(message: String) -> Vec<u8> {
    output(
        CallStatus::Rejected,
        serde_json::json!({ "message": message })
            .to_string()
            .as_bytes(),
    )
}

/// `decide`: the events a command produces, or its rejection. The context is built from the
/// stream and revision of the input, and, from an ABI v2 host, its context JSON.
pub fn run_decide<D: Decider>(input: &[u8]) -> Vec<u8> {
    let input = match loom_abi::decide::decode(input) {
        Ok(x) => x,
        Err(e) => return error(e),
    };
    let mut ctx: DecideContext = match input.context.filter(|c| !c.is_empty()) {
        Some(json) => match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => return error(format_args!("the command's context does not read: {e}")),
        },
        None => DecideContext::default(),
    };
    ctx.subject = input.subject.to_owned();
    ctx.revision = input.revision;
    let state: D = match load_state(input.state) {
        Ok(s) => s,
        Err(out) => return out,
    };
    let command: D::Command = match serde_json::from_slice(input.command) {
        Ok(c) => c,
        Err(e) => return rejected(format!("malformed command: {e}")),
    };
    match state.decide(command, &ctx) {
        Ok(events) => {
            let mut out = Vec::with_capacity(events.len());
            for e in &events {
                match encode_event(e) {
                    Ok((ty, data)) => out.push(serde_json::json!({ "type": ty, "data": data })),
                    Err(e) => return error(format_args!("a decided event: {e}")),
                }
            }
            json_ok(&out)
        }
        Err(rejection) => rejected(rejection.to_string()),
    }
}

/// `react`: what to do about one event.
pub fn run_react<R: Reactor>(input: &[u8]) -> Vec<u8> {
    let raw = match loom_abi::react::decode(input) {
        Ok(e) => e,
        Err(e) => return error(e),
    };
    let ctx = ReactContext::of(&raw);
    match decode_event::<R::Event>(&raw) {
        Ok(Some(data)) => match R::react(Event::new(data, raw), &ctx) {
            Ok(reaction) => json_ok(&reaction),
            Err(e) => error(format_args!(
                "reacting to the event at position {}: {e}",
                ctx.position
            )),
        },
        Ok(None) | Err(DecodeEventError::UnknownType) => json_ok(&crate::Reaction::none()),
        Err(e) => error(format_args!(
            "event at position {} (type {:?}) does not fit the event type: {e}",
            raw.position, raw.ty
        )),
    }
}

/// `query`: a derived answer.
pub fn run_query<Q: Query>(input: &[u8]) -> Vec<u8> {
    let (state, params) = match loom_abi::query::decode(input) {
        Ok(x) => x,
        Err(e) => return error(e),
    };
    let state: Q = match load_state(state) {
        Ok(s) => s,
        Err(out) => return out,
    };
    let params: Q::Params =
        match serde_json::from_slice(if params.is_empty() { b"null" } else { params }) {
            Ok(p) => p,
            Err(e) => {
                return output(
                    CallStatus::Rejected,
                    serde_json::json!({ "message": format!("malformed query parameters: {e}") })
                        .to_string()
                        .as_bytes(),
                );
            }
        };
    json_ok(&state.query(params))
}

/// One reducer of a module built with [`module!`](crate::module!), as `loom_describe` tells
/// the host about it.
#[derive(Debug)]
pub struct ReducerDesc {
    /// Its name.
    pub name: &'static str,
    /// `projection`, `decider`, `query`, `reactor`.
    pub kinds: &'static [&'static str],
    /// The entity it is about, if the module says.
    pub entity: Option<&'static str>,
    /// The event types it decodes (`None`: any).
    pub events: fn() -> Option<Vec<&'static str>>,
    /// JSON Schemas derived from its event and command types, when they derive
    /// `schemars::JsonSchema` and the `schemars` feature is on.
    pub schemas: fn() -> Option<serde_json::Value>,
}

/// The event types a projection (or decider) decodes.
pub fn events_of<P: Projection>() -> Option<Vec<&'static str>> {
    event_types::<P::Event>()
}

/// The event types a reactor decodes.
pub fn events_of_reactor<R: Reactor>() -> Option<Vec<&'static str>> {
    event_types::<R::Event>()
}

/// The description JSON of a module's reducers.
pub fn description(reducers: &[ReducerDesc]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = reducers
        .iter()
        .map(|r| {
            let mut d = serde_json::json!({
                "name": r.name,
                "kinds": r.kinds,
                "entity": r.entity,
                "events": (r.events)(),
            });
            if let Some(s) = (r.schemas)() {
                d["schemas"] = s;
            }
            d
        })
        .collect();
    serde_json::json!({ "reducers": list })
}

/// `loom_describe`.
pub fn run_describe(reducers: &[ReducerDesc]) -> Vec<u8> {
    json_ok(&description(reducers))
}

/// Raw-pointer glue, used by the code [`export!`](crate::export!) generates.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
pub mod raw {
    use std::sync::Once;

    static PANIC_HOOK: Once = Once::new();

    /// `loom_alloc`: a buffer of `len` bytes the host fills with the input.
    pub fn alloc(len: i32) -> i32 {
        PANIC_HOOK.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                super::sys::log(&format!("panic: {info}"));
            }))
        });
        let mut buf = Vec::<u8>::with_capacity(len.max(0) as usize);
        let ptr = buf.as_mut_ptr();
        std::mem::forget(buf);
        ptr as i32
    }

    /// Runs an entry point on the input at `ptr..ptr+len` and returns the packed output.
    pub fn call(ptr: i32, len: i32, f: fn(&[u8]) -> Vec<u8>) -> i64 {
        // SAFETY: the host wrote exactly `len` bytes at `ptr`, a buffer it obtained from
        // `alloc(len)` for this call, and nothing else aliases it while we read.
        let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len.max(0) as usize) };
        let out = f(input).into_boxed_slice();
        let len = out.len() as u32;
        // The instance is discarded after the call, so the output is never freed.
        let ptr = Box::into_raw(out) as *mut u8 as u32;
        loom_abi::pack(ptr, len)
    }
}

/// Exports a type's implementations as a Loom module. Call it once per module crate:
///
/// ```ignore
/// loom_guest::export!(Cart, projection, decider, query);
/// loom_guest::export!(Notifier, reactor);
/// ```
///
/// Kinds: `projection` exports `evolve` and `evolve_groups` (needed by deciders too), `decider` exports `decide`,
/// `query` exports `query`, `reactor` exports `react`. Natively (for `cargo test`) it expands
/// to nothing but the trait checks.
#[macro_export]
macro_rules! export {
    ($ty:ty $(, $kind:ident)+ $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn loom_abi_version() -> i32 {
            $crate::abi::ABI_VERSION as i32
        }

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn loom_alloc(len: i32) -> i32 {
            $crate::__export::raw::alloc(len)
        }

        $( $crate::__export_kind!($kind, $ty); )+
    };
    ($($other:tt)*) => {
        compile_error!("usage: loom_guest::export!(Type, projection | decider | query | reactor, ...)");
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_kind {
    (projection, $ty:ty) => {
        const _: fn() = || $crate::__export::assert_projection::<$ty>();
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn evolve(ptr: i32, len: i32) -> i64 {
            $crate::__export::raw::call(ptr, len, $crate::__export::run_evolve::<$ty>)
        }
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn evolve_groups(ptr: i32, len: i32) -> i64 {
            $crate::__export::raw::call(ptr, len, $crate::__export::run_evolve_groups::<$ty>)
        }
    };
    (decider, $ty:ty) => {
        const _: fn() = || $crate::__export::assert_decider::<$ty>();
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn decide(ptr: i32, len: i32) -> i64 {
            $crate::__export::raw::call(ptr, len, $crate::__export::run_decide::<$ty>)
        }
    };
    (query, $ty:ty) => {
        const _: fn() = || $crate::__export::assert_query::<$ty>();
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn query(ptr: i32, len: i32) -> i64 {
            $crate::__export::raw::call(ptr, len, $crate::__export::run_query::<$ty>)
        }
    };
    (reactor, $ty:ty) => {
        const _: fn() = || $crate::__export::assert_reactor::<$ty>();
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn react(ptr: i32, len: i32) -> i64 {
            $crate::__export::raw::call(ptr, len, $crate::__export::run_react::<$ty>)
        }
    };
    ($other:ident, $ty:ty) => {
        compile_error!(concat!(
            "unknown export kind `",
            stringify!($other),
            "`: use projection, decider, query or reactor"
        ));
    };
}

/// Trait checks for the macro: a missing impl reports the trait's `on_unimplemented` message.
pub fn assert_projection<T: Projection>() {}
/// See [`assert_projection`].
pub fn assert_decider<T: Decider>() {}
/// See [`assert_projection`].
pub fn assert_query<T: Query>() {}
/// See [`assert_projection`].
pub fn assert_reactor<T: Reactor>() {}
