//! Ops in flight: the slab slot that owns an op until its final CQE, its SQE, `user_data` tags.

use std::io;
use std::os::fd::RawFd;

use io_uring::types::Fd;
use io_uring::{cqueue, opcode, squeue};
use slab::Slab;

use super::setup::{Feature, FeatureSet};
use super::sync::{self, Attempt};
use crate::driver::syscall::MAX_IO;
use crate::driver::{Completion, Op, OpId};

/// `user_data` of the armed eventfd read (or poll) that wakes `turn`.
pub(super) const WAKE: u64 = u64::MAX;
/// `user_data` of the `AsyncCancel` SQEs that [`cancel`](super::UringDriver::cancel) sends.
pub(super) const CANCEL: u64 = u64::MAX - 1;
/// `user_data` of the one `IORING_ASYNC_CANCEL_ANY` SQE sent at shutdown.
pub(super) const CANCEL_ANY: u64 = u64::MAX - 2;
/// `user_data` of the `Timeout` SQE bounding a wait without `IORING_FEAT_EXT_ARG`.
pub(super) const TIMER: u64 = u64::MAX - 3;
/// `user_data` of the `TimeoutRemove` SQE that withdraws a stale [`TIMER`].
pub(super) const TIMER_REMOVE: u64 = u64::MAX - 4;
/// Every `user_data` from here up is internal; slab keys stay below (a slab that large would
/// not fit in memory).
const FIRST_INTERNAL: u64 = TIMER_REMOVE;

/// What a CQE's `user_data` says it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tag {
    /// A user op: the slab key of its slot.
    Op(usize),
    /// The wake op.
    Wake,
    /// A per-op `AsyncCancel`.
    Cancel,
    /// The shutdown `IORING_ASYNC_CANCEL_ANY`.
    CancelAny,
    /// The fallback wait timer.
    Timer,
    /// The removal of a stale fallback timer.
    TimerRemove,
}

impl Tag {
    /// Classifies a CQE by its `user_data`.
    pub(super) fn of(user_data: u64) -> Tag {
        match user_data {
            WAKE => Tag::Wake,
            CANCEL => Tag::Cancel,
            CANCEL_ANY => Tag::CancelAny,
            TIMER => Tag::Timer,
            TIMER_REMOVE => Tag::TimerRemove,
            // Below FIRST_INTERNAL; on a 32-bit target a key never exceeds usize anyway.
            key => Tag::Op(usize::try_from(key).unwrap_or(usize::MAX)),
        }
    }
}

/// The `user_data` for a slab key.
pub(super) fn user_data(key: usize) -> u64 {
    let data = key as u64;
    debug_assert!(data < FIRST_INTERNAL, "slab key {key} collides with internal user_data");
    data
}

/// Where an op is in its life. The slot exists from `submit` to the op's final CQE.
#[derive(Debug)]
pub(super) enum Lifecycle<T> {
    /// Submitted (or queued for submission); its completions go to the owner.
    InFlight(T),
    /// The owner was detached by `cancel` (and an `AsyncCancel` sent if the op is in the
    /// kernel); the slot waits for the op's final CQE (whatever its result) to be freed, and
    /// reports nothing.
    Cancelled,
}

/// How an op reaches its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// Its own opcode is in the kernel; that CQE is its result.
    Opcode,
    /// Its opcode is missing: a `POLL_ADD` under its `user_data` is in the kernel, and at
    /// that CQE the driver retries the syscall (see `sync.rs`).
    Readiness,
    /// Finished by a syscall at submit; the result waits in the driver's ready queue for the
    /// next `turn`. Nothing of it is in the kernel.
    Done,
    /// A persistent op (`RecvMulti`, `RecvMsgMulti`) waiting, out of the kernel, for its buffer
    /// ring to refill after `ENOBUFS`; the driver re-arms it (see `multi.rs`).
    Parked,
}

/// How [`Slot::start`] got an op going.
#[derive(Debug)]
pub(super) enum Start {
    /// Push this SQE.
    Sqe(squeue::Entry),
    /// Finished at once with this result: queue it for the next `turn`.
    Done(i32),
}

