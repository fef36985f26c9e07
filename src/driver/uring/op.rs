//! Ops in flight: the slab slot that owns an op until its final CQE, its SQE, `user_data` tags.

use std::io;

use io_uring::{cqueue, opcode, squeue, types};
use slab::Slab;

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
    /// The owner was detached by `cancel` and an `AsyncCancel` sent; the slot waits for the
    /// op's final CQE (whatever its result) to be freed, and reports nothing.
    Cancelled,
}

/// One op in flight: the memory the kernel may touch, and its lifecycle.
///
/// # Implementation
/// Slots live inline in a `Slab`, which moves them when it grows. So an `Op` must keep every
/// kernel-visible buffer, address or iovec behind a heap pointer (`Box`, `Vec`, ...) whose
/// target does not move; the slot only keeps that allocation alive until the final CQE.
#[derive(Debug)]
pub(super) struct Slot<T> {
    /// The op, owner of whatever memory its SQE points to.
    op: Op,
    /// Where it is in its life.
    state: Lifecycle<T>,
}

impl<T> Slot<T> {
    /// A slot for an op just submitted.
    pub(super) fn new(op: Op, owner: T) -> Slot<T> {
        Slot { op, state: Lifecycle::InFlight(owner) }
    }

    /// The SQE for this slot's op, tagged with its key.
    pub(super) fn sqe(&self, key: usize) -> squeue::Entry {
        match self.op {
            Op::Poll { fd, interest } => {
                opcode::PollAdd::new(types::Fd(fd), interest.0).build().user_data(user_data(key))
            }
        }
    }

    /// Detaches the owner and marks the slot cancelled; `None` if it already was.
    pub(super) fn cancel(&mut self) -> Option<T> {
        match std::mem::replace(&mut self.state, Lifecycle::Cancelled) {
            Lifecycle::InFlight(owner) => Some(owner),
            Lifecycle::Cancelled => None,
        }
    }
}

/// Handles the CQE of user op `key`: reports it to its owner unless cancelled, and frees the
/// slot (with the op's memory) when the CQE is final.
pub(super) fn complete<T: Clone>(
    slots: &mut Slab<Slot<T>>,
    key: usize,
    res: i32,
    flags: u32,
    out: &mut Vec<Completion<T>>,
) {
    let Some(slot) = slots.get_mut(key) else {
        log::error!("io_uring: CQE for unknown op {key} (res {res}) ignored");
        return;
    };
    let id = OpId(key);
    if cqueue::more(flags) {
        if let Lifecycle::InFlight(owner) = &slot.state {
            out.push(Completion { id, owner: owner.clone(), result: result(res), more: true });
        }
        return;
    }
    match slots.remove(key).state {
        Lifecycle::InFlight(owner) => {
            out.push(Completion { id, owner, result: result(res), more: false })
        }
        Lifecycle::Cancelled => {}
    }
}

/// Handles the CQE of user op `key` at shutdown, when every slot is cancelled: frees the slot
/// at its final CQE.
pub(super) fn retire<T>(slots: &mut Slab<Slot<T>>, key: usize, flags: u32) {
    if !cqueue::more(flags) && slots.try_remove(key).is_none() {
        log::error!("io_uring: final CQE for unknown op {key} at shutdown ignored");
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
        assert_eq!(slots[key].cancel(), Some("owner"));
        assert_eq!(slots[key].cancel(), None);
        let mut out = Vec::new();
        complete(&mut slots, key, 1, 2 /* IORING_CQE_F_MORE */, &mut out);
        assert!(out.is_empty() && slots.contains(key));
        complete(&mut slots, key, -libc::ECANCELED, 0, &mut out);
        assert!(out.is_empty() && !slots.contains(key));
    }

    #[test]
    fn results_map_to_values_and_errnos() {
        assert_eq!(result(5).unwrap(), 5);
        assert_eq!(result(-libc::EBADF).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}
