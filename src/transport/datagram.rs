//! The datagram transport (UDP and unix datagram sockets): asyncio's
//! `_SelectorDatagramTransport`, on the transport skeleton (`base.rs`), identical on both
//! backends.
//!
//! Receiving: one persistent `RecvMsgMulti` is kept in flight while open (on io_uring a
//! multishot `RECVMSG` on the driver's datagram buffer ring: one SQE for many datagrams, no
//! buffer held per endpoint). Each completion is one whole datagram and its sender, handed to
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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;
use socket2::SockAddr;

use super::base::{Life, TransportBase, TransportCore};
use super::write_side::fast_path;
use super::{ExtraInfo, SocketNames};
use crate::dispatch::{DatagramEvent, ErasedProtocol};
use crate::driver::dgram::DATAGRAM_CAPACITY;
use crate::driver::{Op, OpId, RecvBuf, SendMsgBuf};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::{Completed, EventLoop, OpTarget};
use crate::flow_control::{Buffered, SendQueue};

/// The shared state of a datagram transport.
pub(crate) struct DatagramCore {
    /// The skeleton: fd, lifecycle, protocol.
    base: TransportBase<DatagramEvent<DatagramTransport>>,
    /// The persistent receive in flight.
    recv_op: Cell<Option<OpId>>,
    /// Datagrams waiting to be sent.
    queue: RefCell<SendQueue>,
    /// The send in flight (of the queue's front datagram).
    send_op: Cell<Option<OpId>>,
    /// The local address and the connected peer (if connected), at creation.
    names: SocketNames,
    /// `remote_addr`: the only destination `sendto` accepts, and the default one (set without
    /// a connect with `allow_broadcast`).
    address: Option<SockAddr>,
}

/// A datagram transport: asyncio's `DatagramTransport` for UDP and unix datagram sockets, made
/// by [`EventLoop::create_datagram_endpoint`]. Cheap to clone; clones refer to the same
/// endpoint.
#[derive(Clone)]
pub struct DatagramTransport {
    /// The shared state.
    core: Rc<DatagramCore>,
}

impl DatagramTransport {
    /// Wraps a non-blocking datagram socket; `connection_made` runs at the next iteration,
    /// then receiving starts. `address` is `remote_addr` (connected, or the default
    /// destination with `allow_broadcast`).
    pub(crate) fn start(
        event_loop: &EventLoop,
        fd: OwnedFd,
        protocol: Rc<dyn ErasedProtocol<DatagramEvent<DatagramTransport>>>,
        address: Option<SockAddr>,
    ) -> Result<DatagramTransport> {
        event_loop.check_open()?;
        let names = SocketNames::of(&socket2::SockRef::from(&fd));
        let core = Rc::new(DatagramCore {
            base: TransportBase::new(event_loop, fd, protocol),
            names,
            address,
            recv_op: Cell::new(None),
            queue: RefCell::new(SendQueue::default()),
            send_op: Cell::new(None),
        });
        let transport = DatagramTransport { core };
        let made = DatagramEvent::Made(transport.clone());
        transport.core.start(made, |core| core.submit_recv())?;
        Ok(transport)
    }

    /// Sends `data` as one datagram to `addr`; never blocks (asyncio's `sendto`).
    ///
    /// On an endpoint made with `remote_addr`, `addr` may be omitted (`None`) or must equal
    /// that address. `data` may be empty (an empty datagram is sent). With nothing queued the
    /// datagram goes to the kernel at once; if the kernel would block it is copied and queued,
    /// sent in order later (`pause_writing` past the high-water mark). A send that fails
    /// (`EMSGSIZE` for a datagram longer than the protocol allows, `ECONNREFUSED`, ...) is
    /// reported to `error_received`, not here. After `close()` nothing is sent (counted as a
    /// lost write, logged once more than five were).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an `addr` other than the endpoint's `remote_addr`.
    pub fn sendto(&self, data: &[u8], addr: Option<&SockAddr>) -> Result<()> {
        let Some(to) = self.destination(addr)? else { return Ok(()) };
        if !self.core.send_now(data, to.as_ref()) {
            self.core.queue(Bytes::copy_from_slice(data), to);
        }
        Ok(())
    }

