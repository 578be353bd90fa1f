//! `loom-client` against a real server on a loopback port, with the example modules built from
//! `examples/`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use futures_util::StreamExt;
use loom_client::{
    Client, Conditions, ExpectedRevision, LoomEventExt, Outcome, ProjectionAction, ProjectionSpec,
    ReadQuery, Selector, StateQuery, SubscribeQuery,
};
use loom_engine::{Engine, EngineConfig};
use loom_ledger::{Ledger, LedgerOptions};
use loom_server::{AppState, Config};
use serde_json::json;

/// A server on a loopback port over a data directory; stopping it and starting another on
/// the same address and directory is a restart.
struct Server {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(dir: &Path, addr: &str) -> Server {
        let ledger = Ledger::open(dir, LedgerOptions::default()).expect("open ledger");
        let engine = Engine::open(Arc::new(ledger), EngineConfig::default()).expect("engine");
        let state = AppState::new(Arc::new(engine), Config::default());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(loom_server::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Server { addr, stop, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown")
            .expect("server task")
            .expect("server ran");
    }
}

fn note(id: &str, subject: &str, data: serde_json::Value) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("https://client.example")
        .ty("was_noted")
        .subject(subject)
        .data("application/json", data)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_reads_and_refusals_speak_cloudevents() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0").await;
    let loom = Client::new(&server.url()).unwrap();

    let (_, outcome) = loom
        .put_entity("note", &json!({"open": true}))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Created);

