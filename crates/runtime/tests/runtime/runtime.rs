//! The wasm host with real example modules (built from `examples/`): validation, folds,
//! decisions and queries, and the errors of data or states that do not fit. Hostile modules
//! are in `hostile`.

use std::time::{Duration, Instant};

use loom_core::{Event, EventView, StoredEvent};
use loom_runtime::{CallError, Entry, ModuleError, Outcome, Runtime, RuntimeConfig, module_id};
use serde_json::{Value, json};

pub(crate) fn stored(position: u64, subject: &str, ty: &str, data: Value) -> StoredEvent {
    StoredEvent {
        position,
        revision: position,
        recorded_micros: 1_700_000_000_000_000,
        event: Event::new("test", format!("e{position}"), ty, subject, data),
    }
}

pub(crate) fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON output")
}

/// A minimal ABI-conforming module whose `evolve` body is `body` (must leave an i64).
pub(crate) fn wat_module(body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "evolve") (param i32 i32) (result i64) {body}))"#
    );
    wat::parse_str(&text).expect("valid WAT")
}

/// The cart example's one reducer.
pub(crate) fn cart_module(rt: &Runtime) -> loom_runtime::Module {
    rt.compile(&loom_testkit::example_wasm("cart"))
        .unwrap()
        .bind("cart")
        .unwrap()
}

pub(crate) fn cart_events() -> Vec<StoredEvent> {
    vec![
        stored(1, "cart/1", "was_created", json!({})),
        stored(
            2,
            "cart/1",
            "had_item_added",
            json!({"sku": "a", "name": "A", "price": 250, "quantity": 2}),
        ),
        stored(3, "cart/1", "something_else", json!({"ignored": true})),
        stored(
            4,
            "cart/1",
            "had_item_added",
            json!({"sku": "b", "name": "B", "price": 100, "quantity": 1}),
        ),
        stored(5, "cart/1", "had_item_removed", json!({"sku": "a"})),
    ]
}

