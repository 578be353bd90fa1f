use super::*;

fn reads(stats: &LedgerStats) -> u64 {
    stats.disk_awake_reads.load(Ordering::Relaxed)
}

/// Syncs `gap` apart as the sync thread reports them (the gaps on the clock the average is
/// taken from, so that a test thread descheduled for a while does not change them); the last
/// one ends now, so that a window it opens is still ahead.
fn syncs(awake: &mut Awake, n: usize, gap: Duration) {
    for i in 0..n {
        let start = awake.last_end.map_or_else(Instant::now, |end| end + gap);
        awake.starts_at(start);
        let end = if i + 1 == n { Instant::now() } else { start };
        awake.ended_at(end.max(start));
    }
}

/// Waits until the reads stop coming (no new one for 20 ms), and returns their count.
fn settled(stats: &LedgerStats) -> u64 {
    let mut last = reads(stats);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = reads(stats);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn started(dir: &Path, mode: KeepAwake) -> (Option<Awake>, Arc<LedgerStats>) {
    let stats = Arc::new(LedgerStats::default());
    (Awake::start(dir, mode, stats.clone()), stats)
}

#[test]
fn reads_come_only_between_syncs_that_come_close_together() {
    let dir = tempfile::tempdir().expect("dir");
    let (awake, stats) = started(dir.path(), KeepAwake::On);
    let mut awake = awake.expect("kept awake: the temporary directory takes O_DIRECT reads");
    assert_eq!(
        std::fs::read(dir.path().join(AWAKE_FILE))
            .expect("block")
            .len(),
        FILE_BYTES
    );
    // Started, no sync yet: nothing read.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(reads(&stats), 0, "read before any sync");

    // Syncs 150 µs apart: read after each, for up to 300 µs (retried, in case the reading
    // thread was not run in time).
    let deadline = Instant::now() + Duration::from_secs(5);
    while reads(&stats) == 0 {
        assert!(
            Instant::now() < deadline,
            "no read between syncs 150 µs apart"
        );
        syncs(&mut awake, 40, Duration::from_micros(150));
        std::thread::sleep(Duration::from_millis(1));
    }

    // Once a sync starts, nothing is read (but the read in flight then) until it ends, though
    // the window the syncs before it opened has not closed: 2000 syncs 150 µs apart end
    // 300 ms from now.
    syncs(&mut awake, 2000, Duration::from_micros(150));
    awake.starts_at(Instant::now());
    std::thread::sleep(Duration::from_millis(5));
    let at_start = reads(&stats);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(reads(&stats), at_start, "read during a sync");
    let open = awake.shared.until.load(Ordering::Acquire);
    assert!(
        Duration::from_nanos(open) > awake.shared.base.elapsed(),
        "the window closed before the test ended"
    );
    awake.ended_at(Instant::now());
    let after = settled(&stats);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(reads(&stats), after, "read long after the last sync");

    // Syncs back to back keep the disk awake themselves: once the average gap is that short,
    // no sync opens a window.
    syncs(&mut awake, 100, Duration::from_micros(2));
    let close = settled(&stats);
    for _ in 0..10 {
        syncs(&mut awake, 10, Duration::from_micros(2));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reads(&stats), close, "read between syncs back to back");

    // Syncs far apart (an idle ledger): the same.
    syncs(&mut awake, 100, Duration::from_millis(2));
    let far = settled(&stats);
    for _ in 0..10 {
        syncs(&mut awake, 10, Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reads(&stats), far, "read between syncs 2 ms apart");

    // Dropped while reading: the drop stops the thread and waits for it, so that nothing of it
    // (its share of the counters included) outlives the log.
    syncs(&mut awake, 100, Duration::from_micros(150));
    drop(awake);
    assert_eq!(
        Arc::strong_count(&stats),
        1,
        "the reading thread outlived the drop"
    );
}

#[test]
fn off_starts_nothing_and_writes_no_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (awake, _) = started(dir.path(), KeepAwake::Off);
    assert!(awake.is_none());
    assert!(!dir.path().join(AWAKE_FILE).exists());
}

/// The window after gaps of these lengths (µs), each given `n` times in turn.
fn window_after(pattern: &[(u64, usize)], rounds: usize) -> Duration {
    let mut gaps = Gaps::default();
    for _ in 0..rounds {
        for &(us, n) in pattern {
            for _ in 0..n {
                gaps.add(Duration::from_micros(us));
            }
        }
    }
    gaps.window()
}

#[test]
fn the_window_is_twice_the_typical_gap_while_most_gaps_are_within_bounds() {
    assert_eq!(Gaps::default().window(), Duration::ZERO, "no gap yet");
    // Steady gaps: within bounds, twice them (at most the longest gap kept awake for).
    assert_eq!(window_after(&[(100, 1)], 50), Duration::from_micros(200));
    assert_eq!(window_after(&[(40, 1)], 50), Duration::from_micros(80));
    assert_eq!(window_after(&[(400, 1)], 50), MAX_GAP);
    // Too short (the syncs keep the disk awake) or too long (an idle ledger): nothing.
    assert_eq!(window_after(&[(39, 1)], 50), Duration::ZERO);
    assert_eq!(window_after(&[(500, 1)], 50), Duration::ZERO);
    assert_eq!(window_after(&[(60_000_000, 1)], 50), Duration::ZERO);
    // Short gaps with a long pause now and then (a writer in process): still nothing, where
    // a mean of the gaps would be over the lower bound.
    assert_eq!(window_after(&[(20, 15), (1000, 1)], 20), Duration::ZERO);
    // Gaps within bounds with a pause now and then: the pauses do not count.
    assert_eq!(
        window_after(&[(100, 15), (5000, 1)], 20),
        Duration::from_micros(200)
    );
    // After an idle while, a few gaps within bounds bring it back.
    assert_eq!(
        window_after(&[(5000, 50), (100, 8)], 1),
        Duration::from_micros(200)
    );
}

/// A sysfs tree with a virtio disk `vda` (254:0, partition 254:1) and an NVMe disk
/// `nvme0n1` (259:0).
#[cfg(target_os = "linux")]
fn sysfs() -> tempfile::TempDir {
    use std::fs;
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().expect("dir");
    let sys = root.path();
    let block = sys.join("dev/block");
    fs::create_dir_all(&block).expect("dev");
    let disk = |pci: &str, device: &str, name: &str, driver: &str| {
        let dev = sys.join(format!("devices/pci0000:00/{pci}/{device}"));
        let disk = dev.join(format!("block/{name}"));
        fs::create_dir_all(&disk).expect("disk");
        let drivers = sys.join(format!("bus/x/drivers/{driver}"));
        fs::create_dir_all(&drivers).expect("driver");
        symlink(&drivers, dev.join("driver")).expect("link");
        symlink(&dev, disk.join("device")).expect("link");
        disk
    };
    let vda = disk("0000:00:02.0", "virtio1", "vda", "virtio_blk");
    fs::create_dir_all(vda.join("vda1")).expect("partition");
    fs::write(vda.join("vda1/partition"), "1\n").expect("partition");
    symlink(&vda, block.join("254:0")).expect("link");
    symlink(vda.join("vda1"), block.join("254:1")).expect("link");
    let nvme = disk("0000:00:04.0", "nvme0", "nvme0n1", "nvme");
    symlink(&nvme, block.join("259:0")).expect("link");
    root
}

#[cfg(target_os = "linux")]
#[test]
fn auto_means_a_virtio_disk_or_a_partition_of_one() {
    let root = sysfs();
    let sys = root.path();
    assert!(virtio_disk(sys, (254, 0)));
    assert!(virtio_disk(sys, (254, 1)));
    assert!(!virtio_disk(sys, (259, 0)), "an NVMe disk");
    assert!(!virtio_disk(sys, (8, 0)), "an unknown device");
}
