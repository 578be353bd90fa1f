//! `docs/abi.md`, checked: the worked WAT example in the doc is compiled and called through the
//! runtime exactly as written, and the doc's statements about calls (fresh instance per call,
//! `log` traps on a bad pointer, `evolve` may not reject, concurrency slots) hold.

use std::sync::Arc;

use loom_core::{Event, StoredEvent};
use loom_runtime::{CallError, Entry, ModuleError, Outcome, Runtime, RuntimeConfig};
use serde_json::json;

const ABI_MD: &str = include_str!("../../../../docs/abi.md");

/// The one ```wat block of the doc.
fn doc_wat() -> &'static str {
    let start = ABI_MD
        .find("```wat\n")
        .expect("docs/abi.md has a ```wat block")
        + 7;
    let len = ABI_MD[start..]
        .find("\n```")
        .expect("the ```wat block is closed");
    assert!(
        !ABI_MD[start + len..].contains("```wat"),
        "docs/abi.md has one ```wat block"
    );
    &ABI_MD[start..start + len]
}

fn events(from: u64, n: u64) -> Vec<StoredEvent> {
    (from..from + n)
        .map(|p| StoredEvent {
            position: p,
            revision: p,
            recorded_micros: 1_700_000_000_000_000,
            event: Event::new(
                "doc",
                format!("e{p}"),
                "was_counted",
                "counter/1",
                json!({}),
            ),
        })
        .collect()
}

fn module(rt: &Runtime, wat: &str) -> loom_runtime::Module {
    rt.compile(&wat::parse_str(wat).expect("valid WAT"))
        .expect("ABI-valid module")
}

/// A minimal module with `evolve` = `body` (and whatever `extra` declares).
fn with_evolve(extra: &str, body: &str) -> String {
    format!(
        r#"(module
            (import "loom_v1" "log" (func $log (param i32 i32 i32)))
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 1024)
            {extra}
            (func (export "evolve") (param i32 i32) (result i64) {body}))"#
    )
}

#[test]
fn the_worked_example_compiles_and_counts() {
    let rt = Runtime::new(RuntimeConfig::default());
    let m = module(&rt, doc_wat());
    assert_eq!(m.info().abi, 1);
    assert_eq!(m.info().exports, [Entry::Evolve]);

    let all = events(1, 5);
    assert_eq!(rt.evolve(&m, None, &all[..3]).unwrap(), b"3");
    assert_eq!(rt.evolve(&m, Some(b"3"), &all[3..]).unwrap(), b"5");
    assert_eq!(rt.evolve(&m, None, &all).unwrap(), b"5");
    // Absent state and an empty batch: the initial state.
    assert_eq!(rt.evolve(&m, None, &[]).unwrap(), b"0");
    // Big numbers, many events (the input outgrows the first memory page).
    let many = events(1, 2000);
    assert_eq!(
        rt.evolve(&m, Some(b"18446744073709549615"), &many).unwrap(),
        u64::MAX.to_string().as_bytes()
    );
    // A state that is not a number: status 2 with the module's message.
    assert_eq!(
        rt.evolve(&m, Some(b"{}"), &all),
        Err(CallError::Guest {
            entry: Entry::Evolve,
            message: "state is not a number".into()
        })
    );
    assert_eq!(
        rt.react(&m, &all[0]),
        Err(CallError::MissingEntry(Entry::React))
    );
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let rt = Runtime::new(RuntimeConfig::default());
    // Each call bumps a global and returns status 0 + the global's value as one digit: a
    // reused instance would answer 2, 3, …
    let m = module(
        &rt,
        &with_evolve(
            "(global $calls (mut i32) (i32.const 0))",
            r#"(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
               (i32.store8 (i32.const 2048) (i32.const 0))
               (i32.store8 (i32.const 2049) (i32.add (global.get $calls) (i32.const 48)))
               i64.const 0x0000080000000002"#,
        ),
    );
    for _ in 0..3 {
        assert_eq!(rt.evolve(&m, None, &[]).unwrap(), b"1");
    }
}

