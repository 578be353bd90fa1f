//! A full disk under the HTTP API, with the engine and a projection running on the same
//! database: appends answer 507 `urn:loom:problem:disk-full`, reads keep working, nothing
//! acknowledged is lost, and once space returns appends answer 201 again and the projection
//! follows again by itself and equals a replay of the ledger.
//!
//! Runs on a real 3 MiB tmpfs mounted for the test; where mounting is not permitted it is
//! skipped with a message (the ledger's own tests/disk_full.rs also runs the scenario on an
//! injected storage backend, always).

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use loom_engine::{At, Engine, EngineConfig, OnError, Partition, ProjectionSpec, Status};
use loom_ledger::{EntitySpec, Ledger, LedgerOptions, Selector};
use loom_server::{AppState, Config};
use loom_testkit::Tmpfs;
use serde_json::{Value, json};

use common::{get, post_events};

fn credits(n: usize) -> Value {
    let pad = "x".repeat(1000);
    (0..5)
        .map(|i| {
            json!({
                "specversion": "1.0",
                "id": format!("c{n}-{i}"),
                "source": "disk-full",
                "type": "was_credited",
                "subject": format!("account/{}", (n + i) % 8),
                "data": { "amount": 1 + i, "pad": pad },
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_the_server_recovers() {
    let mount = match Tmpfs::mount("3m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_answers_507_and_the_server_recovers: mounting a tmpfs is \
                 not permitted here ({why})"
            );
            return;
        }
    };
    let options = LedgerOptions {
        cache_bytes: 1 << 20,
        // A small log (and so a small reserve beside it) for a 3 MiB disk.
        wal_checkpoint_bytes: 32 << 10,
        ..LedgerOptions::default()
    };
    let ledger = Arc::new(Ledger::open(mount.path().join("data"), options).unwrap());
    let open = EntitySpec {
        open: true,
        ..EntitySpec::default()
    };
    ledger.put_entity("account", open).unwrap();
    let engine = Arc::new(Engine::open(ledger.clone(), EngineConfig::default()).unwrap());
    let module = engine
        .modules()
        .upload(&loom_testkit::example_wasm("bank"))
        .unwrap()
        .record
        .id;
    let spec = ProjectionSpec {
        module,
        reducer: None,
        selector: Selector {
            entity: Some("account".into()),
            ..Selector::default()
        },
        partition: Partition::Stream,
        strict: false,
        on_error: OnError::Stop,
    };
    engine.projections().put("balances", spec).unwrap();
    let state = AppState::new(engine.clone(), Config::default());

    // Fill the disk through the API.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut full = None;
    for n in 0..2_000 {
        let answer = post_events(&state, &credits(n)).await;
        if answer.status.as_u16() != 201 {
            full = Some(answer);
            break;
        }
        for e in answer.json()["events"].as_array().unwrap() {
            acked.insert(
                e["id"].as_str().unwrap().to_owned(),
                e["position"].as_u64().unwrap(),
            );
        }
    }
    let full = full.expect("2000 appends and the disk is not full");
    let problem = full.problem(507);
    assert_eq!(problem["type"], "urn:loom:problem:disk-full");
    let head = ledger.head();
    assert_eq!(acked.values().max(), Some(&head));
    eprintln!(
        "507 after {} acknowledged events: {}",
        acked.len(),
        problem["detail"]
    );

    // Still full: reads work, appends keep answering 507.
    assert_eq!(get(&state, &format!("/v1/events/{head}")).await.status, 200);
    post_events(&state, &credits(9_999)).await.problem(507);
    let status = engine.projections().status("balances").unwrap();
    eprintln!(
        "projection while the disk is full: {:?} at {} ({:?})",
        status.active.status, status.active.position, status.active.last_error
    );

    // Space returns: 201 again, right after the last acknowledged position.
    mount.resize("64m");
    let answer = post_events(&state, &credits(10_000)).await;
    assert_eq!(answer.status, 201, "{:?}", answer.json());
    assert_eq!(answer.json()["events"][0]["position"], head + 1);
    let head = ledger.head();

    // Nothing acknowledged is lost.
    for (id, position) in &acked {
        let e = ledger.event_by_id("disk-full", id).unwrap().unwrap();
        assert_eq!(e.position, *position);
    }

    // The projection follows again by itself (a full disk does not stop it: it retries) and
    // equals a replay: the reopen dropped its commits that were not durable yet, and it must
    // have gone back to its stored checkpoint rather than skip those events.
    engine
        .projections()
        .wait_for("balances", head, Duration::from_secs(30))
        .unwrap();
    let status = engine.projections().status("balances").unwrap();
    assert_ne!(status.active.status, Status::Failed, "{status:?}");
    let answer = get(&state, "/v1/projections/balances").await;
    assert_eq!(answer.json()["status"], "running");
    for k in 0..8 {
        let key = format!("account/{k}");
        let live = engine.projections().state("balances", Some(&key), At::Now);
        let replay = engine
            .projections()
            .state("balances", Some(&key), At::Position(head));
        let (live, replay) = (live.unwrap(), replay.unwrap());
        assert_eq!(
            String::from_utf8_lossy(&live.state),
            String::from_utf8_lossy(&replay.state),
            "{key}: live ({} events) vs replay ({} events)",
            live.events_applied,
            replay.events_applied
        );
    }

    engine.shutdown();
    ledger.shutdown();
}
