//! The pipe transports (asyncio's `_UnixReadPipeTransport` and `_UnixWritePipeTransport`):
//! what `connect_read_pipe` and `connect_write_pipe` (`crate::pipes`) wrap a pipe, FIFO, socket
//! or character device (a PTY master included) in, on the transport skeleton with a file read
//! side or a file write side.
//!
//! # Read pipe
//! At EOF (a read of 0 bytes) the transport closes: `eof_received` (its answer is ignored, as
//! in asyncio: a read pipe has no write side to keep open), then `connection_lost(None)`. A
//! read error closes it with that error: asyncio's "Fatal read error on pipe transport" goes to
//! the exception handler, except `EIO`, which is what a PTY master reads once its slave side is
//! closed (asyncio logs that one at debug level only).
//!
//! # Write pipe
//! `write_eof`/`close` flush the buffer, then close the pipe (a pipe has no half-close).
//! Noticing the reader going away: a pipe's write end reports `POLLERR` once its last reader
//! is closed, so on a pipe, FIFO or socket a `Poll` for readability is kept in flight (asyncio
//! adds a reader to the write pipe for the same reason); when it fires the transport closes,
//! with the broken-pipe error (`EPIPE`) if data was still buffered, else cleanly
//! (`connection_lost(None)`), as asyncio's `_read_ready` does. A write that meets the closed
//! pipe first closes it with `EPIPE`. asyncio logs a write error at debug level only.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::Bytes;

use super::base::{Life, TransportBase, TransportCore};
use super::read_side::{Got, ReadSide, ReadState};
use super::write_side::{Sink, WriteSide, Writer};
use super::{DynProtocol, ExtraInfo};
use crate::dispatch::Event;
use crate::driver::{Interest, Op, OpId};
use crate::error::{Error, Result};
use crate::event_loop::{Completed, EventLoop, ExceptionContext, OpTarget};
use crate::flow_control::Buffered;

/// The shared state of a read pipe transport.
pub(crate) struct ReadCore {
    /// The skeleton: fd, lifecycle, protocol.
    base: TransportBase<Event<ReadTransport>>,
    /// The pipe's reads.
    read: ReadSide,
}

/// The transport of a read pipe (asyncio's `ReadTransport`, from
/// [`EventLoop::connect_read_pipe`]). Cheap to clone; clones refer to the same pipe.
#[derive(Clone)]
pub struct ReadTransport {
    core: Rc<ReadCore>,
}

impl ReadTransport {
    /// Wraps a pipe checked by `crate::pipes` driving `protocol`: at the next iteration
    /// `connection_made` runs, then the first read is submitted.
    pub(crate) fn start(
        event_loop: &EventLoop,
        pipe: CheckedPipe,
        protocol: Rc<DynProtocol<ReadTransport>>,
    ) -> Result<ReadTransport> {
        let base = TransportBase::new(event_loop, pipe.fd, protocol);
        let read = ReadSide::file(pipe.kind == PipeKind::Fifo);
        let transport = ReadTransport { core: Rc::new(ReadCore { base, read }) };
        transport.core.start(Event::Made(transport.clone()), |core| core.submit_read())?;
        Ok(transport)
    }

    /// Stops reading until [`resume_reading`](Self::resume_reading): no more data reaches the
    /// protocol, and no more is taken from the pipe (at most one read already under way is
    /// held). Does nothing when paused or closed.
    pub fn pause_reading(&self) {
        if self.is_reading() {
            self.core.read.pause(&self.core.base.fd);
        }
    }

    /// Resumes reading: a held read is delivered first. Does nothing unless paused and open.
    pub fn resume_reading(&self) {
        let core = &self.core;
        if !core.base.is_open() || !core.read.resume() {
            return;
        }
        let Some(event_loop) = core.event_loop() else { return };
        let core = core.clone();
        let _ = event_loop.call_soon(move || core.deliver_waiting());
    }

    /// True while open and not paused.
    pub fn is_reading(&self) -> bool {
        self.core.base.is_open() && self.core.read.state() == ReadState::Reading
    }

