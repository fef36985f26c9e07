//! The public face of a stream transport: asyncio's `Transport` methods, `get_extra_info`,
//! and `connect_accepted_socket`. The state machine behind them is in `stream.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;

use super::dispatch::{adapt, Dispatcher, Event, StreamProtocol, TransportCore};
use super::flow_control::WriteBuffer;
use super::loop_fd::LoopFd;
use super::stream::{ReadState, StreamCore, StreamState, Transport, WriteEof};
use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::AnyProtocol;

impl Transport {
    /// Wraps a connected socket and schedules `connection_made`, then reading.
    pub(crate) fn start(
        event_loop: &EventLoop,
        fd: OwnedFd,
        protocol: Rc<StreamProtocol>,
    ) -> Result<Transport> {
        event_loop.check_open()?;
        let socket = socket2::SockRef::from(&fd);
        if let Ok(socket2::Type::STREAM) = socket.r#type() {
            if socket.local_addr().is_ok_and(|a| a.is_ipv4() || a.is_ipv6()) {
                let _ = socket.set_nodelay(true);
            }
        }
        let (peername, sockname) = (socket.peer_addr().ok(), socket.local_addr().ok());
        let core = Rc::new(StreamCore {
            fd: LoopFd::new(event_loop, fd),
            peername,
            sockname,
            state: Cell::new(StreamState::Open),
            read: Cell::new(ReadState::Reading),
            recv_op: Cell::new(None),
            held: RefCell::new(VecDeque::new()),
            held_eof: Cell::new(false),
            write: RefCell::new(WriteBuffer::default()),
            send_op: Cell::new(None),
            eof: Cell::new(WriteEof::No),
            lost_writes: Cell::new(0),
            dispatcher: Dispatcher::new(protocol),
            lost_hooks: RefCell::new(Vec::new()),
        });
        let transport = Transport { core };
        let starter = transport.clone();
        event_loop.call_soon(move || {
            starter.core.notify(Event::Made(starter.clone()));
            starter.core.submit_recv();
            starter.core.flush_deferred_later();
        })?;
        Ok(transport)
    }

    /// Sends `data`; never blocks. With nothing buffered it is offered to the kernel at once;
    /// what the kernel does not take is copied into the write buffer and sent in order
    /// (`pause_writing` when the buffer passes the high-water mark). After `close()` or once
    /// the connection is lost the data is dropped (and, from the fifth such write on, logged).
    /// Empty `data` does nothing. `Error::Runtime` after `write_eof()`.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        if !self.core.accepts_write(data.len()) {
            return Ok(());
        }
        let sent = self.core.send_now(data);
        if sent < data.len() {
            self.core.queue(Bytes::copy_from_slice(&data[sent..]));
        }
        Ok(())
    }

    /// [`write`](Self::write) without a copy.
    pub fn write_bytes(&self, data: Bytes) -> Result<()> {
        self.check_writable()?;
        if !self.core.accepts_write(data.len()) {
            return Ok(());
        }
        let sent = self.core.send_now(&data);
        if sent < data.len() {
            self.core.queue(data.slice(sent..));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.core.eof.get() != WriteEof::No {
            return Err(Error::Runtime("Cannot call write() after write_eof()".into()));
        }
        Ok(())
    }

    /// Writes the buffers in order, as one write (asyncio's `writelines`): with nothing
    /// buffered they go to the kernel in one vectored `sendmsg(2)`; what it does not take —
    /// the rest of a buffer it took part of, then the following buffers — is queued in order,
    /// and `pause_writing` comes once, after all of it is queued (BEHAVIOURS 117).
    pub fn writelines<I, B>(&self, buffers: I) -> Result<()>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.check_writable()?;
        let buffers: Vec<B> = buffers.into_iter().filter(|b| !b.as_ref().is_empty()).collect();
        let total = buffers.iter().map(|b| b.as_ref().len()).sum();
        if !self.core.accepts_write(total) {
            return Ok(());
        }
        let mut skip = self.core.send_vectored_now(&buffers, total);
        let mut flow = None;
        for buffer in &buffers {
            let buffer = buffer.as_ref();
            if skip >= buffer.len() {
                skip -= buffer.len();
                continue;
            }
            let rest = Bytes::copy_from_slice(&buffer[skip..]);
            flow = flow.or(self.core.write.borrow_mut().push(rest));
            skip = 0;
        }
        self.core.submit_send();
        self.core.notify_flow(flow);
        Ok(())
    }

    /// Closes the write side after the buffer is flushed (`shutdown(SHUT_WR)`); reading goes
    /// on. Idempotent; does nothing once closing.
    pub fn write_eof(&self) {
        let core = &self.core;
        if core.eof.get() != WriteEof::No || core.state.get() != StreamState::Open {
            return;
        }
        core.eof.set(WriteEof::Pending);
        if core.write.borrow().is_empty() && core.send_op.get().is_none() {
            core.submit_shutdown();
        }
    }

    /// True: stream sockets support `write_eof`.
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// Closes the transport: reading stops at once; buffered data is flushed, then
    /// `connection_lost(None)` is called and the socket closed. Idempotent.
    pub fn close(&self) {
        self.core.close();
    }

    /// Closes at once: the write buffer is dropped, `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.core.force_close(None);
    }

    /// True once `close`/`abort` was called or the connection was lost.
    pub fn is_closing(&self) -> bool {
        self.core.state.get() != StreamState::Open
    }

    /// Stops delivering data until [`resume_reading`](Self::resume_reading); data that
    /// arrives meanwhile is held, in order. Idempotent.
    pub fn pause_reading(&self) {
        let core = &self.core;
        if core.state.get() != StreamState::Open {
            return;
        }
        match core.read.get() {
            ReadState::Reading => {
                core.read.set(ReadState::Paused);
                core.stop_recv();
            }
            // Open after EOF: the protocol kept the connection half-open.
            ReadState::Stopped => core.read.set(ReadState::PausedAfterEof),
            ReadState::Paused | ReadState::PausedAfterEof => {}
        }
    }

    /// Resumes delivery: held data first, then new reads. Idempotent.
    pub fn resume_reading(&self) {
        let core = &self.core;
        if core.read.get() == ReadState::PausedAfterEof {
            return core.read.set(ReadState::Stopped);
        }
        if core.read.get() != ReadState::Paused || core.state.get() != StreamState::Open {
            return;
        }
        core.read.set(ReadState::Reading);
        let Some(event_loop) = core.event_loop() else { return };
        let core = core.clone();
        let _ = event_loop.call_soon(move || core.resume_held());
    }

    /// True unless reading is paused or the transport is closing (asyncio's `is_reading`);
    /// still true after an EOF the protocol kept open, though nothing more can arrive.
    pub fn is_reading(&self) -> bool {
        let paused = matches!(self.core.read.get(), ReadState::Paused | ReadState::PausedAfterEof);
        !paused && self.core.state.get() == StreamState::Open
    }

    /// Sets the water marks (asyncio's rules: `high` alone gives `low = high/4`, `low` alone
    /// gives `high = 4*low`, none gives 64 KiB / 16 KiB; `high < low` is an error).
    /// `pause_writing` follows at once if the buffer is already above the new `high`.
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        let flow = self.core.write.borrow_mut().set_limits(high, low)?;
        self.core.notify_flow(flow);
        Ok(())
    }

    /// `(low, high)`.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.core.write.borrow().limits()
    }

    /// Bytes queued and not yet sent.
    pub fn get_write_buffer_size(&self) -> usize {
        self.core.write.borrow().len()
    }

    /// The peer's address.
    pub fn peername(&self) -> Option<socket2::SockAddr> {
        self.core.peername.clone()
    }

    /// The local address.
    pub fn sockname(&self) -> Option<socket2::SockAddr> {
        self.core.sockname.clone()
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

    /// Switches to another protocol, a [`Protocol`](crate::Protocol) or a
    /// [`BufferedProtocol`](crate::BufferedProtocol) (either way round); later events go to
    /// it, and the next bytes received are delivered as the new protocol's kind wants them.
    pub fn set_protocol<K: 'static, P: AnyProtocol<K>>(&self, protocol: Rc<RefCell<P>>) {
        self.core.dispatcher.set(adapt(protocol));
    }

    /// Calls `hook` once the connection is lost and its socket closed (at once, through
    /// `call_soon`, if that already happened). For servers tracking their connections.
    pub(crate) fn on_connection_lost(&self, hook: impl FnOnce() + 'static) {
        let core = &self.core;
        if core.state.get() == StreamState::Closed && !core.fd.is_open() {
            if let Some(event_loop) = core.event_loop() {
                let _ = event_loop.call_soon(hook);
            }
            return;
        }
        core.lost_hooks.borrow_mut().push(Box::new(hook));
    }

    /// The protocol, if it is a `P` (and the connection is not lost yet).
    pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
        self.core.dispatcher.get()?.downcast::<RefCell<P>>().ok()
    }
}

