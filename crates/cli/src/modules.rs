//! `loom modules`: push, list, show and delete wasm modules.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

use crate::client::Connection;

#[derive(Debug, Subcommand)]
pub(crate) enum ModulesCommand {
    /// Upload a module (a .wasm file built for wasm32-unknown-unknown). Pushing the same bytes
    /// again is harmless: the id is their SHA-256.
    Push {
        #[command(flatten)]
        conn: Connection,
        /// The .wasm file.
        file: PathBuf,
    },
    /// List the stored modules.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one module.
    Get {
        #[command(flatten)]
        conn: Connection,
        /// Module id (sha256:…).
        id: String,
    },
    /// Delete a module no projection uses.
    Delete {
        #[command(flatten)]
        conn: Connection,
        /// Module id (sha256:…).
        id: String,
    },
}

/// One line about a module, for people.
fn describe(m: &Value) -> String {
    let exports: Vec<&str> = m
        .get("exports")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{}  {} bytes  abi {}  exports {}  uploaded {}",
        m.get("id").and_then(Value::as_str).unwrap_or("?"),
        m.get("size").and_then(Value::as_u64).unwrap_or(0),
        m.get("abi").and_then(Value::as_u64).unwrap_or(0),
        exports.join(", "),
        m.get("uploaded_at").and_then(Value::as_str).unwrap_or("?"),
    )
}

/// Uploads `file`; returns the module record and whether it was new.
pub(crate) async fn push(conn: &Connection, file: &Path) -> anyhow::Result<(Value, bool)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let client = conn.client(Duration::from_secs(300))?;
    let (record, created) = client
        .upload_module(bytes)
        .await
        .with_context(|| format!("pushing {}", file.display()))?;
    Ok((serde_json::to_value(record)?, created))
}

pub(crate) async fn modules(command: ModulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModulesCommand::Push { conn, file } => {
            let (record, created) = push(&conn, &file).await?;
            if conn.json {
                println!("{record}");
            } else {
                println!(
                    "{} {}",
                    if created { "stored" } else { "already stored:" },
                    describe(&record)
                );
            }
        }
        ModulesCommand::List { conn } => {
            let list = serde_json::to_value(conn.client(TIMEOUT)?.modules().await?)?;
            if conn.json {
                println!("{list}");
            } else {
                let items = list.as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    println!("no modules stored");
                }
                for m in &items {
                    println!("{}", describe(m));
                }
            }
        }
        ModulesCommand::Get { conn, id } => {
            let m = serde_json::to_value(conn.client(TIMEOUT)?.module(&id).await?)?;
            if conn.json {
                println!("{m}");
            } else {
                println!("{}", describe(&m));
            }
        }
        ModulesCommand::Delete { conn, id } => {
            conn.client(TIMEOUT)?.delete_module(&id).await?;
            if conn.json {
                println!("{}", serde_json::json!({ "deleted": id }));
            } else {
                println!("deleted module {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a request may take (uploads: five minutes).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);
