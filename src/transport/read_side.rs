//! The read side of a byte transport: one read op in flight while reading, pausing, and what
//! arrived while paused held in order. The stream transport reads a socket with the driver's
//! persistent receive; the read pipe reads any fd with one `read` at a time.
//!
//! # States
//! `Reading` ⇄ `Paused`, then `Stopped` (EOF seen, or closing). A stream that kept its
//! connection open after EOF may still be paused: `PausedAfterEof` is then what `is_reading`
//! reports, with nothing to read either way.
//!
//! Pausing never cancels a read the kernel may already have served (a cancelled receive could
//! lose bytes the kernel took from the socket): a socket's persistent receive is *stopped*
//! (`Driver::end_gracefully`), so chunks it already took still arrive, then its final `ECANCELED`; a
//! file's one read is left to complete. Whatever completes while paused, or while held data
//! waits to be delivered, is held (copied out of the driver's buffer) and handed back, in order,
//! once reading resumes; newer data and EOF queue behind it.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::ops::Deref;

use crate::driver::{Interest, Op, OpId, RecvBuf};
use crate::event_loop::{Completed, LoopFd, OpOwner};

/// Bytes asked of the kernel per read of a file.
const FILE_READ_SIZE: usize = 64 * 1024;

/// The read side's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// A read is kept in flight.
    Reading,
    /// `pause_reading()`: no new read; what completes is held.
    Paused,
    /// EOF seen, or closing: no more reads.
    Stopped,
    /// EOF seen, the connection kept open, then `pause_reading()` (see the module docs).
    PausedAfterEof,
}

/// What the side reads from.
enum Source {
    /// A socket: one persistent `RecvMulti`, stopped to pause.
    Socket,
    /// Any fd: one `Read` at a time, into a buffer reused from read to read.
    File {
        /// A FIFO's first read waits for readiness first: a FIFO opened non-blocking before any
        /// writer reads EOF at once, while `poll(2)` reports nothing until a writer came (and
        /// the selector loop waits for one).
        poll_first: Cell<bool>,
        /// The read buffer while no read is in flight.
        read_buf: RefCell<Option<Vec<u8>>>,
    },
}

/// Bytes received: a slot of the driver's receive buffers, or a file read's buffer.
pub(crate) enum Chunk {
    /// From a socket's receive (give it back soon: it is the driver's).
    Received(RecvBuf),
    /// A file read's buffer (back to the side with [`ReadSide::recycle`]).
    Read(Vec<u8>),
    /// A copy, made while reading was paused.
    Copied(Vec<u8>),
}

impl Chunk {
    /// A second holder of a received ring slot's bytes (see [`RecvBuf::lend`]).
    pub(crate) fn lend(&self) -> Option<RecvBuf> {
        match self {
            Chunk::Received(data) => data.lend(),
            Chunk::Read(_) | Chunk::Copied(_) => None,
        }
    }
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Received(data) => data,
            Chunk::Read(data) | Chunk::Copied(data) => data,
        }
    }
}

/// What a read came to, for the transport to act on.
pub(crate) enum Got {
    /// Bytes for the protocol.
    Data(Chunk),
    /// End of stream.
    Eof,
    /// A read error.
    Error(io::Error),
}

/// The read side of a stream or read pipe transport.
pub(crate) struct ReadSide {
    /// Where reading is.
    state: Cell<ReadState>,
    /// The read (or a FIFO's first poll) in flight; a stopped receive stays until its end.
    op: Cell<Option<OpId>>,
    /// What completed while paused (or behind such data), waiting to be delivered once
    /// reading resumes, oldest first.
    waiting: RefCell<VecDeque<Got>>,
    /// What it reads from.
    source: Source,
}

impl ReadSide {
    /// The read side of a socket.
    pub(crate) fn socket() -> ReadSide {
        ReadSide::new(Source::Socket)
    }

    /// The read side of a pipe, FIFO or character device (`fifo`: wait for a writer first).
    pub(crate) fn file(fifo: bool) -> ReadSide {
        let (poll_first, read_buf) = (Cell::new(fifo), RefCell::new(None));
        ReadSide::new(Source::File { poll_first, read_buf })
    }

    fn new(source: Source) -> ReadSide {
        let state = Cell::new(ReadState::Reading);
        ReadSide { state, op: Cell::new(None), waiting: RefCell::new(VecDeque::new()), source }
    }

    /// Where reading is.
    pub(crate) fn state(&self) -> ReadState {
        self.state.get()
    }

    /// The op in flight, if `id` is it.
    pub(crate) fn owns(&self, id: OpId) -> bool {
        self.op.get() == Some(id)
    }

    /// The slot of the op in flight (for the transport's close).
    pub(crate) fn op_slot(&self) -> &Cell<Option<OpId>> {
        &self.op
    }

