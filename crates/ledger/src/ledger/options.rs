//! How a ledger is tuned, what it counts, and how a read is bounded.

use super::*;

/// Tuning of a ledger.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    /// Most events one group commit takes from the queue.
    pub max_group_events: usize,
    /// Pending appends the queue holds before callers wait (back-pressure).
    pub queue_capacity: usize,
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// How much write-ahead log (bytes) is written before a group commits durably to the redb
    /// file itself and the log starts over (docs/design.md, "Write-ahead log"). Larger means
    /// fewer checkpoints and a longer replay after a crash.
    pub wal_checkpoint_bytes: u64,
    /// Most events packed into one segment of the stored history (docs/design.md,
    /// "Segments"); a segment also ends before it would pass 16 KiB. Lower values make scans
    /// slower and exist for tests of segment boundaries.
    pub segment_events: usize,
    /// Whether the write-ahead log keeps its disk awake between syncs that come close
    /// together, with small reads of a file of its own ([`AWAKE_FILE`](crate::AWAKE_FILE));
    /// by default where the disk is a virtio disk (docs/design.md, "Write-ahead log").
    pub keep_disk_awake: KeepAwake,
}

impl LedgerOptions {
    /// Disk space kept allocated beside the log (`ledger.reserve`) so that replaying the log
    /// finds room in the redb file even on a full disk: four times the checkpoint interval,
    /// at least 256 KiB.
    pub fn wal_reserve_bytes(&self) -> u64 {
        self.wal_checkpoint_bytes.saturating_mul(4).max(256 << 10)
    }

    /// [`LedgerOptions::segment_events`], at least 1.
    pub(crate) fn segment_events(&self) -> usize {
        self.segment_events.clamp(1, records::SEGMENT_EVENTS_MAX)
    }
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            max_group_events: 20_000,
            queue_capacity: 8_192,
            cache_bytes: 256 * 1024 * 1024,
            wal_checkpoint_bytes: 2 * 1024 * 1024,
            segment_events: records::SEGMENT_EVENTS,
            keep_disk_awake: KeepAwake::Auto,
        }
    }
}

/// Counters of the writer, for metrics.
#[derive(Debug, Default)]
pub struct LedgerStats {
    /// Group commits done (each durable: in the write-ahead log, or in the database file at a
    /// checkpoint).
    pub commits: AtomicU64,
    /// Appends acknowledged (including idempotent duplicates).
    pub appends: AtomicU64,
    /// Appends refused (conditions, identity).
    pub conflicts: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
    /// Commit latency histogram: counts per bucket of [`LedgerStats::COMMIT_BUCKETS_MICROS`],
    /// the last slot counting everything slower.
    pub commit_micros: [AtomicU64; 13],
    /// Sum of commit latencies, microseconds.
    pub commit_micros_sum: AtomicU64,
    /// Times an async append found the queue full and waited for room (back-pressure).
    pub queue_full_waits: AtomicU64,
    /// Groups planned while the group before them was being synced, their record written
    /// right behind its record, that committed.
    pub groups_behind: AtomicU64,
    /// Groups answered once their record was synced, before their transaction committed:
    /// left open for the groups after them, which share its commit.
    pub groups_sharing_a_commit: AtomicU64,
    /// Commits of such transactions, each serving one or more of the groups counted in
    /// [`Self::groups_sharing_a_commit`].
    pub shared_commits: AtomicU64,
    /// Write-ahead log checkpoints: durable commits of the database file that hold every
    /// group before them, after which the log moved on to its other file.
    pub checkpoints: AtomicU64,
    /// Time the writer spent in checkpoints, microseconds: what holds up the groups queued
    /// behind one (redb writing the pages it buffered; the sync runs beside the next groups).
    pub checkpoint_micros_sum: AtomicU64,
    /// Reads of one block made to keep the log's disk awake between syncs
    /// ([`LedgerOptions::keep_disk_awake`]).
    pub disk_awake_reads: AtomicU64,
}

impl LedgerStats {
    /// Upper bounds (inclusive, µs) of the commit latency buckets.
    pub const COMMIT_BUCKETS_MICROS: [u64; 12] = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    ];

    pub(crate) fn record_checkpoint(&self, micros: u64) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.checkpoint_micros_sum
            .fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn record_commit(&self, micros: u64) {
        let slot = Self::COMMIT_BUCKETS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(Self::COMMIT_BUCKETS_MICROS.len());
        self.commit_micros[slot].fetch_add(1, Ordering::Relaxed);
        self.commit_micros_sum.fetch_add(micros, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Options of a read by position or selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only positions greater than this (forwards: where to start).
    pub after: u64,
    /// Only positions smaller than this (backwards: where to start); `None`: no bound.
    pub before: Option<u64>,
    /// Most events to return.
    pub limit: usize,
    /// Newest first.
    pub backwards: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            after: 0,
            before: None,
            limit: 1000,
            backwards: false,
        }
    }
}

impl ReadOptions {
    /// Forwards from `after`, at most `limit`.
    pub fn after(after: u64, limit: usize) -> ReadOptions {
        ReadOptions {
            after,
            limit,
            ..ReadOptions::default()
        }
    }

    pub(crate) fn window(&self) -> Window {
        Window {
            after: self.after,
            before: self.before.unwrap_or(u64::MAX),
            limit: self.limit,
            backwards: self.backwards,
        }
    }
}
