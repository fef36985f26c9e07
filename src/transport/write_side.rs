//! The write side of a byte transport (asyncio's write path with `_FlowControlMixin`): a
//! stream writes a socket with `send(2)`, a write pipe any fd with `write(2)`.
//!
//! With nothing buffered and no write in flight, a write first tries the syscall at once,
//! non-blocking (asyncio's fast path), so a write the kernel takes whole never touches the
//! buffer and never pauses the protocol. Whatever is left is buffered and written by one op at
//! a time, in order: on a socket, when 64 KiB or more queued up while a send was in flight,
//! `Op::SendMsg` of all of it as one vectored send, never copied again, else `Op::Send` of the
//! front chunks merged; on a file `Op::Write` of the front chunks merged. The buffer's water
//! marks tell the transport when to call `pause_writing` and `resume_writing`.
//!
//! **Batched sends** (io_uring, while the loop runs): instead of its own `send(2)`, a small
//! write to a socket becomes an `Op::Send` that the iteration's single `io_uring_enter` submits
//! with everything else the iteration queued, so a server answering many connections in one
//! iteration makes one syscall for all of them, not one each. Writes made before that turn join
//! the same send: a copied write is appended to the send's own copy (`SendBuf::Copied`,
//! `Driver::append`), anything else withdraws the queued op and queues it again, merged. It
//! changes nothing a protocol relies on: a batched write never pauses the protocol (only writes
//! that keep the buffer within the high-water mark are batched), its bytes are counted by
//! `get_write_buffer_size` until the kernel took them, and they reach the socket before
//! `run_forever` returns (the loop submits what is queued as it stops). `abort` and fatal
//! errors first send what was batched and not yet submitted, directly, as asyncio's write would
//! have done at once; the rest of the buffer is dropped as always. A write of a borrowed slice
//! is batched only up to [`BATCH_COPY_MAX`] bytes (it must be copied; past that the copy costs
//! more than the syscall it saves; the copy is the send op's own, counted by the buffer as held
//! bytes, and comes back for the next copy with the completion), unless it lies in the bytes
//! `data_received` is being given (an echo, a proxy's forward): then the batched send holds the
//! receive's ring buffer instead of a copy (`LoopFd::hold_delivered`); an owned `Bytes` up to
//! the high-water mark; a `writelines` of at most `BATCH_COPY_MAX` bytes in all, as one copy.
//! A write that does not join the batch sends the batch first, with itself, in one direct
//! vectored send: it never waits behind a batch, and is copied only if the socket is full.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use bytes::Bytes;
use socket2::SockRef;

use crate::driver::{Op, OpId, SendBuf, SendMsgBuf};
use crate::error::Result;
use crate::event_loop::LoopFd;
use crate::event_loop::OpOwner;
use crate::flow_control::{Buffered, FlowEvent, WriteBuffer};
use std::rc::Rc;

use super::base::TransportCore;
use super::copy_pool;
use crate::sys::{retry_eintr, would_block};

/// Buffers per `sendmsg(2)` at most (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// Below this many bytes queued, a socket's queued writes are merged into one `send` (a copy
/// of at most this much); from it on they go out as one vectored `sendmsg`, uncopied.
const VECTORED_MIN: usize = 64 * 1024;

/// The largest borrowed write that is copied into the loop's batch (see the module docs): at
/// 16 KiB a copy per write cost more than the `send(2)` it saved (`docs/benchmarks.md`).
pub(crate) const BATCH_COPY_MAX: usize = 4 * 1024;

/// What the side writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sink {
    /// A socket: `send(2)` with `MSG_NOSIGNAL`.
    Socket,
    /// Any fd: `write(2)` (a broken pipe is `EPIPE`: Rust programs ignore `SIGPIPE`).
    File,
}

/// The write side of a stream or write pipe transport.
pub(crate) struct WriteSide {
    /// Bytes accepted and not yet written, with the water marks.
    buffer: RefCell<WriteBuffer>,
    /// The write in flight.
    op: Cell<Option<OpId>>,
    /// What it writes to.
    sink: Sink,
    /// The write in flight is a batched send the kernel may not have seen yet.
    batched: Cell<bool>,
}

