use super::*;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const T: TableDefinition<u64, u64> = TableDefinition::new("t");

/// The file at `path` (created, or emptied with `truncate`) behind `deferral`.
fn deferring_file(
    path: &std::path::Path,
    deferral: &Arc<Deferral>,
    truncate: bool,
) -> DeferringFile {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)
        .unwrap();
    let fd = file.try_clone().unwrap();
    DeferringFile::new(FileBackend::new(file).unwrap(), fd, deferral.clone())
}

fn open(path: &std::path::Path, deferral: &Arc<Deferral>) -> Database {
    let backend = deferring_file(path, deferral, false);
    Database::builder().create_with_backend(backend).unwrap()
}

#[test]
fn a_checkpoint_is_written_back_in_file_order_pieces_that_cover_every_write() {
    let mut writes = Writes::default();
    // Out of file order, one page written twice, and one write inside a longer one.
    for page in [7u64, 2, 9, 0, 2, 5, 8, 1, 3, 6, 4] {
        writes.push(page * 4096, &[page as u8; 4096]);
    }
    writes.push(5 * 4096 + 100, &[1; 10]);
    let ranges = writeback_ranges(&writes, 3 * 4096);
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "in file order, apart: {ranges:?}"
    );
    for (offset, data) in writes.iter() {
        let end = offset + data.len() as u64;
        assert!(
            ranges.iter().any(|&(s, e)| s <= offset && end <= e),
            "the write at {offset}..{end} is in a range: {ranges:?}"
        );
    }
    // Pages 0–9, page 2 twice and a write inside page 5: three pages' worth per piece,
    // the second write of page 2 with the first.
    assert_eq!(
        ranges,
        [
            (0, 3 * 4096),
            (3 * 4096, 6 * 4096),
            (6 * 4096, 9 * 4096),
            (9 * 4096, 10 * 4096)
        ]
    );
    assert!(writeback_ranges(&Writes::default(), 4096).is_empty());
}

#[test]
fn a_grown_length_is_synced_before_a_header_is_written_not_when_the_file_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let deferral = Arc::new(Deferral::default());
    let file = deferring_file(&path, &deferral, true);
    let unsynced = || deferral.state().length_unsynced;
    file.write(HEADER_BYTES, &[1; 4096]).unwrap();
    file.set_len(1 << 20).unwrap();
    file.sync_data().unwrap();
    assert!(
        !unsynced(),
        "a sync after a write syncs the grown length with it"
    );
    file.set_len(2 << 20).unwrap();
    file.sync_data().unwrap();
    assert!(unsynced(), "a sync after nothing but growth is put off");
    file.write(2 * HEADER_BYTES, &[2; 4096]).unwrap();
    assert!(
        unsynced(),
        "a page past the header does not need the length"
    );
    file.write(0, b"header 1").unwrap();
    assert!(
        !unsynced(),
        "a header is written after the length is synced"
    );
    file.sync_data().unwrap();
    // A checkpoint: its thread syncs the length before it writes the header. The sync
    // after a growth inside its commit does not take the checkpoint's one deferred sync.
    file.set_len(3 << 20).unwrap();
    file.sync_data().unwrap();
    assert!(unsynced());
    deferral.arm(true);
    file.set_len(4 << 20).unwrap();
    file.sync_data().unwrap();
    assert!(
        deferral.state().armed,
        "the checkpoint's deferred sync is still to come"
    );
    file.write(0, b"header 2").unwrap();
    file.sync_data().unwrap();
    deferral.arm(false);
    assert!(!unsynced(), "the checkpoint's thread took the length over");
    deferral.wait_idle();
    assert!(deferral.failed().is_none());
    let mut header = [0; 8];
    file.read(0, &mut header).unwrap();
    assert_eq!(&header, b"header 2");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
}

