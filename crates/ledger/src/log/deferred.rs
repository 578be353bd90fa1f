//! Checkpoints that do not hold up the groups behind them: the page writes and the
//! `fdatasync` of a checkpoint's durable redb commit run on a thread of their own while the
//! writer goes on committing groups through the write-ahead log (docs/design.md,
//! "Checkpoints").
//!
//! A checkpoint writes every page the groups since the last one changed (megabytes) and syncs
//! the file; done inside a group that takes tens of milliseconds, and every append waiting
//! behind it waits as long. Here the writer [arms](Deferral::arm) the [`Deferral`] around the
//! checkpoint's commit: redb hands over the pages and the header as usual, which are kept in
//! memory in the order given, and its `sync_data` hands them to a thread — which writes them,
//! then syncs — and returns. Until they are on disk, reads of the file see them over what the
//! file holds. Until that sync completes the checkpoint is not relied on: its group, and every
//! group after it, is in the write-ahead log, and the log keeps the records from before it
//! ([`super::wal`] switches to its other file instead of starting over). After a crash the
//! database opens at this checkpoint or, if its writes and sync did not finish, at the one
//! before — the same two outcomes redb has for a crash inside a durable commit — and the log
//! is replayed from there.
//!
//! What redb writes after a deferred checkpoint must not reach the disk before it: redb counts
//! the checkpoint as durable and may reuse pages that only the checkpoint before it still
//! needs. So every write, resize or sync of the file outside a checkpoint waits until the
//! deferred one is done ([`DeferringFile`]); between checkpoints redb writes the file only
//! when its cache overflows, when it grows the file, and for the engine's own durable commits.
//! A deferred write or sync that fails is reported by every later write and sync, and the
//! writer, which [checks](Deferral::failed) before each group, reopens the database, replaying
//! the log.

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Whether syncs are deferred, and the deferred sync in progress; shared by the writer and
/// every opening of the database (a reopen after an I/O error makes a new backend).
#[derive(Debug, Default)]
pub(crate) struct Deferral {
    state: Mutex<State>,
    done: Condvar,
    /// Whether a checkpoint's writes are held ([`State::writes`], [`State::in_flight`]):
    /// reads look at them only then.
    holding: AtomicBool,
}

/// Writes of a checkpoint, in the order redb gave them. One buffer for all their bytes, kept
/// from one checkpoint to the next: fresh memory for every page of every checkpoint cost the
/// writer more in page faults than the copy itself.
#[derive(Debug, Default)]
struct Writes {
    bytes: Vec<u8>,
    /// (offset in the file, start in `bytes`, length) of each write.
    at: Vec<(u64, usize, usize)>,
}

impl Writes {
    fn push(&mut self, offset: u64, data: &[u8]) {
        self.at.push((offset, self.bytes.len(), data.len()));
        self.bytes.extend_from_slice(data);
    }

    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.at.clear();
    }

    /// Each write: (offset in the file, bytes).
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.at
            .iter()
            .map(|&(offset, start, len)| (offset, &self.bytes[start..start + len]))
    }
}

#[derive(Debug, Default)]
struct State {
    /// The writer is committing a checkpoint: its syncs are deferred.
    armed: bool,
    /// A deferred sync is running.
    pending: bool,
    /// The last deferred sync failed (its error); cleared when the database is opened again.
    failed: Option<(io::ErrorKind, String)>,
    /// The armed commit's writes, not handed to a thread yet.
    writes: Writes,
    /// The writes a deferred sync's thread is putting on disk.
    in_flight: Arc<Writes>,
    /// The buffers of the last checkpoint's writes, for the next one.
    spare: Writes,
    /// The file grew since it was last synced and its new length may not be on disk yet:
    /// synced before a header is written (see [`DeferringFile::sync_data`]).
    length_unsynced: bool,
    /// A write outside a checkpoint since the file was last synced.
    written: bool,
    /// The last thing done to the file was growing it (no write or sync since).
    grew_last: bool,
    /// Which opening of the database may write to the file: the latest.
    opening: u64,
}