impl WriteSide {
    /// An empty write side for `sink`.
    pub(crate) fn new(sink: Sink) -> WriteSide {
        let buffer = RefCell::new(WriteBuffer::default());
        WriteSide { buffer, op: Cell::new(None), sink, batched: Cell::new(false) }
    }

    /// True with nothing buffered and no write in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.buffer.borrow().is_empty() && self.op.get().is_none()
    }

    /// The op in flight, if `id` is it.
    pub(crate) fn owns(&self, id: OpId) -> bool {
        self.op.get() == Some(id)
    }

    /// The slot of the write in flight (for the transport's close).
    pub(crate) fn op_slot(&self) -> &Cell<Option<OpId>> {
        &self.op
    }

    /// The fast path: when idle, one non-blocking syscall now. Returns how many bytes it took
    /// (0 when not idle or the kernel would block); an error is the transport's to handle.
    /// Behind a batch the kernel has not seen, the batch goes first, in the same syscall (see
    /// [`send_behind_batch`](Self::send_behind_batch)); the caller queues what is left.
    pub(crate) fn try_now(&self, fd: &LoopFd, data: &[u8]) -> io::Result<usize> {
        if self.withdraw_batch(fd) {
            return self.send_behind_batch(fd, &[data]);
        }
        if !self.is_idle() {
            return Ok(0);
        }
        let sink = self.sink;
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        fast_path(fd, |fd| match sink {
            Sink::Socket => crate::sys::send(fd.as_raw_fd(), data, flags),
            Sink::File => nix::unistd::write(fd, data).map_err(io::Error::from),
        })
    }

    /// [`try_now`](Self::try_now) for several buffers, as one vectored `sendmsg(2)` of the
    /// first [`MAX_IOVECS`] (sockets), or a `write(2)` of the first (files).
    pub(crate) fn try_now_vectored<B: AsRef<[u8]>>(
        &self,
        fd: &LoopFd,
        buffers: &[B],
    ) -> io::Result<usize> {
        if self.withdraw_batch(fd) {
            return self.send_behind_batch(fd, buffers);
        }
        if !self.is_idle() || buffers.is_empty() {
            return Ok(0);
        }
        if self.sink == Sink::File {
            return self.try_now(fd, buffers[0].as_ref());
        }
        send_vectored_now(fd, buffers.iter().map(AsRef::as_ref))
    }

    /// Whether a write of `len` bytes may go into the loop's batch (see the module docs): on a
    /// socket, with nothing buffered or only a batched send still queued, keeping the buffer
    /// within the high-water mark, while `fd`'s loop batches. (A borrowed slice also needs a
    /// copy of at most [`BATCH_COPY_MAX`] bytes, or to be held: the transport's part.)
    pub(crate) fn batches(&self, fd: &LoopFd, len: usize) -> bool {
        let (buffered, (_, high)) = {
            let buffer = self.buffer.borrow();
            (buffer.len(), buffer.limits())
        };
        let queued_behind = buffered > 0 || self.op.get().is_some();
        self.sink == Sink::Socket
            && (!queued_behind || self.batched.get())
            && buffered + len <= high
            && fd.batches_sends()
    }

    /// Adds a copy of `buffers` (`len` bytes in all, not empty) to the batched send for the
    /// loop's next turn. The copy is the send's own (`SendBuf::Copied`): appended to the send
    /// an earlier write of this iteration queued, while the kernel has not seen it, or, with
    /// nothing buffered and no write in flight, the start of a new one. Else (behind a send
    /// the kernel has, or one of shared bytes) it is a pooled `Bytes` for [`batch`](Self::batch).
    /// Call only when [`batches`](Self::batches) said so.
    pub(crate) fn batch_copy(
        &self,
        buffers: &[&[u8]],
        len: usize,
        fd: &LoopFd,
        owner: impl Fn() -> OpOwner,
    ) {
        let held = self.buffer.borrow().held() > 0; // the send in flight is a copy of its own
        let copied = if held {
            fd.append(&self.op, buffers)
        } else if self.is_idle() {
            let copy = SendBuf::Copied(copy_pool::send_copy(buffers, len));
            self.op.set(fd.submit(Op::Send { fd: fd.raw(), buf: copy, offset: 0 }, owner()));
            self.batched.set(self.op.get().is_some());
            self.batched.get()
        } else {
            false
        };
        if copied {
            let flow = self.buffer.borrow_mut().hold(len);
            debug_assert!(flow.is_none(), "a batched write stays within the high-water mark");
        } else {
            self.batch(copy_pool::copy_all(buffers), fd, owner);
        }
    }

    /// Adds `data` (not empty) to the batched send for the loop's next turn: the send queued
    /// by an earlier write of this iteration is withdrawn and queued again with `data` merged
    /// in, if the kernel has not seen it yet. Call only when [`batches`](Self::batches) said so.
    pub(crate) fn batch(&self, data: Bytes, fd: &LoopFd, owner: impl FnOnce() -> OpOwner) {
        // Withdrawn unless submitted meanwhile (the loop stopped): `data` then waits behind it.
        let merge = self.withdraw_batch(fd);
        let flow = self.push(data);
        debug_assert!(flow.is_none(), "a batched write stays within the high-water mark");
        if merge || self.op.get().is_none() {
            self.submit(fd, owner);
            self.batched.set(self.op.get().is_some());
        }
    }

    /// What was batched and not yet handed to the kernel is sent now, directly, as far as the
    /// socket takes it (what asyncio's write would have done at once); before `abort` or a
    /// fatal error drops the buffer.
    pub(crate) fn send_batched_now(&self, fd: &LoopFd) {
        if self.withdraw_batch(fd) {
            let _ = send_vectored_now(fd, self.buffer.borrow().chunks()); // ending either way
        }
    }

    /// Takes back the batched send if the kernel has not seen it yet (its bytes stay buffered,
    /// a copy of its own queued ahead as a chunk; no write in flight); false if there is none
    /// or it was submitted meanwhile.
    fn withdraw_batch(&self, fd: &LoopFd) -> bool {
        if !self.batched.take() {
            return false;
        }
        let Some(op) = fd.take_back(&self.op) else { return false };
        if let Op::Send { buf: SendBuf::Copied(copy), .. } = op {
            self.buffer.borrow_mut().unhold(Bytes::from(copy));
        }
        true
    }

    /// A write that does not join the batch (too big to copy, or past the high-water mark),
    /// with the batch withdrawn: the batch's bytes and then the write's go out in one direct
    /// vectored send, where asyncio would have sent each write at once (without this, a write
    /// behind the batch waited for it and was copied into the buffer: a stream echoing 64 KiB
    /// chunks copied every other one). Returns how many of `buffers`' bytes went; whatever the
    /// socket did not take stays buffered, for the caller's queue to submit.
    fn send_behind_batch<B: AsRef<[u8]>>(&self, fd: &LoopFd, buffers: &[B]) -> io::Result<usize> {
        let (sent, batched) = {
            let buffer = self.buffer.borrow();
            let all = buffer.chunks().chain(buffers.iter().map(AsRef::as_ref));
            (send_vectored_now(fd, all)?, buffer.len())
        };
        let flow = self.buffer.borrow_mut().consume(sent.min(batched));
        debug_assert!(flow.is_none(), "a batched write never paused the protocol");
        Ok(sent.saturating_sub(batched))
    }

    /// Buffers `data` (not empty); `Pause` when that crossed the high-water mark. The
    /// transport then calls [`submit`](Self::submit).
    pub(crate) fn push(&self, data: Bytes) -> Option<FlowEvent> {
        self.buffer.borrow_mut().push(data)
    }

    /// Buffers `data` (not empty) and keeps a write in flight; `Pause` when that crossed the
    /// high-water mark.
    pub(crate) fn queue(
        &self,
        data: Bytes,
        fd: &LoopFd,
        owner: impl FnOnce() -> OpOwner,
    ) -> Option<FlowEvent> {
        let flow = self.push(data);
        self.submit(fd, owner);
        flow
    }

    /// Keeps a write in flight while something is buffered: on a socket, one `send` of the
    /// front chunk, or one vectored `sendmsg` of the queued chunks (no copy); on a file, one
    /// `write` of the front chunks merged.
    pub(crate) fn submit(&self, fd: &LoopFd, owner: impl FnOnce() -> OpOwner) {
        // In flight already, or nothing buffered (the usual case once a send completed whole).
        if self.op.get().is_some() || self.buffer.borrow().is_empty() {
            return;
        }
        let Some(op) = self.next_op(fd.raw()) else { return };
        self.op.set(fd.submit(op, owner()));
    }

    /// The op that writes what is buffered next, if anything is.
    fn next_op(&self, fd: std::os::fd::RawFd) -> Option<Op> {
        let mut buffer = self.buffer.borrow_mut();
        let op = match self.sink {
            // Much queued: no copy. A little: one small copy beats the vectored op's allocations.
            Sink::Socket if buffer.chunk_count() > 1 && buffer.len() >= VECTORED_MIN => {
                Op::SendMsg { fd, msg: SendMsgBuf::vectored(buffer.front_chunks(MAX_IOVECS)) }
            }
            Sink::Socket => Op::Send { fd, buf: buffer.front_coalesced()?.into(), offset: 0 },
            Sink::File => Op::Write { fd, buf: buffer.front_coalesced()?, offset: 0 },
        };
        Some(op)
    }

    /// The write in flight, `op`, completed: what it wrote is consumed (`Resume` when the
    /// buffer fell to the low-water mark), a copy of its own recycled with its unsent tail
    /// queued first; an error is returned for the transport to handle.
    pub(crate) fn on_completion(
        &self,
        result: io::Result<u32>,
        op: Option<Op>,
    ) -> io::Result<Option<FlowEvent>> {
        self.op.set(None);
        self.batched.set(false);
        let written = match result {
            Ok(n) => n as usize,
            Err(e) if would_block(&e) => 0,
            Err(e) => {
                self.buffer.borrow_mut().drop_held(); // ending: gone with the rest
                return Err(e);
            }
        };
        let mut buffer = self.buffer.borrow_mut();
        if buffer.held() == 0 {
            return Ok(buffer.consume(written));
        }
        let Some(Op::Send { buf: SendBuf::Copied(copy), .. }) = op else {
            // Only a send of its own copy holds bytes; were that ever broken, the transport
            // fails with an error rather than the loop with a panic.
            debug_assert!(false, "held bytes without a copied send: {op:?}");
            buffer.drop_held();
            return Err(io::Error::other("a send completed without the bytes it held"));
        };
        let rest = copy.get(written..).filter(|rest| !rest.is_empty()).map(Bytes::copy_from_slice);
        let flow = buffer.release_held(written.min(copy.len()), rest);
        copy_pool::recycle(copy);
        Ok(flow)
    }

    /// Drops everything buffered (abort).
    pub(crate) fn clear(&self) {
        self.buffer.borrow_mut().clear();
    }

    /// Bytes buffered.
    pub(crate) fn len(&self) -> usize {
        self.buffer.borrow().len()
    }
}

