//! Modules of both ABI versions: an ABI v2 module with four named reducers (the `library`
//! example), definitions that name or leave out the reducer, and modules built for ABI v1
//! before version 2 existed, which keep running as they did.

use std::sync::Arc;
use std::time::Duration;

use loom_engine::{
    At, DeciderSpec, DefinitionError, Engine, EngineConfig, OnError, Partition, ProjectionSpec,
    ReactorSpec,
};
use loom_ledger::{AppendRequest, EntitySpec, Event, Ledger, LedgerOptions, Selector};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Arc<Ledger>,
    engine: Engine,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
    let registration = |file: &str| -> EntitySpec {
        let path = loom_testkit::workspace_root().join(file);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    ledger
        .put_entity("book", registration("examples/library/book.json"))
        .unwrap();
    ledger
        .put_entity("member", registration("examples/library/member.json"))
        .unwrap();
    ledger
        .put_entity("cart", loom_testkit::example_entity("cart"))
        .unwrap();
    let engine = Engine::open(ledger.clone(), EngineConfig::default()).unwrap();
    Fixture {
        _dir: dir,
        ledger,
        engine,
    }
}

impl Fixture {
    fn upload(&self, bytes: &[u8]) -> String {
        self.engine.modules().upload(bytes).unwrap().record.id
    }

    fn projection(
        &self,
        module: &str,
        reducer: Option<&str>,
        partition: Partition,
    ) -> ProjectionSpec {
        ProjectionSpec {
            module: module.to_owned(),
            reducer: reducer.map(str::to_owned),
            selector: Selector {
                entity: Some(if reducer.is_some() { "book" } else { "cart" }.into()),
                ..Selector::default()
            },
            partition,
            strict: false,
            on_error: OnError::Stop,
        }
    }

    fn run(&self, entity: &str, key: &str, command: Value) -> Result<(), String> {
        self.engine
            .deciders()
            .run(entity, key, command.to_string().as_bytes(), None)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn state(&self, name: &str, key: Option<&str>) -> Value {
        let head = self.ledger.head();
        self.engine
            .projections()
            .wait_for(name, head, WAIT)
            .unwrap();
        let v = self.engine.projections().state(name, key, At::Now).unwrap();
        serde_json::from_slice(&v.state).unwrap()
    }
}

fn refusal(e: DefinitionError) -> String {
    match e {
        DefinitionError::Reducer(m) => m,
        other => panic!("expected a reducer refusal, got {other:?}"),
    }
}

#[test]
fn one_module_holds_two_projections_a_decider_and_a_reactor() {
    let f = fixture();
    let id = f.upload(&loom_testkit::example_wasm("library"));
    let record = f.engine.modules().get(&id).unwrap().unwrap();
    assert_eq!(record.abi, 2);
    let reducers: Vec<(&str, Vec<&str>)> = record
        .reducers
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.kinds.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        reducers,
        [
            ("books", vec!["projection", "query"]),
            ("holdings", vec!["projection"]),
            ("lending", vec!["decider"]),
            ("reminders", vec!["reactor"]),
        ]
    );
    assert_eq!(
        record.reducers[0].events.as_deref().unwrap(),
        ["was_added", "was_lent", "was_returned"]
    );
    assert_eq!(record.reducers[3].events.as_deref().unwrap(), ["was_lent"]);

    // A projection must say which of the three folding reducers it runs.
    let projections = f.engine.projections();
    let several = projections
        .put("books", f.projection(&id, None, Partition::Stream))
        .unwrap_err();
    assert!(refusal(several).contains("several reducers that fit (books, holdings, lending)"),);
    let typo = projections
        .put("books", f.projection(&id, Some("boks"), Partition::Stream))
        .unwrap_err();
    let typo = refusal(typo);
    assert!(
        typo.contains("no reducer \"boks\" (did you mean \"books\"?)")
            && typo.contains("holdings (projection)"),
        "{typo}"
    );
    projections
        .put("books", f.projection(&id, Some("books"), Partition::Stream))
        .unwrap();
    projections
        .put(
            "holdings",
            f.projection(&id, Some("holdings"), Partition::Single),
        )
        .unwrap();
    // The decider and the reactor are the only ones of their kind: no name needed.
    f.engine
        .deciders()
        .put(
            "book",
            DeciderSpec {
                module: id.clone(),
                reducer: None,
            },
        )
        .unwrap();
    assert_eq!(
        f.engine.deciders().get("book").unwrap().reducer.as_deref(),
        Some("lending")
    );
    f.engine
        .reactors()
        .put(
            "reminders",
            ReactorSpec {
                module: id.clone(),
                reducer: None,
                selector: Selector {
                    entity: Some("book".into()),
                    types: vec!["was_lent".into()],
                    ..Selector::default()
                },
                sink: None,
                react_to_own: false,
            },
        )
        .unwrap();

