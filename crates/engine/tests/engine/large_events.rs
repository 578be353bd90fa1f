//! Large events: folds and catch-up steps bounded by size, not only by number of events.

use loom_engine::{At, EngineConfig, Status};
use serde_json::json;

use crate::fixture::*;

#[test]
fn a_stream_of_large_events_folds_within_the_modules_memory() {
    // 2 400 credits of ~32 KiB each on one account: ~77 MB of event data, more than a
    // module's 64 MiB memory (the default limit) if it were handed over in one call, though
    // each event alone is small.
    let f = fixture(100_000);
    let module = f.upload("bank");
    f.append(vec![ev(
        "account/a",
        "open",
        "was_opened",
        json!({"owner": "x"}),
    )]);
    let pad = "x".repeat(32 * 1024);
    for chunk in 0..24 {
        f.append(
            (0..100)
                .map(|i| {
                    ev(
                        "account/a",
                        &format!("c{chunk}-{i}"),
                        "was_credited",
                        json!({"amount": 1, "pad": pad}),
                    )
                })
                .collect(),
        );
    }
    let st = fold_accounts(&f, &module);
    assert_eq!(st.active.status, Status::Running, "{st:?}");
    assert_eq!(st.active.events_applied, 2_401);
    assert_eq!(
        f.state("accounts", Some("account/a"), At::Now)["balance"],
        2_400
    );
    // Time travel replays the same events through the module.
    let head = f.ledger.head();
    assert_eq!(
        f.state("accounts", Some("account/a"), At::Position(head))["balance"],
        2_400
    );
}

#[test]
fn steps_bounded_by_size_fold_every_event_exactly_once() {
    // Steps of at most ~40 KB of events: each holds a few of the ~9 KiB credits, far fewer
    // than its 1 000 events, and each must still cover only what it read.
    let f = fixture_with(EngineConfig {
        batch_events: 1_000,
        batch_bytes: 40_000,
        ..config(1_000)
    });
    let module = f.upload("bank");
    let pad = "x".repeat(9 * 1024);
    let mut events = Vec::new();
    for a in 0..4 {
        let subject = format!("account/{a}");
        events.push(ev(
            &subject,
            &format!("o{a}"),
            "was_opened",
            json!({"owner": "x"}),
        ));
    }
    for i in 0..120u64 {
        let subject = format!("account/{}", i % 4);
        let data = json!({"amount": i, "pad": pad});
        events.push(ev(&subject, &format!("c{i}"), "was_credited", data));
    }
    for chunk in events.chunks(7) {
        f.append(chunk.to_vec());
    }
    let st = fold_accounts(&f, &module);
    assert_eq!(st.active.events_applied, 124, "every event folded once");
    let head = f.ledger.head();
    for a in 0..4 {
        let subject = format!("account/{a}");
        let expected: u64 = (0..120u64).filter(|i| i % 4 == a).sum();
        let state = f.state("accounts", Some(&subject), At::Now);
        assert_eq!(state["balance"], json!(expected), "{subject}");
        assert_eq!(state, clean_fold(&f, &module, &subject, head), "{subject}");
    }
}
