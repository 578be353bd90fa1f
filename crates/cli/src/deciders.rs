//! `loom deciders`, `loom command` and `loom reactors`: bind deciders, run commands, define
//! and steer reactors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use loom_client::{Outcome, ReactorAction};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::client::{Connection, read_stdin};
use crate::modules::push;

#[derive(Debug, Subcommand)]
pub(crate) enum DecidersCommand {
    /// Bind a module (exporting evolve and decide) to an entity.
    Put {
        #[command(flatten)]
        conn: Connection,
        /// The entity whose streams the decider decides for.
        entity: String,
        /// Module id (sha256:…).
        #[arg(long, required_unless_present = "wasm", conflicts_with = "wasm")]
        module: Option<String>,
        /// A .wasm file: push it, then use it.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// The decider of the module to bind (ABI v2 modules; default: the one it has).
        #[arg(long)]
        reducer: Option<String>,
    },
    /// List decider bindings.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one entity's decider.
    Get {
        #[command(flatten)]
        conn: Connection,
        /// Entity.
        entity: String,
    },
    /// Unbind an entity's decider (its events stay).
    Delete {
        #[command(flatten)]
        conn: Connection,
        /// Entity.
        entity: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CommandArgs {
    #[command(flatten)]
    conn: Connection,
    /// The entity (a decider must be bound to it).
    entity: String,
    /// The stream key (may contain '/').
    key: String,
    /// The command as JSON, e.g. '{"type":"deposit","amount":10}'; '-' reads stdin.
    command: String,
    /// Makes retries safe: a repeated key returns the first result and writes nothing.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ReactorsCommand {
    /// Create or change a reactor (a changed one keeps its checkpoint).
    Put {
        #[command(flatten)]
        conn: Connection,
        /// Reactor name.
        name: String,
        /// Module id (sha256:…) exporting react.
        #[arg(long, required_unless_present = "wasm", conflicts_with = "wasm")]
        module: Option<String>,
        /// A .wasm file: push it, then use it.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Which events it reacts to, as a selector in JSON:
        /// {"entity", "keys": […], "types": […], "data": JSONPath, "meta": JSONPath}.
        #[arg(long)]
        selector: Option<String>,
        /// Where CloudEvents from `deliver` effects are POSTed (structured mode).
        #[arg(long)]
        sink: Option<String>,
        /// The reactor of the module to run (ABI v2 modules; default: the one it has).
        #[arg(long)]
        reducer: Option<String>,
    },
    /// List reactors with their status.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one reactor's status.
    Get {
        #[command(flatten)]
        conn: Connection,
        /// Reactor name.
        name: String,
    },
    /// Pause a reactor (its checkpoint stays).
    Pause {
        #[command(flatten)]
        conn: Connection,
        /// Reactor name.
        name: String,
    },
    /// Resume a paused or failed reactor (a failed one retries the event it failed on).
    Resume {
        #[command(flatten)]
        conn: Connection,
        /// Reactor name.
        name: String,
    },
    /// Delete a reactor and its checkpoint.
    Delete {
        #[command(flatten)]
        conn: Connection,
        /// Reactor name.
        name: String,
    },
}

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// How long a request may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `--module ID` as is, or `--wasm FILE` pushed first.
async fn module_id(
    conn: &Connection,
    module: Option<String>,
    wasm: Option<PathBuf>,
) -> anyhow::Result<String> {
    match (module, wasm) {
        (Some(m), _) => Ok(m),
        (None, Some(file)) => {
            let (record, created) = push(conn, &file).await?;
            let id = s(&record, "id").to_owned();
            if !conn.json {
                eprintln!(
                    "{} module {id}",
                    if created { "pushed" } else { "already stored:" }
                );
            }
            Ok(id)
        }
        (None, None) => bail!("give --module ID or --wasm FILE"),
    }
}

fn describe_decider(d: &Value) -> String {
    format!(
        "{}  module {}  bound {}",
        s(d, "entity"),
        s(d, "module"),
        s(d, "updated_at")
    )
}

fn describe_reactor(st: &Value) -> String {
    let spec = &st["spec"];
    let mut text = format!(
        "{}  {}  position {}/{} (lag {})  reacted {}  appended {}  commands {}  delivered {}  module {}",
        s(st, "name"),
        s(st, "status"),
        n(st, "position"),
        n(st, "head"),
        n(st, "lag"),
        n(st, "reacted"),
        n(st, "appended"),
        n(st, "commands"),
        n(st, "delivered"),
        s(spec, "module"),
    );
    if let Some(sel) = spec
        .get("selector")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
    {
        text.push_str(&format!("  selector {sel}"));
    }
    if let Some(sink) = spec.get("sink").and_then(Value::as_str) {
        text.push_str(&format!("  sink {sink}"));
    }
    if let Some(e) = st.get("last_error").filter(|e| !e.is_null()) {
        text.push_str(&format!(
            "\n  failed at position {}: {}",
            n(e, "position"),
            s(e, "message")
        ));
    }
    text
}

fn print(conn: &Connection, value: &Value, human: impl FnOnce(&Value) -> String) {
    if conn.json {
        println!("{value}");
    } else {
        println!("{}", human(value));
    }
}

pub(crate) async fn deciders(command: DecidersCommand) -> anyhow::Result<ExitCode> {
    match command {
        DecidersCommand::Put {
            conn,
            entity,
            module,
            wasm,
            reducer,
        } => {
            let module = module_id(&conn, module, wasm).await?;
            let defined = conn
                .client(TIMEOUT)?
                .put_decider(&entity, &module, reducer.as_deref())
                .await?;
            let d = defined.status;
            let what = if defined.outcome == Outcome::Created {
                "bound"
            } else {
                "rebound"
            };
            print(&conn, &d, |d| format!("{what}: {}", describe_decider(d)));
        }
        DecidersCommand::List { conn } => {
            let list = Value::from(conn.client(TIMEOUT)?.deciders().await?);
            if conn.json {
                println!("{list}");
            } else {
                let items = list.as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    println!("no deciders");
                }
                for d in &items {
                    println!("{}", describe_decider(d));
                }
            }
        }
        DecidersCommand::Get { conn, entity } => {
            let d = conn.client(TIMEOUT)?.decider(&entity).await?;
            print(&conn, &d, describe_decider);
        }
        DecidersCommand::Delete { conn, entity } => {
            conn.client(TIMEOUT)?.delete_decider(&entity).await?;
            let v = json!({ "deleted": entity });
            print(&conn, &v, |_| format!("unbound the decider of {entity}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn command(args: CommandArgs) -> anyhow::Result<ExitCode> {
    let conn = &args.conn;
    let text = if args.command == "-" {
        read_stdin()?
    } else {
        args.command.clone()
    };
    // Sent as written (numbers exact).
    let body: Box<RawValue> =
        serde_json::from_str(&text).map_err(|e| anyhow!("the command is not JSON: {e}"))?;
    let outcome = conn
        .client(TIMEOUT)?
        .command(
            &format!("{}/{}", args.entity, args.key),
            &body,
            args.idempotency_key.as_deref(),
        )
        .await?;
    let out = serde_json::to_value(outcome)?;
    print(conn, &out, |o| {
        let events = o["events"].as_array().cloned().unwrap_or_default();
        let mut text = format!(
            "{} at revision {}{}: {} event{}",
            s(o, "subject"),
            n(o, "revision"),
            if o["duplicate"] == true {
                " (a repeat: nothing written)"
            } else {
                ""
            },
            events.len(),
            if events.len() == 1 { "" } else { "s" },
        );
        for e in &events {
            text.push_str(&format!(
                "\n  {} {}  revision {}  position {}",
                s(e, "type"),
                s(e, "id"),
                n(e, "revision"),
                n(e, "position")
            ));
        }
        text
    });
    Ok(ExitCode::SUCCESS)
}

// Long by design: one subcommand: its flags, request and output.
pub(crate) async fn reactors(command: ReactorsCommand) -> anyhow::Result<ExitCode> {
    let (conn, name, action, what) = match command {
        ReactorsCommand::Put {
            conn,
            name,
            module,
            wasm,
            selector,
            sink,
            reducer,
        } => {
            let module = module_id(&conn, module, wasm).await?;
            let selector: Value = match selector {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| anyhow!("--selector is not JSON: {e}"))?,
                None => json!({}),
            };
            let mut body = json!({ "module": module, "selector": selector });
            if let Some(sink) = sink {
                body["sink"] = json!(sink);
            }
            if let Some(r) = reducer {
                body["reducer"] = json!(r);
            }
            let defined = conn.client(TIMEOUT)?.put_reactor(&name, &body).await?;
            let st = defined.status;
            let what = if defined.outcome == Outcome::Created {
                "created"
            } else {
                "changed"
            };
            print(&conn, &st, |st| format!("{what}: {}", describe_reactor(st)));
            return Ok(ExitCode::SUCCESS);
        }
        ReactorsCommand::List { conn } => {
            let list = Value::from(conn.client(TIMEOUT)?.reactors().await?);
            if conn.json {
                println!("{list}");
            } else {
                let items = list.as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    println!("no reactors");
                }
                for r in &items {
                    println!("{}", describe_reactor(r));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ReactorsCommand::Get { conn, name } => {
            let st = conn.client(TIMEOUT)?.reactor(&name).await?;
            print(&conn, &st, describe_reactor);
            return Ok(ExitCode::SUCCESS);
        }
        ReactorsCommand::Pause { conn, name } => (conn, name, ReactorAction::Pause, "paused"),
        ReactorsCommand::Resume { conn, name } => (conn, name, ReactorAction::Resume, "resumed"),
        ReactorsCommand::Delete { conn, name } => {
            conn.client(TIMEOUT)?.delete_reactor(&name).await?;
            let v = json!({ "deleted": name });
            print(&conn, &v, |_| {
                format!("deleted reactor {name} and its checkpoint")
            });
            return Ok(ExitCode::SUCCESS);
        }
    };
    let st = conn.client(TIMEOUT)?.reactor_action(&name, action).await?;
    print(&conn, &st, |st| format!("{what}: {}", describe_reactor(st)));
    Ok(ExitCode::SUCCESS)
}