    // Binary mode, then the same event again: a duplicate.
    let first = loom
        .append(note("n1", "note/a", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(first.last_position, 1);
    assert!(!first.duplicate);
    let again = loom
        .append(note("n1", "note/a", json!({"n": 1})))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.last_position, 1);

    // Batch mode, atomically across streams.
    let batch = loom
        .append_batch(vec![
            note("n2", "note/a", json!({"n": 2})),
            note("n3", "note/b", json!({"n": 3})),
        ])
        .await
        .unwrap();
    assert_eq!(batch.events.len(), 2);
    assert_eq!((batch.events[0].position, batch.events[0].revision), (2, 2));
    assert_eq!((batch.events[1].position, batch.events[1].revision), (3, 1));

    // Conditions: a stale expected revision is a typed conflict and writes nothing.
    let stale = loom
        .append_with(
            vec![note("n4", "note/a", json!({"n": 4}))],
            Conditions::default().expect("note/a", ExpectedRevision::Exact(1)),
        )
        .await
        .unwrap_err();
    assert!(stale.is("revision-conflict"), "{stale}");
    assert_eq!(stale.status(), Some(409));
    assert_eq!(
        stale.problem().unwrap().get("stream"),
        Some(&json!("note/a"))
    );
    let matched = loom
        .append_with(
            vec![note("n4", "note/a", json!({"n": 4}))],
            Conditions::default().fail_if_events_match(
                Selector {
                    entity: Some("note".into()),
                    data: Some("$[?@ == 3]".into()),
                    ..Selector::default()
                },
                None,
            ),
        )
        .await
        .unwrap_err();
    assert!(matched.is("condition-conflict"), "{matched}");
    let ok = loom
        .append_with(
            vec![note("n4", "note/a", json!({"n": 4}))],
            Conditions::default().expect("note/a", ExpectedRevision::Exact(2)),
        )
        .await
        .unwrap();
    assert_eq!(ok.last_position, 4);
    assert_eq!(
        loom.read(&ReadQuery::default()).await.unwrap().events.len(),
        4
    );

    // Numbers are exact in the JSON text, whatever the SDK's Value can hold.
    loom.append_json(
        r#"[{"specversion":"1.0","id":"big","source":"https://client.example","type":"was_noted",
             "subject":"note/c","data":{"n":123456789012345678901234567890}}]"#
            .to_owned(),
    )
    .await
    .unwrap();

    // Reads, paged, as CloudEvents with Loom's extensions.
    let query = ReadQuery::default().entity("note").limit(2);
    let page = loom.read(&query).await.unwrap();
    assert!(page.more);
    assert_eq!(page.events.len(), 2);
    let next = loom.read(&query.next(&page)).await.unwrap();
    assert_eq!(
        next.events.iter().map(|e| e.position()).collect::<Vec<_>>(),
        [3, 4]
    );
    let events = page.to_events().unwrap();
    assert_eq!(events[0].id(), "n1");
    assert_eq!(events[0].position(), Some(1));
    assert_eq!(events[1].revision(), Some(2));
    assert!(events[0].recorded_time().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(events[0].data(), Some(&Data::Json(json!({"n": 1}))));

    let backwards = loom
        .read(&ReadQuery::default().backwards().limit(1))
        .await
        .unwrap();
    assert_eq!(backwards.events[0].position(), 5);
    assert!(
        backwards.events[0]
            .json()
            .contains("123456789012345678901234567890")
    );

    let by_selector = loom
        .query(
            &Selector {
                data: Some("$[?@ >= 3]".into()),
                ..Selector::default()
            },
            &ReadQuery::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        by_selector
            .events
            .iter()
            .map(|e| e.position())
            .collect::<Vec<_>>(),
        [3, 4, 5]
    );

    let one = loom.event(3).await.unwrap();
    assert_eq!(one.subject(), "note/b");
    let by_id = loom
        .event_by_id("https://client.example", "n2")
        .await
        .unwrap()
        .to_event()
        .unwrap();
    assert_eq!(by_id.position(), Some(2));
    assert_eq!(by_id.subject(), Some("note/a"));
    let missing = loom.event(99).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert!(missing.is("not-found"));

    let stream = loom.stream("note/a", 1).await.unwrap();
    assert_eq!(
        stream
            .events
            .iter()
            .map(|e| e.revision())
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert!(
        loom.stream("note/none", 0)
            .await
            .unwrap_err()
            .is("not-found")
    );
    assert_eq!(loom.stream_revision("note/a").await.unwrap(), 3);
    assert_eq!(loom.stream_revision("note/none").await.unwrap(), 0);

    // Refusals are typed: an unregistered entity, a bad argument, no server.
    let unknown = loom
        .append(note("x", "nobody/1", json!({})))
        .await
        .unwrap_err();
    assert!(unknown.is("unknown-entity"), "{unknown}");
    assert!(unknown.to_string().contains("422"));
    assert!(matches!(
        loom.stream("no-key", 0).await,
        Err(loom_client::Error::Invalid(_))
    ));
    let url = server.url();
    server.stop().await;
    let gone = Client::new(&url).unwrap().health().await.unwrap_err();
    assert!(
        matches!(gone, loom_client::Error::Transport { .. }),
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_after_a_restart_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0").await;
    let addr = server.addr.to_string();
    let loom = Client::new(&server.url()).unwrap();
    loom.put_entity("note", &json!({"open": true}))
        .await
        .unwrap();
    loom.put_entity("other", &json!({"open": true}))
        .await
        .unwrap();
    for i in 1..=3 {
        loom.append(note(&format!("h{i}"), "note/a", json!({"i": i})))
            .await
            .unwrap();
        loom.append(note(&format!("o{i}"), "other/a", json!({"i": i})))
            .await
            .unwrap();
    }

    let mut sub = loom.subscribe(SubscribeQuery::default().entity("note").after(1));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("history arrives")
            .expect("not ended")
            .unwrap();
        seen.push(e.position());
    }
    assert_eq!(seen, [3, 5], "history after 1, only `note` events");

    // Live.
    loom.append(note("l1", "note/a", json!({}))).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.position(), 7);

    // The server stops (ending every subscription) and another starts on the same address
    // and data; events appended meanwhile arrive once, after the last one delivered.
    server.stop().await;
    let server = Server::start(dir.path(), &addr).await;
    loom.append(note("l2", "other/a", json!({}))).await.unwrap();
    loom.append(note("l3", "note/a", json!({}))).await.unwrap();
    let resumed = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("the subscription reconnects")
        .unwrap()
        .unwrap();
    assert_eq!(resumed.position(), 9);
    assert_eq!(resumed.to_event().unwrap().id(), "l3");

    // A refusal ends the subscription with the server's problem, without retrying.
    let mut bad = loom.subscribe(SubscribeQuery::default().data("$[?"));
    let refused = tokio::time::timeout(Duration::from_secs(10), bad.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.status(), Some(422), "{refused}");
    assert!(bad.next().await.is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_projections_and_commands_through_the_client() {
    let wasm = loom_testkit::example_wasm("bank");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "127.0.0.1:0").await;
    let loom = Client::new(&server.url()).unwrap();
    loom.put_entity("account", &loom_testkit::example_entity("bank"))
        .await
        .unwrap();
    assert!(loom.entity("account").await.unwrap()["events"]["was_opened"].is_object());
    assert!(loom.entities().await.unwrap().contains_key("account"));

    let (module, created) = loom.upload_module(wasm.clone()).await.unwrap();
    assert!(created);
    assert!(module.id.starts_with("sha256:"));
    assert!(module.exports.iter().any(|e| e == "decide"));
    let (same, created) = loom.upload_module(wasm).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, module.id);
    assert_eq!(loom.module(&module.id).await.unwrap(), module);
    assert_eq!(loom.modules().await.unwrap().len(), 1);
    let refused = loom.upload_module(b"not wasm".to_vec()).await.unwrap_err();
    assert!(refused.is("invalid-module"), "{refused}");

    let defined = loom
        .put_projection(
            "accounts",
            &ProjectionSpec::stream(
                &module.id,
                Selector {
                    entity: Some("account".into()),
                    ..Selector::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(defined.outcome, Outcome::Created);
    assert_eq!(defined.status["name"], "accounts");
    let decider = loom.put_decider("account", &module.id, None).await.unwrap();
    assert_eq!(decider.outcome, Outcome::Created);

    let opened = loom
        .command(
            "account/a1",
            &json!({"type": "open", "owner": "amal"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(opened.events[0].ty, "was_opened");
    let credit = json!({"type": "deposit", "amount": 100});
    let credited = loom
        .command("account/a1", &credit, Some("credit-1"))
        .await
        .unwrap();
    assert!(!credited.duplicate);
    let repeat = loom
        .command("account/a1", &credit, Some("credit-1"))
        .await
        .unwrap();
    assert!(repeat.duplicate);
    assert_eq!(repeat.events, credited.events);
    let overdraft = loom
        .command(
            "account/a1",
            &json!({"type": "withdraw", "amount": 500}),
            None,
        )
        .await
        .unwrap_err();
    assert!(overdraft.rejection().is_some(), "{overdraft}");

    let now = loom
        .state(
            "accounts",
            Some("account/a1"),
            &StateQuery::min_position(credited.events[0].position),
        )
        .await
        .unwrap();
    assert_eq!(now.state["balance"], 100);
    assert_eq!(now.events_applied, 2);
    let then = loom
        .state("accounts", Some("account/a1"), &StateQuery::at_position(1))
        .await
        .unwrap();
    assert_eq!(then.state["balance"], 0);
    assert_eq!(then.state["owner"], "amal");
    let (keys, more) = loom.keys("accounts", None, 10).await.unwrap();
    assert_eq!((keys, more), (vec!["account/a1".to_owned()], false));

    let paused = loom
        .projection_action("accounts", ProjectionAction::Pause)
        .await
        .unwrap();
    assert_eq!(paused["status"], "paused");
    assert_eq!(loom.projections().await.unwrap().len(), 1);
    let in_use = loom.delete_module(&module.id).await.unwrap_err();
    assert!(in_use.is("module-in-use"), "{in_use}");
    loom.delete_projection("accounts").await.unwrap();
    assert_eq!(
        loom.projection("accounts").await.unwrap_err().status(),
        Some(404)
    );
    assert!(loom.health().await.unwrap()["head"].as_u64() >= Some(2));
    assert!(loom.metrics().await.unwrap().contains("loom_"));
    server.stop().await;
}
