//! The write-ahead log: what makes a group commit durable (docs/design.md, "Write-ahead log").
//!
//! The writer applies a group to redb in a transaction that commits with `Durability::None`
//! (visible, not yet on disk), and before that commit appends the group's accepted events to
//! the log as one record and `fdatasync`s it: one sequential write instead of the ~100
//! scattered pages a durable redb commit of the same group writes. Every
//! [`wal_checkpoint_bytes`](crate::LedgerOptions::wal_checkpoint_bytes) or so of log, one group
//! also commits with `Durability::Immediate` (a checkpoint: everything up to it is in the redb
//! file once its sync completes), and the log moves on to its other file, overwriting it from
//! the start.
//!
//! The log is two files, [`WAL_FILES`], used in turn, so that a checkpoint's sync can run
//! beside the groups after it ([`super::deferred`]): until that sync completes, the file the
//! log left holds what the database may not have on disk yet, and the log does not come back
//! to it before the sync is done. A replay reads both.
//!
//! Whenever the database is opened (at start and after an I/O error) the records that redb
//! does not hold yet are applied again and committed durably (`writer::replay`) before anyone
//! reads. That needs room in the redb file, also when the disk is full (a full disk is what
//! makes redb fail and the ledger reopen it): a [`Reserve`] file of allocated space sits
//! beside the log, is given back for such a replay, and while it cannot be allocated again
//! appends are refused as "disk full" before they touch anything.
//!
//! Each file is a sequence of group records ([`super::group`]). After a restart at offset 0 a
//! file still holds older records further on; they are told apart by their positions, which
//! are all below the database's durable head, and a torn or overwritten record by its
//! checksum.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::awake::Awake;
use super::deferred::Deferral;
use super::group::{GroupRecord, LoggedGroup, RECORD_HEADER, after, groups};
use super::syncer::Syncer;
use super::{DurableLog, LogEnd, LogReplay};
use crate::error::StorageError;

/// File name of the log inside the data directory (its first file).
pub const WAL_FILE: &str = "ledger.wal";
/// File names of the log's two files inside the data directory (the first is [`WAL_FILE`]).
pub const WAL_FILES: [&str; 2] = [WAL_FILE, "ledger.wal.1"];
pub use super::reserve::RESERVE_FILE;
pub(crate) use super::reserve::Reserve;

/// The open log and where the next record goes.
pub(crate) struct Wal {
    files: [File; 2],
    /// The file the next record goes to.
    current: usize,
    reserve: Arc<Reserve>,
    offset: u64,
    checkpoint_bytes: u64,
    /// The last append failed, so the bytes at `offset` may hold a whole record of a group
    /// that was refused (the write can have completed before its fsync failed). Until an
    /// append overwrites them the log must not start over: after a restart they could be
    /// read back behind newer records, with positions those records reuse.
    tail_dirty: bool,
    /// The deferred sync of the last checkpoint (see [`super::deferred`]).
    deferral: Arc<Deferral>,
    /// The thread that writes and syncs a record while the writer goes on
    /// ([`DurableLog::begin`]).
    syncer: Syncer,
    /// The lengths of the records handed to the sync thread and not finished yet, oldest
    /// first: at most two, the second planned on the first ([`DurableLog::begin_behind`]).
    in_flight: std::collections::VecDeque<u64>,
    /// Where the writer and the sync thread run, on a disk that completes on one CPU.
    #[cfg(target_os = "linux")]
    placement: Option<super::placement::Placement>,
}

impl Wal {
    /// Zeroes the header of the record at the offset (a zeroed header ends a replay there).
    fn take_back(&self) -> std::io::Result<()> {
        let file = &self.files[self.current];
        file.write_all_at(&[0u8; RECORD_HEADER], self.offset)
            .and_then(|()| file.sync_data())
    }

