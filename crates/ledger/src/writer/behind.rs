//! Planning the next group while a group's record syncs (docs/design.md, "Write-ahead log",
//! "Behind"): the appends queued meanwhile are checked and numbered against the tables of
//! the group in flight — its events already written into them, in its transaction — and
//! their record is handed to the sync thread to be written right after the group's. Once
//! the group has committed and answered, the one behind it only writes its events and
//! waits for a sync that has often finished already: two syncs back to back instead of a
//! sync, then the writer's work, then the next sync.
//!
//! The group behind is answered only after the group before it committed, and fails over
//! to an ordinary group (planned again) whenever the group before it did not commit.

use std::sync::mpsc::Receiver;

use loom_core::AppendOutcome;

use super::{Group, Pending, Tables, Work, plan_group};
use crate::error::AppendError;
use crate::log::{DurableLog, GroupRecord};

/// The writer's queue, as a group being committed may take the next appends from it.
pub(super) struct Queue<'q> {
    pub(super) rx: &'q Receiver<Work>,
    /// Work taken from the queue that goes before anything still in it.
    pub(super) next: &'q mut Option<Work>,
}

/// A group planned behind another: its answers, its state after it, and its record (handed
/// to the log unless it is empty).
pub(super) struct Planned {
    pub(super) results: Vec<Result<AppendOutcome, AppendError>>,
    pub(super) state: Group,
    pub(super) record: GroupRecord,
}

/// The appends taken from the queue behind a group, planned (or not, when planning failed:
/// then they are an ordinary group).
pub(super) struct Behind {
    pub(super) group: Vec<Pending>,
    pub(super) planned: Option<Planned>,
}

/// Takes the appends queued behind a group, as many as a group holds: up to the first work
/// that is not an append or an append with a DCB condition (its check reads a snapshot
/// taken before; it goes first in the next round instead).
pub(super) fn take(queue: &mut Queue<'_>, max_events: usize) -> Vec<Pending> {
    let mut group = Vec::new();
    if queue.next.is_some() {
        return group;
    }
    let mut events = 0;
    while events < max_events {
        match queue.rx.try_recv() {
            Ok(Work::Append(p))
                if p.condition.is_none() && p.req.conditions.fail_if_events_match.is_none() =>
            {
                events += p.req.events.len();
                group.push(p);
            }
            Ok(other) => {
                *queue.next = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    group
}

/// Plans `group` after the group `after` (whose events `t` holds) and hands its record to
/// the log behind `after`'s.
pub(super) fn plan(
    t: &mut Tables<'_>,
    after: &Group,
    group: Vec<Pending>,
    wal: &mut dyn DurableLog,
) -> Behind {
    let recorded = chrono::Utc::now().timestamp_micros().max(after.recorded);
    // No append behind a group has a DCB condition, the only reader of the entities.
    let mut state = Group::new(after.head, after.next_stream_id, recorded, Vec::new());
    state.log = Some(GroupRecord::new(after.head + 1, recorded));
    let planned = match plan_group(t, &mut state, &group) {
        Ok(results) => {
            let mut record = state.log.take().expect("set above");
            if record.is_empty() {
                Some(Planned {
                    results,
                    state,
                    record,
                })
            } else {
                record.finish(state.next_stream_id);
                wal.begin_behind(&record).ok().map(|()| Planned {
                    results,
                    state,
                    record,
                })
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "planning the group behind failed; it is planned on its own");
            None
        }
    };
    Behind { group, planned }
}
