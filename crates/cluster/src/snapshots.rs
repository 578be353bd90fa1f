//! Snapshots in the cluster: backups of a node's database (`Ledger::backup_to`) kept in a
//! JetStream object store (`{stream}_snapshots`, replicated like the stream), named by the log
//! sequence they cover so that the latest is the one with the greatest name. A node started
//! on an empty data directory restores the latest one and reads only the rest of the stream.

use std::collections::HashMap;
use std::path::Path;

use async_nats::jetstream::{self, object_store};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::{Cluster, ClusterError, ClusterOptions};

/// One snapshot in the cluster's object store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Its name in the object store (`seq-{log sequence, 20 digits}`).
    pub name: String,
    /// The log sequence it covers: a node restored from it reads the stream after this.
    pub log_sequence: u64,
    /// The last position in it.
    pub head: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// The node that took it.
    pub node: String,
}

fn name_of(log_sequence: u64) -> String {
    format!("seq-{log_sequence:020}")
}

impl SnapshotInfo {
    fn of(info: &object_store::ObjectInfo) -> Option<SnapshotInfo> {
        let log_sequence = info.name.strip_prefix("seq-")?.parse().ok()?;
        let number = |key: &str| info.metadata.get(key).and_then(|v| v.parse().ok());
        Some(SnapshotInfo {
            name: info.name.clone(),
            log_sequence,
            head: number("head").unwrap_or(0),
            bytes: info.size as u64,
            node: info.metadata.get("node").cloned().unwrap_or_default(),
        })
    }
}

/// The object store, created if missing.
pub(crate) async fn ensure_store(
    js: &jetstream::Context,
    options: &ClusterOptions,
) -> Result<object_store::ObjectStore, ClusterError> {
    let bucket = options.snapshot_bucket();
    if let Ok(store) = js.get_object_store(&bucket).await {
        return Ok(store);
    }
    js.create_object_store(object_store::Config {
        bucket: bucket.clone(),
        description: Some("Loom: snapshots of nodes' databases, by log sequence".into()),
        storage: jetstream::stream::StorageType::File,
        num_replicas: options.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::new(&format!("creating the object store {bucket}"), e))
}

impl Cluster {
    /// Stores a backup file of this node (`Ledger::backup_to`) as the snapshot of
    /// `log_sequence`.
    pub async fn put_snapshot(
        &self,
        file: &Path,
        head: u64,
        log_sequence: u64,
    ) -> Result<SnapshotInfo, ClusterError> {
        let store = ensure_store(&self.js, &self.shared.options).await?;
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClusterError::new(&format!("opening {}", file.display()), e))?;
        let meta = object_store::ObjectMetadata {
            name: name_of(log_sequence),
            description: Some(format!(
                "positions 1..={head}, log sequence {log_sequence}, from node {}",
                self.shared.options.node
            )),
            metadata: HashMap::from([
                ("head".to_owned(), head.to_string()),
                ("node".to_owned(), self.shared.options.node.clone()),
            ]),
            ..Default::default()
        };
        let info = store
            .put(meta, &mut reader)
            .await
            .map_err(|e| ClusterError::new("storing the snapshot", e))?;
        SnapshotInfo::of(&info).ok_or_else(|| ClusterError("a snapshot without its name".into()))
    }

    /// The snapshots in the object store, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotInfo>, ClusterError> {
        let store = ensure_store(&self.js, &self.shared.options).await?;
        let mut list = store
            .list()
            .await
            .map_err(|e| ClusterError::new("listing the snapshots", e))?;
        let mut all = Vec::new();
        while let Some(info) = list.next().await {
            let info = info.map_err(|e| ClusterError::new("listing the snapshots", e))?;
            if !info.deleted
                && let Some(s) = SnapshotInfo::of(&info)
            {
                all.push(s);
            }
        }
        all.sort_by_key(|s| s.log_sequence);
        Ok(all)
    }

    /// Downloads the latest snapshot to `file` (which must not exist); `None` when there is
    /// none. The caller checks it before using it.
    pub async fn download_latest_snapshot(
        &self,
        file: &Path,
    ) -> Result<Option<SnapshotInfo>, ClusterError> {
        let Some(latest) = self.snapshots().await?.pop() else {
            return Ok(None);
        };
        let store = ensure_store(&self.js, &self.shared.options).await?;
        let mut object = store
            .get(&latest.name)
            .await
            .map_err(|e| ClusterError::new(&format!("reading snapshot {}", latest.name), e))?;
        let write =
            |e: std::io::Error| ClusterError::new(&format!("writing {}", file.display()), e);
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .await
            .map_err(write)?;
        tokio::io::copy(&mut object, &mut out)
            .await
            .map_err(|e| ClusterError::new(&format!("reading snapshot {}", latest.name), e))?;
        out.flush().await.map_err(write)?;
        out.sync_all().await.map_err(write)?;
        Ok(Some(latest))
    }

    /// Records that this node started from the snapshot of `log_sequence` (shown in its
    /// status).
    pub fn restored_from(&self, log_sequence: u64) {
        *self.shared.restored_from.lock().expect("restored lock") = Some(log_sequence);
    }
}

