//! The public face of a datagram transport: asyncio's `DatagramTransport` methods. The state
//! machine behind them is in `datagram.rs`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;
use socket2::SockAddr;

use super::datagram::{DatagramCore, DatagramState};
use super::dispatch::{DatagramEvent, Dispatcher, PlainDatagram, TransportCore};
use super::flow_control::SendQueue;
use super::loop_fd::LoopFd;
use super::ExtraInfo;
use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::DatagramProtocol;

/// A datagram transport: asyncio's `DatagramTransport` for UDP and unix datagram sockets, made
/// by [`EventLoop::create_datagram_endpoint`]. Cheap to clone; clones refer to the same
/// endpoint.
#[derive(Clone)]
pub struct DatagramTransport {
    /// The shared state.
    pub(crate) core: Rc<DatagramCore>,
}

impl DatagramTransport {
    /// Wraps a non-blocking datagram socket; `connection_made` runs at the next iteration,
    /// then receiving starts. `address` is `remote_addr` (connected, or the default
    /// destination with `allow_broadcast`).
    pub(crate) fn start<P: DatagramProtocol + 'static>(
        event_loop: &EventLoop,
        fd: OwnedFd,
        protocol: Rc<RefCell<P>>,
        address: Option<SockAddr>,
    ) -> Result<DatagramTransport> {
        event_loop.check_open()?;
        let socket = socket2::SockRef::from(&fd);
        let (sockname, peername) = (socket.local_addr().ok(), socket.peer_addr().ok());
        let core = Rc::new(DatagramCore {
            fd: LoopFd::new(event_loop, fd),
            sockname,
            peername,
            address,
            state: Cell::new(DatagramState::Open),
            recv_op: Cell::new(None),
            queue: RefCell::new(SendQueue::default()),
            send_op: Cell::new(None),
            lost_writes: Cell::new(0),
            dispatcher: Dispatcher::new(Rc::new(PlainDatagram(protocol))),
        });
        let transport = DatagramTransport { core };
        let starter = transport.clone();
        event_loop.call_soon(move || {
            starter.core.notify(DatagramEvent::Made(starter.clone()));
            starter.core.submit_recv();
            starter.core.flush_deferred_later();
        })?;
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
    /// lost write, logged from the fifth).
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
                return Err(Error::InvalidArgument(format!(
                    "Invalid address: must be None or {}",
                    describe_addr(remote)
                )));
            }
        }
        if core.state.get() != DatagramState::Open {
            core.lost_write();
            return Ok(None);
        }
        if core.peername.is_some() {
            return Ok(Some(None));
        }
        Ok(Some(addr.cloned().or_else(|| core.address.clone())))
    }

    /// Closes the endpoint: receiving stops at once; queued datagrams are sent, then
    /// `connection_lost(None)` is called and the socket closed. Idempotent.
    pub fn close(&self) {
        self.core.close();
    }

    /// Closes at once: queued datagrams are dropped, `connection_lost(None)` follows.
    /// Idempotent.
    pub fn abort(&self) {
        self.core.force_close(None);
    }

    /// True once `close`/`abort` was called or the endpoint failed.
    pub fn is_closing(&self) -> bool {
        self.core.state.get() != DatagramState::Open
    }

    /// The send queue's size: queued bytes plus 8 per datagram (asyncio's estimate).
    pub fn get_write_buffer_size(&self) -> usize {
        self.core.queue.borrow().size()
    }

    /// Sets the water marks, with asyncio's rules (see
    /// [`Transport::set_write_buffer_limits`](crate::Transport::set_write_buffer_limits)).
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        let flow = self.core.queue.borrow_mut().set_limits(high, low)?;
        self.core.notify_flow(flow);
        Ok(())
    }

    /// `(low, high)`.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.core.queue.borrow().limits()
    }

    /// The local address (at creation).
    pub fn sockname(&self) -> Option<SockAddr> {
        self.core.sockname.clone()
    }

    /// The connected peer, if the socket is connected.
    pub fn peername(&self) -> Option<SockAddr> {
        self.core.peername.clone()
    }

    /// The socket's fd while open.
    pub fn socket_fd(&self) -> Option<RawFd> {
        self.core.fd.open_fd()
    }

    /// asyncio's `get_extra_info`: `"peername"`, `"sockname"` or `"socket"`.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        let core = &self.core;
        ExtraInfo::of_socket(name, &core.peername, &core.sockname, &core.fd)
    }

    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P: DatagramProtocol + 'static>(&self, protocol: Rc<RefCell<P>>) {
        self.core.dispatcher.set(Rc::new(PlainDatagram(protocol)));
    }

    /// The protocol, if it is a `P` (and `connection_lost` has not been delivered yet).
    pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
        self.core.dispatcher.get()?.downcast::<RefCell<P>>().ok()
    }
}

/// An address for messages: `ip:port`, a unix path, or the raw family.
pub(crate) fn describe_addr(addr: &SockAddr) -> String {
    if let Some(ip) = addr.as_socket() {
        return ip.to_string();
    }
    if let Some(path) = addr.as_pathname() {
        return format!("{path:?}");
    }
    if let Some(name) = addr.as_abstract_namespace() {
        return format!("abstract {:?}", String::from_utf8_lossy(name));
    }
    format!("<address of family {}>", addr.family())
}

impl fmt::Debug for DatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.core;
        write!(
            f,
            "<DatagramTransport fd={} {:?} write_buffer={}>",
            core.fd.raw(),
            core.state.get(),
            core.queue.borrow().size()
        )
    }
}
