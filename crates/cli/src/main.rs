//! `loom`: the Loom server (`loom serve`) and a client for its HTTP API.

mod backup;
mod client;
mod cluster;
mod deciders;
mod deploy;
mod entities;
mod modules;
mod new;
mod projections;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use loom_engine::{Engine, EngineConfig};
use loom_ledger::{KeepAwake, Ledger, LedgerOptions};
use loom_server::{AppState, Config, Token};

/// Loom: an event store that speaks CloudEvents.
#[derive(Debug, Parser)]
#[command(name = "loom", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server on a local data directory.
    Serve(ServeArgs),
    /// Append events from a file or stdin (a JSON object, a JSON array, or NDJSON).
    Append(client::AppendArgs),
    /// Read events by position; --follow keeps printing new ones as they are committed.
    Events(client::EventsArgs),
    /// Read one stream (ENTITY/KEY) by revision.
    Stream(client::StreamArgs),
    /// Register and show entities (the event registry).
    Entities {
        #[command(subcommand)]
        command: entities::EntitiesCommand,
    },
    /// Upload and manage wasm modules (reducers).
    Modules {
        #[command(subcommand)]
        command: modules::ModulesCommand,
    },
    /// Define, read and steer projections.
    Projections {
        #[command(subcommand)]
        command: projections::ProjectionsCommand,
    },
    /// Bind deciders (modules with decide) to entities.
    Deciders {
        #[command(subcommand)]
        command: deciders::DecidersCommand,
    },
    /// Run a command on stream ENTITY/KEY through the entity's decider.
    #[command(name = "command", visible_alias = "run")]
    Run(deciders::CommandArgs),
    /// Define and steer reactors (modules with react).
    Reactors {
        #[command(subcommand)]
        command: deciders::ReactorsCommand,
    },
    /// A cluster node's view of the cluster.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Copy a running server's database to a file (a consistent backup; the server goes on).
    Backup(backup::BackupArgs),
    /// Make a backup the database of a new data directory (a single node, or a new cluster
    /// node that goes on with the cluster's log from the backup).
    Restore(backup::RestoreArgs),
    /// Check a data directory: every event readable, positions gapless, indexes in agreement.
    /// The server must not be running on it.
    Verify(backup::VerifyArgs),
    /// Create a reducer crate that builds as it is: a decider with a query, a projection, a
    /// reactor, native tests, the entity's registration and a loom.toml.
    New(new::NewArgs),
    /// Build a reducer crate for wasm, upload it, register its entities and apply the
    /// definitions of its loom.toml; prints what changed.
    Deploy(deploy::DeployArgs),
    /// Compile one wasm module (bytes on stdin) to the artifact `loom serve` loads (on
    /// stdout). The server runs this in a child process for every module it compiles.
    #[command(name = "compile-module", hide = true)]
    CompileModule,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "LOOM_DATA", default_value = "./loom-data")]
    data: PathBuf,
    /// Address to listen on. Without tokens only loopback addresses are allowed.
    #[arg(long, env = "LOOM_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// A bearer token as ROLE:TOKEN (roles: admin, writer, reader). Repeatable; LOOM_TOKENS
    /// takes a comma-separated list.
    #[arg(
        long = "token",
        env = "LOOM_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// Largest request body, in bytes (suffixes k, m, g: 1024-based).
    #[arg(long, default_value = "8m", value_parser = parse_size)]
    max_body: usize,
    /// The ledger's page cache (suffixes k, m, g). A projection catching up over a history
    /// larger than this reads every page from the file again; memory is used as pages are
    /// read, up to this size.
    #[arg(long, env = "LOOM_CACHE", default_value = "256m", value_parser = parse_size)]
    cache: usize,
    /// Write-ahead log written between checkpoints (suffixes k, m, g): each checkpoint
    /// commits to the database file durably and the log starts over. Four times this much
    /// disk is set aside (ledger.reserve) so that the log can be replayed on a full disk.
    #[arg(long, env = "LOOM_WAL_CHECKPOINT", default_value = "2m", value_parser = parse_size)]
    wal_checkpoint: usize,
    /// Keep the log's disk awake between syncs that come close together, with small reads of
    /// ledger.awake: auto (on a virtio disk, where a disk left idle for tens of microseconds
    /// is slow to sync), on, or off.
    #[arg(long, env = "LOOM_KEEP_DISK_AWAKE", default_value = "auto", value_parser = parse_keep_awake)]
    keep_disk_awake: KeepAwake,
    /// Longest time a request may take to answer, in seconds.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Longest wait for requests in flight at shutdown, in seconds.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Largest wasm module accepted by POST /v1/modules (suffixes k, m, g).
    #[arg(long, env = "LOOM_MAX_MODULE", default_value = "32m", value_parser = parse_size)]
    max_module: usize,
    /// Fuel (about one unit per wasm instruction) one module call may use.
    #[arg(long, env = "LOOM_FUEL", default_value_t = 2_000_000_000)]
    fuel: u64,
    /// Largest linear memory of a module call (suffixes k, m, g).
    #[arg(long, env = "LOOM_MEMORY_LIMIT", default_value = "64m", value_parser = parse_size)]
    memory_limit: usize,
    /// Wall-clock limit of one module call, in milliseconds.
    #[arg(long, env = "LOOM_CALL_TIMEOUT_MS", default_value_t = 10_000)]
    call_timeout_ms: u64,
    /// Events a projection folds per step; twice as many while a per-stream projection
    /// catches up over many streams (more than half this many in a step).
    #[arg(long, env = "LOOM_PROJECTION_BATCH", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    projection_batch: u32,
    /// Most bytes of events a projection reads for one step (suffixes k, m, g): with large
    /// events a step holds fewer than --projection-batch. A catch-up holds two such batches.
    #[arg(long, env = "LOOM_PROJECTION_BATCH_BYTES", default_value = "64m", value_parser = parse_size)]
    projection_batch_bytes: usize,
    /// Most projections catching up at a time (default: the number of CPUs); the others wait
    /// in line, and while others wait each gives its turn up every couple of seconds.
    #[arg(long, env = "LOOM_PROJECTION_CATCH_UPS", value_parser = clap::value_parser!(u32).range(1..))]
    projection_catch_ups: Option<u32>,
    /// Longest wait of a min_position read, in milliseconds.
    #[arg(long, env = "LOOM_MAX_WAIT_MS", default_value_t = 10_000)]
    max_wait_ms: u64,
    /// Longest a client may take to send a request's headers, and longest a kept-alive
    /// connection may sit idle, in milliseconds; then the connection is closed.
    #[arg(long, env = "LOOM_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Most open connections, subscriptions included; more are closed as soon as they are
    /// accepted (keep it below the process's file-descriptor limit).
    #[arg(long, env = "LOOM_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Longest compile of one module (on upload, and at start for stored modules), in
    /// milliseconds; a longer one is stopped and the upload refused (422). Each compile runs
    /// in a child process, so its working memory is returned when it ends.
    #[arg(long, env = "LOOM_COMPILE_TIMEOUT_MS", default_value_t = 60_000)]
    compile_timeout_ms: u64,
    /// Most requests waiting for a projection's min_position at a time; more are answered
    /// 503. A wait holds no thread.
    #[arg(long, env = "LOOM_MAX_WAITS", default_value_t = 4096)]
    max_waits: usize,
    /// Do not serve the web console at /console (the API is unchanged).
    #[arg(long, env = "LOOM_NO_CONSOLE")]
    no_console: bool,
    /// Most bytes of stored events in one JSON page of a list read (`GET /v1/events`,
    /// `POST /v1/events/query`); a page ends early with its Link to the next one.
    #[arg(long, env = "LOOM_MAX_PAGE_BYTES", default_value = "4m", value_parser = parse_size)]
    max_page_bytes: usize,
    /// Longest chain of reactions: a reaction to an event this many reactions away from a
    /// client's append fails its reactor (reactors feeding each other in a loop stop).
    #[arg(long, env = "LOOM_MAX_REACTION_HOPS", default_value_t = 16)]
    max_reaction_hops: u64,
    /// Most events one command may append; a decider answering more fails the command (422).
    #[arg(long, env = "LOOM_MAX_COMMAND_EVENTS", default_value_t = 10_000)]
    max_command_events: usize,
    /// Most bytes of event data one command may append.
    #[arg(long, env = "LOOM_MAX_COMMAND_BYTES", default_value = "8m", value_parser = parse_size)]
    max_command_bytes: usize,
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