impl Deferral {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Defers the writes and syncs of the commit that follows (`true`), until disarmed
    /// (`false`).
    pub(crate) fn arm(&self, on: bool) {
        let mut state = self.state();
        state.armed = on;
        if !on && !state.writes.is_empty() && state.failed.is_none() {
            // The commit stopped between its writes and its sync: the file does not have what
            // redb now shows. Held until the database is opened again, which the failure asks
            // for (and which replays the log).
            state.failed = Some((
                io::ErrorKind::Other,
                "a checkpoint's commit stopped before its sync".into(),
            ));
        }
    }

    /// Whether no deferred sync is running.
    pub(crate) fn idle(&self) -> bool {
        !self.state().pending
    }

    /// Waits until no deferred sync is running.
    pub(crate) fn wait_idle(&self) {
        drop(self.settled());
    }

    /// Refuses every further write, resize and sync of the database as it is open now (once
    /// a deferred sync in progress is done), until it is opened again: closing it then writes
    /// nothing, so the commits it made since its last durable one are lost instead of made
    /// durable, as redb makes them when a healthy database closes. The ledger's writer does
    /// this to undo a group committed ahead of a sync that failed.
    pub(crate) fn retire(&self) {
        self.settled().opening += 1;
    }

    /// Whether a deferred sync failed since the database was opened.
    pub(crate) fn failed(&self) -> Option<io::Error> {
        self.state()
            .failed
            .as_ref()
            .map(|(kind, message)| io::Error::new(*kind, message.clone()))
    }

    /// Waits for a deferred sync in progress; returns the state with none running.
    fn settled(&self) -> MutexGuard<'_, State> {
        let mut state = self.state();
        while state.pending {
            state = self
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state
    }
}

impl State {
    /// Whether `opening` may still change the file: not after a deferred write or sync of it
    /// failed, and not once the database was opened again. A later opening replays the log
    /// into the file; an earlier one, still alive in a transaction that has not ended, holds
    /// pages and a header in memory that no longer match it, and writing them would corrupt
    /// the database. (redb refuses every operation of an opening after an I/O error it saw
    /// itself, but a deferred failure reaches it only through the next write or sync.)
    fn usable(&self, opening: u64) -> io::Result<()> {
        if opening != self.opening {
            return Err(io::Error::other(
                "the database was opened again after a storage failure; this earlier opening \
                 of it may no longer change the file",
            ));
        }
        self.failure()
    }

    /// The failure of the last deferred sync, as the error of what is attempted after it.
    fn failure(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("a checkpoint's deferred sync failed: {message}"),
            )),
        }
    }

    /// Lays the held writes that overlap `[offset, offset + out.len())` over `out`, in the
    /// order they were made.
    fn overlay(&self, offset: u64, out: &mut [u8]) {
        let end = offset + out.len() as u64;
        for (at, data) in self.in_flight.iter().chain(self.writes.iter()) {
            let (from, to) = (offset.max(at), end.min(at + data.len() as u64));
            if from < to {
                let into = (from - offset) as usize..(to - offset) as usize;
                let src = (from - at) as usize..(to - at) as usize;
                out[into].copy_from_slice(&data[src]);
            }
        }
    }
}

/// redb's header is at the start of the file, within its first page.
const HEADER_BYTES: u64 = 4096;

/// Most bytes of a checkpoint's pages written back to the disk at a time, before the next.
///
/// A checkpoint's `fdatasync` alone sends all its pages (megabytes) to the disk at once, and
/// a group's sync of the log issued meanwhile waits behind them: on the virtual disk measured,
/// the log's syncs that met a checkpoint took 4–6 ms instead of well under one, and every
/// append in flight waited as long (docs/benchmarks.md, "Tail latency of appends"). Written
/// back a piece at a time, each piece waited for, a log sync waits for one piece at most.
const WRITEBACK_BYTES: u64 = 256 * 1024;

/// Puts `writes` on disk in order, then syncs the file; first syncs the file's length when
/// it grew since its last sync (`length`), since the writes hold a header that may name it.
fn write_and_sync(file: &FileBackend, fd: &File, writes: &Writes, length: bool) -> io::Result<()> {
    if length {
        file.sync_data()?;
    }
    for (offset, data) in writes.iter() {
        file.write(offset, data)?;
    }
    for (start, end) in writeback_ranges(writes, WRITEBACK_BYTES) {
        write_back(fd, start, end)?;
    }
    file.sync_data()
}

