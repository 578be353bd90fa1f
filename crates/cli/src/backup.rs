//! `loom backup`, `loom restore`, `loom verify`: copies of a node's database and checks of one.
//!
//! A backup is taken from a running server (`GET /v1/backup`) without stopping it. A restore
//! places a backup as the database of a new data directory, which then opens as a single node,
//! or as a cluster node that goes on with the cluster's log after the backup's log sequence (a
//! new node joins without reading the whole log). `verify` opens a data directory (the server
//! must not be running on it) and checks every event and index.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use loom_ledger::{DB_FILE, Ledger, LedgerOptions, WAL_FILE};

use crate::client::Connection;

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    conn: Connection,
    /// The file to write (must not exist).
    #[arg(long)]
    to: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file (from `loom backup`).
    #[arg(long)]
    from: PathBuf,
    /// The data directory to restore into: new, or empty.
    #[arg(long)]
    data: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The data directory to check (no server may be running on it).
    #[arg(long, default_value = "./loom-data")]
    data: PathBuf,
    /// Print JSON instead of text for people.
    #[arg(long)]
    json: bool,
}

/// `loom backup --to FILE`.
pub(crate) async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    if args.to.exists() {
        bail!("{} exists already; choose a new file", args.to.display());
    }
    let client = args.conn.client(Duration::from_secs(60))?;
    let backup = client.backup().await?;
    let (head, log_sequence) = (backup.head, backup.log_sequence);
    let partial = partial_path(&args.to);
    let mut out = std::fs::File::create_new(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut bytes = 0u64;
    let mut body = std::pin::pin!(backup.bytes());
    let written: anyhow::Result<()> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("reading the backup from the server")?;
            out.write_all(&chunk)
                .with_context(|| format!("writing {}", partial.display()))?;
            bytes += chunk.len() as u64;
        }
        out.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &args.to)
        .with_context(|| format!("renaming {} to {}", partial.display(), args.to.display()))?;
    if args.conn.json {
        println!(
            "{}",
            serde_json::json!({"file": args.to, "head": head, "log_sequence": log_sequence,
                "bytes": bytes})
        );
    } else {
        let cluster = match log_sequence {
            0 => String::new(),
            n => format!(", cluster log sequence {n}"),
        };
        println!(
            "backup of positions 1..={head}{cluster}: {bytes} bytes in {}",
            args.to.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    file.with_file_name(name)
}

/// `loom restore --from FILE --data DIR`: the backup becomes DIR's database, checked before it
/// is put in place.
pub(crate) fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    if !args.from.is_file() {
        bail!("{} is not a file", args.from.display());
    }
    if args.data.exists()
        && std::fs::read_dir(&args.data)
            .with_context(|| format!("reading {}", args.data.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new or empty data directory",
            args.data.display()
        );
    }
    // Checked in a directory of its own first, so that a bad file leaves nothing behind.
    let staging = tempfile::Builder::new()
        .prefix(".loom-restore-")
        .tempdir_in(
            args.data
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .context("creating a staging directory beside the data directory")?;
    let staged = staging.path().join(DB_FILE);
    std::fs::copy(&args.from, &staged)
        .with_context(|| format!("copying {}", args.from.display()))?;
    std::fs::File::open(&staged)
        .and_then(|f| f.sync_all())
        .context("syncing the copy")?;
    let verified = check_dir(staging.path())
        .with_context(|| format!("{} is not a usable backup", args.from.display()))?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    std::fs::rename(&staged, args.data.join(DB_FILE))
        .with_context(|| format!("moving the database into {}", args.data.display()))?;
    println!(
        "restored {} events ({} streams) into {}{}",
        verified.events,
        verified.streams,
        args.data.display(),
        match verified.log_sequence {
            0 => String::new(),
            n => format!("; as a cluster node it goes on after log sequence {n}"),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens the ledger in `dir` and checks it. A single node's directory (it has a write-ahead
/// log) is opened as the server opens it, replaying the log; any other (a cluster node's, a
/// restored backup) as it is, so that no log is added to it.
fn check_dir(dir: &Path) -> anyhow::Result<loom_ledger::Verified> {
    let ledger = if dir.join(WAL_FILE).exists() {
        Ledger::open(dir, LedgerOptions::default())
    } else {
        Ledger::open_unlogged(dir, LedgerOptions::default())
    }
    .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    let verified = ledger.verify().context("checking the ledger")?;
    ledger.shutdown();
    Ok(verified)
}

/// `loom verify --data DIR`.
pub(crate) fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    if !args.data.join(DB_FILE).is_file() {
        bail!("{} holds no ledger ({DB_FILE})", args.data.display());
    }
    let verified = check_dir(&args.data)?;
    if args.json {
        println!("{}", serde_json::to_string(&verified)?);
    } else {
        println!(
            "ok: {} events, {} streams, {} entities{}",
            verified.events,
            verified.streams,
            verified.entities,
            match verified.log_sequence {
                0 => String::new(),
                n => format!(", cluster log sequence {n}"),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
