//! Persistent ops on io_uring: `RecvMulti`, `RecvMsgMulti` and `AcceptMulti` (see the contract
//! in `driver/mod.rs`).
//!
//! # Routes
//! * `RecvMulti` with `buffer_ring`: a multishot `RECV` (`multishot_recv`, 6.0) or a one-shot
//!   `RECV`, both with `IOSQE_BUFFER_SELECT` from the driver's [`BufRing`]; the CQE names the
//!   buffer (`IORING_CQE_F_BUFFER`) and the chunk is handed over in it, zero copy.
//! * `RecvMsgMulti` with `multishot_recvmsg` (6.0; needs `buffer_ring` and `op_recvmsg`): a
//!   multishot `RECVMSG` taking buffers from a second ring, of [`DGRAM_BUFFERS`] buffers of
//!   [`dgram::RING_BUF_SIZE`] bytes (group [`DGRAM_GROUP`], registered at the first
//!   `RecvMsgMulti`). Each buffer holds `io_uring_recvmsg_out`, the sender's address and one
//!   whole datagram; it is handed over narrowed to the payload, zero copy, or as `EMSGSIZE`
//!   when the kernel flagged `MSG_TRUNC`.
//! * `AcceptMulti` with `op_accept`: a multishot `ACCEPT` (`multishot_accept`, 5.19) or a
//!   one-shot one.
//! * Otherwise (`buffer_ring`, `multishot_recvmsg` or `op_accept` off or missing): a one-shot
//!   `POLL_ADD`, and at its CQE one `recv(2)` into a buffer of the driver's [`BufPool`], handed
//!   over in it, one `recvmsg(2)` into the driver's datagram scratch buffer (the datagram is
//!   copied out, exactly `n` bytes), or one `accept4(2)`.
//!
//! Whenever the kernel ends the op while the caller still wants it (a one-shot SQE completed,
//! a multishot one stopped without `IORING_CQE_F_MORE`), the op is re-armed under the same
//! slab key. `ENOBUFS` (the ring ran dry: the kernel leaves the data in the socket) parks the
//! op out of the kernel until buffers come back; `turn` re-arms parked ops then.

use std::rc::Rc;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue};
use slab::Slab;

use super::op::{cqe, result, Lifecycle, Route, Slot, Start};
use super::setup::{Feature, FeatureSet};
use crate::driver::recv_buf::BufRing;
use crate::driver::syscall::{persistent_syscall, Persistent};
use crate::driver::{dgram, BufPool, Completion, Op, OpId, RecvBuf};

/// The buffer group of the driver's ring.
pub(super) const BUF_GROUP: u16 = 0;
/// Buffers in the ring.
pub(super) const RING_BUFFERS: u16 = 64;
/// Bytes per ring buffer.
pub(super) const BUF_SIZE: usize = 16 * 1024;
/// The buffer group of the datagram ring.
pub(super) const DGRAM_GROUP: u16 = 1;
/// Buffers in the datagram ring: 64 x 65 KiB = 4.1 MiB of address space, of which only the
/// pages datagrams touched become resident (one or two per buffer for small datagrams).
pub(super) const DGRAM_BUFFERS: u16 = 64;

/// What the persistent ops share, owned by the driver.
#[derive(Default)]
pub(super) struct Multi {
    /// The provided-buffer ring (`None` without `buffer_ring`).
    pub(super) ring: Option<Rc<BufRing>>,
    /// The buffers the readiness route receives into.
    pool: BufPool,
    /// The datagram ring (`None` until the first `RecvMsgMulti`, or without
    /// `multishot_recvmsg`).
    pub(super) dgram_ring: Option<Rc<BufRing>>,
    /// The datagram ring's buffers and their size, when not the defaults (tests).
    pub(super) dgram_shape: Option<(u16, usize)>,
    /// Where the readiness route receives datagrams (allocated on first use).
    dgram_scratch: dgram::Scratch,
    /// Slab keys of ops parked on `ENOBUFS` (stale keys are skipped when re-arming).
    pub(super) parked: Vec<usize>,
}

