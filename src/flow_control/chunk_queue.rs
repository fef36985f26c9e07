//! The write buffer's queue of chunks: the front chunk held inline, the rest in a `VecDeque`
//! allocated only while two or more chunks wait.

use std::collections::VecDeque;

use bytes::Bytes;

/// Chunks in order, front first.
///
/// A connection that writes one chunk at a time (an echo, a response per request) queues one
/// chunk, sends it and empties the queue again: held inline, that costs no allocation per
/// write, where a `VecDeque` allocated on each first push and freed once emptied (an idle
/// connection holds no queue) cost a `malloc` and a `free` per request. The rest is boxed so
/// that an idle connection holds 40 bytes here, not 64. Invariant: `rest` is `None` while
/// `front` is.
#[derive(Debug, Default)]
pub(super) struct ChunkQueue {
    /// The oldest chunk.
    front: Option<Bytes>,
    /// The chunks behind it, oldest first, once a second chunk was queued. Boxed: 8 bytes
    /// per connection instead of a `VecDeque`'s 32, for a second allocation only while two or
    /// more chunks wait.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Bytes>>>,
}

impl ChunkQueue {
    pub(super) fn push_back(&mut self, chunk: Bytes) {
        match self.front {
            None => self.front = Some(chunk),
            Some(_) => self.rest.get_or_insert_with(Box::default).push_back(chunk),
        }
    }

    /// Puts `chunk` before the others.
    pub(super) fn push_front(&mut self, chunk: Bytes) {
        if let Some(old) = self.front.replace(chunk) {
            self.rest.get_or_insert_with(Box::default).push_front(old);
        }
    }

    /// Takes the oldest chunk; once the last one is taken, nothing stays allocated.
    pub(super) fn pop_front(&mut self) -> Option<Bytes> {
        let front = self.front.take();
        self.front = self.rest.as_mut().and_then(|rest| rest.pop_front());
        if self.front.is_none() {
            self.rest = None;
        }
        front
    }

    pub(super) fn front(&self) -> Option<&Bytes> {
        self.front.as_ref()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.front.as_mut()
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.front.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.front.iter().chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    /// Bytes of heap the queue itself holds (not its chunks'), for tests of idle memory.
    #[cfg(test)]
    pub(super) fn allocated(&self) -> usize {
        self.rest.as_ref().map_or(0, |rest| {
            std::mem::size_of::<VecDeque<Bytes>>() + rest.capacity() * std::mem::size_of::<Bytes>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(queue: &ChunkQueue) -> Vec<&[u8]> {
        queue.iter().map(|chunk| &chunk[..]).collect()
    }

    #[test]
    fn chunks_come_out_in_order_from_either_end() {
        let mut queue = ChunkQueue::default();
        queue.push_back(Bytes::from_static(b"b"));
        queue.push_back(Bytes::from_static(b"c"));
        queue.push_front(Bytes::from_static(b"a"));
        queue.push_back(Bytes::from_static(b"d"));
        assert_eq!((contents(&queue), queue.len()), (vec![&b"a"[..], b"b", b"c", b"d"], 4));
        assert_eq!(queue.pop_front().as_deref(), Some(&b"a"[..]));
        assert_eq!(queue.front().map(|c| &c[..]), Some(&b"b"[..]));
        assert_eq!(contents(&queue), [&b"b"[..], b"c", b"d"]);
        let drained: Vec<_> = std::iter::from_fn(|| queue.pop_front()).collect();
        assert_eq!(drained, [&b"b"[..], b"c", b"d"]);
        assert_eq!((queue.len(), queue.front()), (0, None));
    }

    #[test]
    fn an_empty_queue_is_40_bytes() {
        assert_eq!(std::mem::size_of::<ChunkQueue>(), 40);
    }

    #[test]
    fn one_chunk_at_a_time_allocates_nothing() {
        let mut queue = ChunkQueue::default();
        for _ in 0..3 {
            queue.push_back(Bytes::from_static(b"reply"));
            assert_eq!(queue.allocated(), 0);
            queue.pop_front();
        }
        queue.push_front(Bytes::from_static(b"merged"));
        assert_eq!((queue.len(), queue.allocated()), (1, 0));
    }

    #[test]
    fn the_queue_behind_the_front_is_freed_once_emptied() {
        let mut queue = ChunkQueue::default();
        queue.push_back(Bytes::from_static(b"1"));
        queue.push_back(Bytes::from_static(b"2"));
        assert!(queue.allocated() > 0);
        queue.pop_front();
        assert!(queue.allocated() > 0, "its last chunk moved to the front");
        queue.pop_front();
        assert_eq!(queue.allocated(), 0);
    }
}
