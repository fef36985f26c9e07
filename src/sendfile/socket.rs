//! `sock_sendfile`'s transfer: [`SocketTransfer`], the owner of its chunks, on a duplicate of
//! the caller's socket.
//!
//! # Implementation
//! The socket is borrowed only for the call, but the kernel may hold a chunk's op after the
//! future is gone, so the transfer works on a duplicate the loop owns ([`LoopFd`]): the
//! driver closes it once no op names it, and the caller may close theirs at any time. Each
//! chunk is one op: `Op::SendFile`, or for the chunked fallback an `Op::Read` of the file and
//! `Op::Send`s of what it read.
//!
//! Dropping the future before the end: a chunk nothing of which has happened is withdrawn
//! (`LoopFd::withdraw`: on epoll every chunk between turns, as each is one syscall made
//! inside a turn; on io_uring one not yet submitted), and the transfer ends at once, as it
//! does with nothing in flight. Else the kernel may hold bytes taken from the file in the
//! pipe, or a send of them in flight, that cannot be put back; rather than let a later send
//! on the socket overtake them (a hole in the stream), the socket is shut down
//! (`shutdown(SHUT_RDWR)`) and the chunk left to end, after which the file position is set
//! to what was sent.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use bytes::Bytes;

use super::transfer::{Step, Transfer};
use crate::driver::{Op, OpId};
use crate::error::{Error, Result};
use crate::event_loop::LoopFd;
use crate::event_loop::{Completed, EventLoop, OpOwner, OpTarget};

/// A `sock_sendfile` in progress: the owner of its ops.
pub(crate) struct SocketTransfer {
    /// The transfer.
    pub(crate) transfer: Rc<Transfer>,
    /// A duplicate of the caller's socket.
    socket: LoopFd,
    /// The op in flight.
    op: Cell<Option<OpId>>,
    /// Copied bytes not yet sent (the chunked fallback), and how many of them were.
    copied: RefCell<Option<(Bytes, usize)>>,
}

impl SocketTransfer {
    /// A transfer of `transfer`'s file to `socket`, started.
    pub(crate) fn start(transfer: Rc<Transfer>, socket: LoopFd) -> Rc<SocketTransfer> {
        let job = Rc::new(SocketTransfer {
            transfer,
            socket,
            op: Cell::new(None),
            copied: RefCell::new(None),
        });
        job.advance();
        job
    }

    /// The next op: the rest of copied bytes, the next chunk, or the end.
    fn advance(self: &Rc<Self>) {
        let op = match &*self.copied.borrow() {
            Some((bytes, at)) => {
                Some(Op::Send { fd: self.socket.raw(), buf: bytes.clone().into(), offset: *at })
            }
            None => self.transfer.next_op(self.socket.raw()),
        };
        let Some(op) = op else { return self.transfer.finish(Ok(())) };
        let owner: OpOwner = self.clone();
        match self.socket.submit(op, owner) {
            Some(id) => self.op.set(Some(id)),
            None => self.transfer.finish(Err(Error::Closed)),
        }
    }

    /// A send of copied bytes completed.
    fn on_sent(self: &Rc<Self>, result: io::Result<u32>) {
        let mut copied = self.copied.borrow_mut();
        let Some((bytes, at)) = copied.as_mut() else { return };
        match result {
            Ok(n) => *at += n as usize,
            Err(err) => {
                let unsent = (bytes.len() - *at) as u64;
                drop(copied);
                self.transfer.take_back(unsent);
                return self.transfer.finish(Err(Error::io(self.transfer.what(), err)));
            }
        }
        if *at < bytes.len() {
            drop(copied);
            return self.advance();
        }
        *copied = None;
        drop(copied);
        if self.transfer.wants_more() {
            self.advance();
        } else {
            self.transfer.finish(Ok(()));
        }
    }

    /// The caller dropped the future (see the module docs).
    pub(crate) fn abandon(self: &Rc<Self>) {
        self.transfer.abandon();
        if !self.socket.withdraw(&self.op) {
            self.socket.with_fd(|fd| {
                let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
            });
            return; // the chunk ends soon (the socket refuses more), then the transfer
        }
        if let Some((bytes, at)) = self.copied.take() {
            self.transfer.take_back((bytes.len() - at) as u64);
        }
        self.transfer.finish(Ok(()));
    }
}

impl OpTarget for SocketTransfer {
    fn complete(self: Rc<Self>, done: Completed) {
        let Completed { result, op, .. } = done;
        self.op.set(None);
        if self.transfer.is_done() {
            return;
        }
        if self.copied.borrow().is_some() {
            return self.on_sent(result);
        }
        match self.transfer.on_chunk(result, op) {
            Step::Next => self.advance(),
            Step::Copied(bytes) => {
                *self.copied.borrow_mut() = Some((bytes, 0));
                self.advance();
            }
            Step::Ended(result) => self.transfer.finish(result),
        }
    }
}

/// Starts a `sock_sendfile` of `transfer` to a duplicate of `socket`.
pub(crate) fn start(
    event_loop: &EventLoop,
    socket: std::os::fd::BorrowedFd<'_>,
    transfer: Rc<Transfer>,
) -> Result<Rc<SocketTransfer>> {
    let dup = socket
        .try_clone_to_owned()
        .map_err(|e| Error::io(format!("{}: dup of the socket", transfer.what()), e))?;
    Ok(SocketTransfer::start(transfer, LoopFd::new(event_loop, dup)))
}
