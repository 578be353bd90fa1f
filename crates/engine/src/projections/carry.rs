//! States folded but not committed yet. While a projection catches up (each step reads a
//! full batch), a step's states are kept for the steps after it and committed with theirs,
//! every [`CARRY_STEPS`] steps at most: a stream that has events in each of those steps has
//! its state read, checked into a record and written once instead of once per step, and the
//! catalog commits a quarter as often. States and checkpoint still commit together, so what
//! is stored — and what queries see — is a consistent point as before; it moves on per
//! commit. Nothing is kept once a step reads less than a full batch (the projection is near
//! the head), so a projection that follows the head commits every step as it did.

use std::time::{Duration, Instant};

/// Most steps whose states are committed together.
pub(super) const CARRY_STEPS: u32 = 4;
/// Most bytes of kept states (records and keys) before they are committed.
const CARRY_BYTES: usize = 64 << 20;
/// Longest a kept state waits for its commit: a slow catch-up still shows its progress.
const CARRY_AGE: Duration = Duration::from_millis(500);

/// The states of the steps folded since the last commit, with what the commit records.
#[derive(Default)]
pub(super) struct Carry {
    /// Each key's state record ([`super::state::encode_state`]), as it would be written.
    states: foldhash::HashMap<String, Vec<u8>>,
    bytes: usize,
    /// Events folded into them.
    pub(super) folded: u64,
    /// Keys among them that had no stored state.
    pub(super) new_keys: u64,
    /// Every matching event up to here is folded into them; `None` when nothing is kept.
    covered: Option<u64>,
    steps: u32,
    since: Option<Instant>,
}

impl Carry {
    pub(super) fn is_empty(&self) -> bool {
        self.covered.is_none()
    }

    /// Where the next step reads from, when states are kept.
    pub(super) fn covered(&self) -> Option<u64> {
        self.covered
    }

    /// A key's kept state record.
    pub(super) fn get(&self, key: &str) -> Option<&[u8]> {
        self.states.get(key).map(Vec::as_slice)
    }

    /// The kept states, for the commit.
    pub(super) fn states(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.states.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Adds a step's new state records (one per key, replacing a kept one), and what it
    /// folded.
    pub(super) fn add(
        &mut self,
        written: Vec<(&str, Vec<u8>)>,
        folded: u64,
        new_keys: u64,
        covered: u64,
    ) {
        for (key, record) in written {
            self.bytes += record.len();
            match self.states.get_mut(key) {
                Some(kept) => {
                    self.bytes -= kept.len();
                    *kept = record;
                }
                None => {
                    self.bytes += key.len();
                    self.states.insert(key.to_owned(), record);
                }
            }
        }
        self.folded += folded;
        self.new_keys += new_keys;
        self.covered = Some(covered);
        self.steps += 1;
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether the kept states should be committed now rather than after the next step.
    pub(super) fn is_due(&self) -> bool {
        self.steps >= CARRY_STEPS
            || self.bytes >= CARRY_BYTES
            || self.since.is_some_and(|t| t.elapsed() >= CARRY_AGE)
    }

    /// Forgets everything kept (committed, or to be folded again from the stored checkpoint).
    pub(super) fn clear(&mut self) {
        *self = Carry::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_kept_across_steps_holds_its_latest_record_and_counts_once() {
        let mut carry = Carry::default();
        assert!(carry.is_empty() && !carry.is_due());
        carry.add(
            vec![("a", b"1111".to_vec()), ("b", b"22".to_vec())],
            3,
            2,
            10,
        );
        carry.add(vec![("a", b"333".to_vec())], 1, 0, 20);
        assert_eq!(carry.covered(), Some(20));
        assert_eq!(carry.get("a"), Some(&b"333"[..]));
        assert_eq!(carry.get("b"), Some(&b"22"[..]));
        assert_eq!(carry.states().count(), 2);
        assert_eq!((carry.folded, carry.new_keys), (4, 2));
        // Keys and the latest records: "a" + "333" + "b" + "22".
        assert_eq!(carry.bytes, 7);
        assert!(!carry.is_due());
        carry.add(Vec::new(), 0, 0, 30);
        carry.add(Vec::new(), 0, 0, 40);
        assert!(carry.is_due(), "{CARRY_STEPS} steps kept");
        carry.clear();
        assert!(carry.is_empty() && carry.get("a").is_none());
    }
}
