//! Projections, deciders and reactors over a real ledger and real wasm modules.
//!
//! One test binary for the crate (each links the whole stack); a module per topic.

mod catch_up;
mod commands;
mod determinism;
mod fixture;
mod large_events;
mod modules;
mod projections;
mod turns;
