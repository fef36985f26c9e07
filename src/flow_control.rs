//! The write buffers of transports and their high/low water marks (asyncio's
//! `FlowControlMixin`): [`WriteBuffer`] for the bytes of a stream or write pipe (and of the
//! TLS layer's plaintext), [`SendQueue`] for the datagrams of a datagram transport, both with
//! [`WaterMarks`]. A buffer change yields a [`FlowEvent`], which becomes the protocol's
//! `pause_writing`/`resume_writing` event.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use socket2::SockAddr;

use crate::dispatch::{DatagramEvent, Event};
use crate::error::{ArgumentKind, Error, Result};

mod chunk_queue;
use chunk_queue::ChunkQueue;

/// asyncio's default high-water mark: 64 KiB.
pub(crate) const DEFAULT_HIGH_WATER: usize = 64 * 1024;

/// What each queued datagram adds to a [`SendQueue`]'s size besides its bytes (asyncio's
/// `_header_size`).
pub(crate) const DATAGRAM_OVERHEAD: usize = 8;

/// Whether the protocol was told to pause writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteFlow {
    /// Writing is welcome.
    Flowing,
    /// `pause_writing` was called; `resume_writing` comes when the buffer drains to `low`.
    Paused,
}

/// What the protocol must be told after a buffer change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowEvent {
    /// Call `pause_writing`.
    Pause,
    /// Call `resume_writing`.
    Resume,
}

impl<T> From<FlowEvent> for Event<T> {
    fn from(flow: FlowEvent) -> Self {
        match flow {
            FlowEvent::Pause => Event::PauseWriting,
            FlowEvent::Resume => Event::ResumeWriting,
        }
    }
}

impl<T> From<FlowEvent> for DatagramEvent<T> {
    fn from(flow: FlowEvent) -> Self {
        match flow {
            FlowEvent::Pause => DatagramEvent::PauseWriting,
            FlowEvent::Resume => DatagramEvent::ResumeWriting,
        }
    }
}

/// asyncio's water marks over a buffer whose size its owner keeps, and the flow state they
/// drive.
#[derive(Debug)]
pub(crate) struct WaterMarks {
    /// Pause the protocol above this size.
    high: usize,
    /// Resume it at or below this size.
    low: usize,
    /// Flow state.
    flow: WriteFlow,
}

impl Default for WaterMarks {
    fn default() -> WaterMarks {
        WaterMarks {
            high: DEFAULT_HIGH_WATER,
            low: DEFAULT_HIGH_WATER / 4,
            flow: WriteFlow::Flowing,
        }
    }
}

impl WaterMarks {
    /// `(low, high)`, as asyncio's `get_write_buffer_limits`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        (self.low, self.high)
    }

    /// Sets the marks as asyncio does: `high` alone gives `low = high / 4`; `low` alone gives
    /// `high = 4 * low`; neither gives the defaults; `high < low` is an error. Returns a pause
    /// event when `size` is already above the new high mark.
    pub(crate) fn set(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
        size: usize,
    ) -> Result<Option<FlowEvent>> {
        let high = high.unwrap_or_else(|| low.map_or(DEFAULT_HIGH_WATER, |low| 4 * low));
        let low = low.unwrap_or(high / 4);
        if high < low {
            return Err(Error::invalid_argument(
                ArgumentKind::OutOfRange,
                format!(
                    "write buffer limits: the high-water mark ({high} bytes) must not be below the \
                     low-water mark ({low} bytes)"
                ),
            ));
        }
        (self.high, self.low) = (high, low);
        Ok(self.grew(size))
    }

    /// The buffer grew to `size`: `Pause` when that took it over `high`.
    pub(crate) fn grew(&mut self, size: usize) -> Option<FlowEvent> {
        if self.flow == WriteFlow::Flowing && size > self.high {
            self.flow = WriteFlow::Paused;
            return Some(FlowEvent::Pause);
        }
        None
    }

    /// The buffer shrank to `size`: `Resume` when that brought it to `low` while paused.
    pub(crate) fn shrank(&mut self, size: usize) -> Option<FlowEvent> {
        if self.flow == WriteFlow::Paused && size <= self.low {
            self.flow = WriteFlow::Flowing;
            return Some(FlowEvent::Resume);
        }
        None
    }
}

