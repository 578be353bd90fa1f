//! A node's task: follow the stream, take the lease when it is free, sequence while it holds
//! it, and go back to following when it loses it or a publish is refused.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use loom_ledger::Ledger;

use super::lease::{Attempt, Lease};
use super::{Role, Sequencer, Shared};

pub(crate) struct Node {
    pub(crate) shared: Arc<Shared>,
    pub(crate) js: jetstream::Context,
    pub(crate) ledger: Arc<Ledger>,
}

/// How the error of a node that can never follow the stream from where it is begins.
const STRANDED: &str = "behind the trimmed stream";

/// Why following stopped.
enum Followed {
    /// This node holds the lease (at this revision) and applied everything the stream held
    /// when it took it.
    Leading(u64),
}

impl Node {
    pub(crate) async fn run(self) {
        let options = &self.shared.options;
        let store = loop {
            match super::lease::ensure_bucket(&self.js, options).await {
                Ok(store) => break store,
                Err(e) => {
                    tracing::warn!(error = %e, "opening the lease bucket; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let lease = Lease::new(
            store,
            Sequencer {
                node: options.node.clone(),
                url: options.url.clone(),
            },
        );
        loop {
            match self.follow(&lease).await {
                Ok(Followed::Leading(revision)) => self.lead(&lease, revision).await,
                Err(e) => {
                    self.shared.set_role(Role::Follower);
                    let stranded = e.starts_with(STRANDED);
                    if stranded {
                        tracing::error!(error = %e, "this node cannot follow the cluster's log");
                    } else {
                        tracing::warn!(error = %e, "following the cluster's log failed; starting over");
                    }
                    *self.shared.last_error.lock().expect("error lock") = Some(e);
                    let pause = if stranded { 5_000 } else { 200 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    }

    fn applied(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    fn note_sequencer(&self, sequencer: Option<Sequencer>) {
        *self.shared.sequencer.lock().expect("sequencer lock") = sequencer;
    }

    async fn log_last(&self) -> Result<u64, String> {
        let mut stream = self
            .js
            .get_stream(&self.shared.options.stream)
            .await
            .map_err(|e| e.to_string())?;
        let last = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence;
        self.shared.log_last.fetch_max(last, Ordering::AcqRel);
        Ok(last)
    }

    /// Applies the stream from the next sequence on, trying for the lease every quarter of
    /// the lease time; returns once this node holds it and has applied everything the stream
    /// held when it took it.
    async fn follow(&self, lease: &Lease) -> Result<Followed, String> {
        let options = &self.shared.options;
        self.shared.set_role(Role::Follower);
        let mut stream = self
            .js
            .get_stream(&options.stream)
            .await
            .map_err(|e| e.to_string())?;
        // After a trim the stream begins later (and, when empty, at its last sequence + 1).
        let first = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .first_sequence;
        if first > self.applied() + 1 {
            return Err(format!(
                "{STRANDED}: the stream begins at sequence {}, but this node has applied only up \
                 to {}: it was trimmed below what this node holds. Stop the node, empty its data \
                 directory and start it again: it starts from the latest snapshot",
                first,
                self.applied()
            ));
        }
        self.shared.last_error.lock().expect("error lock").take();
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: self.applied() + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(options.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lease's revision, and the stream's last sequence when it was taken.
        let mut held: Option<(u64, u64)> = None;
        // When a message was last applied: a candidate knows the stream holds more.
        let mut progressed = Instant::now();
        // Since when a follower has known the stream to hold more than it applied.
        let mut behind: Option<Instant> = None;
        loop {
            if let Some((revision, target)) = held
                && self.applied() >= target
            {
                return Ok(Followed::Leading(revision));
            }
            tokio::select! {
                message = messages.next() => {
                    let message = message
                        .ok_or("the stream's consumer ended")?
                        .map_err(|e| e.to_string())?;
                    let info = message.info().map_err(|e| e.to_string())?;
                    let (sequence, pending) = (info.stream_sequence, info.pending);
                    // What the stream held when this message was delivered: the lag.
                    self.shared.log_last.fetch_max(sequence + pending, Ordering::AcqRel);
                    self.apply(sequence, message.payload.to_vec()).await?;
                    progressed = Instant::now();
                }
                _ = tick.tick() => {
                    // The same stall in a follower: the stream holds more than it applied
                    // (its last sequence is read every tick below), and nothing arrived since
                    // it was first seen behind.
                    let known = self.shared.log_last.load(Ordering::Acquire);
                    if held.is_none() && known > self.applied() {
                        let since = *behind.get_or_insert_with(Instant::now);
                        let stalled = since.max(progressed).elapsed();
                        if stalled >= 2 * options.lease {
                            return Err(format!(
                                "the stream holds up to sequence {known}, but nothing arrived \
                                 from it for {stalled:?} (applied up to {}); following again \
                                 with a new consumer",
                                self.applied()
                            ));
                        }
                    } else {
                        behind = None;
                    }
                    if let Some((_, target)) = held
                        && progressed.elapsed() >= 2 * options.lease
                    {
                        // A consumer can stop delivering when the NATS server behind it goes
                        // (seen once: a candidate one message short for a minute while holding
                        // the lease, so that no node sequenced). A new one starts where this
                        // node is; the lease stays this node's while it is renewed in time.
                        return Err(format!(
                            "catching up to sequence {target} to take over as the sequencer, \
                             nothing arrived from the stream for {:?} (applied up to {}); \
                             following again with a new consumer",
                            progressed.elapsed(),
                            self.applied()
                        ));
                    }
                    // A candidate renews its lease while it catches up, however long that takes.
                    let attempt = match held {
                        Some((revision, _)) => match lease.renew(revision).await {
                            Ok(Some(revision)) => Attempt::Held(revision),
                            Ok(None) => lease.holder().await,
                            Err(why) => Attempt::Unknown(why),
                        },
                        None => lease.take().await,
                    };
                    held = match (held, attempt) {
                        (_, Attempt::Held(revision)) => {
                            self.shared.set_role(Role::Candidate);
                            let target = match held {
                                Some((_, target)) => target,
                                None => {
                                    // Catching up is timed from taking the lease.
                                    progressed = Instant::now();
                                    self.log_last().await?
                                }
                            };
                            Some((revision, target))
                        }
                        (_, Attempt::Taken(sequencer)) => {
                            self.shared.set_role(Role::Follower);
                            self.note_sequencer(Some(sequencer));
                            self.log_last().await?;
                            None
                        }
                        (held, Attempt::Unknown(why)) => {
                            tracing::debug!(%why, "the lease could not be read");
                            held
                        }
                    };
                }
            }
        }
    }

    async fn apply(&self, sequence: u64, record: Vec<u8>) -> Result<(), String> {
        let applied = self.applied();
        if sequence <= applied {
            // Published by this node itself, or delivered again.
            return Ok(());
        }
        if sequence != applied + 1 {
            return Err(format!(
                "the stream delivered sequence {sequence} after {applied}"
            ));
        }
        self.ledger
            .apply_replicated(sequence, record)
            .await
            .map_err(|e| format!("applying stream sequence {sequence}: {e}"))?;
        self.shared.applied.store(sequence, Ordering::Release);
        self.shared.log_last.fetch_max(sequence, Ordering::AcqRel);
        Ok(())
    }

    /// Sequences while the lease is renewed and no publish is refused.
    async fn lead(&self, lease: &Lease, mut revision: u64) {
        let options = &self.shared.options;
        self.note_sequencer(Some(Sequencer {
            node: options.node.clone(),
            url: options.url.clone(),
        }));
        self.shared.terms.fetch_add(1, Ordering::Relaxed);
        self.shared.set_role(Role::Sequencer);
        tracing::info!(
            node = %options.node,
            applied = self.applied(),
            "this node is the cluster's sequencer"
        );
        let mut renewed = Instant::now();
        let mut tick = tokio::time::interval(options.lease / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => match lease.renew(revision).await {
                    Ok(Some(next)) => {
                        revision = next;
                        renewed = Instant::now();
                    }
                    Ok(None) => {
                        tracing::warn!("the sequencer's lease was taken by another node; stepping down");
                        break;
                    }
                    Err(why) if renewed.elapsed() >= options.lease => {
                        tracing::warn!(%why, "the sequencer's lease could not be renewed in time; stepping down");
                        break;
                    }
                    Err(why) => tracing::debug!(%why, "renewing the lease failed; retrying"),
                },
                _ = self.shared.resync.notified() => {
                    tracing::warn!("a publish was refused or not acknowledged; reading the log again");
                    break;
                }
            }
        }
        self.shared.set_role(Role::Follower);
        self.note_sequencer(None);
    }
}
