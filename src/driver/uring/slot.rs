//! An op in flight: the slab slot that owns it until the kernel is done, its lifecycle, its SQE,
//! and the `user_data` tags that tell the driver's own SQEs apart.

use std::os::fd::RawFd;

use io_uring::types::Fd;
use io_uring::{opcode, squeue};

use super::persistent::{BUF_GROUP, DGRAM_GROUP};
use crate::driver::{dgram, Op, MAX_IO};

pub(super) use super::splice::{DRAIN, DRAIN_POLL};

/// `user_data` of the armed eventfd read that wakes `turn`.
pub(super) const WAKE: u64 = u64::MAX;
/// `user_data` of the `AsyncCancel` SQEs that `cancel` and `end_gracefully` send.
pub(super) const CANCEL: u64 = u64::MAX - 1;
/// `user_data` of the one `IORING_ASYNC_CANCEL_ANY` SQE sent at shutdown.
pub(super) const CANCEL_ANY: u64 = u64::MAX - 2;
/// Every `user_data` from here up is internal; slab keys stay below (a slab that large would
/// not fit in memory).
#[cfg(test)]
const FIRST_INTERNAL: u64 = CANCEL_ANY;

/// What a CQE's `user_data` says it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tag {
    /// A user op: the slab key of its slot.
    Op(usize),
    /// A `SendFile`'s pipe → socket splice, or (`true`) the poll before one: the slab key.
    Drain(usize, bool),
    /// The wake op.
    Wake,
    /// An `AsyncCancel` (per op, or the shutdown's cancel-any).
    Cancel,
}

impl Tag {
    /// Classifies a CQE by its `user_data`.
    pub(super) fn of(user_data: u64) -> Tag {
        match user_data {
            WAKE => Tag::Wake,
            CANCEL | CANCEL_ANY => Tag::Cancel,
            // Below FIRST_INTERNAL; on a 32-bit target a key never exceeds usize anyway.
            key if key & DRAIN != 0 => {
                let slab_key = usize::try_from(key & !(DRAIN | DRAIN_POLL)).unwrap_or(usize::MAX);
                Tag::Drain(slab_key, key & DRAIN_POLL != 0)
            }
            key => Tag::Op(usize::try_from(key).unwrap_or(usize::MAX)),
        }
    }
}

/// The `user_data` for a slab key.
pub(super) fn user_data(key: usize) -> u64 {
    let data = key as u64;
    debug_assert!(data < DRAIN_POLL, "slab key {key} collides with the DRAIN bits");
    data
}

/// Where an op is in its life. The slot exists from `submit` until the kernel is done with the
/// op (its final CQE) or the op was withdrawn before the kernel saw it.
///
/// ```text
///  submit ─► Queued ─turn─► Submitted ─final CQE─► (freed, completion out)
///              │  ▲            │   │  └─EAGAIN (Read/Write)─► QueuedPoll ─turn─► AwaitingReadiness
///              │  └─re-arm─────┘   │                                                 │ poll CQE
///              │  (persistent)     └─stop─► Stopping ─final CQE─► (freed)            ▼
///              │                   └─ENOBUFS─► Parked ─buffers back─► Queued      Queued
///  cancel: Queued/QueuedPoll/Parked/Finished ─► Withdrawn (freed at the next turn, nothing sent)
///          Submitted/Stopping/AwaitingReadiness ─► Cancelled (AsyncCancel; freed at the final CQE)
///  end_gracefully: Queued/Parked ─► Finished(ECANCELED) (delivered at the next turn)
///  WaitId: Submitted (a WAITID) ─CQE, the child still runs─► QueuedPoll; without WAITID it
///          starts as QueuedPoll; AwaitingReadiness ─poll CQE─► waitid: reaped (freed, out)
///          or running (QueuedPoll again) (`wait_id.rs`)
/// ```
#[derive(Debug)]
pub(super) enum SlotState<T> {
    /// Listed in the driver's queue: its SQE goes to the kernel at the next turn. Nothing of it
    /// is in the kernel, so a cancel withdraws it.
    Queued(T),
    /// A `Read`/`Write` whose opcode answered `EAGAIN`, or a `WaitId` whose child still runs:
    /// a `POLL_ADD` for its readiness is queued for the next turn.
    QueuedPoll(T),
    /// The op's SQE is in the kernel.
    Submitted(T),
    /// The `POLL_ADD` of a [`QueuedPoll`](Self::QueuedPoll) op is in the kernel; at its CQE
    /// the op is queued again (a `WaitId` reaps then, see `wait_id.rs`).
    AwaitingReadiness(T),
    /// A persistent op asked to end ([`end_gracefully`](super::UringDriver::end_gracefully)): an `AsyncCancel` is
    /// on its way; its results are still delivered and its last CQE is final.
    Stopping(T),
    /// A persistent op out of the kernel after `ENOBUFS`, waiting for buffers to come back.
    Parked(T),
    /// Ended without the kernel (a queued or parked op that was stopped): the result is
    /// delivered at the next turn.
    Finished(T, i32),
    /// The owner was detached while the op is in the kernel: an `AsyncCancel` is on its way,
    /// and the slot (with the op's memory) waits for the final CQE, reporting nothing.
    Cancelled,
    /// The owner was detached before the kernel saw the op: nothing was or will be sent. The
    /// slot is freed at the next turn (its key stays reserved until then).
    Withdrawn,
}

