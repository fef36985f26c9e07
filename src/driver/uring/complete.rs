//! From CQEs to completions: one-shot ops here, persistent ones in `persistent.rs`, `WaitId`'s
//! steps in `wait_id.rs`.

use io_uring::cqueue;

use super::persistent::{self, Rings};
use super::slot::{readiness_poll, result, SlotState};
use super::table::OpTable;
use super::wait_id;
use crate::driver::{Completion, Op};

/// Handles the CQE of user op `key`.
pub(super) fn on_cqe<T: Clone>(
    table: &mut OpTable<T>,
    rings: &Rings,
    key: usize,
    res: i32,
    flags: u32,
    out: &mut Vec<Completion<T>>,
) {
    let Some(slot) = table.slots.get(key) else {
        return log::error!("io_uring: CQE for unknown op {key} (res {res}) ignored");
    };
    if slot.op.is_persistent() {
        persistent::on_cqe(table, rings, key, (res, flags), out);
    } else if matches!(slot.op, Op::WaitId { .. }) {
        wait_id::on_cqe(table, key, res, out);
    } else {
        one_shot(table, key, res, flags, out);
    }
}

/// A one-shot op's CQE: its result, or (for a `Read`/`Write` the kernel answered `EAGAIN`, or
/// the poll that followed) a step towards it.
fn one_shot<T>(
    table: &mut OpTable<T>,
    key: usize,
    res: i32,
    flags: u32,
    out: &mut Vec<Completion<T>>,
) {
    let slot = &mut table.slots[key];
    match &slot.state {
        SlotState::Cancelled if cqueue::more(flags) => return,
        SlotState::Cancelled => {
            table.free(key);
            return;
        }
        // The fd is ready (or has an error, which the op itself will report): try again.
        SlotState::AwaitingReadiness(_) if res >= 0 => return requeue(table, key, Queue::Op),
        SlotState::Submitted(_) if res == -libc::EAGAIN && readiness_poll(&slot.op).is_some() => {
            return requeue(table, key, Queue::Poll)
        }
        SlotState::Submitted(_) | SlotState::AwaitingReadiness(_) => {}
        state => return log::error!("io_uring: CQE for op {key} {} ignored", state.describe()),
    }
    deliver(table, key, res, out);
}

/// Ends one-shot op `key`, which the kernel holds for its owner (`Submitted` or
/// `AwaitingReadiness`), with `res`: frees it and hands its completion out, with the op.
pub(super) fn deliver<T>(
    table: &mut OpTable<T>,
    key: usize,
    res: i32,
    out: &mut Vec<Completion<T>>,
) {
    let read_done = matches!(table.slots[key].state, SlotState::Submitted(_));
    let id = table.id(key);
    let mut slot = table.free(key);
    if let (true, Op::Read { buf, .. }, Ok(n)) = (read_done, &mut slot.op, usize::try_from(res)) {
        let spare = buf.capacity() - buf.len();
        debug_assert!(n <= spare, "read of {n} bytes into {spare} bytes of spare capacity");
        // SAFETY: the kernel's READ wrote `n` bytes at the start of the spare capacity it was
        // given, so `len + n` bytes are initialised; `n` never exceeds that spare capacity, the
        // length the read was given (`min` keeps it so regardless).
        unsafe { buf.set_len(buf.len() + n.min(spare)) };
    }
    if let SlotState::Submitted(owner) | SlotState::AwaitingReadiness(owner) = slot.state {
        let result = result(res);
        out.push(Completion { id, owner, result, op: Some(slot.op), data: None });
    }
}

/// What a requeued op sends next.
pub(super) enum Queue {
    /// The op's own SQE.
    Op,
    /// A `POLL_ADD` for the readiness it waits for.
    Poll,
}

/// Queues op `key`, whose SQE (or poll) the kernel just finished, for the next turn.
pub(super) fn requeue<T>(table: &mut OpTable<T>, key: usize, next: Queue) {
    let slot = &mut table.slots[key];
    let state = std::mem::replace(&mut slot.state, SlotState::Cancelled);
    let (SlotState::Submitted(owner) | SlotState::AwaitingReadiness(owner)) = state else {
        slot.state = state;
        return;
    };
    slot.state = match next {
        Queue::Op => SlotState::Queued(owner),
        Queue::Poll => SlotState::QueuedPoll(owner),
    };
    table.pending.push(key);
}

/// Delivers the results of ops that ended without the kernel (stopped while queued or parked).
pub(super) fn deliver_finished<T>(table: &mut OpTable<T>, out: &mut Vec<Completion<T>>) {
    for key in std::mem::take(&mut table.finished) {
        if !matches!(table.slots.get(key).map(|s| &s.state), Some(SlotState::Finished(..))) {
            continue; // cancelled meanwhile
        }
        let id = table.id(key);
        let slot = table.free(key);
        if let SlotState::Finished(owner, res) = slot.state {
            let result = result(res);
            out.push(Completion { id, owner, result, op: Some(slot.op), data: None });
        }
    }
}
