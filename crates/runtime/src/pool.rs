//! Instance slots of the pooling allocator: a call holds one for as long as its `Store`
//! lives, and waits while every slot is in use.

use super::*;

/// Counts free instance slots; a call holds a [`SlotGuard`] for as long as its `Store` lives.
pub(crate) struct Slots {
    free: Mutex<u32>,
    freed: Condvar,
}

impl Slots {
    pub(crate) fn new(slots: u32) -> Slots {
        Slots {
            free: Mutex::new(slots),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> SlotGuard<'_> {
        let mut free = self.free.lock().expect("slot lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("slot lock");
        }
        *free -= 1;
        SlotGuard(self)
    }
}

pub(crate) struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slot lock") += 1;
        self.0.freed.notify_one();
    }
}