impl<T> SlotState<T> {
    /// The state's name, for logs.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            SlotState::Queued(_) => "queued",
            SlotState::QueuedPoll(_) => "queued for a readiness poll",
            SlotState::Submitted(_) => "submitted",
            SlotState::AwaitingReadiness(_) => "awaiting readiness",
            SlotState::Stopping(_) => "stopping",
            SlotState::Parked(_) => "parked",
            SlotState::Finished(..) => "finished",
            SlotState::Cancelled => "cancelled",
            SlotState::Withdrawn => "withdrawn",
        }
    }

    /// Whether the kernel holds an SQE of the op (its memory must stay until the final CQE).
    pub(super) fn in_kernel(&self) -> bool {
        matches!(
            self,
            SlotState::Submitted(_)
                | SlotState::AwaitingReadiness(_)
                | SlotState::Stopping(_)
                | SlotState::Cancelled
        )
    }
}

/// One op in flight: the memory the kernel may touch, and its lifecycle.
///
/// # Implementation
/// Slots live inline in a `Slab`, which moves them when it grows. So an `Op` must keep every
/// kernel-visible buffer, address or iovec behind a heap pointer whose target does not move
/// (`Box<SockAddrBuf>` for connect, the `Vec`'s heap block for read, the `Bytes`' storage
/// for send/write, the boxed header for sendmsg, the shared `ExitInfo` for waitid); the slot
/// keeps that allocation alive until the final CQE. Cancelling does not shorten that: a
/// cancelled op keeps its memory in the slot until the final CQE (`-ECANCELED`, or the result
/// if the op won the race) says the kernel is done with it.
#[derive(Debug)]
pub(super) struct Slot<T> {
    /// The op, owner of whatever memory its SQE points to.
    pub(super) op: Op,
    /// Where it is in its life.
    pub(super) state: SlotState<T>,
    /// A `SendFile`'s transfer (its pipe and progress), from its first SQE on.
    pub(super) job: Option<Box<super::splice::SpliceJob>>,
}

impl<T> Slot<T> {
    /// Whether this one-shot op has done nothing yet: queued for the kernel (or for a poll
    /// after `EAGAIN`) with no `SendFile` splice begun.
    pub(super) fn untouched(&self) -> bool {
        let queued = matches!(self.state, SlotState::Queued(_) | SlotState::QueuedPoll(_));
        queued && self.job.is_none() && !self.op.is_persistent()
    }

    /// Detaches the owner. Returns it and whether the kernel holds the op (then an
    /// `AsyncCancel` must follow); `None` if it was detached already.
    pub(super) fn detach(&mut self) -> Option<(T, bool)> {
        let in_kernel = self.state.in_kernel();
        let next = if in_kernel { SlotState::Cancelled } else { SlotState::Withdrawn };
        match std::mem::replace(&mut self.state, next) {
            SlotState::Queued(owner)
            | SlotState::QueuedPoll(owner)
            | SlotState::Parked(owner)
            | SlotState::Finished(owner, _) => Some((owner, false)),
            SlotState::Submitted(owner)
            | SlotState::AwaitingReadiness(owner)
            | SlotState::Stopping(owner) => Some((owner, true)),
            previous @ (SlotState::Cancelled | SlotState::Withdrawn) => {
                self.state = previous;
                None
            }
        }
    }
}

