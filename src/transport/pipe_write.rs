//! The write pipe transport (asyncio's `_UnixWritePipeTransport`): `connect_write_pipe` on a
//! pipe, FIFO, socket or character device, identical on both backends.
//!
//! # States
//! ```text
//!  Open ──write_eof() / close()──► Closing (flushing the buffer) ──flushed──► Closed
//!   │                                                                          ▲
//!   └──abort() / write error / reader gone ───────────────────────────────────┘
//! ```
//! In `Closed`, `connection_lost` is scheduled (then the fd is closed); it is called once.
//!
//! Writing: with the buffer empty and no write in flight, `write` first tries a non-blocking
//! `write(2)` (asyncio's fast path); the rest is buffered and written by `Op::Write`s, one at
//! a time, in order, with `pause_writing`/`resume_writing` at the water marks.
//!
//! Noticing the reader going away: a pipe's write end reports `POLLERR` once its last reader
//! is closed, so on a pipe, FIFO or socket a `Poll` for readability is kept in flight (asyncio
//! adds a reader to the write pipe for the same reason). When it fires the transport closes
//! with the broken-pipe error (`EPIPE`), buffer or not. A write that meets the closed pipe
//! first closes it with that same error (`EPIPE`; `SIGPIPE` is ignored in Rust programs).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::Bytes;

use super::dispatch::{Base, Dispatcher, Event, TransportCore};
use super::flow_control::WriteBuffer;
use super::loop_fd::LoopFd;
use super::pipe::{self, PipeKind};
use super::ExtraInfo;
use crate::driver::{Interest, Op, OpId, RecvBuf};
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, OpTarget};
use crate::protocol::BaseProtocol;

/// Writes after the pipe is gone are logged from this many on (asyncio's
/// `LOG_THRESHOLD_FOR_CONNLOST_WRITES`).
const LOST_WRITES_LOG_THRESHOLD: u32 = 5;

/// The transport's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteState {
    /// Writing.
    Open,
    /// `write_eof()`/`close()`: no new writes; closes once the buffer is flushed.
    Closing,
    /// Done: `connection_lost` is scheduled or delivered.
    Closed,
}

/// The shared state of a write pipe transport.
pub(crate) struct WriteCore {
    /// The pipe and its loop.
    pipe: LoopFd,
    /// Lifecycle.
    state: Cell<WriteState>,
    /// Bytes accepted by `write` and not yet written, with the water marks.
    write: RefCell<WriteBuffer>,
    /// The write in flight.
    write_op: Cell<Option<OpId>>,
    /// The poll watching for the reader to go away (pipes, FIFOs and sockets).
    watch_op: Cell<Option<OpId>>,
    /// Writes after the pipe was closed or lost.
    lost_writes: Cell<u32>,
    /// The protocol and the re-entrancy guard around it.
    dispatcher: Dispatcher<Event<WriteTransport>>,
}

/// The transport of a write pipe (asyncio's `WriteTransport`, from
/// [`EventLoop::connect_write_pipe`]). Cheap to clone; clones refer to the same pipe.
#[derive(Clone)]
pub struct WriteTransport {
    core: Rc<WriteCore>,
}

impl WriteTransport {
    /// Writes `data`; never blocks. With nothing buffered it is offered to the pipe at once;
    /// what the pipe does not take is copied into the buffer and written in order
    /// (`pause_writing` when the buffer passes the high-water mark). Once closing or closed
    /// the data is dropped (and, from the fifth such write on, logged). Empty `data` does
    /// nothing. A write error closes the transport with that error.
    pub fn write(&self, data: &[u8]) {
        if let Some(sent) = self.core.start_write(data) {
            if sent < data.len() {
                self.core.queue(Bytes::copy_from_slice(&data[sent..]));
            }
        }
    }

    /// [`write`](Self::write) without a copy.
    pub fn write_bytes(&self, data: Bytes) {
        if let Some(sent) = self.core.start_write(&data) {
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
        let core = &self.core;
        if core.state.get() != WriteState::Open {
            return;
        }
        core.state.set(WriteState::Closing);
        core.finish_if_flushed();
    }

    /// True: `write_eof` closes the pipe after the flush.
    pub fn can_write_eof(&self) -> bool {
        true
    }

    /// As [`write_eof`](Self::write_eof) (asyncio's `close` of a write pipe). Idempotent.
    pub fn close(&self) {
        self.write_eof();
    }

    /// Closes at once: the buffer is dropped, `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.core.force_close(None);
    }

    /// True once `write_eof`/`close`/`abort` was called or the pipe was lost.
    pub fn is_closing(&self) -> bool {
        self.core.state.get() != WriteState::Open
    }