/// What `get_write_buffer_size`, `get_write_buffer_limits` and `set_write_buffer_limits`
/// read and set, on any transport's outgoing buffer.
pub(crate) trait Buffered {
    /// The buffer's size as asyncio counts it.
    fn size(&self) -> usize;
    /// `(low, high)`.
    fn limits(&self) -> (usize, usize);
    /// Sets the marks (see [`WaterMarks::set`]); `Pause` when the buffer is already above the
    /// new high mark.
    fn set_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<Option<FlowEvent>>;
}

impl Buffered for std::cell::RefCell<SendQueue> {
    fn size(&self) -> usize {
        self.borrow().size
    }

    fn limits(&self) -> (usize, usize) {
        self.borrow().marks.limits()
    }

    fn set_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<Option<FlowEvent>> {
        let mut queue = self.borrow_mut();
        let size = queue.size;
        queue.marks.set(high, low, size)
    }
}

/// The most bytes [`WriteBuffer::front_coalesced`] merges into one write.
pub(crate) const COALESCE_MAX: usize = 256 * 1024;

/// A front chunk this big is written alone by [`WriteBuffer::front_coalesced`]: copying it
/// again (the unsent rest of an earlier merge, say) would cost more than the write it saves.
const COALESCE_FRONT_MAX: usize = 64 * 1024;

/// Bytes accepted by `write` and not yet sent, in order, with the water marks.
///
/// A batched send's copy is not queued here: the op owns it (`driver::SendBuf::Copied`). The
/// buffer only counts it, as [`held`](Self::held) bytes ahead of the queued ones, until the
/// send completes ([`release_held`](Self::release_held)) or is withdrawn
/// ([`unhold`](Self::unhold)).
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    /// Queued chunks; the front one may be partly sent (advanced past what went).
    chunks: ChunkQueue,
    /// Bytes waiting: those queued (the front chunk's unsent part included) and those held.
    len: usize,
    /// Bytes the send in flight holds in a copy of its own, ahead of the queued chunks.
    held: usize,
    /// When to pause and resume the protocol.
    marks: WaterMarks,
}

impl WriteBuffer {
    /// Bytes waiting to be sent.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `(low, high)`, as asyncio's `get_write_buffer_limits`.
    pub(crate) fn limits(&self) -> (usize, usize) {
        self.marks.limits()
    }

    /// Sets the marks (see [`WaterMarks::set`]); a pause event when the buffer is already
    /// above the new high mark.
    pub(crate) fn set_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<Option<FlowEvent>> {
        self.marks.set(high, low, self.len)
    }

    /// Queues `data` (not empty); returns `Pause` when it pushed the buffer over `high`.
    pub(crate) fn push(&mut self, data: Bytes) -> Option<FlowEvent> {
        debug_assert!(!data.is_empty());
        self.len += data.len();
        self.chunks.push_back(data);
        self.marks.grew(self.len)
    }

    /// The next bytes to write as one chunk: the front chunk's unsent part, merged first with
    /// the chunks behind it (up to [`COALESCE_MAX`] bytes in all), so one write takes what
    /// several writes queued while the previous one was in flight. A front chunk of
    /// [`COALESCE_FRONT_MAX`] or more goes alone, so no byte is copied over and over while a
    /// slow reader takes a big merge a little at a time.
    pub(crate) fn front_coalesced(&mut self) -> Option<Bytes> {
        let front = self.chunks.front()?;
        if front.len() >= COALESCE_FRONT_MAX || self.chunks.len() == 1 {
            return Some(front.clone()); // nothing to merge (the usual case: one write a turn)
        }
        let mut merged = 0;
        let mut count = 0;
        for chunk in self.chunks.iter() {
            if count > 0 && merged + chunk.len() > COALESCE_MAX {
                break;
            }
            merged += chunk.len();
            count += 1;
        }
        if count > 1 {
            let mut all = bytes::BytesMut::with_capacity(merged);
            for chunk in std::iter::from_fn(|| self.chunks.pop_front()).take(count) {
                all.extend_from_slice(&chunk);
            }
            self.chunks.push_front(all.freeze());
        }
        self.front()
    }

