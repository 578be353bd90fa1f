//! The CloudEvents JSON format (structured mode, and batch mode) through the ledger's parsers,
//! `Event::from_json_slice` and `Event::batch_from_json_slice`.
//!
//! No input may panic. An event that parses is valid, and its JSON form (what Loom answers
//! on reads) parses back to exactly the same event, alone and in a batch.

#![no_main]

use libfuzzer_sys::fuzz_target;
use loom_ledger::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::from_json_slice(data) {
        round_trip(&event);
    }
    if let Ok(events) = Event::batch_from_json_slice(data) {
        for event in &events {
            round_trip(event);
        }
        let text = serde_json::to_vec(&events).expect("events serialize");
        let again = Event::batch_from_json_slice(&text).unwrap_or_else(|e| {
            panic!(
                "the batch {} does not parse again: {e}",
                String::from_utf8_lossy(&text)
            )
        });
        assert_eq!(again, events, "batch round trip");
    }
});

fn round_trip(event: &Event) {
    event.validate().expect("a parsed event is valid");
    let text = serde_json::to_vec(event).expect("an event serializes");
    let again = Event::from_json_slice(&text).unwrap_or_else(|e| {
        panic!(
            "the event {} does not parse again: {e}",
            String::from_utf8_lossy(&text)
        )
    });
    assert_eq!(
        &again,
        event,
        "round trip through {}",
        String::from_utf8_lossy(&text)
    );
}
