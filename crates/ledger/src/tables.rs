//! Table definitions. The layout is documented in docs/design.md.

use redb::TableDefinition;

/// position → encoded event (see `codec`): the tail, events not yet packed into a segment
/// (see `records`).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// first position → a segment of consecutive encoded events (see `records`).
pub(crate) const SEGMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("segments");
/// (source, id) → position: identity and idempotency.
pub(crate) const IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("ids");
/// subject → (stream id, current revision): O(1) revision lookup.
pub(crate) const STREAMS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("streams");
/// (stream id, revision) → position.
pub(crate) const STREAM_INDEX: TableDefinition<(u64, u64), u64> =
    TableDefinition::new("stream_index");
/// (entity, position) → ().
pub(crate) const ENTITY_INDEX: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("entity_index");
/// (entity, type, position) → ().
pub(crate) const TYPE_INDEX: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("type_index");
/// recorded time (µs since epoch) → last position committed at that time.
pub(crate) const TIME_INDEX: TableDefinition<i64, u64> = TableDefinition::new("time_index");
/// entity name → registration (JSON).
pub(crate) const ENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entities");
/// named counters: `format`, `next_stream_id`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_NEXT_STREAM_ID: &str = "next_stream_id";
/// The on-disk format this build writes and reads: 2 since the write-ahead log (a data
/// directory of format 2 may hold acknowledged events only in `ledger.wal`, which a build of
/// format 1 would not read); 3 since segments (a build of format 2 would not read the events
/// packed into segments).
pub(crate) const FORMAT_VERSION: u64 = 3;
/// The formats before: read, and upgraded to 3 when opened (1 had no write-ahead log, 2 no
/// segments; both keep every event in the tail).
pub(crate) const FORMATS_BEFORE: [u64; 2] = [1, 2];