    /// The queued bytes, chunk by chunk, front first (for a direct vectored send).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(|chunk| &chunk[..])
    }

    /// The next chunks to send, without copying: the front chunk's unsent part and the chunks
    /// behind it, at most `max` of them (cheap clones).
    pub(crate) fn front_chunks(&self, max: usize) -> Vec<Bytes> {
        self.chunks.iter().take(max).cloned().collect()
    }

    /// Chunks queued.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Counts `n` more bytes held by the send in flight (see the type's docs); `Pause` when
    /// that crossed the high-water mark.
    pub(crate) fn hold(&mut self, n: usize) -> Option<FlowEvent> {
        self.len += n;
        self.held += n;
        self.marks.grew(self.len)
    }

    /// Bytes the send in flight holds in its own copy.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The send holding the held bytes completed having sent `sent` of them; `rest`, their
    /// unsent tail (not empty), is queued ahead of everything else. `Resume` when that brought
    /// the buffer to the low-water mark while paused.
    pub(crate) fn release_held(&mut self, sent: usize, rest: Option<Bytes>) -> Option<FlowEvent> {
        debug_assert_eq!(sent + rest.as_ref().map_or(0, Bytes::len), self.held);
        self.len -= sent;
        self.held = 0;
        if let Some(rest) = rest {
            self.chunks.push_front(rest);
        }
        self.marks.shrank(self.len)
    }

    /// The send holding the held bytes failed: they are dropped, as the transport ends.
    pub(crate) fn drop_held(&mut self) {
        self.len -= self.held;
        self.held = 0;
    }

    /// The send holding the held bytes was withdrawn unsent: its copy, `bytes`, is queued
    /// ahead of everything else.
    pub(crate) fn unhold(&mut self, bytes: Bytes) {
        debug_assert_eq!(bytes.len(), self.held);
        self.held = 0;
        if !bytes.is_empty() {
            self.chunks.push_front(bytes);
        }
    }

    /// The next bytes to send (a cheap clone of the front chunk's unsent part).
    pub(crate) fn front(&self) -> Option<Bytes> {
        self.chunks.front().cloned()
    }

    /// Records that `n` bytes from the front were sent; returns `Resume` when that brought the
    /// buffer to `low` or below while paused.
    pub(crate) fn consume(&mut self, mut n: usize) -> Option<FlowEvent> {
        debug_assert!(n <= self.len - self.held);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else { break };
            if n < front.len() {
                front.advance(n);
                break;
            }
            n -= front.len();
            // The last chunk out frees the queue: an idle connection holds none (its 144
            // bytes were 13% of the memory per idle connection once every write went
            // through the buffer, batched sends).
            self.chunks.pop_front();
        }
        self.marks.shrank(self.len)
    }

    /// Drops everything queued (abort); no flow event.
    pub(crate) fn clear(&mut self) {
        self.chunks = ChunkQueue::default();
        self.len = 0;
        self.held = 0;
    }
}

/// Datagrams accepted by `sendto` and not yet sent, with the water marks.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    /// Each datagram and its destination (`None`: the connected peer), oldest first.
    datagrams: VecDeque<(Bytes, Option<SockAddr>)>,
    /// Bytes queued plus [`DATAGRAM_OVERHEAD`] per datagram.
    size: usize,
    /// When to pause and resume the protocol.
    marks: WaterMarks,
}

impl SendQueue {
    /// True when no datagram waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// The oldest datagram and its destination.
    pub(crate) fn front(&self) -> Option<&(Bytes, Option<SockAddr>)> {
        self.datagrams.front()
    }

    /// Queues a datagram; `Pause` when that took the size over `high`.
    pub(crate) fn push(&mut self, data: Bytes, to: Option<SockAddr>) -> Option<FlowEvent> {
        self.size += data.len() + DATAGRAM_OVERHEAD;
        self.datagrams.push_back((data, to));
        self.marks.grew(self.size)
    }

    /// Drops the oldest datagram (sent or failed); `Resume` when that brought the size to
    /// `low` while paused.
    pub(crate) fn pop(&mut self) -> Option<FlowEvent> {
        if let Some((data, _)) = self.datagrams.pop_front() {
            self.size -= data.len() + DATAGRAM_OVERHEAD;
        }
        self.marks.shrank(self.size)
    }

