//! `loom projections`: define, inspect, read and steer projections, with a live progress bar
//! while one catches up or rebuilds (`--wait`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use loom_client::{Outcome, ProjectionAction, StateQuery};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::client::Connection;
use crate::modules::{TIMEOUT, push};

/// Partition modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PartitionArg {
    /// One state per stream ({entity}/{key}).
    Stream,
    /// One state for everything selected.
    Single,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    conn: Connection,
    /// Projection name.
    name: String,
    /// Module id (sha256:…) to run.
    #[arg(long, required_unless_present = "wasm", conflicts_with = "wasm")]
    module: Option<String>,
    /// A .wasm file: push it, then use it.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Which events to fold, as a selector in JSON:
    /// {"entity", "keys": […], "types": […], "data": JSONPath, "meta": JSONPath}.
    #[arg(long, conflicts_with = "entity")]
    selector: Option<String>,
    /// Shorthand for --selector '{"entity":"ENTITY"}'.
    #[arg(long)]
    entity: Option<String>,
    /// stream: one state per stream; single: one state for everything.
    #[arg(long, value_enum, default_value_t = PartitionArg::Stream)]
    partition: PartitionArg,
    /// The reducer of the module to run (ABI v2 modules; default: the one that fits).
    #[arg(long)]
    reducer: Option<String>,
    /// Wait (with a progress bar on a terminal) until the projection has caught up.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StateArgs {
    #[command(flatten)]
    conn: Connection,
    /// Projection name.
    name: String,
    /// The stream's entity (stream projections).
    entity: Option<String>,
    /// The stream's key (may contain '/').
    #[arg(requires = "entity")]
    key: Option<String>,
    /// The state after every event up to this position (replayed).
    #[arg(long, conflicts_with_all = ["at_time", "min_position"])]
    at_position: Option<u64>,
    /// The state at this time (RFC 3339, replayed).
    #[arg(long, conflicts_with = "min_position")]
    at_time: Option<String>,
    /// Wait until the projection has folded everything up to this position.
    #[arg(long)]
    min_position: Option<u64>,
    /// Longest wait for --min-position, in milliseconds (the server caps it).
    #[arg(long, requires = "min_position")]
    timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    conn: Connection,
    /// Projection name.
    name: String,
    /// The stream's entity (stream projections).
    entity: Option<String>,
    /// The stream's key (may contain '/').
    #[arg(requires = "entity")]
    key: Option<String>,
    /// The query's parameters, JSON (default {}).
    #[arg(long, short = 'p', default_value = "{}")]
    params: String,
    /// Wait until the projection has folded everything up to this position.
    #[arg(long)]
    min_position: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectionsCommand {
    /// Create or change a projection (a changed module or selector builds the new version in
    /// the background; the current one serves until it has caught up).
    Put(PutArgs),
    /// List projections with their status.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one projection's status.
    Get {
        #[command(flatten)]
        conn: Connection,
        /// Projection name.
        name: String,
    },
    /// Read a state: `state NAME` (single) or `state NAME ENTITY KEY` (per stream).
    State(StateArgs),
    /// List the keys (streams) with state.
    Keys {
        #[command(flatten)]
        conn: Connection,
        /// Projection name.
        name: String,
        /// Only keys after this one.
        #[arg(long)]
        after: Option<String>,
        /// Most keys to print (default: all).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Call the module's query export with parameters.
    Query(QueryArgs),
    /// Start again from position 0.
    Rebuild {
        #[command(flatten)]
        conn: Connection,
        /// Projection name.
        name: String,
        /// Wait (with a progress bar on a terminal) until the rebuild has caught up.
        #[arg(long)]
        wait: bool,
    },
    /// Pause a projection (its state is still served).
    Pause {
        #[command(flatten)]
        conn: Connection,
        /// Projection name.
        name: String,
    },
    /// Resume a paused or failed projection (a failed one retries the failing event).
    Resume {
        #[command(flatten)]
        conn: Connection,
        /// Projection name.
        name: String,
        /// Wait (with a progress bar on a terminal) until it has caught up.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a projection and its state.
    Delete {
        #[command(flatten)]
        conn: Connection,
        /// Projection name.
        name: String,
    },
}

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// A status in one or two lines, for people.
fn describe(st: &Value) -> String {
    let spec = &st["spec"];
    let mut text = format!(
        "{}  {}  position {}/{} (lag {})  {} keys  {} events  generation {}  module {}  partition {}",
        s(st, "name"),
        s(st, "status"),
        n(st, "position"),
        n(st, "head"),
        n(st, "lag"),
        n(st, "keys"),
        n(st, "events_applied"),
        n(st, "generation"),
        s(spec, "module"),
        s(spec, "partition"),
    );
    if let Some(sel) = spec
        .get("selector")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
    {
        text.push_str(&format!("  selector {sel}"));
    }
    if let Some(e) = st.get("last_error") {
        text.push_str(&format!(
            "\n  failed at position {}: {}",
            n(e, "position"),
            s(e, "message")
        ));
    }
    if let Some(next) = st.get("next") {
        text.push_str(&format!(
            "\n  next: generation {} {} position {}/{}  module {}",
            n(next, "generation"),
            s(next, "status"),
            n(next, "position"),
            n(next, "head"),
            s(&next["spec"], "module"),
        ));
        if let Some(e) = next.get("last_error") {
            text.push_str(&format!(
                "\n  next failed at position {}: {}",
                n(e, "position"),
                s(e, "message")
            ));
        }
    }
    text
}

/// The stream `ENTITY KEY` names, if any.
fn subject(entity: &Option<String>, key: &Option<String>) -> anyhow::Result<Option<String>> {
    match (entity, key) {
        (Some(e), Some(k)) => Ok(Some(format!("{e}/{k}"))),
        (Some(_), None) => {
            bail!("give both ENTITY and KEY, e.g. `loom projections state carts cart 42`")
        }
        _ => Ok(None),
    }
}

pub(crate) async fn projections(command: ProjectionsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProjectionsCommand::Put(args) => put(args).await,
        ProjectionsCommand::List { conn } => {
            let list = Value::from(conn.client(TIMEOUT)?.projections().await?);
            if conn.json {
                println!("{list}");
            } else {
                let items = list.as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    println!("no projections");
                }
                for p in &items {
                    println!("{}", describe(p));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ProjectionsCommand::Get { conn, name } => {
            let st = conn.client(TIMEOUT)?.projection(&name).await?;
            if conn.json {
                println!("{st}");
            } else {
                println!("{}", describe(&st));
            }
            Ok(ExitCode::SUCCESS)
        }
        ProjectionsCommand::State(args) => state(args).await,
        ProjectionsCommand::Keys {
            conn,
            name,
            after,
            limit,
        } => keys(conn, name, after, limit).await,
        ProjectionsCommand::Query(args) => query(args).await,
        ProjectionsCommand::Rebuild { conn, name, wait } => {
            let st = conn
                .client(TIMEOUT)?
                .projection_action(&name, ProjectionAction::Rebuild)
                .await?;
            finish(&conn, &name, st, wait, "rebuilding").await
        }
        ProjectionsCommand::Pause { conn, name } => {
            let st = conn
                .client(TIMEOUT)?
                .projection_action(&name, ProjectionAction::Pause)
                .await?;
            finish(&conn, &name, st, false, "paused").await
        }
        ProjectionsCommand::Resume { conn, name, wait } => {
            let st = conn
                .client(TIMEOUT)?
                .projection_action(&name, ProjectionAction::Resume)
                .await?;
            finish(&conn, &name, st, wait, "resumed").await
        }
        ProjectionsCommand::Delete { conn, name } => {
            conn.client(TIMEOUT)?.delete_projection(&name).await?;
            if conn.json {
                println!("{}", json!({ "deleted": name }));
            } else {
                println!("deleted projection {name} and its state");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let conn = &args.conn;
    let module = match (&args.module, &args.wasm) {
        (Some(m), _) => m.clone(),
        (None, Some(file)) => {
            let (record, created) = push(conn, file).await?;
            let id = s(&record, "id").to_owned();
            if !conn.json {
                eprintln!(
                    "{} module {id}",
                    if created { "pushed" } else { "already stored:" }
                );
            }
            id
        }
        (None, None) => bail!("give --module ID or --wasm FILE"),
    };
    let selector: Value = match (&args.selector, &args.entity) {
        (Some(text), _) => {
            serde_json::from_str(text).map_err(|e| anyhow!("--selector is not JSON: {e}"))?
        }
        (None, Some(entity)) => json!({ "entity": entity }),
        (None, None) => json!({}),
    };
    let partition = match args.partition {
        PartitionArg::Stream => "stream",
        PartitionArg::Single => "single",
    };
    let mut body = json!({ "module": module, "selector": selector, "partition": partition });
    if let Some(r) = &args.reducer {
        body["reducer"] = json!(r);
    }
    let defined = conn
        .client(TIMEOUT)?
        .put_projection(&args.name, &body)
        .await?;
    let what = match defined.outcome {
        Outcome::Created => "created",
        Outcome::Upgrading => "upgrading",
        _ => "unchanged",
    };
    finish(conn, &args.name, defined.status, args.wait, what).await
}

/// Prints the outcome of a change; with `wait`, first follows the projection (the building
/// generation during an upgrade) until it has caught up.
async fn finish(
    conn: &Connection,
    name: &str,
    st: Value,
    wait: bool,
    what: &str,
) -> anyhow::Result<ExitCode> {
    let st = if wait {
        let target = st
            .get("next")
            .map_or_else(|| n(&st, "generation"), |next| n(next, "generation"));
        follow(conn, name, target).await?
    } else {
        st
    };
    if conn.json {
        println!("{st}");
    } else {
        println!("{what}: {}", describe(&st));
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls the status until generation `target` serves and is running; a progress bar shows
/// position/head on a terminal.
async fn follow(conn: &Connection, name: &str, target: u64) -> anyhow::Result<Value> {
    let bar = if crate::stderr_is_terminal() && !conn.json {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:<24} {bar:40} {human_pos}/{human_len} events  {elapsed}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    } else {
        ProgressBar::hidden()
    };
    let client = conn.client(TIMEOUT)?;
    let result = loop {
        let st = client.projection(name).await?;
        let (gen_status, building) = if n(&st, "generation") >= target {
            (&st, false)
        } else if let Some(next) = st.get("next").filter(|nx| n(nx, "generation") == target) {
            (next, true)
        } else {
            break Err(anyhow!(
                "generation {target} of projection {name} was replaced by another change \
                 before it caught up"
            ));
        };
        bar.set_length(n(gen_status, "head"));
        bar.set_position(n(gen_status, "position"));
        let status = s(gen_status, "status");
        bar.set_message(format!(
            "{name}: {}{}",
            status.replace('_', " "),
            if building { " (next)" } else { "" }
        ));
        match status {
            "running" if !building => break Ok(st),
            "failed" => {
                let e = &gen_status["last_error"];
                break Err(anyhow!(
                    "projection {name} failed at position {}: {}",
                    n(e, "position"),
                    s(e, "message")
                ));
            }
            "paused" => {
                break Err(anyhow!(
                    "projection {name} is paused at position {}; resume it with `loom \
                     projections resume {name} --wait`",
                    n(gen_status, "position")
                ));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    bar.finish_and_clear();
    result
}

async fn state(args: StateArgs) -> anyhow::Result<ExitCode> {
    let conn = &args.conn;
    let stream = subject(&args.entity, &args.key)?;
    let mut query = match (args.at_position, &args.at_time, args.min_position) {
        (Some(p), _, _) => StateQuery::at_position(p),
        (None, Some(t), _) => StateQuery::at_time(t),
        (None, None, Some(p)) => StateQuery::min_position(p),
        (None, None, None) => StateQuery::live(),
    };
    if let Some(t) = args.timeout_ms {
        query = query.timeout_ms(t);
    }
    let answer = conn
        .client(TIMEOUT)?
        .state(&args.name, stream.as_deref(), &query)
        .await?;
    if conn.json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!(
            "{} at position {}: {} events, created {}, updated {}",
            stream.as_deref().unwrap_or(&args.name),
            answer.position,
            answer.events_applied,
            answer.created_at.as_deref().unwrap_or("-"),
            answer.updated_at.as_deref().unwrap_or("-"),
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&answer.state).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(
    conn: Connection,
    name: String,
    after: Option<String>,
    limit: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let client = conn.client(TIMEOUT)?;
    let mut after = after;
    let mut printed = 0usize;
    let mut all = Vec::new();
    loop {
        let page = limit.map_or(1000, |l| (l - printed).min(1000));
        if page == 0 {
            break;
        }
        let (keys, more) = client.keys(&name, after.as_deref(), page as u64).await?;
        let full = more && keys.len() == page;
        printed += keys.len();
        after = keys.last().cloned().or(after);
        if conn.json {
            all.extend(keys);
        } else {
            for k in &keys {
                println!("{k}");
            }
        }
        if !full {
            break;
        }
    }
    if conn.json {
        println!("{}", Value::from(all));
    }
    Ok(ExitCode::SUCCESS)
}

async fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let conn = &args.conn;
    // Sent as written (numbers exact).
    let params: Box<RawValue> =
        serde_json::from_str(&args.params).map_err(|e| anyhow!("--params is not JSON: {e}"))?;
    let stream = subject(&args.entity, &args.key)?;
    let answer = conn
        .client(TIMEOUT)?
        .query_projection(&args.name, stream.as_deref(), &params, args.min_position)
        .await?;
    if conn.json {
        println!("{answer}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}
