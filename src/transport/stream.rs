//! The stream transport (TCP and Unix stream sockets): asyncio's socket transport, driven by
//! the driver's completions, identical on both backends.
//!
//! # States
//! ```text
//!  Open ──close()──► Closing (no reads; flushing the write buffer) ──flushed──► Closed
//!   │                                                                             ▲
//!   └──abort() / fatal error / EOF without keep-open ───────────────────────────┘
//! ```
//! Reading: `Reading` ⇄ `Paused`, and `Stopped` after EOF or close. One persistent
//! `Op::RecvMulti` delivers every chunk while reading; the transport owns no read buffer (the
//! chunk is the driver's: a slot of io_uring's buffer ring, or a copy out of the epoll
//! driver's one buffer) and passes it to `data_received` as is. Pausing *stops* the op
//! (`Driver::stop`): chunks the kernel had already taken still arrive and are held (copied),
//! and are delivered in order on resume, before anything newer; the op's final `ECANCELED`
//! lets a new one start once reading resumes. One recv and one send are in flight at most;
//! every protocol callback is made through [`Dispatcher`] so a callback that would re-enter
//! the protocol is delivered right after the running one returns. A data or EOF callback that
//! panics is a fatal error: reported to the exception handler, then the transport is
//! force-closed with [`Error::Panic`] (`connection_lost` still follows); a panic in
//! `connection_made`, `pause_writing` or `resume_writing` is only reported.
//!
//! Writing: with the buffer empty and no send in flight, `write` first tries a non-blocking
//! `send(2)` (asyncio's fast path), so a write the kernel takes whole never pauses the protocol;
//! whatever is left is buffered and sent by `Send` ops, one at a time.
//!
//! Closing: `connection_lost` is scheduled with `call_soon`; right after it the socket is closed
//! by its [`LoopFd`]: an `Op::Close`, which the driver orders behind every op submitted before
//! it (a cancelled recv or send), so none of them can reach a socket that reuses the number.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use socket2::SockRef;

use super::dispatch::{Dispatcher, Event, TransportCore};
use super::flow_control::WriteBuffer;
use super::loop_fd::LoopFd;
use crate::driver::{Op, OpId, RecvBuf};
use crate::error::Error;
use crate::event_loop::{EventLoop, OpTarget};

/// Writes after the connection is gone are logged from this many on (asyncio's
/// `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
pub(super) const LOST_WRITES_LOG_THRESHOLD: u32 = 5;

/// The transport's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StreamState {
    /// Reading and writing.
    Open,
    /// `close()` called: no more reads; closes once the write buffer is flushed.
    Closing,
    /// Done: the fd is closed and `connection_lost` is scheduled or delivered.
    Closed,
}

/// The read side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadState {
    /// A recv is kept in flight.
    Reading,
    /// `pause_reading()`: no new recv; completed data is held.
    Paused,
    /// EOF seen, or closing: no more reads.
    Stopped,
    /// EOF seen and the connection kept open, then `pause_reading()`: no reads either way,
    /// but `is_reading()` is false until `resume_reading()` (back to `Stopped`), as asyncio's
    /// paused flag.
    PausedAfterEof,
}

/// `write_eof` progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WriteEof {
    /// Not asked for.
    No,
    /// Asked for: `shutdown(SHUT_WR)` once the buffer is flushed.
    Pending,
    /// Shutdown done.
    Done,
}

