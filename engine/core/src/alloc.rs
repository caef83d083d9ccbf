//! A global allocator that counts, per thread, the bytes allocated and not yet freed, so an
//! expression's evaluation can be bounded in the memory it takes altogether (Rhai limits the
//! size of each string, array and map, but not how many an expression builds: one built about
//! 4 GB of strings and aborted the process).
//!
//! The binaries install it (`#[global_allocator]`); where it is not installed the count stays
//! zero and the bound is not enforced. It wraps the system allocator and adds one thread-local
//! add per allocation. No crate in our ecosystem counts per thread (`stats_alloc` and `cap`
//! count or cap the whole process, which cannot tell one evaluation from the server's other
//! work), so it is these few lines.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct CountingAllocator;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (negative when it frees what others
    /// allocated).
    static HELD: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    // During thread teardown the slot may be gone: nothing is counted then.
    let _ = HELD.try_with(|held| held.set(held.get().wrapping_add(bytes)));
}

fn size(layout: Layout) -> isize {
    isize::try_from(layout.size()).unwrap_or(isize::MAX)
}

/// The bytes this thread holds (allocated minus freed) since it started.
pub fn held_by_this_thread() -> isize {
    HELD.try_with(Cell::get).unwrap_or(0)
}

// SAFETY: every call is passed to the system allocator unchanged; the only addition is a
// counter update, which allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            add(size(layout));
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            add(size(layout));
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(pointer, layout) };
        add(-size(layout));
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            add(isize::try_from(new_size).unwrap_or(isize::MAX) - size(layout));
        }
        moved
    }
}
