//! The HTTP API on a real server bound to a loopback port.
//!
//! One test binary for the crate (each links the whole stack); a module per topic.

mod appends;
mod auth;
mod commands;
mod common;
mod content_modes;
mod disk_full;
mod fuzz_regressions;
mod hostile_connections;
mod hostile_reactors;
mod hostile_requests;
mod hostile_selectors;
mod hostile_subscribers;
mod hostile_waits;
mod interop_js;
mod interop_python;
mod interop_rust;
mod modules;
mod ops;
mod projection_requests;
mod projections;
mod reactors;
mod reads;
mod shutdown;
mod subscribe;
mod walkthrough;
