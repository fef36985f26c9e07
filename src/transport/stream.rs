//! The stream transport (TCP and Unix stream sockets): asyncio's socket transport, on the
//! transport skeleton (`base.rs`) with a socket read side and a socket write side, identical
//! on both backends.
//!
//! Reading: one persistent `Op::RecvMulti` delivers every chunk while reading; the transport
//! owns no read buffer (a chunk is the driver's and goes to `data_received` as is). Writing:
//! the fast-path `send(2)`, then the buffer and one `Op::Send` at a time. `write_eof`
//! shuts the socket down for writing once the buffer is flushed, with a direct `shutdown(2)`:
//! it never blocks on a socket, and as an op it would run in an io-wq worker that looks the fd
//! number up late. A data or EOF callback that panics is a fatal error: reported to the
//! exception handler, then the transport is force-closed with [`Error::Panic`]
//! (`connection_lost` still follows); a panic in `connection_made`, `pause_writing` or
//! `resume_writing` is only reported. `eof_received` answering false closes the transport;
//! answering true keeps it half-open.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;
use socket2::{SockAddr, SockRef};

use super::base::{Life, TransportBase, TransportCore};
use super::dispatch::{adapt, DynProtocol, Event};
use super::flow_control::Buffered;
use super::read_side::{Got, ReadSide, ReadState};
use super::write_side::{Sink, WriteSide, Writer};
use super::ExtraInfo;
use crate::error::{Error, Result};
use crate::event_loop::{Completed, EventLoop, OpTarget};
use crate::protocol::AnyProtocol;
use crate::sendfile::{SendFileHost, SendFileSide, Transfer, TransferFuture};

/// `write_eof` progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteEof {
    /// Not asked for.
    No,
    /// Asked for: `shutdown(SHUT_WR)` once the buffer is flushed.
    Pending,
    /// Shutdown done.
    Done,
}

/// The shared state of a stream transport.
pub(crate) struct StreamCore {
    /// The skeleton: fd, lifecycle, protocol.
    base: TransportBase<Event<Transport>>,
    /// The socket's receive.
    read: ReadSide,
    /// The socket's sends.
    write: WriteSide,
    /// `EventLoop::sendfile`'s transfer, while one runs.
    sendfile: SendFileSide,
    /// `write_eof` progress.
    eof: Cell<WriteEof>,
    /// `getpeername` at creation.
    peername: Option<SockAddr>,
    /// `getsockname` at creation.
    sockname: Option<SockAddr>,
}

/// A stream transport: asyncio's `Transport` for TCP and Unix stream sockets. Cheap to clone;
/// clones refer to the same connection.
#[derive(Clone)]
pub struct Transport {
    /// The shared state.
    core: Rc<StreamCore>,
}

