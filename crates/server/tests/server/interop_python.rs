//! The Python `cloudevents` SDK against a real server: tests/interop/python_cloudevents.py
//! (the 1.x API, `cloudevents.http`, which 2.x keeps as `cloudevents.v1`) and
//! python_cloudevents_core.py (the 2.x API, `cloudevents.core`), each posting and reading back
//! events in both modes.
//!
//! The interpreters are `LOOM_PYTHONS` (paths separated by `:`; default `python3`), each with
//! `cloudevents` and `requests` installed; `.ci/run` makes one with cloudevents 1.x and one
//! with 2.x. Without any, the test says so and passes, unless LOOM_REQUIRE_PYTHON_INTEROP=1
//! (CI), where it fails, and then both the 1.x and the 2.x package must have run.

use crate::common;

use std::process::Command;

use common::Server;
use loom_server::Config;

fn script(name: &str) -> String {
    format!("{}/../../tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `python -c CODE` succeeds.
fn python_can(python: &str, code: &str) -> bool {
    Command::new(python)
        .args(["-c", code])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cloudevents_sdk_round_trips_binary_and_structured() {
    let required = std::env::var("LOOM_REQUIRE_PYTHON_INTEROP").is_ok_and(|v| v == "1");
    let pythons = std::env::var("LOOM_PYTHONS").unwrap_or_else(|_| "python3".into());
    let server = Server::start(Config::default()).await;
    let url = server.url("");
    let (mut ran_1x, mut ran_2x) = (false, false);
    for python in pythons.split(':').filter(|p| !p.is_empty()) {
        if !python_can(python, "import cloudevents, requests") {
            assert!(
                !required,
                "{python} has no cloudevents and requests (pip install cloudevents requests)"
            );
            eprintln!("skipped {python}: the cloudevents and requests packages are not installed");
            continue;
        }
        let mut scripts = vec!["python_cloudevents.py"];
        if python_can(python, "import cloudevents.core") {
            scripts.push("python_cloudevents_core.py");
            ran_2x = true;
        } else {
            ran_1x = true;
        }
        for name in scripts {
            let (interpreter, path, url) = (python.to_owned(), script(name), url.clone());
            let out = tokio::task::spawn_blocking(move || {
                Command::new(&interpreter)
                    .arg(path)
                    .args(["--url", &url])
                    .output()
            })
            .await
            .unwrap()
            .expect("run python");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name} with {python} failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        }
    }
    if required {
        assert!(
            ran_1x && ran_2x,
            "LOOM_PYTHONS must name an interpreter with cloudevents 1.x and one with 2.x \
             (1.x ran: {ran_1x}, 2.x ran: {ran_2x})"
        );
    }
    server.stop().await;
}
