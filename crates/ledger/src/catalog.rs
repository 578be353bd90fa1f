//! The catalog: what the engine keeps beside the events, in the same database — modules,
//! definitions (projections, deciders, reactors), projection states and checkpoints, reactor
//! checkpoints. redb stays behind this API: the engine names tables from a fixed set, reads
//! from a snapshot and writes in a transaction of its own (docs/architecture.md, "Who owns
//! which write transaction").
//!
//! A projection's states and its checkpoint commit in one [`CatalogWrite`], so a crash never
//! separates them. Writes may skip the fsync ([`Durability::Deferred`]): a crash or a reopen
//! then rolls the catalog back to an earlier consistent commit. After an I/O error the ledger
//! reopens the database, which drops such commits; whoever keeps progress in memory takes an
//! [`Epoch`] when it loads it and learns from [`Catalog::reopened_since`] (or from
//! [`Catalog::write_since`] refusing to start) that it must load it again.

use redb::{Durability as RedbDurability, ReadableTable};

use crate::error::StorageError;
use crate::store::{Snapshot, Store, Write};
use crate::tables::{
    CatalogTable, PROJECTION_CHECKPOINTS, PROJECTION_NOTES, PROJECTION_STATES, REACTOR_CHECKPOINTS,
    named,
};

/// How far a catalog commit goes before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// On disk when `commit` returns.
    Immediate,
    /// Visible when `commit` returns, on disk with a later immediate commit (of the catalog
    /// or of the ledger's checkpoint); a crash before that rolls it back, whole.
    Deferred,
}

/// A projection generation's progress, committed with its states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectionCheckpoint {
    /// The last ledger position the states cover.
    pub position: u64,
    /// Events folded so far.
    pub events_applied: u64,
    /// Keys with a state.
    pub keys: u64,
}

/// A reactor's progress and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReactorCheckpoint {
    /// The last ledger position reacted to.
    pub position: u64,
    /// Events reacted to.
    pub reacted: u64,
    /// Events appended.
    pub appended: u64,
    /// Commands run.
    pub commands: u64,
    /// CloudEvents delivered to the sink.
    pub delivered: u64,
}

impl ReactorCheckpoint {
    fn to_row(self) -> (u64, u64, u64, u64, u64) {
        (
            self.position,
            self.reacted,
            self.appended,
            self.commands,
            self.delivered,
        )
    }

    fn from_row(
        (position, reacted, appended, commands, delivered): (u64, u64, u64, u64, u64),
    ) -> Self {
        ReactorCheckpoint {
            position,
            reacted,
            appended,
            commands,
            delivered,
        }
    }
}

/// Which opening of the database a caller's in-memory state was loaded from; see
/// [`Catalog::reopened_since`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch(u64);

/// The engine's tables in the ledger's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    store: Store,
}

impl Catalog {
    pub(crate) fn new(store: Store) -> Catalog {
        Catalog { store }
    }

    /// The current opening of the database.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.store.opening())
    }

    /// Whether the database was reopened since `epoch` was taken: its deferred commits since
    /// the last immediate one are gone, so state loaded from it must be loaded again.
    pub fn reopened_since(&self, epoch: Epoch) -> bool {
        self.store.opening() != epoch.0
    }

    /// A consistent snapshot of the catalog.
    pub fn read(&self) -> Result<CatalogRead, StorageError> {
        Ok(CatalogRead {
            txn: self.store.begin_read()?,
        })
    }

    /// A write transaction, waiting for the current one to finish.
    pub fn write(&self, durability: Durability) -> Result<CatalogWrite, StorageError> {
        let mut txn = self.store.begin_write()?;
        txn.set_durability(match durability {
            Durability::Immediate => RedbDurability::Immediate,
            Durability::Deferred => RedbDurability::None,
        })?;
        Ok(CatalogWrite { txn })
    }

    /// Like [`write`](Self::write), but `None` if the database was reopened since `epoch`
    /// (checked once the transaction is held, so no reopen slips in between).
    pub fn write_since(
        &self,
        epoch: Epoch,
        durability: Durability,
    ) -> Result<Option<CatalogWrite>, StorageError> {
        let txn = self.write(durability)?;
        Ok((!self.reopened_since(epoch)).then_some(txn))
    }
}

/// A snapshot of the catalog.
#[derive(Debug)]
pub struct CatalogRead {
    txn: Snapshot,
}

impl CatalogRead {
    /// The value stored under `key`.
    pub fn get(&self, table: CatalogTable, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let t = self.txn.open_table(named(table))?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Every `(key, value)` of `table`, in key order.
    pub fn list(&self, table: CatalogTable) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let t = self.txn.open_table(named(table))?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// A projection generation's checkpoint.
    pub fn projection_checkpoint(
        &self,
        projection: &str,
        generation: u64,
    ) -> Result<Option<ProjectionCheckpoint>, StorageError> {
        let t = self.txn.open_table(PROJECTION_CHECKPOINTS)?;
        Ok(t.get((projection, generation))?.map(|v| {
            let (position, events_applied, keys) = v.value();
            ProjectionCheckpoint {
                position,
                events_applied,
                keys,
            }
        }))
    }

    /// A projection generation's state of `key`, as stored.
    pub fn state(
        &self,
        projection: &str,
        generation: u64,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let t = self.txn.open_table(PROJECTION_STATES)?;
        Ok(t.get((projection, generation, key))?
            .map(|v| v.value().to_vec()))
    }

    /// Calls `f` with each of `keys`' stored state (or `None`), in order, without copying.
    pub fn states_of<'k, R>(
        &self,
        projection: &str,
        generation: u64,
        keys: impl IntoIterator<Item = &'k str>,
        mut f: impl FnMut(&'k str, Option<&[u8]>) -> R,
    ) -> Result<Vec<R>, StorageError> {
        let t = self.txn.open_table(PROJECTION_STATES)?;
        let mut out = Vec::new();
        for key in keys {
            let v = t.get((projection, generation, key))?;
            out.push(f(key, v.as_ref().map(|v| v.value())));
        }
        Ok(out)
    }

    /// Up to `limit` keys with a state in a projection generation, in order, from `from`
    /// (inclusive) on.
    pub fn state_keys(
        &self,
        projection: &str,
        generation: u64,
        from: &str,
        limit: usize,
    ) -> Result<Vec<String>, StorageError> {
        let t = self.txn.open_table(PROJECTION_STATES)?;
        let mut out = Vec::new();
        for item in t.range((projection, generation, from)..(projection, generation + 1, ""))? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = item?;
            out.push(k.value().2.to_owned());
        }
        Ok(out)
    }

