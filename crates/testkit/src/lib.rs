//! Test support shared by the crates' test suites: building the example guest modules from
//! source to `wasm32-unknown-unknown`, once per test process.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The example crates built for tests.
pub const EXAMPLES: [&str; 3] = ["cart", "bank", "bank-stats"];

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the root")
        .to_path_buf()
}

/// Builds every example to wasm (once per process) and returns the directory of the `.wasm`
/// files. Panics with instructions when the wasm target is missing.
pub fn build_examples() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        // A separate target directory: the outer `cargo test` may hold the main one's lock.
        let target = root.join("target").join("wasm-guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-unknown-unknown",
                "--profile",
                "guest",
            ])
            .arg("--target-dir")
            .arg(&target);
        for e in EXAMPLES {
            cmd.args(["-p", e]);
        }
        // Do not inherit flags meant for the host build (coverage, sanitizers).
        cmd.env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        let out = cmd
            .output()
            .expect("running cargo to build the example modules");
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("wasm32-unknown-unknown")
                && stderr.contains("target may not be installed")
            {
                panic!(
                    "the wasm32-unknown-unknown target is not installed; run\n    \
                     rustup target add wasm32-unknown-unknown\nthen run the tests again"
                );
            }
            panic!("building the example modules failed:\n{stderr}");
        }
        target.join("wasm32-unknown-unknown").join("guest")
    })
}

/// The bytes of an example module (`cart`, `bank`, `bank-stats`).
pub fn example_wasm(name: &str) -> Vec<u8> {
    let file = build_examples().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}
