//! The write-ahead log's sync thread: it writes each group's record and `fdatasync`s it while
//! the writer writes the group's events into the tables ([`super::wal`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::poll::Poller;

/// A record to write: which of the log's files, at which offset, and its bytes.
pub(super) type Job = (usize, u64, Vec<u8>);

/// A thread that writes a record to one of the log's files and syncs it.
pub(super) struct Syncer {
    jobs: std::sync::mpsc::SyncSender<Job>,
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
    /// The writer's wait for each sync's result.
    synced: Poller,
}

/// The longest the writer polls for a sync's result before it sleeps (`crate::poll`): a
/// sync on a solid-state disk takes a few tens of microseconds.
const POLL_FOR_SYNC: Duration = Duration::from_millis(1);
/// The longest the sync thread polls for the next record before it sleeps: the writer hands
/// one over as soon as the next group's appends are checked.
const POLL_FOR_RECORD: Duration = Duration::from_micros(300);

impl Syncer {
    pub(super) fn start(files: [File; 2]) -> std::io::Result<Syncer> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(1);
        let (answer, done) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("loom-wal-sync".into())
            .spawn(move || {
                let mut next = Poller::new(POLL_FOR_RECORD);
                while let Some((file, offset, bytes)) = next.recv(&queue) {
                    let file = &files[file];
                    let written = file
                        .write_all_at(&bytes, offset)
                        .and_then(|()| file.sync_data());
                    if answer.send(written).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Syncer {
            jobs,
            done,
            synced: Poller::new(POLL_FOR_SYNC),
        })
    }

    /// Hands a record (which file, at which offset, the bytes) to the sync thread; false if
    /// the thread is gone.
    pub(super) fn hand_over(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// The result of the record handed over last.
    pub(super) fn wait(&mut self) -> std::io::Result<()> {
        self.synced.recv(&self.done).unwrap_or_else(|| {
            Err(std::io::Error::other(
                "the write-ahead log's sync thread stopped",
            ))
        })
    }
}
