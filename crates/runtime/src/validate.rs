//! Checking a module against ABI v1 before it is compiled: imports only from `loom_v1`,
//! the required exports with the right signatures.

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

pub(crate) fn check_imports(module: &WasmModule) -> Result<(), ModuleError> {
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

pub(crate) fn check_exports(module: &WasmModule) -> Result<Vec<Entry>, ModuleError> {
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