/// One op in flight: the memory the kernel may touch, and its lifecycle.
///
/// # Implementation
/// Slots live inline in a `Slab`, which moves them when it grows. So an `Op` must keep every
/// kernel-visible buffer, address or iovec behind a heap pointer whose target does not move
/// (`Box<SockAddrBuf>` for connect, the `Vec`'s heap block for read, the `Bytes`' storage
/// for send/write, the boxed header for sendmsg); the slot keeps that allocation alive until the final CQE.
///
/// Cancelling does not shorten that: a cancelled op keeps its buffers and address in the slot
/// until the final CQE (`-ECANCELED`, or the result if the op won the race) says the kernel is
/// done with them, and only then is the slot freed with them. A `Close` cannot be called back
/// once submitted: cancelling it only detaches the owner, and the fd is closed regardless.
#[derive(Debug)]
pub(super) struct Slot<T> {
    /// The op, owner of whatever memory its SQE points to.
    pub(super) op: Op,
    /// Where it is in its life.
    pub(super) state: Lifecycle<T>,
    /// How it gets its result.
    pub(super) route: Route,
    /// A persistent op asked to end by `stop`: not re-armed; its last completion is final.
    pub(super) stopping: bool,
}

impl<T> Slot<T> {
    /// A slot for an op just submitted (its route is set by [`start`](Self::start)).
    pub(super) fn new(op: Op, owner: T) -> Slot<T> {
        Slot { op, state: Lifecycle::InFlight(owner), route: Route::Opcode, stopping: false }
    }

    /// Gets the op going: its own SQE when `features` has the opcode, else the synchronous
    /// attempt (and a `POLL_ADD` if that would block).
    pub(super) fn start(&mut self, key: usize, features: FeatureSet) -> Start {
        if let Some(sqe) = self.sqe(features) {
            self.route = Route::Opcode;
            return match sqe {
                Ok(sqe) => Start::Sqe(sqe.user_data(user_data(key))),
                Err(res) => {
                    self.route = Route::Done;
                    Start::Done(res)
                }
            };
        }
        match sync::attempt(&mut self.op) {
            Attempt::Done(res) => {
                self.route = Route::Done;
                Start::Done(res)
            }
            Attempt::Wait(fd, bits) => {
                self.route = Route::Readiness;
                Start::Sqe(poll_sqe(key, fd, bits))
            }
        }
    }

