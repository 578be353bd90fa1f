//! The sequencer's lease: one key in a JetStream key-value bucket whose entries expire after
//! the lease time. Taken with `create` (only when no live entry exists), kept with `update`
//! at the revision last written (so that two nodes cannot both renew it).

use async_nats::jetstream::{self, kv};

use super::{ClusterError, ClusterOptions, Sequencer};

const KEY: &str = "sequencer";

pub(crate) async fn ensure_bucket(
    js: &jetstream::Context,
    options: &ClusterOptions,
) -> Result<kv::Store, ClusterError> {
    key_value(
        js,
        options,
        &options.lease_bucket(),
        "Loom: which node is the sequencer",
        options.lease,
    )
    .await
}

/// A key-value bucket whose entries expire after `max_age`, created if missing.
pub(crate) async fn key_value(
    js: &jetstream::Context,
    options: &ClusterOptions,
    bucket: &str,
    description: &str,
    max_age: std::time::Duration,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    // The bucket's stream, made as the key-value layer makes it (`create_key_value` first
    // reads the account's information, which async-nats cannot parse from a NATS 2.9
    // server): one entry per key, entries expire after `max_age`.
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: options.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| ClusterError::new(&format!("creating the key-value bucket {bucket}"), e))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::new(&format!("opening the key-value bucket {bucket}"), e))
}

/// What an attempt on the lease found.
pub(crate) enum Attempt {
    /// This node holds it, at this revision.
    Held(u64),
    /// Another node holds it.
    Taken(Sequencer),
    /// NATS did not answer as expected; try again later.
    Unknown(String),
}

pub(crate) struct Lease {
    store: kv::Store,
    me: Sequencer,
    value: bytes::Bytes,
}

impl Lease {
    pub(crate) fn new(store: kv::Store, me: Sequencer) -> Lease {
        let value = serde_json::to_vec(&me).expect("serializable").into();
        Lease { store, me, value }
    }

    /// Takes the lease if no live entry exists, or adopts it if the live entry is this
    /// node's own (a restart within the lease time).
    pub(crate) async fn take(&self) -> Attempt {
        match self.store.create(KEY, self.value.clone()).await {
            Ok(revision) => Attempt::Held(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self.holder().await,
            Err(e) => Attempt::Unknown(e.to_string()),
        }
    }

    /// Who holds the lease now.
    pub(crate) async fn holder(&self) -> Attempt {
        match self.store.entry(KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                match serde_json::from_slice::<Sequencer>(&entry.value) {
                    Ok(s) if s == self.me => Attempt::Held(entry.revision),
                    Ok(s) => Attempt::Taken(s),
                    Err(e) => Attempt::Unknown(format!("unreadable lease: {e}")),
                }
            }
            Ok(_) => Attempt::Unknown("the lease was just released".into()),
            Err(e) => Attempt::Unknown(e.to_string()),
        }
    }

    /// Renews the lease held at `revision`: the new revision, or why it is lost (`Ok(None)`:
    /// another node wrote it since) or unknown (`Err`).
    pub(crate) async fn renew(&self, revision: u64) -> Result<Option<u64>, String> {
        match self.store.update(KEY, self.value.clone(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
