//! The log: a JetStream stream of commit groups, one message per group, published by the
//! sequencer with `Nats-Expected-Last-Sequence`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, context::Publish, context::PublishErrorKind};
use loom_ledger::{GroupLog, LogUnavailable};

use super::{ClusterError, ClusterOptions, Shared};

/// Creates the stream if it does not exist: file storage, the configured replicas, nothing
/// ever dropped (no limits on messages, bytes or age), direct reads allowed.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    options: &ClusterOptions,
) -> Result<(), ClusterError> {
    let config = jetstream::stream::Config {
        name: options.stream.clone(),
        description: Some("Loom's log of commit groups".into()),
        subjects: vec![options.subject()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: options.replicas,
        retention: jetstream::stream::RetentionPolicy::Limits,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_direct: true,
        deny_delete: true,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| ClusterError::new(&format!("creating the stream {}", options.stream), e))?;
    Ok(())
}

/// The ledger's [`GroupLog`] in cluster mode.
pub struct JetStreamLog {
    shared: Arc<Shared>,
    js: jetstream::Context,
    subject: String,
    runtime: tokio::runtime::Handle,
    /// The NATS servers' largest message.
    max_payload: usize,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl JetStreamLog {
    pub(crate) fn new(
        shared: Arc<Shared>,
        js: jetstream::Context,
        runtime: tokio::runtime::Handle,
    ) -> JetStreamLog {
        let max_payload = shared.max_payload;
        JetStreamLog {
            max_payload,
            subject: shared.options.subject(),
            shared,
            js,
            runtime,
        }
    }

    fn not_sequencer(&self) -> io::Error {
        let sequencer = self
            .shared
            .sequencer
            .lock()
            .expect("sequencer lock")
            .clone();
        unavailable(match sequencer {
            Some(s) if s.node != self.shared.options.node => format!(
                "this node ({}) is not the cluster's sequencer; {} is, at {}",
                self.shared.options.node, s.node, s.url
            ),
            _ => "the cluster has no sequencer at the moment; retry shortly".to_owned(),
        })
    }

    /// Stops sequencing until the node has read the stream again.
    fn resync(&self) {
        self.shared.sequencing.store(false, Ordering::Release);
        self.shared.resync.notify_one();
    }
}

impl GroupLog for JetStreamLog {
    fn ready(&self) -> io::Result<()> {
        if self.shared.sequencing.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(self.not_sequencer())
        }
    }

    fn max_record_bytes(&self) -> usize {
        // The message's headers (the expected last sequence) count towards NATS's limit.
        self.max_payload.saturating_sub(1024)
    }

    fn next_sequence(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire) + 1
    }

    fn publish(&mut self, record: &[u8]) -> io::Result<()> {
        self.ready()?;
        // The writer keeps groups under this bound; a larger message would make the server
        // close the connection, so it is refused here rather than sent.
        if record.len() > self.max_record_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a commit group of {} bytes is over the cluster log's largest message of {} bytes",
                    record.len(),
                    self.max_record_bytes()
                ),
            ));
        }
        let expected = self.shared.applied.load(Ordering::Acquire);
        let publish = Publish::build()
            .payload(bytes::Bytes::copy_from_slice(record))
            .expected_last_sequence(expected);
        let js = &self.js;
        let subject = self.subject.clone();
        let acked = self
            .runtime
            .block_on(async move { js.send_publish(subject, publish).await?.await });
        match acked {
            Ok(ack) if ack.sequence == expected + 1 => {
                self.shared.applied.store(ack.sequence, Ordering::Release);
                self.shared
                    .log_last
                    .fetch_max(ack.sequence, Ordering::AcqRel);
                Ok(())
            }
            Ok(ack) => {
                // Not possible with an expected last sequence; read the stream again.
                self.resync();
                Err(unavailable(format!(
                    "the cluster's log stored the group at sequence {} instead of {}; \
                     retry the append",
                    ack.sequence,
                    expected + 1
                )))
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // Another node published since: this node was deposed (or is behind).
                self.resync();
                tracing::warn!(
                    expected,
                    "the log refused a group: another node is sequencing; stepping down"
                );
                Err(unavailable(
                    "this node is no longer the cluster's sequencer; retry the append".into(),
                ))
            }
            Err(e) => {
                // Unknown outcome (e.g. no acknowledgement in time): the group may be in the
                // stream; the node reads it before it decides anything else.
                self.resync();
                Err(unavailable(format!(
                    "the cluster's log did not acknowledge the group ({e}); it may or may not \
                     be stored: retry the append (a retry of the same events is a duplicate, \
                     not a second copy)"
                )))
            }
        }
    }
}

fn unavailable(why: String) -> io::Error {
    io::Error::other(LogUnavailable(why))
}