impl Buffered for WriteSide {
    fn size(&self) -> usize {
        self.len()
    }

    fn limits(&self) -> (usize, usize) {
        self.buffer.borrow().limits()
    }

    fn set_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<Option<FlowEvent>> {
        self.buffer.borrow_mut().set_limits(high, low)
    }
}

/// A transport with a [`WriteSide`]: how it queues and keeps a write in flight.
pub(crate) trait Writer: TransportCore {
    /// The transport's write side.
    fn write_side(&self) -> &WriteSide;

    /// Appends `data` (not empty) to the buffer, keeps a write in flight, and tells the
    /// protocol to pause when that crossed the high-water mark.
    fn queue(self: &Rc<Self>, data: Bytes) {
        let owner = || -> OpOwner { self.clone() };
        self.notify_flow(self.write_side().queue(data, &self.base().fd, owner));
    }

    /// Keeps a write in flight while something is buffered (not once closed).
    fn submit_write(self: &Rc<Self>) {
        if !self.base().is_closed() {
            self.write_side().submit(&self.base().fd, || -> OpOwner { self.clone() });
        }
    }

    /// Adds `data` (not empty) to the loop's batch (see [`WriteSide::batch`]).
    fn batch(self: &Rc<Self>, data: Bytes) {
        self.write_side().batch(data, &self.base().fd, || -> OpOwner { self.clone() });
    }

