//! Runs tests/interop/js/roundtrip.mjs (the JavaScript `cloudevents` SDK posting, re-posting in
//! the other mode and reading back events) against a real server. Needs `node` and the SDK
//! installed with `npm ci --prefix tests/interop/js`; when they are missing the test says so
//! and passes, unless LOOM_REQUIRE_JS_INTEROP=1 (CI), where it fails.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::Server;
use loom_server::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_cloudevents_sdk_round_trips_every_mode_and_data_kind() {
    let required = std::env::var("LOOM_REQUIRE_JS_INTEROP").is_ok_and(|v| v == "1");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/js");
    let available = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && dir.join("node_modules/cloudevents").is_dir();
    if !available {
        assert!(
            !required,
            "node and the JavaScript SDK are required (apt-get install nodejs npm; npm ci --prefix tests/interop/js)"
        );
        eprintln!(
            "skipped: node or the JavaScript cloudevents SDK is not installed (npm ci --prefix tests/interop/js)"
        );
        return;
    }
    let server = Server::start(Config::default()).await;
    let url = server.url("");
    let script = dir.join("roundtrip.mjs");
    let out =
        tokio::task::spawn_blocking(move || Command::new("node").arg(script).arg(&url).output())
            .await
            .unwrap()
            .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the JavaScript SDK interop check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    server.stop().await;
}