impl Transport {
    /// Wraps a connected socket and schedules `connection_made`, then reading.
    pub(crate) fn start(
        event_loop: &EventLoop,
        fd: OwnedFd,
        protocol: Rc<DynProtocol>,
    ) -> Result<Transport> {
        event_loop.check_open()?;
        let socket = SockRef::from(&fd);
        if let Ok(socket2::Type::STREAM) = socket.r#type() {
            if socket.local_addr().is_ok_and(|a| a.is_ipv4() || a.is_ipv6()) {
                let _ = socket.set_nodelay(true);
            }
        }
        let (peername, sockname) = (socket.peer_addr().ok(), socket.local_addr().ok());
        let core = Rc::new(StreamCore {
            base: TransportBase::new(event_loop, fd, protocol),
            read: ReadSide::socket(),
            write: WriteSide::new(Sink::Socket),
            sendfile: SendFileSide::default(),
            eof: Cell::new(WriteEof::No),
            peername,
            sockname,
        });
        let transport = Transport { core };
        transport.core.start(Event::Made(transport.clone()), |core| core.submit_recv())?;
        Ok(transport)
    }

    /// Sends `data`; never blocks. With nothing buffered it is offered to the kernel at once;
    /// what the kernel does not take is copied into the write buffer and sent in order
    /// (`pause_writing` when the buffer passes the high-water mark). After `close()` or once
    /// the connection is lost the data is dropped (and, once more than five were, logged).
    /// Empty `data` does nothing. `Error::Runtime` after `write_eof()`.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        if self.core.accepts_write(data.len())? {
            let sent = self.core.send_now(data.len(), |fd| self.core.write.try_now(fd, data));
            if sent < data.len() {
                self.core.queue(Bytes::copy_from_slice(&data[sent..]));
            }
        }
        Ok(())
    }

    /// [`write`](Self::write) without a copy.
    pub fn write_bytes(&self, data: Bytes) -> Result<()> {
        if self.core.accepts_write(data.len())? {
            let sent = self.core.send_now(data.len(), |fd| self.core.write.try_now(fd, &data));
            if sent < data.len() {
                self.core.queue(data.slice(sent..));
            }
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
        let buffers: Vec<B> = buffers.into_iter().filter(|b| !b.as_ref().is_empty()).collect();
        let total = buffers.iter().map(|b| b.as_ref().len()).sum();
        if !self.core.accepts_write(total)? {
            return Ok(());
        }
        let core = &self.core;
        let mut skip = core.send_now(total, |fd| core.write.try_now_vectored(fd, &buffers));
        let mut flow = None;
        for buffer in &buffers {
            let buffer = buffer.as_ref();
            if skip >= buffer.len() {
                skip -= buffer.len();
                continue;
            }
            flow = flow.or(core.write.push(Bytes::copy_from_slice(&buffer[skip..])));
            skip = 0;
        }
        core.submit_write();
        core.notify_flow(flow);
        Ok(())
    }

    /// Closes the write side after the buffer is flushed (`shutdown(SHUT_WR)`); reading goes
    /// on. Idempotent; does nothing once closing.
    pub fn write_eof(&self) {
        let core = &self.core;
        if core.eof.get() != WriteEof::No || !core.base.is_open() {
            return;
        }
        core.eof.set(WriteEof::Pending);
        if core.is_flushed() {
            core.shutdown_write();
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

    base_transport_methods!();
    write_buffer_methods!(write);
    socket_methods!();

    /// Stops delivering data until [`resume_reading`](Self::resume_reading); data that
    /// arrives meanwhile is held, in order. Idempotent.
    pub fn pause_reading(&self) {
        if self.core.base.is_open() {
            self.core.read.pause(&self.core.base.fd);
        }
    }

    /// Resumes delivery: held data first, then new reads. Idempotent.
    pub fn resume_reading(&self) {
        let core = &self.core;
        if !core.read.resume() || !core.base.is_open() {
            return;
        }
        let Some(event_loop) = core.event_loop() else { return };
        let core = core.clone();
        let _ = event_loop.call_soon(move || core.deliver_waiting());
    }

    /// True unless reading is paused or the transport is closing (asyncio's `is_reading`);
    /// still true after an EOF the protocol kept open, though nothing more can arrive.
    pub fn is_reading(&self) -> bool {
        let paused =
            matches!(self.core.read.state(), ReadState::Paused | ReadState::PausedAfterEof);
        !paused && self.core.base.is_open()
    }

    /// Switches to another protocol, a [`Protocol`](crate::Protocol) or a
    /// [`BufferedProtocol`](crate::BufferedProtocol) (either way round); later events go to
    /// it, and the next bytes received are delivered as the new protocol's kind wants them.
    pub fn set_protocol<K: 'static, P: AnyProtocol<K>>(&self, protocol: Rc<RefCell<P>>) {
        self.core.base.dispatcher.set(adapt(protocol));
    }

    /// Calls `hook` once the connection is lost and its socket handed to the driver to close
    /// (at the next iteration, if that already happened). For servers tracking connections.
    pub(crate) fn on_connection_lost(&self, hook: impl FnOnce() + 'static) {
        self.core.base.on_lost(hook);
    }

    /// Runs `transfer` on this transport once its buffer is flushed (`EventLoop::sendfile`).
    pub(crate) fn start_sendfile(&self, transfer: Rc<Transfer>) -> Result<TransferFuture> {
        self.core.begin_sendfile(transfer)
    }
}

impl StreamCore {
    /// Whether a write of `len` bytes goes anywhere: `Error::Runtime` after `write_eof`;
    /// not when empty, nor once closing (then it is counted as a lost write).
    fn accepts_write(&self, len: usize) -> Result<bool> {
        if self.eof.get() != WriteEof::No {
            return Err(Error::Runtime("Cannot call write() after write_eof()".into()));
        }
        if self.sendfile.is_active() {
            return Err(Error::Runtime("unable to write; sendfile is in progress".into()));
        }
        if len > 0 && !self.base.is_open() {
            self.base.lost_write("socket.send() raised exception.");
            return Ok(false);
        }
        Ok(len > 0)
    }

    /// The fast path (`send`, the write side's `try_now`), for `total` bytes: how many are
    /// dealt with — sent, or all of them when the send failed and the transport was
    /// force-closed with the error (asyncio's "Fatal write error on socket transport").
    fn send_now(
        self: &Rc<Self>,
        total: usize,
        send: impl FnOnce(&super::loop_fd::LoopFd) -> io::Result<usize>,
    ) -> usize {
        match send(&self.base.fd) {
            Ok(sent) => sent,
            Err(err) => {
                self.force_close(Some(self.io_error("send", err)));
                total
            }
        }
    }

    fn submit_recv(self: &Rc<Self>) {
        if self.base.is_open() {
            self.read.submit(&self.base.fd, || self.clone());
        }
    }

    /// `shutdown(SHUT_WR)`, directly (see the module docs). An error here is reported by the
    /// next read or write as well, so it is not acted on.
    fn shutdown_write(&self) {
        self.eof.set(WriteEof::Done);
        self.base.fd.with_fd(|fd| {
            let _ = SockRef::from(&fd).shutdown(std::net::Shutdown::Write);
        });
    }

    /// What a receive came to: bytes for the protocol, end of stream, or a fatal error.
    fn on_read(self: &Rc<Self>, got: Got) {
        match got {
            Got::Data(chunk) => {
                self.base.dispatcher.data(&chunk);
                drop(chunk); // a ring buffer goes back to the driver at once
                self.report_protocol_failures();
            }
            Got::Eof => {
                self.read.close(&self.base.fd);
                // Closes, through `report_protocol_failures`, once `eof_received` answers false.
                self.notify(Event::Eof);
            }
            Got::Error(err) => self.force_close(Some(self.io_error("recv", err))),
        }
    }

    fn on_sent(self: &Rc<Self>, result: io::Result<u32>) {
        if self.base.is_closed() {
            return;
        }
        let flow = match self.write.on_completion(result) {
            Ok(flow) => flow,
            Err(err) => return self.force_close(Some(self.io_error("send", err))),
        };
        self.submit_write();
        self.notify_flow(flow);
        if self.base.is_closed() || !self.write.is_idle() {
            return; // resume_writing aborted the transport, or more to send
        }
        if self.sendfile.is_active() {
            self.advance_sendfile();
        } else {
            self.on_flushed();
        }
    }

    /// True with nothing buffered, no send in flight and no `sendfile` running.
    fn is_flushed(&self) -> bool {
        self.write.is_idle() && !self.sendfile.is_active()
    }

    /// Delivers what was held while paused, in order, then reads again.
    fn deliver_waiting(self: &Rc<Self>) {
        while let Some(got) = self.read.next_waiting() {
            self.on_read(got);
            if !self.base.is_open() {
                return;
            }
        }
        self.submit_recv();
    }

    fn io_error(&self, call: &str, err: io::Error) -> Error {
        Error::io(format!("{call} on fd {}", self.base.fd.raw()), err)
    }
}

impl TransportCore for StreamCore {
    type Event = Event<Transport>;

    fn base(&self) -> &TransportBase<Event<Transport>> {
        &self.base
    }

    fn cancel_ops(&self, error: Option<&Error>) {
        self.read.close(&self.base.fd);
        self.base.fd.cancel(self.write.op_slot());
        self.sendfile.abort(|slot| self.base.fd.cancel(slot), self.base.fd.raw(), error);
    }

    fn close_fd(&self) {
        let in_flight = [self.read.op_slot(), self.write.op_slot(), self.sendfile.op_slot()];
        self.base.fd.close(&in_flight);
    }

    /// Reading stops at once; the buffer is flushed (and a `sendfile` runs to its end), then
    /// the transport finishes.
    fn close(self: &Rc<Self>) {
        if self.base.start_closing() {
            self.read.close(&self.base.fd);
            if self.is_flushed() {
                self.finish(None);
            }
        }
    }

    fn drop_buffered(&self) {
        self.write.clear();
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Writer for StreamCore {
    fn write_side(&self) -> &WriteSide {
        &self.write
    }
}

impl SendFileHost for StreamCore {
    fn sendfile_side(&self) -> &SendFileSide {
        &self.sendfile
    }

    /// `close()` finishes; a pending `write_eof` shuts the socket down for writing.
    fn on_flushed(self: &Rc<Self>) {
        if self.base.life() == Life::Closing {
            self.finish(None);
        } else if self.eof.get() == WriteEof::Pending {
            self.shutdown_write();
        }
    }
}

impl OpTarget for StreamCore {
    /// A driver completion: the receive's or the send's, told apart by their ids.
    fn complete(self: Rc<Self>, done: Completed) {
        let Completed { id, result, more, op, data } = done;
        if self.read.owns(id) {
            if let Some(got) = self.read.on_completion(result, more, op, data) {
                self.on_read(got);
            }
            self.submit_recv();
        } else if self.write.owns(id) {
            self.on_sent(result);
        } else if self.sendfile.owns(id) {
            self.on_chunk(result, op);
        }
        self.flush_deferred_later();
    }
}

impl fmt::Debug for StreamCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, life, read) = (self.base.fd.raw(), self.base.life(), self.read.state());
        write!(f, "<Transport fd={fd} {life:?} read={read:?} write_buffer={}>", self.write.len())
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.core, f)
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
        let fd = socket.as_raw_fd();
        let kind = SockRef::from(&socket)
            .r#type()
            .map_err(|e| Error::io(format!("connect_accepted_socket(fd {fd})"), e))?;
        if kind != socket2::Type::STREAM {
            return Err(Error::InvalidArgument(format!(
                "A Stream Socket was expected, got fd {fd} of type {kind:?}"
            )));
        }
        SockRef::from(&socket)
            .set_nonblocking(true)
            .map_err(|e| Error::io("connect_accepted_socket: set_nonblocking", e))?;
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let transport = Transport::start(self, socket, adapt(protocol.clone()))?;
        Ok((transport, protocol))
    }
}