    /// Sets the water marks, with asyncio's rules (see
    /// [`Transport::set_write_buffer_limits`](crate::Transport::set_write_buffer_limits)).
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        let flow = self.core.write.borrow_mut().set_limits(high, low)?;
        self.core.notify_flow(flow);
        Ok(())
    }

    /// `(low, high)`.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.core.write.borrow().limits()
    }

    /// Bytes buffered and not yet written.
    pub fn get_write_buffer_size(&self) -> usize {
        self.core.write.borrow().len()
    }

    /// asyncio's `get_extra_info`: `"pipe"` gives the fd while it is open.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "pipe" => self.core.pipe.open_fd().map(ExtraInfo::Fd),
            _ => None,
        }
    }

    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P>(&self, protocol: Rc<RefCell<P>>)
    where
        P: BaseProtocol<WriteTransport> + 'static,
    {
        self.core.dispatcher.set(Rc::new(Base(protocol)));
    }

    /// The protocol, if it is a `P` (and the connection is not lost yet).
    pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
        self.core.dispatcher.get()?.downcast::<RefCell<P>>().ok()
    }
}

impl fmt::Debug for WriteTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.core, f)
    }
}

impl fmt::Debug for WriteCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fd, state, len) = (self.pipe.raw(), self.state.get(), self.write.borrow().len());
        write!(f, "<WriteTransport fd={fd} {state:?} write_buffer={len}>")
    }
}

impl WriteCore {
    fn transport(self: &Rc<Self>) -> WriteTransport {
        WriteTransport { core: self.clone() }
    }

    /// The start of a write: `None` if nothing more is to be done with `data` (empty, dropped
    /// as a lost write, or the direct write failed and closed the transport), else how many
    /// bytes the direct write took (0 when something is buffered or in flight).
    fn start_write(self: &Rc<Self>, data: &[u8]) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        if self.state.get() != WriteState::Open {
            // As asyncio: the count is checked, then incremented (the sixth lost write logs).
            let lost = self.lost_writes.get();
            if lost >= LOST_WRITES_LOG_THRESHOLD {
                log::warn!(
                    target: "ringloop",
                    "pipe closed by peer or os.write(pipe, data) raised exception."
                );
            }
            self.lost_writes.set(lost + 1);
            return None;
        }
        if !self.write.borrow().is_empty() || self.write_op.get().is_some() {
            return Some(0);
        }
        match self.write_now(data) {
            Ok(n) => Some(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Some(0),
            Err(err) => {
                self.lost_writes.set(self.lost_writes.get() + 1);
                self.fatal_error(err);
                None
            }
        }
    }

