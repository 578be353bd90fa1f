//! The wasm host against real modules built from examples/ and hand-written WAT.
//!
//! One test binary for the crate (each links the whole stack); a module per topic.

mod abi_doc;
mod compile_bombs;
mod guest_heap;
mod hostile;
mod large_events;
mod runtime;
