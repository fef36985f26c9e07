//! The stream transport's side of `EventLoop::sendfile`: [`SendFileSide`] holds the transfer
//! and its chunk in flight, [`SendFileHost`] runs it on a transport with a write side.
//!
//! # Rules (asyncio's, and the issue's)
//! * The write buffer is flushed first; from the call until the transfer ends, `write()` is
//!   refused (`Error::Runtime`, "unable to write; sendfile is in progress"), and `write_eof`
//!   and `close()` wait for it as they wait for the buffer. Reading goes on.
//! * One chunk at a time, each a driver op owned by the transport, so many transfers on one
//!   loop progress side by side and none holds the loop.
//! * **A dropped `sendfile` future never cancels a chunk under way**: the chunk ends (the
//!   pipe drained into the socket), the file position is set to `offset + sent`, and only
//!   then are writes taken again, so every byte the kernel took from the file reaches the
//!   socket before any later write. A chunk nothing of which has happened (not yet
//!   submitted; on epoll, any chunk between turns, as each is one syscall made inside a turn)
//!   is withdrawn, so the transfer ends at once, as it does with no chunk in flight. Else
//!   a drop on epoll would let a chunk waiting for writability send the rest of the file.
//! * `close()` lets the transfer run to its end, as it lets the buffer flush. An abort, or a
//!   fatal error that is not the socket's own (a protocol callback's panic), cancels the chunk
//!   (the connection is gone anyway) and ends the transfer with that error (an abort:
//!   `ConnectionAborted`).
//! * **The socket's own error** (a receive or send that failed, such as a reset) leaves the
//!   chunk in flight to end: the broken socket fails it at once, and its completion says how
//!   many bytes reached the socket before, so the file position counts them (cancelled, a
//!   splice that had moved bytes would go uncounted). The transfer then ends with the
//!   transport's error. The transport's close does not cancel that chunk; the driver closes
//!   the fd once it ended.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use bytes::Bytes;

use super::transfer::{Step, Transfer, TransferFuture};
use crate::driver::{Op, OpId};
use crate::error::{Error, Result};
use crate::event_loop::{LoopFd, OpOwner, OpTarget};

/// The transfer a transport runs, if any, and its chunk in flight.
#[derive(Default)]
pub(crate) struct SendFileSide {
    /// The transfer, from the `sendfile` call until it ends.
    transfer: RefCell<Option<Rc<Transfer>>>,
    /// Its chunk in flight.
    op: Cell<Option<OpId>>,
    /// The chunk in flight when the socket failed, left to end, and the socket's error (see
    /// the module docs). Not in `op`, so the transport's close does not cancel it.
    draining: RefCell<Option<(OpId, Error)>>,
}

impl SendFileSide {
    /// True while a transfer runs (writes are refused meanwhile).
    pub(crate) fn is_active(&self) -> bool {
        self.transfer.borrow().is_some()
    }

    /// Whether `id` is the chunk in flight.
    pub(crate) fn owns(&self, id: OpId) -> bool {
        self.op.get() == Some(id) || self.draining.borrow().as_ref().is_some_and(|d| d.0 == id)
    }

    /// True while a chunk is in flight (also one left to end after the socket failed).
    fn chunk_in_flight(&self) -> bool {
        self.op.get().is_some() || self.draining.borrow().is_some()
    }

    /// The chunk's slot (for the transport's close).
    pub(crate) fn op_slot(&self) -> &Cell<Option<OpId>> {
        &self.op
    }

    /// The transfer, if any.
    fn current(&self) -> Option<Rc<Transfer>> {
        self.transfer.borrow().clone()
    }

    /// Ends the transfer with `result`, if one runs.
    fn end(&self, result: Result<()>) {
        if let Some(transfer) = self.transfer.take() {
            transfer.finish(result);
        }
    }

    /// The transport closes for good (`error`, or an abort): cancels the chunk in flight
    /// through `cancel` and ends the transfer with the transport's error, or one saying it was
    /// aborted; after the socket's own error, leaves the chunk in flight to end first (see the
    /// module docs).
    pub(crate) fn abort(
        &self,
        cancel: impl FnOnce(&Cell<Option<OpId>>),
        fd: i32,
        error: Option<&Error>,
    ) {
        if !self.is_active() {
            return;
        }
        if let (Some(error), Some(id)) =
            (error.filter(|e| e.raw_os_error().is_some()), self.op.get())
        {
            self.op.set(None);
            *self.draining.borrow_mut() = Some((id, error.clone()));
            return;
        }
        cancel(&self.op);
        let error = error.cloned().unwrap_or_else(|| {
            let aborted =
                io::Error::new(io::ErrorKind::ConnectionAborted, "the transport was aborted");
            Error::io(format!("sendfile(fd {fd})"), aborted)
        });
        self.end(Err(error));
    }
}

