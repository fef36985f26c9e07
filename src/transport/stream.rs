//! The stream transport (TCP and Unix stream sockets): asyncio's socket transport, on the
//! transport skeleton (`base.rs`) with a socket read side and a socket write side, identical
//! on both backends.
//!
//! Reading: one persistent `Op::RecvMulti` delivers every chunk while reading; the transport
//! owns no read buffer (a chunk is the driver's and goes to `data_received` as is). Writing:
//! the fast-path `send(2)` (or, on io_uring while the loop runs, a small write batched into
//! the iteration's `io_uring_enter`: see `write_side.rs`), then the buffer and one `Op::Send`
//! at a time. `write_eof`
//! shuts the socket down for writing once the buffer is flushed, with a direct `shutdown(2)`:
//! it never blocks on a socket, and as an op it would run in an io-wq worker that looks the fd
//! number up late. A data or EOF callback that panics is a fatal error: reported to the
//! exception handler, then the transport is force-closed with [`Error::Panic`]
//! (`connection_lost` still follows); a panic in `connection_made`, `pause_writing` or
//! `resume_writing` is only reported. `eof_received` answering false closes the transport;
//! answering true keeps it half-open.

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;

use bytes::Bytes;
use socket2::{SockAddr, SockRef};

use super::base::{Life, TransportBase, TransportCore};
use super::handle::{ByteStream, Transport};
use super::read_side::{Got, ReadSide, ReadState};
use super::write_side::{Sink, WriteSide, Writer, BATCH_COPY_MAX};
use super::DynProtocol;
use super::ExtraInfo;
use super::SocketNames;
use crate::dispatch::Event;
use crate::driver::Op;
use crate::error::{Error, Result, RuntimeKind};
use crate::event_loop::{Completed, EventLoop, LoopFd, OpTarget};
use crate::flow_control::Buffered;
use crate::sendfile::{SendFileHost, SendFileSide, Transfer, TransferFuture};

/// Logged (past a few) for writes after `close` or after the connection was lost (asyncio:
/// "socket.send() raised exception.").
const LOST_WRITE: &str =
    "send: the transport is closing or its connection is lost; the data is dropped";

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
    /// Its generation (see `handle.rs`): one more each time it is handed over.
    generation: Cell<u32>,
    /// `getpeername` and `getsockname` at creation.
    names: SocketNames,
}

impl Transport {
    /// Wraps a connected stream socket (every caller checked `SOCK_STREAM`: an accept, a
    /// connect, or `prepare_stream_socket`) and schedules `connection_made`, then reading.
    pub(crate) fn start(
        event_loop: &EventLoop,
        fd: OwnedFd,
        protocol: Rc<DynProtocol>,
    ) -> Result<Transport> {
        event_loop.check_open()?;
        let socket = SockRef::from(&fd);
        let names = SocketNames::of(&socket);
        if names.is_inet() {
            let _ = socket.set_nodelay(true);
        }
        let core = Rc::new(StreamCore {
            base: TransportBase::new(event_loop, fd, protocol),
            read: ReadSide::socket(),
            write: WriteSide::new(Sink::Socket),
            sendfile: SendFileSide::default(),
            eof: Cell::new(WriteEof::No),
            generation: Cell::new(0),
            names,
        });
        let transport = Transport::new(core.clone());
        core.start(Event::Made(transport.clone()), |core| core.submit_recv())?;
        Ok(transport)
    }
}

impl ByteStream for StreamCore {
    fn write(self: Rc<Self>, data: &[u8]) -> Result<()> {
        if !self.accepts_write(data.len())? {
            return Ok(());
        }
        let batched = self.write.batches(&self.base.fd, data.len());
        if !(batched && self.batch_borrowed(&[data], data.len())) {
            let sent = self.send_now(data.len(), |fd| self.write.try_now(fd, data));
            if sent < data.len() {
                self.queue(Bytes::copy_from_slice(&data[sent..]));
            }
        }
        Ok(())
    }

