//! `Op::WaitId` on io_uring: one `IORING_OP_WAITID` where the kernel has it (6.7,
//! [`Optimization::WaitId`](super::setup::Optimization::WaitId)), else a `POLL_ADD` on the
//! pidfd and one non-blocking `waitid` at its CQE.
//!
//! # Implementation
//! With `WAITID` the op is `Queued` → `Submitted` → its CQE: 0 with the child's siginfo
//! written into the op's [`ExitInfo`](crate::driver::ExitInfo), or the errno. Without it the
//! op starts as `QueuedPoll` ([`poll_first`]): its `POLL_ADD` completes once the pidfd is
//! readable (the child exited), and the CQE handler reaps it there with `waitid(WNOHANG)`;
//! a child not found exited after all (it cannot happen for a readable pidfd, but costs
//! nothing to allow) is polled for again. A `WAITID` that answers 0 without reporting a child
//! (a `PIDFD_NONBLOCK` pidfd, on which the kernel adds `WNOHANG`) takes the poll route too.
//!
//! A cancelled op's CQE frees the slot and reports nothing: the poll route never reaps
//! after a cancel (the `waitid` runs only for an op that still has its owner), and a `WAITID`
//! that reaped before its cancel took effect left the status in the shared `ExitInfo`, which
//! the owner reads once this slot is freed (see `driver/wait_id.rs`).

use std::os::fd::RawFd;

use io_uring::{opcode, squeue};

use super::complete::{deliver, requeue, Queue};
use super::slot::{Slot, SlotState};
use super::table::OpTable;
use crate::driver::{Completion, ExitInfo, Op};

/// The `IORING_OP_WAITID` SQE (untagged) of a `WaitId` on `pidfd`, writing into `info`;
/// `Err(-EBADF)` for a negative pidfd, as a poll of it would fail (the kernel's `WAITID`
/// says `EINVAL`).
pub(super) fn sqe(pidfd: RawFd, info: &ExitInfo) -> Result<squeue::Entry, i32> {
    let id = libc::id_t::try_from(pidfd).map_err(|_| -libc::EBADF)?;
    let waitid = opcode::WaitId::new(libc::P_PIDFD, id, libc::WEXITED);
    Ok(waitid.infop(info.as_ptr().cast_const()).build())
}

/// Without `IORING_OP_WAITID`: a queued `WaitId` polls its pidfd first (anything else is left
/// alone).
pub(super) fn poll_first<T>(slot: &mut Slot<T>) {
    if !matches!((&slot.op, &slot.state), (Op::WaitId { .. }, SlotState::Queued(_))) {
        return;
    }
    if let SlotState::Queued(owner) = std::mem::replace(&mut slot.state, SlotState::Cancelled) {
        slot.state = SlotState::QueuedPoll(owner);
    }
}

/// The CQE of `WaitId` op `key`: its `WAITID`'s (state `Submitted`) or its poll's
/// (`AwaitingReadiness`).
pub(super) fn on_cqe<T>(
    table: &mut OpTable<T>,
    key: usize,
    res: i32,
    out: &mut Vec<Completion<T>>,
) {
    let slot = &table.slots[key];
    let Op::WaitId { pidfd, info } = &slot.op else { unreachable!("only a WaitId comes here") };
    let res = match slot.state {
        SlotState::Cancelled => {
            table.free(key);
            return;
        }
        // SAFETY: the WAITID's CQE is in: the kernel is done writing `info`.
        SlotState::Submitted(_) if res >= 0 && !unsafe { info.reports_exit() } => {
            return requeue(table, key, Queue::Poll);
        }
        SlotState::Submitted(_) => res,
        SlotState::AwaitingReadiness(_) if res < 0 => res,
        // SAFETY: only a POLL_ADD of this op was in the kernel, and its CQE is in: no WAITID
        // writes `info`, and the owner reads it only once this slot let go of its `Rc`.
        SlotState::AwaitingReadiness(_) => match unsafe { info.reap(*pidfd) } {
            Ok(true) => 0,
            Ok(false) => return requeue(table, key, Queue::Poll),
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        },
        ref state => {
            return log::error!("io_uring: CQE for waitid op {key} {} ignored", state.describe())
        }
    };
    deliver(table, key, res, out);
}
