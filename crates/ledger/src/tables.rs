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
/// Cluster mode: log sequence → an engine change (modules, definitions, life-cycle) applied to
/// the ledger's log position but not yet by the engine, which removes it once applied.
pub(crate) const ENGINE_INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("engine_inbox");
/// named counters: `format`, `next_stream_id`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(crate) const META_FORMAT: &str = "format";
pub(crate) const META_NEXT_STREAM_ID: &str = "next_stream_id";
/// Cluster mode: the sequence number, in the replicated log, of the last group applied.
pub(crate) const META_LOG_SEQUENCE: &str = "log_sequence";
/// The on-disk format this build writes and reads: 2 since the write-ahead log (a data
/// directory of format 2 may hold acknowledged events only in `ledger.wal`, which a build of
/// format 1 would not read); 3 since segments (a build of format 2 would not read the events
/// packed into segments).
pub(crate) const FORMAT_VERSION: u64 = 3;
/// The formats before: read, and upgraded to 3 when opened (1 had no write-ahead log, 2 no
/// segments; both keep every event in the tail).
pub(crate) const FORMATS_BEFORE: [u64; 2] = [1, 2];

// The catalog's tables (see `catalog`): the engine's, kept in the same database.

/// A table of the catalog that maps a name to bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatalogTable {
    /// module id → the module's wasm bytes.
    ModuleBytes,
    /// module id → what the engine says about the module (JSON).
    Modules,
    /// projection name → its definition and life-cycle (JSON).
    Projections,
    /// entity → its decider's definition (JSON).
    Deciders,
    /// reactor name → its definition and life-cycle (JSON).
    Reactors,
}

const MODULE_BYTES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("module_info");
const PROJECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("projections");
const DECIDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("deciders");
const REACTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("reactors");

/// Every name → bytes table of the catalog.
pub(crate) const CATALOG_TABLES: [CatalogTable; 5] = [
    CatalogTable::ModuleBytes,
    CatalogTable::Modules,
    CatalogTable::Projections,
    CatalogTable::Deciders,
    CatalogTable::Reactors,
];

pub(crate) fn named(table: CatalogTable) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match table {
        CatalogTable::ModuleBytes => MODULE_BYTES,
        CatalogTable::Modules => MODULES,
        CatalogTable::Projections => PROJECTIONS,
        CatalogTable::Deciders => DECIDERS,
        CatalogTable::Reactors => REACTORS,
    }
}

/// (projection, generation, key) → state (the engine's state header + state JSON).
pub(crate) const PROJECTION_STATES: TableDefinition<(&str, u64, &str), &[u8]> =
    TableDefinition::new("projection_states");
/// (projection, generation) → (position, events applied, keys).
pub(crate) const PROJECTION_CHECKPOINTS: TableDefinition<(&str, u64), (u64, u64, u64)> =
    TableDefinition::new("projection_checkpoints");
/// (projection, generation, note) → bytes: what a generation keeps beside its states, such as
/// the events it skipped by type and the streams it quarantined (the engine's encodings).
pub(crate) const PROJECTION_NOTES: TableDefinition<(&str, u64, &str), &[u8]> =
    TableDefinition::new("projection_notes");
/// reactor name → (position, reacted, appended, commands, delivered).
pub(crate) const REACTOR_CHECKPOINTS: TableDefinition<&str, (u64, u64, u64, u64, u64)> =
    TableDefinition::new("reactor_checkpoints");