/// The ranges of the file that hold `writes`, in file order, each holding about `bytes` of
/// them (a write is not split): what [`write_back`] is given one at a time.
fn writeback_ranges(writes: &Writes, bytes: u64) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = writes
        .at
        .iter()
        .map(|&(offset, _, len)| (offset, offset + len as u64))
        .collect();
    spans.sort_unstable();
    let mut ranges = Vec::new();
    let mut current: Option<(u64, u64, u64)> = None;
    for (start, end) in spans {
        current = match current {
            // A write over the range so far (a page written twice) stays in it.
            Some((from, to, held)) if held < bytes || start < to => {
                Some((from, to.max(end), held + end - start))
            }
            Some((from, to, _)) => {
                ranges.push((from, to));
                Some((start, end, end - start))
            }
            None => Some((start, end, end - start)),
        };
    }
    ranges.extend(current.map(|(from, to, _)| (from, to)));
    ranges
}

/// Writes the dirty pages of `start..end` to the disk and waits until they are written. Not
/// a sync: the disk may still hold them in its cache, and the file's metadata is not written;
/// the `fdatasync` after it does both, with less left to send.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn write_back(fd: &File, start: u64, end: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
        return Ok(());
    };
    // SAFETY: `sync_file_range` reads and writes no memory of this process, and the
    // descriptor is open: `fd` is borrowed for the duration of the call.
    let result = unsafe { libc::sync_file_range(fd.as_raw_fd(), offset, len, flags) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the `fdatasync` after it writes everything at once.
#[cfg(not(target_os = "linux"))]
fn write_back(_fd: &File, _start: u64, _end: u64) -> io::Result<()> {
    Ok(())
}

impl Deferral {
    /// A deferred checkpoint's writes and sync are done, with `result`: its writes are let go
    /// (reads find them in the file now) and waiters are woken.
    fn settle(&self, result: io::Result<()>) {
        let mut state = self.state();
        state.pending = false;
        if let Ok(mut done) = Arc::try_unwrap(std::mem::take(&mut state.in_flight)) {
            done.clear();
            state.spare = done;
        }
        if state.writes.is_empty() {
            self.holding.store(false, Ordering::Release);
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "a checkpoint's deferred writes or sync failed; the database is reopened and the write-ahead log replayed");
            state.failed = Some((e.kind(), e.to_string()));
        }
        drop(state);
        self.done.notify_all();
    }
}

/// The database file, with a checkpoint's writes and sync deferred while the [`Deferral`] is
/// armed.
#[derive(Debug)]
pub(crate) struct DeferringFile {
    file: Arc<FileBackend>,
    /// The same file, for writing a checkpoint's pages back a piece at a time.
    fd: Arc<File>,
    deferral: Arc<Deferral>,
    /// Which opening of the database this is ([`State::usable`]).
    opening: u64,
}

impl DeferringFile {
    /// The file for a new opening of the database: waits for a deferred sync of an earlier
    /// opening and forgets its failure (the opening replays the log over it).
    /// `fd` is the same file as `file` (a duplicate of its descriptor).
    pub(crate) fn new(file: FileBackend, fd: File, deferral: Arc<Deferral>) -> DeferringFile {
        let opening = {
            let mut state = deferral.settled();
            state.opening += 1;
            state.failed = None;
            state.armed = false;
            state.writes.clear();
            state.length_unsynced = false;
            state.written = false;
            state.grew_last = false;
            deferral.holding.store(false, Ordering::Release);
            state.opening
        };
        DeferringFile {
            file: Arc::new(file),
            fd: Arc::new(fd),
            deferral,
            opening,
        }
    }
}

