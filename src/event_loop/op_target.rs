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

/// The owner of a driver op: told of each of its completions.
pub(crate) trait OpTarget {
    /// A completion of op `id`: the kernel's result; `more` while a persistent op goes on;
    /// the op with its buffers on the final completion; a chunk's or datagram's bytes.
    fn complete(
        self: Rc<Self>,
        id: OpId,
        result: io::Result<u32>,
        more: bool,
        op: Option<Op>,
        data: Option<RecvBuf>,
    );
}

/// The owner value the loop's driver holds for each op.
pub(crate) type OpOwner = Rc<dyn OpTarget>;

/// An owner that ignores its completions (tests).
#[cfg(test)]
pub(crate) struct Nobody;

#[cfg(test)]
impl OpTarget for Nobody {
    fn complete(
        self: Rc<Self>,
        _: OpId,
        _: io::Result<u32>,
        _: bool,
        _: Option<Op>,
        _: Option<RecvBuf>,
    ) {
    }
}

/// An [`OpOwner`] that ignores its completions (tests).
#[cfg(test)]
pub(crate) fn nobody() -> OpOwner {
    Rc::new(Nobody)
}
