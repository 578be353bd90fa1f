#![allow(dead_code)]

use loom_ledger::{EntitySpec, Event, EventTypeSpec, Ledger, LedgerOptions};
use serde_json::json;

/// A fresh ledger in a temporary directory, with `cart` (schemas) and `note` (open) registered.
pub fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).expect("open ledger");
    register(&ledger);
    (dir, ledger)
}

pub fn register(ledger: &Ledger) {
    let mut cart = EntitySpec::default();
    cart.events.insert(
        "was_created".into(),
        EventTypeSpec {
            schema: Some(json!({"type": "object"})),
        },
    );
    cart.events.insert(
        "had_item_added".into(),
        EventTypeSpec {
            schema: Some(json!({
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1}
                }
            })),
        },
    );
    cart.events
        .insert("was_checked_out".into(), EventTypeSpec::default());
    ledger.put_entity("cart", cart).expect("register cart");
    ledger
        .put_entity(
            "note",
            EntitySpec {
                open: true,
                ..EntitySpec::default()
            },
        )
        .expect("register note");
}

pub fn created(cart: &str, id: &str) -> Event {
    Event::new("test", id, "was_created", format!("cart/{cart}"), json!({}))
}

pub fn added(cart: &str, id: &str, sku: &str, quantity: i64) -> Event {
    Event::new(
        "test",
        id,
        "had_item_added",
        format!("cart/{cart}"),
        json!({"sku": sku, "quantity": quantity}),
    )
}

pub fn note(key: &str, id: &str, ty: &str, data: serde_json::Value) -> Event {
    Event::new("test", id, ty, format!("note/{key}"), data)
}