    /// Drops everything queued (abort); no flow event.
    pub(crate) fn clear(&mut self) {
        self.datagrams.clear();
        self.size = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_buffer_keeps_no_allocation() {
        // What an idle connection holds after its writes went through the buffer.
        let mut buffer = WriteBuffer::default();
        buffer.push(Bytes::from_static(b"abc"));
        buffer.push(Bytes::from_static(b"de"));
        assert!(buffer.chunks.allocated() > 0);
        buffer.consume(4);
        assert_eq!(buffer.chunks.len(), 1, "one byte left");
        buffer.consume(1);
        assert_eq!((buffer.len(), buffer.chunks.len(), buffer.chunks.allocated()), (0, 0, 0));
        buffer.push(Bytes::from_static(b"f"));
        buffer.push(Bytes::from_static(b"g"));
        buffer.clear();
        assert_eq!((buffer.chunks.len(), buffer.chunks.allocated()), (0, 0));
    }

    #[test]
    fn held_bytes_count_ahead_of_the_queue_until_their_send_ends() {
        let mut buf = WriteBuffer::default();
        buf.set_limits(Some(8), Some(4)).unwrap();
        assert_eq!(buf.hold(6), None);
        assert_eq!(buf.push(Bytes::from_static(b"xyz")), Some(FlowEvent::Pause), "9 > 8");
        assert_eq!((buf.len(), buf.held()), (9, 6));
        assert_eq!(buf.front().unwrap(), Bytes::from_static(b"xyz"), "only queued bytes");
        // Its send took 2 of the 6: the unsent 4 go first, and 7 bytes still wait.
        assert_eq!(buf.release_held(2, Some(Bytes::from_static(b"cdef"))), None);
        assert_eq!((buf.len(), buf.held()), (7, 0));
        assert_eq!(buf.front_coalesced().unwrap(), Bytes::from_static(b"cdefxyz"));
        assert_eq!(buf.consume(3), Some(FlowEvent::Resume), "4 <= low");
        // Held and withdrawn: the copy is queued first, counted once.
        assert_eq!(buf.hold(2), None);
        buf.unhold(Bytes::from_static(b"ab"));
        assert_eq!((buf.len(), buf.held()), (6, 0));
        assert_eq!(buf.front_coalesced().unwrap(), Bytes::from_static(b"abfxyz"));
        assert_eq!(buf.hold(1), None);
        buf.clear();
        assert_eq!((buf.len(), buf.held()), (0, 0));
    }

    #[test]
    fn defaults_are_asyncios() {
        assert_eq!(WriteBuffer::default().limits(), (16 * 1024, 64 * 1024));
    }

    #[test]
    fn set_limits_derives_the_missing_mark_and_rejects_high_below_low() {
        let mut buf = WriteBuffer::default();
        buf.set_limits(Some(100), None).unwrap();
        assert_eq!(buf.limits(), (25, 100));
        buf.set_limits(None, Some(10)).unwrap();
        assert_eq!(buf.limits(), (10, 40));
        let err = buf.set_limits(Some(10), Some(100)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        let want = "write buffer limits: the high-water mark (10 bytes) must not be below the \
                    low-water mark (100 bytes)";
        assert_eq!(err.to_string(), want);
        assert_eq!(buf.limits(), (10, 40), "a rejected call changes nothing");
    }

    #[test]
    fn pauses_above_high_and_resumes_at_low() {
        // BEHAVIOURS 114: high=4: 3 bytes do not pause, 3+6 do.
        let mut buf = WriteBuffer::default();
        buf.set_limits(Some(4), Some(0)).unwrap();
        assert_eq!(buf.push(Bytes::from_static(b"abc")), None);
        assert_eq!(buf.push(Bytes::from_static(b"defghi")), Some(FlowEvent::Pause));
        assert_eq!(buf.push(Bytes::from_static(b"j")), None, "pause is reported once");
        assert_eq!(buf.consume(5), None);
        assert_eq!(buf.front().unwrap(), Bytes::from_static(b"fghi"));
        assert_eq!(buf.consume(5), Some(FlowEvent::Resume));
        assert!(buf.is_empty());
    }

    #[test]
    fn lowering_high_below_the_buffer_pauses_at_once() {
        // BEHAVIOURS 113.
        let mut buf = WriteBuffer::default();
        buf.push(Bytes::from(vec![0u8; 1000]));
        assert_eq!(buf.set_limits(Some(500), None).unwrap(), Some(FlowEvent::Pause));
    }

    #[test]
    fn queued_chunks_coalesce_into_one_send_in_order() {
        let mut buffer = WriteBuffer::default();
        buffer.push(Bytes::from_static(b"ab"));
        buffer.push(Bytes::from_static(b"cd"));
        buffer.push(Bytes::from(vec![b'e'; COALESCE_MAX]));
        assert_eq!(buffer.front_coalesced().unwrap(), &b"abcd"[..], "stops before the cap");
        assert_eq!(buffer.len(), 4 + COALESCE_MAX);
        assert_eq!(buffer.consume(3), None);
        assert_eq!(buffer.front_coalesced().unwrap(), &b"d"[..], "the unsent part");
        assert_eq!(buffer.consume(1), None);
        assert_eq!(buffer.front_coalesced().unwrap().len(), COALESCE_MAX, "a big one alone");
    }

    #[test]
    fn a_big_front_is_written_alone_and_never_copied_again() {
        let mut buffer = WriteBuffer::default();
        buffer.push(Bytes::from(vec![b'a'; 200 * 1024]));
        buffer.push(Bytes::from_static(b"b"));
        buffer.consume(1024);
        let rest = buffer.front().unwrap();
        let next = buffer.front_coalesced().unwrap();
        assert_eq!((next.len(), next.as_ptr()), (rest.len(), rest.as_ptr()), "not merged: no copy");
    }

    #[test]
    fn front_chunks_are_the_queued_chunks_uncopied() {
        let mut buffer = WriteBuffer::default();
        let (a, b, c) =
            (Bytes::from_static(b"abc"), Bytes::from_static(b"de"), Bytes::from_static(b"f"));
        for chunk in [&a, &b, &c] {
            buffer.push(chunk.clone());
        }
        buffer.consume(1);
        let front = buffer.front_chunks(2);
        assert_eq!(
            front,
            vec![Bytes::from_static(b"bc"), b.clone()],
            "at most 2, the unsent part first"
        );
        assert_eq!(front[1].as_ptr(), b.as_ptr(), "shared, not copied");
        assert_eq!(buffer.chunk_count(), 3);
    }

    #[test]
    fn consume_spans_chunks_in_order() {
        let mut buf = WriteBuffer::default();
        buf.push(Bytes::from_static(b"ta1"));
        buf.push(Bytes::from_static(b"data2"));
        buf.consume(2);
        assert_eq!(buf.front().unwrap(), Bytes::from_static(b"1"));
        buf.consume(2);
        assert_eq!(buf.front().unwrap(), Bytes::from_static(b"ata2"));
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn send_queue_counts_the_datagram_overhead_against_the_marks() {
        let queue = std::cell::RefCell::new(SendQueue::default());
        queue.set_limits(Some(19), Some(10)).unwrap();
        let push = |data| queue.borrow_mut().push(data, None);
        assert_eq!(push(Bytes::from_static(b"abcd")), None);
        assert_eq!(queue.size(), 4 + DATAGRAM_OVERHEAD);
        assert_eq!(push(Bytes::new()), Some(FlowEvent::Pause), "12 + 8 > 19");
        assert_eq!(queue.borrow_mut().pop(), Some(FlowEvent::Resume), "8 <= 10");
        assert_eq!(queue.size(), DATAGRAM_OVERHEAD);
        queue.borrow_mut().clear();
        assert!(queue.borrow().is_empty() && queue.size() == 0);
    }

    #[test]
    fn clear_drops_everything_without_a_flow_event() {
        let mut buf = WriteBuffer::default();
        buf.set_limits(Some(1), None).unwrap();
        assert_eq!(buf.push(Bytes::from_static(b"abc")), Some(FlowEvent::Pause));
        buf.clear();
        assert!(buf.is_empty() && buf.front().is_none());
    }
}