    /// [`sendto`](Self::sendto) without a copy when the datagram has to be queued.
    pub fn sendto_bytes(&self, data: Bytes, addr: Option<&SockAddr>) -> Result<()> {
        let Some(to) = self.destination(addr)? else { return Ok(()) };
        if !self.core.send_now(&data, to.as_ref()) {
            self.core.queue(data, to);
        }
        Ok(())
    }

    /// Checks `addr` against `remote_addr`; `Ok(None)` when the transport is closing (the
    /// write is counted as lost), else where to send (`Some(None)`: the connected peer).
    fn destination(&self, addr: Option<&SockAddr>) -> Result<Option<Option<SockAddr>>> {
        let core = &self.core;
        if let (Some(given), Some(remote)) = (addr, &core.address) {
            if given != remote {
                return Err(Error::invalid_argument(
                    ArgumentKind::Conflicting,
                    format!(
                        "sendto: this transport is connected to {}: send to no address (`None`) or \
                         to that one, not {}",
                        describe_addr(remote),
                        describe_addr(given)
                    ),
                ));
            }
        }
        if !core.base.is_open() {
            core.base.lost_write("sendto: the transport is closing; datagrams are dropped");
            return Ok(None);
        }
        if core.names.has_peer() {
            return Ok(Some(None));
        }
        Ok(Some(addr.cloned().or_else(|| core.address.clone())))
    }

    /// Closes the endpoint: receiving stops at once; queued datagrams are sent, then
    /// `connection_lost(None)` is called and the socket closed. Idempotent.
    pub fn close(&self) {
        self.core.close();
    }

    base_transport_methods!(DatagramEvent<DatagramTransport>);
    write_transport_methods!(queue);
    socket_methods!();
}

impl DatagramCore {
    /// Keeps one `RecvMsgMulti` in flight while open.
    fn submit_recv(self: &Rc<Self>) {
        if self.recv_op.get().is_none() && self.base.is_open() {
            let op = Op::RecvMsgMulti { fd: self.base.fd.raw() };
            self.recv_op.set(self.base.fd.submit(op, self.clone()));
        }
    }

    /// Sends the queue's front datagram unless a send is in flight.
    fn submit_send(self: &Rc<Self>) {
        if self.send_op.get().is_some() || self.base.is_closed() {
            return;
        }
        let msg = match self.queue.borrow().front() {
            Some((data, to)) => SendMsgBuf::new(data.clone(), to.as_ref()),
            None => return,
        };
        let op = Op::SendMsg { fd: self.base.fd.raw(), msg };
        self.send_op.set(self.base.fd.submit(op, self.clone()));
    }

    /// asyncio's fast path: with nothing queued and no send in flight, `sendto(2)` at once.
    /// True when the datagram is dealt with (sent, or its error reported to `error_received`);
    /// false when it must be queued (the kernel would block, or others wait before it).
    fn send_now(self: &Rc<Self>, data: &[u8], to: Option<&SockAddr>) -> bool {
        if !self.queue.borrow().is_empty() || self.send_op.get().is_some() {
            return false;
        }
        let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        let result = fast_path(&self.base.fd, |fd| {
            // An empty datagram sent is sent.
            crate::sys::send_to(fd.as_raw_fd(), data, flags, to).map(|sent| sent.max(1))
        });
        match result {
            Ok(sent) => sent > 0,
            Err(err) => {
                self.notify(DatagramEvent::Error(self.error("sendto", err)));
                true
            }
        }
    }

    fn error(&self, call: &str, err: io::Error) -> Error {
        Error::io(format!("{call} on fd {}", self.base.fd.raw()), err)
    }

    /// Queues a datagram, keeps a send in flight, pauses the protocol past the high mark.
    fn queue(self: &Rc<Self>, data: Bytes, to: Option<SockAddr>) {
        let flow = self.queue.borrow_mut().push(data, to);
        self.submit_send();
        self.notify_flow(flow);
    }

