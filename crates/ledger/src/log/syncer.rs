//! The write-ahead log's sync thread: it writes each group's record and `fdatasync`s it while
//! the writer writes the group's events into the tables ([`super::wal`]).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::awake::Awake;
use crate::poll::Poller;

/// A record to write: which of the log's files, at which offset, its bytes, and whether it
/// was planned on the record handed over before it (then it is written only if that one
/// was: a group planned on a group that failed must not reach the disk).
pub(super) type Job = (usize, u64, Vec<u8>, bool);

/// A thread that writes a record to one of the log's files and syncs it.
pub(super) struct Syncer {
    jobs: std::sync::mpsc::SyncSender<Job>,
    done: std::sync::mpsc::Receiver<std::io::Result<()>>,
    /// The writer's wait for each sync's result.
    synced: Poller,
    /// The thread's id, for placing it ([`super::placement`]).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(super) thread: super::ThreadId,
}

/// The longest the writer polls for a sync's result before it sleeps (`crate::poll`): a
/// sync on a solid-state disk takes a few tens of microseconds.
const POLL_FOR_SYNC: Duration = Duration::from_millis(1);
/// The longest the sync thread polls for the next record before it sleeps: the writer hands
/// one over as soon as the next group's appends are checked.
const POLL_FOR_RECORD: Duration = Duration::from_micros(300);
/// How much the sync thread lowers its nice value, when the process may (root, or
/// `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows it). Every group waits for this thread,
/// which takes little CPU; when the request threads keep the CPUs busy, a sync thread at the
/// same priority waited 0.19 ms on average (2.6 ms at most) to run after each wake-up
/// (`perf sched latency` at 64 connections), and the groups with it (docs/benchmarks/write-path.md).
const SYNC_PRIORITY_BOOST: i32 = 10;

