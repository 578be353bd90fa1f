//! The write-ahead log: what makes a group commit durable (docs/design.md, "Write-ahead log").
//!
//! The writer applies a group to redb in a transaction that commits with `Durability::None`
//! (visible, not yet on disk), and before that commit appends the group's accepted events to
//! this file as one record and `fdatasync`s it: one sequential write instead of the
//! ~100 scattered pages a durable redb commit of the same group writes. Every
//! [`wal_checkpoint_bytes`](crate::LedgerOptions::wal_checkpoint_bytes) or so of log, one group
//! commits with `Durability::Immediate` instead (a checkpoint: everything before it is in the
//! redb file), and the log starts again at offset 0, overwriting itself.
//!
//! Whenever the database is opened (at start and after an I/O error) the records that redb
//! does not hold yet are applied again and committed durably (`writer::replay`) before anyone
//! reads. That needs room in the redb file, also when the disk is full (a full disk is what
//! makes redb fail and the ledger reopen it): a [`Reserve`] file of allocated space sits
//! beside the log, is given back for such a replay, and while it cannot be allocated again
//! appends are refused as "disk full" before they touch anything.
//!
//! The file is a sequence of group records ([`super::group`]). After a restart at offset 0 the file still holds older records further on; they are told apart by
//! their positions, which are all below the checkpoint's, and a torn or overwritten record by
//! its checksum.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::group::{GroupRecord, LoggedGroup, after, groups};
use super::{DurableLog, LogReplay};
use crate::error::StorageError;

/// File name of the log inside the data directory.
pub const WAL_FILE: &str = "ledger.wal";
/// File name of the space reserved for replaying the log on a full disk.
pub const RESERVE_FILE: &str = "ledger.reserve";

/// Allocated disk space, given back to the file system when a replay on a full disk needs it.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
    present: AtomicBool,
}

impl Reserve {
    /// The reserve at `path`, of `bytes`; [`ensure`](Self::ensure) allocates it.
    pub(crate) fn new(path: PathBuf, bytes: u64) -> Reserve {
        Reserve {
            path,
            bytes,
            present: AtomicBool::new(false),
        }
    }

    /// Makes sure the space is allocated; an error (the disk is full) when it cannot be.
    pub(crate) fn ensure(&self) -> std::io::Result<()> {
        if self.present.load(Ordering::Acquire) {
            return Ok(());
        }
        let allocate = || -> std::io::Result<()> {
            let file = File::options()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)?;
            match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, self.bytes) {
                Ok(()) => {}
                // A file system without fallocate: write the space out instead.
                Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                    let zeros = vec![0u8; 1 << 20];
                    let mut at = 0;
                    while at < self.bytes {
                        let n = (self.bytes - at).min(zeros.len() as u64) as usize;
                        file.write_all_at(&zeros[..n], at)?;
                        at += n as u64;
                    }
                }
                Err(e) => return Err(e.into()),
            }
            file.sync_all()
        };
        match allocate() {
            Ok(()) => {
                self.present.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                // Same kind (a full disk stays recognisable), and the reason.
                Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot set aside {} KiB for replaying the write-ahead log ({}): {e}; \
                         appends are refused until there is room (free disk space, or lower \
                         the checkpoint interval, `loom serve --wal-checkpoint`)",
                        self.bytes >> 10,
                        self.path.display()
                    ),
                ))
            }
        }
    }

    /// Gives the space back; whether there was any to give.
    pub(crate) fn release(&self) -> bool {
        self.present.store(false, Ordering::Release);
        std::fs::remove_file(&self.path).is_ok()
    }
}

/// The open log and where the next record goes.
pub(crate) struct Wal {
    file: File,
    reserve: Arc<Reserve>,
    offset: u64,
    checkpoint_bytes: u64,
    /// The last append failed, so the bytes at `offset` may hold a whole record of a group
    /// that was refused (the write can have completed before its fsync failed). Until an
    /// append overwrites them the log must not start over: after a restart they could be
    /// read back behind newer records, with positions those records reuse.
    tail_dirty: bool,
}

impl Wal {
    /// Opens (creating if needed) the log at `path`; the next record goes to `offset`: right
    /// after the last record that opening the database replayed, or 0 if it replayed none.
    pub(crate) fn open(
        path: &Path,
        offset: u64,
        checkpoint_bytes: u64,
        reserve: Arc<Reserve>,
    ) -> std::io::Result<Wal> {
        let existed = path.exists();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        prefill(&file, checkpoint_bytes)?;
        if !existed {
            // The new name must survive a crash too.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(Wal {
            file,
            reserve,
            offset,
            checkpoint_bytes,
            tail_dirty: false,
        })
    }
}