impl std::fmt::Debug for Multi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multi")
            .field("ring", &self.ring.as_ref().map(|r| r.available()))
            .field("dgram_ring", &self.dgram_ring.as_ref().map(|r| r.available()))
            .field("parked", &self.parked)
            .finish()
    }
}

impl Multi {
    /// The ring `op` takes its buffers from, if any.
    pub(super) fn ring_for(&self, op: &Op) -> Option<&Rc<BufRing>> {
        match op {
            Op::RecvMsgMulti { .. } => self.dgram_ring.as_ref(),
            _ => self.ring.as_ref(),
        }
    }
}

/// The op's own SQE (untagged); `None`: take the readiness route.
pub(super) fn sqe(op: &Op, features: FeatureSet) -> Option<squeue::Entry> {
    let has = |f| features.contains(f);
    if let Op::RecvMsgMulti { fd } = *op {
        // The driver registered the datagram ring at submit, or dropped the feature.
        return has(Feature::MultishotRecvMsg).then(|| {
            let hdr: *const libc::msghdr = dgram::multishot_header();
            opcode::RecvMsgMulti::new(Fd(fd), hdr, DGRAM_GROUP).build()
        });
    }
    let (Op::RecvMulti { fd } | Op::AcceptMulti { fd }) = *op else { return None };
    let accept_flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    Some(match op {
        Op::RecvMulti { .. } if has(Feature::BufferRing) && has(Feature::MultishotRecv) => {
            opcode::RecvMulti::new(Fd(fd), BUF_GROUP).build()
        }
        // Length 0: the kernel takes the length of the buffer it picks.
        Op::RecvMulti { .. } if has(Feature::BufferRing) => {
            opcode::Recv::new(Fd(fd), std::ptr::null_mut(), 0)
                .buf_group(BUF_GROUP)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        }
        Op::AcceptMulti { .. } if has(Feature::MultishotAccept) => {
            opcode::AcceptMulti::new(Fd(fd)).flags(accept_flags).build()
        }
        Op::AcceptMulti { .. } if has(Feature::OpAccept) => {
            let (addr, len) = (std::ptr::null_mut(), std::ptr::null_mut());
            opcode::Accept::new(Fd(fd), addr, len).flags(accept_flags).build()
        }
        _ => return None,
    })
}

/// What one CQE of a persistent op came to.
enum Outcome {
    /// A result to hand over (a chunk, a connection, or an error the op survives).
    Item(i32, Option<RecvBuf>),
    /// Nothing to hand over (a readiness CQE whose syscall would block).
    Nothing,
    /// The kernel's last word for this op: end of stream, an error, `ENOBUFS`, `ECANCELED`.
    End(i32),
}

/// Handles a CQE (or a ready-queue result, `flags` 0) of persistent op `key`; returns the SQE
/// that re-arms it, if it goes on.
pub(super) fn complete<T: Clone>(
    slots: &mut Slab<Slot<T>>,
    key: usize,
    (res, flags): (i32, u32),
    features: FeatureSet,
    multi: &mut Multi,
    out: &mut Vec<Completion<T>>,
) -> Option<squeue::Entry> {
    let slot = slots.get_mut(key)?;
    let cancelled = matches!(slot.state, Lifecycle::Cancelled);
    let in_kernel = cqueue::more(flags);
    let outcome = match slot.route {
        Route::Readiness if cancelled => Outcome::End(-libc::ECANCELED),
        Route::Readiness if slot.stopping => Outcome::End(-libc::ECANCELED),
        Route::Readiness if res < 0 => Outcome::End(res),
        Route::Readiness => syscall(&slot.op, &multi.pool, &mut multi.dgram_scratch),
        _ => opcode_outcome(&slot.op, res, flags, multi.ring_for(&slot.op)),
    };
    let end = match outcome {
        Outcome::Item(res, data) => {
            match &slot.state {
                Lifecycle::InFlight(owner) => {
                    let (owner, result) = (owner.clone(), result(res));
                    out.push(Completion {
                        id: OpId(key),
                        owner,
                        result,
                        more: true,
                        op: None,
                        data,
                    });
                }
                // Dropping `data` gives its buffer back to the ring.
                Lifecycle::Cancelled => slot.op.discard_result(res),
            }
            if in_kernel {
                return None;
            }
            -libc::ECANCELED
        }
        Outcome::Nothing => -libc::ECANCELED,
        Outcome::End(_) if in_kernel => return None,
        Outcome::End(res) if res == -libc::ENOBUFS && !cancelled && !slot.stopping => {
            slot.route = Route::Parked;
            multi.parked.push(key);
            return None;
        }
        Outcome::End(res) => return finish(slots, key, res, out),
    };
    // The kernel is done with the op; it goes on unless cancelled or stopped.
    if cancelled || slot.stopping {
        return finish(slots, key, end, out);
    }
    rearm(slots, key, features, out)
}