fn parse_keep_awake(text: &str) -> Result<KeepAwake, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(KeepAwake::Auto),
        "on" => Ok(KeepAwake::On),
        "off" => Ok(KeepAwake::Off),
        other => Err(format!("{other:?} is not one of auto, on, off")),
    }
}

fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_end_matches("ib").trim_end_matches('b');
    let (digits, factor) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1usize << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    digits
        .trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a size such as 8m, 512k or 1048576"))
}

// glibc's allocator spends much of a request's time in `malloc_consolidate` and its bins
// (every HTTP request's header map is a "large" allocation that makes it sort the small ones
// freed since); mimalloc keeps per-thread free lists (docs/benchmarks/write-path.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if client::unreachable(&e) {
                eprintln!("hint: is the server running there? see --url / LOOM_URL");
            }
            ExitCode::FAILURE
        }
    }
}

/// How many runtime threads `loom serve` starts on `cpus` CPUs, unless `TOKIO_WORKER_THREADS`
/// sets it (`None`: tokio reads the variable): one fewer than the CPUs, at least one. Every
/// append waits for the ledger's writer and its log's sync thread, which then keep a CPU;
/// with a runtime thread per CPU beside them, a woken thread waited for a CPU on two cores,
/// and one runtime thread there served appends, commands and state queries as fast or faster
/// (docs/benchmarks/write-path.md, "One runtime thread fewer than the CPUs").
fn serve_runtime_threads(set_by_env: bool, cpus: usize) -> Option<usize> {
    (!set_by_env).then(|| cpus.saturating_sub(1).max(1))
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::CompileModule = cli.command {
        return compile_module();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(_) = cli.command {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(threads) =
            serve_runtime_threads(std::env::var_os("TOKIO_WORKER_THREADS").is_some(), cpus)
        {
            builder.worker_threads(threads);
        }
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Append(args) => runtime.block_on(client::append(args)),
        Command::Events(args) => runtime.block_on(client::events(args)),
        Command::Stream(args) => runtime.block_on(client::stream(args)),
        Command::Entities { command } => runtime.block_on(entities::entities(command)),
        Command::Modules { command } => runtime.block_on(modules::modules(command)),
        Command::Projections { command } => runtime.block_on(projections::projections(command)),
        Command::Deciders { command } => runtime.block_on(deciders::deciders(command)),
        Command::Run(args) => runtime.block_on(deciders::command(args)),
        Command::Reactors { command } => runtime.block_on(deciders::reactors(command)),
        Command::Cluster { command } => runtime.block_on(cluster::cluster(command)),
        Command::Backup(args) => runtime.block_on(backup::backup(args)),
        Command::Restore(args) => backup::restore(args),
        Command::Verify(args) => backup::verify(args),
        Command::New(args) => new::new(args),
        Command::Deploy(args) => runtime.block_on(deploy::deploy(args)),
        Command::CompileModule => unreachable!("handled before the async runtime starts"),
    }
}

/// `loom compile-module`: stdin → artifact on stdout. A module that cannot be compiled is a
/// message on stderr and exit status 1, which the server reports as the upload's refusal.
fn compile_module() -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading the module from stdin")?;
    match loom_runtime::precompile(&bytes) {
        Ok(artifact) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&artifact)
                .and_then(|()| out.flush())
                .context("writing the compiled module")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("{why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

// Long by design: every flag of `loom serve` mapped to its configuration, in the order `--help`
// lists them.
async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOOM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let tokens = args
        .tokens
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse::<Token>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)
        .context("parsing --token / LOOM_TOKENS")?;
    if let Err(why) = loom_server::check_listen(args.listen, &tokens) {
        bail!(why);
    }
    // Bound first: a cluster node advertises its address.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let options = LedgerOptions {
        cache_bytes: args.cache,
        wal_checkpoint_bytes: args.wal_checkpoint as u64,
        keep_disk_awake: args.keep_disk_awake,
        ..LedgerOptions::default()
    };
    let (ledger, replication, reactors_active) = match &args.cluster.nats {
        Some(nats) => {
            let node = cluster::open(&args.cluster, nats, local, &args.data, options).await?;
            (node.ledger, Some(node.replication), Some(node.sequencing))
        }
        None => {
            let data = args.data.clone();
            let ledger = tokio::task::spawn_blocking(move || Ledger::open(&data, options))
                .await
                .context("opening the ledger")?
                .with_context(|| format!("opening the ledger in {}", args.data.display()))?;
            (Arc::new(ledger), None, None)
        }
    };
    let mut engine_config = EngineConfig {
        batch_events: args.projection_batch as usize,
        // Not 0: `parse_size` refuses it.
        batch_bytes: args.projection_batch_bytes,
        max_reaction_hops: args.max_reaction_hops,
        max_command_events: args.max_command_events,
        max_command_bytes: args.max_command_bytes,
        reactors_active,
        ..EngineConfig::default()
    };
    if let Some(n) = args.projection_catch_ups {
        engine_config.catch_ups = n as usize;
    }
    engine_config.runtime.fuel_per_call = args.fuel.max(1);
    engine_config.runtime.memory_limit = args.memory_limit;
    engine_config.runtime.call_timeout = Duration::from_millis(args.call_timeout_ms.max(1));
    engine_config.runtime.max_module_size = args.max_module;
    // Compile in a child: a compile cannot be interrupted, and the compiler's working
    // memory, kept by the allocator afterwards, goes back to the system when the child exits.
    // `/proc/self/exe` is this very executable even if the file was replaced since it
    // started, so the artifact always matches this process's wasmtime.
    engine_config.runtime.compiler =
        loom_runtime::Compiler::Process(loom_runtime::CompilerProcess {
            program: "/proc/self/exe".into(),
            args: vec!["compile-module".into()],
            deadline: Duration::from_millis(args.compile_timeout_ms.max(1)),
        });
    let engine = {
        let ledger = ledger.clone();
        tokio::task::spawn_blocking(move || Engine::open(ledger, engine_config))
            .await
            .context("opening the engine")?
            .context("opening the engine (modules and projections)")?
    };
    let engine = Arc::new(engine);
    let config = Config {
        max_body_bytes: args.max_body,
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        tokens,
        max_module_bytes: args.max_module,
        max_wait: Duration::from_millis(args.max_wait_ms),
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        max_connections: args.max_connections.max(1),
        max_waits: args.max_waits.max(1),
        max_page_bytes: args.max_page_bytes.max(1),
        replication,
        console: !args.no_console,
        ..Config::default()
    };
    let open = config.tokens.is_empty();
    let console = config.console;
    let state = AppState::new(engine.clone(), config);
    eprintln!(
        "loom listening on http://{local} (data: {}, auth: {})",
        args.data.display(),
        if open {
            "open, loopback only"
        } else {
            "bearer tokens"
        }
    );
    if console {
        eprintln!("loom console at http://{local}/console");
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(loom_server::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    shutdown_signal().await;
    eprintln!("loom: shutting down, finishing requests in flight");
    let _ = stop_tx.send(());
    match tokio::time::timeout(Duration::from_secs(args.shutdown_grace), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e).context("serving HTTP"),
        Ok(Err(e)) => return Err(e).context("the server task failed"),
        Err(_) => eprintln!(
            "loom: requests still running after {}s; closing anyway",
            args.shutdown_grace
        ),
    }
    // Projection workers first (they read the ledger), then the ledger's writer.
    tokio::task::spawn_blocking(move || {
        engine.shutdown();
        ledger.shutdown();
    })
    .await
    .context("shutting the engine and the ledger down")?;
    eprintln!("loom: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Whether to draw for a person (progress bars, tables) rather than for a program.
pub(crate) fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::serve_runtime_threads;

    #[test]
    fn serve_leaves_a_cpu_to_the_write_path_unless_told_otherwise() {
        assert_eq!(serve_runtime_threads(false, 2), Some(1));
        assert_eq!(serve_runtime_threads(false, 8), Some(7));
        // One CPU (or a process pinned to one): still one runtime thread.
        assert_eq!(serve_runtime_threads(false, 1), Some(1));
        // `TOKIO_WORKER_THREADS` set: tokio reads it.
        assert_eq!(serve_runtime_threads(true, 8), None);
    }
}
