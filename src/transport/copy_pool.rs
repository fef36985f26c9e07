//! Copies of small borrowed writes for the loop's batch, in buffers recycled per thread.
//!
//! A batched write of a borrowed slice must be copied (the kernel reads it after `write`
//! returns). `Bytes::copy_from_slice` made that two allocations: the copy, and the shared
//! header `bytes` adds when the send op clones the buffered `Bytes`. And a server answering 64
//! connections in one turn allocates 64 copies before it frees one: past glibc's per-thread
//! cache (7 chunks a size) every 1 KiB copy took `malloc`'s slow path and its free the
//! consolidating one, ~550 instructions per request (`docs/benchmarks.md`). Here a copy goes
//! into a buffer of its size class taken from this thread's free list, and goes back to it when
//! the last `Bytes` of it drops; the `Bytes` is made with `Bytes::from_owner` (one small
//! allocation, clones counted without allocating).
//!
//! # Implementation
//! Classes are powers of two from [`SMALLEST`] to [`BATCH_COPY_MAX`]; each free list keeps at
//! most [`KEPT_BYTES`] of buffers, so a thread keeps at most `KEPT_BYTES` per class whatever
//! burst it served (memory per idle connection does not grow with the pool). A buffer dropped
//! on another thread (`Bytes` is `Send`) joins that thread's lists, or is freed once the
//! thread's lists are gone.

use std::cell::RefCell;

use bytes::Bytes;

use super::write_side::BATCH_COPY_MAX;

/// The smallest class.
const SMALLEST: usize = 64;

/// The size classes, `SMALLEST` to `BATCH_COPY_MAX` by powers of two.
const CLASSES: usize = (BATCH_COPY_MAX / SMALLEST).trailing_zeros() as usize + 1;

/// Bytes of free buffers a thread keeps per class.
const KEPT_BYTES: usize = 256 * 1024;

thread_local! {
    /// This thread's free buffers, by class.
    static FREE: RefCell<[Vec<Box<[u8]>>; CLASSES]> = RefCell::new(Default::default());
}

/// A `Bytes` holding a copy of `data` (one of at most [`BATCH_COPY_MAX`] bytes is pooled; an
/// empty or larger one is copied as `Bytes::copy_from_slice` does).
pub(crate) fn copy(data: &[u8]) -> Bytes {
    copy_all(&[data])
}

/// A `Bytes` holding `buffers` one after the other (a `writelines`), pooled as [`copy`]'s.
pub(crate) fn copy_all(buffers: &[&[u8]]) -> Bytes {
    let len = buffers.iter().map(|b| b.len()).sum();
    let Some(class) = class_of(len) else { return Bytes::from(buffers.concat()) };
    let mut buffer = FREE
        .try_with(|free| free.borrow_mut()[class].pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; SMALLEST << class].into_boxed_slice());
    let mut end = 0;
    for data in buffers {
        buffer[end..end + data.len()].copy_from_slice(data);
        end += data.len();
    }
    Bytes::from_owner(Pooled { buffer, len, class })
}

/// The class of a copy of `len` bytes, if it is pooled.
fn class_of(len: usize) -> Option<usize> {
    if !(0 < len && len <= BATCH_COPY_MAX) {
        return None;
    }
    let rounded = len.max(SMALLEST).next_power_of_two();
    Some((rounded / SMALLEST).trailing_zeros() as usize)
}

/// A pooled buffer and how much of it a copy fills; back to its free list when dropped.
struct Pooled {
    /// The buffer, `SMALLEST << class` bytes.
    buffer: Box<[u8]>,
    /// The copy's length.
    len: usize,
    /// Its size class.
    class: usize,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        let kept = KEPT_BYTES / buffer.len();
        // Gone with its thread's lists (thread exit): the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            let list = &mut free.borrow_mut()[self.class];
            if list.len() < kept {
                list.push(buffer);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_count(class: usize) -> usize {
        FREE.with(|free| free.borrow()[class].len())
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
    fn a_copy_holds_the_bytes_and_its_buffer_is_reused_after_the_last_clone() {
        let class = class_of(1000).unwrap();
        let data: Vec<u8> = (0..1000).map(|i| i as u8).collect();
        let first = copy(&data);
        let clone = first.clone();
        let address = first.as_ptr();
        assert_eq!(&first[..], &data[..]);
        let before = free_count(class);
        drop(first);
        assert_eq!(free_count(class), before, "a clone still holds the buffer");
        drop(clone);
        assert_eq!(free_count(class), before + 1);
        let second = copy(&data[..900]);
        assert_eq!(second.as_ptr(), address, "the freed buffer is taken again");
        assert_eq!(&second[..], &data[..900]);
    }

    #[test]
    fn a_thread_keeps_at_most_its_bound_of_free_buffers() {
        let class = class_of(BATCH_COPY_MAX).unwrap();
        let kept = KEPT_BYTES / BATCH_COPY_MAX;
        let copies: Vec<Bytes> = (0..kept + 10).map(|_| copy(&[7; BATCH_COPY_MAX])).collect();
        drop(copies);
        assert_eq!(free_count(class), kept);
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
        for len in [0, BATCH_COPY_MAX + 1] {
            let data = vec![3; len];
            assert_eq!(&copy(&data)[..], &data[..]);
        }
    }

    #[test]
    fn a_copy_dropped_on_another_thread_is_freed_there() {
        let bytes = copy(&[1; 2000]);
        let class = class_of(2000).unwrap();
        let before = free_count(class);
        std::thread::spawn(move || drop(bytes)).join().unwrap();
        assert_eq!(free_count(class), before);
    }
}
