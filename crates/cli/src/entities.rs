//! `loom entities`: register and show entities (the event registry).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use loom_client::Outcome;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::client::{Connection, read_stdin};

#[derive(Debug, Subcommand)]
pub(crate) enum EntitiesCommand {
    /// Register or replace an entity from a JSON file ("-": stdin):
    /// {"events": {"TYPE": {"schema": {…}}}, "open": false}.
    Put {
        #[command(flatten)]
        conn: Connection,
        /// Entity name.
        name: String,
        /// The registration.
        file: PathBuf,
    },
    /// Show one entity's registration, or all of them.
    Get {
        #[command(flatten)]
        conn: Connection,
        /// Entity name (none: all).
        name: Option<String>,
    },
}

pub(crate) async fn entities(command: EntitiesCommand) -> anyhow::Result<ExitCode> {
    match command {
        EntitiesCommand::Put { conn, name, file } => {
            let text = if file.as_os_str() == "-" {
                read_stdin()?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            // Sent as written: the server reads it (and says what is wrong with it).
            let body: Box<RawValue> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let client = conn.client(Duration::from_secs(60))?;
            let (spec, outcome) = client.put_entity(&name, &body).await?;
            let created = outcome == Outcome::Created;
            if conn.json {
                println!("{spec}");
            } else {
                println!(
                    "{} entity {name} ({})",
                    if created { "registered" } else { "updated" },
                    describe(&spec)
                );
            }
        }
        EntitiesCommand::Get { conn, name } => {
            let client = conn.client(Duration::from_secs(60))?;
            let value: Value = match &name {
                Some(n) => client.entity(n).await?,
                None => Value::Object(client.entities().await?),
            };
            if conn.json {
                println!("{value}");
            } else if let Some(n) = &name {
                println!("{n}: {}", describe(&value));
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else if let Some(map) = value.as_object() {
                if map.is_empty() {
                    println!("no entities registered");
                }
                for (n, spec) in map {
                    println!("{n}: {}", describe(spec));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(spec: &Value) -> String {
    let types: Vec<&str> = spec
        .get("events")
        .and_then(Value::as_object)
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let open = spec.get("open").and_then(Value::as_bool).unwrap_or(false);
    let mut text = if types.is_empty() {
        "no types".to_owned()
    } else {
        format!("types {}", types.join(", "))
    };
    if open {
        text.push_str("; open to any type");
    }
    text
}
