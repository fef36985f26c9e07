//! The io_uring driver's ops: the slab of slots, the lists that say which slots a turn must
//! visit, and the fd uses that keep a closed fd's number allocated until its ops ended.
//!
//! # Implementation
//! Every list holds slab keys, and whoever walks a list checks that the slot is still in the
//! state that listed it: a key can sit in a list after its op moved on (a queued op cancelled,
//! a parked op stopped). Keys are freed only by [`OpTable::free`] and by the withdrawn sweep at
//! the start of a turn, never while a turn walks the lists, so a listed key whose slot moved on
//! can at worst meet a new op under the same key in the same state it expects, which is then
//! simply that op's turn.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use slab::Slab;

use super::slot::{Slot, SlotState};
use crate::driver::fd_uses::FdUses;
use crate::driver::{Generations, Op, OpId};

/// The driver's ops and the lists a turn walks.
#[derive(Debug)]
pub(super) struct OpTable<T> {
    /// Every op from submit until the kernel is done with it (or it was withdrawn).
    pub(super) slots: Slab<Slot<T>>,
    /// Ops naming each fd, and the closes waiting for them.
    fds: FdUses,
    /// [`Queued`](SlotState::Queued) and [`QueuedPoll`](SlotState::QueuedPoll) ops, in the
    /// order their SQEs go to the kernel.
    pub(super) pending: Vec<usize>,
    /// An empty list that keeps the allocation of a walked `pending` (see
    /// [`take_pending`](Self::take_pending)).
    spare: Vec<usize>,
    /// [`Parked`](SlotState::Parked) ops, oldest first.
    pub(super) parked: VecDeque<usize>,
    /// [`Finished`](SlotState::Finished) ops, whose results the next turn delivers.
    pub(super) finished: Vec<usize>,
    /// [`Withdrawn`](SlotState::Withdrawn) slots, freed at the start of the next turn.
    withdrawn: Vec<usize>,
    /// Each slot's generation: which op an [`OpId`] names.
    generations: Generations,
}

impl<T> Default for OpTable<T> {
    fn default() -> Self {
        OpTable {
            slots: Slab::new(),
            fds: FdUses::default(),
            pending: Vec::new(),
            spare: Vec::new(),
            parked: VecDeque::new(),
            finished: Vec::new(),
            withdrawn: Vec::new(),
            generations: Generations::default(),
        }
    }
}

impl<T> OpTable<T> {
    /// Takes a new op, queued for the next turn.
    pub(super) fn insert(&mut self, op: Op, owner: T) -> OpId {
        self.fds.add(op.fd());
        if let Some(second) = op.second_fd() {
            self.fds.add(second);
        }
        let key = self.slots.insert(Slot { op, state: SlotState::Queued(owner), job: None });
        self.pending.push(key);
        self.generations.issue(key)
    }

    /// Takes the pending list for a turn to walk, leaving an empty one that holds the last
    /// walked list's allocation: a busy turn queues an op per connection, and a list that
    /// started empty every turn was regrown ~5 times per turn (~50 instructions per request
    /// at 64 connections, callgrind).
    pub(super) fn take_pending(&mut self) -> Vec<usize> {
        std::mem::replace(&mut self.pending, std::mem::take(&mut self.spare))
    }

    /// Gives back a list [`take_pending`](Self::take_pending) handed out, once walked.
    pub(super) fn recycle_pending(&mut self, mut walked: Vec<usize>) {
        walked.clear();
        self.spare = walked;
    }

    /// The slot `id` names, unless its op has ended (the key may hold a newer op).
    pub(super) fn key_of(&self, id: OpId) -> Option<usize> {
        self.generations.key_of(id)
    }

    /// The id of the op in slot `key`, for its completions.
    pub(super) fn id(&self, key: usize) -> OpId {
        self.generations.current(key)
    }

