//! The durable log: where a commit group becomes durable before the writer commits it to
//! redb without an fsync of its own (docs/architecture.md, "The write path").
//!
//! Group commit, conditions, identity and indexes do not know which log they run on. The
//! writer asks a [`DurableLog`] to make each group durable and acknowledges the group's
//! appends only after it returned; every opening of the database first replays, through a
//! [`LogReplay`], what the log holds beyond redb's last durable commit. The local
//! write-ahead log ([`wal`]) is the implementation a single node uses; a replicated log
//! ([`replicated`], cluster mode) plugs in behind the same trait, and is read back by the
//! cluster instead of at open.

pub(crate) mod awake;
pub(crate) mod control;
pub(crate) mod deferred;
pub(crate) mod group;
#[cfg(target_os = "linux")]
mod placement;
pub(crate) mod replicated;
pub(crate) mod reserve;
mod syncer;
#[cfg(test)]
pub(crate) use syncer::hold;
pub(crate) mod wal;

use crate::error::StorageError;

/// A thread's kernel id, for placing it ([`placement`]); nothing where threads are not placed.
#[cfg(target_os = "linux")]
pub(crate) type ThreadId = rustix::thread::Pid;
/// A thread's kernel id, for placing it; nothing where threads are not placed.
#[cfg(not(target_os = "linux"))]
pub(crate) type ThreadId = ();

/// Starts a thread named `name` running `f`, and returns it with its kernel id, which it
/// reports as it starts.
fn spawn_placeable(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<(std::thread::JoinHandle<()>, ThreadId)> {
    let (id_tx, id_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            #[cfg(target_os = "linux")]
            let _ = id_tx.send(rustix::thread::gettid());
            #[cfg(not(target_os = "linux"))]
            let _ = id_tx.send(());
            f()
        })?;
    let id = id_rx
        .recv()
        .map_err(|_| std::io::Error::other(format!("the thread {name} did not start")))?;
    Ok((thread, id))
}

pub(crate) use group::{GroupRecord, LoggedGroup};

/// Makes commit groups durable, in order.
pub(crate) trait DurableLog: Send {
    /// Called before a group touches the database. An error refuses the group, and nothing
    /// is written (the local log: no room left to replay it on a full disk).
    fn ready(&self) -> std::io::Result<()>;

    /// Whether the next group should commit durably to redb instead of through the log (a
    /// checkpoint), so that the log can drop what it holds.
    fn wants_checkpoint(&self) -> bool;

    /// Makes one [`finish`](GroupRecord::finish)ed group durable, returning once it is. On
    /// error the group is refused and the log is as if it had not been asked.
    fn append(&mut self, group: &GroupRecord) -> std::io::Result<()>;

    /// Starts making a finished group durable and returns (the local log hands the record
    /// to its sync thread, and the writer writes the group's events meanwhile);
    /// [`finish`](Self::finish) waits for it. On error nothing was begun. By default the
    /// group is made durable here.
    fn begin(&mut self, group: &GroupRecord) -> std::io::Result<()> {
        self.append(group)
    }

    /// Whether the record of the next group, planned on the one in flight, may be handed
    /// over behind it now ([`begin_behind`](Self::begin_behind)).
    fn may_begin_behind(&self) -> bool {
        false
    }

    /// Hands over the record of a group planned on the one in flight, to be written right
    /// after it, and only if that one is written. Each record begun is
    /// [`finish`](Self::finish)ed, in order.
    fn begin_behind(&mut self, _group: &GroupRecord) -> std::io::Result<()> {
        Err(std::io::Error::other("this log takes one group at a time"))
    }

    /// Records begun and not finished yet.
    fn pending(&self) -> usize {
        0
    }

    /// Waits until the oldest record begun is durable. `applied`: whether its group's events
    /// went into the tables; if not, the record is taken back (the next one overwrites it).
    /// On error the record is not in the log.
    fn finish(&mut self, _applied: bool) -> std::io::Result<()> {
        Ok(())
    }

    /// A durable redb commit now holds everything logged so far.
    fn checkpointed(&mut self);

    /// The deferral of checkpoint syncs, for a log that keeps what a checkpoint covers until
    /// its sync is done ([`deferred`]): the writer logs a checkpoint's group like any other,
    /// arms this around the checkpoint's commit, and then calls
    /// [`checkpoint_deferred`](Self::checkpoint_deferred) instead of
    /// [`checkpointed`](Self::checkpointed).
    fn deferral(&self) -> Option<&deferred::Deferral> {
        None
    }

    /// A durable redb commit holds everything logged so far once its deferred sync is done.
    fn checkpoint_deferred(&mut self) {
        self.checkpointed();
    }

    /// Whether groups were logged since the last checkpoint.
    fn has_records(&self) -> bool;

    /// For a replicated log, the sequence number the next group gets in it: every group is
    /// then logged (a durable redb commit does not replace the log, which other nodes read),
    /// and the number is stored with the group.
    fn replicated(&self) -> Option<u64> {
        None
    }

    /// Largest group record the log takes (a replicated log's largest message), if any.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }

    /// A group of `appends` appends committed through this log (the local log places its
    /// threads by how large groups are: [`placement`]).
    fn group_committed(&mut self, _appends: usize) {}

    /// A group read from the replicated log was applied (counts towards the next checkpoint).
    fn applied(&mut self, _bytes: usize) {}

    /// Publishes a control record to a replicated log (the next sequence number is
    /// [`replicated`](Self::replicated)'s); a local log has none.
    fn publish_control(&mut self, _record: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other(
            "control records travel only through a replicated log",
        ))
    }
}

/// Reads back, when the database is opened, the groups a log holds.
pub(crate) trait LogReplay {
    /// Calls `apply` with each group after position `head` (the last one redb holds), in
    /// order. Returns where the log goes on after the last group applied (`None`: none was);
    /// the log is opened there. A gap between `head` and the log's first group beyond it is
    /// an error: acknowledged events would be missing.
    fn replay_after(
        &self,
        head: u64,
        apply: &mut dyn FnMut(&LoggedGroup<'_>) -> Result<(), StorageError>,
    ) -> Result<Option<LogEnd>, StorageError>;
}

/// Where a log goes on: its file (the local log has two) and the offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogEnd {
    pub(crate) file: usize,
    pub(crate) offset: u64,
}

/// Runs `f`, which starts a thread, so that the thread may run on every CPU the process may
/// use rather than only where the calling writer is placed (`placement`; elsewhere than on
/// Linux threads are not placed, and `f` just runs).
pub(crate) fn on_every_cpu<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(target_os = "linux")]
    return placement::on_every_cpu(f);
    #[cfg(not(target_os = "linux"))]
    f()
}
