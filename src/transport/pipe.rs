//! The pipe transports (asyncio's `_UnixReadPipeTransport` and `_UnixWritePipeTransport`):
//! `connect_read_pipe` and `connect_write_pipe` on a pipe, FIFO, socket or character device (a
//! PTY master included), on the transport skeleton with a file read side or a file write side.
//!
//! # Non-blocking pipes
//! asyncio's selector loop sets a pipe non-blocking; ringloop does so on **both** backends.
//! On epoll it is what makes a read or write after a readiness report safe. On io_uring a
//! `READ` on a *blocking* pipe is handed to an io-wq worker thread that then sleeps in
//! `read(2)` until data comes, pinning the worker; on a non-blocking pipe the kernel waits with
//! its internal poll instead, which a cancel withdraws at once. `O_NONBLOCK` belongs to the
//! open file description, so it is shared with every other holder of the pipe (a child process
//! that inherited it, for instance), as in asyncio.
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
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use bytes::Bytes;

use super::base::{Life, TransportBase, TransportCore};
use super::dispatch::{adapt_for, Event, WriteOnlyProtocol};
use super::flow_control::Buffered;
use super::read_side::{Got, ReadSide, ReadState};
use super::write_side::{Sink, WriteSide, Writer};
use super::ExtraInfo;
use crate::driver::{Interest, Op, OpId};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::{Completed, EventLoop, ExceptionContext, OpTarget};
use crate::protocol::{BaseProtocol, Protocol, StreamingKind};

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

    base_transport_methods!();

    /// asyncio's `get_extra_info`: `"pipe"` gives the fd while it is open.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        pipe_info(name, &self.core.base.fd)
    }

    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P: Protocol<ReadTransport> + 'static>(&self, protocol: Rc<RefCell<P>>) {
        self.core.base.dispatcher.set(adapt_for::<ReadTransport, StreamingKind, P>(protocol));
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

    fn cancel_ops(&self, _: Option<&Error>) {
        self.read.close(&self.base.fd);
    }

    fn close_fd(&self) {
        self.base.fd.close(&[self.read.op_slot()]);
    }

    /// A read pipe has nothing to flush: closing is finishing.
    fn close(self: &Rc<Self>) {
        self.finish(None);
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl OpTarget for ReadCore {
    /// The read's completion (or, on a FIFO, the first poll's).
    fn complete(self: Rc<Self>, done: Completed) {
        let Completed { result, more, op, data, .. } = done;
        if let Some(got) = self.read.on_completion(result, more, op, data) {
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

impl fmt::Debug for ReadTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.core, f)
    }
}

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

    /// Closes at once: the buffer is dropped, `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.core.force_close(None);
    }

    base_transport_methods!();
    write_buffer_methods!(write);

    /// asyncio's `get_extra_info`: `"pipe"` gives the fd while it is open.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        pipe_info(name, &self.core.base.fd)
    }

    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P>(&self, protocol: Rc<RefCell<P>>)
    where
        P: BaseProtocol<WriteTransport> + 'static,
    {
        self.core.base.dispatcher.set(Rc::new(WriteOnlyProtocol(protocol)));
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

    fn on_written(self: &Rc<Self>, result: io::Result<u32>) {
        if self.base.is_closed() {
            return;
        }
        match self.write.on_completion(result) {
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
        self.force_close(error);
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
        self.force_close(Some(error));
    }
}

impl TransportCore for WriteCore {
    type Event = Event<WriteTransport>;

    fn base(&self) -> &TransportBase<Event<WriteTransport>> {
        &self.base
    }

    fn cancel_ops(&self, _: Option<&Error>) {
        self.base.fd.cancel(self.write.op_slot());
        self.base.fd.cancel(&self.watch_op);
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

    fn drop_buffered(&self) {
        self.write.clear();
    }

    fn describe(&self) -> String {
        format!("{self:?}")
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
        let Completed { id, result, .. } = done;
        if self.write.owns(id) {
            self.on_written(result);
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

impl fmt::Debug for WriteTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.core, f)
    }
}

/// A pipe transport's `get_extra_info`: `"pipe"` gives the fd while it is open.
fn pipe_info(name: &str, fd: &crate::event_loop::LoopFd) -> Option<ExtraInfo> {
    match name {
        "pipe" => fd.open_fd().map(ExtraInfo::Fd),
        _ => None,
    }
}

/// What kind of file a pipe transport was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PipeKind {
    /// A pipe or FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character device (a tty, a PTY, `/dev/null` ...).
    CharDevice,
}

/// Checks that `fd` is a pipe, FIFO, socket or character device (asyncio: "Pipe transport is
/// for pipes/sockets only."), and makes it non-blocking (see the module docs).
fn prepare(fd: &OwnedFd, call: &str) -> Result<PipeKind> {
    let raw = fd.as_raw_fd();
    let mode = file_type(fd).map_err(|e| Error::io(format!("{call}: fstat(fd {raw})"), e))?;
    let kind = match mode {
        libc::S_IFIFO => PipeKind::Fifo,
        libc::S_IFSOCK => PipeKind::Socket,
        libc::S_IFCHR => PipeKind::CharDevice,
        mode => {
            return Err(Error::invalid_argument(
                ArgumentKind::UnsuitableFd,
                format!(
                    "{call}: Pipe transport is for pipes/sockets only (fd {raw} has file type \
                 {mode:#o}, not a pipe, FIFO, socket or character device)"
                ),
            ))
        }
    };
    set_nonblocking(fd).map_err(|e| Error::io(format!("{call}: O_NONBLOCK on fd {raw}"), e))?;
    Ok(kind)
}

/// The `S_IFMT` bits of `fd`'s mode (`fstat(2)`).
fn file_type(fd: &OwnedFd) -> io::Result<libc::mode_t> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// Sets `O_NONBLOCK` on `fd` unless it is set.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    if !flags.contains(OFlag::O_NONBLOCK) {
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    Ok(())
}

