//! Runs tests/interop/python_cloudevents.py (the Python `cloudevents` SDK posting and reading
//! back events) against a real server. Needs python3 with `cloudevents` and `requests`; when
//! they are missing the test says so and passes, unless LOOM_REQUIRE_PYTHON_INTEROP=1 (CI),
//! where it fails.

use crate::common;

use std::process::Command;

use common::Server;
use loom_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_cloudevents_sdk_round_trips_binary_and_structured() {
    let required = std::env::var("LOOM_REQUIRE_PYTHON_INTEROP").is_ok_and(|v| v == "1");
    let available = Command::new("python3")
        .args(["-c", "import cloudevents, requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        assert!(
            !required,
            "python3 with cloudevents and requests is required (pip install cloudevents requests)"
        );
        eprintln!("skipped: python3 with the cloudevents and requests packages is not installed");
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/python_cloudevents.py"
    );
    let server = Server::start(Config::default()).await;
    let url = server.url("");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .args(["--url", &url])
            .output()
    })
    .await
    .unwrap()
    .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python SDK interop check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    server.stop().await;
}