    /// One non-blocking `write(2)` (the fd is non-blocking), retried on `EINTR`.
    fn write_now(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: reads `data.len()` initialised bytes of a live slice; the fd is the
            // transport's own, open while the state is `Open`.
            let n = unsafe { libc::write(self.pipe.raw(), data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Appends `data` (not empty) to the buffer, keeps a write in flight, and tells the
    /// protocol to pause when that crossed the high-water mark.
    fn queue(self: &Rc<Self>, data: Bytes) {
        let flow = self.write.borrow_mut().push(data);
        self.submit_write();
        self.notify_flow(flow);
    }

    fn submit_write(self: &Rc<Self>) {
        if self.write_op.get().is_some() || self.state.get() == WriteState::Closed {
            return;
        }
        let Some(buf) = self.write.borrow_mut().front_coalesced() else { return };
        let op = Op::Write { fd: self.pipe.raw(), buf, offset: 0 };
        self.write_op.set(self.pipe.submit(op, self.clone()));
    }

    fn submit_watch(self: &Rc<Self>) {
        if self.watch_op.get().is_some() || self.state.get() == WriteState::Closed {
            return;
        }
        let op = Op::Poll { fd: self.pipe.raw(), interest: Interest::READ };
        self.watch_op.set(self.pipe.submit(op, self.clone()));
    }

    fn on_write(self: &Rc<Self>, result: io::Result<u32>) {
        if self.state.get() == WriteState::Closed {
            return;
        }
        let written = match result {
            Ok(n) => n as usize,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => 0,
            Err(err) => {
                self.lost_writes.set(self.lost_writes.get() + 1);
                return self.fatal_error(err);
            }
        };
        let flow = self.write.borrow_mut().consume(written);
        self.submit_write();
        self.notify_flow(flow);
        self.finish_if_flushed();
    }

    /// The watch fired: the pipe's reader is gone (or the watch failed).
    fn on_reader_gone(self: &Rc<Self>, result: io::Result<u32>) {
        if self.state.get() == WriteState::Closed {
            return;
        }
        let fd = self.pipe.raw();
        let error = match result {
            Ok(_) => Error::io(
                format!("write pipe fd {fd}: the reading end was closed"),
                io::Error::from_raw_os_error(libc::EPIPE),
            ),
            Err(err) => Error::io(format!("watching write pipe fd {fd}"), err),
        };
        self.force_close(Some(error));
    }

    /// In `Closing` with nothing left to write: close.
    fn finish_if_flushed(self: &Rc<Self>) {
        if self.state.get() == WriteState::Closing
            && self.write.borrow().is_empty()
            && self.write_op.get().is_none()
        {
            self.finish(None);
        }
    }

    /// asyncio's `_fatal_error(exc, 'Fatal write error on pipe transport')`: an OS error is
    /// logged at debug level only (asyncio does the same), and the transport closes with it.
    fn fatal_error(self: &Rc<Self>, err: io::Error) {
        let error = Error::io(format!("write to pipe fd {}", self.pipe.raw()), err);
        log::debug!(target: "ringloop", "{self:?}: Fatal write error on pipe transport: {error}");
        self.force_close(Some(error));
    }

    /// Drops the buffer and closes with `error` (no-op when closed).
    fn force_close(self: &Rc<Self>, error: Option<Error>) {
        if self.state.get() == WriteState::Closed {
            return;
        }
        self.write.borrow_mut().clear();
        self.finish(error);
    }

    /// Enters `Closed`: cancels what is in flight and schedules `connection_lost(error)`,
    /// after which the fd is closed.
    fn finish(self: &Rc<Self>, error: Option<Error>) {
        if self.state.replace(WriteState::Closed) == WriteState::Closed {
            return;
        }
        self.pipe.cancel(&self.write_op);
        self.pipe.cancel(&self.watch_op);
        self.schedule_lost(error);
    }
}

impl OpTarget for WriteCore {
    /// The write's or the watch's completion, told apart by their slots' ids.
    fn complete(
        self: Rc<Self>,
        id: OpId,
        result: io::Result<u32>,
        _more: bool,
        _: Option<Op>,
        _: Option<RecvBuf>,
    ) {
        if self.write_op.get() == Some(id) {
            self.write_op.set(None);
            self.on_write(result);
        } else if self.watch_op.get() == Some(id) {
            self.watch_op.set(None);
            self.on_reader_gone(result);
        }
        self.flush_deferred_later();
    }
}

impl TransportCore for WriteCore {
    type Event = Event<WriteTransport>;

    fn dispatcher(&self) -> &Dispatcher<Event<WriteTransport>> {
        &self.dispatcher
    }

    fn event_loop(&self) -> Option<EventLoop> {
        self.pipe.event_loop()
    }

    /// Reports protocol callbacks that panicked. None closes the transport: a write pipe
    /// only has `connection_made`, `pause_writing` and `resume_writing` (only reported) and
    /// `connection_lost` (after which it is closed already).
    fn report_protocol_failures(self: &Rc<Self>) {
        let transport = || format!("{self:?}");
        if let Some(error) = self.dispatcher.report_failures(&self.pipe, transport) {
            self.force_close(Some(error));
        }
    }

    fn close_fd(&self) {
        self.pipe.close(&[&self.write_op, &self.watch_op]);
    }
}

impl EventLoop {
    /// Registers the write end of a pipe (asyncio's `connect_write_pipe`), taking `pipe` (a
    /// `std::process::ChildStdin`, say) over as [`connect_read_pipe`](Self::connect_read_pipe)
    /// does. Returns once `connection_made` has run. A write pipe's protocol is a
    /// [`BaseProtocol<WriteTransport>`](BaseProtocol).
    ///
    /// The fd is made non-blocking, on both backends: asyncio's selector loop does it, and on
    /// io_uring a read or write on a *blocking* pipe would be handed to a kernel worker
    /// thread that it can pin, where a non-blocking one is waited for by the kernel's poll.
    /// The flag belongs to the open file, so other holders of the pipe see it too.
    ///
    /// `Error::InvalidArgument` for a regular file or directory; the fd is closed then.
    pub async fn connect_write_pipe<P, F>(
        &self,
        protocol_factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> Result<(WriteTransport, Rc<RefCell<P>>)>
    where
        P: BaseProtocol<WriteTransport> + 'static,
        F: FnOnce() -> P,
    {
        let build = |pipe, _, protocol| WriteCore {
            pipe,
            state: Cell::new(WriteState::Open),
            write: RefCell::new(WriteBuffer::default()),
            write_op: Cell::new(None),
            watch_op: Cell::new(None),
            lost_writes: Cell::new(0),
            dispatcher: Dispatcher::new(Rc::new(Base(protocol))),
        };
        let start = |core: &Rc<WriteCore>, kind| {
            core.notify(Event::Made(core.transport()));
            // A tty or other character device is readable when it has input, which says
            // nothing about a reader going away: only pipes and sockets are watched.
            if kind != PipeKind::CharDevice {
                core.submit_watch();
            }
        };
        let call = "connect_write_pipe";
        let (core, protocol) =
            pipe::connect(self, call, pipe.into(), protocol_factory, build, start).await?;
        Ok((core.transport(), protocol))
    }
}
