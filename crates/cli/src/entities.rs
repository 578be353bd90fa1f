//! `loom entities`: register and show entities (the event registry).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use percent_encoding::utf8_percent_encode;
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::client::{Connection, SEGMENT, check, read_stdin, send_error};

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
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let client = conn.client(Some(Duration::from_secs(60)))?;
            let url = conn.url(&format!(
                "/v1/entities/{}",
                utf8_percent_encode(&name, SEGMENT)
            ));
            let response = client
                .put(&url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(text)
                .send()
                .await
                .with_context(|| send_error(&url))?;
            let created = response.status() == StatusCode::CREATED;
            let response = check(response).await?;
            let spec: Value = response.json().await.context("reading the answer")?;
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
            let client = conn.client(Some(Duration::from_secs(60)))?;
            let path = match &name {
                Some(n) => format!("/v1/entities/{}", utf8_percent_encode(n, SEGMENT)),
                None => "/v1/entities".to_owned(),
            };
            let url = conn.url(&path);
            let response = client
                .get(&url)
                .send()
                .await
                .with_context(|| send_error(&url))?;
            let response = check(response).await?;
            let value: Value = response.json().await.context("reading the answer")?;
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
