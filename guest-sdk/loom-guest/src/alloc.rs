//! The module's heap on wasm32: Talc, serving first from an arena inside the initial memory
//! and growing the memory only when that is used up (the `allocator` feature, on by default).
//!
//! Why: Loom runs every call in a fresh instance from wasmtime's pool, and the pool shrinks a
//! reused slot's memory back to the module's initial size. Rust's default wasm allocator
//! takes all its memory by `memory.grow`, so each call grew the memory again, and each grow
//! and each shrink is an `mprotect` that also interrupts the other CPUs to flush their TLBs:
//! four per command (two calls). The arena lives in `.bss`, so it widens the initial memory
//! without adding bytes to the module, and a call whose allocations fit in it never grows
//! the memory; the pool then resets only the pages the call wrote. Larger calls (a long
//! catch-up batch) grow the memory as before.
//!
//! A module that wants another allocator turns the feature off
//! (`default-features = false`) and declares its own `#[global_allocator]`.

#![allow(unsafe_code)]

use core::alloc::Layout;
use core::arch::wasm32::memory_grow;
use core::mem::MaybeUninit;
use core::ptr::NonNull;

use talc::base::Talc;
use talc::base::binning::Binning;
use talc::cell::TalcSyncCell;
use talc::source::Source;
use talc::wasm::WasmBinning;

/// The arena's size: room for a command's input, state and events, and for small folds.
/// Untouched pages cost nothing: they are zero pages until written, and the pool resets only
/// the ones a call wrote.
const ARENA_BYTES: usize = 1 << 20;
const PAGE_BYTES: usize = 64 * 1024;
/// The least the memory grows by once the arena is used up (1 MiB).
const GROW_STEP_PAGES: usize = 16;

static mut ARENA: [MaybeUninit<u8>; ARENA_BYTES] = [MaybeUninit::uninit(); ARENA_BYTES];

#[global_allocator]
static HEAP: TalcSyncCell<ArenaThenGrow, WasmBinning> = TalcSyncCell::new_wasm(ArenaThenGrow {
    arena_claimed: false,
    end: None,
});

/// Where Talc gets memory: the arena once, then pages from `memory.grow`.
#[derive(Debug)]
struct ArenaThenGrow {
    arena_claimed: bool,
    /// The end of the heap the last pages went to, so that pages grown right after it
    /// extend that heap instead of starting a separate one.
    end: Option<NonNull<u8>>,
}

// SAFETY: `acquire` only claims memory nothing else uses (the arena, which only this
// allocator names, and freshly grown pages) and never calls the global allocator.
unsafe impl Source for ArenaThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.arena_claimed {
            talc.source.arena_claimed = true;
            let base = (&raw mut ARENA).cast::<u8>();
            // SAFETY: the arena is a static only this allocator uses, valid for its length.
            if let Some(end) = unsafe { talc.claim(base, ARENA_BYTES) } {
                talc.source.end = Some(end);
                return Ok(());
            }
        }
        // Enough pages for this allocation with room for the heap's own bookkeeping (a
        // fresh heap needs a few words at each end) and the alignment; at least a step, so
        // that a growing fold does not grow (and the pool re-protect) page by page.
        let needed = layout
            .size()
            .saturating_add(layout.align())
            .saturating_add(256);
        let pages = needed.div_ceil(PAGE_BYTES).max(GROW_STEP_PAGES);
        let previous = memory_grow(0, pages);
        if previous == usize::MAX {
            return Err(());
        }
        let base = (previous * PAGE_BYTES) as *mut u8;
        let bytes = pages * PAGE_BYTES;
        if let Some(end) = talc.source.end.take()
            && end.as_ptr() == base
        {
            // SAFETY: `end` ends a heap of this allocator, and the memory from it to
            // `base + bytes` was just grown and is used by nothing else.
            talc.source.end = Some(unsafe { talc.extend(end, base.wrapping_add(bytes)) });
            return Ok(());
        }
        // SAFETY: the pages were just added to the memory and nothing else refers to them.
        talc.source.end = unsafe { talc.claim(base, bytes) };
        talc.source.end.map(|_| ()).ok_or(())
    }
}