    /// Closes the transport: reading stops, `connection_lost(None)` follows, then the fd is
    /// closed. Idempotent.
    pub fn close(&self) {
        self.core.close();
    }

    base_transport_methods!(Event<ReadTransport>);

    /// asyncio's `get_extra_info`: `"pipe"` gives the fd while it is open.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        pipe_info(name, &self.core.base.fd)
    }
}

impl ReadCore {
    fn submit_read(self: &Rc<Self>) {
        if self.base.is_open() {
            self.read.submit(&self.base.fd, || self.clone());
        }
    }

    fn on_read(self: &Rc<Self>, got: Got) {
        match got {
            Got::Data(chunk) => {
                self.base.dispatcher.data(&chunk);
                self.read.recycle(chunk);
                self.report_protocol_failures();
            }
            Got::Eof => self.on_eof(),
            Got::Error(err) => self.fatal_error(err),
        }
    }

    /// EOF: closed at once (so `is_closing()` is true inside `eof_received`), then
    /// `eof_received`, then `connection_lost(None)` (or the panic of `eof_received`).
    fn on_eof(self: &Rc<Self>) {
        if self.enter_closed(None) {
            self.base.dispatcher.send(Event::Eof);
            let describe = || self.describe();
            let report = |context| self.base.fd.report(context, describe);
            let error = self.base.dispatcher.report_failures(report);
            self.base.dispatcher.take_close_after_eof();
            self.schedule_lost(error);
        }
    }

    /// asyncio's `_fatal_error(exc, 'Fatal read error on pipe transport')`.
    fn fatal_error(self: &Rc<Self>, err: io::Error) {
        let error = Error::io(format!("read from pipe fd {}", self.base.fd.raw()), err);
        if error.raw_os_error() == Some(libc::EIO) {
            log::debug!(target: "ringloop", "{self:?}: EIO (the PTY's other side is closed)");
        } else {
            let context = ExceptionContext::new("Fatal read error on pipe transport");
            self.base.fd.report(context.with_error(error.clone()), || self.describe());
        }
        self.finish(Some(error));
    }

    fn deliver_waiting(self: &Rc<Self>) {
        while let Some(got) = self.read.next_waiting() {
            self.on_read(got);
            if !self.base.is_open() {
                return;
            }
        }
        self.submit_read();
        self.flush_deferred_later();
    }
}

impl TransportCore for ReadCore {
    type Event = Event<ReadTransport>;

    fn base(&self) -> &TransportBase<Event<ReadTransport>> {
        &self.base
    }

    fn end_sides(&self, _: Option<&Error>) {
        self.read.close(&self.base.fd);
    }

    fn close_fd(&self) {
        self.base.fd.close(&[self.read.op_slot()]);
    }

    /// A read pipe has nothing to flush: closing is finishing.
    fn close(self: &Rc<Self>) {
        self.finish(None);
    }
}

impl OpTarget for ReadCore {
    /// The read's completion (or, on a FIFO, the first poll's).
    fn complete(self: Rc<Self>, done: Completed) {
        if let Some(got) = self.read.on_completion(done) {
            self.on_read(got);
        }
        self.submit_read();
        self.flush_deferred_later();
    }
}

impl fmt::Debug for ReadCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, life, read) = (self.base.fd.raw(), self.base.life(), self.read.state());
        write!(f, "<ReadTransport fd={fd} {life:?} {read:?}>")
    }
}

debug_as_core!(ReadTransport);

/// The shared state of a write pipe transport.
pub(crate) struct WriteCore {
    /// The skeleton: fd, lifecycle, protocol.
    base: TransportBase<Event<WriteTransport>>,
    /// The pipe's writes.
    write: WriteSide,
    /// The poll watching for the reader to go away (pipes, FIFOs and sockets).
    watch_op: Cell<Option<OpId>>,
}