    /// How many states a projection holds, over all its generations.
    pub fn state_count(&self, projection: &str) -> Result<u64, StorageError> {
        let t = self.txn.open_table(PROJECTION_STATES)?;
        // Generations count up from 1 and never reach u64::MAX.
        Ok(t.range((projection, 0, "")..(projection, u64::MAX, ""))?
            .count() as u64)
    }

    /// A projection generation's notes (`(note, value)` in note order): what the engine keeps
    /// beside the states, in the same transactions.
    pub fn projection_notes(
        &self,
        projection: &str,
        generation: u64,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        let t = self.txn.open_table(PROJECTION_NOTES)?;
        let mut out = Vec::new();
        for item in t.range((projection, generation, "")..(projection, generation + 1, ""))? {
            let (k, v) = item?;
            out.push((k.value().2.to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// A reactor's checkpoint.
    pub fn reactor_checkpoint(
        &self,
        reactor: &str,
    ) -> Result<Option<ReactorCheckpoint>, StorageError> {
        let t = self.txn.open_table(REACTOR_CHECKPOINTS)?;
        Ok(t.get(reactor)?
            .map(|v| ReactorCheckpoint::from_row(v.value())))
    }
}

/// A write transaction on the catalog: nothing is visible until [`commit`](Self::commit);
/// dropped uncommitted, it writes nothing.
pub struct CatalogWrite {
    txn: Write,
}

impl std::fmt::Debug for CatalogWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogWrite").finish_non_exhaustive()
    }
}

impl CatalogWrite {
    /// Stores `value` under `key`, replacing what was there.
    pub fn put(
        &mut self,
        table: CatalogTable,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.txn.open_table(named(table))?.insert(key, value)?;
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&mut self, table: CatalogTable, key: &str) -> Result<bool, StorageError> {
        Ok(self.txn.open_table(named(table))?.remove(key)?.is_some())
    }

    /// Stores states of a projection generation.
    pub fn put_states<'a>(
        &mut self,
        projection: &str,
        generation: u64,
        states: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<(), StorageError> {
        let mut t = self.txn.open_table(PROJECTION_STATES)?;
        for (key, state) in states {
            t.insert((projection, generation, key), state)?;
        }
        Ok(())
    }

    /// Sets a projection generation's checkpoint.
    pub fn put_projection_checkpoint(
        &mut self,
        projection: &str,
        generation: u64,
        checkpoint: ProjectionCheckpoint,
    ) -> Result<(), StorageError> {
        self.txn.open_table(PROJECTION_CHECKPOINTS)?.insert(
            (projection, generation),
            (
                checkpoint.position,
                checkpoint.events_applied,
                checkpoint.keys,
            ),
        )?;
        Ok(())
    }

    /// Sets a note of a projection generation.
    pub fn put_projection_note(
        &mut self,
        projection: &str,
        generation: u64,
        note: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        self.txn
            .open_table(PROJECTION_NOTES)?
            .insert((projection, generation, note), value)?;
        Ok(())
    }

    /// Removes a note of a projection generation.
    pub fn remove_projection_note(
        &mut self,
        projection: &str,
        generation: u64,
        note: &str,
    ) -> Result<(), StorageError> {
        self.txn
            .open_table(PROJECTION_NOTES)?
            .remove((projection, generation, note))?;
        Ok(())
    }

    /// Removes a projection generation: every state, note and its checkpoint.
    pub fn remove_projection_generation(
        &mut self,
        projection: &str,
        generation: u64,
    ) -> Result<(), StorageError> {
        self.txn.open_table(PROJECTION_STATES)?.retain_in(
            (projection, generation, "")..(projection, generation + 1, ""),
            |_, _| false,
        )?;
        self.txn.open_table(PROJECTION_NOTES)?.retain_in(
            (projection, generation, "")..(projection, generation + 1, ""),
            |_, _| false,
        )?;
        self.txn
            .open_table(PROJECTION_CHECKPOINTS)?
            .remove((projection, generation))?;
        Ok(())
    }

    /// Sets a reactor's checkpoint.
    pub fn put_reactor_checkpoint(
        &mut self,
        reactor: &str,
        checkpoint: ReactorCheckpoint,
    ) -> Result<(), StorageError> {
        self.txn
            .open_table(REACTOR_CHECKPOINTS)?
            .insert(reactor, checkpoint.to_row())?;
        Ok(())
    }

    /// Removes a reactor's checkpoint.
    pub fn remove_reactor_checkpoint(&mut self, reactor: &str) -> Result<(), StorageError> {
        self.txn.open_table(REACTOR_CHECKPOINTS)?.remove(reactor)?;
        Ok(())
    }

    /// Commits: visible to every later snapshot, durable as the transaction was begun.
    pub fn commit(self) -> Result<(), StorageError> {
        self.txn.commit()?;
        Ok(())
    }
}