/// What a trim did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trimmed {
    /// The snapshots deleted (older than the ones kept).
    pub deleted_snapshots: Vec<String>,
    /// The stream now begins at this sequence (the messages before it are gone).
    pub first_sequence: u64,
    /// Messages removed from the stream.
    pub purged_messages: u64,
}

impl Cluster {
    /// Keeps the newest `keep` snapshots (at least 1), deletes the older ones, and removes
    /// from the stream every message the oldest kept snapshot covers: a new node starts from
    /// a snapshot, and a node that had applied less than that must be started again from one.
    ///
    /// Unless `force`, it refuses while a node that says where it is (see
    /// [`crate::PeerStatus`]) has applied less than the oldest kept snapshot covers: that node
    /// could not follow any more.
    pub async fn trim(&self, keep: usize, force: bool) -> Result<Trimmed, ClusterError> {
        let keep = keep.max(1);
        let mut all = self.snapshots().await?;
        if all.is_empty() {
            return Err(ClusterError(
                "there is no snapshot: take one first (loom cluster snapshot); the stream is \
                 all a new node could start from"
                    .into(),
            ));
        }
        let oldest_kept = all[all.len().saturating_sub(keep)].log_sequence;
        let behind: Vec<String> = self
            .shared
            .peers
            .lock()
            .expect("peers lock")
            .iter()
            .filter(|p| p.applied < oldest_kept)
            .map(|p| format!("{} (applied {})", p.node, p.applied))
            .collect();
        if !behind.is_empty() && !force {
            return Err(ClusterError(format!(
                "not trimmed: the oldest snapshot kept covers log sequence {oldest_kept}, and \
                 some nodes have not applied that far: {}; they could not follow a trimmed \
                 stream. Wait for them, or force it (they then start again from a snapshot)",
                behind.join(", ")
            )));
        }
        let store = ensure_store(&self.js, &self.shared.options).await?;
        let old = all.len().saturating_sub(keep);
        let mut deleted = Vec::new();
        for s in all.drain(..old) {
            store
                .delete(&s.name)
                .await
                .map_err(|e| ClusterError::new(&format!("deleting snapshot {}", s.name), e))?;
            deleted.push(s.name);
        }
        let first_sequence = all[0].log_sequence + 1;
        let stream = self
            .js
            .get_stream(&self.shared.options.stream)
            .await
            .map_err(|e| ClusterError::new("opening the stream", e))?;
        let purged = stream
            .purge()
            .sequence(first_sequence)
            .await
            .map_err(|e| ClusterError::new("trimming the stream", e))?;
        tracing::info!(
            first_sequence,
            purged = purged.purged,
            deleted = deleted.len(),
            "trimmed the cluster's log below the oldest kept snapshot"
        );
        Ok(Trimmed {
            deleted_snapshots: deleted,
            first_sequence,
            purged_messages: purged.purged,
        })
    }
}
