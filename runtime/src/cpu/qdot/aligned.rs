//! A growable buffer of plain numbers starting on a 64-byte boundary. The decode dot reads each
//! block's digits as 32-byte vectors at a 96-byte stride (or 64-byte for the 16-bit route); a
//! `Vec` from the allocator starts only 16-byte aligned, so half those loads would straddle two
//! cache lines.
use std::ops::{Deref, DerefMut};

/// One cache line of storage (only its alignment and size matter).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Numbers for which every bit pattern, all-zero included, is a valid value.
pub(super) trait Plain: Copy + Default {}
impl Plain for i8 {}
impl Plain for i16 {}
impl Plain for f32 {}

/// `len` values of `T` at the start of `lines`.
#[derive(Clone, Debug, Default)]
pub(super) struct Aligned<T: Plain> {
    lines: Vec<Line>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T: Plain> Aligned<T> {
    /// Sets the length to `n`; values past the old length become `T::default()` (zero).
    pub(super) fn resize_zeroed(&mut self, n: usize) {
        let lines = (n * size_of::<T>()).div_ceil(64);
        if lines > self.lines.len() {
            self.lines.resize(lines, Line([0; 64]));
        }
        let old = self.len;
        self.len = n;
        if n > old {
            self[old..].fill(T::default());
        }
    }
}

impl<T: Plain> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold at least len * size_of::<T>() initialised bytes, start 64-byte
        // aligned (T's alignment divides 64) and any bits are a valid T (`Plain`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const T, self.len) }
    }
}

impl<T: Plain> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut T, self.len) }
    }
}
