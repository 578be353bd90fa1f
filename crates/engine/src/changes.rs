//! Changes of what the engine runs — modules, projection, decider and reactor definitions
//! and their life-cycle — as one type, so that a cluster can carry them through its log.
//!
//! On a single node [`Engine::change`](crate::Engine::change) applies a change at once. On a
//! cluster node (a replicated ledger) it publishes the change to the cluster's log (the
//! sequencer's ledger refuses it elsewhere) and waits until this node's applier thread has
//! applied it, in log order, like every other node does; the answer is this node's outcome.
//! Every node applies the same changes in the same order to the same prior state, so they
//! define the same things and give the same answers (errors included: a refused change is a
//! harmless record in the log). Applying is idempotent, because a crash between the ledger
//! keeping a change and the engine applying it makes the engine apply it again.
//!
//! ```text
//! change := u32 length of the JSON (LE) | JSON of `Change` | module bytes (upload only)
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use loom_ledger::{Ledger, ReactorCheckpoint};
use serde::{Deserialize, Serialize};

use crate::{
    DeciderSpec, DefinitionError, Parts, ProjectionSpec, PutOutcome, ReactorSpec, StoreError,
    Uploaded,
};

/// One change of what the engine runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// Store module bytes.
    UploadModule {
        /// The wasm bytes (after the JSON in the encoding).
        #[serde(skip)]
        bytes: Vec<u8>,
    },
    /// Delete a module no definition names.
    DeleteModule {
        /// Its id.
        id: String,
    },
    /// Define or upgrade a projection.
    PutProjection {
        /// Its name.
        name: String,
        /// Its definition.
        spec: ProjectionSpec,
    },
    /// Delete a projection and its states.
    DeleteProjection {
        /// Its name.
        name: String,
    },
    /// Pause a projection.
    PauseProjection {
        /// Its name.
        name: String,
    },
    /// Resume a projection.
    ResumeProjection {
        /// Its name.
        name: String,
    },
    /// Rebuild a projection from the start of the ledger.
    RebuildProjection {
        /// Its name.
        name: String,
    },
    /// Bind a decider to an entity.
    PutDecider {
        /// The entity.
        entity: String,
        /// Its definition.
        spec: DeciderSpec,
    },
    /// Unbind an entity's decider.
    DeleteDecider {
        /// The entity.
        entity: String,
    },
    /// Define or change a reactor.
    PutReactor {
        /// Its name.
        name: String,
        /// Its definition.
        spec: ReactorSpec,
    },
    /// Delete a reactor and its checkpoint.
    DeleteReactor {
        /// Its name.
        name: String,
    },
    /// Pause a reactor.
    PauseReactor {
        /// Its name.
        name: String,
    },
    /// Resume a reactor.
    ResumeReactor {
        /// Its name.
        name: String,
    },
    /// A reactor's progress on the node that runs it (the sequencer), so that the node that
    /// takes over goes on from there.
    ReactorProgress {
        /// Its name.
        name: String,
        /// Position and counters.
        checkpoint: Progress,
    },
}

/// A reactor checkpoint as a change carries it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Progress {
    pub position: u64,
    pub reacted: u64,
    pub appended: u64,
    pub commands: u64,
    pub delivered: u64,
}

impl From<ReactorCheckpoint> for Progress {
    fn from(c: ReactorCheckpoint) -> Progress {
        Progress {
            position: c.position,
            reacted: c.reacted,
            appended: c.appended,
            commands: c.commands,
            delivered: c.delivered,
        }
    }
}

impl From<Progress> for ReactorCheckpoint {
    fn from(p: Progress) -> ReactorCheckpoint {
        ReactorCheckpoint {
            position: p.position,
            reacted: p.reacted,
            appended: p.appended,
            commands: p.commands,
            delivered: p.delivered,
        }
    }
}

/// What a change did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Changed {
    /// A module upload's answer.
    Module(Uploaded),
    /// A definition's `put` answer.
    Put(PutOutcome),
    /// Done (deletes, pauses, resumes, rebuilds, progress).
    Done,
}

impl Changed {
    /// The upload's answer (a module upload's change only).
    pub fn uploaded(self) -> Uploaded {
        match self {
            Changed::Module(u) => u,
            other => unreachable!("not an upload's answer: {other:?}"),
        }
    }

    /// The put's answer (a definition's put only).
    pub fn put(self) -> PutOutcome {
        match self {
            Changed::Put(p) => p,
            other => unreachable!("not a put's answer: {other:?}"),
        }
    }
}

impl Change {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a change serializes");
        let mut out = Vec::with_capacity(4 + json.len());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        if let Change::UploadModule { bytes } = self {
            out.extend_from_slice(bytes);
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Change, String> {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("an engine change shorter than its header")?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err("an engine change shorter than its JSON".into());
        }
        let (json, tail) = rest.split_at(len);
        let mut change: Change = serde_json::from_slice(json)
            .map_err(|e| format!("an unreadable engine change: {e}"))?;
        match &mut change {
            Change::UploadModule { bytes } => *bytes = tail.to_vec(),
            _ if !tail.is_empty() => return Err("bytes after an engine change".into()),
            _ => {}
        }
        Ok(change)
    }
}