    /// One datagram (or receive error) of the `RecvMsgMulti`; a new one is submitted when it
    /// ended (`more` false) with an error that is not fatal.
    fn on_recv(self: &Rc<Self>, result: io::Result<u32>, data: Option<RecvBuf>, more: bool) {
        if !self.base.is_open() {
            return;
        }
        match result {
            Ok(_) => {
                if let Some(datagram) = data {
                    self.base.dispatcher.data((&datagram, datagram.source().cloned()));
                    // Dropped here: a ring buffer goes back to the driver's ring at once.
                    drop(datagram);
                    self.report_protocol_failures();
                }
            }
            Err(err) if err.raw_os_error() == Some(libc::EMSGSIZE) => {
                let why = format!(
                    "recvfrom on fd {}: a datagram longer than the {DATAGRAM_CAPACITY}-byte \
                     receive buffer was dropped",
                    self.base.fd.raw(),
                );
                self.notify(DatagramEvent::Error(Error::io(why, err)));
            }
            Err(err) if is_fatal(&err) => return self.finish(Some(self.error("recvfrom", err))),
            Err(err) => self.notify(DatagramEvent::Error(self.error("recvfrom", err))),
        }
        if !more {
            self.submit_recv();
        }
    }

    fn on_send(self: &Rc<Self>, result: io::Result<u32>) {
        if self.base.is_closed() {
            return;
        }
        let flow = self.queue.borrow_mut().pop();
        if let Err(err) = result {
            self.notify(DatagramEvent::Error(self.error("sendto", err)));
            if self.base.is_closed() {
                return;
            }
        }
        self.submit_send();
        self.notify_flow(flow);
        let idle = self.queue.borrow().is_empty() && self.send_op.get().is_none();
        if idle && self.base.life() == Life::Closing {
            self.finish(None);
        }
    }
}

impl TransportCore for DatagramCore {
    type Event = DatagramEvent<DatagramTransport>;

    fn base(&self) -> &TransportBase<DatagramEvent<DatagramTransport>> {
        &self.base
    }

    fn end_sides(&self, _: Option<&Error>) {
        self.base.fd.cancel(&self.recv_op);
        self.base.fd.cancel(&self.send_op);
        self.queue.borrow_mut().clear();
    }

    fn close_fd(&self) {
        self.base.fd.close(&[&self.recv_op, &self.send_op]);
    }

    /// Receiving stops at once; the queue is flushed, then the endpoint finishes.
    fn close(self: &Rc<Self>) {
        if self.base.start_closing() {
            self.base.fd.cancel(&self.recv_op);
            if self.queue.borrow().is_empty() && self.send_op.get().is_none() {
                self.finish(None);
            }
        }
    }
}

impl OpTarget for DatagramCore {
    /// A driver completion: the receive's or the send's, told apart by their ids.
    fn complete(self: Rc<Self>, done: Completed) {
        let more = done.more();
        let Completed { id, result, data, .. } = done;
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

/// An address as messages show it: `127.0.0.1:8000`, `[::1]:8000`, `/run/app.sock`, an
/// abstract unix name as `@name` (as `ss` prints it), or the raw family.
pub(crate) fn describe_addr(addr: &SockAddr) -> String {
    if let Some(ip) = addr.as_socket() {
        return ip.to_string();
    }
    if let Some(path) = addr.as_pathname() {
        return path.display().to_string();
    }
    if let Some(name) = addr.as_abstract_namespace() {
        return format!("@{}", name.escape_ascii());
    }
    if addr.is_unix() {
        return "an unnamed unix socket".to_string();
    }
    format!("<address of family {}>", addr.family())
}

impl fmt::Debug for DatagramCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, life, size) = (self.base.fd.raw(), self.base.life(), self.queue.size());
        write!(f, "<DatagramTransport fd={fd} {life:?} write_buffer={size}>")
    }
}

debug_as_core!(DatagramTransport);