    /// Adds a copy of `buffers` (`len` bytes, not empty) to the loop's batch (see
    /// [`WriteSide::batch_copy`]).
    fn batch_copy(self: &Rc<Self>, buffers: &[&[u8]], len: usize) {
        let owner = || -> OpOwner { self.clone() };
        self.write_side().batch_copy(buffers, len, &self.base().fd, owner);
    }
}

/// The fast path's vectored send: one `sendmsg(2)` of the first [`MAX_IOVECS`] of `buffers`
/// (bytes past those are simply not sent, so the count is always a prefix). Up to
/// [`STACK_IOVECS`] buffers (a `writelines` of a few, a write behind a batch) are gathered on
/// the stack; more, in a `Vec`.
fn send_vectored_now<'a>(
    fd: &LoopFd,
    buffers: impl Iterator<Item = &'a [u8]>,
) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    let mut buffers = buffers.take(MAX_IOVECS).map(IoSlice::new);
    let mut stack = [IoSlice::new(&[]); STACK_IOVECS];
    let mut gathered = 0;
    for (slot, slice) in stack.iter_mut().zip(&mut buffers) {
        *slot = slice;
        gathered += 1;
    }
    let heap: Vec<IoSlice<'a>>;
    let slices = match (gathered == STACK_IOVECS).then(|| buffers.next()).flatten() {
        None => &stack[..gathered],
        Some(more) => {
            heap = stack.into_iter().chain(std::iter::once(more)).chain(buffers).collect();
            &heap[..]
        }
    };
    fast_path(fd, |fd| SockRef::from(&fd).send_vectored_with_flags(slices, flags))
}

