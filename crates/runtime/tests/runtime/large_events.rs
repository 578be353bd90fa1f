//! Folds larger than a call's share of the module's memory, split over calls.

use loom_core::{EventView, StoredEvent};
use loom_runtime::{Runtime, RuntimeConfig};
use serde_json::json;

use crate::runtime::{extensions, json_of, stored, views};

#[test]
fn a_fold_larger_than_a_calls_share_of_memory_is_split_over_calls() {
    // 8 MiB of module memory: calls take up to 2 MiB of events. 160 credits of ~16 KiB each
    // are ~2.6 MB, which in one call would not fit beside the module's own use of its memory.
    let rt = Runtime::new(RuntimeConfig {
        memory_limit: 8 * 1024 * 1024,
        ..RuntimeConfig::default()
    });
    assert_eq!(rt.call_bytes(), 2 * 1024 * 1024);
    let bank = rt
        .compile(&loom_testkit::example_wasm("bank"))
        .unwrap()
        .bind("bank")
        .unwrap();
    let pad = "x".repeat(16 * 1024);
    let credits = |subject: &str, first: u64| -> Vec<StoredEvent> {
        (0..160)
            .map(|i| {
                let data = json!({"amount": i, "pad": pad});
                stored(first + i, subject, "was_credited", data)
            })
            .collect()
    };
    let (a, b) = (credits("account/a", 1), credits("account/b", 1_000));
    let sum: i64 = (0..160).sum();
    let balance = |state: &[u8]| json_of(state)["balance"].clone();
    assert_eq!(balance(&rt.evolve(&bank, None, &a).unwrap()), sum);
    let (a_ext, b_ext) = (extensions(&a), extensions(&b));
    let (a_views, b_views) = (views(&a, &a_ext), views(&b, &b_ext));
    assert_eq!(
        balance(&rt.evolve_views(&bank, None, &a_views).unwrap()),
        sum
    );
    // Groups: each alone over the budget, and many small ones that share calls.
    let mut groups: Vec<(Option<&[u8]>, &[EventView<'_>])> =
        vec![(None, &a_views[..]), (None, &b_views[..])];
    groups.extend(a_views.chunks(20).map(|c| (None, c)));
    let states = rt.evolve_groups(&bank, &groups).unwrap();
    assert_eq!(states.len(), 2 + 8);
    assert_eq!(balance(&states[0]), sum);
    assert_eq!(balance(&states[1]), sum);
    for (state, chunk) in states[2..].iter().zip(a_views.chunks(20)) {
        let expected: i64 = chunk.iter().map(|e| e.revision as i64 - 1).sum();
        assert_eq!(balance(state), expected);
    }
}
