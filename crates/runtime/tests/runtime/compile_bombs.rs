//! Compile bombs: modules whose compilation would cost far more memory or time than their
//! size suggests are refused before anything is compiled, naming the limit.

use std::time::{Duration, Instant};

use loom_runtime::{ModuleError, Runtime, RuntimeConfig};

/// A valid Loom module with `functions` trivial functions besides its entry points.
fn module_with(functions: usize, locals: usize) -> Vec<u8> {
    let mut wat = String::from(
        r#"(module
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "evolve") (param i32 i32) (result i64) i64.const 0)"#,
    );
    for i in 0..functions {
        wat.push_str(&format!("(func $f{i} (result i32) i32.const {i})"));
    }
    if locals > 0 {
        wat.push_str(&format!("(func (local {}) )", "i32 ".repeat(locals)));
    }
    wat.push(')');
    wat::parse_str(&wat).unwrap()
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_module_of_100_000_functions_is_refused_before_compiling() {
    let rt = Runtime::new(RuntimeConfig::default());
    let bomb = module_with(100_000, 0);
    let before = rss_kib();
    let started = Instant::now();
    let err = rt.compile(&bomb).unwrap_err();
    let took = started.elapsed();
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "bomb of {} bytes refused in {took:?}, RSS +{grown} KiB",
        bomb.len()
    );
    assert!(
        matches!(&err, ModuleError::OverLimits(m) if m.contains("100003 functions") && m.contains("5000")),
        "{err}"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Nothing was compiled: 100 000 functions cost gigabytes to compile.
    assert!(grown < 64 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn too_many_locals_are_refused_and_a_module_at_the_limits_compiles() {
    let rt = Runtime::new(RuntimeConfig::default());
    let err = rt.compile(&module_with(0, 60_000)).unwrap_err();
    assert!(
        matches!(&err, ModuleError::OverLimits(m) if m.contains("locals")),
        "{err}"
    );
    let before = rss_kib();
    let started = Instant::now();
    let at_limit = module_with(4_990, 0);
    let module = rt.compile(&at_limit).unwrap();
    let compiled = rss_kib();
    eprintln!(
        "4 993 functions compiled in {:?}, RSS +{} KiB",
        started.elapsed(),
        compiled.saturating_sub(before)
    );
    rt.evict(&module.info().id);
    drop(module);
    eprintln!(
        "after evicting it, RSS +{} KiB",
        rss_kib().saturating_sub(before)
    );
}
