//! Which fd numbers ops name, and the closes that wait for those ops: the driver's half of the
//! rule "only the driver closes an fd it handed to the kernel" (see "Fd numbers" in
//! `driver/mod.rs`).
//!
//! # Implementation
//! fd numbers are small and dense, so the table is a `Vec` indexed by the number (grown on
//! demand up to [`DENSE_LIMIT`]): one add and one release per op, no hashing. Numbers above
//! that (a process with a huge fd limit, or a bogus number an op was given) go to a map, so a
//! stray `i32::MAX` costs a map entry, not gigabytes. An entry counts the ops naming the fd from submit to
//! the op's end (its final completion, or its withdrawal before it reached the kernel), and
//! holds the fd once the loop asked to close it. The close happens when both are true: asked
//! for, and no op left. Until then the number stays allocated, so no new file can take it.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// fd numbers below this are kept in the dense table.
const DENSE_LIMIT: usize = 1 << 16;

/// One fd number's uses.
#[derive(Debug, Default)]
struct FdUse {
    /// Ops naming the fd that have not ended.
    ops: u32,
    /// The fd itself, once the loop asked the driver to close it.
    close: Option<OwnedFd>,
}

/// Ops per fd number, and the fds waiting for their ops to end before they are closed.
#[derive(Debug, Default)]
pub(crate) struct FdUses {
    /// Indexed by fd number below [`DENSE_LIMIT`]; grown on demand.
    dense: Vec<FdUse>,
    /// Numbers from [`DENSE_LIMIT`] up.
    sparse: HashMap<usize, FdUse>,
}

impl FdUses {
    /// An op naming `fd` was submitted.
    pub(crate) fn add(&mut self, fd: RawFd) {
        let Ok(index) = usize::try_from(fd) else { return };
        let entry = if index < DENSE_LIMIT {
            if index >= self.dense.len() {
                self.dense.resize_with(index + 1, FdUse::default);
            }
            &mut self.dense[index]
        } else {
            self.sparse.entry(index).or_default()
        };
        entry.ops += 1;
    }

    /// The entry of `fd`, if it has one.
    fn entry(&mut self, fd: RawFd) -> Option<&mut FdUse> {
        let index = usize::try_from(fd).ok()?;
        if index < DENSE_LIMIT {
            self.dense.get_mut(index)
        } else {
            self.sparse.get_mut(&index)
        }
    }

    /// An op naming `fd` ended. Returns the fd to close now if the loop asked for its close and
    /// that was its last op.
    #[must_use = "the fd returned must be closed"]
    pub(crate) fn release(&mut self, fd: RawFd) -> Option<OwnedFd> {
        let entry = self.entry(fd)?;
        debug_assert!(entry.ops > 0, "fd {fd} released more often than added");
        entry.ops = entry.ops.saturating_sub(1);
        let close = if entry.ops == 0 { entry.close.take() } else { None };
        if entry.ops == 0 && fd as usize >= DENSE_LIMIT {
            self.sparse.remove(&(fd as usize));
        }
        close
    }

    /// The loop asks for `fd` to be closed. Returns it to close now when no op names it;
    /// otherwise keeps it until the last one ends ([`release`](Self::release) returns it).
    #[must_use = "the fd returned must be closed"]
    pub(crate) fn close(&mut self, fd: OwnedFd) -> Option<OwnedFd> {
        match self.entry(fd.as_raw_fd()) {
            Some(entry) if entry.ops > 0 => {
                debug_assert!(entry.close.is_none(), "fd {} closed twice", fd.as_raw_fd());
                entry.close = Some(fd);
                None
            }
            _ => Some(fd),
        }
    }

    /// Whether an op still names `fd`.
    #[cfg(test)]
    pub(crate) fn in_use(&mut self, fd: RawFd) -> bool {
        self.entry(fd).is_some_and(|e| e.ops > 0)
    }

    /// Closes waiting for ops: how many.
    #[cfg(test)]
    pub(crate) fn waiting_closes(&self) -> usize {
        self.dense.iter().chain(self.sparse.values()).filter(|e| e.close.is_some()).count()
    }

    /// Gives up the fds still waiting for ops that will never end as far as the driver knows
    /// (a shutdown that could not get every final completion back): they are leaked, never
    /// closed, since the kernel may still use their numbers.
    pub(crate) fn leak_waiting(&mut self) {
        for entry in self.dense.iter_mut().chain(self.sparse.values_mut()) {
            if entry.ops > 0 {
                if let Some(fd) = entry.close.take() {
                    std::mem::forget(fd);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::pipe;

    #[test]
    fn a_close_waits_for_the_last_op_naming_the_fd() {
        let mut uses = FdUses::default();
        let (r, w) = pipe();
        let number = r.as_raw_fd();
        uses.add(number);
        uses.add(number);
        assert!(uses.close(r).is_none(), "two ops still name it");
        assert_eq!(uses.waiting_closes(), 1);
        assert!(uses.release(number).is_none());
        let closed = uses.release(number).expect("the last op ended");
        assert_eq!(closed.as_raw_fd(), number);
        assert!(!uses.in_use(number));
        // An fd no op names closes at once.
        assert!(uses.close(w).is_some());
    }

    #[test]
    fn negative_unknown_and_huge_fds_cost_nothing() {
        let mut uses = FdUses::default();
        uses.add(-1);
        assert!(uses.release(-1).is_none());
        assert!(uses.release(4000).is_none());
        assert!(!uses.in_use(-1));
        uses.add(i32::MAX - 1);
        assert!(uses.in_use(i32::MAX - 1));
        assert!(uses.dense.is_empty(), "a huge number is not a dense index");
        assert!(uses.release(i32::MAX - 1).is_none());
        assert!(uses.sparse.is_empty());
    }
}