    /// Opens (creating if needed) the log's files `paths`; the next record goes to `start`:
    /// right after the last record that opening the database replayed, or the start of the
    /// first file if it replayed none.
    pub(crate) fn open(
        paths: [&Path; 2],
        start: LogEnd,
        checkpoint_bytes: u64,
        reserve: Arc<Reserve>,
        deferral: Arc<Deferral>,
        awake: Option<Awake>,
    ) -> std::io::Result<Wal> {
        let open = |path: &Path| -> std::io::Result<File> {
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
            Ok(file)
        };
        let files = [open(paths[0])?, open(paths[1])?];
        // The reading thread goes where the sync thread goes: it too waits for the disk.
        #[cfg(target_os = "linux")]
        let reader = awake.as_ref().map(|a| a.thread);
        let syncer = Syncer::start([files[0].try_clone()?, files[1].try_clone()?], awake)?;
        #[cfg(target_os = "linux")]
        let placement = super::placement::Placement::for_file(
            paths[0],
            std::iter::once(syncer.thread).chain(reader).collect(),
        );
        Ok(Wal {
            #[cfg(target_os = "linux")]
            placement,
            syncer,
            files,
            current: start.file.min(1),
            reserve,
            offset: start.offset,
            checkpoint_bytes,
            tail_dirty: false,
            deferral,
            in_flight: std::collections::VecDeque::with_capacity(2),
        })
    }
}

impl Wal {
    /// Hands a record to the sync thread, to go right after the records in flight.
    fn hand_over(&mut self, group: &GroupRecord, behind: bool) -> std::io::Result<()> {
        let at = self.offset + self.in_flight.iter().sum::<u64>();
        let job = (self.current, at, group.bytes().to_vec(), behind);
        if !self.syncer.hand_over(job) {
            // Not while the log is open: the thread ends when the log is dropped.
            return Err(std::io::Error::other(
                "the write-ahead log's sync thread stopped",
            ));
        }
        self.in_flight.push_back(group.bytes().len() as u64);
        Ok(())
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
    fn group_committed(&mut self, _appends: usize) {
        #[cfg(target_os = "linux")]
        if let Some(placement) = self.placement.as_mut() {
            placement.group_committed(_appends);
        }
    }

    /// Whether the next group should commit durably to redb (and the log move to its other
    /// file): not before the last checkpoint's sync is done, since that file still holds
    /// what the checkpoint covers.
    fn wants_checkpoint(&self) -> bool {
        self.offset >= self.checkpoint_bytes
            && self.in_flight.is_empty()
            && !self.tail_dirty
            && self.deferral.idle()
            && self.deferral.failed().is_none()
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
        debug_assert!(self.in_flight.is_empty(), "records are finished in order");
        let file = &self.files[self.current];
        let written = file
            .write_all_at(group.bytes(), self.offset)
            .and_then(|()| file.sync_data());
        self.tail_dirty = written.is_err();
        written?;
        self.offset += group.bytes().len() as u64;
        Ok(())
    }

    fn begin(&mut self, group: &GroupRecord) -> std::io::Result<()> {
        debug_assert!(self.in_flight.is_empty(), "records are finished in order");
        self.hand_over(group, false)
    }

    /// Only behind one record, not when a checkpoint is due once it is done (the checkpoint
    /// moves the log to its other file, which it must not do under a record in flight), and
    /// not after a checkpoint's sync failed (the next group reopens the database first).
    fn may_begin_behind(&self) -> bool {
        matches!(self.in_flight.front(), Some(&len) if self.in_flight.len() == 1
            && !self.tail_dirty
            && self.deferral.failed().is_none()
            && self.offset + len < self.checkpoint_bytes)
    }

    fn begin_behind(&mut self, group: &GroupRecord) -> std::io::Result<()> {
        debug_assert!(self.may_begin_behind());
        self.hand_over(group, true)
    }

    fn pending(&self) -> usize {
        self.in_flight.len()
    }

    fn finish(&mut self, applied: bool) -> std::io::Result<()> {
        let Some(len) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let written = self.syncer.wait();
        if let Err(e) = written {
            // The record may have reached the disk in part or whole all the same: taken back
            // too, so that the reopen that undoes a group committed ahead of its sync, or a
            // restart, does not replay it. The tail stays marked dirty either way.
            self.tail_dirty = true;
            let _ = self.take_back();
            return Err(e);
        }
        self.tail_dirty = false;
        if applied {
            self.offset += len;
        } else {
            // The group fails, but its record is durable: take it back, so that no replay
            // applies what its callers were told failed. If that fails too, the record may be
            // replayed, as after a failed commit.
            self.tail_dirty = self.take_back().is_err();
        }
        Ok(())
    }

    /// After a durable redb commit that holds everything logged so far (its sync done): the
    /// next record goes to the start of the current file (not while a failed append's bytes
    /// are still at the offset).
    fn checkpointed(&mut self) {
        if !self.tail_dirty {
            self.offset = 0;
        }
    }

    fn deferral(&self) -> Option<&Deferral> {
        Some(&self.deferral)
    }

    /// After a checkpoint whose sync is still running: the next record goes to the start of
    /// the other file, and this one is kept until the sync is done.
    fn checkpoint_deferred(&mut self) {
        if !self.tail_dirty {
            self.current = 1 - self.current;
            self.offset = 0;
        }
    }

    /// Whether records were appended since the last restart, or a checkpoint's sync is still
    /// running.
    fn has_records(&self) -> bool {
        self.offset > 0 || !self.deferral.idle()
    }
}

/// The log's files read back for a replay.
#[derive(Debug)]
pub(crate) struct WalFiles<'p>(pub(crate) [&'p Path; 2]);

