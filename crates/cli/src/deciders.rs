//! `loom deciders`, `loom command` and `loom reactors`: bind deciders, run commands, define
//! and steer reactors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use percent_encoding::utf8_percent_encode;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::client::{Connection, SEGMENT, check, read_stdin, send_error};
use crate::modules::{get_json, push};

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

fn seg(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

fn s<'v>(v: &'v Value, k: &str) -> &'v str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

async fn send(
    conn: &Connection,
    method: reqwest::Method,
    path: &str,
    body: Option<String>,
    idempotency_key: Option<&str>,
) -> anyhow::Result<(StatusCode, Value)> {
    let client = conn.client(Some(Duration::from_secs(60)))?;
    let url = conn.url(path);
    let mut req = client.request(method, &url);
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    if let Some(body) = body {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let response = req.send().await.with_context(|| send_error(&url))?;
    let status = response.status();
    let response = check(response).await?;
    if status == StatusCode::NO_CONTENT {
        return Ok((status, Value::Null));
    }
    Ok((status, response.json().await.context("reading the answer")?))
}

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
        } => {
            let module = module_id(&conn, module, wasm).await?;
            let (status, d) = send(
                &conn,
                reqwest::Method::PUT,
                &format!("/v1/deciders/{}", seg(&entity)),
                Some(json!({ "module": module }).to_string()),
                None,
            )
            .await?;
            let what = if status == StatusCode::CREATED {
                "bound"
            } else {
                "rebound"
            };
            print(&conn, &d, |d| format!("{what}: {}", describe_decider(d)));
        }
        DecidersCommand::List { conn } => {
            let list = get_json(&conn, "/v1/deciders").await?;
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
            let d = get_json(&conn, &format!("/v1/deciders/{}", seg(&entity))).await?;
            print(&conn, &d, describe_decider);
        }
        DecidersCommand::Delete { conn, entity } => {
            let path = format!("/v1/deciders/{}", seg(&entity));
            send(&conn, reqwest::Method::DELETE, &path, None, None).await?;
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
    serde_json::from_str::<Value>(&text).map_err(|e| anyhow!("the command is not JSON: {e}"))?;
    let key: Vec<String> = args.key.split('/').map(seg).collect();
    let path = format!("/v1/commands/{}/{}", seg(&args.entity), key.join("/"));
    let (_, out) = send(
        conn,
        reqwest::Method::POST,
        &path,
        Some(text),
        args.idempotency_key.as_deref(),
    )
    .await?;
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
    let (conn, method, path, what) = match command {
        ReactorsCommand::Put {
            conn,
            name,
            module,
            wasm,
            selector,
            sink,
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
            let (status, st) = send(
                &conn,
                reqwest::Method::PUT,
                &format!("/v1/reactors/{}", seg(&name)),
                Some(body.to_string()),
                None,
            )
            .await?;
            let what = if status == StatusCode::CREATED {
                "created"
            } else {
                "changed"
            };
            print(&conn, &st, |st| format!("{what}: {}", describe_reactor(st)));
            return Ok(ExitCode::SUCCESS);
        }
        ReactorsCommand::List { conn } => {
            let list = get_json(&conn, "/v1/reactors").await?;
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
            let st = get_json(&conn, &format!("/v1/reactors/{}", seg(&name))).await?;
            print(&conn, &st, describe_reactor);
            return Ok(ExitCode::SUCCESS);
        }
        ReactorsCommand::Pause { conn, name } => (
            conn,
            reqwest::Method::POST,
            format!("/v1/reactors/{}/pause", seg(&name)),
            "paused",
        ),
        ReactorsCommand::Resume { conn, name } => (
            conn,
            reqwest::Method::POST,
            format!("/v1/reactors/{}/resume", seg(&name)),
            "resumed",
        ),
        ReactorsCommand::Delete { conn, name } => {
            let path = format!("/v1/reactors/{}", seg(&name));
            send(&conn, reqwest::Method::DELETE, &path, None, None).await?;
            let v = json!({ "deleted": name });
            print(&conn, &v, |_| {
                format!("deleted reactor {name} and its checkpoint")
            });
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (_, st) = send(&conn, method, &path, None, None).await?;
    print(&conn, &st, |st| format!("{what}: {}", describe_reactor(st)));
    Ok(ExitCode::SUCCESS)
}
