//! Test support shared by the crates' test suites: building the example guest modules from
//! source to `wasm32-unknown-unknown`, once per test process.

#![forbid(unsafe_code)]

mod tmpfs;

pub use tmpfs::Tmpfs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A module (WebAssembly text) that would be a valid version-1 projection but imports from
/// WASI, which Loom refuses at upload: modules run with no access to the outside world.
pub const WASI_IMPORTING_MODULE: &str = r#"(module
    (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "loom_abi_version") (result i32) i32.const 1)
    (func (export "loom_alloc") (param i32) (result i32) i32.const 0)
    (func (export "evolve") (param i32 i32) (result i64) i64.const 0))"#;

/// The example crates built for tests.
pub const EXAMPLES: [&str; 5] = ["cart", "bank", "bank-stats", "checkout", "library"];

/// The entities the examples define, with the example that registers each: `cart` (cart),
/// `account` (bank), `order` (checkout).
pub const EXAMPLE_ENTITIES: [(&str, &str); 3] =
    [("cart", "cart"), ("account", "bank"), ("order", "checkout")];

/// The path of an example's registration file, `examples/{example}/entity.json`.
pub fn example_entity_path(example: &str) -> PathBuf {
    workspace_root().join(format!("examples/{example}/entity.json"))
}

/// An example's registration, read from its `entity.json`: the same file a user registers
/// with `loom entities put`, so the tests check the examples' schemas as users meet them.
pub fn example_entity(example: &str) -> loom_core::EntitySpec {
    let path = example_entity_path(example);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the root")
        .to_path_buf()
}

/// Builds every example to wasm (once per process) and returns the directory of the `.wasm`
/// files. Adds the wasm target with rustup when it is missing; panics with instructions if
/// that fails.
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
        let mut out = cmd
            .output()
            .expect("running cargo to build the example modules");
        if !out.status.success() && missing_target(&out.stderr) {
            // A fresh machine with only Rust: add the target once (rustup is how Rust is
            // installed there), then build again.
            eprintln!("loom-testkit: installing the wasm32-unknown-unknown target with rustup");
            let added = Command::new("rustup")
                .args(["target", "add", "wasm32-unknown-unknown"])
                .status();
            if matches!(added, Ok(s) if s.success()) {
                out = cmd
                    .output()
                    .expect("running cargo to build the example modules");
            }
        }
        if !out.status.success() {
            if missing_target(&out.stderr) {
                panic!(
                    "the wasm32-unknown-unknown target is not installed and could not be added; \
                     run\n    rustup target add wasm32-unknown-unknown\nthen run the tests again"
                );
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            panic!("building the example modules failed:\n{stderr}");
        }
        target.join("wasm32-unknown-unknown").join("guest")
    })
}

fn missing_target(stderr: &[u8]) -> bool {
    let stderr = String::from_utf8_lossy(stderr);
    stderr.contains("wasm32-unknown-unknown") && stderr.contains("may not be installed")
}

/// The bytes of a module built by an earlier Loom, kept to check that what users uploaded
/// then keeps running: `cart-abi-v1` and `checkout-abi-v1` are the cart and checkout examples
/// as the SDK built them for ABI version 1 (one reducer per module, entry points `evolve`,
/// `decide`, `query`, `react`).
pub fn fixture_wasm(name: &str) -> Vec<u8> {
    let file = workspace_root().join(format!("crates/testkit/fixtures/{name}.wasm"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// The bytes of an example module (one of [`EXAMPLES`]).
pub fn example_wasm(name: &str) -> Vec<u8> {
    let file = build_examples().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

/// A minimal HTTP sink on a loopback port that records the bodies POSTed to it. It can be
/// told to refuse (answer 503) for a while, to test retries.
#[derive(Debug)]
pub struct Sink {
    /// `http://127.0.0.1:<port>/`.
    pub url: String,
    state: std::sync::Arc<SinkState>,
}

#[derive(Debug, Default)]
struct SinkState {
    received: std::sync::Mutex<Vec<Vec<u8>>>,
    refused: std::sync::atomic::AtomicU64,
    down: std::sync::atomic::AtomicBool,
}

impl Sink {
    /// Starts the sink on an ephemeral loopback port.
    pub fn start() -> Sink {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind sink");
        let url = format!("http://{}/", listener.local_addr().expect("sink address"));
        let state = std::sync::Arc::new(SinkState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
                    let mut conn = conn;
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        // Request line, then headers.
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let l = line.trim_end();
                            if l.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = l.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let reply = if st.down.load(Ordering::Acquire) {
                            st.refused.fetch_add(1, Ordering::AcqRel);
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            st.received.lock().expect("sink lock").push(body);
                            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                        };
                        if conn.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Sink { url, state }
    }

    /// Bodies accepted so far, in arrival order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.state.received.lock().expect("sink lock").clone()
    }

    /// Makes the sink answer 503 (`true`) or accept again (`false`).
    pub fn set_down(&self, down: bool) {
        self.state
            .down
            .store(down, std::sync::atomic::Ordering::Release);
    }

    /// Requests refused while down.
    pub fn refused(&self) -> u64 {
        self.state
            .refused
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