/// Buffers [`send_vectored_now`] gathers without allocating.
const STACK_IOVECS: usize = 8;

/// One direct syscall on `fd` (0 once closed), retried on `EINTR`; "would block" is 0.
#[inline]
pub(crate) fn fast_path(
    fd: &LoopFd,
    mut call: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
) -> io::Result<usize> {
    let result = fd.with_fd(|fd| retry_eintr(|| call(fd)));
    match result {
        None => Ok(0),
        Some(Err(e)) if would_block(&e) => Ok(0),
        Some(result) => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copied_send(bytes: &[u8]) -> Option<Op> {
        Some(Op::Send { fd: -1, buf: SendBuf::Copied(bytes.to_vec()), offset: 0 })
    }

    #[test]
    fn a_short_send_of_its_own_copy_queues_the_unsent_tail_first() {
        let side = WriteSide::new(Sink::Socket);
        assert_eq!(side.buffer.borrow_mut().hold(5), None);
        side.push(Bytes::from_static(b" world"));
        assert_eq!(side.len(), 11);
        assert_eq!(side.on_completion(Ok(2), copied_send(b"hello")).unwrap(), None);
        assert_eq!(side.len(), 9);
        let next = side.next_op(7).expect("the rest is sent next");
        let Op::Send { buf, .. } = next else { panic!("{next:?}") };
        assert_eq!(&buf[..], b"llo world", "the tail first, then what was queued behind it");
    }

    #[test]
    fn a_whole_send_of_its_own_copy_leaves_the_side_idle() {
        let side = WriteSide::new(Sink::Socket);
        side.buffer.borrow_mut().hold(5);
        assert_eq!(side.on_completion(Ok(5), copied_send(b"hello")).unwrap(), None);
        assert!(side.is_idle() && side.len() == 0);
        side.buffer.borrow_mut().hold(5);
        let err = io::Error::from_raw_os_error(libc::EPIPE);
        assert!(side.on_completion(Err(err), copied_send(b"hello")).is_err());
        assert!(side.is_idle() && side.len() == 0, "a failed send's bytes are not counted");
    }
}
