//! `loom serve --cluster`: the node joins a Loom cluster on NATS JetStream (docs/cluster.md).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use loom_cluster::{Cluster, ClusterOptions};
use loom_ledger::{Ledger, LedgerOptions};

/// The cluster flags of `loom serve`.
#[derive(Debug, Args)]
pub(crate) struct ClusterArgs {
    /// Join a cluster: the NATS servers (comma-separated URLs) whose JetStream holds the
    /// cluster's log. Without it the server is a single node with a local write-ahead log.
    #[arg(long = "cluster", env = "LOOM_CLUSTER", value_name = "NATS_URLS")]
    pub(crate) nats: Option<String>,
    /// This node's name in the cluster (default: the listen address).
    #[arg(long, env = "LOOM_NODE", requires = "nats")]
    pub(crate) node: Option<String>,
    /// This node's HTTP address as the other nodes reach it (default: http:// and the
    /// listen address).
    #[arg(long, env = "LOOM_ADVERTISE", requires = "nats")]
    pub(crate) advertise: Option<String>,
    /// Replicas of the cluster's stream (3 in production; at most the NATS servers there are).
    #[arg(long, env = "LOOM_REPLICAS", default_value_t = 3, requires = "nats")]
    pub(crate) replicas: usize,
    /// How long the sequencer's lease lasts without renewal, in milliseconds: a failed
    /// sequencer is replaced within about this long.
    #[arg(
        long,
        env = "LOOM_LEASE_MS",
        default_value_t = 2_000,
        requires = "nats"
    )]
    pub(crate) lease_ms: u64,
}

/// The cluster as the HTTP server sees it.
#[derive(Debug)]
struct Replication(Arc<Cluster>);

impl loom_server::Replication for Replication {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.0.status()).expect("serializable")
    }

    fn forward_to(&self) -> Option<String> {
        self.0.forward_to()
    }

    fn is_sequencer(&self) -> bool {
        self.0.is_sequencer()
    }

    fn snapshot(
        &self,
        file: std::path::PathBuf,
        head: u64,
        log_sequence: u64,
    ) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move {
            let info = self
                .0
                .put_snapshot(&file, head, log_sequence)
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(info).expect("serializable"))
        })
    }

    fn snapshots(&self) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move {
            let all = self.0.snapshots().await.map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(all).expect("serializable"))
        })
    }

    fn trim(
        &self,
        keep: usize,
        force: bool,
    ) -> futures_util::future::BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(async move {
            let trimmed = self.0.trim(keep, force).await.map_err(|e| e.to_string())?;
            Ok(serde_json::to_value(trimmed).expect("serializable"))
        })
    }

    fn progress(&self) -> loom_server::Progress {
        let status = self.0.status();
        loom_server::Progress {
            applied: status.applied,
            log_last: status.log_last,
            terms: status.terms,
        }
    }
}

/// Opens the node's ledger on the cluster's log and starts following it.
pub(crate) async fn open(
    args: &ClusterArgs,
    nats: &str,
    listen: SocketAddr,
    dir: &Path,
    options: LedgerOptions,
) -> anyhow::Result<Node> {
    let mut cluster = ClusterOptions::new(
        nats,
        args.node.clone().unwrap_or_else(|| listen.to_string()),
        args.advertise
            .clone()
            .unwrap_or_else(|| format!("http://{listen}")),
    );
    cluster.replicas = args.replicas.max(1);
    cluster.lease = Duration::from_millis(args.lease_ms.max(100));
    let cluster = Arc::new(
        Cluster::connect(cluster)
            .await
            .context("joining the cluster")?,
    );
    if !dir.join(loom_ledger::DB_FILE).exists() {
        start_from_snapshot(&cluster, dir).await?;
    }
    let log = Box::new(cluster.log());
    let data = dir.to_owned();
    let ledger = tokio::task::spawn_blocking(move || Ledger::open_replica(&data, options, log))
        .await
        .context("opening the ledger")?
        .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    let ledger = Arc::new(ledger);
    cluster.start(ledger.clone());
    Ok(Node {
        ledger,
        sequencing: cluster.sequencing_flag(),
        replication: Arc::new(Replication(cluster)),
    })
}

