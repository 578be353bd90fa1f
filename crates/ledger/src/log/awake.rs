//! Keeping a virtual disk awake between the log's syncs while the next one is near.
//!
//! On the virtual machines measured (a virtio disk), a sync that reaches the disk less than
//! a few tens of microseconds after its last request completed takes ~40 µs, and one that
//! reaches it later takes three to ten times as long, however busy the CPUs are: the host
//! stops watching an idle disk's queue and has to be woken by the next request
//! (docs/benchmarks/write-path.md, "Keeping the disk awake"). A write path whose syncs come
//! every ~100 µs — one HTTP client, a few writers — paid that on about half of them, where
//! an in-process writer, whose next sync follows within ~20 µs, did not.
//!
//! So while the next sync is expected soon, a thread of its own keeps one small read in
//! flight: a block of a file of its own ([`AWAKE_FILE`], written once, never dirty in the
//! page cache) read with `O_DIRECT`, so that each read reaches the disk. It reads only:
//!
//! - from the end of a sync until the next one starts, and for at most twice the recent
//!   gaps between syncs;
//! - while most recent gaps were between [`MIN_GAP`] (syncs that close keep the disk awake
//!   by themselves) and [`MAX_GAP`] (a ledger appended to less often than that is left
//!   idle: no reads at all).
//!
//! It is [on](KeepAwake::On) by default where the log's disk is a virtio disk
//! ([`KeepAwake::Auto`]); elsewhere it has not been measured, and a disk whose reads delay
//! its flushes (a SATA disk's cache flush waits for the reads queued before it) would lose.
//! The reads cost the disk one read of 512 bytes (4 KiB on a disk with 4 KiB blocks) per
//! ~20–30 µs of a gap, counted in [`LedgerStats::disk_awake_reads`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::ledger::LedgerStats;

/// File name of the block read to keep the disk awake, inside the data directory.
pub const AWAKE_FILE: &str = "ledger.awake";

/// Whether the log keeps its disk awake between syncs ([`LedgerOptions::keep_disk_awake`](crate::LedgerOptions::keep_disk_awake)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepAwake {
    /// Where the log's disk is a virtio disk (a virtual machine's), the disk this was
    /// measured on.
    #[default]
    Auto,
    /// On any disk that takes `O_DIRECT` reads.
    On,
    /// Never.
    Off,
}

/// Size of the file read ([`AWAKE_FILE`]): a multiple of every disk's logical block size, as
/// `O_DIRECT` needs.
const FILE_BYTES: usize = 4096;
/// The sizes of read tried, smallest first: a disk with 512-byte logical blocks takes the
/// first, one with 4 KiB blocks only the second.
const READ_BYTES: [usize; 2] = [512, 4096];
/// Gaps between syncs shorter than this keep the disk awake by themselves, and a read in
/// flight when the next sync comes would only delay it (docs/benchmarks/write-path.md).
const MIN_GAP: Duration = Duration::from_micros(40);
/// Gaps between syncs longer than this: the ledger is not busy enough to keep the disk
/// awake for.
const MAX_GAP: Duration = Duration::from_micros(500);

/// What the sync thread and the reading thread share.
#[derive(Debug)]
struct Shared {
    /// The clock that `until` counts from.
    base: Instant,
    /// A sync is in progress: it keeps the disk busy itself.
    syncing: AtomicBool,
    /// Read until then (nanoseconds since `base`).
    until: AtomicU64,
    stop: AtomicBool,
    stats: Arc<LedgerStats>,
}

/// The sync thread's side: tells the reading thread when syncs start and end.
#[derive(Debug)]
pub(crate) struct Awake {
    shared: Arc<Shared>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// The reading thread's id, for placing it with the sync thread.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(super) thread: super::ThreadId,
    /// When the last sync ended.
    last_end: Option<Instant>,
    /// The recent gaps between syncs.
    gaps: Gaps,
}

impl Awake {
    /// Starts keeping the disk of the data directory `dir` awake, if `mode` asks for it and
    /// the disk takes `O_DIRECT` reads; `None` otherwise (and on any error: the log works the
    /// same without).
    pub(crate) fn start(dir: &Path, mode: KeepAwake, stats: Arc<LedgerStats>) -> Option<Awake> {
        let wanted = match mode {
            KeepAwake::Off => false,
            KeepAwake::On => true,
            KeepAwake::Auto => on_virtio_disk(dir),
        };
        if !wanted {
            return None;
        }
        let block = match Block::open(&dir.join(AWAKE_FILE)) {
            Ok(block) => block,
            Err(e) => {
                tracing::debug!(error = %e, "the log's disk is not kept awake between syncs (no O_DIRECT read)");
                return None;
            }
        };
        let shared = Arc::new(Shared {
            base: Instant::now(),
            syncing: AtomicBool::new(false),
            until: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stats,
        });
        let reading = shared.clone();
        let (reader, thread) =
            super::spawn_placeable("loom-wal-awake", move || read_while_wanted(block, &reading))
                .ok()?;
        tracing::info!("the log's disk is kept awake between syncs that come close together");
        Some(Awake {
            shared,
            reader: Some(reader),
            thread,
            last_end: None,
            gaps: Gaps::default(),
        })
    }

    /// A sync starts: no reads until it ends.
    pub(crate) fn sync_starts(&mut self) {
        self.starts_at(Instant::now());
    }

    /// A sync ended: read until the next one starts, for up to twice the recent gaps, when
    /// those are neither so short that the syncs keep the disk awake nor so long that the
    /// ledger is idle.
    pub(crate) fn sync_ended(&mut self) {
        self.ended_at(Instant::now());
    }

