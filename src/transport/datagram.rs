//! The datagram transport (UDP and unix datagram sockets): asyncio's
//! `_SelectorDatagramTransport`, driven by the driver's `RecvMsgMulti`/`SendMsg` completions,
//! identical on both backends.
//!
//! # States
//! ```text
//!  Open ──close()──► Closing (no receives; flushing the send queue) ──flushed──► Closed
//!   │                                                                              ▲
//!   └──abort() / fatal error ─────────────────────────────────────────────────────┘
//! ```
//! One persistent `RecvMsgMulti` is kept in flight while open (on io_uring a multishot
//! `RECVMSG` on the driver's datagram buffer ring: one SQE for many datagrams, no buffer held
//! per endpoint). Each completion is one whole datagram and its sender, handed to
//! `datagram_received` straight from the driver's buffer. A datagram longer than
//! [`DATAGRAM_CAPACITY`] (the kernel flags `MSG_TRUNC`; the driver reports `EMSGSIZE`) goes to
//! `error_received` and is dropped, never delivered cut short. Receive errors (`ECONNREFUSED`
//! after an ICMP port-unreachable on a connected endpoint, ...) end the op: they go to
//! `error_received` and a new one is submitted; only errors that say the socket itself is
//! unusable (`EBADF`, `ENOTSOCK`, ...) are fatal.
//!
//! Sending: with the queue empty and no send in flight, `sendto` first tries a non-blocking
//! `sendto(2)` (asyncio's fast path); on `EAGAIN` the datagram (copied) and its address are
//! queued and sent in order by `SendMsg` ops, one at a time. A failed send (`EMSGSIZE`,
//! `ECONNREFUSED`, ...) goes to `error_received`: datagrams are unreliable, the endpoint stays.
//! The queue's size counts each datagram's bytes plus 8 (asyncio's per-datagram header
//! estimate) against asyncio's water marks.
//!
//! Closing: as the stream transport, `connection_lost` is scheduled with `call_soon`, then the
//! socket is closed by its [`LoopFd`]: an `Op::Close` ordered behind every op submitted before
//! it.

// The module split: this file is the state machine and the completions; the public methods
// are in `datagram_api.rs`; protocol calls go through `dispatch.rs`, as for every transport.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use bytes::Bytes;
use socket2::SockAddr;

use super::dispatch::{DatagramEvent, Dispatcher, TransportCore};
use super::flow_control::SendQueue;
use super::loop_fd::LoopFd;
use super::stream::{send_retrying, LOST_WRITES_LOG_THRESHOLD};
use crate::driver::dgram::DATAGRAM_CAPACITY;
use crate::driver::{Op, OpId, RecvBuf, SendMsgBuf};
use crate::error::Error;
use crate::event_loop::{EventLoop, OpTarget};

/// The transport's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DatagramState {
    /// Receiving and sending.
    Open,
    /// `close()` called: no more receives; closes once the send queue is flushed.
    Closing,
    /// Done: `connection_lost` is scheduled or delivered, the fd closed or closing.
    Closed,
}

/// The shared state of a datagram transport.
pub(crate) struct DatagramCore {
    /// The socket and its loop.
    pub(super) fd: LoopFd,
    /// Lifecycle.
    pub(super) state: Cell<DatagramState>,
    /// The persistent receive in flight.
    pub(super) recv_op: Cell<Option<OpId>>,
    /// Datagrams waiting to be sent.
    pub(super) queue: RefCell<SendQueue>,
    /// The send in flight (of the queue's front datagram).
    pub(super) send_op: Cell<Option<OpId>>,
    /// `sendto` calls after close.
    pub(super) lost_writes: Cell<u32>,
    /// The protocol and the re-entrancy guard around it.
    pub(super) dispatcher: Dispatcher<DatagramEvent>,
    /// The local address at creation.
    pub(super) sockname: Option<SockAddr>,
    /// The connected peer (`getpeername`), if the socket is connected.
    pub(super) peername: Option<SockAddr>,
    /// `remote_addr`: the only destination `sendto` accepts, and the default one (set without
    /// a connect with `allow_broadcast`).
    pub(super) address: Option<SockAddr>,
}

impl DatagramCore {
    #[inline]
    pub(super) fn event_loop(&self) -> Option<EventLoop> {
        self.fd.event_loop()
    }

    #[inline]
    fn submit(self: &Rc<Self>, op: Op) -> Option<OpId> {
        self.fd.submit(op, self.clone())
    }

    /// Keeps one `RecvMsgMulti` in flight while open.
    pub(super) fn submit_recv(self: &Rc<Self>) {
        if self.recv_op.get().is_some() || self.state.get() != DatagramState::Open {
            return;
        }
        let id = self.submit(Op::RecvMsgMulti { fd: self.fd.raw() });
        self.recv_op.set(id);
    }

    /// Sends the queue's front datagram unless a send is in flight.
    fn submit_send(self: &Rc<Self>) {
        if self.send_op.get().is_some() || self.state.get() == DatagramState::Closed {
            return;
        }
        let msg = match self.queue.borrow().front() {
            Some((data, to)) => SendMsgBuf::new(data.clone(), to.as_ref()),
            None => return,
        };
        let id = self.submit(Op::SendMsg { fd: self.fd.raw(), msg });
        self.send_op.set(id);
    }

    /// Counts a `sendto` after close (logged from the fifth on, as asyncio).
    pub(super) fn lost_write(&self) {
        let lost = self.lost_writes.get() + 1;
        self.lost_writes.set(lost);
        if lost >= LOST_WRITES_LOG_THRESHOLD {
            log::warn!(target: "ringloop", "socket.sendto() raised exception.");
        }
    }

