//! `store` leaves the tables exactly as inserting into the tail and sealing does, whether or
//! not it knows what the store before it left in the tail.

use proptest::prelude::*;
use redb::backends::InMemoryBackend;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::*;
use crate::tables::{EVENTS, SEGMENTS};

/// Every (key, value) of both tables.
type Contents = (Vec<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>);

fn contents(db: &Database) -> Contents {
    let txn = db.begin_read().unwrap();
    let dump = |table: redb::ReadOnlyTable<u64, &[u8]>| {
        assert!(table.len().unwrap() < 100_000);
        table
            .iter()
            .unwrap()
            .map(|item| {
                let (k, v) = item.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect::<Vec<_>>()
    };
    (
        dump(txn.open_table(EVENTS).unwrap()),
        dump(txn.open_table(SEGMENTS).unwrap()),
    )
}

fn database() -> Database {
    Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .unwrap()
}

/// How [`write`] writes the groups.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// Into the tail, then sealing at most a segment more than the group's events (as the
    /// writer does for groups not planned ahead), one transaction each.
    InsertAndSeal,
    /// With `store`, one transaction each.
    Store,
    /// With `store`, all in one transaction, each store knowing what the last left in the
    /// tail (as the writer does for groups sharing a transaction).
    StoreKnowingTheTail,
}

/// Writes `groups` (record sizes) in `way`. `unsealed` records are in the tail first, not
/// packed (an upgrade from a format before segments that was cut short).
fn write(groups: &[Vec<usize>], unsealed: &[usize], max_events: usize, way: Way) -> Contents {
    let db = database();
    let txn = db.begin_write().unwrap();
    {
        let mut tail = txn.open_table(EVENTS).unwrap();
        txn.open_table(SEGMENTS).unwrap();
        for (i, &len) in unsealed.iter().enumerate() {
            tail.insert(i as u64 + 1, vec![i as u8; len].as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
    let mut next = unsealed.len() as u64 + 1;
    let one = (way == Way::StoreKnowingTheTail).then(|| db.begin_write().unwrap());
    let mut known = None;
    for group in groups {
        let records: Vec<Vec<u8>> = group
            .iter()
            .enumerate()
            .map(|(i, &len)| vec![(next as usize + i) as u8; len])
            .collect();
        let own = one.is_none().then(|| db.begin_write().unwrap());
        let txn = one.as_ref().or(own.as_ref()).unwrap();
        {
            let mut tail = txn.open_table(EVENTS).unwrap();
            let mut segments = txn.open_table(SEGMENTS).unwrap();
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            match way {
                Way::InsertAndSeal => {
                    for (i, r) in slices.iter().enumerate() {
                        tail.insert(next + i as u64, *r).unwrap();
                    }
                    seal(&mut tail, &mut segments, group.len() + 1, max_events).unwrap();
                }
                Way::Store => store(
                    &mut tail,
                    &mut segments,
                    next,
                    &slices,
                    max_events,
                    &mut None,
                )
                .unwrap(),
                Way::StoreKnowingTheTail => store(
                    &mut tail,
                    &mut segments,
                    next,
                    &slices,
                    max_events,
                    &mut known,
                )
                .unwrap(),
            }
        }
        if let Some(txn) = own {
            txn.commit().unwrap();
        }
        next += group.len() as u64;
    }
    if let Some(txn) = one {
        txn.commit().unwrap();
    }
    contents(&db)
}

/// Record sizes around the segment limit's fractions, and a few larger than a segment.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 1usize..400,
        3 => 3_000usize..6_000,
        1 => 15_000usize..20_000,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn store_packs_as_insert_and_seal(
        groups in prop::collection::vec(prop::collection::vec(size(), 1..90), 1..12),
        unsealed in prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(size(), 1..300),
        ],
        max_events in prop_oneof![Just(1usize), Just(5), Just(64)],
    ) {
        let old = write(&groups, &unsealed, max_events, Way::InsertAndSeal);
        let new = write(&groups, &unsealed, max_events, Way::Store);
        let knowing = write(&groups, &unsealed, max_events, Way::StoreKnowingTheTail);
        if unsealed.is_empty() {
            prop_assert!(old.0.len() < max_events.max(2) * 4, "the tail stays short");
        }
        prop_assert_eq!(&old, &new);
        prop_assert_eq!(old, knowing);
    }
}

#[test]
fn store_refuses_records_that_do_not_follow_the_ledger() {
    let db = database();
    let txn = db.begin_write().unwrap();
    let mut tail = txn.open_table(EVENTS).unwrap();
    let mut segments = txn.open_table(SEGMENTS).unwrap();
    let mut known = None;
    store(&mut tail, &mut segments, 1, &[b"a", b"b"], 64, &mut known).unwrap();
    assert!(known.is_some());
    let err = store(&mut tail, &mut segments, 4, &[b"d"], 64, &mut known).unwrap_err();
    assert!(err.to_string().contains("ending at 2"), "{err}");
}