#[test]
fn log_with_a_pointer_outside_memory_traps() {
    let rt = Runtime::new(RuntimeConfig::default());
    let m = module(
        &rt,
        &with_evolve(
            "",
            "(call $log (i32.const 1) (i32.const 65530) (i32.const 100)) i64.const 0",
        ),
    );
    match rt.evolve(&m, None, &[]) {
        Err(CallError::Trap { message, .. }) => {
            assert!(message.contains("log was given bytes"), "{message}")
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // In bounds, a long line is kept (truncated) and the call goes on.
    let m = module(
        &rt,
        &with_evolve(
            "",
            "(call $log (i32.const 1) (i32.const 0) (i32.const 65536)) unreachable",
        ),
    );
    match rt.evolve(&m, None, &[]) {
        // 2048 bytes: the input's four 0xFF bytes become U+FFFD, the rest are NULs.
        Err(CallError::Trap { logs, .. }) => assert_eq!(logs[0].chars().count(), 2048),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn evolve_may_not_reject_and_outputs_need_a_status_byte() {
    let rt = Runtime::new(RuntimeConfig::default());
    let rejecting = module(
        &rt,
        &with_evolve(
            "",
            "(i32.store8 (i32.const 2048) (i32.const 1)) i64.const 0x0000080000000001",
        ),
    );
    match rt.evolve(&rejecting, None, &[]) {
        Err(CallError::BadOutput { message, .. }) => {
            assert!(message.contains("may not reject"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Through the raw call the same output is a rejection outcome.
    let input = loom_abi::evolve::encode(None, std::iter::empty());
    assert_eq!(
        rt.call(&rejecting, Entry::Evolve, &input),
        Ok(Outcome::Rejected(Vec::new()))
    );
    let empty = module(&rt, &with_evolve("", "i64.const 0x0000080000000000"));
    match rt.evolve(&empty, None, &[]) {
        Err(CallError::BadOutput { message, .. }) => {
            assert!(message.contains("empty output"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn upload_checks_from_the_doc() {
    let rt = Runtime::new(RuntimeConfig::default());
    let refuse = |wat: &str| {
        rt.compile(&wat::parse_str(wat).unwrap())
            .expect_err("refused")
    };
    // A trapping loom_abi_version.
    let err = refuse(
        r#"(module (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) unreachable)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "query") (param i32 i32) (result i64) i64.const 0))"#,
    );
    assert!(matches!(err, ModuleError::Startup(_)), "{err:?}");
    // An initial memory over the cap (64 MiB = 1024 pages).
    let err = refuse(
        r#"(module (memory (export "memory") 1025)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "query") (param i32 i32) (result i64) i64.const 0))"#,
    );
    match &err {
        ModuleError::OverLimits(m) => assert!(m.contains("minimum byte size"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("exceeds this server's limits"));
    // An imported memory is a forbidden import.
    let err = refuse(
        r#"(module (import "loom_v1" "memory" (memory 1))
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "query") (param i32 i32) (result i64) i64.const 0))"#,
    );
    assert!(
        matches!(err, ModuleError::ForbiddenImport { .. }),
        "{err:?}"
    );
    // Two memories.
    let err = refuse(
        r#"(module (memory (export "memory") 1) (memory 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "query") (param i32 i32) (result i64) i64.const 0))"#,
    );
    assert!(matches!(err, ModuleError::OverLimits(_)), "{err:?}");
    // Extra exports are fine.
    let ok = rt
        .compile(
            &wat::parse_str(
                r#"(module (memory (export "memory") 1)
                (func (export "loom_abi_version") (result i32) i32.const 1)
                (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
                (func (export "helper") (result i32) i32.const 0)
                (func (export "query") (param i32 i32) (result i64) i64.const 0))"#,
            )
            .unwrap(),
        )
        .unwrap();
    assert_eq!(ok.info().exports, [Entry::Query]);
}

#[test]
fn calls_beyond_the_slots_wait_instead_of_failing() {
    let rt = Arc::new(Runtime::new(RuntimeConfig {
        max_concurrent_calls: 2,
        ..RuntimeConfig::default()
    }));
    let m = module(&rt, doc_wat());
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (rt, m) = (rt.clone(), m.clone());
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let n = t * 100 + i;
                    let state = n.to_string();
                    let out = rt
                        .evolve(&m, Some(state.as_bytes()), &events(1, 3))
                        .unwrap();
                    assert_eq!(out, (n + 3).to_string().as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
