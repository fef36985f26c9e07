//! Copies of small borrowed writes for the loop's batch, in buffers recycled per thread
//! without an allocation per copy.
//!
//! A batched write that starts a send copies into a plain `Vec` the send op owns
//! ([`send_copy`]; `driver::SendBuf`), and writes made before the op reaches the kernel are
//! appended to it; its completion hands the `Vec` back ([`recycle`]). That is the usual case,
//! and the cheapest: no shared header, no reference count, no queue of chunks. The rest of
//! this module is for a copy that must join the write buffer as `Bytes` (behind a send the
//! kernel already has, say): [`copy_all`].
//!
//! A batched write of a borrowed slice must be copied (the kernel reads it after `write`
//! returns). `Bytes::copy_from_slice` made that two allocations: the copy, and the shared
//! header `bytes` adds when the send op clones the buffered `Bytes`. And a server answering 64
//! connections in one turn allocates 64 copies before it frees one: past glibc's per-thread
//! cache (7 chunks a size) every 1 KiB copy took `malloc`'s slow path and its free the
//! consolidating one, ~550 instructions per request (`docs/benchmarks.md`). A pool of plain
//! buffers wrapped with `Bytes::from_owner` still allocated the owner's box per copy and freed
//! it at the last drop (~250 instructions per request). Here each copy is split off a
//! [`BytesMut`] slot that outlives it: the slot's shared header counts the copies, and once
//! they are all dropped [`BytesMut::try_reclaim`] takes the whole buffer back, so a warm
//! thread copies with no allocation at all (two reference-count updates instead).
//!
//! # Implementation
//! Classes are powers of two from [`SMALLEST`] to [`BATCH_COPY_MAX`]; a slot of a class holds
//! that many bytes. Each class keeps its slots oldest first, at most [`KEPT_BYTES`] of them:
//! a copy takes the oldest (sends complete in about the order they were made, so it is the
//! likeliest to be free), or a new one if that is still held (by a send to a slow peer, say),
//! and the held one goes to the back, or is let go when the class is full (its memory is freed
//! with its last copy). So a thread keeps at most `KEPT_BYTES` per class whatever burst it
//! served, and a copy held for long pins only its own slot. A copy dropped on another thread
//! (`Bytes` is `Send`) only counts down its slot's header, which is atomic.

use std::cell::RefCell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::write_side::BATCH_COPY_MAX;

/// The smallest class.
const SMALLEST: usize = 64;

/// The size classes, `SMALLEST` to `BATCH_COPY_MAX` by powers of two.
const CLASSES: usize = (BATCH_COPY_MAX / SMALLEST).trailing_zeros() as usize + 1;

/// Bytes of slots a thread keeps per class.
const KEPT_BYTES: usize = 256 * 1024;