/// The transport of a write pipe (asyncio's `WriteTransport`, from
/// [`EventLoop::connect_write_pipe`]). Cheap to clone; clones refer to the same pipe.
#[derive(Clone)]
pub struct WriteTransport {
    core: Rc<WriteCore>,
}

impl WriteTransport {
    /// Wraps a pipe checked by `crate::pipes` driving `protocol`: at the next iteration
    /// `connection_made` runs, then the watch for the reader going away is submitted (not on
    /// a character device: a tty is readable when it has input, which says nothing about a
    /// reader).
    pub(crate) fn start(
        event_loop: &EventLoop,
        pipe: CheckedPipe,
        protocol: Rc<DynProtocol<WriteTransport>>,
    ) -> Result<WriteTransport> {
        let base = TransportBase::new(event_loop, pipe.fd, protocol);
        let core = WriteCore { base, write: WriteSide::new(Sink::File), watch_op: Cell::new(None) };
        let transport = WriteTransport { core: Rc::new(core) };
        transport.core.start(Event::Made(transport.clone()), move |core| {
            if pipe.kind != PipeKind::CharDevice {
                core.submit_watch();
            }
        })?;
        Ok(transport)
    }

    /// Writes `data`; never blocks. With nothing buffered it is offered to the pipe at once;
    /// what the pipe does not take is copied into the buffer and written in order
    /// (`pause_writing` when the buffer passes the high-water mark). Once closing or closed
    /// the data is dropped (and, once more than five were, logged). Empty `data` does
    /// nothing. A write error closes the transport with that error.
    pub fn write(&self, data: &[u8]) {
        if let Some(sent) = self.core.write_now(data) {
            if sent < data.len() {
                self.core.queue(Bytes::copy_from_slice(&data[sent..]));
            }
        }
    }

    /// [`write`](Self::write) without a copy.
    pub fn write_bytes(&self, data: Bytes) {
        if let Some(sent) = self.core.write_now(&data) {
            if sent < data.len() {
                self.core.queue(data.slice(sent..));
            }
        }
    }

    /// Writes each buffer in order (asyncio's `writelines`).
    pub fn writelines<I, B>(&self, buffers: I)
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        for buffer in buffers {
            self.write(buffer.as_ref());
        }
    }

    /// Closes the pipe once the buffer is flushed: `connection_lost(None)` then (a pipe has no
    /// half-close). Later writes are dropped. Idempotent.
    pub fn write_eof(&self) {
        self.core.close();
    }

    /// True: `write_eof` closes the pipe after the flush.
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// As [`write_eof`](Self::write_eof) (asyncio's `close` of a write pipe). Idempotent.
    pub fn close(&self) {
        self.core.close();
    }

    base_transport_methods!(Event<WriteTransport>);
    write_transport_methods!(write);

    /// asyncio's `get_extra_info`: `"pipe"` gives the fd while it is open.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        pipe_info(name, &self.core.base.fd)
    }
}