/// Starts a pipe transport: checks `pipe` ([`prepare`], `call` names the caller), builds the
/// core, then at the next iteration runs `connection_made` and `then` (the first op). Returns
/// once `connection_made` has run.
async fn connect<C: TransportCore>(
    event_loop: &EventLoop,
    call: &str,
    pipe: OwnedFd,
    build: impl FnOnce(TransportBase<C::Event>, PipeKind) -> C,
    protocol: Rc<dyn super::dispatch::ErasedProtocol<C::Event>>,
    made: impl FnOnce(&Rc<C>) -> C::Event,
    then: impl FnOnce(&Rc<C>) + 'static,
) -> Result<Rc<C>> {
    event_loop.check_open()?;
    let kind = prepare(&pipe, call)?;
    let core = Rc::new(build(TransportBase::new(event_loop, pipe, protocol), kind));
    let started = event_loop.create_future::<()>();
    let done = started.clone();
    core.start(made(&core), move |core| {
        then(core);
        let _ = done.set_result(());
    })?;
    started.await?;
    Ok(core)
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
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let adapter = adapt_for::<ReadTransport, StreamingKind, P>(protocol.clone());
        let build = |base, kind| ReadCore { base, read: ReadSide::file(kind == PipeKind::Fifo) };
        let made = |core: &Rc<ReadCore>| Event::Made(ReadTransport { core: core.clone() });
        let then = |core: &Rc<ReadCore>| core.submit_read();
        let call = "connect_read_pipe";
        let core = connect(self, call, pipe.into(), build, adapter, made, then).await?;
        Ok((ReadTransport { core }, protocol))
    }

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
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let adapter = Rc::new(WriteOnlyProtocol(protocol.clone()));
        let watch = Rc::new(Cell::new(false));
        let watched = watch.clone();
        let build = move |base, kind| {
            // A tty or other character device is readable when it has input, which says
            // nothing about a reader going away: only pipes and sockets are watched.
            watched.set(kind != PipeKind::CharDevice);
            WriteCore { base, write: WriteSide::new(Sink::File), watch_op: Cell::new(None) }
        };
        let made = |core: &Rc<WriteCore>| Event::Made(WriteTransport { core: core.clone() });
        let then = move |core: &Rc<WriteCore>| {
            if watch.get() {
                core.submit_watch();
            }
        };
        let call = "connect_write_pipe";
        let core = connect(self, call, pipe.into(), build, adapter, made, then).await?;
        Ok((WriteTransport { core }, protocol))
    }
}
