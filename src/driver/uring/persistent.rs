//! Persistent ops on io_uring: `RecvMulti`, `RecvMsgMulti` and `AcceptMulti` (see the contract
//! in `driver/mod.rs`), and the provided-buffer rings their receives take buffers from.
//!
//! * `RecvMulti`: a multishot `RECV` with `IOSQE_BUFFER_SELECT` from the stream ring ([`BUF_GROUP`],
//!   [`RING_BUFFERS`] x [`BUF_SIZE`], registered at setup); the CQE names the buffer and the
//!   chunk is handed over in it, zero copy.
//! * `RecvMsgMulti`: a multishot `RECVMSG` taking buffers from the datagram ring ([`DGRAM_GROUP`],
//!   [`DGRAM_BUFFERS`] x [`dgram::RING_BUF_SIZE`], registered at the first `RecvMsgMulti`). Each
//!   buffer holds `io_uring_recvmsg_out`, the sender's address and one whole datagram; it is
//!   handed over narrowed to the payload, or as `EMSGSIZE` when the kernel flagged `MSG_TRUNC`.
//! * `AcceptMulti`: a multishot `ACCEPT`.
//!
//! Whenever the kernel ends the op while the caller still wants it (a multishot SQE ended
//! without `IORING_CQE_F_MORE`), the op is queued again under the same slab key. `ENOBUFS` (a
//! ring ran dry: the kernel leaves the data in the socket) *parks* the op out of the kernel;
//! each turn re-arms as many parked ops, oldest first, as their ring has buffers free. A stopped
//! op that meets `ENOBUFS` ends with `ECANCELED`, as the contract promises: buffer exhaustion
//! means wait, never fail.

use std::rc::Rc;

use io_uring::{cqueue, IoUring};

use super::slot::{result, SlotState};
use super::table::OpTable;
use crate::driver::recv_buf::BufRing;
use crate::driver::{dgram, Completion, Op, RecvBuf};

/// The buffer group of the stream ring.
pub(super) const BUF_GROUP: u16 = 0;
/// Buffers in the stream ring. 128: with 64 they ran dry under 64 connections' pipelined 16 KiB
/// echoes (more `ENOBUFS` completions than receives, each a re-arm: 2-3% of the CPU per
/// request); a buffer is resident only as far as data touched it, so many idle connections
/// cost a page per buffer, shared by all (`docs/benchmarks.md`, "A receive ring of 128").
pub(super) const RING_BUFFERS: u16 = 128;
/// Bytes per stream ring buffer.
pub(super) const BUF_SIZE: usize = 64 * 1024;
/// The buffer group of the datagram ring.
pub(super) const DGRAM_GROUP: u16 = 1;
/// Buffers in the datagram ring: 64 x 65 KiB = 4.1 MiB of address space, of which only the
/// pages datagrams touched become resident (one or two per buffer for small datagrams).
pub(super) const DGRAM_BUFFERS: u16 = 64;

/// The provided-buffer rings, owned by the driver.
pub(super) struct Rings {
    /// The stream ring.
    pub(super) stream: Rc<BufRing>,
    /// The datagram ring (`None` until the first `RecvMsgMulti`).
    pub(super) dgram: Option<Rc<BufRing>>,
    /// The datagram ring's buffers and their size, when not the defaults (tests).
    pub(super) dgram_shape: Option<(u16, usize)>,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings")
            .field("stream", &self.stream.available())
            .field("dgram", &self.dgram.as_ref().map(|r| r.available()))
            .finish()
    }
}

impl Rings {
    /// Registers the stream ring of `buffers` buffers (the datagram ring comes later).
    pub(super) fn new(ring: &IoUring, buffers: u16) -> std::io::Result<Rings> {
        let stream = Rc::new(register(ring, buffers, BUF_SIZE, BUF_GROUP)?);
        Ok(Rings { stream, dgram: None, dgram_shape: None })
    }

    /// Registers the datagram ring unless it is there; the error if the kernel refuses.
    pub(super) fn ensure_dgram(&mut self, ring: &IoUring) -> std::io::Result<()> {
        if self.dgram.is_none() {
            let (buffers, size) = self.dgram_shape.unwrap_or((DGRAM_BUFFERS, dgram::RING_BUF_SIZE));
            self.dgram = Some(Rc::new(register(ring, buffers, size, DGRAM_GROUP)?));
        }
        Ok(())
    }

    /// The ring `op` takes its buffers from, if any.
    pub(super) fn for_op(&self, op: &Op) -> Option<&Rc<BufRing>> {
        match op {
            Op::RecvMulti { .. } => Some(&self.stream),
            Op::RecvMsgMulti { .. } => self.dgram.as_ref(),
            _ => None,
        }
    }
}

/// Maps and registers a provided-buffer ring of `buffers` x `size` bytes as buffer `group`.
fn register(ring: &IoUring, buffers: u16, size: usize, group: u16) -> std::io::Result<BufRing> {
    let bufs = BufRing::new(buffers, size)?;
    let (addr, entries) = bufs.ring_addr();
    // SAFETY: the ring mapping stays valid until the buffer group is unregistered or the ring
    // is closed: the driver drops its `Rc` only after either (see `shutdown.rs`).
    unsafe { ring.submitter().register_buf_ring_with_flags(addr, entries, group, 0) }?;
    Ok(bufs)
}

/// What one CQE of a persistent op came to.
enum Outcome {
    /// A result to hand over (a chunk, a datagram, a connection, or an error the op survives).
    Item(i32, Option<RecvBuf>),
    /// The kernel's last word for this op: end of stream, an error, `ENOBUFS`, `ECANCELED`.
    End(i32),
}