/// The SQE of `op` (untagged), or `Err(-errno)` for an op that cannot be submitted.
pub(super) fn sqe(op: &mut Op) -> Result<squeue::Entry, i32> {
    let accept_flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    Ok(match op {
        Op::Poll { fd, interest } => opcode::PollAdd::new(Fd(*fd), interest.0).build(),
        Op::Connect { fd, addr } => {
            let storage = &addr.storage as *const libc::sockaddr_storage;
            opcode::Connect::new(Fd(*fd), storage.cast(), addr.len).build()
        }
        Op::Send { fd, buf, offset } => {
            let bytes = buf.get(*offset..).ok_or(-libc::EINVAL)?;
            let len = bytes.len().min(MAX_IO) as u32;
            opcode::Send::new(Fd(*fd), bytes.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
        }
        Op::Read { fd, buf } => {
            let spare = buf.spare_capacity_mut();
            let len = spare.len().min(MAX_IO) as u32;
            // Offset -1: the fd's current position (pipes and FIFOs have none).
            opcode::Read::new(Fd(*fd), spare.as_mut_ptr().cast(), len).offset(u64::MAX).build()
        }
        Op::Write { fd, buf, offset } => {
            let bytes = buf.get(*offset..).ok_or(-libc::EINVAL)?;
            let len = bytes.len().min(MAX_IO) as u32;
            opcode::Write::new(Fd(*fd), bytes.as_ptr(), len).offset(u64::MAX).build()
        }
        Op::SendMsg { fd, msg } => {
            opcode::SendMsg::new(Fd(*fd), msg.header()).flags(libc::MSG_NOSIGNAL as u32).build()
        }
        Op::RecvMulti { fd } => opcode::RecvMulti::new(Fd(*fd), BUF_GROUP).build(),
        Op::RecvMsgMulti { fd } => {
            let hdr: *const libc::msghdr = dgram::multishot_header();
            opcode::RecvMsgMulti::new(Fd(*fd), hdr, DGRAM_GROUP).build()
        }
        Op::AcceptMulti { fd } => opcode::AcceptMulti::new(Fd(*fd)).flags(accept_flags).build(),
        Op::WaitId { pidfd, info } => super::wait_id::sqe(*pidfd, info)?,
        Op::SendFile { .. } => unreachable!("a SendFile's SQEs are built by splice.rs"),
    })
}

/// A one-shot `POLL_ADD` for the readiness a `Read` or `Write` waits for after its opcode
/// answered `EAGAIN`, or a `WaitId` for its child's exit (`None` for other ops: their `EAGAIN`
/// is final).
///
/// The kernel polls every pollable file itself before it answers; `EAGAIN` comes only from a
/// non-blocking file it cannot poll internally, so this path is rare for a read or write.
pub(super) fn readiness_poll(op: &Op) -> Option<squeue::Entry> {
    let (fd, bits): (RawFd, _) = match *op {
        Op::Read { fd, .. } => (fd, libc::POLLIN),
        Op::Write { fd, .. } => (fd, libc::POLLOUT),
        // A pidfd is readable once its process exited.
        Op::WaitId { pidfd, .. } => (pidfd, libc::POLLIN),
        _ => return None,
    };
    Some(opcode::PollAdd::new(Fd(fd), bits as u32).build())
}

/// A CQE result as the contract has it: `Ok(n)`, or the errno.
pub(super) fn result(res: i32) -> std::io::Result<u32> {
    if res >= 0 {
        Ok(res.unsigned_abs())
    } else {
        Err(std::io::Error::from_raw_os_error(res.wrapping_neg()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Interest;

    #[test]
    fn tags_round_trip_and_never_collide() {
        assert_eq!(Tag::of(user_data(0)), Tag::Op(0));
        assert_eq!(Tag::of(user_data(12345)), Tag::Op(12345));
        assert!([WAKE, CANCEL, CANCEL_ANY].iter().all(|d| *d >= FIRST_INTERNAL));
        assert_eq!(Tag::of(CANCEL_ANY), Tag::Cancel);
        assert_eq!(Tag::of(WAKE), Tag::Wake);
    }

    #[test]
    fn detaching_withdraws_what_the_kernel_does_not_hold_and_cancels_the_rest() {
        let op = || Op::Poll { fd: 0, interest: Interest::READ };
        let mut queued = Slot { op: op(), state: SlotState::Queued("a"), job: None };
        assert_eq!(queued.detach(), Some(("a", false)));
        assert!(matches!(queued.state, SlotState::Withdrawn));
        assert_eq!(queued.detach(), None);
        let mut submitted = Slot { op: op(), state: SlotState::Submitted("b"), job: None };
        assert_eq!(submitted.detach(), Some(("b", true)));
        assert!(matches!(submitted.state, SlotState::Cancelled));
        assert!(submitted.state.in_kernel());
        assert_eq!(submitted.detach(), None);
        assert!(matches!(submitted.state, SlotState::Cancelled));
    }

    #[test]
    fn results_map_to_values_and_errnos() {
        assert_eq!(result(5).unwrap(), 5);
        assert_eq!(result(-libc::EBADF).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn a_send_past_its_buffer_is_einval() {
        let mut op = Op::Send { fd: 1, buf: bytes::Bytes::from_static(b"ab").into(), offset: 3 };
        assert_eq!(sqe(&mut op).unwrap_err(), -libc::EINVAL);
    }
}
