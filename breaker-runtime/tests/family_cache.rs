//! A family's thread cache never lets a [`Member`] read freed memory: not
//! when the thread exits holding one, not when a lookup comes after the
//! cache is gone, not when the thread calls more families than it caches
//! while it holds members of each.
//!
//! A member found through the thread's cache points into a snapshot that
//! the cache (itself a thread-local) keeps alive. Thread-locals are
//! destroyed in reverse order of first use, so one holding a member can be
//! destroyed after the cache: the cache must not free a snapshot a member
//! still points into.
//!
//! Its own test binary, because it installs an allocator that poisons freed
//! memory: a read of a freed snapshot then reads `0xA5` bytes (a crash or a
//! wrong name), not the old contents by luck. CI also runs it under
//! valgrind.

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

/// Looks a key up when dropped, and records the name it found.
struct LookUpOnDrop(Family);

impl Drop for LookUpOnDrop {
    fn drop(&mut self) {
        let name = self.0.member("a").map(|member| member.name().to_owned());
        *LOOKED_UP_AT_EXIT.lock().unwrap() = Some(name.map_err(|error| error.to_string()));
    }
}

/// What the lookup made at thread exit found.
static LOOKED_UP_AT_EXIT: Mutex<Option<Result<String, String>>> = Mutex::new(None);

thread_local! {
    static LOOKS_UP: RefCell<Option<LookUpOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn a_lookup_made_after_the_thread_cache_is_gone_finds_the_member_in_the_shared_tables() {
    std::thread::spawn(|| {
        // First used before the family's cache, so destroyed after it.
        LOOKS_UP.with(|_| ());
        let family = Family::new("exit-lookup", CircuitBreakerConfig::default()).unwrap();
        family.breaker("a").unwrap();
        // The cache now holds the family's snapshot, remembering `a`.
        assert_eq!(family.member("a").unwrap().name(), "exit-lookup[a]");
        LOOKS_UP.with(|slot| *slot.borrow_mut() = Some(LookUpOnDrop(family.clone())));
        // Later keys make the cache's copy of the tables its own.
        family.breaker("b").unwrap();
        drop(family.member("b").unwrap());
        drop(family);
    })
    .join()
    .unwrap();
    let found = LOOKED_UP_AT_EXIT.lock().unwrap().clone();
    assert_eq!(found, Some(Ok("exit-lookup[a]".to_owned())));
}

#[test]
fn a_member_held_while_the_thread_calls_more_families_than_it_caches_stays_valid() {
    // Six families against four slots: each new one takes the slot of one
    // whose member is still held, and that snapshot must wait for it.
    let families: Vec<Family> = (0..6)
        .map(|i| Family::new(format!("rotate-{i}"), CircuitBreakerConfig::default()).unwrap())
        .collect();
    for family in &families {
        family.breaker("k").unwrap();
    }
    let held: Vec<Member> = families.iter().map(|f| f.member("k").unwrap()).collect();
    for family in &families {
        // New keys replace the family's tables (copied, one of 16 shards
        // per key): the tables the held members point into are no one
        // else's now.
        for i in 0..100 {
            family.breaker(&i).unwrap();
        }
        assert_eq!(
            family.member("99").unwrap().name(),
            format!("{}[99]", family.name())
        );
    }
    for (i, member) in held.iter().enumerate() {
        assert_eq!(member.name(), format!("rotate-{i}[k]"));
        member.call(|| Ok::<_, ()>(())).unwrap();
    }
    drop(held);
    for family in &families {
        assert_eq!(family.member("k").unwrap().get_metrics().total_calls, 1);
    }
}
