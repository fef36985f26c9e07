//! `EventLoop::connect_read_pipe` and `connect_write_pipe` (asyncio's, from `unix_events`):
//! checking the file they are given and starting a pipe transport (`transport/pipe.rs`) on it.
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

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::{adapt_read_pipe, adapt_write_pipe, BaseProtocol, Protocol};
use crate::transport::{CheckedPipe, DynProtocol, PipeKind, ReadTransport, WriteTransport};

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
        let (adapt, start) = (adapt_read_pipe, ReadTransport::start);
        self.start_pipe(protocol_factory, adapt, pipe.into(), "connect_read_pipe", start).await
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
        let (adapt, start) = (adapt_write_pipe, WriteTransport::start);
        self.start_pipe(protocol_factory, adapt, pipe.into(), "connect_write_pipe", start).await
    }

    /// Starts a pipe transport: checks that the loop is open and `pipe` fit ([`prepare`]; it
    /// is closed otherwise), calls `start` on it with the factory's protocol as `adapt`
    /// erases it, and returns once `connection_made` has run (a callback scheduled after the
    /// transport's start runs after it).
    async fn start_pipe<T, P>(
        &self,
        protocol_factory: impl FnOnce() -> P,
        adapt: fn(Rc<RefCell<P>>) -> Rc<DynProtocol<T>>,
        pipe: OwnedFd,
        call: &str,
        start: fn(&EventLoop, CheckedPipe, Rc<DynProtocol<T>>) -> Result<T>,
    ) -> Result<(T, Rc<RefCell<P>>)> {
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        self.check_open()?;
        let kind = prepare(&pipe, call)?;
        let transport = start(self, CheckedPipe { fd: pipe, kind }, adapt(protocol.clone()))?;
        let started = self.create_future();
        let done = started.clone();
        self.call_soon(move || {
            let _ = done.set_result(());
        })?;
        started.await?;
        Ok((transport, protocol))
    }
}
