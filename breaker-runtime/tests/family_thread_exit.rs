//! A family's [`Member`] kept in a thread-local stays valid at thread exit.
//!
//! A member found through the thread's cache points into a snapshot that
//! the cache (itself a thread-local) keeps alive. Thread-locals are
//! destroyed in reverse order of first use, so one holding a member can be
//! destroyed after the cache: the cache must not free a snapshot a member
//! still points into.
//!
//! Its own test binary, because it installs an allocator that poisons freed
//! memory: a read of a freed snapshot then reads `0xA5` bytes (a crash or a
//! wrong name), not the old contents by luck.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::Mutex;

use breaker_runtime::{CircuitBreakerConfig, Family, Member};

/// The system allocator, with freed memory overwritten.
struct Poison;

// SAFETY: forwards to `System`; writing over a block before freeing it is
// within the block.
unsafe impl GlobalAlloc for Poison {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes from
        // `alloc`, until it is freed here.
        unsafe {
            std::ptr::write_bytes(ptr, 0xA5, layout.size());
            System.dealloc(ptr, layout);
        }
    }
}

#[global_allocator]
static GLOBAL: Poison = Poison;

/// The name the member read when its thread-local was destroyed.
static READ_AT_EXIT: Mutex<Option<String>> = Mutex::new(None);

/// Reads its member's name when dropped.
struct ReadOnDrop(Member);

impl Drop for ReadOnDrop {
    fn drop(&mut self) {
        let name = self.0.name().to_owned();
        *READ_AT_EXIT.lock().unwrap() = Some(name);
    }
}

thread_local! {
    static HELD: RefCell<Option<ReadOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn a_member_kept_in_a_thread_local_stays_valid_after_the_thread_cache_is_gone() {
    std::thread::spawn(|| {
        // First used before the family's cache, so destroyed after it.
        HELD.with(|_| ());
        let family = Family::new("thread-exit", CircuitBreakerConfig::default()).unwrap();
        drop(family.member("a").unwrap()); // creates `a`
        let member = family.member("a").unwrap(); // served by the thread's cache
        HELD.with(|held| *held.borrow_mut() = Some(ReadOnDrop(member)));
        drop(family); // the thread's cache now holds the only copy of the tables
    })
    .join()
    .unwrap();
    let read = READ_AT_EXIT.lock().unwrap().clone();
    assert_eq!(read.as_deref(), Some("thread-exit[a]"));
}
