//! The read pipe transport (asyncio's `_UnixReadPipeTransport`): `connect_read_pipe` on a
//! pipe, FIFO, socket or character device (a PTY master included), identical on both backends.
//!
//! # States
//! ```text
//!  Open ──EOF / read error / close() / protocol panic──► Closed (connection_lost scheduled,
//!                                                        then the fd is closed)
//! ```
//! Reading: `Reading` ⇄ `Paused` while open. One `Op::Read` is in flight while reading. A read
//! is never cancelled to pause (on io_uring the kernel may already have taken the bytes), so
//! a read that completes while paused is held, and handled on `resume_reading`.
//!
//! On a FIFO the first read waits for a `Poll` first: a FIFO opened non-blocking before any
//! writer reads 0 bytes (EOF) at once, while `poll(2)` reports nothing until a writer has come
//! (and gone). io_uring's `READ` would see that EOF; the selector loop never does. Polling
//! first gives both backends the selector's behaviour: the transport waits for a writer.
//!
//! At EOF (a read of 0 bytes) the transport closes: `eof_received` (its answer is ignored, as
//! in asyncio: a read pipe has no write side to keep open), then `connection_lost(None)`. A
//! read error closes it with that error: asyncio's "Fatal read error on pipe transport" goes to
//! the exception handler, except `EIO`, which is what a PTY master reads once its slave side is
//! closed (asyncio logs that one at debug level only).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use super::dispatch::{adapt_for, Dispatcher, Event, TransportCore};
use super::loop_fd::LoopFd;
use super::pipe::{self, PipeKind};
use super::ExtraInfo;
use crate::driver::{Interest, Op, OpId, RecvBuf};
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, ExceptionContext, OpTarget};
use crate::protocol::{Protocol, StreamingKind};

/// Bytes asked of the kernel per read.
const READ_SIZE: usize = 64 * 1024;

/// The transport's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PipeState {
    /// Reading (or paused).
    Open,
    /// EOF, an error, or `close()`: `connection_lost` is scheduled or delivered.
    Closed,
}

/// The read side while open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// A read is kept in flight.
    Reading,
    /// `pause_reading()`: no new read; one that completes is held.
    Paused,
}

/// The shared state of a read pipe transport.
pub(crate) struct ReadCore {
    /// The pipe and its loop.
    pipe: LoopFd,
    /// Lifecycle.
    state: Cell<PipeState>,
    /// Read side.
    read: Cell<ReadState>,
    /// The read (or first poll) in flight.
    read_op: Cell<Option<OpId>>,
    /// A FIFO whose first read must wait for readiness (see the module docs).
    poll_first: Cell<bool>,
    /// The read buffer when no read is in flight (reused across reads).
    spare: RefCell<Option<Vec<u8>>>,
    /// A read that completed while paused: its result and bytes.
    held: RefCell<Option<(io::Result<u32>, Vec<u8>)>>,
    /// The protocol and the re-entrancy guard around it.
    dispatcher: Dispatcher<Event<ReadTransport>>,
}

/// The transport of a read pipe (asyncio's `ReadTransport`, from
/// [`EventLoop::connect_read_pipe`]). Cheap to clone; clones refer to the same pipe.
#[derive(Clone)]
pub struct ReadTransport {
    core: Rc<ReadCore>,
}

impl ReadTransport {
    /// Stops reading until [`resume_reading`](Self::resume_reading): no more data reaches the
    /// protocol, and no more is taken from the pipe (at most one read already under way is
    /// held). Does nothing when paused or closed.
    pub fn pause_reading(&self) {
        if self.is_reading() {
            self.core.read.set(ReadState::Paused);
        }
    }

    /// Resumes reading: a held read is delivered first. Does nothing unless paused and open.
    pub fn resume_reading(&self) {
        let core = &self.core;
        if core.state.get() != PipeState::Open || core.read.get() != ReadState::Paused {
            return;
        }
        core.read.set(ReadState::Reading);
        let Some(event_loop) = core.pipe.event_loop() else { return };
        let core = core.clone();
        let _ = event_loop.call_soon(move || core.resume());
    }

    /// True while open and not paused.
    pub fn is_reading(&self) -> bool {
        self.core.state.get() == PipeState::Open && self.core.read.get() == ReadState::Reading
    }

    /// Closes the transport: reading stops, `connection_lost(None)` follows, then the fd is
    /// closed. Idempotent.
    pub fn close(&self) {
        self.core.finish(None);
    }

    /// True once closed (by `close`, EOF or an error).
    pub fn is_closing(&self) -> bool {
        self.core.state.get() != PipeState::Open
    }