#[test]
fn example_module_validates_folds_decides_and_queries() {
    let rt = Runtime::new(RuntimeConfig::default());
    let bytes = loom_testkit::example_wasm("cart");
    let module = rt.compile(&bytes).expect("cart compiles");
    let info = module.info();
    assert_eq!(info.id, module_id(&bytes));
    assert!(info.id.starts_with("sha256:") && info.id.len() == 7 + 64);
    assert_eq!(info.abi, 2);
    assert_eq!(
        info.exports,
        [
            Entry::Evolve,
            Entry::Decide,
            Entry::Query,
            Entry::EvolveGroups
        ]
    );
    // One reducer, as the module described it.
    assert_eq!(info.reducers.len(), 1);
    let r = &info.reducers[0];
    assert_eq!(
        (r.name.as_str(), r.entity.as_deref()),
        ("cart", Some("cart"))
    );
    assert_eq!(r.kinds, ["decider", "query"]);
    assert_eq!(
        r.events.as_deref().unwrap(),
        [
            "was_created",
            "had_item_added",
            "had_item_removed",
            "was_checked_out"
        ]
    );
    // Unbound, a v2 module reaches no reducer's entry point.
    assert!(!module.exports(Entry::Evolve));
    let cart = module.bind("cart").expect("the reducer cart");
    assert!(module.bind("carts").is_none());
    // Compiling the same bytes again is served from the cache.
    let t = Instant::now();
    assert_eq!(rt.compile(&bytes).unwrap().info(), info);
    assert!(t.elapsed() < Duration::from_millis(50));

    // Batched evolve; unknown types are skipped; state continues from a previous state.
    let events = cart_events();
    let state = rt.evolve(&cart, None, &events[..3]).unwrap();
    let state = rt.evolve(&cart, Some(&state), &events[3..]).unwrap();
    assert_eq!(
        json_of(&state),
        json!({"items": [{"sku": "b", "name": "B", "price": 100, "quantity": 1}], "status": "active"})
    );
    let whole = rt.evolve(&cart, None, &events).unwrap();
    assert_eq!(
        whole, state,
        "folding in one batch or two gives the same state"
    );

    // decide: events, or a rejection.
    match rt
        .decide(
            &cart,
            Some(&state),
            br#"{"type":"check_out"}"#,
            "cart/1",
            5,
            b"{}",
        )
        .unwrap()
    {
        Outcome::Ok(out) => assert_eq!(
            json_of(&out),
            json!([{"type": "was_checked_out", "data": {}}])
        ),
        other => panic!("{other:?}"),
    }
    match rt
        .decide(
            &cart,
            None,
            br#"{"type":"add_item","sku":"x","name":"X","price":1,"quantity":1}"#,
            "cart/2",
            0,
            b"{}",
        )
        .unwrap()
    {
        Outcome::Rejected(r) => assert!(
            json_of(&r)["message"]
                .as_str()
                .unwrap()
                .contains("does not exist")
        ),
        other => panic!("{other:?}"),
    }
    match rt
        .decide(&cart, None, br#"{"type":"fly"}"#, "cart/2", 0, b"{}")
        .unwrap()
    {
        Outcome::Rejected(r) => assert!(
            json_of(&r)["message"]
                .as_str()
                .unwrap()
                .contains("malformed command")
        ),
        other => panic!("{other:?}"),
    }
    match rt.query(&cart, Some(&state), b"{}").unwrap() {
        Outcome::Ok(out) => assert_eq!(json_of(&out), json!({"total": 100, "units": 1})),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        rt.react(&cart, &events[0]),
        Err(CallError::MissingEntry(Entry::React))
    );
}

#[test]
fn evolve_groups_gives_each_group_what_evolve_gives_it_alone() {
    let rt = Runtime::new(RuntimeConfig::default());
    let cart = cart_module(&rt);
    let events = cart_events();
    let other: Vec<StoredEvent> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.position += 100;
            e.event.subject = "cart/2".into();
            e
        })
        .collect();
    let (a_ext, b_ext) = (extensions(&events), extensions(&other));
    let (a, b) = (views(&events, &a_ext), views(&other, &b_ext));
    let prior = rt.evolve(&cart, None, &events[..2]).unwrap();
    let groups: Vec<(Option<&[u8]>, &[EventView<'_>])> = vec![
        (None, &a[..]),
        (Some(&prior), &a[2..]),
        (None, &b[..1]),
        (None, &b[..]),
    ];
    let together = rt.evolve_groups(&cart, &groups).unwrap();
    let alone: Vec<Vec<u8>> = groups
        .iter()
        .map(|(state, evs)| rt.evolve_views(&cart, *state, evs).unwrap())
        .collect();
    assert_eq!(together, alone);
    assert_eq!(together[0], together[1], "same events, batched differently");
    assert_eq!(
        together[0],
        rt.evolve(&cart, None, &events).unwrap(),
        "views and owned events encode alike"
    );

    // A failing event fails the whole call (the engine then folds the groups alone).
    let bad = vec![stored(7, "cart/3", "had_item_added", json!({"sku": 5}))];
    let bad_ext = extensions(&bad);
    let bad = views(&bad, &bad_ext);
    let err = rt
        .evolve_groups(&cart, &[(None, &a[..]), (None, &bad[..])])
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest { entry: Entry::EvolveGroups, message } if message.contains("position 7")),
        "{err:?}"
    );

    // A module without `evolve_groups` is called once per group.
    let constant = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 16) "\00[]")
            (func (export "loom_abi_version") (result i32) i32.const 1)
            (func (export "loom_alloc") (param i32) (result i32) i32.const 1024)
            (func (export "evolve") (param i32 i32) (result i64) i64.const 68719476739))"#,
    )
    .unwrap();
    let constant = rt.compile(&constant).unwrap();
    assert_eq!(constant.info().exports, [Entry::Evolve]);
    let states = rt
        .evolve_groups(
            &constant,
            &[(None, &a[..]), (None, &b[..]), (None, &b[..1])],
        )
        .unwrap();
    assert_eq!(states, vec![b"[]".to_vec(); 3]);
}

