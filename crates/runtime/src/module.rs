//! Modules: entry points, identity, and compiling a validated module.

use super::*;

/// An entry point: in ABI v1 a module's own (`evolve`), in ABI v2 a named reducer's
/// (`evolve.books`); and ABI v2's `loom_describe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// `loom_describe` (ABI v2): the module's reducers.
    Describe,
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
            Entry::Describe => loom_abi::EXPORT_DESCRIBE,
        }
    }

    /// The entry point an export name of a reducer names (`evolve` of `evolve.books`).
    pub(crate) fn of_name(name: &str) -> Option<Entry> {
        Entry::ALL.into_iter().find(|e| e.name() == name)
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
#[non_exhaustive]
pub struct ModuleInfo {
    /// `sha256:<hex>` of the bytes.
    pub id: String,
    /// Size in bytes.
    pub size: usize,
    /// ABI version: 1 or 2.
    pub abi: u32,
    /// Entry points exported, in ABI order: the module's own (v1), or every entry point any
    /// of its reducers exports (v2).
    pub exports: Vec<Entry>,
    /// Its named reducers, as the module described them (ABI v2; none in v1).
    pub reducers: Vec<ReducerInfo>,
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

    /// The reducer this handle calls (ABI v2), if it is bound to one.
    pub fn reducer(&self) -> Option<&ReducerInfo> {
        self.reducer.map(|i| &self.info.reducers[i])
    }

    /// The same module, calling the reducer `name` (ABI v2). `None` when the module has no
    /// such reducer (an ABI v1 module has none).
    pub fn bind(&self, name: &str) -> Option<Module> {
        let i = self.info.reducers.iter().position(|r| r.name == name)?;
        Some(Module {
            info: self.info.clone(),
            pre: self.pre.clone(),
            reducer: Some(i),
        })
    }

    /// Whether calls through this handle reach `entry`: the module's own entry point (ABI
    /// v1), or the bound reducer's (ABI v2; an unbound v2 module has none but `loom_describe`).
    pub fn exports(&self, entry: Entry) -> bool {
        match (self.info.abi, self.reducer()) {
            (_, _) if entry == Entry::Describe => self.info.abi >= loom_abi::ABI_VERSION_2,
            (loom_abi::ABI_VERSION, _) => self.info.exports.contains(&entry),
            (_, Some(r)) => r.exports.contains(&entry),
            (_, None) => false,
        }
    }

    /// The export a call of `entry` runs.
    pub(crate) fn export_name(&self, entry: Entry) -> std::borrow::Cow<'static, str> {
        match self.reducer() {
            Some(r) if entry != Entry::Describe => {
                loom_abi::reducer_export(entry.name(), &r.name).into()
            }
            _ => entry.name().into(),
        }
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
        let import = check_imports(&module)?;
        let exports = check_exports(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        // Ask the module which ABI it speaks.
        let version = {
            let _slot = self.slots.acquire();
            let mut store = self.store();
            let instance = pre
                .instantiate(&mut store)
                .map_err(|e| ModuleError::Startup(format!("{e:#}")))?;
            instance
                .get_typed_func::<(), i32>(&mut store, loom_abi::EXPORT_ABI_VERSION)
                .and_then(|f| f.call(&mut store, ()))
                .map_err(|e| ModuleError::Startup(format!("{e:#}")))?
        };
        let abi = u32::try_from(version)
            .ok()
            .filter(|v| loom_abi::SUPPORTED_VERSIONS.contains(v))
            .ok_or(ModuleError::AbiVersion {
                found: version as i64,
                supported: loom_abi::ABI_VERSION_2,
            })?;
        // `loom_v2.log` is new in version 2; a v2 module may import the same `log` from
        // either module.
        if abi == loom_abi::ABI_VERSION && import == Some(loom_abi::IMPORT_MODULE_V2) {
            return Err(ModuleError::ForbiddenImport {
                module: loom_abi::IMPORT_MODULE_V2.to_owned(),
                name: "log (an ABI v1 module imports from \"loom_v1\")".to_owned(),
            });
        }
        let mut m = Module {
            info: Arc::new(ModuleInfo {
                id: id.clone(),
                size: bytes.len(),
                abi,
                exports: Vec::new(),
                reducers: Vec::new(),
            }),
            pre,
            reducer: None,
        };
        let info = if abi == loom_abi::ABI_VERSION {
            if exports.own.is_empty() || exports.own == [Entry::EvolveGroups] {
                return Err(ModuleError::NoEntryPoints);
            }
            ModuleInfo {
                exports: exports.own,
                ..(*m.info).clone()
            }
        } else {
            if !exports.describe {
                return Err(ModuleError::BadExport {
                    name: loom_abi::EXPORT_DESCRIBE.into(),
                    problem: "is missing: an ABI v2 module describes its reducers".into(),
                });
            }
            let reducers = self.describe(&m, &exports.by_reducer)?;
            let mut union: Vec<Entry> = Vec::new();
            for e in Entry::ALL {
                if reducers.iter().any(|r| r.exports.contains(&e)) {
                    union.push(e);
                }
            }
            ModuleInfo {
                exports: union,
                reducers,
                ..(*m.info).clone()
            }
        };
        m.info = Arc::new(info);
        self.cache
            .write()
            .expect("cache lock")
            .insert(id, m.clone());
        Ok(m)
    }
}