/// Applies one change to this node's engine.
pub(crate) fn apply(parts: &Parts, change: Change) -> Result<Changed, DefinitionError> {
    Ok(match change {
        Change::UploadModule { bytes } => Changed::Module(parts.modules.upload(&bytes)?),
        Change::DeleteModule { id } => {
            let _exclusive = parts.modules.lock_for_delete();
            let mut users = parts.projections.users_of(&id);
            users.extend(parts.deciders.users_of(&id));
            users.extend(parts.reactors.users_of(&id));
            parts.modules.delete(&id, users)?;
            Changed::Done
        }
        Change::PutProjection { name, spec } => Changed::Put(parts.projections.put(&name, spec)?),
        Change::DeleteProjection { name } => done(parts.projections.delete(&name))?,
        Change::PauseProjection { name } => done(parts.projections.pause(&name))?,
        Change::ResumeProjection { name } => done(parts.projections.resume(&name))?,
        Change::RebuildProjection { name } => done(parts.projections.rebuild(&name))?,
        Change::PutDecider { entity, spec } => Changed::Put(parts.deciders.put(&entity, spec)?),
        Change::DeleteDecider { entity } => done(parts.deciders.delete(&entity))?,
        Change::PutReactor { name, spec } => Changed::Put(parts.reactors.put(&name, spec)?),
        Change::DeleteReactor { name } => done(parts.reactors.delete(&name))?,
        Change::PauseReactor { name } => done(parts.reactors.pause(&name))?,
        Change::ResumeReactor { name } => done(parts.reactors.resume(&name))?,
        Change::ReactorProgress { name, checkpoint } => {
            parts.reactors.follow_progress(&name, checkpoint.into())?;
            Changed::Done
        }
    })
}

fn done(result: Result<(), DefinitionError>) -> Result<Changed, DefinitionError> {
    result.map(|()| Changed::Done)
}

/// Answers kept for the callers that published them, by log sequence.
type Answers = BTreeMap<u64, Result<Changed, DefinitionError>>;

/// Cluster mode: the thread that applies the changes the ledger kept, and the answers it
/// leaves for the callers on this node.
#[derive(Debug)]
pub(crate) struct Applier {
    answers: Arc<(Mutex<Answers>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Answers no caller waits for are dropped beyond this many.
const KEPT_ANSWERS: usize = 256;

/// The longest a caller waits for its change to be applied here (a module's compile is
/// bounded by the compiler's own deadline, shorter than this).
const APPLY_WAIT: Duration = Duration::from_secs(300);

impl Applier {
    pub(crate) fn start(ledger: Arc<Ledger>, parts: Arc<Parts>) -> std::io::Result<Applier> {
        let answers: Arc<(Mutex<Answers>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answers, stop) = (answers.clone(), stop.clone());
            std::thread::Builder::new()
                .name("loom-engine-changes".into())
                .spawn(move || run(&ledger, &parts, &answers, &stop))?
        };
        Ok(Applier {
            answers,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Waits for this node's answer to the change at `sequence`.
    pub(crate) fn answer(&self, sequence: u64) -> Result<Changed, DefinitionError> {
        let (lock, changed) = &*self.answers;
        let deadline = std::time::Instant::now() + APPLY_WAIT;
        let mut answers = lock.lock().expect("answers lock");
        loop {
            if let Some(answer) = answers.remove(&sequence) {
                return answer;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || self.stop.load(Ordering::Acquire) {
                return Err(DefinitionError::Store(StoreError::Corrupt(format!(
                    "the change at log sequence {sequence} was published but not applied on \
                     this node within {APPLY_WAIT:?}; it is applied later"
                ))));
            }
            answers = changed.wait_timeout(answers, left).expect("answers lock").0;
        }
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }
}

fn run(ledger: &Ledger, parts: &Parts, answers: &(Mutex<Answers>, Condvar), stop: &AtomicBool) {
    let mut seen = 0;
    while !stop.load(Ordering::Acquire) {
        let pending = match ledger.engine_changes() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading the engine's changes failed");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for (sequence, bytes) in pending {
            let answer = Change::decode(&bytes)
                .map_err(|m| DefinitionError::Store(StoreError::Corrupt(m)))
                .and_then(|change| apply(parts, change));
            match &answer {
                Err(DefinitionError::Store(e)) if e.is_io() => {
                    // Kept in the inbox: tried again after a pause.
                    tracing::error!(sequence, error = %e, "applying an engine change failed");
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
                Err(e) => tracing::info!(sequence, error = %e, "an engine change was refused"),
                Ok(_) => tracing::debug!(sequence, "applied an engine change"),
            }
            if let Err(e) = ledger.remove_engine_change(sequence) {
                tracing::error!(sequence, error = %e, "removing an applied engine change failed");
            }
            let (lock, changed) = answers;
            let mut kept = lock.lock().expect("answers lock");
            kept.insert(sequence, answer);
            while kept.len() > KEPT_ANSWERS {
                kept.pop_first();
            }
            drop(kept);
            changed.notify_all();
            seen = seen.max(sequence);
        }
        ledger.wait_engine_change(seen, Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_with_their_bytes() {
        let upload = Change::UploadModule {
            bytes: b"\0asm\x01\0\0\0".to_vec(),
        };
        assert_eq!(Change::decode(&upload.encode()).unwrap(), upload);
        let put = Change::PutDecider {
            entity: "cart".into(),
            spec: DeciderSpec {
                module: "sha256:00".into(),
                reducer: None,
            },
        };
        assert_eq!(Change::decode(&put.encode()).unwrap(), put);
        assert!(Change::decode(&[put.encode(), b"x".to_vec()].concat()).is_err());
        assert!(Change::decode(b"\x05\0").is_err());
    }
}
