//! What every call and upload is limited to.

use super::*;

/// Limits applied to every call, and to uploads.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Fuel (roughly, wasm instructions) one call may use.
    pub fuel_per_call: u64,
    /// Largest linear memory a module may have, bytes.
    pub memory_limit: usize,
    /// Wall-clock backstop for one call.
    pub call_timeout: Duration,
    /// Largest output a call may return, bytes.
    pub max_output: usize,
    /// Largest module accepted, bytes.
    pub max_module_size: usize,
    /// Most calls (and upload validations) running at once; each holds one pre-reserved
    /// instance slot. Further calls wait for a slot.
    pub max_concurrent_calls: u32,
    /// Where modules are compiled.
    pub compiler: Compiler,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            fuel_per_call: 2_000_000_000,
            memory_limit: 64 * 1024 * 1024,
            call_timeout: Duration::from_secs(10),
            max_output: 16 * 1024 * 1024,
            max_module_size: 32 * 1024 * 1024,
            max_concurrent_calls: 64,
            compiler: Compiler::InProcess,
        }
    }
}

pub(crate) const MAX_LOG_LINES: usize = 16;

pub(crate) const MAX_LOG_LINE: usize = 2048;

pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Tables a module may have, and elements per table.
pub(crate) const MAX_TABLES: u32 = 4;

pub(crate) const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Linear memory kept resident per pool slot between calls (reset by copying only the pages a
/// call dirtied, where `PAGEMAP_SCAN` is available; otherwise released with `madvise`).
pub(crate) const KEEP_RESIDENT: usize = 8 * 1024 * 1024;

/// Largest per-instance host state (`VMContext`: globals, function references, …).
pub(crate) const MAX_INSTANCE_STATE: usize = 8 * 1024 * 1024;

/// Most functions a module may define. Compiling with inlining costs about 66 KiB per
/// function (7 KiB without), so the count bounds what an upload can make the server
/// allocate (docs/faults.md, "Compile bombs"); the example reducers define about 300.
pub(crate) const MAX_FUNCTIONS: u32 = 5_000;
/// Largest function body, in bytes (the examples' largest is about 20 KiB).
pub(crate) const MAX_FUNCTION_BODY: usize = 1 << 20;
/// Most locals one function may declare.
pub(crate) const MAX_LOCALS: u32 = 50_000;
/// Most code in a module, in bytes (all function bodies together).
pub(crate) const MAX_CODE: usize = 16 << 20;