impl Syncer {
    /// Starts the thread; `awake`, if given, is told when each sync starts and ends.
    pub(super) fn start(files: [File; 2], mut awake: Option<Awake>) -> std::io::Result<Syncer> {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(1);
        let (answer, done) = std::sync::mpsc::sync_channel(1);
        let (_, thread) = super::spawn_placeable("loom-wal-sync", move || {
            if let Err(e) = raise_priority(SYNC_PRIORITY_BOOST) {
                tracing::debug!(error = %e, "the write-ahead log's sync thread keeps its priority (raising it needs CAP_SYS_NICE)");
            }
            let mut next = Poller::new(POLL_FOR_RECORD);
            let mut failed = false;
            while let Some((file, offset, bytes, behind)) = next.recv(&queue) {
                let file = &files[file];
                let written = if behind && failed {
                    Err(std::io::Error::other(
                        "not written: the log record before it failed",
                    ))
                } else {
                    if let Some(awake) = awake.as_mut() {
                        awake.sync_starts();
                    }
                    file.write_all_at(&bytes, offset).and_then(|()| {
                        #[cfg(test)]
                        if let Some(e) = hold::before_sync(file) {
                            return Err(e);
                        }
                        file.sync_data()
                    })
                };
                failed = written.is_err();
                if answer.send(written).is_err() {
                    break;
                }
                // After the answer, which the writer is waiting for.
                if let Some(awake) = awake.as_mut() {
                    awake.sync_ended();
                }
            }
        })?;
        Ok(Syncer {
            jobs,
            done,
            synced: Poller::new(POLL_FOR_SYNC),
            thread,
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

/// Lowers the calling thread's nice value by `boost` (a higher priority). On Linux a nice
/// value belongs to a thread, and `setpriority` given a thread id sets that thread's alone.
#[cfg(target_os = "linux")]
fn raise_priority(boost: i32) -> std::io::Result<()> {
    let me = rustix::thread::gettid();
    let nice = rustix::process::getpriority_process(Some(me))?;
    rustix::process::setpriority_process(Some(me), nice - boost)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn raise_priority(_boost: i32) -> std::io::Result<()> {
    Ok(())
}

/// Tests hold a log's next sync until they let it go, and may make it fail as a failing disk
/// would (the record written, its sync refused).
#[cfg(test)]
pub(crate) mod hold {
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    /// Holds for files (by inode): tell the test the sync began, then wait for its verdict.
    type Holds = Vec<(Vec<u64>, Sender<()>, Receiver<bool>)>;
    static HOLDS: Mutex<Holds> = Mutex::new(Vec::new());

    /// A held sync, as the test sees it.
    pub(crate) struct Held {
        began: Receiver<()>,
        verdict: Sender<bool>,
    }

    impl Held {
        /// Waits until the held sync begins.
        pub(crate) fn began(&self) {
            self.began.recv().expect("the held sync began");
        }

        /// Lets the sync go on; `fail`: it fails instead.
        pub(crate) fn release(self, fail: bool) {
            self.verdict.send(fail).expect("the sync thread waits");
        }
    }

    /// Holds the next sync of any of these files.
    pub(crate) fn next(files: &[&std::path::Path]) -> Held {
        let inodes = files
            .iter()
            .map(|f| std::fs::metadata(f).expect("a log file").ino())
            .collect();
        let (began_tx, began) = channel();
        let (verdict, verdict_rx) = channel();
        HOLDS
            .lock()
            .expect("holds")
            .push((inodes, began_tx, verdict_rx));
        Held { began, verdict }
    }

    /// In the sync thread, before a sync: `Some(error)` when a test held it and wants it to
    /// fail.
    pub(super) fn before_sync(file: &std::fs::File) -> Option<std::io::Error> {
        let ino = file.metadata().ok()?.ino();
        let held = {
            let mut holds = HOLDS.lock().expect("holds");
            let i = holds
                .iter()
                .position(|(inodes, ..)| inodes.contains(&ino))?;
            holds.remove(i)
        };
        let (_, began, verdict) = held;
        let _ = began.send(());
        let fail = verdict.recv().unwrap_or(false);
        fail.then(|| std::io::Error::other("the sync failed (held and failed by a test)"))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("nice")
    }

    #[test]
    fn a_record_behind_one_that_failed_is_not_written() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("log");
        std::fs::write(&path, [0u8; 64]).expect("file");
        let writable = || {
            File::options()
                .read(true)
                .write(true)
                .open(&path)
                .expect("open")
        };
        // File 0 takes writes; file 1 is read-only, so writing to it fails.
        let read_only = File::open(&path).expect("open");
        let mut syncer = Syncer::start([writable(), read_only], None).expect("syncer");
        let mut run = |job: Job| {
            assert!(syncer.hand_over(job));
            syncer.wait()
        };
        run((0, 0, b"first".to_vec(), false)).expect("written");
        run((0, 5, b"+behind".to_vec(), true)).expect("written behind a written one");
        assert!(run((1, 12, b"fails".to_vec(), false)).is_err());
        let skipped = run((0, 12, b"skipped".to_vec(), true)).unwrap_err();
        assert!(
            skipped.to_string().contains("before it failed"),
            "{skipped}"
        );
        // One not behind another is written whatever came before.
        run((0, 12, b"!".to_vec(), false)).expect("written");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..14], b"first+behind!\0");
    }

    #[test]
    fn raising_the_priority_changes_the_calling_thread_alone() {
        let before = nice();
        let (raised, after) = std::thread::spawn(move || {
            let raised = raise_priority(SYNC_PRIORITY_BOOST);
            (raised, nice())
        })
        .join()
        .expect("thread");
        match raised {
            Ok(()) => assert_eq!(after, before - SYNC_PRIORITY_BOOST),
            // Without the privilege (not root, no CAP_SYS_NICE): refused, nothing changed.
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
                assert_eq!(after, before);
            }
        }
        assert_eq!(nice(), before, "the other threads keep their priority");
    }
}
