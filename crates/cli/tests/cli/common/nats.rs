//! Real NATS servers (Debian's `nats-server`) clustered with JetStream on loopback, and Loom
//! nodes joined to them: what `scripts/cluster.sh` starts, for the cluster tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; good enough on a test machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether `nats-server` can be run here. The cluster tests skip with a message without it,
/// unless `LOOM_REQUIRE_NATS` is set (CI installs it and sets it).
pub fn available() -> bool {
    let found = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("LOOM_REQUIRE_NATS").is_none(),
            "LOOM_REQUIRE_NATS is set but nats-server cannot be run"
        );
        eprintln!("skipped: nats-server is not installed (apt-get install nats-server)");
    }
    found
}

/// A NATS cluster of `servers.len()` JetStream servers.
pub struct Nats {
    dir: PathBuf,
    pub ports: Vec<u16>,
    routes: Vec<u16>,
    servers: Vec<Option<Child>>,
}

impl Nats {
    /// Starts `n` clustered servers with JetStream, storing under `dir`. The ports are picked
    /// free and released before the servers bind them, so another test's process can take one
    /// meanwhile: a server that exits or does not listen makes the whole cluster start again
    /// on fresh ports and an empty store (at most three times).
    pub fn start(dir: &Path, n: usize) -> Nats {
        let mut attempt = 1;
        loop {
            if attempt > 1 {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::fs::create_dir_all(dir).unwrap();
            let mut nats = Nats {
                dir: dir.to_owned(),
                ports: (0..n).map(|_| free_port()).collect(),
                routes: (0..n).map(|_| free_port()).collect(),
                servers: (0..n).map(|_| None).collect(),
            };
            match (0..n).try_for_each(|i| nats.try_start_server(i)) {
                Ok(()) => return nats,
                Err(e) if attempt < 3 => {
                    eprintln!("starting the NATS cluster again on other ports: {e}");
                    attempt += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn config(&self, i: usize) -> PathBuf {
        let routes: Vec<String> = self
            .routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let store = self.dir.join(format!("n{i}"));
        let mut text = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{port}\nmax_payload: 8MB\n\
             jetstream {{ store_dir: \"{store}\" }}\n",
            port = self.ports[i],
            store = store.display(),
        );
        if self.ports.len() > 1 {
            text.push_str(&format!(
                "cluster {{ name: loom, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n",
                route = self.routes[i],
                routes = routes.join(", "),
            ));
        }
        let path = self.dir.join(format!("n{i}.conf"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// (Re)starts server `i` on its ports and store.
    pub fn start_server(&mut self, i: usize) {
        if let Err(e) = self.try_start_server(i) {
            panic!("{e}");
        }
    }

    fn try_start_server(&mut self, i: usize) -> Result<(), String> {
        let config = self.config(i);
        let log_path = self.dir.join(format!("n{i}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let child = self.servers[i].insert(child);
        // Ready once it listens for clients and, in a cluster, for routes. The client port
        // answering is not enough: nats-server opens it first and says it is ready, then
        // exits if its route port was taken meanwhile, and another process may be the one
        // answering on a port picked free.
        let clustered = self.ports.len() > 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nats-server n{i} exited ({status}): {log}"));
            }
            if log.contains("[FTL]") {
                return Err(format!("nats-server n{i} failed: {log}"));
            }
            let listening = std::net::TcpStream::connect(("127.0.0.1", self.ports[i])).is_ok()
                && (!clustered || log.contains("Listening for route connections on"));
            if listening {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("nats-server n{i} did not listen: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every server's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}