/// The shared state of a stream transport.
pub(crate) struct StreamCore {
    /// The socket and its loop.
    pub(super) fd: LoopFd,
    /// Lifecycle.
    pub(super) state: Cell<StreamState>,
    /// Read side.
    pub(super) read: Cell<ReadState>,
    /// The persistent recv in flight (until its final completion, also while stopping).
    pub(super) recv_op: Cell<Option<OpId>>,
    /// Data completed while paused (or behind such data), oldest first.
    pub(super) held: RefCell<VecDeque<Vec<u8>>>,
    /// EOF arrived while paused.
    pub(super) held_eof: Cell<bool>,
    /// Bytes accepted by `write` and not yet sent.
    pub(super) write: RefCell<WriteBuffer>,
    /// The send in flight.
    pub(super) send_op: Cell<Option<OpId>>,
    /// `write_eof` progress.
    pub(super) eof: Cell<WriteEof>,
    /// Writes after the connection was lost.
    pub(super) lost_writes: Cell<u32>,
    /// The protocol and the re-entrancy guard around it.
    pub(super) dispatcher: Dispatcher,
    /// `getpeername`/`getsockname` at creation.
    pub(super) peername: Option<socket2::SockAddr>,
    /// The local address.
    pub(super) sockname: Option<socket2::SockAddr>,
    /// Called once, after `connection_lost` was delivered (servers count their connections).
    pub(super) lost_hooks: RefCell<Vec<Box<dyn FnOnce()>>>,
}

/// A stream transport: asyncio's `Transport` for TCP and Unix stream sockets. Cheap to clone;
/// clones refer to the same connection.
#[derive(Clone)]
pub struct Transport {
    /// The shared state.
    pub(crate) core: Rc<StreamCore>,
}

impl StreamCore {
    #[inline]
    pub(super) fn event_loop(&self) -> Option<EventLoop> {
        self.fd.event_loop()
    }

    #[inline]
    pub(super) fn submit(self: &Rc<Self>, op: Op) -> Option<OpId> {
        self.fd.submit(op, self.clone())
    }

    pub(super) fn submit_recv(self: &Rc<Self>) {
        if self.recv_op.get().is_some()
            || self.read.get() != ReadState::Reading
            || self.state.get() != StreamState::Open
        {
            return;
        }
        let id = self.submit(Op::RecvMulti { fd: self.fd.raw() });
        self.recv_op.set(id);
    }

    pub(super) fn submit_send(self: &Rc<Self>) {
        if self.send_op.get().is_some() || self.state.get() == StreamState::Closed {
            return;
        }
        let Some(buf) = self.write.borrow_mut().front_coalesced() else { return };
        let id = self.submit(Op::Send { fd: self.fd.raw(), buf, offset: 0 });
        self.send_op.set(id);
    }

    /// Whether a `write` of `len` bytes goes anywhere: not when empty, nor once closing (then
    /// it is counted as a lost write, logged from the fifth on).
    pub(super) fn accepts_write(&self, len: usize) -> bool {
        if len == 0 {
            return false;
        }
        if self.state.get() != StreamState::Open {
            let lost = self.lost_writes.get() + 1;
            self.lost_writes.set(lost);
            if lost >= LOST_WRITES_LOG_THRESHOLD {
                log::warn!(target: "ringloop", "socket.send() raised exception.");
            }
            return false;
        }
        true
    }