/// Handles a CQE of persistent op `key`.
pub(super) fn on_cqe<T: Clone>(
    table: &mut OpTable<T>,
    rings: &Rings,
    key: usize,
    (res, flags): (i32, u32),
    out: &mut Vec<Completion<T>>,
) {
    let id = table.id(key);
    let slot = &mut table.slots[key];
    let more = cqueue::more(flags);
    let outcome = outcome(&slot.op, res, flags, rings.for_op(&slot.op));
    let owner = match &slot.state {
        SlotState::Submitted(owner) | SlotState::Stopping(owner) => owner,
        SlotState::Cancelled => {
            if let Outcome::Item(res, data) = outcome {
                slot.op.discard_result(res);
                drop(data); // its buffer goes back to the ring
            }
            if !more {
                table.free(key);
            }
            return;
        }
        state => return log::error!("io_uring: CQE for op {key} {} ignored", state.describe()),
    };
    let stopping = matches!(slot.state, SlotState::Stopping(_));
    let end = match outcome {
        Outcome::Item(res, data) => {
            let (owner, result) = (owner.clone(), result(res));
            out.push(Completion { id, owner, result, op: None, data });
            if more {
                return;
            }
            // The kernel ended the multishot op: it goes on unless stopped.
            -libc::ECANCELED
        }
        Outcome::End(_) if more => return,
        Outcome::End(res) if res == -libc::ENOBUFS && !stopping => {
            park(table, key);
            return;
        }
        // Stopped while the ring was dry: nothing was taken, so the stop's `ECANCELED`.
        Outcome::End(res) if res == -libc::ENOBUFS => -libc::ECANCELED,
        Outcome::End(res) => return finish(table, key, res, out),
    };
    if stopping {
        return finish(table, key, end, out);
    }
    requeue(table, key);
}

/// Puts op `key` (in the kernel until now) back in the queue for the next turn.
fn requeue<T>(table: &mut OpTable<T>, key: usize) {
    let slot = &mut table.slots[key];
    if let SlotState::Submitted(owner) = std::mem::replace(&mut slot.state, SlotState::Cancelled) {
        slot.state = SlotState::Queued(owner);
        table.pending.push(key);
    }
}

/// Parks op `key` (in the kernel until now) until its ring has buffers again.
fn park<T>(table: &mut OpTable<T>, key: usize) {
    let slot = &mut table.slots[key];
    if let SlotState::Submitted(owner) = std::mem::replace(&mut slot.state, SlotState::Cancelled) {
        slot.state = SlotState::Parked(owner);
        table.parked.push_back(key);
    }
}

/// Frees slot `key`, reporting `res` as its final completion.
fn finish<T>(table: &mut OpTable<T>, key: usize, res: i32, out: &mut Vec<Completion<T>>) {
    let slot = table.free(key);
    if let SlotState::Submitted(owner) | SlotState::Stopping(owner) = slot.state {
        let (id, result) = (table.id(key), result(res));
        out.push(Completion { id, owner, result, op: Some(slot.op), data: None });
    }
}

/// Queues parked ops again, oldest first, as many as their rings have buffers free.
pub(super) fn rearm_parked<T>(table: &mut OpTable<T>, rings: &Rings) {
    if table.parked.is_empty() {
        return;
    }
    let mut budget_stream = rings.stream.available();
    let mut budget_dgram = rings.dgram.as_ref().map_or(0, |r| r.available());
    let mut still = std::collections::VecDeque::new();
    while let Some(key) = table.parked.pop_front() {
        let Some(slot) = table.slots.get_mut(key) else { continue };
        let budget = match slot.op {
            Op::RecvMsgMulti { .. } => &mut budget_dgram,
            _ => &mut budget_stream,
        };
        if !matches!(slot.state, SlotState::Parked(_)) {
            continue; // stopped or cancelled meanwhile
        }
        if *budget == 0 {
            still.push_back(key);
            continue;
        }
        *budget -= 1;
        if let SlotState::Parked(owner) = std::mem::replace(&mut slot.state, SlotState::Cancelled) {
            slot.state = SlotState::Queued(owner);
            table.pending.push(key);
        }
    }
    table.parked = still;
}

/// A CQE of the op's own opcode as an [`Outcome`].
fn outcome(op: &Op, res: i32, flags: u32, ring: Option<&Rc<BufRing>>) -> Outcome {
    let accept = matches!(op, Op::AcceptMulti { .. });
    let Ok(n) = usize::try_from(res) else {
        // An accept error with `IORING_CQE_F_MORE` (the op survives it) is handed over.
        return if accept && cqueue::more(flags) {
            Outcome::Item(res, None)
        } else {
            Outcome::End(res)
        };
    };
    if accept {
        return Outcome::Item(res, None);
    }
    let Some(bid) = cqueue::buffer_select(flags) else {
        if n == 0 && matches!(op, Op::RecvMulti { .. }) {
            return Outcome::End(0);
        }
        log::error!("io_uring: a receive CQE of {n} bytes names no buffer; ending the op");
        return Outcome::End(-libc::EIO);
    };
    // Taken before anything else so that it goes back to the ring whatever happens.
    let Some(data) = ring.and_then(|ring| ring.take(bid, n)) else {
        log::error!("io_uring: a receive CQE names buffer {bid} with {n} bytes, not in its ring");
        return Outcome::End(-libc::EIO);
    };
    if matches!(op, Op::RecvMsgMulti { .. }) {
        // Never an end: an empty datagram still has its header.
        return match dgram::parse_multishot(data) {
            Ok(datagram) => Outcome::Item(datagram.len() as i32, Some(datagram)),
            Err(res) => Outcome::Item(res, None),
        };
    }
    if n == 0 {
        Outcome::End(0)
    } else {
        Outcome::Item(res, Some(data))
    }
}