/// Starts op `key` again; an op that cannot start is finished with its error.
fn rearm<T: Clone>(
    slots: &mut Slab<Slot<T>>,
    key: usize,
    features: FeatureSet,
    out: &mut Vec<Completion<T>>,
) -> Option<squeue::Entry> {
    match slots[key].start(key, features) {
        Start::Sqe(sqe) => Some(sqe),
        Start::Done(res) => finish(slots, key, res, out),
    }
}

/// Frees slot `key`, reporting `res` as its final completion unless it was cancelled.
fn finish<T>(
    slots: &mut Slab<Slot<T>>,
    key: usize,
    res: i32,
    out: &mut Vec<Completion<T>>,
) -> Option<squeue::Entry> {
    let slot = slots.remove(key);
    if let Lifecycle::InFlight(owner) = slot.state {
        let id = OpId(key);
        out.push(Completion {
            id,
            owner,
            result: result(res),
            more: false,
            op: Some(slot.op),
            data: None,
        });
    }
    None
}

/// A CQE of the op's own opcode as an [`Outcome`].
fn opcode_outcome(op: &Op, res: i32, flags: u32, ring: Option<&Rc<BufRing>>) -> Outcome {
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
    if matches!(op, Op::RecvMsgMulti { .. }) {
        return datagram_outcome(n, flags, ring);
    }
    match (cqueue::buffer_select(flags), ring) {
        (Some(bid), Some(ring)) => {
            // Taken before anything else so that it goes back to the ring whatever happens.
            let data = ring.take(bid, n);
            if n == 0 {
                Outcome::End(0)
            } else {
                Outcome::Item(res, Some(data))
            }
        }
        _ if n == 0 => Outcome::End(0),
        _ => {
            log::error!("io_uring: a recv CQE of {n} bytes names no buffer; ending the op");
            Outcome::End(-libc::EIO)
        }
    }
}

/// A multishot `RECVMSG` CQE of `n` bytes (header, name, payload) as an [`Outcome`]: one
/// datagram, or `EMSGSIZE` for one the kernel cut. Never an end: an empty datagram still has
/// its header.
fn datagram_outcome(n: usize, flags: u32, ring: Option<&Rc<BufRing>>) -> Outcome {
    let (Some(bid), Some(ring)) = (cqueue::buffer_select(flags), ring) else {
        log::error!("io_uring: a recvmsg CQE of {n} bytes names no buffer; ending the op");
        return Outcome::End(-libc::EIO);
    };
    // Taken first so that it goes back to the ring whatever happens.
    match dgram::parse_multishot(ring.take(bid, n)) {
        Ok(datagram) => Outcome::Item(datagram.len() as i32, Some(datagram)),
        Err(res) => Outcome::Item(res, None),
    }
}

/// The readiness route: the fd is ready, make the syscall.
fn syscall(op: &Op, pool: &BufPool, scratch: &mut dgram::Scratch) -> Outcome {
    match persistent_syscall(op, pool, scratch) {
        Persistent::Wait => Outcome::Nothing,
        Persistent::More(result, data) => Outcome::Item(cqe(result), data),
        Persistent::End(result) => Outcome::End(cqe(result)),
    }
}
