//! A producer and a reader on `loom-client`: registers an `account` entity, appends CloudEvents
//! built with the SDK (one with a condition), reads the stream back and follows new events.
//!
//! ```sh
//! cargo run --release -p loom-cli -- serve &          # a server on 127.0.0.1:7070
//! cargo run -p loom-client --example accounts          # LOOM_URL / LOOM_TOKEN if elsewhere
//! ```

use std::time::Duration;

use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use futures_util::StreamExt;
use loom_client::{Client, Conditions, ExpectedRevision, LoomEventExt, SubscribeQuery};
use serde_json::json;

fn event(id: &str, ty: &str, data: serde_json::Value) -> Event {
    EventBuilderV10::new()
        .id(id)
        .source("https://bank.example/teller")
        .ty(ty)
        .subject("account/a1")
        .data("application/json", data)
        .build()
        .expect("every required attribute is set")
}

#[tokio::main]
async fn main() -> Result<(), loom_client::Error> {
    let url = std::env::var("LOOM_URL").unwrap_or_else(|_| "http://127.0.0.1:7070".into());
    let mut builder = Client::builder(&url);
    if let Ok(token) = std::env::var("LOOM_TOKEN") {
        builder = builder.token(token);
    }
    let loom = builder.build()?;

    loom.put_entity("account", &json!({ "open": true })).await?;

    // The same ids every run: a second run's appends are duplicates, and write nothing.
    let opened = loom
        .append(event("a1-opened", "was_opened", json!({ "owner": "amal" })))
        .await?;
    println!(
        "was_opened at position {} (duplicate: {})",
        opened.last_position, opened.duplicate
    );

    // Credit only if nobody else wrote to the account since it was opened.
    let credit = event("a1-credit-1", "was_credited", json!({ "amount": 100 }));
    let conditions = Conditions::default().expect("account/a1", ExpectedRevision::Exact(1));
    // (A re-run finds this very event stored: a duplicate, whatever the condition says.)
    match loom.append_with(vec![credit], conditions).await {
        Ok(outcome) => println!(
            "was_credited at position {} (duplicate: {})",
            outcome.last_position, outcome.duplicate
        ),
        Err(e) if e.is("revision-conflict") => println!("someone else wrote first: {e}"),
        Err(e) => return Err(e),
    }

    for stored in loom.stream("account/a1", 0).await?.events {
        let e = stored.to_event()?;
        println!(
            "revision {:?} position {:?} {} recorded {:?}",
            e.revision(),
            e.position(),
            e.ty(),
            e.recorded_time()
        );
    }

    // Follow the account for two seconds: history first, then whatever arrives.
    let mut follow = loom.subscribe(SubscribeQuery::default().subject("account/a1"));
    let until = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(until);
    loop {
        tokio::select! {
            next = follow.next() => match next {
                Some(event) => println!("followed position {}", event?.position()),
                None => break,
            },
            _ = &mut until => break,
        }
    }
    Ok(())
}