    /// The op's own SQE (untagged), `None` if the kernel lacks the opcode, `Err(-errno)` for
    /// an op that cannot be submitted.
    fn sqe(&mut self, features: FeatureSet) -> Option<Result<squeue::Entry, i32>> {
        let has = |f| features.contains(f);
        let sqe = match &mut self.op {
            Op::Poll { fd, interest } => opcode::PollAdd::new(Fd(*fd), interest.0).build(),
            Op::Connect { fd, addr } if has(Feature::OpConnect) => {
                let storage = &addr.storage as *const libc::sockaddr_storage;
                opcode::Connect::new(Fd(*fd), storage.cast(), addr.len).build()
            }
            Op::Send { fd, buf, offset } if has(Feature::OpSend) => {
                let Some(bytes) = buf.get(*offset..) else { return Some(Err(-libc::EINVAL)) };
                let len = bytes.len().min(MAX_IO) as u32;
                opcode::Send::new(Fd(*fd), bytes.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
            }
            Op::Shutdown { fd, how } if has(Feature::OpShutdown) => {
                opcode::Shutdown::new(Fd(*fd), *how).build()
            }
            Op::Close { fd } if has(Feature::OpClose) => opcode::Close::new(Fd(*fd)).build(),
            Op::Read { fd, buf } if has(Feature::OpRead) => {
                let spare = buf.spare_capacity_mut();
                let len = spare.len().min(MAX_IO) as u32;
                // Offset -1: the fd's current position (pipes and FIFOs have none).
                opcode::Read::new(Fd(*fd), spare.as_mut_ptr().cast(), len).offset(u64::MAX).build()
            }
            Op::Write { fd, buf, offset } if has(Feature::OpWrite) => {
                let Some(bytes) = buf.get(*offset..) else { return Some(Err(-libc::EINVAL)) };
                let len = bytes.len().min(MAX_IO) as u32;
                opcode::Write::new(Fd(*fd), bytes.as_ptr(), len).offset(u64::MAX).build()
            }
            Op::SendMsg { fd, msg } if has(Feature::OpSendMsg) => {
                opcode::SendMsg::new(Fd(*fd), msg.header()).flags(libc::MSG_NOSIGNAL as u32).build()
            }
            Op::RecvMulti { .. } | Op::AcceptMulti { .. } | Op::RecvMsgMulti { .. } => {
                return super::multi::sqe(&self.op, features).map(Ok)
            }
            _ => return None,
        };
        Some(Ok(sqe))
    }

    /// Detaches the owner and marks the slot cancelled; `None` if it already was. The second
    /// value says whether to send an `AsyncCancel`: not for an op the kernel does not hold
    /// ([`Route::Done`]) nor for a `Close` (it happens regardless).
    pub(super) fn cancel(&mut self) -> Option<(T, bool)> {
        match std::mem::replace(&mut self.state, Lifecycle::Cancelled) {
            Lifecycle::InFlight(owner) => {
                let in_kernel = !matches!(self.route, Route::Done | Route::Parked)
                    && !matches!(self.op, Op::Close { .. });
                Some((owner, in_kernel))
            }
            Lifecycle::Cancelled => None,
        }
    }
}

/// A one-shot `POLL_ADD` for `bits` on `fd`, tagged with slab key `key`.
pub(super) fn poll_sqe(key: usize, fd: RawFd, bits: u32) -> squeue::Entry {
    opcode::PollAdd::new(Fd(fd), bits).build().user_data(user_data(key))
}

/// Handles the CQE of user op `key` (or the result of a [`Route::Done`] op, with `flags` 0):
/// reports it to its owner unless cancelled, and frees the slot when the CQE is final, the op
/// going back in the completion. Returns the `POLL_ADD` to push when a [`Route::Readiness`]
/// op must wait again, or when a `Read`/`Write` opcode answered `EAGAIN` (a non-blocking fd
/// whose file the kernel cannot poll internally, e.g. a tty before 6.x): from then on that op
/// takes the readiness route.
pub(super) fn complete<T: Clone>(
    slots: &mut Slab<Slot<T>>,
    key: usize,
    res: i32,
    flags: u32,
    out: &mut Vec<Completion<T>>,
) -> Option<squeue::Entry> {
    let Some(slot) = slots.get_mut(key) else {
        log::error!("io_uring: CQE for unknown op {key} (res {res}) ignored");
        return None;
    };
    let id = OpId(key);
    match &slot.state {
        Lifecycle::InFlight(owner) if cqueue::more(flags) => {
            let (owner, result) = (owner.clone(), result(res));
            out.push(Completion { id, owner, result, more: true, op: None, data: None });
            return None;
        }
        Lifecycle::Cancelled if cqueue::more(flags) => return None,
        Lifecycle::Cancelled => {
            let slot = slots.remove(key);
            // A readiness CQE carries poll bits, not the op's own result.
            if slot.route != Route::Readiness {
                slot.op.discard_result(res);
            }
            return None;
        }
        Lifecycle::InFlight(_) => {}
    }
    let res = match slot.route {
        Route::Readiness => match sync::after_poll(&mut slot.op, res) {
            Attempt::Done(res) => res,
            Attempt::Wait(fd, bits) => return Some(poll_sqe(key, fd, bits)),
        },
        Route::Opcode if res == -libc::EAGAIN => match sync::wait_for(&slot.op) {
            Some((fd, bits)) => {
                slot.route = Route::Readiness;
                return Some(poll_sqe(key, fd, bits));
            }
            None => res,
        },
        Route::Opcode | Route::Done | Route::Parked => res,
    };
    let Slot { mut op, state: Lifecycle::InFlight(owner), route, .. } = slots.remove(key) else {
        unreachable!("a cancelled slot returned above")
    };
    // A `read(2)` (the other routes) has extended the buffer already; the opcode has not.
    if let (Route::Opcode, Op::Read { buf, .. }, Ok(n)) = (route, &mut op, usize::try_from(res)) {
        let spare = buf.capacity() - buf.len();
        debug_assert!(n <= spare, "read of {n} bytes into {spare} bytes of spare capacity");
        // SAFETY: the kernel's READ wrote `n` bytes at the start of the spare capacity it was
        // given, so `len + n` bytes are initialised; `n` never exceeds that spare capacity, the
        // length the read was given (`min` keeps it so regardless).
        unsafe { buf.set_len(buf.len() + n.min(spare)) };
    }
    out.push(Completion { id, owner, result: result(res), more: false, op: Some(op), data: None });
    None
}

/// Handles the CQE of user op `key` at shutdown, when every slot is cancelled: frees the slot
/// at its final CQE.
pub(super) fn retire<T>(slots: &mut Slab<Slot<T>>, key: usize, flags: u32) {
    if !cqueue::more(flags) && slots.try_remove(key).is_none() {
        log::error!("io_uring: final CQE for unknown op {key} at shutdown ignored");
    }
}

/// A syscall's result (`driver/syscall.rs`) as a CQE result: the value, or `-errno`. Counts
/// fit: every route caps a transfer at [`MAX_IO`](crate::driver::syscall::MAX_IO).
pub(super) fn cqe(result: io::Result<u32>) -> i32 {
    match result {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    }
}

/// A CQE result as the contract has it: `Ok(n)`, or the errno.
pub(super) fn result(res: i32) -> io::Result<u32> {
    if res >= 0 {
        Ok(res.unsigned_abs())
    } else {
        Err(io::Error::from_raw_os_error(res.wrapping_neg()))
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
        let internal = [WAKE, CANCEL, CANCEL_ANY, TIMER, TIMER_REMOVE];
        assert!(internal.iter().all(|d| *d >= FIRST_INTERNAL));
        assert_eq!(internal.map(Tag::of).len(), 5);
        assert_eq!(Tag::of(TIMER), Tag::Timer);
    }

    #[test]
    fn cancelled_slots_report_nothing_and_free_at_the_final_cqe() {
        let mut slots = Slab::new();
        let op = Op::Poll { fd: 0, interest: Interest::READ };
        let key = slots.insert(Slot::new(op, "owner"));
        assert_eq!(slots[key].cancel(), Some(("owner", true)));
        assert_eq!(slots[key].cancel(), None);
        let mut out = Vec::new();
        complete(&mut slots, key, 1, 2 /* IORING_CQE_F_MORE */, &mut out);
        assert!(out.is_empty() && slots.contains(key));
        complete(&mut slots, key, -libc::ECANCELED, 0, &mut out);
        assert!(out.is_empty() && !slots.contains(key));
    }

    #[test]
    fn an_eagain_read_or_write_waits_for_readiness_instead_of_failing() {
        // A kernel whose file lacks internal poll answers a non-blocking READ with EAGAIN.
        let mut slots = Slab::new();
        let op = Op::Read { fd: 5, buf: Vec::with_capacity(4) };
        let key = slots.insert(Slot::new(op, "owner"));
        let mut out = Vec::new();
        let poll = complete(&mut slots, key, -libc::EAGAIN, 0, &mut out);
        assert!(poll.is_some() && out.is_empty(), "a POLL_ADD, no completion");
        assert_eq!(slots[key].route, Route::Readiness);
        // Other ops keep EAGAIN as their result.
        let op = Op::Poll { fd: 5, interest: Interest::READ };
        let key = slots.insert(Slot::new(op, "other"));
        assert!(complete(&mut slots, key, -libc::EAGAIN, 0, &mut out).is_none());
        assert_eq!(out.pop().unwrap().result.unwrap_err().raw_os_error(), Some(libc::EAGAIN));
    }

    #[test]
    fn results_map_to_values_and_errnos() {
        assert_eq!(result(5).unwrap(), 5);
        assert_eq!(result(-libc::EBADF).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}