impl WriteCore {
    /// The start of a write: `None` if nothing more is to be done with `data` (empty, dropped
    /// as a lost write, or the direct write failed and closed the transport), else how many
    /// bytes the direct write took (0 when something is buffered or in flight).
    fn write_now(self: &Rc<Self>, data: &[u8]) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        if !self.base.is_open() {
            self.base.lost_write("write: the pipe is closed or closing; the data is dropped");
            return None;
        }
        match self.write.try_now(&self.base.fd, data) {
            Ok(n) => Some(n),
            Err(err) => {
                self.fatal_error(err);
                None
            }
        }
    }

    fn submit_watch(self: &Rc<Self>) {
        if self.watch_op.get().is_none() && !self.base.is_closed() {
            let op = Op::Poll { fd: self.base.fd.raw(), interest: Interest::READ };
            self.watch_op.set(self.base.fd.submit(op, self.clone()));
        }
    }

    fn on_written(self: &Rc<Self>, result: io::Result<u32>, op: Option<Op>) {
        if self.base.is_closed() {
            return;
        }
        match self.write.on_completion(result, op) {
            Ok(flow) => {
                self.submit_write();
                self.notify_flow(flow);
                self.finish_if_flushed();
            }
            Err(err) => self.fatal_error(err),
        }
    }

    /// The watch fired: the pipe's reader is gone (or the watch failed). As asyncio's
    /// `_read_ready`: a broken-pipe error if data was still to be written, else a clean close.
    fn on_reader_gone(self: &Rc<Self>, result: io::Result<u32>) {
        if self.base.is_closed() {
            return;
        }
        let fd = self.base.fd.raw();
        let error = match result {
            Ok(_) if self.write.is_idle() => None,
            Ok(_) => Some(Error::io(
                format!("write pipe fd {fd}: the reading end was closed"),
                io::Error::from_raw_os_error(libc::EPIPE),
            )),
            Err(err) => Some(Error::io(format!("watching write pipe fd {fd}"), err)),
        };
        self.finish(error);
    }

    /// In `Closing` with nothing left to write: close.
    fn finish_if_flushed(self: &Rc<Self>) {
        if self.base.life() == Life::Closing && self.write.is_idle() {
            self.finish(None);
        }
    }

    /// asyncio's `_fatal_error(exc, 'Fatal write error on pipe transport')`: an OS error is
    /// logged at debug level only (asyncio does the same), and the transport closes with it.
    /// The write that failed counts as lost.
    fn fatal_error(self: &Rc<Self>, err: io::Error) {
        let error = Error::io(format!("write to pipe fd {}", self.base.fd.raw()), err);
        log::debug!(target: "ringloop", "{self:?}: Fatal write error on pipe transport: {error}");
        self.base.lost_write("write: the pipe is closed or closing; the data is dropped");
        self.finish(Some(error));
    }
}

impl TransportCore for WriteCore {
    type Event = Event<WriteTransport>;

    fn base(&self) -> &TransportBase<Event<WriteTransport>> {
        &self.base
    }

    fn end_sides(&self, _: Option<&Error>) {
        self.base.fd.cancel(self.write.op_slot());
        self.base.fd.cancel(&self.watch_op);
        self.write.clear();
    }

    fn close_fd(&self) {
        self.base.fd.close(&[self.write.op_slot(), &self.watch_op]);
    }

    /// `write_eof`/`close`: no new writes; closes once the buffer is flushed.
    fn close(self: &Rc<Self>) {
        if self.base.start_closing() {
            self.finish_if_flushed();
        }
    }
}

impl Writer for WriteCore {
    fn write_side(&self) -> &WriteSide {
        &self.write
    }
}

impl OpTarget for WriteCore {
    /// The write's or the watch's completion, told apart by their ids.
    fn complete(self: Rc<Self>, done: Completed) {
        let Completed { id, result, op, .. } = done;
        if self.write.owns(id) {
            self.on_written(result, op);
        } else if self.watch_op.get() == Some(id) {
            self.watch_op.set(None);
            self.on_reader_gone(result);
        }
        self.flush_deferred_later();
    }
}

impl fmt::Debug for WriteCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, life, len) = (self.base.fd.raw(), self.base.life(), self.write.len());
        write!(f, "<WriteTransport fd={fd} {life:?} write_buffer={len}>")
    }
}

debug_as_core!(WriteTransport);

/// A pipe transport's `get_extra_info`: `"pipe"` gives the fd while it is open.
fn pipe_info(name: &str, fd: &crate::event_loop::LoopFd) -> Option<ExtraInfo> {
    match name {
        "pipe" => fd.open_fd().map(ExtraInfo::Fd),
        _ => None,
    }
}

/// A pipe `crate::pipes` checked and made non-blocking, ready for a pipe transport.
pub(crate) struct CheckedPipe {
    /// The pipe.
    pub(crate) fd: OwnedFd,
    /// What kind of file it is.
    pub(crate) kind: PipeKind,
}

/// What kind of file a pipe transport was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PipeKind {
    /// A pipe or FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character device (a tty, a PTY, `/dev/null` ...).
    CharDevice,
}
