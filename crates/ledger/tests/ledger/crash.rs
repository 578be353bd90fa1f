//! Crash safety: a child process appending from many threads is killed with SIGKILL at a random
//! moment; reopening must find every acknowledged event, gapless positions and revisions, and a
//! database that opens cleanly. Repeated over several kills on the same data directory.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use loom_ledger::{AppendRequest, Ledger, LedgerOptions, ReadOptions};
use serde_json::json;

const CHILD_ENV: &str = "LOOM_CRASH_CHILD_DIR";

/// Entry point of the child process (run by `kill_9_never_loses_an_acknowledged_event`).
#[test]
#[ignore = "the child side of the crash test; it runs only when spawned by that test"]
fn crash_child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round: u64 = std::env::var("LOOM_CRASH_ROUND").unwrap().parse().unwrap();
    // Every other round checkpoints every 64 KiB of log, so that kills also land while a
    // checkpoint's deferred sync runs and right after the log moved to its other file.
    let options = LedgerOptions {
        wal_checkpoint_bytes: if round % 2 == 1 {
            64 << 10
        } else {
            LedgerOptions::default().wal_checkpoint_bytes
        },
        ..LedgerOptions::default()
    };
    let ledger = Arc::new(Ledger::open(&dir, options).expect("child open"));
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ledger = ledger.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let n = 1 + (i % 4);
                    let events = (0..n)
                        .map(|b| {
                            common::note(
                                &format!("s{}", (t + i) % 5),
                                &format!("r{round}-t{t}-i{i}-b{b}"),
                                "tick",
                                json!({"round": round, "t": t, "i": i, "b": b}),
                            )
                        })
                        .collect();
                    let ack = ledger.append(AppendRequest::new(events)).expect("append");
                    let mut out = out.lock().unwrap();
                    for e in ack.events {
                        writeln!(out, "ack {} {}", e.id, e.position).unwrap();
                    }
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn kill_9_never_loses_an_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        common::register(&ledger);
    }
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<String, u64> = HashMap::new();
    let rounds = 6;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash::crash_child_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("LOOM_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ack ") {
                    let (id, pos) = rest.split_once(' ').unwrap();
                    lines.push((id.to_owned(), pos.parse::<u64>().unwrap()));
                }
            }
            lines
        });
        // Let it write for a while (varying per round), then kill it without warning.
        let started = Instant::now();
        let run_for = Duration::from_millis(300 + 170 * round as u64);
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        assert!(
            !lines.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        acked.extend(lines);

        // Reopen and check.
        let ledger = Ledger::open(dir.path(), LedgerOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
        let all = ledger.read_all(ReadOptions::after(0, usize::MAX)).unwrap();
        let head = ledger.head();
        assert_eq!(
            all.len() as u64,
            head,
            "round {round}: positions must be gapless"
        );
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.position, i as u64 + 1);
        }
        let stored: HashMap<&str, u64> = all
            .iter()
            .map(|e| (e.event.id.as_str(), e.position))
            .collect();
        for (id, position) in &acked {
            assert_eq!(
                stored.get(id.as_str()),
                Some(position),
                "round {round}: acknowledged event {id} at {position} is missing"
            );
        }
        let mut revisions: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &all {
            let r = revisions.entry(&e.event.subject).or_default();
            *r += 1;
            assert_eq!(
                e.revision, *r,
                "round {round}: revision gap in {}",
                e.event.subject
            );
        }
        for (subject, r) in &revisions {
            assert_eq!(ledger.stream_revision(subject).unwrap(), *r);
        }
        // Batches are atomic: every batch present is complete.
        for e in &all {
            if let Some(prefix) = e.event.id.strip_suffix("-b0") {
                let i: u64 = prefix.rsplit_once("-i").unwrap().1.parse().unwrap();
                for b in 1..1 + (i % 4) {
                    assert!(
                        stored.contains_key(format!("{prefix}-b{b}").as_str()),
                        "round {round}: batch {prefix} is partial"
                    );
                }
            }
        }
    }
    assert!(
        acked.len() > 100,
        "too few acknowledged events to mean much: {}",
        acked.len()
    );
}