#[test]
fn an_earlier_opening_may_not_change_the_file_once_the_database_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let deferral = Arc::new(Deferral::default());
    let earlier = deferring_file(&dir.path().join("db"), &deferral, true);
    earlier.write(0, b"first").unwrap();
    earlier.sync_data().unwrap();
    // The database opened again (a file of its own here, since an open file is locked):
    // the earlier opening, still held by a transaction, is refused every change.
    let _later = deferring_file(&dir.path().join("reopened"), &deferral, true);
    assert!(earlier.write(0, b"stale").is_err());
    assert!(earlier.set_len(1 << 20).is_err());
    assert!(earlier.sync_data().is_err());
    let mut back = [0; 5];
    earlier.read(0, &mut back).unwrap();
    assert_eq!(&back, b"first", "it still reads");
}

#[test]
fn an_armed_commit_returns_before_its_sync_and_is_on_disk_once_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let deferral = Arc::new(Deferral::default());
    let db = open(&path, &deferral);
    for (i, armed) in [(1, true), (2, false), (3, true)] {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        txn.open_table(T).unwrap().insert(i, i * 10).unwrap();
        deferral.arm(armed);
        txn.commit().unwrap();
        deferral.arm(false);
    }
    deferral.wait_idle();
    assert!(deferral.idle() && deferral.failed().is_none());
    drop(db);
    let db = Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(T).unwrap();
    for i in 1..=3 {
        assert_eq!(t.get(i).unwrap().unwrap().value(), i * 10);
    }
}

#[test]
fn what_an_armed_commit_wrote_reads_back_before_and_after_it_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let deferral = Arc::new(Deferral::default());
    let backend = deferring_file(&path, &deferral, false);
    // No cache beyond redb's minimum: reads after the commit go to the file.
    let db = Database::builder()
        .set_cache_size(0)
        .create_with_backend(backend)
        .unwrap();
    let value = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for round in 0..4u64 {
        // Thousands of pages each round, so that the reads below start while the thread
        // is still writing them.
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for i in round * 100_000..(round + 1) * 100_000 {
                t.insert(i, value(i)).unwrap();
            }
        }
        deferral.arm(true);
        txn.commit().unwrap();
        deferral.arm(false);
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        for i in (0..(round + 1) * 100_000).step_by(97) {
            assert_eq!(t.get(i).unwrap().map(|v| v.value()), Some(value(i)), "{i}");
        }
    }
    deferral.wait_idle();
    assert!(deferral.failed().is_none());
    drop(db);
    let db = Database::open(&path).unwrap();
    let read = db.begin_read().unwrap();
    let t = read.open_table(T).unwrap();
    for i in (0..400_000).step_by(89) {
        assert_eq!(t.get(i).unwrap().map(|v| v.value()), Some(value(i)), "{i}");
    }
}

#[test]
fn a_commit_that_stops_between_its_writes_and_its_sync_asks_for_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let deferral = Arc::new(Deferral::default());
    let backend = deferring_file(&dir.path().join("db"), &deferral, true);
    backend.write(0, b"on disk").unwrap();
    deferral.arm(true);
    backend.write(3, b"held").unwrap();
    let mut read = [0u8; 7];
    backend.read(0, &mut read).unwrap();
    assert_eq!(&read, b"on held", "a held write reads back over the file");
    deferral.arm(false);
    let failed = deferral.failed().expect("a failure that asks for a reopen");
    assert!(
        failed.to_string().contains("stopped before its sync"),
        "{failed}"
    );
}

#[test]
fn a_failed_deferred_sync_fails_every_write_until_the_file_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let deferral = Arc::new(Deferral::default());
    let backend = deferring_file(&path, &deferral, true);
    backend.write(0, b"before").unwrap();
    deferral.state().failed = Some((io::ErrorKind::Other, "EIO".into()));
    assert!(deferral.failed().is_some());
    for e in [
        backend.write(0, b"after").unwrap_err(),
        backend.sync_data().unwrap_err(),
        backend.set_len(1 << 20).unwrap_err(),
    ] {
        assert!(e.to_string().contains("deferred sync failed: EIO"), "{e}");
    }
    let mut read = [0u8; 6];
    backend.read(0, &mut read).unwrap();
    assert_eq!(&read, b"before", "reads go on");
    drop(backend);
    let reopened = deferring_file(&path, &deferral, false);
    assert!(deferral.failed().is_none());
    reopened.write(0, b"again!").unwrap();
}