impl LogReplay for WalFiles<'_> {
    fn replay_after(
        &self,
        head: u64,
        apply: &mut dyn FnMut(&LoggedGroup<'_>) -> Result<(), StorageError>,
    ) -> Result<Option<LogEnd>, StorageError> {
        let mut logs = Vec::with_capacity(2);
        for path in self.0 {
            match std::fs::read(path) {
                Ok(log) => logs.push(log),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => logs.push(Vec::new()),
                Err(e) => return Err(StorageError(Box::new(redb::Error::Io(e)))),
            }
        }
        // Both files' records in position order, each with the file it came from.
        let mut records: Vec<(usize, LoggedGroup<'_>)> = logs
            .iter()
            .enumerate()
            .flat_map(|(file, log)| groups(log).into_iter().map(move |g| (file, g)))
            .collect();
        records.sort_by_key(|(_, g)| g.first);
        let (files, records): (Vec<usize>, Vec<LoggedGroup<'_>>) = records.into_iter().unzip();
        let firsts: Vec<u64> = records.iter().map(|g| g.first).collect();
        let found = after(records, head)
            .map_err(|message| StorageError(Box::new(redb::Error::Corrupted(message))))?;
        for group in &found {
            apply(group)?;
        }
        Ok(found.last().map(|g| {
            let i = firsts
                .iter()
                .position(|f| *f == g.first)
                .expect("a record read");
            LogEnd {
                file: files[i],
                offset: g.end,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::group::tests::{group, spans};
    use crate::log::group::{after, groups};

    /// A log in `dir` that wants a checkpoint after every byte, with a small reserve.
    fn small_log(dir: &Path) -> Wal {
        let reserve = Arc::new(Reserve::new(dir.join(RESERVE_FILE), 4096));
        open_in(dir, LogEnd::default(), 1, reserve)
    }

    fn open_in(dir: &Path, start: LogEnd, checkpoint_bytes: u64, reserve: Arc<Reserve>) -> Wal {
        let paths = WAL_FILES.map(|name| dir.join(name));
        Wal::open(
            [&paths[0], &paths[1]],
            start,
            checkpoint_bytes,
            reserve,
            Arc::default(),
            None,
        )
        .unwrap()
    }

    /// The records of the log's file `i` in `dir` beyond `head`.
    fn spans_in(dir: &Path, i: usize, head: u64) -> Vec<(u64, u64)> {
        let log = std::fs::read(dir.join(WAL_FILES[i])).unwrap();
        spans(&after(groups(&log), head).unwrap())
    }

    /// What a replay of both files in `dir` applies beyond `head`, and where the log goes on.
    fn replayed(dir: &Path, head: u64) -> (Vec<(u64, u64)>, Option<LogEnd>) {
        let paths = WAL_FILES.map(|name| dir.join(name));
        let mut applied = Vec::new();
        let end = WalFiles([&paths[0], &paths[1]])
            .replay_after(head, &mut |g| {
                applied.push((g.first, g.last()));
                Ok(())
            })
            .unwrap();
        (applied, end)
    }

    #[test]
    fn appends_land_at_the_offset_and_restart_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = small_log(dir.path());
        wal.ready().unwrap();
        assert!(!wal.wants_checkpoint());
        for first in [1, 3] {
            wal.append(&group(first, 2)).unwrap();
        }
        assert!(wal.wants_checkpoint());
        assert_eq!(spans_in(dir.path(), 0, 0), [(1, 2), (3, 4)]);
        wal.checkpointed();
        wal.append(&group(5, 1)).unwrap();
        assert_eq!(spans_in(dir.path(), 0, 4), [(5, 5)]);
    }

    #[test]
    fn a_deferred_checkpoint_moves_the_log_to_its_other_file_and_a_replay_reads_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = small_log(dir.path());
        wal.append(&group(1, 2)).unwrap();
        wal.append(&group(3, 2)).unwrap();
        wal.checkpoint_deferred();
        wal.append(&group(5, 1)).unwrap();
        assert_eq!(spans_in(dir.path(), 0, 0), [(1, 2), (3, 4)]);
        assert_eq!(spans_in(dir.path(), 1, 4), [(5, 5)]);
        // A crash before the checkpoint's sync finished opens the database at an older
        // checkpoint: the replay takes the first file's records, then the second's.
        let (applied, end) = replayed(dir.path(), 0);
        assert_eq!(applied, [(1, 2), (3, 4), (5, 5)]);
        assert_eq!(end.unwrap().file, 1);
        // Its sync finished: only what followed it.
        assert_eq!(replayed(dir.path(), 4).0, [(5, 5)]);
        // The next checkpoint comes back to the first file, whose older records now end
        // behind the new ones and are skipped.
        wal.checkpoint_deferred();
        wal.append(&group(6, 1)).unwrap();
        let (applied, end) = replayed(dir.path(), 5);
        assert_eq!(applied, [(6, 6)]);
        assert_eq!(
            end.unwrap(),
            LogEnd {
                file: 0,
                offset: group(6, 1).bytes().len() as u64
            }
        );
        // A gap is an error, whichever file the records are in.
        assert!(
            WalFiles(
                WAL_FILES
                    .map(|n| dir.path().join(n))
                    .each_ref()
                    .map(|p| p.as_path())
            )
            .replay_after(2, &mut |_| Ok(()))
            .is_err()
        );
    }

    #[test]
    fn a_begun_record_syncs_beside_other_work_and_is_taken_back_if_that_work_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = small_log(dir.path());
        wal.begin(&group(1, 2)).unwrap();
        assert_eq!(wal.pending(), 1);
        wal.finish(true).unwrap();
        assert_eq!(wal.pending(), 0);
        assert_eq!(replayed(dir.path(), 0).0, [(1, 2)]);
        // The work beside it fails after the record was synced: the record is taken back.
        wal.begin(&group(3, 1)).unwrap();
        wal.finish(false).unwrap();
        assert_eq!(replayed(dir.path(), 0).0, [(1, 2)], "not replayed");
        assert!(!wal.tail_dirty);
        // The next record goes where it was.
        wal.begin(&group(3, 2)).unwrap();
        wal.finish(true).unwrap();
        assert_eq!(replayed(dir.path(), 0).0, [(1, 2), (3, 4)]);
    }

    #[test]
    fn a_record_behind_another_goes_right_after_it_and_is_taken_back_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Arc::new(Reserve::new(dir.path().join(RESERVE_FILE), 4096));
        let mut wal = open_in(dir.path(), LogEnd::default(), 64 << 10, reserve);
        wal.begin(&group(1, 2)).unwrap();
        assert!(wal.may_begin_behind());
        wal.begin_behind(&group(3, 1)).unwrap();
        assert!(!wal.may_begin_behind(), "one record behind at most");
        assert!(
            !wal.wants_checkpoint(),
            "no checkpoint under records in flight"
        );
        wal.finish(true).unwrap();
        wal.finish(true).unwrap();
        assert_eq!(replayed(dir.path(), 0).0, [(1, 2), (3, 3)]);
        // A group behind that does not commit: its record alone is taken back.
        wal.begin(&group(4, 1)).unwrap();
        wal.begin_behind(&group(5, 1)).unwrap();
        wal.finish(true).unwrap();
        wal.finish(false).unwrap();
        assert_eq!(replayed(dir.path(), 0).0, [(1, 2), (3, 3), (4, 4)]);
        wal.begin(&group(5, 2)).unwrap();
        wal.finish(true).unwrap();
        assert_eq!(replayed(dir.path(), 0).0, [(1, 2), (3, 3), (4, 4), (5, 6)]);
    }

    #[test]
    fn the_log_is_filled_at_open_so_that_appends_do_not_grow_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let reserve = Arc::new(Reserve::new(dir.path().join(RESERVE_FILE), 4096));
        let mut wal = open_in(dir.path(), LogEnd::default(), 64 << 10, reserve.clone());
        for name in WAL_FILES {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!(meta.len(), 80 << 10);
            assert!(meta.blocks() * 512 >= 80 << 10, "written, not sparse");
        }
        let path = dir.path().join(WAL_FILE);
        for first in [1, 3] {
            wal.append(&group(first, 2)).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 80 << 10);
        assert_eq!(spans_in(dir.path(), 0, 0), [(1, 2), (3, 4)]);
        // Opened again where the records end: they stay, the filling is not redone.
        let end = LogEnd {
            file: 0,
            offset: wal.offset,
        };
        drop(wal);
        let mut wal = open_in(dir.path(), end, 64 << 10, reserve);
        wal.append(&group(5, 1)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 80 << 10);
        assert_eq!(spans_in(dir.path(), 0, 0), [(1, 2), (3, 4), (5, 5)]);
    }

    #[test]
    fn after_a_failed_append_the_log_does_not_start_over_until_it_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WAL_FILE);
        let mut wal = small_log(dir.path());
        wal.append(&group(1, 1)).unwrap();
        // The file goes read-only under the log: the next append fails.
        let writable = std::mem::replace(&mut wal.files[0], File::open(&path).unwrap());
        assert!(wal.append(&group(2, 1)).is_err());
        assert!(!wal.wants_checkpoint(), "no checkpoint over a dirty tail");
        wal.checkpointed();
        wal.checkpoint_deferred();
        assert!(wal.has_records(), "no restart over a dirty tail");
        assert_eq!(
            wal.current, 0,
            "no move to the other file over a dirty tail"
        );
        // The next append goes to the same offset and cleans the tail.
        wal.files[0] = writable;
        wal.append(&group(2, 1)).unwrap();
        assert!(wal.wants_checkpoint());
        wal.checkpointed();
        assert!(!wal.has_records());
        assert_eq!(spans_in(dir.path(), 0, 0), [(1, 1), (2, 2)]);
    }
}
