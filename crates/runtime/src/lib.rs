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
//! Nothing here exposes `wasmtime::*` types.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Duration;

use loom_abi::{DataKind, EventRef, Status};
use loom_core::{Data, DataRef, EventView, StoredEvent};
use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker,
    Module as WasmModule, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap,
    ValType,
};

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
        }
    }
}

/// An entry point of ABI v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    /// `evolve`: fold events into a state.
    Evolve,
    /// `decide`: command → events.
    Decide,
    /// `react`: event → reaction.
    React,
    /// `query`: state + params → answer.
    Query,
    /// `evolve_groups`: `evolve` over many independent groups in one call (optional).
    EvolveGroups,
}

impl Entry {
    /// The export name.
    pub fn name(self) -> &'static str {
        match self {
            Entry::Evolve => "evolve",
            Entry::Decide => "decide",
            Entry::React => "react",
            Entry::Query => "query",
            Entry::EvolveGroups => loom_abi::EXPORT_EVOLVE_GROUPS,
        }
    }

    const ALL: [Entry; 5] = [
        Entry::Evolve,
        Entry::Decide,
        Entry::React,
        Entry::Query,
        Entry::EvolveGroups,
    ];
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a module was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
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
    /// Imports something outside `loom_v1` (WASI, clocks, randomness, …).
    #[error(
        "import {module}.{name} is not allowed: a Loom module may import only from \"loom_v1\" (log); no WASI, clock, randomness or I/O"
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
    /// None of evolve, decide, react, query is exported.
    #[error("the module exports none of evolve, decide, react or query")]
    NoEntryPoints,
    /// `loom_abi_version` answered a version this host does not speak.
    #[error("the module speaks Loom ABI version {found}; this server supports version {supported}")]
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

fn logs_suffix(logs: &[String]) -> String {
    match logs.last() {
        Some(last) => format!(" (module log: {last})"),
        None => String::new(),
    }
}

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Status 0: the result (JSON).
    Ok(Vec<u8>),
    /// Status 1: a domain rejection (JSON `{"message": …}`).
    Rejected(Vec<u8>),
}

/// A module's identity and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// `sha256:<hex>` of the bytes.
    pub id: String,
    /// Size in bytes.
    pub size: usize,
    /// ABI version.
    pub abi: u32,
    /// Entry points exported, in ABI order.
    pub exports: Vec<Entry>,
}

/// A validated, compiled module, ready to call. Cheap to clone.
#[derive(Clone)]
pub struct Module {
    info: Arc<ModuleInfo>,
    pre: InstancePre<HostState>,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Module").field("info", &self.info).finish()
    }
}

impl Module {
    /// Identity and shape.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// Whether it exports `entry`.
    pub fn exports(&self, entry: Entry) -> bool {
        self.info.exports.contains(&entry)
    }
}

