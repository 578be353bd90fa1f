//! `loom deploy`: builds a reducer crate for wasm, uploads the module, registers its entities
//! and applies the definitions of its `loom.toml`, printing what changed. Running it again
//! with nothing changed changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use loom_client::{Client, Outcome};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Connection;

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    conn: Connection,
    /// The crate to deploy (with its loom.toml).
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// Build with this cargo profile.
    #[arg(long, default_value = "release")]
    profile: String,
}

/// `loom.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    entities: BTreeMap<String, EntityEntry>,
    #[serde(default)]
    projections: BTreeMap<String, ProjectionEntry>,
    #[serde(default)]
    deciders: BTreeMap<String, DeciderEntry>,
    #[serde(default)]
    reactors: BTreeMap<String, ReactorEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityEntry {
    /// A registration file (JSON), relative to the crate, or `derive`: from the JSON Schemas
    /// the module derives from its types.
    registration: Option<PathBuf>,
    open: Option<bool>,
    commands_only: Option<bool>,
    reactors: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectionEntry {
    reducer: Option<String>,
    selector: Option<Value>,
    partition: Option<String>,
    strict: Option<bool>,
    on_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeciderEntry {
    reducer: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReactorEntry {
    reducer: Option<String>,
    selector: Option<Value>,
    sink: Option<String>,
    react_to_own: Option<bool>,
}

/// Builds the crate for wasm32-unknown-unknown; answers the module file.
fn build(dir: &Path, profile: &str) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let run = || {
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--lib", "--target", "wasm32-unknown-unknown"])
            .args([
                "--profile",
                profile,
                "--message-format",
                "json-render-diagnostics",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .stderr(Stdio::piped())
            .output()
            .context("running cargo (is Rust installed?)")
    };
    let mut out = run()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success()
        && stderr.contains("wasm32-unknown-unknown")
        && stderr.contains("may not be installed")
    {
        eprintln!("adding the wasm32-unknown-unknown target with rustup");
        let added = Command::new("rustup")
            .args(["target", "add", "wasm32-unknown-unknown"])
            .status();
        if !matches!(added, Ok(s) if s.success()) {
            bail!(
                "the wasm32-unknown-unknown target is missing and rustup could not add it; run: rustup target add wasm32-unknown-unknown"
            );
        }
        out = run()?;
    }
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("building {} for wasm failed (above)", manifest.display());
    }
    // The artifact is the one `.wasm` file of the package's cdylib.
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|x| x == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| {
            anyhow!(
                "cargo built no .wasm file: does {} say crate-type = [\"cdylib\"]?",
                manifest.display()
            )
        })
}

/// The registration of `entity` from the schemas the module derived from its types: every
/// event type a projection or decider `in` that entity decodes, with the schema of its data.
/// A type two reducers decode with different schemas must satisfy both.
fn derived_registration(
    module: &serde_json::Map<String, Value>,
    entity: &str,
) -> anyhow::Result<Value> {
    let reducers: Vec<&Value> = module
        .get("reducers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r["entity"] == entity)
        .filter(|r| {
            r["kinds"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "projection" || k == "decider"))
        })
        .collect();
    if reducers.is_empty() {
        bail!(
            "entity {entity}: registration = \"derive\", but no projection or decider of the \
             module is `in \"{entity}\"` (ABI v2 modules built with loom_guest::module! say so)"
        );
    }
    let mut events = serde_json::Map::new();
    for r in reducers {
        let name = r["name"].as_str().unwrap_or("?");
        let Some(types) = r["events"].as_array() else {
            bail!(
                "entity {entity}: reducer {name} takes events of any type, so its registration \
                 cannot be derived; name a registration file instead"
            );
        };
        let Some(schemas) = r["schemas"]["events"].as_object() else {
            bail!(
                "entity {entity}: reducer {name} derives no JSON Schema for its events: derive \
                 schemars::JsonSchema on its event enum and turn on loom-guest's `schemars` \
                 feature, or name a registration file"
            );
        };
        for ty in types.iter().filter_map(Value::as_str) {
            let entry = events.entry(ty).or_insert_with(|| json!({}));
            let Some(schema) = schemas.get(ty) else {
                continue; // data of any form (a variant without fields)
            };
            entry["schema"] = match entry.get("schema") {
                None => schema.clone(),
                Some(s) if s == schema => continue,
                Some(s) => json!({ "allOf": [s, schema] }),
            };
        }
    }
    Ok(json!({ "events": events }))
}

/// `created`, `updated` or `unchanged`, comparing what was there with what is now.
fn said(before: Option<&Value>, after: &Value, created: bool) -> &'static str {
    match before {
        _ if created => "created",
        Some(b) if b == after => "unchanged",
        _ => "updated",
    }
}

// Long by design: the steps of a deployment, each printing what it did.
pub(crate) async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.path;
    let text = std::fs::read_to_string(dir.join("loom.toml")).with_context(|| {
        format!(
            "reading {} (`loom new NAME` writes one)",
            dir.join("loom.toml").display()
        )
    })?;
    let manifest: Manifest = toml::from_str(&text).context("reading loom.toml")?;
    let client: Client = args.conn.client(Duration::from_secs(300))?;

    eprintln!("building {} for wasm", dir.display());
    let wasm = build(dir, &args.profile)?;
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let (module, created) = client
        .upload_module(bytes)
        .await
        .context("uploading the module")?;
    let reducers: Vec<String> = module
        .other
        .get("reducers")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let kinds: Vec<&str> = r["kinds"]
                        .as_array()
                        .map(|k| k.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    format!(
                        "{} ({})",
                        r["name"].as_str().unwrap_or("?"),
                        kinds.join(", ")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "module {} {}: {}",
        module.id,
        if created { "uploaded" } else { "unchanged" },
        if reducers.is_empty() {
            module.exports.join(", ")
        } else {
            reducers.join(", ")
        }
    );
    let id = module.id;

    for (name, e) in &manifest.entities {
        let mut spec: Value = match &e.registration {
            Some(file) if file.as_os_str() == "derive" => {
                derived_registration(&module.other, name)?
            }
            Some(file) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?
            }
            None => json!({}),
        };
        if let Some(open) = e.open {
            spec["open"] = open.into();
        }
        if let Some(c) = e.commands_only {
            spec["commands_only"] = c.into();
        }
        if let Some(r) = &e.reactors {
            spec["reactors"] = json!(r);
        }
        let before = client.entity(name).await.ok();
        let (after, outcome) = client
            .put_entity(name, &spec)
            .await
            .with_context(|| format!("registering entity {name}"))?;
        println!(
            "entity {name}: {}",
            said(before.as_ref(), &after, outcome == Outcome::Created)
        );
    }

    for (name, p) in &manifest.projections {
        let mut spec = json!({ "module": id });
        if let Some(r) = &p.reducer {
            spec["reducer"] = r.as_str().into();
        }
        if let Some(s) = &p.selector {
            spec["selector"] = s.clone();
        }
        if let Some(part) = &p.partition {
            spec["partition"] = part.as_str().into();
        }
        if let Some(s) = p.strict {
            spec["strict"] = s.into();
        }
        if let Some(o) = &p.on_error {
            spec["on_error"] = o.as_str().into();
        }
        let defined = client
            .put_projection(name, &spec)
            .await
            .with_context(|| format!("defining projection {name}"))?;
        let what = match defined.outcome {
            Outcome::Created => "created, catching up",
            Outcome::Upgrading => "changed: the new version builds while the old one serves",
            _ => "unchanged",
        };
        println!("projection {name}: {what}");
    }

    for (entity, d) in &manifest.deciders {
        let before = client.decider(entity).await.ok();
        let defined = client
            .put_decider(entity, &id, d.reducer.as_deref())
            .await
            .with_context(|| format!("binding the decider of {entity}"))?;
        let same = before.as_ref().is_some_and(|b| {
            b["module"] == defined.status["module"] && b["reducer"] == defined.status["reducer"]
        });
        let what = match (defined.outcome, same) {
            (Outcome::Created, _) => "bound",
            (_, true) => "unchanged",
            _ => "rebound",
        };
        println!("decider {entity}: {what}");
    }

    for (name, r) in &manifest.reactors {
        let mut spec = json!({ "module": id });
        if let Some(x) = &r.reducer {
            spec["reducer"] = x.as_str().into();
        }
        if let Some(s) = &r.selector {
            spec["selector"] = s.clone();
        }
        if let Some(s) = &r.sink {
            spec["sink"] = s.as_str().into();
        }
        if let Some(o) = r.react_to_own {
            spec["react_to_own"] = o.into();
        }
        let before = client.reactor(name).await.ok().map(|s| s["spec"].clone());
        let defined = client
            .put_reactor(name, &spec)
            .await
            .with_context(|| format!("defining reactor {name}"))?;
        println!(
            "reactor {name}: {}",
            said(
                before.as_ref(),
                &defined.status["spec"],
                defined.outcome == Outcome::Created
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}
