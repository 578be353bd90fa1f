//! The deciders' cache of folded states: subject → (revision, state JSON), bounded in
//! entries and in bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most bytes of folded states cached per entity.
pub(crate) const CACHE_BYTES: usize = 32 << 20;
/// Most folded states cached per entity.
pub(crate) const CACHE_ENTRIES: usize = 50_000;
/// A small cache of folded states: subject → (revision, state JSON), bounded in entries
/// and in bytes ([`CACHE_BYTES`]; a state larger than an eighth of it is not kept), oldest
/// inserted evicted first.
#[derive(Default)]
pub(crate) struct Cache {
    map: HashMap<String, (u64, Arc<Vec<u8>>)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Cache {
    pub(crate) fn get(&self, subject: &str) -> Option<(u64, Arc<Vec<u8>>)> {
        self.map.get(subject).cloned()
    }

    pub(crate) fn put(&mut self, subject: &str, revision: u64, state: Arc<Vec<u8>>) {
        if state.len() > CACHE_BYTES / 8 {
            // Folding it again costs less than holding it for every command.
            if let Some((_, old)) = self.map.remove(subject) {
                self.bytes -= old.len();
            }
            return;
        }
        match self.map.get_mut(subject) {
            Some(slot) => {
                if slot.0 <= revision {
                    self.bytes = self.bytes - slot.1.len() + state.len();
                    *slot = (revision, state);
                }
            }
            None => {
                self.bytes += state.len();
                self.map.insert(subject.to_owned(), (revision, state));
                self.order.push_back(subject.to_owned());
            }
        }
        while self.map.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if old == subject && self.map.len() == 1 {
                self.order.push_back(old);
                break;
            }
            if let Some((_, s)) = self.map.remove(&old) {
                self.bytes -= s.len();
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_cache_is_bounded_in_bytes() {
        let mut cache = Cache::default();
        for i in 0..20 {
            cache.put(&format!("s/{i}"), 1, Arc::new(vec![0u8; 3 << 20]));
            assert!(cache.bytes <= CACHE_BYTES, "{} bytes", cache.bytes);
        }
        assert_eq!(cache.map.len(), 10);
        assert!(cache.get("s/19").is_some(), "the newest is kept");
        assert!(cache.get("s/0").is_none(), "the oldest went first");
        // A state over an eighth of the budget is not kept, and replaces nothing.
        cache.put("s/19", 2, Arc::new(vec![0u8; 5 << 20]));
        assert!(cache.get("s/19").is_none());
        assert_eq!(cache.bytes, 9 * (3 << 20));
        cache.clear();
        assert_eq!(cache.bytes, 0);
    }
}
