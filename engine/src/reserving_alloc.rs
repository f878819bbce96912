//! The process allocator: the system allocator, except that requests of
//! `HUGE_ALLOCATION_BYTES` or more get address space reserved without
//! committing memory (`mmap` with `MAP_NORESERVE`).
//!
//! Why: kafka-protocol 0.18 sizes a decoded array with `Vec::with_capacity`
//! of the element count read from the wire, before any element is decoded.
//! A 20-byte Metadata request claiming 2^31 topics asks for ~154 GB; the
//! system allocator refuses, and a refused allocation aborts the process —
//! one malicious frame would kill the broker. Reserved-but-untouched pages
//! cost nothing, the decode then fails on the missing bytes, and the
//! reservation is unmapped. Nothing legitimate in the broker allocates a
//! gigabyte at once (requests are capped at socket.request.max.bytes).
//! Upstream fixes (bounding the count by the bytes left) are open:
//! kafka-protocol-rs PRs #152, #161, #200; drop this once one ships.
//! With `vm.overcommit_memory=2` the kernel ignores MAP_NORESERVE and the
//! reservation fails like before.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are reserved lazily.
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;
/// mmap returns page-aligned memory; larger alignments go to the system.
const PAGE_BYTES: usize = 4096;

pub struct ReservingAllocator;

fn reserved(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_BYTES && layout.align() <= PAGE_BYTES
}

extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
    fn mremap(old: *mut u8, old_len: usize, new_len: usize, flags: i32, ...) -> *mut u8;
}
// Linux x86_64/aarch64 values (the only targets Gregor runs on: io_uring).
const PROT_READ: i32 = 0x1;
const PROT_WRITE: i32 = 0x2;
const MAP_PRIVATE: i32 = 0x02;
const MAP_ANONYMOUS: i32 = 0x20;
const MAP_NORESERVE: i32 = 0x4000;
const MREMAP_MAYMOVE: i32 = 1;
const MAP_FAILED: *mut u8 = !0usize as *mut u8;

// SAFETY: every block comes from exactly one of two sources and goes back to
// the same one, chosen by the layout, which callers must pass unchanged.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserved(&layout) {
            return System.alloc(layout);
        }
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
        let ptr = mmap(
            std::ptr::null_mut(),
            layout.size(),
            PROT_READ | PROT_WRITE,
            flags,
            -1,
            0,
        );
        if ptr == MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // Fresh anonymous pages read as zero.
            self.alloc(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if reserved(&layout) {
            munmap(ptr, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !reserved(&layout) && !reserved(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        if reserved(&layout) && reserved(&new_layout) {
            // Moves page mappings, not bytes: untouched pages stay free.
            let moved = mremap(ptr, layout.size(), new_size, MREMAP_MAYMOVE);
            return if moved == MAP_FAILED {
                std::ptr::null_mut()
            } else {
                moved
            };
        }
        // Crossing between the two sources: move the bytes (the small side
        // bounds how many).
        let new_ptr = self.alloc(new_layout);
        if !new_ptr.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservations_cost_nothing_until_touched() {
        let allocator = ReservingAllocator;
        // Far more than this machine's memory: only address space.
        let layout = Layout::from_size_align(256 << 30, 8).unwrap();
        unsafe {
            let ptr = allocator.alloc(layout);
            assert!(!ptr.is_null(), "reservation refused");
            ptr.write(7);
            *ptr.add((256 << 30) - 1) = 9;
            assert_eq!(*ptr, 7);
            let grown = allocator.realloc(ptr, layout, 257 << 30);
            assert!(!grown.is_null());
            assert_eq!(*grown, 7);
            assert_eq!(*grown.add((256 << 30) - 1), 9);
            allocator.dealloc(grown, Layout::from_size_align(257 << 30, 8).unwrap());
        }
        // Small ones are the system's, through realloc across the boundary.
        let small = Layout::from_size_align(64, 8).unwrap();
        unsafe {
            let ptr = allocator.alloc(small);
            ptr.write_bytes(5, 64);
            let big = allocator.realloc(ptr, small, HUGE_ALLOCATION_BYTES);
            assert_eq!(*big.add(63), 5);
            let back = allocator.realloc(
                big,
                Layout::from_size_align(HUGE_ALLOCATION_BYTES, 8).unwrap(),
                32,
            );
            assert_eq!(*back.add(31), 5);
            allocator.dealloc(back, Layout::from_size_align(32, 8).unwrap());
        }
    }

    #[test]
    fn a_metadata_request_claiming_two_billion_topics_fails_cleanly() {
        use kafka_protocol::messages::MetadataRequest;
        use kafka_protocol::protocol::Decodable;
        // Metadata v1 body: topics array length 0x7FFFFFFF and nothing else.
        // Decoding sizes a Vec for 2^31 topics first; under this allocator
        // (the test binary's global one, see lib.rs) that is a reservation.
        let mut body = bytes::Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 0x00, 0x01]);
        assert!(MetadataRequest::decode(&mut body, 1).is_err());
    }
}
