//! The timer heap: deadlines in nanoseconds, FIFO among equal deadlines, lazy cancellation.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

use super::handle::{Handle, TimerLink};

/// Below this many timers the heap is never rebuilt (asyncio's `_MIN_SCHEDULED_TIMER_HANDLES`).
const MIN_SCHEDULED_FOR_REBUILD: usize = 100;

/// One scheduled timer: ordered by deadline, then by scheduling order.
struct Entry {
    /// Deadline, nanoseconds on `CLOCK_MONOTONIC`.
    deadline: u64,
    /// Scheduling sequence number, so equal deadlines fire in FIFO order.
    seq: u64,
    /// The callback.
    handle: Handle,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// Scheduled timers (asyncio's `_scheduled`).
///
/// # Implementation
/// Cancelling a [`TimerHandle`](crate::TimerHandle) only marks it and bumps
/// `cancelled_in_heap`. Cancelled entries at the head are popped whenever the loop asks for the
/// next deadline, and the whole heap is rebuilt when it holds more than 100 entries of which
/// more than half are cancelled — checked both by the loop each iteration and on every insert,
/// so scheduling and cancelling a million timers inside one callback never holds a million
/// entries.
pub(crate) struct TimerHeap {
    /// Min-heap of entries.
    heap: BinaryHeap<Reverse<Entry>>,
    /// Cancelled handles still in `heap`; shared with every timer handle's [`TimerLink`].
    cancelled_in_heap: Rc<Cell<usize>>,
    /// Next sequence number.
    next_seq: u64,
}

impl TimerHeap {
    pub(crate) fn new() -> TimerHeap {
        TimerHeap { heap: BinaryHeap::new(), cancelled_in_heap: Rc::new(Cell::new(0)), next_seq: 0 }
    }

    /// A link for a new timer handle (before it is inserted).
    pub(crate) fn link(&self) -> TimerLink {
        TimerLink { cancelled_in_heap: self.cancelled_in_heap.clone(), in_heap: Cell::new(false) }
    }

    /// Schedules `handle` (made with [`link`](Self::link)) at `deadline`.
    pub(crate) fn insert(&mut self, deadline: u64, handle: Handle) {
        if let Some(link) = handle.timer_link() {
            link.in_heap.set(true);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { deadline, seq, handle }));
        self.compact_if_mostly_cancelled();
    }

    /// Entries in the heap, cancelled ones included.
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Cancelled entries still in the heap.
    pub(crate) fn cancelled_count(&self) -> usize {
        self.cancelled_in_heap.get()
    }

    /// asyncio's cleanup step of `_run_once`: rebuild when mostly cancelled, else pop the
    /// cancelled head.
    pub(crate) fn purge_cancelled(&mut self) {
        if !self.compact_if_mostly_cancelled() {
            self.pop_cancelled_head();
        }
    }

    fn compact_if_mostly_cancelled(&mut self) -> bool {
        let cancelled = self.cancelled_in_heap.get();
        if self.heap.len() <= MIN_SCHEDULED_FOR_REBUILD || cancelled * 2 <= self.heap.len() {
            return false;
        }
        let entries = std::mem::take(&mut self.heap).into_vec();
        let live: Vec<_> = entries
            .into_iter()
            .filter(|Reverse(e)| {
                let keep = !e.handle.cancelled();
                if !keep {
                    Self::unlink(&e.handle);
                }
                keep
            })
            .collect();
        self.heap = BinaryHeap::from(live);
        self.cancelled_in_heap.set(0);
        true
    }

    fn pop_cancelled_head(&mut self) {
        while let Some(Reverse(head)) = self.heap.peek() {
            if !head.handle.cancelled() {
                break;
            }
            let Some(Reverse(entry)) = self.heap.pop() else { break };
            Self::unlink(&entry.handle);
            self.cancelled_in_heap.set(self.cancelled_in_heap.get() - 1);
        }
    }

    fn unlink(handle: &Handle) {
        if let Some(link) = handle.timer_link() {
            link.in_heap.set(false);
        }
    }

    /// The earliest live deadline (after dropping the cancelled head).
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        self.pop_cancelled_head();
        self.heap.peek().map(|Reverse(e)| e.deadline)
    }

    /// Pops every live timer due at or before `now()` into `ready`, in deadline order; the
    /// clock is read only when there is a timer.
    pub(crate) fn pop_due(&mut self, now: impl FnOnce() -> u64, mut ready: impl FnMut(Handle)) {
        if self.heap.is_empty() {
            return;
        }
        let now = now();
        while let Some(Reverse(head)) = self.heap.peek() {
            if head.deadline > now {
                break;
            }
            let Some(Reverse(entry)) = self.heap.pop() else { break };
            Self::unlink(&entry.handle);
            if entry.handle.cancelled() {
                self.cancelled_in_heap.set(self.cancelled_in_heap.get() - 1);
            } else {
                ready(entry.handle);
            }
        }
    }

    /// Drops every timer (loop close).
    pub(crate) fn clear(&mut self) -> Vec<Handle> {
        self.cancelled_in_heap.set(0);
        std::mem::take(&mut self.heap)
            .into_vec()
            .into_iter()
            .map(|Reverse(e)| {
                Self::unlink(&e.handle);
                e.handle
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(heap: &TimerHeap, log: &Rc<std::cell::RefCell<Vec<u64>>>, tag: u64) -> Handle {
        let log = log.clone();
        Handle::once(move || log.borrow_mut().push(tag), Some(heap.link()))
    }

    #[test]
    fn fires_in_deadline_then_fifo_order() {
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut heap = TimerHeap::new();
        for (deadline, tag) in [(30, 1), (10, 2), (20, 3), (10, 4)] {
            let h = timer(&heap, &log, tag);
            heap.insert(deadline, h);
        }
        heap.pop_due(|| 25, |h| h.run());
        assert_eq!(*log.borrow(), vec![2, 4, 3]);
        assert_eq!(heap.next_deadline(), Some(30));
    }

    #[test]
    fn cancelled_head_is_skipped_and_counted_exactly() {
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut heap = TimerHeap::new();
        let a = timer(&heap, &log, 1);
        let b = timer(&heap, &log, 2);
        heap.insert(10, a.clone());
        heap.insert(20, b);
        a.cancel();
        a.cancel();
        assert_eq!(heap.cancelled_count(), 1);
        assert_eq!(heap.next_deadline(), Some(20));
        assert_eq!(heap.cancelled_count(), 0);
        assert_eq!(heap.len(), 1);
    }

    #[test]
    fn rebuilds_when_mostly_cancelled() {
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut heap = TimerHeap::new();
        let handles: Vec<_> = (0..150)
            .map(|i| {
                let h = timer(&heap, &log, i);
                heap.insert(1000 - i, h.clone());
                h
            })
            .collect();
        for h in &handles[..76] {
            h.cancel();
        }
        assert_eq!(heap.cancelled_count(), 76);
        heap.purge_cancelled();
        assert_eq!(heap.len(), 74);
        assert_eq!(heap.cancelled_count(), 0);
        // Cancelling after removal from the heap does not count.
        handles[0].cancel();
        assert_eq!(heap.cancelled_count(), 0);
    }

    #[test]
    fn million_cancelled_timers_stay_bounded() {
        let mut heap = TimerHeap::new();
        for i in 0..1_000_000u64 {
            let h = Handle::once(|| {}, Some(heap.link()));
            heap.insert(i, h.clone());
            h.cancel();
        }
        assert!(heap.len() <= 2 * MIN_SCHEDULED_FOR_REBUILD + 2, "len {}", heap.len());
    }
}
