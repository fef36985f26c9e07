//! The connections of a `raw-uring-max` loop, by slot: the direct descriptor index with
//! `fixed-files`, else the fd number. Each slot has a generation, bumped at each accept into it
//! and carried in every `user_data`, so a completion of an earlier connection in a reused slot
//! is told apart and ignored.

use io_uring::{cqueue, opcode, squeue, types};

use super::{tag, Op, Queue};

/// The connections, and the multishot accept that fills the slots.
pub(super) struct Slots<C> {
    conns: Vec<Option<C>>,
    generations: Vec<u32>,
    /// The multishot accept, re-armed whenever the kernel ends it.
    accept: squeue::Entry,
    /// Slots are direct descriptors.
    fixed_files: bool,
}

impl<C> Slots<C> {
    pub(super) fn new(accept: squeue::Entry, fixed_files: bool) -> Slots<C> {
        Slots { conns: Vec::new(), generations: Vec::new(), accept, fixed_files }
    }

    /// An accept's completion: re-arms the accept if the kernel ended it, and puts `conn` in
    /// the new connection's slot under a new generation. The slot; `None` on an accept error.
    pub(super) fn accepted(
        &mut self,
        cqe: &cqueue::Entry,
        queue: &mut Queue<'_>,
        conn: impl FnOnce() -> C,
    ) -> Result<Option<u32>, String> {
        if !cqueue::more(cqe.flags()) {
            queue.push(std::slice::from_ref(&self.accept))?;
        }
        let Ok(slot) = u32::try_from(cqe.result()) else { return Ok(None) };
        let index = slot as usize;
        if index >= self.conns.len() {
            self.conns.resize_with(index + 1, || None);
            self.generations.resize(index + 1, 0);
        }
        self.generations[index] = self.generations[index].wrapping_add(1) & 0x3fff_ffff;
        self.conns[index] = Some(conn());
        Ok(Some(slot))
    }

    /// Whether a completion tagged with `generation` is of the connection in `slot` now.
    pub(super) fn current(&self, slot: u32, generation: u32) -> bool {
        self.generations.get(slot as usize) == Some(&generation)
    }

    /// The connection in `slot`, if any.
    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut C> {
        self.conns.get_mut(slot as usize)?.as_mut()
    }

    /// Frees `slot` and queues the close of its socket (its connection has no op in flight);
    /// the connection, or `None` (and nothing queued) if the slot was free.
    pub(super) fn close(&mut self, slot: u32, queue: &mut Queue<'_>) -> Result<Option<C>, String> {
        let Some(conn) = self.conns[slot as usize].take() else { return Ok(None) };
        let close = match self.fixed_files {
            true => opcode::Close::new(types::Fixed(slot)).build(),
            false => opcode::Close::new(types::Fd(slot as i32)).build(),
        };
        let close = close.flags(squeue::Flags::SKIP_SUCCESS).user_data(self.tag(Op::Close, slot));
        queue.push(&[close])?;
        Ok(Some(conn))
    }

    /// `user_data` for `op` of the connection in `slot`.
    pub(super) fn tag(&self, op: Op, slot: u32) -> u64 {
        tag(op, self.generations[slot as usize], slot)
    }

    /// `entry` (built on `types::Fd(slot)`) tagged as `op` of the connection in `slot`, and
    /// naming it as a direct descriptor with `fixed-files`.
    pub(super) fn target(&self, op: Op, slot: u32, entry: squeue::Entry) -> squeue::Entry {
        let entry = entry.user_data(self.tag(op, slot));
        match self.fixed_files {
            true => entry.flags(squeue::Flags::FIXED_FILE),
            false => entry,
        }
    }
}