/// A transport that runs `sendfile` transfers (the stream transport): what the transfer needs
/// of it, and the transfer's steps, provided.
pub(crate) trait SendFileHost: OpTarget + Sized + 'static {
    /// Its transfer.
    fn sendfile_side(&self) -> &SendFileSide;

    /// The socket.
    fn socket(&self) -> &LoopFd;

    /// True with nothing buffered to write and no write in flight.
    fn writes_idle(&self) -> bool;

    /// Writes a copied chunk's bytes (not empty) behind what is buffered.
    fn write_copied(self: &Rc<Self>, bytes: Bytes);

    /// True once the transport is closed.
    fn is_closed(&self) -> bool;

    /// Everything written: the write side is idle and no transfer runs. What waited for that
    /// (`close()`, `write_eof`) happens now.
    fn on_flushed(self: &Rc<Self>);

    /// Starts `transfer` once the write buffer is flushed; the future gives its result.
    /// `Error::Runtime` while another transfer runs.
    fn begin_sendfile(self: &Rc<Self>, transfer: Rc<Transfer>) -> Result<TransferFuture> {
        let side = self.sendfile_side();
        if side.is_active() {
            return Err(super::another_in_progress());
        }
        *side.transfer.borrow_mut() = Some(transfer.clone());
        let core = self.clone();
        let future = TransferFuture::new(transfer, move || core.abandon_sendfile());
        self.advance_sendfile();
        Ok(future)
    }

    /// Moves the transfer on when the write side is idle and no chunk is in flight: the next
    /// chunk, or the end (the range is sent).
    fn advance_sendfile(self: &Rc<Self>) {
        let side = self.sendfile_side();
        let Some(transfer) = side.current() else { return };
        if side.chunk_in_flight() || !self.writes_idle() {
            return;
        }
        let fd = self.socket();
        let Some(op) = transfer.next_op(fd.raw()) else { return self.end_sendfile(Ok(())) };
        let owner: OpOwner = self.clone();
        side.op.set(fd.submit(op, owner));
        if side.op.get().is_none() {
            // The socket or the loop is gone (the transport's close cancels a transfer first,
            // so this is a loop closed under it).
            let gone = io::Error::new(io::ErrorKind::ConnectionAborted, "the socket is closed");
            self.end_sendfile(Err(Error::io(format!("sendfile(fd {})", fd.raw()), gone)));
        }
    }

    /// The chunk in flight completed.
    fn on_chunk(self: &Rc<Self>, result: io::Result<u32>, op: Option<Op>) {
        let side = self.sendfile_side();
        side.op.set(None);
        let failed = side.draining.take();
        let Some(transfer) = side.current() else { return };
        let step = transfer.on_chunk(result, op);
        if let Some((_, error)) = failed {
            // The socket failed meanwhile: the chunk's bytes are counted, copied ones that
            // will never be sent taken back, and the transfer ends with the socket's error.
            if let Step::Copied(bytes) = step {
                transfer.take_back(bytes.len() as u64);
            }
            return self.end_sendfile(Err(error));
        }
        match step {
            Step::Next => self.advance_sendfile(),
            Step::Copied(bytes) => {
                if !bytes.is_empty() {
                    self.write_copied(bytes);
                }
                if transfer.wants_more() {
                    self.advance_sendfile();
                } else {
                    self.end_sendfile(Ok(()));
                }
            }
            Step::Ended(result) => self.end_sendfile(result),
        }
    }

    /// Ends the transfer; writes are taken again, and what waited for the flush goes on.
    fn end_sendfile(self: &Rc<Self>, result: Result<()>) {
        self.sendfile_side().end(result);
        if self.writes_idle() && !self.is_closed() {
            self.on_flushed();
        }
    }

    /// The `sendfile` future was dropped: the transfer ends after the chunk in flight (see
    /// the module docs), at once if none is.
    fn abandon_sendfile(self: &Rc<Self>) {
        let side = self.sendfile_side();
        let Some(transfer) = side.current() else { return };
        transfer.abandon();
        // A chunk nothing of which has happened (epoll: not yet made) is just withdrawn.
        self.socket().withdraw(&side.op);
        if !side.chunk_in_flight() {
            self.end_sendfile(Ok(()));
        }
    }
}
