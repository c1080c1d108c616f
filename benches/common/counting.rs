//! A counting global allocator over mimalloc (the `iamd` binary's), for
//! the benches that measure the heap a snapshot keeps and the peak while
//! it is built. `COUNTING` off makes it pass through (for timed passes).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
/// On, except during the timed pass.
pub static COUNTING: AtomicBool = AtomicBool::new(true);
/// The allocator the `iamd` binary uses, so load times here are the binary's.
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub static CURRENT: AtomicUsize = AtomicUsize::new(0);
pub static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !COUNTING.load(Ordering::Relaxed) {
            return unsafe { INNER.alloc(layout) };
        }
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !COUNTING.load(Ordering::Relaxed) {
            return unsafe { INNER.dealloc(ptr, layout) };
        }
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !COUNTING.load(Ordering::Relaxed) {
            return unsafe { INNER.realloc(ptr, layout, new_size) };
        }
        if new_size > layout.size() {
            let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;