    /// asyncio's `get_extra_info`: `"pipe"` gives the fd while it is open.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            "pipe" => self.core.pipe.open_fd().map(ExtraInfo::Fd),
            _ => None,
        }
    }

    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P: Protocol<ReadTransport> + 'static>(&self, protocol: Rc<RefCell<P>>) {
        self.core.dispatcher.set(adapt_for::<ReadTransport, StreamingKind, P>(protocol));
    }

    /// The protocol, if it is a `P` (and the connection is not lost yet).
    pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
        self.core.dispatcher.get()?.downcast::<RefCell<P>>().ok()
    }
}

impl fmt::Debug for ReadTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.describe(f)
    }
}

impl ReadCore {
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, read) = (self.state.get(), self.read.get());
        write!(f, "<ReadTransport fd={} {state:?} {read:?}>", self.pipe.raw())
    }

    fn transport(self: &Rc<Self>) -> ReadTransport {
        ReadTransport { core: self.clone() }
    }

    fn submit_read(self: &Rc<Self>) {
        if self.read_op.get().is_some()
            || self.read.get() != ReadState::Reading
            || self.state.get() != PipeState::Open
        {
            return;
        }
        if self.poll_first.get() {
            let op = Op::Poll { fd: self.pipe.raw(), interest: Interest::READ };
            self.read_op.set(self.pipe.submit(op, self.clone()));
            return;
        }
        // Zeroed once and reused: memcheck cannot see the kernel's writes through io_uring.
        let mut buf = self.spare.take().unwrap_or_else(|| vec![0; READ_SIZE]);
        buf.clear();
        let op = Op::Read { fd: self.pipe.raw(), buf };
        self.read_op.set(self.pipe.submit(op, self.clone()));
    }

    /// The first poll's completion: a writer came (and wrote or left), or an error.
    fn on_first_poll(self: &Rc<Self>, result: io::Result<u32>) {
        self.read_op.set(None);
        self.poll_first.set(false);
        if self.state.get() == PipeState::Closed {
            return;
        }
        match result {
            Ok(_) => self.submit_read(),
            Err(err) => self.fatal_error(err),
        }
    }

    /// The read's completion.
    fn on_read(self: &Rc<Self>, result: io::Result<u32>, op: Option<Op>) {
        self.read_op.set(None);
        let buf = match op {
            Some(Op::Read { buf, .. }) => buf,
            _ => Vec::new(),
        };
        match (self.state.get(), self.read.get()) {
            (PipeState::Closed, _) => {}
            (PipeState::Open, ReadState::Paused) => *self.held.borrow_mut() = Some((result, buf)),
            (PipeState::Open, ReadState::Reading) => self.handle(result, buf),
        }
        self.flush_deferred_later();
    }

    fn handle(self: &Rc<Self>, result: io::Result<u32>, buf: Vec<u8>) {
        match result {
            Ok(0) => self.on_eof(),
            Ok(_) => {
                self.dispatcher.data(&buf);
                *self.spare.borrow_mut() = Some(buf);
                if !self.check_failures() {
                    self.submit_read();
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => {
                *self.spare.borrow_mut() = Some(buf);
                self.submit_read();
            }
            Err(e) => self.fatal_error(e),
        }
    }

    /// EOF: closed at once (so `is_closing()` is true inside `eof_received`), then
    /// `eof_received`, then `connection_lost(None)` (or the panic of `eof_received`).
    fn on_eof(self: &Rc<Self>) {
        if !self.stop() {
            return;
        }
        self.dispatcher.send(Event::Eof);
        let error = self.check_panic();
        self.schedule_lost(error);
    }

    /// asyncio's `_fatal_error(exc, 'Fatal read error on pipe transport')`.
    fn fatal_error(self: &Rc<Self>, err: io::Error) {
        let error = Error::io(format!("read from pipe fd {}", self.pipe.raw()), err);
        if error.io_error().and_then(io::Error::raw_os_error) == Some(libc::EIO) {
            log::debug!(target: "ringloop", "{self:?}: EIO (the PTY's other side is closed)");
        } else {
            let context = ExceptionContext::new("Fatal read error on pipe transport");
            self.pipe.report(context.with_error(error.clone()), || format!("{self:?}"));
        }
        self.finish(Some(error));
    }

    /// Handles protocol panics; true if one closed the transport.
    fn check_failures(self: &Rc<Self>) -> bool {
        match self.check_panic() {
            Some(error) => {
                self.finish(Some(error));
                true
            }
            None => false,
        }
    }

    fn check_panic(self: &Rc<Self>) -> Option<Error> {
        let transport = || format!("{self:?}");
        self.dispatcher.report_failures(&self.pipe, transport)
    }

    fn resume(self: &Rc<Self>) {
        if self.state.get() != PipeState::Open || self.read.get() != ReadState::Reading {
            return;
        }
        match self.held.take() {
            Some((result, buf)) => self.handle(result, buf),
            None => self.submit_read(),
        }
        self.flush_deferred_later();
    }

    /// Enters `Closed`: cancels the read and schedules `connection_lost(error)`, after which
    /// the fd is closed. Does nothing when already closed.
    fn finish(self: &Rc<Self>, error: Option<Error>) {
        if self.stop() {
            self.schedule_lost(error);
        }
    }

    /// Enters `Closed` and cancels the read; false if already closed.
    fn stop(&self) -> bool {
        if self.state.replace(PipeState::Closed) == PipeState::Closed {
            return false;
        }
        self.pipe.cancel(&self.read_op);
        self.held.take();
        true
    }
}

impl TransportCore for ReadCore {
    type Event = Event<ReadTransport>;

    fn dispatcher(&self) -> &Dispatcher<Event<ReadTransport>> {
        &self.dispatcher
    }

    fn event_loop(&self) -> Option<EventLoop> {
        self.pipe.event_loop()
    }

    /// A data or EOF callback that panicked closes the transport with [`Error::Panic`] (a
    /// panic in `connection_made` is only reported).
    fn report_protocol_failures(self: &Rc<Self>) {
        self.check_failures();
    }

    fn close_fd(&self) {
        self.pipe.close(&[&self.read_op]);
    }
}

impl OpTarget for ReadCore {
    /// The first poll's completion (it hands back an `Op::Poll`) or the read's.
    fn complete(
        self: Rc<Self>,
        _: OpId,
        result: io::Result<u32>,
        _more: bool,
        op: Option<Op>,
        _: Option<RecvBuf>,
    ) {
        match op {
            Some(Op::Poll { .. }) => self.on_first_poll(result),
            op => self.on_read(result, op),
        }
    }
}

impl fmt::Debug for ReadCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe(f)
    }
}