    fn write_bytes(self: Rc<Self>, data: Bytes) -> Result<()> {
        if !self.accepts_write(data.len())? {
            return Ok(());
        }
        if self.write.batches(&self.base.fd, data.len()) {
            self.batch(data);
        } else {
            let sent = self.send_now(data.len(), |fd| self.write.try_now(fd, &data));
            if sent < data.len() {
                self.queue(data.slice(sent..));
            }
        }
        Ok(())
    }

    fn writelines(self: Rc<Self>, buffers: &[&[u8]]) -> Result<()> {
        let total = buffers.iter().map(|b| b.len()).sum();
        if !self.accepts_write(total)? {
            return Ok(());
        }
        if self.write.batches(&self.base.fd, total) && self.batch_borrowed(buffers, total) {
            return Ok(());
        }
        let mut skip = self.send_now(total, |fd| self.write.try_now_vectored(fd, buffers));
        let mut flow = None;
        for buffer in buffers {
            if skip >= buffer.len() {
                skip -= buffer.len();
                continue;
            }
            flow = flow.or(self.write.push(Bytes::copy_from_slice(&buffer[skip..])));
            skip = 0;
        }
        self.submit_write();
        self.notify_flow(flow);
        Ok(())
    }

    fn write_eof(self: Rc<Self>) {
        if self.eof.get() != WriteEof::No || !self.base.is_open() {
            return;
        }
        self.eof.set(WriteEof::Pending);
        if self.is_flushed() {
            self.shutdown_write();
        }
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(self: Rc<Self>) {
        TransportCore::close(&self);
    }

    fn abort(self: Rc<Self>) {
        self.finish(None);
    }

    fn is_closing(&self) -> bool {
        !self.base.is_open()
    }

    fn protocol(&self) -> Option<Rc<dyn Any>> {
        self.base.dispatcher.get()
    }

    fn set_protocol(&self, protocol: Rc<DynProtocol>) {
        self.base.dispatcher.set(protocol);
    }

    fn set_write_buffer_limits(
        self: Rc<Self>,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<()> {
        let flow = self.write.set_limits(high, low)?;
        self.notify_flow(flow);
        Ok(())
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        self.write.limits()
    }

    fn write_buffer_size(&self) -> usize {
        self.write.size()
    }

    fn peername(&self) -> Option<SockAddr> {
        self.names.peer()
    }

    fn sockname(&self) -> Option<SockAddr> {
        self.names.sock()
    }

    fn socket_fd(&self) -> Option<RawFd> {
        self.base.fd.open_fd()
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        ExtraInfo::of_socket(name, &self.names, &self.base.fd)
    }

    fn pause_reading(self: Rc<Self>) {
        if self.base.is_open() {
            self.read.pause(&self.base.fd);
        }
    }

    fn resume_reading(self: Rc<Self>) {
        if !self.read.resume() || !self.base.is_open() {
            return;
        }
        let Some(event_loop) = self.event_loop() else { return };
        let _ = event_loop.call_soon(move || self.deliver_waiting());
    }

    fn is_reading(&self) -> bool {
        let paused = matches!(self.read.state(), ReadState::Paused | ReadState::PausedAfterEof);
        !paused && self.base.is_open()
    }

    fn on_connection_lost(&self, hook: Box<dyn FnOnce()>) {
        self.base.on_lost(hook);
    }

    fn generation(&self) -> u32 {
        self.generation.get()
    }

    fn hand_over(&self) -> Result<u32> {
        if !self.base.is_open() || self.eof.get() != WriteEof::No {
            let why = "start_tls: the transport is closing (or its write side was shut down)";
            return Err(Error::runtime(RuntimeKind::TransportClosing, why));
        }
        let next = self.generation.get() + 1;
        self.generation.set(next);
        Ok(next)
    }

    fn start_sendfile(self: Rc<Self>, transfer: Rc<Transfer>) -> Result<TransferFuture> {
        self.begin_sendfile(transfer)
    }
}

impl StreamCore {
    /// Whether a write of `len` bytes goes anywhere: `Error::Runtime` after `write_eof` or
    /// during a `sendfile`; not when empty, nor once closing (then it is counted as a lost
    /// write).
    fn accepts_write(&self, len: usize) -> Result<bool> {
        if self.eof.get() != WriteEof::No {
            return Err(Error::runtime(
                RuntimeKind::WriteAfterEof,
                "Cannot call write() after write_eof()",
            ));
        }
        if self.sendfile.is_active() {
            return Err(Error::runtime(
                RuntimeKind::SendfileInProgress,
                "unable to write; sendfile is in progress",
            ));
        }
        if len > 0 && !self.base.is_open() {
            self.base.lost_write(LOST_WRITE);
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
        send: impl FnOnce(&LoopFd) -> io::Result<usize>,
    ) -> usize {
        match send(&self.base.fd) {
            Ok(sent) => sent,
            Err(err) => {
                self.finish(Some(self.io_error("send", err)));
                total
            }
        }
    }

    /// Adds a write of `buffers` (`total` bytes, not empty), which the write side
    /// [`batches`](WriteSide::batches), to the loop's batch if a borrowed write can be, and
    /// says whether it was: a copy of up to [`BATCH_COPY_MAX`] bytes
    /// ([`WriteSide::batch_copy`]); past that only one buffer lying in the bytes being
    /// delivered (an echo, a proxy's forward), holding their receive buffer instead of a copy
    /// (`LoopFd::hold_delivered`).
    fn batch_borrowed(self: &Rc<Self>, buffers: &[&[u8]], total: usize) -> bool {
        if total <= BATCH_COPY_MAX {
            self.batch_copy(buffers, total);
            return true;
        }
        let held = match buffers {
            [data] => self.base.fd.hold_delivered(data),
            _ => None,
        };
        held.map(|held| self.batch(held)).is_some()
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
                // Only a write of more than `BATCH_COPY_MAX` bytes holds the slot (a smaller one
                // is copied: `for_batch`), and it must lie in the chunk: a chunk no bigger is
                // not lent, which spares every small message the lending's bookkeeping.
                let lent = (chunk.len() > BATCH_COPY_MAX).then(|| chunk.lend()).flatten();
                match lent {
                    Some(lent) => {
                        self.base.fd.while_delivering(lent, || self.base.dispatcher.data(&chunk));
                    }
                    None => self.base.dispatcher.data(&chunk),
                }
                drop(chunk); // a ring buffer goes back to the driver at once, unless a send holds it
                self.report_protocol_failures();
            }
            Got::Eof => {
                self.read.close(&self.base.fd);
                // Closes, through `report_protocol_failures`, once `eof_received` answers false.
                self.notify(Event::Eof);
            }
            Got::Error(err) => self.finish(Some(self.io_error("recv", err))),
        }
    }

    fn on_sent(self: &Rc<Self>, result: io::Result<u32>, op: Option<Op>) {
        if self.base.is_closed() {
            return;
        }
        let flow = match self.write.on_completion(result, op) {
            Ok(flow) => flow,
            Err(err) => return self.finish(Some(self.io_error("send", err))),
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

    fn end_sides(&self, error: Option<&Error>) {
        self.write.send_batched_now(&self.base.fd);
        self.read.close(&self.base.fd);
        self.base.fd.cancel(self.write.op_slot());
        self.write.clear();
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

    fn socket(&self) -> &LoopFd {
        &self.base.fd
    }

    fn writes_idle(&self) -> bool {
        self.write.is_idle()
    }

    fn write_copied(self: &Rc<Self>, bytes: Bytes) {
        self.queue(bytes);
    }

    fn is_closed(&self) -> bool {
        self.base.is_closed()
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
        if self.read.owns(done.id) {
            if let Some(got) = self.read.on_completion(done) {
                self.on_read(got);
            }
            self.submit_recv();
        } else if self.write.owns(done.id) {
            self.on_sent(done.result, done.op);
        } else if self.sendfile.owns(done.id) {
            self.on_chunk(done.result, done.op);
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
