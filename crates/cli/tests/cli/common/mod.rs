//! The harness the `loom` binary's tests share: a real `loom serve` on a free loopback port,
//! and the client subcommands run against it.

#![allow(dead_code)] // each test file uses a different part

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const LOOM: &str = env!("CARGO_BIN_EXE_loom");

/// Lines of a server's log kept for a failing test's message.
const LOG_LINES: usize = 200;

/// A running `loom serve`; killed when dropped.
pub struct Serve {
    pub child: Child,
    pub url: String,
    /// The last [`LOG_LINES`] lines it wrote to stderr (warnings and errors).
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Serve {
    /// Starts `loom serve --data DATA --listen 127.0.0.1:0 EXTRA…` and waits for its address.
    pub fn start(data: &Path, extra: &[&str]) -> Serve {
        let mut child = Command::new(LOOM)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("LOOM_TOKENS")
            .env("LOOM_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start loom serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap();
                if kept.len() == LOG_LINES {
                    kept.pop_front();
                }
                kept.push_back(line.clone());
                drop(kept);
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("loom serve prints its address");
            if let Some(rest) = line.strip_prefix("loom listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        Serve { child, url, log }
    }

    /// What it has written to stderr lately, for a failing test's message: a node that
    /// misbehaved under load says why only there.
    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let lines: Vec<&str> = log.iter().map(String::as_str).collect();
        lines.join("\n")
    }

    /// Runs `loom ARGS --url URL` with no input.
    pub fn loom(&self, args: &[&str]) -> Output {
        self.loom_with(args, None)
    }

    /// Runs `loom ARGS --url URL` with `stdin` as its input.
    pub fn loom_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(LOOM)
            .args(args)
            .args(["--url", &self.url])
            .env_remove("LOOM_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }

    /// Runs `loom ARGS --json`, which must succeed, and parses its output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = ok(&self.loom(&all));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// SIGKILL: no graceful anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and a clean exit within 30 s.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "loom serve exits 0 after SIGTERM: {status}"
                );
                return;
            }
            assert!(Instant::now() < deadline, "loom serve stops within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that failed shows what each of its servers logged last: under the full
        // suite's load a failure may not come again when the test is run alone.
        if std::thread::panicking() {
            eprintln!(
                "-- loom serve at {}, its last log lines:\n{}",
                self.url,
                self.log_tail()
            );
        }
    }
}

/// The output of a command that must have succeeded.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "loom failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// An example module, built to wasm.
pub fn wasm(example: &str) -> PathBuf {
    loom_testkit::build_examples().join(format!("{example}.wasm"))
}
pub mod nats;
