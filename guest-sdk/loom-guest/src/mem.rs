//! `memcmp` and `bcmp` for wasm32 guests, a word at a time.
//!
//! The versions in Rust's `compiler_builtins` compare one byte per step, and on wasm32 LLVM
//! calls them for every slice and string comparison (natively it expands short ones inline
//! and the libc version is vectorised). serde matches every field and variant name with one,
//! so a reducer decoding JSON spends a visible part of its time there.
//!
//! Compiled on every target so that the tests below run natively, but exported under the C
//! names only on wasm32, where they replace the byte-wise ones when the module is linked.

#![allow(unsafe_code)]
// Natively nothing calls them but the tests.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

/// Compares `n` bytes at `a` and `b` like C's `memcmp`.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, and both ranges are readable for n bytes.
        let (x, y) = unsafe {
            (
                a.add(i).cast::<u64>().read_unaligned(),
                b.add(i).cast::<u64>().read_unaligned(),
            )
        };
        if x != y {
            // Little-endian: the first differing byte is the lowest differing one.
            let shift = (x ^ y).trailing_zeros() & !7;
            return i32::from((x >> shift) as u8) - i32::from((y >> shift) as u8);
        }
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Whether `n` bytes at `a` and `b` differ (non-zero) or not (zero), like `bcmp`.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's contract is memcmp's.
    unsafe { memcmp(a, b, n) }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    fn cmp(a: &[u8], b: &[u8]) -> Ordering {
        assert_eq!(a.len(), b.len());
        // SAFETY: both slices have a.len() bytes.
        let r = unsafe { super::memcmp(a.as_ptr(), b.as_ptr(), a.len()) };
        // SAFETY: as above.
        let e = unsafe { super::bcmp(a.as_ptr(), b.as_ptr(), a.len()) };
        assert_eq!(r == 0, e == 0);
        r.cmp(&0)
    }

    #[test]
    fn agrees_with_slice_order_at_every_length_and_first_difference() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(cmp(&a, &a), Ordering::Equal, "len {n}");
            for at in 0..n {
                for delta in [1u8, 0x80, 0xff] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    // A later difference in the other direction must not matter.
                    if at + 1 < n {
                        b[n - 1] = b[n - 1].wrapping_sub(1);
                    }
                    assert_eq!(cmp(&a, &b), a.cmp(&b), "len {n}, first difference at {at}");
                    assert_eq!(cmp(&b, &a), b.cmp(&a), "len {n}, first difference at {at}");
                }
            }
        }
    }
}