#[test]
fn evolve_groups_is_checked_like_the_other_entry_points() {
    let rt = Runtime::new(RuntimeConfig::default());
    let module = |exports: &str| {
        wat::parse_str(format!(
            r#"(module
                (memory (export "memory") 1)
                (data (i32.const 16) "\00")
                (func (export "loom_abi_version") (result i32) i32.const 1)
                (func (export "loom_alloc") (param i32) (result i32) i32.const 1024)
                {exports})"#
        ))
        .unwrap()
    };
    // Status ok with no states: (16 << 32) | 1.
    let ok_without_states = "(param i32 i32) (result i64) i64.const 68719476737";
    let alone = module(&format!(
        r#"(func (export "evolve_groups") {ok_without_states})"#
    ));
    assert_eq!(rt.compile(&alone).unwrap_err(), ModuleError::NoEntryPoints);
    let with_query = module(&format!(
        r#"(func (export "query") {ok_without_states})
           (func (export "evolve_groups") {ok_without_states})"#
    ));
    assert!(matches!(
        rt.compile(&with_query).unwrap_err(),
        ModuleError::BadExport { name, .. } if name == "evolve_groups"
    ));
    let wrong_type = module(
        r#"(func (export "evolve") (param i32 i32) (result i64) i64.const 0)
           (func (export "evolve_groups") (param i32) (result i64) i64.const 0)"#,
    );
    assert!(matches!(
        rt.compile(&wrong_type).unwrap_err(),
        ModuleError::BadExport { name, .. } if name == "evolve_groups"
    ));
    // The host checks the answer has exactly one state per group.
    let lying = rt
        .compile(&module(&format!(
            r#"(func (export "evolve") {ok_without_states})
               (func (export "evolve_groups") {ok_without_states})"#
        )))
        .unwrap();
    let events = cart_events();
    let ext = extensions(&events);
    let views = views(&events, &ext);
    let err = rt
        .evolve_groups(&lying, &[(None, &views[..1]), (None, &views[1..])])
        .unwrap_err();
    assert!(
        matches!(&err, CallError::BadOutput { entry: Entry::EvolveGroups, message } if message.contains("malformed states")),
        "{err:?}"
    );
}

#[test]
fn data_that_does_not_fit_the_event_type_is_a_clear_error() {
    let rt = Runtime::new(RuntimeConfig::default());
    let cart = cart_module(&rt);
    let bad = vec![stored(7, "cart/1", "had_item_added", json!({"sku": 5}))];
    match rt.evolve(&cart, None, &bad) {
        Err(CallError::Guest {
            entry: Entry::Evolve,
            message,
        }) => {
            assert!(
                message.contains("position 7") && message.contains("had_item_added"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    match rt.evolve(&cart, Some(b"[1,2"), &cart_events()) {
        Err(CallError::Guest { message, .. }) => assert!(message.contains("state"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn state_of_the_wrong_shape_and_domain_rejections() {
    let rt = Runtime::new(RuntimeConfig::default());
    let bank = rt
        .compile(&loom_testkit::example_wasm("bank"))
        .unwrap()
        .bind("bank")
        .unwrap();
    // A stored state that is JSON but of the wrong shape is a guest error, not a trap.
    match rt.decide(
        &bank,
        Some(br#"{"owner": 5}"#),
        br#"{"type":"deposit","amount":1}"#,
        "account/1",
        1,
        b"{}",
    ) {
        Err(CallError::Guest { message, .. }) => assert!(message.contains("state"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Overdraft is a domain rejection.
    let state = br#"{"owner": "amal", "balance": 100}"#;
    match rt
        .decide(
            &bank,
            Some(state),
            br#"{"type":"withdraw","amount":101}"#,
            "account/1",
            2,
            b"{}",
        )
        .unwrap()
    {
        Outcome::Rejected(r) => assert!(String::from_utf8_lossy(&r).contains("insufficient funds")),
        other => panic!("{other:?}"),
    }
}

/// Each event's extensions, encoded as a stored record holds them.
pub(crate) fn extensions(events: &[StoredEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            loom_core::wire::put_extensions(&mut out, &e.event.extensions);
            out
        })
        .collect()
}

/// Borrowed views of owned events, as the ledger hands them to the runtime.
pub(crate) fn views<'a>(
    events: &'a [StoredEvent],
    extensions: &'a [Vec<u8>],
) -> Vec<EventView<'a>> {
    events
        .iter()
        .zip(extensions)
        .map(|(e, x)| EventView::of(e, x))
        .collect()
}
