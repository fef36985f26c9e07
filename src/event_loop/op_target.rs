//! Who a driver completion goes to: an owner the loop knows only through one small trait.
//!
//! # Implementation
//! The driver holds an [`OpOwner`] per op and hands it back with each completion; the loop
//! calls [`OpTarget::complete`] on it and knows nothing else of it (as tokio's driver wakes a
//! `ScheduledIo`, never a `TcpStream`). A transport, a task waiting for an op, a watch: each
//! is its own target, and tells its ops apart by the `OpId`s it stored when submitting them.
//! A new kind of owner (TLS, sendfile, a subprocess) implements the trait; `event_loop/` is
//! not edited. The cost is one indirect call per completion.

use std::io;
use std::rc::Rc;

use crate::driver::{Op, OpId, RecvBuf};

/// One completion of a driver op, as its owner gets it (the driver's `Completion` without
/// the owner).
pub(crate) struct Completed {
    /// The op.
    pub(crate) id: OpId,
    /// The kernel's result: `Ok(n)`, or the errno.
    pub(crate) result: io::Result<u32>,
    /// The op with its buffers, on the final completion: `None` exactly while a persistent op
    /// goes on ([`more`](Self::more)).
    pub(crate) op: Option<Op>,
    /// A chunk's or a datagram's bytes.
    pub(crate) data: Option<RecvBuf>,
}

impl Completed {
    /// True while a persistent op goes on (this completion is not its last).
    pub(crate) fn more(&self) -> bool {
        self.op.is_none()
    }
}

/// The owner of a driver op: told of each of its completions.
pub(crate) trait OpTarget {
    /// A completion of one of its ops.
    fn complete(self: Rc<Self>, done: Completed);
}

/// The owner value the loop's driver holds for each op.
pub(crate) type OpOwner = Rc<dyn OpTarget>;

/// An owner that ignores its completions (tests).
#[cfg(test)]
pub(crate) struct Nobody;

#[cfg(test)]
impl OpTarget for Nobody {
    fn complete(self: Rc<Self>, _: Completed) {}
}

/// An [`OpOwner`] that ignores its completions (tests).
#[cfg(test)]
pub(crate) fn nobody() -> OpOwner {
    Rc::new(Nobody)
}