    /// Keeps a read in flight: submits one when reading and none is.
    pub(crate) fn submit(&self, fd: &LoopFd, owner: impl FnOnce() -> OpOwner) {
        if self.op.get().is_some() || self.state.get() != ReadState::Reading {
            return;
        }
        let op = match &self.source {
            Source::Socket => Op::RecvMulti { fd: fd.raw() },
            Source::File { poll_first, .. } if poll_first.get() => {
                Op::Poll { fd: fd.raw(), interest: Interest::READ }
            }
            Source::File { read_buf, .. } => {
                // Zeroed once and reused: memcheck cannot see the kernel's writes through
                // io_uring.
                let mut buf = read_buf.take().unwrap_or_else(|| vec![0; FILE_READ_SIZE]);
                buf.clear();
                Op::Read { fd: fd.raw(), buf }
            }
        };
        self.op.set(fd.submit(op, owner()));
    }

    /// A completion of the side's op: what to act on now, or `None` (nothing, or held while
    /// paused). The transport then calls [`submit`](Self::submit) to keep reading.
    pub(crate) fn on_completion(&self, done: Completed) -> Option<Got> {
        let more = done.more();
        if !more {
            self.op.set(None);
        }
        let Completed { result, op, data, .. } = done;
        let got = match (&self.source, result, op) {
            (_, Err(e), _) if e.raw_os_error() == Some(libc::ECANCELED) => return None,
            (Source::File { poll_first, .. }, Err(e), Some(Op::Poll { .. })) => {
                poll_first.set(false);
                Got::Error(e)
            }
            (Source::File { poll_first, .. }, Ok(_), Some(Op::Poll { .. })) => {
                poll_first.set(false);
                return None;
            }
            (Source::File { read_buf, .. }, result, Some(Op::Read { buf, .. })) => match result {
                Ok(0) => {
                    *read_buf.borrow_mut() = Some(buf);
                    Got::Eof
                }
                Ok(_) => Got::Data(Chunk::Read(buf)),
                Err(e) if crate::sys::would_block(&e) => {
                    *read_buf.borrow_mut() = Some(buf);
                    return None;
                }
                Err(e) => Got::Error(e),
            },
            (_, Ok(0), _) if !more => Got::Eof,
            (_, Ok(_), _) => Got::Data(Chunk::Received(data?)),
            (_, Err(e), _) => Got::Error(e),
        };
        self.hold_or_pass(got)
    }

    /// `got` itself while reading with nothing held; otherwise it is held (a copy of its
    /// bytes) and `None` comes back. Dropped once stopped.
    fn hold_or_pass(&self, got: Got) -> Option<Got> {
        match self.state.get() {
            ReadState::Stopped | ReadState::PausedAfterEof => None,
            ReadState::Reading if self.waiting.borrow().is_empty() => Some(got),
            ReadState::Reading | ReadState::Paused => {
                let got = match got {
                    Got::Data(Chunk::Received(data)) => Got::Data(Chunk::Copied(data.to_vec())),
                    other => other,
                };
                self.waiting.borrow_mut().push_back(got);
                None
            }
        }
    }

    /// The oldest waiting result, while reading (resumed).
    pub(crate) fn next_waiting(&self) -> Option<Got> {
        if self.state.get() != ReadState::Reading {
            return None;
        }
        self.waiting.borrow_mut().pop_front()
    }

    /// Gives a file read's buffer back for the next read.
    pub(crate) fn recycle(&self, chunk: Chunk) {
        if let (Chunk::Read(buf), Source::File { read_buf, .. }) = (chunk, &self.source) {
            *read_buf.borrow_mut() = Some(buf);
        }
    }

    /// `pause_reading`: stops taking data (a socket's receive is stopped). Idempotent.
    pub(crate) fn pause(&self, fd: &LoopFd) {
        match self.state.get() {
            ReadState::Reading => {
                self.state.set(ReadState::Paused);
                if let Source::Socket = self.source {
                    fd.end_gracefully(&self.op);
                }
            }
            ReadState::Stopped => self.state.set(ReadState::PausedAfterEof),
            ReadState::Paused | ReadState::PausedAfterEof => {}
        }
    }

    /// `resume_reading`: true if reading resumed (the transport then delivers what is held and
    /// reads again). Idempotent.
    pub(crate) fn resume(&self) -> bool {
        match self.state.get() {
            ReadState::Paused => {
                self.state.set(ReadState::Reading);
                true
            }
            ReadState::PausedAfterEof => {
                self.state.set(ReadState::Stopped);
                false
            }
            ReadState::Reading | ReadState::Stopped => false,
        }
    }

    /// Reads no more: cancels the op in flight and drops what is held.
    pub(crate) fn close(&self, fd: &LoopFd) {
        self.state.set(ReadState::Stopped);
        fd.cancel(&self.op);
        self.waiting.borrow_mut().clear();
    }
}