    /// Detaches op `key`'s owner (see [`Slot::detach`]). An op the kernel does not hold is
    /// withdrawn: it ends here (its fd use with it) and its slot is freed at the next turn.
    /// Returns the owner and whether an `AsyncCancel` must follow.
    pub(super) fn detach(&mut self, key: usize) -> Option<(T, bool)> {
        let slot = self.slots.get_mut(key)?;
        let (owner, in_kernel) = slot.detach()?;
        if !in_kernel {
            let fds = [Some(slot.op.fd()), slot.op.second_fd()];
            self.withdrawn.push(key);
            self.release(fds);
        }
        Some((owner, in_kernel))
    }

    /// The op of withdrawn slot `key`, handed back to its owner; the slot keeps a placeholder
    /// that names no fd until the next turn frees it.
    pub(super) fn take_withdrawn_op(&mut self, key: usize) -> Op {
        let slot = &mut self.slots[key];
        debug_assert!(matches!(slot.state, SlotState::Withdrawn));
        let placeholder = Op::Poll { fd: -1, interest: crate::driver::Interest(0) };
        std::mem::replace(&mut slot.op, placeholder)
    }

    /// Ends op `key` for good: frees its slot (handing its op back) and its fd use, closing
    /// the fd if a close waited for this op.
    pub(super) fn free(&mut self, key: usize) -> Slot<T> {
        let slot = self.slots.remove(key);
        if !matches!(slot.state, SlotState::Withdrawn) {
            self.release([Some(slot.op.fd()), slot.op.second_fd()]);
        }
        slot
    }

    /// Ends the uses of `fds`, closing any whose close waited for this op.
    fn release(&mut self, fds: [Option<std::os::fd::RawFd>; 2]) {
        for fd in fds.into_iter().flatten() {
            drop(self.fds.release(fd));
        }
    }

    /// Frees the slots withdrawn since the last turn.
    pub(super) fn sweep_withdrawn(&mut self) {
        for key in std::mem::take(&mut self.withdrawn) {
            if matches!(self.slots.get(key).map(|s| &s.state), Some(SlotState::Withdrawn)) {
                self.slots.remove(key);
            }
        }
    }

    /// Closes `fd` once no op names it: now, or when the last one ends.
    pub(super) fn close_fd(&mut self, fd: OwnedFd) {
        drop(self.fds.close(fd));
    }

    /// Ends op `key` without the kernel with `res` (a queued or parked op that was stopped):
    /// its completion goes out at the next turn.
    pub(super) fn finish_later(&mut self, key: usize, res: i32) {
        let slot = &mut self.slots[key];
        let state = std::mem::replace(&mut slot.state, SlotState::Cancelled);
        slot.state = match state {
            SlotState::Queued(owner) | SlotState::Parked(owner) => SlotState::Finished(owner, res),
            other => other,
        };
        self.finished.push(key);
    }

    /// Ops not yet ended (withdrawn ones excluded).
    pub(super) fn in_flight(&self) -> usize {
        self.slots.len() - self.withdrawn.len()
    }

    /// Whether the kernel holds any op.
    pub(super) fn any_in_kernel(&self) -> bool {
        self.slots.iter().any(|(_, slot)| slot.state.in_kernel())
    }

    /// At shutdown, after every op was detached: frees the slots the kernel does not hold.
    pub(super) fn drop_out_of_kernel(&mut self) {
        let keys: Vec<usize> = (self.slots.iter())
            .filter(|(_, slot)| !slot.state.in_kernel())
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.free(key);
        }
        self.withdrawn.clear();
        self.pending.clear();
        self.parked.clear();
        self.finished.clear();
    }

    /// At shutdown, when the kernel did not hand every op back in time: leaks the slots it
    /// still holds (their memory) and the fds waiting for them.
    pub(super) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
        self.fds.leak_waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_list_keeps_its_allocation_from_turn_to_turn() {
        let mut table = OpTable::<u32>::default();
        table.pending.extend(0..100);
        let walked = table.take_pending();
        assert_eq!((walked.len(), table.pending.len()), (100, 0));
        let address = walked.as_ptr();
        table.recycle_pending(walked);
        table.pending.push(7); // queued during the walk, or at the next turn
        assert_eq!(table.take_pending(), [7]);
        assert_eq!(table.pending.as_ptr(), address, "the walked list, emptied, queues next");
        assert!(table.pending.is_empty() && table.pending.capacity() >= 100);
    }
}
