//! Loom's cluster mode: the durable log of commit groups is a NATS JetStream stream,
//! replicated by the NATS cluster (docs/cluster.md).
//!
//! One node at a time is the **sequencer**: it holds a lease (a key in a JetStream key-value
//! bucket whose entries expire), decides commit groups exactly as a single node does, and
//! publishes each group with `Nats-Expected-Last-Sequence` set to the last sequence it
//! applied. JetStream stores a group only if nothing else was stored since, so a deposed
//! sequencer that wakes up cannot add a group decided on stale state: its publish is
//! refused, and it steps down. Every other node is a **follower**: it applies the stream in
//! order into its own ledger ([`Ledger::apply_replicated`]). A node becomes the sequencer
//! only after it applied everything the stream held when it took the lease, so positions stay
//! gapless across a failover.
//!
//! The ledger side of this is [`loom_ledger::GroupLog`], implemented here by [`JetStreamLog`].

mod lease;
mod log;
mod node;
mod peers;
mod snapshots;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use loom_ledger::Ledger;
use serde::{Deserialize, Serialize};

pub use log::JetStreamLog;
pub use peers::PeerStatus;
pub use snapshots::{SnapshotInfo, Trimmed};

/// How a node joins the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// NATS server URLs, comma-separated (`nats://127.0.0.1:4222,nats://…`).
    pub nats: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// This node's HTTP address as other nodes and clients reach it (followers forward
    /// writes to the sequencer's).
    pub url: String,
    /// Replicas of the stream and the lease bucket (3 in production; 1 for development).
    pub replicas: usize,
    /// How long a sequencer's lease lasts without renewal.
    pub lease: Duration,
    /// The JetStream stream holding the log (and the prefix of the cluster's other names).
    pub stream: String,
}

impl ClusterOptions {
    /// Options with the defaults: three replicas, a 2 s lease, the stream `LOOM`.
    pub fn new(nats: impl Into<String>, node: impl Into<String>, url: impl Into<String>) -> Self {
        ClusterOptions {
            nats: nats.into(),
            node: node.into(),
            url: url.into(),
            replicas: 3,
            lease: Duration::from_secs(2),
            stream: "LOOM".into(),
        }
    }

    fn subject(&self) -> String {
        format!("{}.log", self.stream.to_ascii_lowercase())
    }

    fn lease_bucket(&self) -> String {
        format!("{}_sequencer", self.stream)
    }

    fn snapshot_bucket(&self) -> String {
        format!("{}_snapshots", self.stream)
    }
}

/// Why joining the cluster failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(String);

impl ClusterError {
    fn new(context: &str, e: impl std::fmt::Display) -> ClusterError {
        ClusterError(format!("{context}: {e}"))
    }
}

/// The sequencer as the lease names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequencer {
    /// Its node name.
    pub node: String,
    /// Its HTTP address.
    pub url: String,
}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Applies the stream; forwards writes to the sequencer.
    Follower,
    /// Holds the lease and is applying the rest of the stream before it sequences.
    Candidate,
    /// Decides and publishes commit groups.
    Sequencer,
}

/// What a node knows about the cluster (`GET /v1/cluster`).
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node: String,
    /// Its role now.
    pub role: Role,
    /// The sequencer, as last seen in the lease (`None`: no node holds it).
    pub sequencer: Option<Sequencer>,
    /// The stream sequence of the last group this node applied.
    pub applied: u64,
    /// The stream's last sequence, as last seen (its lag is `log_last - applied`).
    pub log_last: u64,
    /// Times this node became the sequencer since it started.
    pub terms: u64,
    /// The replicated stream.
    pub stream: String,
    /// The log sequence of the snapshot this node started from, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<u64>,
    /// Why this node last failed to follow the log, until it follows again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Every node as it last said (this one included), with how far each is behind the log's
    /// last sequence as this node knows it; a node silent for 10 s drops out.
    pub nodes: Vec<PeerStatus>,
}

/// State shared by the node's task, its log and its status.
struct Shared {
    options: ClusterOptions,
    /// Whether the writer may decide and publish groups.
    sequencing: Arc<AtomicBool>,
    /// The stream sequence of the last group applied (or published) here.
    applied: AtomicU64,
    /// The stream's last sequence as last seen.
    log_last: AtomicU64,
    /// A publish failed or was refused: the node must read the stream before it sequences
    /// again.
    resync: tokio::sync::Notify,
    role: Mutex<Role>,
    sequencer: Mutex<Option<Sequencer>>,
    terms: AtomicU64,
    /// The NATS server's largest message, in bytes.
    max_payload: usize,
    /// The log sequence of the snapshot this node started from.
    restored_from: Mutex<Option<u64>>,
    /// Why following last failed (cleared when it follows again).
    last_error: Mutex<Option<String>>,
    /// Every node as it last said.
    peers: Mutex<Vec<PeerStatus>>,
}