impl EventLoop {
    /// Registers the read end of a pipe (asyncio's `connect_read_pipe`): `pipe` is anything
    /// that owns an fd (`OwnedFd`, `File`, `std::process::ChildStdout`, a `UnixStream` ...)
    /// referring to a pipe, FIFO, socket or character device; the transport takes it over and
    /// closes it at the end. The fd is made non-blocking (on both backends; see
    /// [`connect_write_pipe`](Self::connect_write_pipe) for why). Returns once
    /// `connection_made` has run.
    ///
    /// `Error::InvalidArgument` for a regular file or directory (asyncio: "Pipe transport is
    /// for pipes/sockets only."); the fd is closed then.
    ///
    /// ```
    /// use std::process::{Command, Stdio};
    /// use ringloop::{BaseProtocol, Error, Future, Protocol, ReadTransport};
    ///
    /// struct Collect {
    ///     data: Vec<u8>,
    ///     done: Future<Vec<u8>>,
    /// }
    /// impl BaseProtocol<ReadTransport> for Collect {
    ///     fn connection_lost(&mut self, error: Option<Error>) {
    ///         assert!(error.is_none());
    ///         self.done.set_result(std::mem::take(&mut self.data)).unwrap();
    ///     }
    /// }
    /// impl Protocol<ReadTransport> for Collect {
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         self.data.extend_from_slice(data);
    ///     }
    /// }
    ///
    /// let mut child = Command::new("echo").arg("hello").stdout(Stdio::piped()).spawn().unwrap();
    /// let stdout = child.stdout.take().unwrap();
    /// let output = ringloop::run(async move {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     let done = event_loop.create_future();
    ///     let protocol = Collect { data: Vec::new(), done: done.clone() };
    ///     event_loop.connect_read_pipe(move || protocol, stdout).await.unwrap();
    ///     done.await.unwrap()
    /// })
    /// .unwrap();
    /// assert_eq!(output, b"hello\n");
    /// child.wait().unwrap();
    /// ```
    pub async fn connect_read_pipe<P, F>(
        &self,
        protocol_factory: F,
        pipe: impl Into<OwnedFd>,
    ) -> Result<(ReadTransport, Rc<RefCell<P>>)>
    where
        P: Protocol<ReadTransport> + 'static,
        F: FnOnce() -> P,
    {
        let build = |pipe, kind, protocol| ReadCore {
            pipe,
            state: Cell::new(PipeState::Open),
            read: Cell::new(ReadState::Reading),
            read_op: Cell::new(None),
            poll_first: Cell::new(kind == PipeKind::Fifo),
            spare: RefCell::new(None),
            held: RefCell::new(None),
            dispatcher: Dispatcher::new(adapt_for::<ReadTransport, StreamingKind, P>(protocol)),
        };
        let start = |core: &Rc<ReadCore>, _| {
            core.notify(Event::Made(core.transport()));
            core.submit_read();
        };
        let call = "connect_read_pipe";
        let (core, protocol) =
            pipe::connect(self, call, pipe.into(), protocol_factory, build, start).await?;
        Ok((core.transport(), protocol))
    }
}
