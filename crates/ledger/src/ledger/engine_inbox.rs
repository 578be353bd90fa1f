//! Cluster mode: the engine's changes (modules, definitions, life-cycle) travel through the
//! replicated log as control records the ledger does not interpret. The sequencer publishes
//! one with [`Ledger::publish_engine_change`]; every node, the sequencer included, keeps each
//! one it applies in an inbox table, durably with its log sequence, and its engine takes them
//! from there in log order ([`Ledger::engine_changes`]) and removes each once applied
//! ([`Ledger::remove_engine_change`]). A crash between the two leaves the change in the inbox,
//! so the engine applies it again on restart: changes must be idempotent.

use super::*;

impl Ledger {
    /// Whether this ledger is a cluster node's replica (its durable log is replicated).
    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// The largest record the durable log takes, if it has a limit (a cluster's log).
    pub fn max_record_bytes(&self) -> Option<usize> {
        self.max_record_bytes
    }

    /// Publishes an engine change to the replicated log and keeps it in this node's inbox;
    /// returns its log sequence. Refused (unavailable) unless this node is the sequencer, and
    /// on a ledger that is not a replica.
    pub fn publish_engine_change(&self, change: Vec<u8>) -> Result<u64, StorageError> {
        if !self.replicated {
            return Err(StorageError(Box::new(redb::Error::Io(
                std::io::Error::other("engine changes go through a replicated log only"),
            ))));
        }
        if let Some(max) = self.max_record_bytes
            && change.len() + 8 > max
        {
            return Err(StorageError(Box::new(redb::Error::Io(
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "the change takes {} bytes in the cluster's log, whose largest message is \
                     {max} bytes (NATS max_payload)",
                        change.len() + 8
                    ),
                ),
            ))));
        }
        let (tx, rx) = oneshot::channel();
        self.enqueue(Work::Control(ControlWork {
            control: Control::Engine(change),
            reply: tx,
        }))
        .map_err(|_| registry::closed())?;
        rx.recv().unwrap_or_else(|_| Err(registry::closed()))
    }

    /// The engine changes applied to the ledger and not yet removed, in log order.
    pub fn engine_changes(&self) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let txn = self.store.begin_read()?;
        let inbox = txn.open_table(ENGINE_INBOX)?;
        inbox
            .iter()?
            .map(|row| {
                let (k, v) = row?;
                Ok((k.value(), v.value().to_vec()))
            })
            .collect()
    }

    /// Removes an engine change once the engine applied it.
    pub fn remove_engine_change(&self, sequence: u64) -> Result<(), StorageError> {
        let mut txn = self.store.begin_write()?;
        // Applying again after a crash is harmless (changes are idempotent).
        txn.set_durability(redb::Durability::None)?;
        txn.open_table(ENGINE_INBOX)?.remove(sequence)?;
        txn.commit()?;
        Ok(())
    }

    /// Blocks until an engine change after `sequence` is in the inbox, or `timeout` passes;
    /// returns the sequence of the last one kept.
    pub fn wait_engine_change(&self, sequence: u64, timeout: Duration) -> u64 {
        self.engine_inbox.wait_for(sequence + 1, timeout)
    }
}
