//! Loom's wasmtime host.
//!
//! One [`Runtime`] per process owns the wasmtime `Engine` and `Linker`. [`Runtime::compile`]
//! validates a module against ABI v1 (see `docs/abi.md`): it parses, imports only from
//! `loom_v1`, exports memory, `loom_alloc`, `loom_abi_version` (which must answer 1) and at
//! least one entry point with the right signature. Compiled modules are cached by content hash.
//!
//! Every call gets a fresh `Store` and a fresh instance with a fuel budget, a memory cap and an
//! epoch deadline, so a module that loops, traps or exhausts memory fails that call with a clear
//! [`CallError`] while the host and every other module carry on. Calls are synchronous: run them
//! off the async runtime (`spawn_blocking` or a worker thread).
//!
//! Instances come from wasmtime's pooling allocator: [`RuntimeConfig::max_concurrent_calls`]
//! slots of address space are reserved once, and a slot's memory is reset between calls (dirty
//! pages copied back from the module image where the kernel supports `PAGEMAP_SCAN`) instead of
//! being mapped and unmapped for every call. A call waits while every slot is in use.
//!
//! Compiling happens where [`RuntimeConfig::compiler`] says: in this process, or in a child
//! process that is killed at a deadline and takes the compiler's working memory with it when
//! it exits ([`Compiler`]; `loom serve` uses `loom compile-module`).
//!
//! Nothing here exposes `wasmtime::*` types.

mod call;
mod compiler;
mod convert;
mod describe;
mod error;
mod limits;
mod module;
mod pool;
mod validate;

pub use call::Outcome;
use compiler::code_config;
pub use compiler::{Compiler, CompilerProcess, precompile};
use convert::extensions_json;
pub use convert::{event_ref, view_extensions_json, view_ref};
pub use describe::ReducerInfo;
use error::Failure;
pub use error::{CallError, ModuleError};
pub use limits::RuntimeConfig;
use limits::*;
pub use module::{Entry, ModuleInfo, module_id};
use pool::Slots;
use validate::{check_compile_cost, check_exports, check_imports};

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use loom_abi::{CallStatus, DataKind, EventRef};
use loom_core::{Data, DataRef, EventView, StoredEvent};
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker,
    Module as WasmModule, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap,
    ValType,
};

/// A validated, compiled module, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    info: Arc<ModuleInfo>,
    pre: InstancePre<HostState>,
    /// The reducer calls go to (ABI v2), an index into `info.reducers`.
    reducer: Option<usize>,
}

struct HostState {
    limits: StoreLimits,
    logs: Vec<String>,
}

/// The wasm host. One per process.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    cache: RwLock<HashMap<String, Module>>,
    slots: Slots,
    stop_ticker: Arc<AtomicBool>,
    /// Calls made so far (every entry point, failed ones included).
    calls: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// A runtime with these limits. Starts the epoch ticker thread.
    // Long by design: the pooling configuration, one setting after another, each with its
    // reason, and the host function.
    pub fn new(config: RuntimeConfig) -> Runtime {
        let mut wasm = code_config();
        // Instances from a pool of pre-reserved slots: no mmap/munmap per call.
        let slots = config.max_concurrent_calls.max(1);
        let pagemap = PoolingAllocationConfig::is_pagemap_scan_available();
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(slots)
            .total_memories(slots)
            .total_tables(slots * MAX_TABLES)
            .max_memories_per_module(1)
            .max_tables_per_module(MAX_TABLES)
            .table_elements(MAX_TABLE_ELEMENTS)
            .max_memory_size(config.memory_limit.min(1 << 32))
            .max_core_instance_size(MAX_INSTANCE_STATE)
            .pagemap_scan(Enabled::Auto);
        if pagemap {
            // Only the pages a call dirtied are copied back, so keeping them is cheap; without
            // `PAGEMAP_SCAN` the whole kept range would be memset on every call.
            pool.linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(MAX_TABLE_ELEMENTS * 8);
        }

        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).expect("a valid wasmtime configuration");
        let mut linker = Linker::new(&engine);
        for import in [loom_abi::IMPORT_MODULE, loom_abi::IMPORT_MODULE_V2] {
            linker
            .func_wrap(
                import,
                loom_abi::IMPORT_LOG,
                |mut caller: Caller<'_, HostState>,
                 _level: i32,
                 ptr: i32,
                 len: i32|
                 -> wasmtime::Result<()> {
                    let Some(memory) = caller
                        .get_export(loom_abi::EXPORT_MEMORY)
                        .and_then(|e| e.into_memory())
                    else {
                        // Unreachable for a validated module: it exports its memory.
                        return Ok(());
                    };
                    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
                    let data = memory.data(&caller);
                    // A line outside the module's memory is a bug in the module: trap, as a
                    // wasm load from there would.
                    let Some(bytes) = data.get(start..start + len) else {
                        wasmtime::bail!(
                            "log was given bytes {start:#x}+{len} outside the module's {} bytes of linear memory",
                            data.len()
                        );
                    };
                    let line = String::from_utf8_lossy(&bytes[..len.min(MAX_LOG_LINE)]).into_owned();
                    tracing::debug!(target: "loom::guest", "{line}");
                    let logs = &mut caller.data_mut().logs;
                    if logs.len() == MAX_LOG_LINES {
                        logs.remove(0);
                    }
                    logs.push(line);
                    Ok(())
                },
            )
            .expect("defining the log import");
        }
        let stop_ticker = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("loom-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .expect("spawning the epoch ticker");
        }
        Runtime {
            engine,
            linker,
            config,
            cache: RwLock::new(HashMap::new()),
            slots: Slots::new(slots),
            stop_ticker,
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many module calls this runtime has made (every entry point, failed calls
    /// included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The limits in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// A compiled module from the cache.
    pub fn cached(&self, id: &str) -> Option<Module> {
        self.cache.read().expect("cache lock").get(id).cloned()
    }

    /// Drops a module from the cache.
    pub fn evict(&self, id: &str) {
        self.cache.write().expect("cache lock").remove(id);
    }

    // ----- typed helpers over the ABI encodings -----
}
