//! Modules: entry points, identity, and compiling a validated module.

use super::*;

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
            Entry::Evolve => loom_abi::EXPORT_EVOLVE,
            Entry::Decide => loom_abi::EXPORT_DECIDE,
            Entry::React => loom_abi::EXPORT_REACT,
            Entry::Query => loom_abi::EXPORT_QUERY,
            Entry::EvolveGroups => loom_abi::EXPORT_EVOLVE_GROUPS,
        }
    }

    pub(crate) const ALL: [Entry; 5] = [
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

impl Runtime {
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
        check_compile_cost(bytes)?;
        let module = self.compile_code(bytes)?;
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
}