/// A node with no database yet starts from the cluster's latest snapshot, if there is one,
/// checked before it is put in place; it then reads only the stream after it.
async fn start_from_snapshot(cluster: &Cluster, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".loom-snapshot-")
        .tempdir_in(dir)
        .context("creating a staging directory in the data directory")?;
    let file = staging.path().join(loom_ledger::DB_FILE);
    let Some(snapshot) = cluster
        .download_latest_snapshot(&file)
        .await
        .context("reading the cluster's latest snapshot")?
    else {
        return Ok(());
    };
    let checked = staging.path().to_owned();
    let verified = tokio::task::spawn_blocking(move || {
        let ledger = Ledger::open_unlogged(&checked, LedgerOptions::default())?;
        let verified = ledger.verify();
        ledger.shutdown();
        anyhow::Ok(verified?)
    })
    .await
    .context("checking the snapshot")?
    .with_context(|| format!("the cluster's snapshot {} is not usable", snapshot.name))?;
    std::fs::rename(&file, dir.join(loom_ledger::DB_FILE))
        .context("moving the snapshot into the data directory")?;
    cluster.restored_from(snapshot.log_sequence);
    tracing::info!(
        snapshot = %snapshot.name,
        events = verified.events,
        log_sequence = snapshot.log_sequence,
        "started from the cluster's latest snapshot; reading the stream after it"
    );
    Ok(())
}

/// A cluster node's ledger and what the engine and the server need of the cluster.
pub(crate) struct Node {
    pub(crate) ledger: Arc<Ledger>,
    /// Whether the node sequences now: it alone runs the reactors' effects.
    pub(crate) sequencing: Arc<AtomicBool>,
    pub(crate) replication: Arc<dyn loom_server::Replication>,
}

/// `loom cluster …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ClusterCommand {
    /// The node's role, the sequencer, and how far the node has applied the cluster's log.
    Status(StatusArgs),
    /// Take a snapshot of the node (while it runs) into the cluster's object store; a node
    /// started on an empty data directory starts from the latest one.
    Snapshot(StatusArgs),
    /// The cluster's snapshots, oldest first.
    Snapshots(StatusArgs),
    /// Keep the newest snapshots, delete the older ones, and trim the stream below the oldest
    /// one kept (nodes behind that point must start again from a snapshot).
    Trim(TrimArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TrimArgs {
    #[command(flatten)]
    conn: crate::client::Connection,
    /// Snapshots to keep.
    #[arg(long, default_value_t = 2)]
    keep: u64,
    /// Trim even though some nodes have not applied as far as the oldest snapshot kept (they
    /// must then start again from a snapshot).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    conn: crate::client::Connection,
}

pub(crate) async fn cluster(command: ClusterCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Snapshot(args) => snapshot(args, true).await,
        ClusterCommand::Snapshots(args) => snapshot(args, false).await,
        ClusterCommand::Trim(args) => trim(args).await,
    }
}

async fn trim(args: TrimArgs) -> anyhow::Result<std::process::ExitCode> {
    let client = args.conn.client(Duration::from_secs(600))?;
    let answer = client.trim(args.keep, args.force).await?;
    if args.conn.json {
        println!("{answer}");
    } else {
        println!(
            "trimmed: the stream begins at sequence {} ({} messages removed); {} older snapshots deleted",
            answer["first_sequence"],
            answer["purged_messages"],
            answer["deleted_snapshots"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `loom cluster snapshot` (take one) and `loom cluster snapshots` (list them).
async fn snapshot(args: StatusArgs, take: bool) -> anyhow::Result<std::process::ExitCode> {
    let client = args.conn.client(Duration::from_secs(60))?;
    let answer = if take {
        client.take_snapshot().await?
    } else {
        client.snapshots().await?
    };
    if args.conn.json {
        println!("{answer}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let line = |s: &serde_json::Value| {
        format!(
            "{}: positions 1..={}, log sequence {}, {} bytes, from {}",
            s["name"].as_str().unwrap_or("?"),
            s["head"],
            s["log_sequence"],
            s["bytes"],
            s["node"].as_str().unwrap_or("?")
        )
    };
    match answer.as_array() {
        Some(all) if all.is_empty() => println!("no snapshots"),
        Some(all) => all.iter().for_each(|s| println!("{}", line(s))),
        None => println!("stored {}", line(&answer)),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn status(args: StatusArgs) -> anyhow::Result<std::process::ExitCode> {
    let client = args.conn.client(Duration::from_secs(30))?;
    let status = client.cluster().await?;
    if args.conn.json {
        println!("{status}");
    } else {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
        let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        let sequencer = match &status["sequencer"] {
            serde_json::Value::Null => "no sequencer now".to_owned(),
            s => format!("sequencer {} at {}", text(&s["node"]), text(&s["url"])),
        };
        println!(
            "{}: {} (terms {}); applied {} of {} in stream {}; {sequencer}",
            text(&status["node"]),
            text(&status["role"]),
            number(&status["terms"]),
            number(&status["applied"]),
            number(&status["log_last"]),
            text(&status["stream"]),
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