thread_local! {
    /// This thread's slots, by class, oldest first.
    static SLOTS: RefCell<[VecDeque<BytesMut>; CLASSES]> = RefCell::new(Default::default());
    /// Send copies handed back, last in first out (the warmest first), and their capacity.
    static SPARE_COPIES: RefCell<(Vec<Vec<u8>>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// The smallest capacity of a new send copy: a copy reused for a slightly larger write then
/// does not grow.
const SMALLEST_COPY: usize = 512;

/// A send copy of `buffers` (`len` bytes in all), for an `Op::Send` to own: a recycled
/// buffer, or a new one.
pub(crate) fn send_copy(buffers: &[&[u8]], len: usize) -> Vec<u8> {
    let spare = SPARE_COPIES.try_with(|spare| {
        let (copies, kept) = &mut *spare.borrow_mut();
        let copy = copies.pop()?;
        *kept -= copy.capacity();
        Some(copy)
    });
    let mut copy = spare.ok().flatten().unwrap_or_default();
    copy.reserve(len.max(SMALLEST_COPY));
    for data in buffers {
        copy.extend_from_slice(data);
    }
    copy
}

/// Takes back a send copy whose send completed, for the next [`send_copy`]: kept while the
/// thread keeps less than [`KEPT_BYTES`] of them, else freed.
pub(crate) fn recycle(mut copy: Vec<u8>) {
    copy.clear();
    let _ = SPARE_COPIES.try_with(|spare| {
        let (copies, kept) = &mut *spare.borrow_mut();
        if *kept + copy.capacity() <= KEPT_BYTES {
            *kept += copy.capacity();
            copies.push(copy);
        }
    });
}

/// A `Bytes` holding `buffers` one after the other (a write, or a `writelines`). A copy of at
/// most [`BATCH_COPY_MAX`] bytes is split off a slot; an empty or larger one, or one made
/// while the thread's slots are gone (thread exit), is a plain allocation.
pub(crate) fn copy_all(buffers: &[&[u8]]) -> Bytes {
    let len = buffers.iter().map(|b| b.len()).sum();
    let Some(class) = class_of(len) else { return Bytes::from(buffers.concat()) };
    // One borrow of the thread's slots: nothing in it calls out.
    let pooled = SLOTS.try_with(|slots| {
        let slots = &mut slots.borrow_mut()[class];
        let mut slot = take_slot(slots, class, len)
            .unwrap_or_else(|| BytesMut::with_capacity(SMALLEST << class));
        for data in buffers {
            slot.extend_from_slice(data);
        }
        let copy = slot.split().freeze();
        slots.push_back(slot);
        copy
    });
    pooled.unwrap_or_else(|_| Bytes::from(buffers.concat()))
}

/// The oldest slot of `class` if it has room for `len` bytes (its copies all dropped), else
/// `None` (a new slot is made); a held oldest slot goes to the back while the class has room
/// for one more beside the new one.
fn take_slot(slots: &mut VecDeque<BytesMut>, class: usize, len: usize) -> Option<BytesMut> {
    let mut oldest = slots.pop_front()?;
    if oldest.try_reclaim(len) {
        return Some(oldest);
    }
    if slots.len() + 2 <= KEPT_BYTES / (SMALLEST << class) {
        slots.push_back(oldest);
    }
    None
}

/// The class of a copy of `len` bytes, if it is pooled.
fn class_of(len: usize) -> Option<usize> {
    if !(0 < len && len <= BATCH_COPY_MAX) {
        return None;
    }
    let rounded = len.max(SMALLEST).next_power_of_two();
    Some((rounded / SMALLEST).trailing_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own: a fresh set of slots.
    fn on_new_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    fn copy(data: &[u8]) -> Bytes {
        copy_all(&[data])
    }

    fn slot_count(class: usize) -> usize {
        SLOTS.with(|slots| slots.borrow()[class].len())
    }

    #[test]
    fn a_recycled_send_copy_is_reused_and_the_thread_keeps_a_bounded_number() {
        on_new_thread(|| {
            let copy = send_copy(&[b"head", b"-tail"], 9);
            assert_eq!(copy, b"head-tail");
            let address = copy.as_ptr();
            recycle(copy);
            let again = send_copy(&[b"next"], 4);
            assert_eq!((again.as_ptr(), &again[..]), (address, &b"next"[..]), "reused, cleared");
            let copies: Vec<_> =
                (0..2 * KEPT_BYTES / SMALLEST_COPY).map(|_| send_copy(&[b"x"], 1)).collect();
            copies.into_iter().for_each(recycle);
            let kept = SPARE_COPIES.with(|spare| spare.borrow().1);
            assert!(kept <= KEPT_BYTES, "{kept} bytes kept");
        });
    }

    #[test]
    fn classes_cover_the_pooled_sizes_by_powers_of_two() {
        assert_eq!(class_of(0), None);
        assert_eq!(class_of(1), Some(0));
        assert_eq!(class_of(SMALLEST), Some(0));
        assert_eq!(class_of(SMALLEST + 1), Some(1));
        assert_eq!(class_of(1024), Some(4));
        assert_eq!(class_of(BATCH_COPY_MAX), Some(CLASSES - 1));
        assert_eq!(class_of(BATCH_COPY_MAX + 1), None);
    }

    #[test]
    fn a_slot_is_reused_once_every_clone_of_its_copy_is_dropped() {
        on_new_thread(|| {
            let data: Vec<u8> = (0..1000).map(|i| i as u8).collect();
            let first = copy(&data);
            let clone = first.clone();
            let address = first.as_ptr();
            assert_eq!(&first[..], &data[..]);
            drop(first);
            let second = copy(&data);
            assert_ne!(second.as_ptr(), address, "a clone still holds the first slot");
            assert_eq!(slot_count(class_of(1000).unwrap()), 2);
            drop(clone);
            let third = copy(&data[..900]);
            assert_eq!(third.as_ptr(), address, "the oldest slot, free again, is taken");
            assert_eq!(&third[..], &data[..900]);
            assert_eq!(&second[..], &data[..], "untouched by the copy after it");
        });
    }

    #[test]
    fn a_thread_keeps_at_most_its_bound_of_slots() {
        on_new_thread(|| {
            let class = class_of(BATCH_COPY_MAX).unwrap();
            let kept = KEPT_BYTES / BATCH_COPY_MAX;
            let copies: Vec<Bytes> = (0..kept + 10).map(|_| copy(&[7; BATCH_COPY_MAX])).collect();
            assert_eq!(slot_count(class), kept);
            let addresses: Vec<_> = copies.iter().map(|c| c.as_ptr()).collect();
            drop(copies);
            for _ in 0..kept {
                let again = copy(&[8; BATCH_COPY_MAX]);
                assert!(addresses.contains(&again.as_ptr()), "a kept slot, no new buffer");
            }
            assert_eq!(slot_count(class), kept);
        });
    }

    #[test]
    fn buffers_are_copied_one_after_the_other() {
        let parts: [&[u8]; 3] = [b"one", b"", &[9; 300]];
        assert_eq!(&copy_all(&parts)[..], &parts.concat()[..]);
        let large: [&[u8]; 2] = [&[1; BATCH_COPY_MAX], b"x"];
        assert_eq!(&copy_all(&large)[..], &large.concat()[..]);
    }

    #[test]
    fn empty_and_large_writes_are_copied_unpooled() {
        on_new_thread(|| {
            for len in [0, BATCH_COPY_MAX + 1] {
                let data = vec![3; len];
                assert_eq!(&copy(&data)[..], &data[..]);
            }
            assert!((0..CLASSES).all(|class| slot_count(class) == 0));
        });
    }

    #[test]
    fn a_copy_dropped_on_another_thread_frees_its_slot_for_this_one() {
        on_new_thread(|| {
            let bytes = copy(&[1; 2000]);
            let address = bytes.as_ptr();
            std::thread::spawn(move || drop(bytes)).join().unwrap();
            assert_eq!(copy(&[2; 2000]).as_ptr(), address);
        });
    }
}