/// The content id of module bytes: `sha256:<hex>`.
pub fn module_id(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut id = String::with_capacity(7 + 64);
    id.push_str("sha256:");
    for b in digest {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

const MAX_LOG_LINES: usize = 16;
const MAX_LOG_LINE: usize = 2048;
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Tables a module may have, and elements per table.
const MAX_TABLES: u32 = 4;
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Linear memory kept resident per pool slot between calls (reset by copying only the pages a
/// call dirtied, where `PAGEMAP_SCAN` is available; otherwise released with `madvise`).
const KEEP_RESIDENT: usize = 8 * 1024 * 1024;
/// Largest per-instance host state (`VMContext`: globals, function references, …).
const MAX_INSTANCE_STATE: usize = 8 * 1024 * 1024;

/// Counts free instance slots; a call holds a [`SlotGuard`] for as long as its `Store` lives.
struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().expect("slot lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("slot lock");
        }
        *free -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slot lock") += 1;
        self.0.freed.notify_one();
    }
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
    pub fn new(config: RuntimeConfig) -> Runtime {
        let mut wasm = Config::new();
        wasm.consume_fuel(true);
        // Cranelift inlines small functions within a module (off by default in wasmtime): a
        // wasm call costs more than a native one (fuel and epoch bookkeeping), and guest code
        // is full of small functions. +5–8 % on the `cart` fold; compiling a module takes
        // longer (docs/benchmarks.md, "Wasm reducers").
        wasm.compiler_inlining(wasmtime::Inlining::Yes);
        wasm.epoch_interruption(true);
        // Determinism: canonical NaNs, and the deterministic lowering of relaxed SIMD (threads
        // are not compiled in).
        wasm.cranelift_nan_canonicalization(true);
        wasm.relaxed_simd_deterministic(true);
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
        linker
            .func_wrap(
                loom_abi::IMPORT_MODULE,
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
                            "loom_v1.log was given bytes {start:#x}+{len} outside the module's {} bytes of linear memory",
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
            .expect("defining loom_v1.log");
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
            slots: Slots {
                free: Mutex::new(slots),
                freed: Condvar::new(),
            },
            stop_ticker,
        }
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

    /// Validates and compiles module bytes (or returns the cached module with the same hash).
    pub fn compile(&self, bytes: &[u8]) -> Result<Module, ModuleError> {
        if bytes.len() > self.config.max_module_size {
            return Err(ModuleError::TooLarge {
                size: bytes.len(),
                limit: self.config.max_module_size,
            });
        }
        let id = module_id(bytes);
        if let Some(m) = self.cached(&id) {
            return Ok(m);
        }
        let module = WasmModule::from_binary(&self.engine, bytes).map_err(|e| {
            if WasmModule::validate(&self.engine, bytes).is_ok() {
                // Valid wasm the instance pool cannot hold.
                ModuleError::OverLimits(e.root_cause().to_string())
            } else {
                ModuleError::Invalid(format!("{e:#}"))
            }
        })?;
        check_imports(&module)?;
        let exports = check_exports(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        // Ask the module which ABI it speaks.
        let _slot = self.slots.acquire();
        let mut store = self.store();
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| ModuleError::Startup(format!("{e:#}")))?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, loom_abi::EXPORT_ABI_VERSION)
            .and_then(|f| f.call(&mut store, ()))
            .map_err(|e| ModuleError::Startup(format!("{e:#}")))?;
        if version as i64 != loom_abi::ABI_VERSION as i64 {
            return Err(ModuleError::AbiVersion {
                found: version as i64,
                supported: loom_abi::ABI_VERSION,
            });
        }
        let m = Module {
            info: Arc::new(ModuleInfo {
                id: id.clone(),
                size: bytes.len(),
                abi: loom_abi::ABI_VERSION,
                exports,
            }),
            pre,
        };
        self.cache
            .write()
            .expect("cache lock")
            .insert(id, m.clone());
        Ok(m)
    }

    fn store(&self) -> Store<HostState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.config.memory_limit)
            .instances(1)
            .memories(1)
            .tables(MAX_TABLES as usize)
            .table_elements(MAX_TABLE_ELEMENTS)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            HostState {
                limits,
                logs: Vec::new(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store
            .set_fuel(self.config.fuel_per_call)
            .expect("fuel is enabled");
        let ticks = (self.config.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Calls an entry point with an ABI input buffer; returns its output.
    pub fn call(&self, module: &Module, entry: Entry, input: &[u8]) -> Result<Outcome, CallError> {
        if !module.exports(entry) {
            return Err(CallError::MissingEntry(entry));
        }
        // Declared before the store, so the slot is released after the store (and its
        // instance) is dropped.
        let _slot = self.slots.acquire();
        let mut store = self.store();
        let result = self.call_in(&mut store, module, entry, input);
        result.map_err(|e| self.classify(entry, e, std::mem::take(&mut store.data_mut().logs)))
    }

    fn call_in(
        &self,
        store: &mut Store<HostState>,
        module: &Module,
        entry: Entry,
        input: &[u8],
    ) -> Result<Outcome, Failure> {
        let instance = module.pre.instantiate(&mut *store).map_err(Failure::Wasm)?;
        let memory = instance
            .get_memory(&mut *store, loom_abi::EXPORT_MEMORY)
            .ok_or_else(|| Failure::Output("the module has no memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut *store, loom_abi::EXPORT_ALLOC)
            .map_err(Failure::Wasm)?;
        let func = instance
            .get_typed_func::<(i32, i32), i64>(&mut *store, entry.name())
            .map_err(Failure::Wasm)?;
        let len = i32::try_from(input.len())
            .map_err(|_| Failure::Output("the input is larger than 2 GiB".into()))?;
        let ptr = alloc.call(&mut *store, len).map_err(Failure::Wasm)?;
        memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| {
                Failure::Output(format!(
                    "loom_alloc({len}) returned an out-of-bounds buffer {ptr:#x}"
                ))
            })?;
        let packed = func.call(&mut *store, (ptr, len)).map_err(Failure::Wasm)?;
        let (out_ptr, out_len) = loom_abi::unpack(packed);
        let (out_ptr, out_len) = (out_ptr as usize, out_len as usize);
        if out_len > self.config.max_output {
            return Err(Failure::Output(format!(
                "the output is {out_len} bytes; the limit is {}",
                self.config.max_output
            )));
        }
        let data = memory.data(&*store);
        let Some(out) = data.get(out_ptr..out_ptr.saturating_add(out_len)) else {
            return Err(Failure::Output(format!(
                "the output {out_ptr:#x}+{out_len} lies outside the module's memory ({} bytes)",
                data.len()
            )));
        };
        let (status, payload) = loom_abi::parse_output(out).map_err(|e| Failure::Output(e.0))?;
        match status {
            Status::Ok => Ok(Outcome::Ok(payload.to_vec())),
            Status::Rejected => Ok(Outcome::Rejected(payload.to_vec())),
            Status::Error => Err(Failure::Guest(
                String::from_utf8_lossy(payload).into_owned(),
            )),
        }
    }

    fn classify(&self, entry: Entry, failure: Failure, logs: Vec<String>) -> CallError {
        match failure {
            Failure::Output(message) => CallError::BadOutput { entry, message },
            Failure::Guest(message) => CallError::Guest { entry, message },
            Failure::Wasm(e) => {
                if let Some(trap) = e.downcast_ref::<Trap>() {
                    match *trap {
                        Trap::OutOfFuel => {
                            return CallError::OutOfFuel {
                                entry,
                                fuel: self.config.fuel_per_call,
                                logs,
                            };
                        }
                        Trap::Interrupt => {
                            return CallError::Timeout {
                                entry,
                                timeout: self.config.call_timeout,
                                logs,
                            };
                        }
                        _ => {}
                    }
                }
                let message = format!("{e:#}");
                if message.contains("memory")
                    && (message.contains("grow") || message.contains("limit"))
                {
                    return CallError::MemoryLimit {
                        entry,
                        limit: self.config.memory_limit,
                        logs,
                    };
                }
                // The root cause, not the wasm backtrace wrapped around it.
                let message = match e.downcast_ref::<Trap>() {
                    Some(trap) => trap.to_string(),
                    None => e.root_cause().to_string(),
                };
                CallError::Trap {
                    entry,
                    message,
                    logs,
                }
            }
        }
    }

    // ----- typed helpers over the ABI encodings -----

    /// Folds `events` into `state` (JSON; `None` = initial); returns the new state JSON.
    pub fn evolve(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        events: &[StoredEvent],
    ) -> Result<Vec<u8>, CallError> {
        let mut ext = Vec::with_capacity(events.len());
        for e in events {
            ext.push(extensions_json(e));
        }
        let input =
            loom_abi::evolve::encode(state, events.iter().zip(&ext).map(|(e, x)| event_ref(e, x)));
        self.evolve_input(module, &input)
    }

    /// [`Runtime::evolve`] over borrowed views of stored records (the catch-up path).
    pub fn evolve_views(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        events: &[EventView<'_>],
    ) -> Result<Vec<u8>, CallError> {
        let ext: Vec<String> = events.iter().map(view_extensions_json).collect();
        let input =
            loom_abi::evolve::encode(state, events.iter().zip(&ext).map(|(e, x)| view_ref(e, x)));
        self.evolve_input(module, &input)
    }

    /// Folds many independent groups, `(state, events)` each, returning each group's new
    /// state in order. One `evolve_groups` call when the module exports it (a call's fixed
    /// cost is paid once, not per group), else one `evolve` call per group. An error fails
    /// the whole call; [`Runtime::evolve_views`] per group tells which group it was.
    pub fn evolve_groups(
        &self,
        module: &Module,
        groups: &[(Option<&[u8]>, &[EventView<'_>])],
    ) -> Result<Vec<Vec<u8>>, CallError> {
        if !module.exports(Entry::EvolveGroups) || groups.len() < 2 {
            return groups
                .iter()
                .map(|(state, events)| self.evolve_views(module, *state, events))
                .collect();
        }
        let ext: Vec<Vec<String>> = groups
            .iter()
            .map(|(_, events)| events.iter().map(view_extensions_json).collect())
            .collect();
        let refs: Vec<_> = groups
            .iter()
            .zip(&ext)
            .map(|((state, events), ext)| {
                (*state, events.iter().zip(ext).map(|(e, x)| view_ref(e, x)))
            })
            .collect();
        let input = loom_abi::evolve_groups::encode(&refs);
        let bad = |message: String| CallError::BadOutput {
            entry: Entry::EvolveGroups,
            message,
        };
        match self.call(module, Entry::EvolveGroups, &input)? {
            Outcome::Ok(payload) => {
                let states = loom_abi::evolve_groups::decode_states(&payload, groups.len())
                    .map_err(|e| bad(format!("malformed states: {}", e.0)))?;
                Ok(states.into_iter().map(<[u8]>::to_vec).collect())
            }
            Outcome::Rejected(_) => Err(bad("evolve_groups may not reject".into())),
        }
    }

    fn evolve_input(&self, module: &Module, input: &[u8]) -> Result<Vec<u8>, CallError> {
        match self.call(module, Entry::Evolve, input)? {
            Outcome::Ok(state) => Ok(state),
            Outcome::Rejected(_) => Err(CallError::BadOutput {
                entry: Entry::Evolve,
                message: "evolve may not reject".into(),
            }),
        }
    }

    /// Decides a command in a state folded to `revision` of `subject`.
    pub fn decide(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        command: &[u8],
        subject: &str,
        revision: u64,
    ) -> Result<Outcome, CallError> {
        let input = loom_abi::decide::encode(state, command, subject, revision);
        self.call(module, Entry::Decide, &input)
    }

    /// Asks a reactor about one event.
    pub fn react(&self, module: &Module, event: &StoredEvent) -> Result<Outcome, CallError> {
        let ext = extensions_json(event);
        let input = loom_abi::react::encode(&event_ref(event, &ext));
        self.call(module, Entry::React, &input)
    }

    /// Runs `query` on a state with parameters (JSON).
    pub fn query(
        &self,
        module: &Module,
        state: Option<&[u8]>,
        params: &[u8],
    ) -> Result<Outcome, CallError> {
        let input = loom_abi::query::encode(state, params);
        self.call(module, Entry::Query, &input)
    }
}

enum Failure {
    Wasm(wasmtime::Error),
    Output(String),
    Guest(String),
}

fn extensions_json(e: &StoredEvent) -> String {
    if e.event.extensions.is_empty() {
        String::new()
    } else {
        let map: serde_json::Map<String, serde_json::Value> = e
            .event
            .extensions
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    loom_core::ExtensionValue::String(s) => serde_json::Value::from(s.as_str()),
                    loom_core::ExtensionValue::Bool(b) => serde_json::Value::from(*b),
                    loom_core::ExtensionValue::Integer(i) => serde_json::Value::from(*i),
                };
                (k.clone(), v)
            })
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// The extensions of a view as the ABI carries them (empty text when there are none).
pub fn view_extensions_json(e: &EventView<'_>) -> String {
    if e.extensions.is_empty() {
        String::new()
    } else {
        e.extensions.to_json()
    }
}

/// The ABI view of a stored record; `extensions` from [`view_extensions_json`].
pub fn view_ref<'a>(e: &EventView<'a>, extensions: &'a str) -> EventRef<'a> {
    let (data_kind, data): (DataKind, &[u8]) = match e.data {
        DataRef::None => (DataKind::None, &[]),
        DataRef::Json(j) => (DataKind::Json, j.as_bytes()),
        DataRef::Text(t) => (DataKind::Text, t.as_bytes()),
        DataRef::Binary(b) => (DataKind::Binary, b),
    };
    EventRef {
        position: e.position,
        revision: e.revision,
        recorded_micros: e.recorded_micros,
        ty: e.ty,
        subject: e.subject,
        id: e.id,
        source: e.source,
        time: e.time,
        datacontenttype: e.datacontenttype,
        data_kind,
        data,
        extensions,
    }
}

/// The ABI view of a stored event.
pub fn event_ref<'a>(e: &'a StoredEvent, extensions: &'a str) -> EventRef<'a> {
    let (data_kind, data): (DataKind, &[u8]) = match &e.event.data {
        None => (DataKind::None, &[]),
        Some(Data::Json(raw)) => (DataKind::Json, raw.get().as_bytes()),
        Some(Data::Text(t)) => (DataKind::Text, t.as_bytes()),
        Some(Data::Binary(b)) => (DataKind::Binary, b),
    };
    EventRef {
        position: e.position,
        revision: e.revision,
        recorded_micros: e.recorded_micros,
        ty: &e.event.ty,
        subject: &e.event.subject,
        id: &e.event.id,
        source: &e.event.source,
        time: e.event.time.as_deref(),
        datacontenttype: e.event.datacontenttype.as_deref(),
        data_kind,
        data,
        extensions,
    }
}

fn func_sig(ty: &ExternType) -> Option<(Vec<ValType>, Vec<ValType>)> {
    match ty {
        ExternType::Func(f) => Some((f.params().collect(), f.results().collect())),
        _ => None,
    }
}

fn sig_is(ty: &ExternType, params: &[&str], results: &[&str]) -> bool {
    let Some((p, r)) = func_sig(ty) else {
        return false;
    };
    let names = |v: &[ValType]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    names(&p) == params && names(&r) == results
}

fn check_imports(module: &WasmModule) -> Result<(), ModuleError> {
    for import in module.imports() {
        let ok = import.module() == loom_abi::IMPORT_MODULE
            && import.name() == loom_abi::IMPORT_LOG
            && sig_is(&import.ty(), &["i32", "i32", "i32"], &[]);
        if !ok {
            return Err(ModuleError::ForbiddenImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    Ok(())
}

fn check_exports(module: &WasmModule) -> Result<Vec<Entry>, ModuleError> {
    let find = |name: &str| module.exports().find(|e| e.name() == name).map(|e| e.ty());
    let bad = |name: &str, problem: &str| ModuleError::BadExport {
        name: name.to_owned(),
        problem: problem.to_owned(),
    };
    match find(loom_abi::EXPORT_MEMORY) {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(_) => return Err(bad("memory", "must be a 32-bit, unshared memory")),
        None => return Err(bad("memory", "is missing")),
    }
    match find(loom_abi::EXPORT_ABI_VERSION) {
        Some(t) if sig_is(&t, &[], &["i32"]) => {}
        Some(_) => {
            return Err(bad(
                loom_abi::EXPORT_ABI_VERSION,
                "must be a function () -> i32",
            ));
        }
        None => return Err(bad(loom_abi::EXPORT_ABI_VERSION, "is missing")),
    }
    match find(loom_abi::EXPORT_ALLOC) {
        Some(t) if sig_is(&t, &["i32"], &["i32"]) => {}
        Some(_) => {
            return Err(bad(
                loom_abi::EXPORT_ALLOC,
                "must be a function (i32) -> i32",
            ));
        }
        None => return Err(bad(loom_abi::EXPORT_ALLOC, "is missing")),
    }
    let mut entries = Vec::new();
    for entry in Entry::ALL {
        if let Some(t) = find(entry.name()) {
            if !sig_is(&t, &["i32", "i32"], &["i64"]) {
                return Err(bad(entry.name(), "must be a function (i32, i32) -> i64"));
            }
            entries.push(entry);
        }
    }
    if entries.is_empty() || entries == [Entry::EvolveGroups] {
        return Err(ModuleError::NoEntryPoints);
    }
    if entries.contains(&Entry::EvolveGroups) && !entries.contains(&Entry::Evolve) {
        return Err(bad(
            loom_abi::EXPORT_EVOLVE_GROUPS,
            "needs `evolve` exported too",
        ));
    }
    Ok(entries)
}
