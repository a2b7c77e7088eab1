//! How much memory a process holds, and how much of it is live.
//!
//! RSS alone cannot tell a leak from an allocator that keeps freed pages for
//! later: both look like a climbing line. [`CountingAlloc`] wraps a process's
//! global allocator and counts the bytes its callers hold right now, so on a
//! dashboard `recsys_heap_live_bytes` flat while `process_resident_memory_bytes`
//! climbs means retention (fragmentation, per-thread arenas), and the two
//! climbing together means something really keeps more.
//!
//! Each binary installs it in its `main.rs`:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: common::memory::CountingAlloc<std::alloc::System> =
//!     common::memory::CountingAlloc::new(std::alloc::System);
//! // in main(): common::memory::install(&ALLOC);
//! ```
//!
//! and every process's metrics registry gets, through [`register`], the
//! prometheus crate's process collector (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
//! `process_threads`, …), [`MemoryCollector`] (the heap gauge only where a
//! counting allocator is installed; tests run without one) and the HTTP
//! panic counter ([`crate::http::panics`]).
//!
//! The count is sharded: one cache-padded counter per thread slot, so the
//! allocation path of a busy server never contends on a shared cache line
//! (a single atomic cost serving measurable throughput on two cores).

// A global allocator is unsafe by contract (GlobalAlloc); this module only
// forwards every call unchanged to the wrapped allocator and counts sizes.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::OnceLock;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, Opts};

const SHARDS: usize = 32;

#[repr(align(128))]
struct Shard(AtomicIsize);

/// A global allocator that forwards to `A` and counts the bytes allocated and
/// not yet freed.
pub struct CountingAlloc<A> {
    inner: A,
    shards: [Shard; SHARDS],
}

impl<A> std::fmt::Debug for CountingAlloc<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingAlloc").field("live_bytes", &self.live_bytes()).finish_non_exhaustive()
    }
}

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates,
    // which an allocator must not do.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn slot() -> usize {
    SLOT.try_with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SHARDS;
        s.set(v);
        v
    })
    // A thread being torn down has lost its slot; any shard is correct, only
    // the spreading is lost.
    .unwrap_or(0)
}

impl<A> CountingAlloc<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        CountingAlloc { inner, shards: [const { Shard(AtomicIsize::new(0)) }; SHARDS] }
    }

    /// Bytes allocated through this allocator and not freed yet.
    pub fn live_bytes(&self) -> usize {
        // A block can be freed on another thread than the one that allocated
        // it, so single shards go negative; only the sum means anything.
        let sum: isize = self.shards.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        sum.max(0) as usize
    }

    #[inline]
    fn add(&self, n: isize) {
        self.shards[slot()].0.fetch_add(n, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards its arguments unchanged to `inner`, which
// upholds GlobalAlloc's contract; the counting touches no memory of the caller.
unsafe impl<A: GlobalAlloc> GlobalAlloc for CountingAlloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds alloc's contract.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            self.add(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds alloc_zeroed's contract.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            self.add(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; the caller upholds dealloc's contract.
        unsafe { self.inner.dealloc(ptr, layout) };
        self.add(-(layout.size() as isize));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds realloc's contract.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// What the metrics read from an installed counting allocator.
pub trait HeapStats: Sync {
    /// Bytes allocated and not freed yet.
    fn live_bytes(&self) -> usize;
}

impl<A: Sync> HeapStats for CountingAlloc<A> {
    fn live_bytes(&self) -> usize {
        CountingAlloc::live_bytes(self)
    }
}

static INSTALLED: OnceLock<&'static dyn HeapStats> = OnceLock::new();

/// Makes the process's counting allocator visible to [`MemoryCollector`]
/// (first call wins).
pub fn install(alloc: &'static dyn HeapStats) {
    let _ = INSTALLED.set(alloc);
}

/// Live heap bytes of the installed counting allocator, if there is one.
pub fn heap_live_bytes() -> Option<usize> {
    INSTALLED.get().map(|a| a.live_bytes())
}

/// Collects `recsys_heap_live_bytes` at scrape time.
#[derive(Debug)]
pub struct MemoryCollector {
    heap: IntGauge,
    descs: Vec<Desc>,
}

impl MemoryCollector {
    /// The collector; register it in the process's registry.
    pub fn new() -> prometheus::Result<MemoryCollector> {
        let heap = IntGauge::with_opts(Opts::new(
            "recsys_heap_live_bytes",
            "Bytes allocated on the heap and not freed (RSS minus this is what the allocator retains)",
        ))?;
        let descs = heap.desc().into_iter().cloned().collect();
        Ok(MemoryCollector { heap, descs })
    }
}

impl Collector for MemoryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match heap_live_bytes() {
            Some(b) => {
                self.heap.set(b as i64);
                self.heap.collect()
            }
            None => Vec::new(),
        }
    }
}

/// Registers the process collector, [`MemoryCollector`] and the HTTP panic
/// counter in `registry` (each process's own registry).
pub fn register(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    registry.register(Box::new(MemoryCollector::new()?))?;
    registry.register(Box::new(crate::http::panics().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn counts_what_is_held_across_threads() {
        static A: CountingAlloc<System> = CountingAlloc::new(System);
        let before = A.live_bytes();
        let layout = Layout::from_size_align(1000, 8).expect("layout");
        // SAFETY: a plain allocation freed below with the same layout.
        let p = unsafe { A.alloc(layout) } as usize;
        assert_eq!(A.live_bytes() - before, 1000);
        // SAFETY: grows the block allocated above.
        let p = unsafe { A.realloc(p as *mut u8, layout, 3000) } as usize;
        assert_eq!(A.live_bytes() - before, 3000);
        // Freed on another thread (another shard): the sum is still right.
        std::thread::spawn(move || {
            let layout = Layout::from_size_align(3000, 8).expect("layout");
            // SAFETY: the block of 3000 bytes reallocated above.
            unsafe { A.dealloc(p as *mut u8, layout) };
        })
        .join()
        .expect("thread");
        assert_eq!(A.live_bytes(), before);
    }

    #[test]
    fn the_process_collector_reports_memory_cpu_and_files() {
        let registry = prometheus::Registry::new();
        register(&registry).expect("register");
        let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).expect("encode");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .expect("number")
        };
        assert!(value("process_resident_memory_bytes") > 1e6, "a test process holds more than 1 MB");
        assert!(value("process_open_fds") >= 3.0, "stdin, stdout, stderr at least");
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        assert!(value("process_threads") >= 1.0);
        assert!(value("process_start_time_seconds") > 1.6e9);
        // Present from the start (tests share it, so its value is not checked here).
        assert!(text.contains("\nrecsys_http_panics_total "), "{text}");
        // No counting allocator in tests: no heap gauge rather than a wrong 0.
        assert!(!text.contains("recsys_heap_live_bytes"), "{text}");
    }
}