/// Buffers per `sendmsg(2)` at most (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

impl StreamCore {
    /// [`send_now`](StreamCore::send_now) for several buffers: one non-blocking vectored
    /// `sendmsg(2)` (of the first [`MAX_IOVECS`]) when nothing is buffered or in flight.
    /// `total` is the buffers' length. Returns how many bytes are dealt with: sent, or all of
    /// them when the send failed and the transport was force-closed.
    fn send_vectored_now<B: AsRef<[u8]>>(self: &Rc<Self>, buffers: &[B], total: usize) -> usize {
        self.send_direct("sendmsg", total, |socket| {
            let slices: Vec<IoSlice<'_>> =
                buffers.iter().take(MAX_IOVECS).map(|b| IoSlice::new(b.as_ref())).collect();
            socket.send_vectored_with_flags(&slices, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
        })
    }
}

/// A value of [`Transport::get_extra_info`] (and of the other transports' `get_extra_info`).
#[derive(Clone, Debug)]
pub enum ExtraInfo {
    /// A socket address (`peername`, `sockname`).
    Address(socket2::SockAddr),
    /// A file descriptor (`socket`, `pipe`).
    Fd(RawFd),
}

impl ExtraInfo {
    /// A socket transport's `get_extra_info(name)`: `"peername"` and `"sockname"` (the
    /// addresses at creation), `"socket"` (the fd while open).
    pub(crate) fn of_socket(
        name: &str,
        peername: &Option<socket2::SockAddr>,
        sockname: &Option<socket2::SockAddr>,
        fd: &LoopFd,
    ) -> Option<ExtraInfo> {
        match name {
            "peername" => peername.clone().map(ExtraInfo::Address),
            "sockname" => sockname.clone().map(ExtraInfo::Address),
            "socket" => fd.open_fd().map(ExtraInfo::Fd),
            _ => None,
        }
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.core;
        write!(
            f,
            "<Transport fd={} {:?} read={:?} write_buffer={}>",
            core.fd.raw(),
            core.state.get(),
            core.read.get(),
            core.write.borrow().len()
        )
    }
}

impl EventLoop {
    /// Wraps an already connected stream socket in a transport driving `protocol_factory()`'s
    /// protocol (asyncio's `connect_accepted_socket`). `connection_made` runs at the next
    /// iteration; the returned `Rc` is the protocol the transport drives. The protocol is a
    /// [`Protocol`](crate::Protocol) or a [`BufferedProtocol`](crate::BufferedProtocol).
    pub async fn connect_accepted_socket<K, P, F>(
        &self,
        protocol_factory: F,
        socket: OwnedFd,
    ) -> Result<(Transport, Rc<RefCell<P>>)>
    where
        K: 'static,
        P: AnyProtocol<K>,
        F: FnOnce() -> P,
    {
        let kind = socket2::SockRef::from(&socket).r#type().map_err(|e| {
            Error::io(format!("connect_accepted_socket(fd {})", socket.as_raw_fd()), e)
        })?;
        if kind != socket2::Type::STREAM {
            return Err(Error::InvalidArgument(format!(
                "A Stream Socket was expected, got fd {} of type {kind:?}",
                socket.as_raw_fd()
            )));
        }
        socket2::SockRef::from(&socket)
            .set_nonblocking(true)
            .map_err(|e| Error::io("connect_accepted_socket: set_nonblocking", e))?;
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let transport = Transport::start(self, socket, adapt(protocol.clone()))?;
        Ok((transport, protocol))
    }
}