impl StorageBackend for DeferringFile {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        if !self.deferral.holding.load(Ordering::Acquire) {
            return self.file.read(offset, out);
        }
        // Held under the lock, so that the writes cannot land (and be let go) between the read
        // and the overlay.
        let state = self.deferral.state();
        self.file.read(offset, out)?;
        state.overlay(offset, out);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let old = self.file.len()?;
        if len >= old {
            // Growing the file changes none of what a checkpoint in flight writes or what the
            // one before it holds: it need not wait for either. Its new length is synced
            // before a header that may name it is written (`sync_data`).
            self.deferral.state().usable(self.opening)?;
            self.file.set_len(len)?;
            if len > old {
                let mut state = self.deferral.state();
                state.length_unsynced = true;
                state.grew_last = true;
            }
            return Ok(());
        }
        let mut state = self.deferral.settled();
        state.usable(self.opening)?;
        state.grew_last = false;
        if !state.writes.is_empty() {
            // A resize inside a checkpoint: what it wrote so far goes to the file first, so
            // that a shrink cannot be undone by a write beyond the new end.
            if std::mem::take(&mut state.length_unsynced) {
                self.file.sync_data()?;
            }
            state.written = true;
            for (offset, data) in state.writes.iter() {
                self.file.write(offset, data)?;
            }
            state.writes.clear();
            self.deferral.holding.store(false, Ordering::Release);
        }
        drop(state);
        self.file.set_len(len)
    }

    /// The sync redb makes right after growing the file is put off: it is there so that no
    /// header on disk can name a length the file might not have after a crash, and every
    /// header reaches the file through [`write`](Self::write) or a checkpoint's thread, which
    /// sync the new length first. Done here, that sync would wait on the writer for a
    /// checkpoint in flight and for the file system's journal (13–34 ms in runs measured,
    /// docs/benchmarks.md, "Tail latency of appends"); inside a checkpoint's commit it would
    /// also take the checkpoint's one deferred sync, leaving the commit's pages to be written
    /// and synced on the writer. Outside a checkpoint it is put off only when nothing was
    /// written since the last sync, so that it still makes earlier writes durable.
    fn sync_data(&self) -> Result<(), io::Error> {
        {
            let mut state = self.deferral.state();
            state.usable(self.opening)?;
            if state.grew_last && (state.armed || !state.written) {
                state.grew_last = false;
                return Ok(());
            }
        }
        let mut state = self.deferral.settled();
        state.usable(self.opening)?;
        if !state.armed {
            let length = std::mem::take(&mut state.length_unsynced);
            let written = std::mem::take(&mut state.written);
            state.grew_last = false;
            drop(state);
            let synced = self.file.sync_data();
            if synced.is_err() {
                let mut state = self.deferral.state();
                state.length_unsynced |= length;
                state.written |= written;
            }
            return synced;
        }
        state.pending = true;
        // One sync per arming: what redb writes after it in the same commit (a header it
        // sets again, say) waits for it like any later write.
        state.armed = false;
        // The thread syncs a grown length before it writes the header, and its sync covers
        // the writes made before the checkpoint.
        let length = std::mem::take(&mut state.length_unsynced);
        state.written = false;
        state.grew_last = false;
        let writes = Arc::new(std::mem::take(&mut state.writes));
        state.in_flight = writes.clone();
        drop(state);
        let file = self.file.clone();
        let fd = self.fd.clone();
        let deferral = self.deferral.clone();
        let spawn = move || {
            std::thread::Builder::new()
                .name("loom-checkpoint-sync".into())
                .spawn(move || {
                    let written = write_and_sync(&file, &fd, &writes, length);
                    // Given back first, so that `settle` can keep the buffers for the next one.
                    drop(writes);
                    deferral.settle(written);
                })
        };
        // Its writes take CPU: not on the one CPU the writer may be placed on.
        let spawned = super::on_every_cpu(spawn);
        if let Err(e) = spawned {
            // No thread to defer to: write and sync here.
            tracing::warn!(error = %e, "no thread for a checkpoint's writes and sync; doing them in the writer");
            let writes = self.deferral.state().in_flight.clone();
            let written = write_and_sync(&self.file, &self.fd, &writes, length);
            let failed = written
                .as_ref()
                .err()
                .map(|e| io::Error::new(e.kind(), e.to_string()));
            self.deferral.settle(written);
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.deferral.settled();
        state.usable(self.opening)?;
        state.grew_last = false;
        if !state.armed {
            // A header may name the length the file grew to: that length reaches the disk
            // first.
            let length = offset < HEADER_BYTES && state.length_unsynced;
            state.length_unsynced &= !length;
            state.written = true;
            drop(state);
            if length && let Err(e) = self.file.sync_data() {
                self.deferral.state().length_unsynced = true;
                return Err(e);
            }
            return self.file.write(offset, data);
        }
        if state.writes.is_empty() {
            state.writes = std::mem::take(&mut state.spare);
        }
        state.writes.push(offset, data);
        self.deferral.holding.store(true, Ordering::Release);
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        self.deferral.wait_idle();
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests;
