//! Checking a module against the ABI before it is compiled: imports only `log` from
//! `loom_v1` or `loom_v2`, the required exports with the right signatures.

use super::*;

pub(crate) fn func_sig(ty: &ExternType) -> Option<(Vec<ValType>, Vec<ValType>)> {
    match ty {
        ExternType::Func(f) => Some((f.params().collect(), f.results().collect())),
        _ => None,
    }
}

pub(crate) fn sig_is(ty: &ExternType, params: &[&str], results: &[&str]) -> bool {
    let Some((p, r)) = func_sig(ty) else {
        return false;
    };
    let names = |v: &[ValType]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    names(&p) == params && names(&r) == results
}

/// Checks the imports; answers the import module the module uses (`loom_v1` or `loom_v2`),
/// if it imports anything. Which one it may use depends on its ABI version, checked once the
/// module has said it.
pub(crate) fn check_imports(module: &WasmModule) -> Result<Option<&'static str>, ModuleError> {
    let mut used = None;
    for import in module.imports() {
        let from = [loom_abi::IMPORT_MODULE, loom_abi::IMPORT_MODULE_V2]
            .into_iter()
            .find(|m| *m == import.module());
        let ok = from.is_some()
            && import.name() == loom_abi::IMPORT_LOG
            && sig_is(&import.ty(), &["i32", "i32", "i32"], &[])
            && (used.is_none() || used == from);
        if !ok {
            return Err(ModuleError::ForbiddenImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
        used = from;
    }
    Ok(used)
}

/// The entry points a module exports: its own (`evolve`: ABI v1) and its reducers'
/// (`evolve.books`: ABI v2). Which count depends on the version it reports.
pub(crate) struct Exports {
    pub(crate) own: Vec<Entry>,
    pub(crate) describe: bool,
    pub(crate) by_reducer: std::collections::BTreeMap<String, Vec<Entry>>,
}

pub(crate) fn check_exports(module: &WasmModule) -> Result<Exports, ModuleError> {
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
    let entry_sig = |name: &str, t: &ExternType| {
        if sig_is(t, &["i32", "i32"], &["i64"]) {
            Ok(())
        } else {
            Err(bad(name, "must be a function (i32, i32) -> i64"))
        }
    };
    let mut own = Vec::new();
    for entry in Entry::ALL {
        if let Some(t) = find(entry.name()) {
            entry_sig(entry.name(), &t)?;
            own.push(entry);
        }
    }
    // Alone, it is no entry point at all (refused as such once the version is known).
    if own.contains(&Entry::EvolveGroups) && !own.contains(&Entry::Evolve) && own.len() > 1 {
        return Err(bad(
            loom_abi::EXPORT_EVOLVE_GROUPS,
            "needs `evolve` exported too",
        ));
    }
    let describe = find(loom_abi::EXPORT_DESCRIBE);
    if let Some(t) = &describe {
        entry_sig(loom_abi::EXPORT_DESCRIBE, t)?;
    }
    let mut by_reducer: std::collections::BTreeMap<String, Vec<Entry>> = Default::default();
    for export in module.exports() {
        let Some((entry, reducer)) = loom_abi::split_reducer_export(export.name()) else {
            continue;
        };
        let entry = Entry::of_name(entry).expect("split_reducer_export knows only entry points");
        entry_sig(export.name(), &export.ty())?;
        by_reducer
            .entry(reducer.to_owned())
            .or_default()
            .push(entry);
    }
    Ok(Exports {
        own,
        describe: describe.is_some(),
        by_reducer,
    })
}

/// Checks, before anything is compiled, that the module stays within what compiling it may
/// cost: functions, body sizes, locals, total code ([`MAX_FUNCTIONS`] and the limits beside
/// it). Malformed input is left to the compiler, which says what is wrong.
pub(crate) fn check_compile_cost(bytes: &[u8]) -> Result<(), ModuleError> {
    let over = |what: String| Err(ModuleError::OverLimits(what));
    let mut code = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            wasmparser::Payload::CodeSectionStart { count, .. } if count > MAX_FUNCTIONS => {
                return over(format!(
                    "it defines {count} functions; at most {MAX_FUNCTIONS} are allowed"
                ));
            }
            wasmparser::Payload::CodeSectionEntry(body) => {
                let size = body.range().len();
                if size > MAX_FUNCTION_BODY {
                    return over(format!(
                        "a function body is {size} bytes; at most {MAX_FUNCTION_BODY} are allowed"
                    ));
                }
                code += size;
                if code > MAX_CODE {
                    return over(format!(
                        "its code is over {MAX_CODE} bytes; at most that is allowed"
                    ));
                }
                let Ok(locals) = body.get_locals_reader() else {
                    return Ok(());
                };
                let mut declared = 0u32;
                for local in locals {
                    let Ok((n, _)) = local else {
                        return Ok(());
                    };
                    declared = declared.saturating_add(n);
                    if declared > MAX_LOCALS {
                        return over(format!(
                            "a function declares more than {MAX_LOCALS} locals; at most that \
                             many are allowed"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