    /// asyncio's fast path: with nothing buffered and no send in flight, `send(2)` at once
    /// (non-blocking). Returns how many bytes are dealt with: sent, or all of them when the
    /// send failed and the transport was force-closed with the error (as asyncio's "Fatal
    /// write error on socket transport"). Writes the kernel takes whole never touch the buffer
    /// and so never pause the protocol (BEHAVIOURS 114).
    pub(super) fn send_now(self: &Rc<Self>, data: &[u8]) -> usize {
        self.send_direct("send", data.len(), |socket| {
            socket.send_with_flags(data, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        })
    }

    /// The fast path of `send_now` and `send_vectored_now`: `send` (of `total` bytes) on the
    /// socket unless something is buffered or in flight; `call` names it in an error.
    pub(super) fn send_direct(
        self: &Rc<Self>,
        call: &str,
        total: usize,
        send: impl FnMut(&SockRef<'_>) -> io::Result<usize>,
    ) -> usize {
        if !self.write.borrow().is_empty() || self.send_op.get().is_some() {
            return 0;
        }
        match send_retrying(&self.fd, send) {
            None => 0,
            Some(Ok(sent)) => sent,
            Some(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => 0,
            Some(Err(err)) => {
                self.force_close(Some(Error::io(format!("{call} on fd {}", self.fd.raw()), err)));
                total
            }
        }
    }

    /// Appends `data` (not empty) to the write buffer, keeps a send in flight, and tells the
    /// protocol to pause when that crossed the high-water mark.
    pub(super) fn queue(self: &Rc<Self>, data: Bytes) {
        let flow = self.write.borrow_mut().push(data);
        self.submit_send();
        self.notify_flow(flow);
    }

    /// `shutdown(SHUT_WR)` as a direct syscall, not an op: it never blocks on a socket, and
    /// io_uring runs `IORING_OP_SHUTDOWN` in an io-wq worker that looks the fd number up only
    /// when it runs — possibly after an `abort()` closed the fd and the number was reused,
    /// which would shut down an unrelated socket. An error here is reported by the next read
    /// or write as well, so it is not acted on.
    pub(super) fn submit_shutdown(self: &Rc<Self>) {
        self.eof.set(WriteEof::Done);
        self.fd.with_fd(|fd| {
            let _ = SockRef::from(&fd).shutdown(std::net::Shutdown::Write);
        });
    }

    /// Stops the persistent recv (`pause_reading`): what it already received still arrives.
    pub(super) fn stop_recv(&self) {
        self.fd.stop(&self.recv_op);
    }

    /// Received bytes to the protocol (`data_received`, or `get_buffer`/`buffer_updated`),
    /// as [`notify`](Self::notify).
    pub(super) fn notify_data(self: &Rc<Self>, data: &[u8]) {
        self.dispatcher.data(data);
        self.report_protocol_failures();
    }

    /// A recv completion: a chunk (`data`), end of stream, the end of a stopped recv
    /// (`ECANCELED`: start another if reading again), or an error. While paused, or while
    /// held data waits for `resume_held`, chunks and EOF are held so that order is kept.
    pub(super) fn on_recv(self: &Rc<Self>, result: io::Result<u32>, data: Option<RecvBuf>) {
        if self.state.get() != StreamState::Open || self.read.get() == ReadState::Stopped {
            return;
        }
        let hold = self.read.get() == ReadState::Paused || !self.held.borrow().is_empty();
        match (result, data) {
            (Ok(0), _) if hold => self.held_eof.set(true),
            (Ok(0), _) => self.on_eof(),
            (Ok(_), Some(data)) if hold => self.held.borrow_mut().push_back(data.to_vec()),
            (Ok(_), Some(data)) => self.notify_data(&data),
            (Ok(n), None) => log::error!("ringloop: a recv of {n} bytes came without them"),
            (Err(err), _) if err.raw_os_error() == Some(libc::ECANCELED) => self.submit_recv(),
            (Err(err), _) => {
                self.force_close(Some(Error::io(format!("recv on fd {}", self.fd.raw()), err)))
            }
        }
    }

    pub(super) fn on_eof(self: &Rc<Self>) {
        self.read.set(ReadState::Stopped);
        self.fd.cancel(&self.recv_op);
        // Closes, through `report_protocol_failures`, once `eof_received` answers false.
        self.notify(Event::Eof);
    }

    pub(super) fn on_send(self: &Rc<Self>, result: io::Result<u32>) {
        if self.state.get() == StreamState::Closed {
            return;
        }
        let sent = match result {
            Ok(sent) => sent as usize,
            Err(err) => {
                let error = Error::io(format!("send on fd {}", self.fd.raw()), err);
                return self.force_close(Some(error));
            }
        };
        let flow = self.write.borrow_mut().consume(sent);
        if !self.write.borrow().is_empty() {
            self.submit_send();
        }
        self.notify_flow(flow);
        if self.state.get() == StreamState::Closed {
            return; // resume_writing aborted the transport
        }
        if self.write.borrow().is_empty() && self.send_op.get().is_none() {
            if self.state.get() == StreamState::Closing {
                self.finish(None);
            } else if self.eof.get() == WriteEof::Pending {
                self.submit_shutdown();
            }
        }
    }

    pub(super) fn close(self: &Rc<Self>) {
        if self.state.get() != StreamState::Open {
            return;
        }
        self.state.set(StreamState::Closing);
        self.read.set(ReadState::Stopped);
        self.fd.cancel(&self.recv_op);
        if self.write.borrow().is_empty() && self.send_op.get().is_none() {
            self.finish(None);
        }
    }

    pub(super) fn force_close(self: &Rc<Self>, error: Option<Error>) {
        if self.state.get() == StreamState::Closed {
            return;
        }
        self.write.borrow_mut().clear();
        self.finish(error);
    }

    /// Enters `Closed`: cancels what is in flight and schedules `connection_lost`, after which
    /// the socket is closed.
    pub(super) fn finish(self: &Rc<Self>, error: Option<Error>) {
        self.state.set(StreamState::Closed);
        self.read.set(ReadState::Stopped);
        self.fd.cancel(&self.recv_op);
        self.fd.cancel(&self.send_op);
        self.held.borrow_mut().clear();
        self.schedule_lost(error);
    }

    pub(super) fn resume_held(self: &Rc<Self>) {
        loop {
            if self.read.get() != ReadState::Reading || self.state.get() != StreamState::Open {
                return;
            }
            let Some(chunk) = self.held.borrow_mut().pop_front() else { break };
            self.notify_data(&chunk);
        }
        if self.held_eof.take() {
            self.on_eof();
        } else {
            self.submit_recv();
        }
    }
}

/// A direct send on a transport's socket (`None` once it is closed), retried on `EINTR`.
#[inline]
pub(super) fn send_retrying<T>(
    fd: &LoopFd,
    mut send: impl FnMut(&SockRef<'_>) -> io::Result<T>,
) -> Option<io::Result<T>> {
    fd.with_fd(|fd| {
        let socket = SockRef::from(&fd);
        loop {
            match send(&socket) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    })
}

impl TransportCore for StreamCore {
    type Event = Event;

    fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    fn event_loop(&self) -> Option<EventLoop> {
        StreamCore::event_loop(self)
    }

    /// A data or EOF callback that failed (panicked; `get_buffer` gave an empty buffer) is a
    /// fatal error for the connection (asyncio's `_fatal_error` for a non-OS exception): it
    /// goes to the exception handler and the transport is force-closed with it (a no-op when
    /// already closed, e.g. for `connection_lost` itself). Then an `eof_received` that
    /// answered "close" — delivered now or, if it met a borrowed protocol, later — closes.
    fn report_protocol_failures(self: &Rc<Self>) {
        let transport = || format!("{:?}", Transport { core: self.clone() });
        if let Some(error) = self.dispatcher.report_failures(&self.fd, transport) {
            self.force_close(Some(error));
        }
        if self.dispatcher.take_close_after_eof() {
            self.close();
        }
    }

    /// Closes the socket through the driver ([`LoopFd::close`]): the recv and send, if still
    /// in flight, are cancelled, and the `Op::Close` is ordered after them, so neither can
    /// reach another socket that reuses the number. Without a loop the fd is closed here.
    fn close_fd(&self) {
        self.fd.close(&[&self.recv_op, &self.send_op]);
    }

    /// The hooks of [`Transport::on_connection_lost`] (servers tracking their connections).
    fn after_lost(&self) {
        for hook in self.lost_hooks.take() {
            hook();
        }
    }
}

impl OpTarget for StreamCore {
    /// A driver completion: the recv's or the send's, told apart by the ids in their slots.
    fn complete(
        self: Rc<Self>,
        id: OpId,
        result: io::Result<u32>,
        more: bool,
        _: Option<Op>,
        data: Option<RecvBuf>,
    ) {
        if self.recv_op.get() == Some(id) {
            if !more {
                self.recv_op.set(None);
            }
            self.on_recv(result, data);
        } else if self.send_op.get() == Some(id) {
            self.send_op.set(None);
            self.on_send(result);
        }
        self.flush_deferred_later();
    }
}
