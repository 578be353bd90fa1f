//! Appending: validation and the registry on the caller's thread, the DCB condition checked
//! against a snapshot, then the group-commit writer.

use super::*;

impl Ledger {
    /// Checks an append against the event model and the registry, before it is queued.
    pub(crate) fn prepare(
        &self,
        req: AppendRequest,
    ) -> Result<(AppendRequest, Option<(CompiledSelector, Precheck)>), AppendError> {
        if req.events.is_empty() {
            return Err(AppendError::Invalid(InvalidEvent::new(
                "an append needs at least one event",
            )));
        }
        let registry = self.registry.read().expect("registry lock").clone();
        let mut identities = HashSet::with_capacity(req.events.len());
        for (i, e) in req.events.iter().enumerate() {
            e.validate()
                .map_err(|err| AppendError::Invalid(err.at_index(i)))?;
            if !identities.insert((e.source.as_str(), e.id.as_str())) {
                return Err(AppendError::Invalid(
                    InvalidEvent::new(format!(
                        "(source {:?}, id {:?}) appears twice in the batch",
                        e.source, e.id
                    ))
                    .at_index(i),
                ));
            }
            registry
                .check(i, e, &req.origin)
                .map_err(AppendError::Rejected)?;
        }
        if let Some(max) = self.max_record_bytes {
            let size = crate::writer::request_size_bound(&req);
            if size > max {
                return Err(AppendError::Invalid(InvalidEvent::new(format!(
                    "the append takes about {size} bytes in the cluster's log, whose largest \
                     message is {max} bytes; append fewer or smaller events at a time"
                ))));
            }
        }
        for subject in req.conditions.expected_revisions.keys() {
            if split_subject(subject).is_none() {
                return Err(AppendError::Invalid(InvalidEvent::new(format!(
                    "expected_revisions names {subject:?}, which is not a stream \
                     (\"{{entity}}/{{key}}\")"
                ))));
            }
        }
        let selector = req
            .conditions
            .fail_if_events_match
            .as_ref()
            .map(Selector::compile)
            .transpose()?;
        let condition = match selector {
            Some(selector) => {
                let checked = self.precheck(&req, &selector)?;
                Some((selector, checked))
            }
            None => None,
        };
        Ok((req, condition))
    }

    /// Evaluates the DCB condition (`fail_if_events_match`) against a snapshot, on the
    /// calling thread, so that the writer — which every append waits for — only looks at
    /// the events committed after it. History does not change: what matches up to the
    /// snapshot's head matches there for good. The writer still decides, in the usual order
    /// (identity, expected revisions, then the condition), with these matches in hand.
    pub(crate) fn precheck(
        &self,
        req: &AppendRequest,
        selector: &CompiledSelector,
    ) -> Result<Precheck, AppendError> {
        let after = req.conditions.after.unwrap_or(0);
        let entities = self.entity_names();
        self.with_view(|v| {
            let head = v.events.head()?;
            let window = Window {
                after,
                before: head.saturating_add(1),
                limit: writer::MAX_REPORTED_MATCHES,
                backwards: false,
            };
            let found = v.select(selector, window, &entities)?;
            Ok(Precheck {
                through: head.max(after),
                matched: found.iter().map(|e| e.position).collect(),
            })
        })
        .map_err(append_error)
    }

    pub(crate) fn sender(&self) -> Result<std::sync::mpsc::SyncSender<Work>, AppendError> {
        self.queue
            .lock()
            .expect("queue lock")
            .clone()
            .ok_or(AppendError::Closed)
    }

    /// Queues an append, blocking while the queue is full.
    pub(crate) fn enqueue(&self, pending: Work) -> Result<(), AppendError> {
        use std::sync::mpsc::TrySendError;
        let queue = self.sender()?;
        match queue.try_send(pending) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(_)) => Err(AppendError::Closed),
            Err(TrySendError::Full(p)) => {
                self.stats.queue_full_waits.fetch_add(1, Ordering::Relaxed);
                queue.send(p).map_err(|_| AppendError::Closed)
            }
        }
    }

    /// Appends atomically; returns once the batch is durable (or refused). Blocking.
    pub fn append(&self, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let (req, condition) = self.prepare(req)?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Work::Append(Pending {
            req,
            condition,
            reply: tx,
        }))?;
        rx.recv().unwrap_or(Err(AppendError::Closed))
    }

    /// Appends atomically; resolves once the batch is durable (or refused). The validation
    /// runs on the calling thread; the commit on the writer thread. Runtime-agnostic; when the
    /// queue is full (back-pressure) it waits without blocking the thread. A
    /// `fail_if_events_match` condition is evaluated on the calling thread against a snapshot
    /// and may read much of the ledger: append such requests with [`Ledger::append`] from a
    /// thread that may block.
    pub async fn append_async(&self, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let (req, condition) = self.prepare(req)?;
        let (tx, rx) = oneshot::async_channel();
        self.enqueue_async(Work::Append(Pending {
            req,
            condition,
            reply: tx,
        }))
        .await?;
        rx.await.unwrap_or(Err(AppendError::Closed))
    }

    /// Cluster mode, on a follower: applies the group the replicated log holds at
    /// `sequence` (the record the sequencer published), after the groups before it. A group
    /// this node holds already (it published it) only moves [`log_sequence`](Self::log_sequence)
    /// on. Committed with the ledger's other writes, in order; durable at the next checkpoint
    /// (after a crash, [`log_sequence`](Self::log_sequence) says where to read the log again
    /// from).
    pub async fn apply_replicated(
        &self,
        sequence: u64,
        record: Vec<u8>,
    ) -> Result<(), AppendError> {
        let (tx, rx) = oneshot::async_channel();
        self.enqueue_async(Work::Replicated(ReplicatedGroup {
            sequence,
            record,
            reply: tx,
        }))
        .await?;
        match rx.await {
            Ok(result) => result.map_err(AppendError::Storage),
            Err(_) => Err(AppendError::Closed),
        }
    }
}

/// A read's failure, answering an append.
pub(crate) fn append_error(e: ReadError) -> AppendError {
    match e {
        ReadError::Storage(e) => AppendError::Storage(e),
        ReadError::Selector(e) => AppendError::Selector(e),
        ReadError::Corrupt { position, message } => {
            AppendError::Storage(StorageError(Box::new(redb::Error::Corrupted(format!(
                "stored event at position {position} is unreadable: {message}"
            )))))
        }
    }
}