    let isbn = "978-0441013593";
    f.run("book", isbn, json!({"type": "add", "title": "Dune"}))
        .unwrap();
    f.run(
        "book",
        isbn,
        json!({"type": "lend", "member": "amal", "due": "2026-12-31"}),
    )
    .unwrap();
    // The refusal names the book: decide is told the stream.
    let refused = f
        .run(
            "book",
            isbn,
            json!({"type": "lend", "member": "bo", "due": "2027-01-10"}),
        )
        .unwrap_err();
    assert!(
        refused.contains(&format!("book {isbn} is lent to amal")),
        "{refused}"
    );
    assert_eq!(
        f.state("books", Some(&format!("book/{isbn}"))),
        json!({"title": "Dune", "holder": "amal", "due": "2026-12-31", "loans": 1})
    );
    assert_eq!(
        f.state("holdings", None),
        json!({"by_member": {"amal": [isbn]}})
    );
    let overdue = f
        .engine
        .projections()
        .query(
            "books",
            Some(&format!("book/{isbn}")),
            br#"{"on": "2027-02-01"}"#,
        )
        .unwrap();
    assert_eq!(overdue, b"true");
    // The reactor copied the loan to the member's stream.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let member = f.ledger.read_stream("member/amal", 0, 10).unwrap();
        if let Some(e) = member.first() {
            assert_eq!(e.event.ty, "had_book_lent");
            assert_eq!(
                e.event.data_json().unwrap(),
                json!({"isbn": isbn, "due": "2026-12-31"})
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no member event");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn modules_built_for_abi_v1_keep_running_and_fold_as_the_v2_example_does() {
    let f = fixture();
    let v1 = f.upload(&loom_testkit::fixture_wasm("cart-abi-v1"));
    let v2 = f.upload(&loom_testkit::example_wasm("cart"));
    let record = f.engine.modules().get(&v1).unwrap().unwrap();
    assert_eq!(record.abi, 1);
    assert!(record.reducers.is_empty());
    assert_eq!(
        record.exports,
        ["evolve", "decide", "query", "evolve_groups"]
    );

    // A v1 module has no reducers to name.
    let named = f
        .engine
        .projections()
        .put("old", f.projection(&v1, Some("cart"), Partition::Stream))
        .unwrap_err();
    assert!(refusal(named).contains("ABI version 1"));

    let events: Vec<Event> = vec![
        Event::new("t", "1", "was_created", "cart/1", json!({})),
        Event::new(
            "t",
            "2",
            "had_item_added",
            "cart/1",
            json!({"sku": "a", "name": "A", "price": 120, "quantity": 2}),
        ),
        Event::new("t", "3", "had_item_removed", "cart/1", json!({"sku": "a"})),
        Event::new(
            "t",
            "4",
            "had_item_added",
            "cart/1",
            json!({"sku": "b", "name": "B", "price": 90, "quantity": 1}),
        ),
    ];
    f.ledger.append(AppendRequest::new(events)).unwrap();
    for (name, module) in [("old", &v1), ("new", &v2)] {
        f.engine
            .projections()
            .put(name, f.projection(module, None, Partition::Stream))
            .unwrap();
    }
    let old = f.state("old", Some("cart/1"));
    assert_eq!(old, f.state("new", Some("cart/1")));
    assert_eq!(old["items"][0]["sku"], "b");
    // Its decider decides as it always did (with the v1 input: no context).
    f.engine
        .deciders()
        .put(
            "cart",
            DeciderSpec {
                module: v1,
                reducer: None,
            },
        )
        .unwrap();
    f.run("cart", "2", json!({"type": "create"})).unwrap();
    let refused = f.run("cart", "2", json!({"type": "create"})).unwrap_err();
    assert!(refused.contains("exists already"), "{refused}");
}

/// `book` registered without schemas, and with a type the library does not decode.
fn lax_fixture(config: EngineConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open(dir.path(), LedgerOptions::default()).unwrap());
    let mut spec = EntitySpec::default();
    for ty in ["was_added", "was_lent", "was_returned", "was_renamed"] {
        spec.events.insert(ty.into(), Default::default());
    }
    ledger.put_entity("book", spec).unwrap();
    let engine = Engine::open(ledger.clone(), config).unwrap();
    Fixture {
        _dir: dir,
        ledger,
        engine,
    }
}

fn book(id: &str, key: &str, ty: &str, data: Value) -> Event {
    Event::new("t", id, ty, format!("book/{key}"), data)
}

fn books_spec(module: &str, strict: bool, on_error: OnError) -> ProjectionSpec {
    ProjectionSpec {
        module: module.to_owned(),
        reducer: Some("books".into()),
        selector: Selector {
            entity: Some("book".into()),
            ..Selector::default()
        },
        partition: Partition::Stream,
        strict,
        on_error,
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn undecoded_types_are_counted_or_fail_a_strict_projection_and_a_bad_stream_is_quarantined() {
    let f = lax_fixture(EngineConfig::default());
    let id = f.upload(&loom_testkit::example_wasm("library"));
    let lent = |m: &str| json!({"member": m, "due": "2026-12-31"});
    f.ledger
        .append(AppendRequest::new(vec![
            book("1", "1", "was_added", json!({"title": "Dune"})),
            book("2", "2", "was_added", json!({"title": "Emma"})),
            book("3", "1", "was_renamed", json!({"title": "Dune!"})),
            // No `due`: the reducer cannot read it.
            book("4", "2", "was_lent", json!({"member": "amal"})),
            book("5", "3", "was_added", json!({"title": "Ulysses"})),
            book("6", "1", "was_lent", lent("bo")),
            book("7", "2", "was_returned", json!({})),
            book("8", "1", "was_renamed", json!({"title": "Dune?"})),
        ]))
        .unwrap();
    let p = f.engine.projections();
    p.put("strict", books_spec(&id, true, OnError::Stop))
        .unwrap();
    p.put("books", books_spec(&id, false, OnError::Quarantine))
        .unwrap();

    // Strict: it stops at the first event of a type `books` does not decode.
    wait_until("the strict projection to fail", || {
        p.status("strict").unwrap().active.last_error.is_some()
    });
    let failure = p.status("strict").unwrap().active.last_error.unwrap();
    assert_eq!(failure.position, 3);
    assert!(
        failure
            .message
            .contains("\"was_renamed\", which reducer books does not decode"),
        "{}",
        failure.message
    );

    // Quarantine: book/2 is set aside at its bad event; book/1 and book/3 fold on, and the
    // skipped renames are counted.
    let head = f.ledger.head();
    p.wait_for("books", head, WAIT).unwrap();
    let st = p.status("books").unwrap().active;
    assert_eq!(st.status, loom_engine::Status::Running);
    assert_eq!(st.skipped.get("was_renamed"), Some(&2));
    assert_eq!(st.quarantined.len(), 1, "{st:?}");
    assert_eq!(
        (st.quarantined[0].key.as_str(), st.quarantined[0].position),
        ("book/2", 4)
    );
    assert!(
        st.quarantined[0].message.contains("missing field `due`"),
        "{st:?}"
    );
    assert_eq!(f.state("books", Some("book/1"))["holder"], "bo");
    assert_eq!(f.state("books", Some("book/3"))["title"], "Ulysses");
    // book/2 keeps the state from before its bad event, and new events of it wait.
    f.ledger
        .append(AppendRequest::new(vec![
            book("9", "2", "was_lent", lent("cy")),
            book("10", "3", "was_lent", lent("cy")),
        ]))
        .unwrap();
    assert_eq!(f.state("books", Some("book/3"))["holder"], "cy");
    assert_eq!(
        f.state("books", Some("book/2")),
        json!({"title": "Emma", "holder": null, "due": null, "loans": 0})
    );
    // Resume retries it: it fails at the same event again and stays quarantined.
    p.resume("books").unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let st = p.status("books").unwrap().active;
    assert_eq!(st.quarantined.len(), 1);
    assert_eq!(st.quarantined[0].position, 4);

    // The counts and the quarantine survive a restart.
    drop(f.engine);
    let engine = Engine::open(f.ledger.clone(), EngineConfig::default()).unwrap();
    let st = engine.projections().status("books").unwrap().active;
    assert_eq!(st.skipped.get("was_renamed"), Some(&2));
    assert_eq!(st.quarantined[0].key, "book/2");
}

#[test]
fn a_quarantined_stream_folds_again_on_resume_once_it_can() {
    // A fuel budget that folds a few events per call but not a long stream's catch-up in one:
    // the long stream is quarantined; with the default budget, `resume` folds it.
    let mut tight = EngineConfig::default();
    tight.runtime.fuel_per_call = 700_000;
    let f = lax_fixture(tight);
    let id = f.upload(&loom_testkit::example_wasm("library"));
    let mut events = vec![book("a", "short", "was_added", json!({"title": "S"}))];
    events.push(book("b", "long", "was_added", json!({"title": "L"})));
    for i in 0..400 {
        let ty = if i % 2 == 0 {
            "was_lent"
        } else {
            "was_returned"
        };
        let data = if i % 2 == 0 {
            json!({"member": format!("m{i}"), "due": "2026-12-31"})
        } else {
            json!({})
        };
        events.push(book(&format!("e{i}"), "long", ty, data));
    }
    f.ledger.append(AppendRequest::new(events)).unwrap();
    let p = f.engine.projections();
    p.put("books", books_spec(&id, false, OnError::Quarantine))
        .unwrap();
    p.wait_for("books", f.ledger.head(), WAIT).unwrap();
    let st = p.status("books").unwrap().active;
    assert_eq!(st.quarantined.len(), 1, "{st:?}");
    assert_eq!(st.quarantined[0].key, "book/long");
    assert!(st.quarantined[0].message.contains("fuel"), "{st:?}");
    assert_eq!(f.state("books", Some("book/short"))["title"], "S");

    // The limit is raised (a restart with the default budget), and the stream is resumed.
    drop(f.engine);
    let engine = Engine::open(f.ledger.clone(), EngineConfig::default()).unwrap();
    engine.projections().resume("books").unwrap();
    wait_until("the stream to leave the quarantine", || {
        engine
            .projections()
            .status("books")
            .unwrap()
            .active
            .quarantined
            .is_empty()
    });
    let v = engine
        .projections()
        .state("books", Some("book/long"), At::Now)
        .unwrap();
    let state: Value = serde_json::from_slice(&v.state).unwrap();
    assert_eq!(state["loans"], 200);
    assert_eq!(state["holder"], Value::Null);
    assert_eq!(v.events_applied, 401);
}

#[test]
fn a_commands_only_entity_takes_events_from_its_decider_and_named_reactors_only() {
    let f = fixture();
    let closed = |file: &str, reactors: &[&str]| -> EntitySpec {
        let path = loom_testkit::workspace_root().join(file);
        let mut spec: EntitySpec = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        spec.commands_only = true;
        spec.reactors = reactors.iter().map(|r| r.to_string()).collect();
        spec
    };
    f.ledger
        .put_entity("book", closed("examples/library/book.json", &[]))
        .unwrap();
    f.ledger
        .put_entity(
            "member",
            closed("examples/library/member.json", &["reminders"]),
        )
        .unwrap();
    let id = f.upload(&loom_testkit::example_wasm("library"));
    f.engine
        .deciders()
        .put(
            "book",
            DeciderSpec {
                module: id.clone(),
                reducer: None,
            },
        )
        .unwrap();
    f.engine
        .reactors()
        .put(
            "reminders",
            ReactorSpec {
                module: id.clone(),
                reducer: None,
                selector: Selector {
                    entity: Some("book".into()),
                    ..Selector::default()
                },
                sink: None,
                react_to_own: false,
            },
        )
        .unwrap();

    // A client may not append to book, whatever the source says.
    let raw = f.ledger.append(AppendRequest::new(vec![Event::new(
        "loom/deciders/book",
        "forged",
        "was_added",
        "book/1",
        json!({"title": "Dune"}),
    )]));
    match raw {
        Err(loom_ledger::AppendError::Rejected(r)) => {
            assert!(r.to_string().contains("only through its decider"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.ledger.head(), 0);
    // Its decider may, and the reactor named in member's registration may append there.
    f.run("book", "1", json!({"type": "add", "title": "Dune"}))
        .unwrap();
    f.run(
        "book",
        "1",
        json!({"type": "lend", "member": "amal", "due": "2026-12-31"}),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while f
        .ledger
        .read_stream("member/amal", 0, 1)
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "no member event");
        std::thread::sleep(Duration::from_millis(20));
    }
    // JSON Schema formats are checked: `due` is a `date`.
    f.run("book", "1", json!({"type": "return"})).unwrap();
    let bad = f
        .run(
            "book",
            "1",
            json!({"type": "lend", "member": "bo", "due": "31/12/2026"}),
        )
        .unwrap_err();
    assert!(bad.contains("date"), "{bad}");
}