    /// [`Self::sync_starts`] at `now`.
    fn starts_at(&mut self, now: Instant) {
        self.shared.syncing.store(true, Ordering::Release);
        if let Some(end) = self.last_end {
            self.gaps.add(now.saturating_duration_since(end));
        }
    }

    /// [`Self::sync_ended`] at `now`.
    fn ended_at(&mut self, now: Instant) {
        self.last_end = Some(now);
        self.shared.syncing.store(false, Ordering::Release);
        let window = self.gaps.window();
        if window.is_zero() {
            return;
        }
        let until = (now + window)
            .saturating_duration_since(self.shared.base)
            .as_nanos() as u64;
        self.shared.until.store(until, Ordering::Release);
        if let Some(reader) = &self.reader {
            reader.thread().unpark();
        }
    }
}

impl Drop for Awake {
    /// Stops the reading thread and waits for it (at most one read).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(reader) = self.reader.take() {
            reader.thread().unpark();
            let _ = reader.join();
        }
    }
}

/// What the recent gaps between syncs say about the next one. A mean of the gaps would not
/// do: an in-process writer's gaps are ~20 µs with a pause of a millisecond now and then,
/// which alone would pull a mean over [`MIN_GAP`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Gaps {
    /// Moving share of the gaps within [`MIN_GAP`]..[`MAX_GAP`], in 256ths (the last eight
    /// or so count).
    within: u32,
    /// Moving average of those gaps, nanoseconds (0 before the first).
    typical: u64,
}

impl Gaps {
    fn add(&mut self, gap: Duration) {
        let within = (MIN_GAP..MAX_GAP).contains(&gap);
        self.within = (self.within * 7 + if within { 256 } else { 0 }) / 8;
        if within {
            let gap = gap.as_nanos() as u64;
            self.typical = match self.typical {
                0 => gap,
                typical => (typical * 7 + gap) / 8,
            };
        }
    }

    /// How long to read after a sync: twice the typical gap (at most [`MAX_GAP`]) while most
    /// recent gaps were within bounds; nothing otherwise.
    fn window(&self) -> Duration {
        if self.within < 128 {
            return Duration::ZERO;
        }
        (2 * Duration::from_nanos(self.typical)).min(MAX_GAP)
    }
}

/// The reading thread: one read at a time while wanted, asleep otherwise.
fn read_while_wanted(mut block: Block, shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let now = shared.base.elapsed().as_nanos() as u64;
        if !shared.syncing.load(Ordering::Acquire) && now < shared.until.load(Ordering::Acquire) {
            if let Err(e) = block.read() {
                tracing::debug!(error = %e, "the log's disk is no longer kept awake");
                return;
            }
            shared
                .stats
                .disk_awake_reads
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // Woken by the end of a sync; the timeout only bounds a missed wake-up.
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// The start of [`AWAKE_FILE`], read with `O_DIRECT`.
#[derive(Debug)]
struct Block {
    file: File,
    /// Room for an aligned read, as `O_DIRECT` needs: `FILE_BYTES` from `start`.
    buffer: Vec<u8>,
    start: usize,
    /// Bytes read each time: the smallest of [`READ_BYTES`] the disk takes.
    len: usize,
}

impl Block {
    /// Opens the file for `O_DIRECT` reads, writing and syncing it first if it is not whole
    /// (it is never written again, so it is never dirty in the page cache, where an
    /// `O_DIRECT` read would first write it back), and finds the smallest read it takes.
    fn open(path: &Path) -> std::io::Result<Block> {
        if std::fs::metadata(path).map_or(0, |m| m.len()) < FILE_BYTES as u64 {
            let file = File::create(path)?;
            file.write_all_at(&[0u8; FILE_BYTES], 0)?;
            file.sync_all()?;
        }
        let file = open_direct(path)?;
        let buffer = vec![0u8; 2 * FILE_BYTES];
        let start = buffer.as_ptr().align_offset(FILE_BYTES);
        let mut block = Block {
            file,
            buffer,
            start,
            len: 0,
        };
        let mut refused = None;
        for len in READ_BYTES {
            block.len = len;
            match block.read() {
                Ok(()) => return Ok(block),
                Err(e) => refused = Some(e),
            }
        }
        Err(refused.expect("a read was tried"))
    }

    fn read(&mut self) -> std::io::Result<()> {
        let buffer = &mut self.buffer[self.start..self.start + self.len];
        self.file.read_exact_at(buffer, 0)
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<File> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "O_DIRECT reads are used on Linux only",
    ))
}

/// Whether the file system holding `dir` is on a virtio disk.
#[cfg(not(target_os = "linux"))]
fn on_virtio_disk(_dir: &Path) -> bool {
    false
}

/// Whether the file system holding `dir` is on a virtio disk.
#[cfg(target_os = "linux")]
fn on_virtio_disk(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return false;
    };
    let dev = meta.dev();
    virtio_disk(
        Path::new("/sys"),
        (rustix::fs::major(dev), rustix::fs::minor(dev)),
    )
}

/// Whether the block device `device` (major, minor), or the disk it is a partition of, is
/// driven by `virtio_blk`, read from `sys` (sysfs).
#[cfg(target_os = "linux")]
fn virtio_disk(sys: &Path, device: (u32, u32)) -> bool {
    let Some(disk) = super::placement::disk_of(sys, device) else {
        return false;
    };
    std::fs::canonicalize(disk.join("device/driver"))
        .ok()
        .and_then(|driver| Some(driver.file_name()?.to_str()? == "virtio_blk"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests;
