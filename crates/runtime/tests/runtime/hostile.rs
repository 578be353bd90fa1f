//! Hostile modules written in WAT: each is refused at compile time or fails its call cleanly
//! while the runtime keeps serving the good ones.

use std::time::{Duration, Instant};

use loom_runtime::{CallError, Entry, ModuleError, Runtime, RuntimeConfig};

use crate::runtime::{cart_events, cart_module, json_of, wat_module};

#[test]
fn modules_that_break_the_abi_are_refused_at_compile() {
    let rt = Runtime::new(RuntimeConfig::default());
    let refuse = |bytes: Vec<u8>| rt.compile(&bytes).expect_err("should be refused");

    assert!(matches!(
        refuse(b"\0asm garbage".to_vec()),
        ModuleError::Invalid(_)
    ));
    assert!(matches!(refuse(b"hello".to_vec()), ModuleError::Invalid(_)));
    assert!(matches!(refuse(Vec::new()), ModuleError::Invalid(_)));

    let wasi = wat::parse_str(loom_testkit::WASI_IMPORTING_MODULE).unwrap();
    let err = refuse(wasi);
    assert_eq!(
        err,
        ModuleError::ForbiddenImport {
            module: "wasi_snapshot_preview1".into(),
            name: "fd_write".into()
        }
    );
    assert!(err.to_string().contains("no WASI"));

    // The right module name with the wrong signature is refused too.
    let bad_log = wat::parse_str(
        r#"(module
            (import "loom_v1" "log" (func (param i64)))
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "evolve") (param i32 i32) (result i64) i64.const 0))"#,
    )
    .unwrap();
    assert!(matches!(
        refuse(bad_log),
        ModuleError::ForbiddenImport { .. }
    ));

    let wrong_version = |v: i32| {
        wat::parse_str(format!(
            r#"(module
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const {v})
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "evolve") (param i32 i32) (result i64) i64.const 0))"#
        ))
        .unwrap()
    };
    assert_eq!(
        refuse(wrong_version(3)),
        ModuleError::AbiVersion {
            found: 3,
            supported: 2
        }
    );
    // Version 2 without loom_describe: its reducers are unknown.
    assert!(matches!(
        refuse(wrong_version(2)),
        ModuleError::BadExport { name, .. } if name == "loom_describe"
    ));

    let no_entry = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    assert_eq!(refuse(no_entry), ModuleError::NoEntryPoints);

    let bad_sig = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "evolve") (param i32) (result i32) i32.const 0))"#,
    )
    .unwrap();
    assert!(matches!(refuse(bad_sig), ModuleError::BadExport { name, .. } if name == "evolve"));

    let no_memory = wat::parse_str(
        r#"(module
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
            (func (export "evolve") (param i32 i32) (result i64) i64.const 0))"#,
    )
    .unwrap();
    assert!(matches!(refuse(no_memory), ModuleError::BadExport { name, .. } if name == "memory"));

    let huge = vec![0u8; rt.config().max_module_size + 1];
    assert!(matches!(refuse(huge), ModuleError::TooLarge { .. }));
}

