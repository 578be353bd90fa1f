//! Why a module was refused or a call failed.

use super::*;

/// Why a module was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// Larger than the configured maximum.
    #[error("the module is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid WebAssembly module.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// Imports something other than `log` from `loom_v1` (ABI v1) or `loom_v2` (ABI v2):
    /// WASI, clocks, randomness, …
    #[error(
        "import {module}.{name} is not allowed: a Loom module may import only from \"loom_v1\" (log), or \"loom_v2\" in ABI version 2; no WASI, clock, randomness or I/O"
    )]
    ForbiddenImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// A required export is missing or has the wrong type.
    #[error("export {name:?} {problem}")]
    BadExport {
        /// Export name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// None of evolve, decide, react, query is exported (ABI v1), or no reducer is (v2).
    #[error("the module exports none of evolve, decide, react or query")]
    NoEntryPoints,
    /// An ABI v2 module's description (`loom_describe`) is missing, malformed, or does not
    /// match its exports.
    #[error("the module's description does not hold: {0}")]
    Description(String),
    /// `loom_abi_version` answered a version this host does not speak.
    #[error(
        "the module speaks Loom ABI version {found}; this server supports versions 1 and {supported}"
    )]
    AbiVersion {
        /// What the module said.
        found: i64,
        /// What the host speaks.
        supported: u32,
    },
    /// `loom_abi_version` itself failed.
    #[error("calling loom_abi_version failed: {0}")]
    Startup(String),
    /// Valid WebAssembly that needs more than this host allows (initial memory over the
    /// memory limit, too many or too large tables, too much instance state).
    #[error("the module exceeds this server's limits: {0}")]
    OverLimits(String),
}

/// Why a call failed. The module's state is untouched (a fresh instance served the call).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The module does not export this entry point.
    #[error("the module does not export {0}")]
    MissingEntry(Entry),
    /// The call used its whole fuel budget (a loop, or too much work for one call).
    #[error("{entry} ran out of fuel (budget {fuel} units): the module loops or does too much work in one call{}", logs_suffix(.logs))]
    OutOfFuel {
        /// Entry point.
        entry: Entry,
        /// The budget.
        fuel: u64,
        /// Last lines the module logged.
        logs: Vec<String>,
    },
    /// The wall-clock deadline passed.
    #[error("{entry} exceeded its time limit of {timeout:?}{}", logs_suffix(.logs))]
    Timeout {
        /// Entry point.
        entry: Entry,
        /// The limit.
        timeout: Duration,
        /// Last lines the module logged.
        logs: Vec<String>,
    },
    /// The module tried to grow its memory past the cap.
    #[error("{entry} exceeded the memory limit of {limit} bytes{}", logs_suffix(.logs))]
    MemoryLimit {
        /// Entry point.
        entry: Entry,
        /// The cap.
        limit: usize,
        /// Last lines the module logged.
        logs: Vec<String>,
    },
    /// The module trapped (a panic, `unreachable`, out-of-bounds access, …).
    #[error("{entry} trapped: {message}{}", logs_suffix(.logs))]
    Trap {
        /// Entry point.
        entry: Entry,
        /// The trap.
        message: String,
        /// Last lines the module logged (a Rust panic message is logged by the SDK).
        logs: Vec<String>,
    },
    /// The module returned something that is not a valid ABI output.
    #[error("{entry} returned a malformed result: {message}")]
    BadOutput {
        /// Entry point.
        entry: Entry,
        /// What is wrong.
        message: String,
    },
    /// The module reported an error (status 2), e.g. an event its types cannot read.
    #[error("{entry} failed: {message}")]
    Guest {
        /// Entry point.
        entry: Entry,
        /// The module's message.
        message: String,
    },
}

pub(crate) fn logs_suffix(logs: &[String]) -> String {
    match logs.last() {
        Some(last) => format!(" (module log: {last})"),
        None => String::new(),
    }
}

pub(crate) enum Failure {
    Wasm(wasmtime::Error),
    Output(String),
    Guest(String),
}
