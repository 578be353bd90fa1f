//! Compile bombs: modules whose compilation would cost far more memory or time than their
//! size suggests are refused before anything is compiled, naming the limit.

use std::time::{Duration, Instant};

use loom_runtime::{Compiler, CompilerProcess, ModuleError, Runtime, RuntimeConfig};

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

/// A runtime whose compiler process is `sh -c SCRIPT`, killed after `deadline`.
fn with_compiler(script: &str, deadline: Duration) -> Runtime {
    Runtime::new(RuntimeConfig {
        compiler: Compiler::Process(CompilerProcess {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            deadline,
        }),
        ..RuntimeConfig::default()
    })
}

#[test]
fn a_compiler_process_past_its_deadline_is_killed_and_the_module_refused() {
    let rt = with_compiler("cat >/dev/null; sleep 30", Duration::from_millis(200));
    let started = Instant::now();
    let err = rt.compile(&module_with(1, 0)).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, ModuleError::OverLimits(m) if m.contains("longer than the limit of 200ms")),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_compiler_process_that_fails_refuses_the_module_with_its_message() {
    let said = with_compiler(
        "cat >/dev/null; echo 'no room' >&2; exit 1",
        Duration::from_secs(30),
    );
    let err = said.compile(&module_with(1, 0)).unwrap_err();
    assert_eq!(err, ModuleError::OverLimits("no room".into()));

    let killed = with_compiler("kill -9 $$", Duration::from_secs(30));
    let err = killed.compile(&module_with(1, 0)).unwrap_err();
    assert!(
        matches!(&err, ModuleError::OverLimits(m) if m.contains("killed")),
        "{err}"
    );

    let silent = with_compiler("exit 3", Duration::from_secs(30));
    let err = silent.compile(&module_with(1, 0)).unwrap_err();
    assert!(
        matches!(&err, ModuleError::OverLimits(m) if m.contains("status 3")),
        "{err}"
    );
}

#[test]
fn an_artifact_from_precompile_loads_into_the_server_runtime() {
    // What `loom compile-module` does, checked against the pooling engine's configuration.
    let bytes = loom_testkit::example_wasm("cart");
    let artifact = loom_runtime::precompile(&bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artifact");
    std::fs::write(&path, &artifact).unwrap();
    let rt = with_compiler(
        &format!("cat >/dev/null; cat {}", path.display()),
        Duration::from_secs(30),
    );
    let module = rt.compile(&bytes).unwrap();
    assert!(
        module
            .bind("cart")
            .unwrap()
            .exports(loom_runtime::Entry::Evolve)
    );
}