/// Zero-fills the log up to the size a checkpoint interval fills (and a margin for the group
/// that crosses it), and makes that size durable, once: an append then overwrites allocated
/// blocks in place, and its `fdatasync` writes the data alone — no block allocation, no file
/// size, so no file-system journal commit of its own (as PostgreSQL pre-fills its WAL
/// segments). Zeros are where a replay stops (no record's magic), so the filling is never
/// read as records. `fallocate` would not do: its blocks are "unwritten" extents, and the
/// first write into each converts it, a metadata change `fdatasync` must then commit.
///
/// Best effort: on a full disk the log works unfilled, the file growing with its appends.
fn prefill(file: &File, checkpoint_bytes: u64) -> std::io::Result<()> {
    let want = checkpoint_bytes.saturating_add((checkpoint_bytes / 4).min(1 << 20));
    let len = file.metadata()?.len();
    if len >= want {
        return Ok(());
    }
    let zeros = vec![0u8; 256 << 10];
    let mut at = len;
    let filled = (|| {
        while at < want {
            let n = (want - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_all()
    })();
    match filled {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            tracing::warn!(error = %e, "no room to pre-fill the write-ahead log; it grows with its appends");
            // What was written of the filling is zeros; its size need not be durable.
            let _ = file.set_len(len);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl DurableLog for Wal {
    /// Whether the next group should commit durably to redb (and restart the log).
    fn wants_checkpoint(&self) -> bool {
        self.offset >= self.checkpoint_bytes && !self.tail_dirty
    }

    /// Before a group touches the database: an error (the disk is full) when the reserve for a
    /// replay is not there and cannot be allocated again.
    fn ready(&self) -> std::io::Result<()> {
        self.reserve.ensure()
    }

    /// Appends one group's record and waits until it is on disk. On error the offset does not
    /// move, so the next record overwrites whatever part of this one was written.
    /// `group` must be [`finish`](GroupRecord::finish)ed.
    fn append(&mut self, group: &GroupRecord) -> std::io::Result<()> {
        let written = self
            .file
            .write_all_at(group.bytes(), self.offset)
            .and_then(|()| self.file.sync_data());
        self.tail_dirty = written.is_err();
        written?;
        self.offset += group.bytes().len() as u64;
        Ok(())
    }

    /// After a durable redb commit that holds everything logged so far: the next record goes
    /// to offset 0 (not while a failed append's bytes are still at the offset).
    fn checkpointed(&mut self) {
        if !self.tail_dirty {
            self.offset = 0;
        }
    }

    /// Whether records were appended since the last restart.
    fn has_records(&self) -> bool {
        self.offset > 0
    }
}

/// The log file at `path` read back for a replay.
#[derive(Debug)]
pub(crate) struct WalFile<'p>(pub(crate) &'p Path);

impl LogReplay for WalFile<'_> {
    fn replay_after(
        &self,
        head: u64,
        apply: &mut dyn FnMut(&LoggedGroup<'_>) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let log = match std::fs::read(self.0) {
            Ok(log) => log,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError(Box::new(redb::Error::Io(e)))),
        };
        let found = after(groups(&log), head)
            .map_err(|message| StorageError(Box::new(redb::Error::Corrupted(message))))?;
        for group in &found {
            apply(group)?;
        }
        Ok(found.last().map(|g| g.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::group::tests::{group, spans};
    use crate::log::group::{after, groups};

    #[test]
    fn the_reserve_is_allocated_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESERVE_FILE);
        let reserve = Reserve::new(path.clone(), 1 << 20);
        reserve.ensure().unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1 << 20);
        assert!(meta.blocks() * 512 >= 1 << 20, "allocated, not sparse");
        assert!(reserve.release());
        assert!(!path.exists());
        assert!(!reserve.release(), "nothing left to give");
        reserve.ensure().unwrap();
        assert!(path.exists());
    }

    /// A log in `dir` that wants a checkpoint after every byte, with a small reserve.
    fn small_log(dir: &Path) -> Wal {
        let reserve = Arc::new(Reserve::new(dir.join(RESERVE_FILE), 4096));
        Wal::open(&dir.join(WAL_FILE), 0, 1, reserve).unwrap()
    }

    #[test]
    fn appends_land_at_the_offset_and_restart_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let mut wal = small_log(dir.path());
        wal.ready().unwrap();
        assert!(!wal.wants_checkpoint());
        for first in [1, 3] {
            wal.append(&group(first, 2)).unwrap();
        }
        assert!(wal.wants_checkpoint());
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(groups(&log), 0).unwrap()), [(1, 2), (3, 4)]);
        wal.checkpointed();
        wal.append(&group(5, 1)).unwrap();
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(groups(&log), 4).unwrap()), [(5, 5)]);
    }

    #[test]
    fn the_log_is_filled_at_open_so_that_appends_do_not_grow_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let reserve = Arc::new(Reserve::new(dir.path().join(RESERVE_FILE), 4096));
        let mut wal = Wal::open(&path, 0, 64 << 10, reserve.clone()).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 80 << 10);
        assert!(meta.blocks() * 512 >= 80 << 10, "written, not sparse");
        for first in [1, 3] {
            wal.append(&group(first, 2)).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 80 << 10);
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(groups(&log), 0).unwrap()), [(1, 2), (3, 4)]);
        // Opened again where the records end: they stay, the filling is not redone.
        let end = wal.offset;
        drop(wal);
        let mut wal = Wal::open(&path, end, 64 << 10, reserve).unwrap();
        wal.append(&group(5, 1)).unwrap();
        let log = std::fs::read(&path).unwrap();
        assert_eq!(log.len(), 80 << 10);
        assert_eq!(
            spans(&after(groups(&log), 0).unwrap()),
            [(1, 2), (3, 4), (5, 5)]
        );
    }

    #[test]
    fn after_a_failed_append_the_log_does_not_start_over_until_it_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let mut wal = small_log(dir.path());
        wal.append(&group(1, 1)).unwrap();
        // The file goes read-only under the log: the next append fails.
        let writable = std::mem::replace(&mut wal.file, File::open(&path).unwrap());
        assert!(wal.append(&group(2, 1)).is_err());
        assert!(!wal.wants_checkpoint(), "no checkpoint over a dirty tail");
        wal.checkpointed();
        assert!(wal.has_records(), "no restart over a dirty tail");
        // The next append goes to the same offset and cleans the tail.
        wal.file = writable;
        wal.append(&group(2, 1)).unwrap();
        assert!(wal.wants_checkpoint());
        wal.checkpointed();
        assert!(!wal.has_records());
        let log = std::fs::read(&path).unwrap();
        assert_eq!(spans(&after(groups(&log), 0).unwrap()), [(1, 1), (2, 2)]);
    }
}
