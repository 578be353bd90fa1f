//! The `loom` binary, run as a process against a real server.
//!
//! One test binary for the crate (each links the whole stack); a module per topic.

mod backup;
mod cli;
mod cluster;
mod cluster_engine;
mod cluster_joining;
mod commands;
mod common;
mod compile;
mod console;
mod contract;
mod deploy;
mod kill9;
mod projections;
