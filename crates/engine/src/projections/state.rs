//! A key's stored state: a fixed header (position, events, created, updated) and the state
//! JSON the module returned.

use crate::StoreError;

/// Most events one `evolve` call folds (a larger group is folded in several calls).
pub(super) const MAX_CALL_EVENTS: usize = 5_000;

/// Most events, and event bytes, of one call in a group larger than [`MAX_CALL_EVENTS`] (a
/// `single` projection, a busy stream): the state goes in and out of the module once per
/// call, so for a large state fewer calls fold much faster. A generation whose module hits a
/// call limit (fuel, time, memory) in such a call folds in calls of [`MAX_CALL_EVENTS`] from
/// then on, as it always did before.
pub(super) const LARGE_CALL_EVENTS: usize = 50_000;
pub(super) const LARGE_CALL_BYTES: usize = 12 << 20;

/// State record: position u64, events u64, created i64, updated i64 (LE), then the state JSON.
pub(super) const HEADER: usize = 32;

pub(super) fn encode_state(
    position: u64,
    events: u64,
    created: i64,
    updated: i64,
    state: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + state.len());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(&created.to_le_bytes());
    out.extend_from_slice(&updated.to_le_bytes());
    out.extend_from_slice(state);
    out
}

/// The record of a key after `folded` (non-empty, in order; `at` gives an event's position
/// and recorded time) were folded onto `prev` into `state`, and whether the key is new.
pub(super) fn state_after<E>(
    prev: Option<&KeyState>,
    folded: &[E],
    at: impl Fn(&E) -> (u64, i64),
    state: &[u8],
) -> (Vec<u8>, bool) {
    let (_, first_recorded) = at(folded.first().expect("events were folded"));
    let (last_position, last_recorded) = at(folded.last().expect("events were folded"));
    let (events_before, created, new) = match prev {
        Some(p) => (p.events, p.created, false),
        None => (0, first_recorded, true),
    };
    let record = encode_state(
        last_position,
        events_before + folded.len() as u64,
        created,
        last_recorded,
        state,
    );
    (record, new)
}

pub(super) struct KeyState {
    /// The last position folded into it.
    pub(super) position: u64,
    pub(super) events: u64,
    pub(super) created: i64,
    pub(super) updated: i64,
    pub(super) state: Vec<u8>,
}

pub(super) fn decode_state(bytes: &[u8]) -> Result<KeyState, StoreError> {
    if bytes.len() < HEADER {
        return Err(StoreError::Corrupt(
            "projection state record too short".into(),
        ));
    }
    let word = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        a
    };
    Ok(KeyState {
        position: u64::from_le_bytes(word(0)),
        events: u64::from_le_bytes(word(1)),
        created: i64::from_le_bytes(word(2)),
        updated: i64::from_le_bytes(word(3)),
        state: bytes[HEADER..].to_vec(),
    })
}