#[test]
fn hostile_calls_fail_cleanly_and_the_host_carries_on() {
    let rt = Runtime::new(RuntimeConfig {
        fuel_per_call: 50_000_000,
        memory_limit: 8 * 1024 * 1024,
        call_timeout: Duration::from_secs(5),
        max_output: 1024 * 1024,
        ..RuntimeConfig::default()
    });
    let cart = cart_module(&rt);
    let good = |rt: &Runtime| {
        let state = rt
            .evolve(&cart, None, &cart_events())
            .expect("the good module still works");
        assert_eq!(json_of(&state)["status"], "active");
    };
    let events = cart_events();
    let call = |body: &str| {
        let m = rt
            .compile(&wat_module(body))
            .expect("hostile module is ABI-valid");
        rt.evolve(&m, None, &events)
    };

    // An infinite loop runs out of fuel.
    assert!(matches!(
        call("(loop br 0) i64.const 0"),
        Err(CallError::OutOfFuel { .. })
    ));
    good(&rt);
    // A memory bomb hits the cap.
    let bomb = "(loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) i64.const 0";
    match call(bomb) {
        Err(CallError::MemoryLimit { limit, .. }) => assert_eq!(limit, 8 * 1024 * 1024),
        other => panic!("expected a memory limit error, got {other:?}"),
    }
    good(&rt);
    // A trap.
    match call("unreachable") {
        Err(CallError::Trap { message, .. }) => {
            assert!(message.contains("unreachable"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    good(&rt);
    // An out-of-bounds pointer in the return value.
    match call("i64.const 0x7fff000000000010") {
        Err(CallError::BadOutput { message, .. }) => {
            assert!(message.contains("outside"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A huge output (length beyond the limit).
    match call("i64.const 0x0000000000ffffff") {
        Err(CallError::BadOutput { message, .. }) => {
            assert!(message.contains("limit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // An output with an unknown status byte.
    match call("(i32.store8 (i32.const 2048) (i32.const 7)) i64.const 0x0000080000000001") {
        Err(CallError::BadOutput { message, .. }) => {
            assert!(message.contains("status"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A guest error (status 2) carries its message.
    let err_body = r#"(i32.store8 (i32.const 2048) (i32.const 2))
                      (i32.store8 (i32.const 2049) (i32.const 0x6e))
                      (i32.store8 (i32.const 2050) (i32.const 0x6f))
                      i64.const 0x0000080000000003"#;
    assert_eq!(
        call(err_body),
        Err(CallError::Guest {
            entry: Entry::Evolve,
            message: "no".into()
        })
    );
    good(&rt);
}

#[test]
fn a_looping_module_is_stopped_by_the_deadline_and_does_not_block_others() {
    let rt = std::sync::Arc::new(Runtime::new(RuntimeConfig {
        fuel_per_call: u64::MAX / 2,
        call_timeout: Duration::from_millis(300),
        ..RuntimeConfig::default()
    }));
    let looping = rt.compile(&wat_module("(loop br 0) i64.const 0")).unwrap();
    let cart = cart_module(&rt);
    let slow = {
        let rt = rt.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let r = rt.evolve(&looping, None, &[]);
            (r, t.elapsed())
        })
    };
    // While it loops, the other module answers promptly.
    for _ in 0..20 {
        let t = Instant::now();
        rt.evolve(&cart, None, &cart_events()).unwrap();
        assert!(t.elapsed() < Duration::from_millis(250));
    }
    let (r, took) = slow.join().unwrap();
    assert!(matches!(r, Err(CallError::Timeout { .. })), "{r:?}");
    // The deadline is counted in ticks of the runtime's 5 ms epoch clock, which does not start
    // with the call: the first tick may come at once, so the call may stop up to 5 ms early.
    assert!(
        took >= Duration::from_millis(295) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn the_last_log_lines_of_a_failing_call_are_part_of_its_error() {
    let rt = Runtime::new(RuntimeConfig::default());
    // What the SDK's panic hook does: log the message, then trap.
    let text = r#"(module
        (import "loom_v1" "log" (func $log (param i32 i32 i32)))
        (memory (export "memory") 1)
        (data (i32.const 2048) "panic: boom")
        (func (export "loom_abi_version") (result i32) i32.const 1)
        (func (export "loom_alloc") (param i32) (result i32) i32.const 1024)
        (func (export "evolve") (param i32 i32) (result i64)
            (call $log (i32.const 1) (i32.const 2048) (i32.const 11))
            unreachable))"#;
    let m = rt.compile(&wat::parse_str(text).unwrap()).unwrap();
    let err = rt.evolve(&m, None, &[]).unwrap_err();
    match &err {
        CallError::Trap { logs, .. } => assert_eq!(logs, &["panic: boom".to_string()]),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("module log: panic: boom"), "{err}");
}
