//! A replicated log (cluster mode): the sequencer publishes each commit group to a log that
//! other nodes read, and acknowledges the group's appends once that log holds it; followers
//! apply what the log holds ([`Ledger::apply_replicated`](crate::Ledger::apply_replicated)).
//!
//! The ledger commits to redb with `Durability::None` in between durable checkpoints: after a
//! crash redb is back at its last durable commit, whose [`log_sequence`](crate::Ledger::log_sequence)
//! says where in the replicated log to go on from.

use super::{DurableLog, GroupRecord};

/// The replicated log a cluster node publishes to. Implemented outside the ledger (the NATS
/// JetStream log of `loom-cluster`).
pub trait GroupLog: Send {
    /// Whether this node may decide groups now (it is the sequencer and has applied
    /// everything the log holds). An error refuses the group, and nothing is written.
    fn ready(&self) -> std::io::Result<()>;

    /// The sequence number the next published group will have in the log: the last one this
    /// node applied, plus one. Stored with the group, so that a node knows after a restart
    /// how far it has applied the log.
    fn next_sequence(&self) -> u64;

    /// The largest record the log takes, in bytes: the writer keeps groups below it, and an
    /// append larger than it alone is refused.
    fn max_record_bytes(&self) -> usize;

    /// Publishes one group's record (the bytes followers give to `apply_replicated`),
    /// returning once the log holds it durably. An error refuses the group; the log may or
    /// may not hold it then, so the node must read the log again before it decides another.
    fn publish(&mut self, record: &[u8]) -> std::io::Result<()>;
}

/// A [`GroupLog`] as the writer's [`DurableLog`]: every group is published, and redb commits
/// durably every `checkpoint_bytes` of records.
pub(crate) struct Replicated {
    pub(crate) log: Box<dyn GroupLog>,
    pub(crate) checkpoint_bytes: u64,
    pub(crate) since_checkpoint: u64,
}

impl DurableLog for Replicated {
    fn ready(&self) -> std::io::Result<()> {
        self.log.ready()
    }

    fn wants_checkpoint(&self) -> bool {
        self.since_checkpoint >= self.checkpoint_bytes
    }

    fn append(&mut self, group: &GroupRecord) -> std::io::Result<()> {
        self.log.publish(group.bytes())?;
        self.since_checkpoint += group.bytes().len() as u64;
        Ok(())
    }

    fn checkpointed(&mut self) {
        self.since_checkpoint = 0;
    }

    fn has_records(&self) -> bool {
        self.since_checkpoint > 0
    }

    fn replicated(&self) -> Option<u64> {
        Some(self.log.next_sequence())
    }

    fn applied(&mut self, bytes: usize) {
        self.since_checkpoint += bytes as u64;
    }

    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.log.max_record_bytes())
    }

    fn publish_control(&mut self, record: &[u8]) -> std::io::Result<()> {
        self.log.publish(record)
    }
}