    /// asyncio's fast path: with nothing queued and no send in flight, `sendto(2)` at once.
    /// True when the datagram is dealt with (sent, or its error reported to `error_received`);
    /// false when it must be queued (the kernel would block, or others wait before it).
    pub(super) fn send_now(self: &Rc<Self>, data: &[u8], to: Option<&SockAddr>) -> bool {
        if !self.queue.borrow().is_empty() || self.send_op.get().is_some() {
            return false;
        }
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        let result = send_retrying(&self.fd, |socket| match to {
            Some(to) => socket.send_to_with_flags(data, to, flags),
            None => socket.send_with_flags(data, flags),
        });
        match result {
            None | Some(Ok(_)) => true,
            Some(Err(err)) if err.kind() == io::ErrorKind::WouldBlock => false,
            Some(Err(err)) => {
                self.notify(DatagramEvent::Error(self.send_error(err)));
                true
            }
        }
    }

    fn send_error(&self, err: io::Error) -> Error {
        Error::io(format!("sendto on fd {}", self.fd.raw()), err)
    }

    /// Queues a datagram, keeps a send in flight, pauses the protocol past the high mark.
    pub(super) fn queue(self: &Rc<Self>, data: Bytes, to: Option<SockAddr>) {
        let flow = self.queue.borrow_mut().push(data, to);
        self.submit_send();
        self.notify_flow(flow);
    }

    /// One datagram (or receive error) of the `RecvMsgMulti`; a new one is submitted when it
    /// ended (`more` false) with an error that is not fatal.
    fn on_recv(self: &Rc<Self>, result: io::Result<u32>, data: Option<RecvBuf>, more: bool) {
        if self.state.get() != DatagramState::Open {
            return;
        }
        match result {
            Ok(_) => {
                if let Some(datagram) = data {
                    self.dispatcher.datagram(&datagram, datagram.source().cloned());
                    // Dropped here: a ring buffer goes back to the driver's ring at once.
                    drop(datagram);
                    self.report_protocol_failures();
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::EMSGSIZE) => {
                let why = format!(
                    "recvfrom on fd {}: a datagram longer than the {DATAGRAM_CAPACITY}-byte \
                     receive buffer was dropped",
                    self.fd.raw(),
                );
                self.notify(DatagramEvent::Error(Error::io(why, err)));
            }
            Err(err) if is_fatal(&err) => {
                let error = Error::io(format!("recvfrom on fd {}", self.fd.raw()), err);
                return self.force_close(Some(error));
            }
            Err(err) => {
                let error = Error::io(format!("recvfrom on fd {}", self.fd.raw()), err);
                self.notify(DatagramEvent::Error(error));
            }
        }
        if !more {
            self.submit_recv();
        }
    }

    fn on_send(self: &Rc<Self>, result: io::Result<u32>) {
        if self.state.get() == DatagramState::Closed {
            return;
        }
        let flow = self.queue.borrow_mut().pop();
        if let Err(err) = result {
            self.notify(DatagramEvent::Error(self.send_error(err)));
            if self.state.get() == DatagramState::Closed {
                return;
            }
        }
        self.submit_send();
        self.notify_flow(flow);
        let idle = self.queue.borrow().is_empty() && self.send_op.get().is_none();
        if idle && self.state.get() == DatagramState::Closing {
            self.finish(None);
        }
    }

    pub(super) fn close(self: &Rc<Self>) {
        if self.state.get() != DatagramState::Open {
            return;
        }
        self.state.set(DatagramState::Closing);
        self.fd.cancel(&self.recv_op);
        if self.queue.borrow().is_empty() && self.send_op.get().is_none() {
            self.finish(None);
        }
    }

    pub(super) fn force_close(self: &Rc<Self>, error: Option<Error>) {
        if self.state.get() == DatagramState::Closed {
            return;
        }
        self.queue.borrow_mut().clear();
        self.finish(error);
    }

    /// Enters `Closed`: cancels what is in flight, schedules `connection_lost`, then the close.
    fn finish(self: &Rc<Self>, error: Option<Error>) {
        self.state.set(DatagramState::Closed);
        self.fd.cancel(&self.recv_op);
        self.fd.cancel(&self.send_op);
        self.schedule_lost(error);
    }
}

impl TransportCore for DatagramCore {
    type Event = DatagramEvent;

    fn dispatcher(&self) -> &Dispatcher<DatagramEvent> {
        &self.dispatcher
    }

    fn event_loop(&self) -> Option<EventLoop> {
        DatagramCore::event_loop(self)
    }

    /// A `datagram_received` or `error_received` that panicked is fatal for the endpoint:
    /// reported to the exception handler, then the transport is force-closed with it (a panic
    /// in `connection_made`, `pause_writing` or `resume_writing` is only reported).
    fn report_protocol_failures(self: &Rc<Self>) {
        let transport = || format!("<DatagramTransport fd={}>", self.fd.raw());
        if let Some(error) = self.dispatcher.report_failures(&self.fd, transport) {
            self.force_close(Some(error));
        }
    }

    /// Closes the socket through the driver ([`LoopFd::close`]): what is still in flight is
    /// cancelled, and the close ordered after it.
    fn close_fd(&self) {
        self.fd.close(&[&self.recv_op, &self.send_op]);
    }
}

impl OpTarget for DatagramCore {
    /// A driver completion: the receive's or the send's, told apart by their slots' ids.
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
            self.on_recv(result, data, more);
        } else if self.send_op.get() == Some(id) {
            self.send_op.set(None);
            self.on_send(result);
        }
        self.flush_deferred_later();
    }
}

/// Receive errors that say the socket itself is unusable: receiving again would fail forever.
fn is_fatal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL | libc::ENOTCONN)
    )
}