impl Shared {
    fn set_role(&self, role: Role) {
        *self.role.lock().expect("role lock") = role;
        self.sequencing
            .store(role == Role::Sequencer, Ordering::Release);
    }
}

/// A node's membership of the cluster: its connection, its log, its task.
pub struct Cluster {
    shared: Arc<Shared>,
    js: jetstream::Context,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to NATS and makes sure the stream and the lease bucket exist. Call from
    /// within a tokio runtime.
    pub async fn connect(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let servers = options
            .nats
            .split(',')
            .map(|url| url.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::new(&format!("the NATS URLs {:?}", options.nats), e))?;
        let client = async_nats::ConnectOptions::new()
            .name(format!("loom {}", options.node))
            .retry_on_initial_connect()
            .connect(servers);
        let client = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .map_err(|_| {
                ClusterError(format!("connecting to NATS at {}: timed out", options.nats))
            })?
            .map_err(|e| {
                ClusterError::new(&format!("connecting to NATS at {}", options.nats), e)
            })?;
        let js = jetstream::new(client.clone());
        // A NATS cluster that has just started takes a few seconds to elect its JetStream
        // leader; until then it answers "temporarily unavailable".
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = match log::ensure_stream(&js, &options).await {
                Ok(()) => lease::ensure_bucket(&js, &options).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match ready {
                Ok(()) => break,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::info!(error = %e, "waiting for JetStream");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
        // Read only now: the server's INFO has surely arrived once JetStream has answered
        // (right after a connect that retried, it may still be the default of 0).
        let max_payload = match client.server_info().max_payload {
            0 => 1024 * 1024,
            n => n,
        };
        Ok(Cluster {
            shared: Arc::new(Shared {
                options,
                sequencing: Arc::new(AtomicBool::new(false)),
                applied: AtomicU64::new(0),
                log_last: AtomicU64::new(0),
                resync: tokio::sync::Notify::new(),
                role: Mutex::new(Role::Follower),
                sequencer: Mutex::new(None),
                terms: AtomicU64::new(0),
                max_payload,
                restored_from: Mutex::new(None),
                last_error: Mutex::new(None),
                peers: Mutex::new(Vec::new()),
            }),
            js,
        })
    }

    /// The log to open this node's ledger with ([`Ledger::open_replica`]). Its `publish`
    /// blocks the writer thread on this runtime.
    pub fn log(&self) -> JetStreamLog {
        JetStreamLog::new(
            self.shared.clone(),
            self.js.clone(),
            tokio::runtime::Handle::current(),
        )
    }

    /// Starts following the stream (and taking the lease when it is free) with `ledger`,
    /// which was opened with [`log`](Self::log).
    pub fn start(&self, ledger: Arc<Ledger>) {
        self.shared
            .applied
            .store(ledger.log_sequence(), Ordering::Release);
        let node = node::Node {
            shared: self.shared.clone(),
            js: self.js.clone(),
            ledger,
        };
        tokio::spawn(node.run());
        tokio::spawn(peers::run(self.shared.clone(), self.js.clone()));
    }

    /// What this node knows now.
    pub fn status(&self) -> ClusterStatus {
        let s = &self.shared;
        ClusterStatus {
            node: s.options.node.clone(),
            role: *s.role.lock().expect("role lock"),
            sequencer: s.sequencer.lock().expect("sequencer lock").clone(),
            applied: s.applied.load(Ordering::Acquire),
            log_last: s.log_last.load(Ordering::Acquire),
            terms: s.terms.load(Ordering::Relaxed),
            stream: s.options.stream.clone(),
            restored_from: *s.restored_from.lock().expect("restored lock"),
            last_error: s.last_error.lock().expect("error lock").clone(),
            nodes: {
                let last = s.log_last.load(Ordering::Acquire);
                let mut nodes = s.peers.lock().expect("peers lock").clone();
                for n in &mut nodes {
                    n.behind = last.saturating_sub(n.applied);
                }
                nodes
            },
        }
    }

    /// The sequencer's HTTP address, when it is another node (writes are forwarded there).
    pub fn forward_to(&self) -> Option<String> {
        if self.shared.sequencing.load(Ordering::Acquire) {
            return None;
        }
        let sequencer = self.shared.sequencer.lock().expect("sequencer lock");
        sequencer
            .as_ref()
            .filter(|s| s.node != self.shared.options.node)
            .map(|s| s.url.clone())
    }

    /// True while this node sequences, as a flag others can watch (the engine runs reactors
    /// only then).
    pub fn sequencing_flag(&self) -> Arc<AtomicBool> {
        self.shared.sequencing.clone()
    }

    /// Whether this node is the sequencer now.
    pub fn is_sequencer(&self) -> bool {
        self.shared.sequencing.load(Ordering::Acquire)
    }
}
