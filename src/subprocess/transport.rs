//! [`SubprocessTransport`] (asyncio's `SubprocessTransport`), the handle on a child process
//! and its pipes, and [`PipeTransport`], one of those pipes.

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::task::Poll;

use nix::sys::signal::Signal;

use super::core::SubprocessCore;
use super::protocol::{SubprocessAdapter, SubprocessProtocol};
use crate::error::{Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::{BaseProtocol, Protocol};
use crate::transport::{ReadTransport, WriteTransport};

/// The transport of a child process (asyncio's `SubprocessTransport`), from
/// [`subprocess_exec`](EventLoop::subprocess_exec) or
/// [`subprocess_shell`](EventLoop::subprocess_shell). Cheap to clone; clones refer to the
/// same child.
///
/// The child is watched by the loop until it exits and is reaped, whether or not a handle is
/// kept; closing the loop kills and reaps a child still running.
#[derive(Clone)]
pub struct SubprocessTransport {
    pub(super) core: Rc<SubprocessCore>,
}

impl SubprocessTransport {
    /// The child's process id.
    pub fn get_pid(&self) -> u32 {
        self.core.child.pid()
    }

    /// The child's returncode once it exited and was reaped: its exit status, or minus the
    /// signal that ended it (`-9` after `kill()`), as Python reports it. `None` before.
    pub fn get_returncode(&self) -> Option<i32> {
        self.core.child.returncode()
    }

    /// The transport of the pipe to the child's `fd`: a [`PipeTransport::Write`] for 0 (its
    /// stdin), a [`PipeTransport::Read`] for 1 and 2; `None` when that stream is not a pipe
    /// ([`Stdio::Pipe`](super::Stdio::Pipe)). Writing to the child is
    /// `get_pipe_transport(0)`'s `write`; closing it sends the child EOF.
    pub fn get_pipe_transport(&self, fd: RawFd) -> Option<PipeTransport> {
        self.core.pipe(fd)
    }

    /// Sends `signal` to the child (asyncio's `send_signal`), through its pidfd: a pid
    /// reused by another process is never signalled. Signalling a child that already exited
    /// does nothing and is not an error (its returncode stays what it exited with).
    pub fn send_signal(&self, signal: Signal) -> Result<()> {
        self.core.child.send_signal(signal)
    }

    /// Sends `SIGTERM` (asyncio's `terminate`).
    pub fn terminate(&self) -> Result<()> {
        self.send_signal(Signal::SIGTERM)
    }

    /// Sends `SIGKILL` (asyncio's `kill`).
    pub fn kill(&self) -> Result<()> {
        self.send_signal(Signal::SIGKILL)
    }

    /// Closes the transport (asyncio's `close`): closes every pipe, and kills the child if it
    /// is still running; a child that already exited, even if not yet reaped, is left alone.
    /// The protocol then hears `pipe_connection_lost` for each pipe, `process_exited` and
    /// `connection_lost`, and the child is reaped. Idempotent.
    pub fn close(&self) {
        self.core.close();
    }

    /// True once [`close`](Self::close) was called or `connection_lost` was sent.
    pub fn is_closing(&self) -> bool {
        self.core.is_closing()
    }

    /// The protocol, if it is a `P` (and `connection_lost` has not been delivered yet).
    pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
        self.core.dispatcher().get()?.downcast::<RefCell<P>>().ok()
    }

    /// Switches to another protocol; later callbacks go to it.
    pub fn set_protocol<P: SubprocessProtocol + 'static>(&self, protocol: Rc<RefCell<P>>) {
        let failed_pipes = self.core.failed_pipes();
        self.core.dispatcher().set(Rc::new(SubprocessAdapter { protocol, failed_pipes }));
    }

    /// Resolves once the child was reaped, with its returncode (`Process::wait`).
    pub(crate) async fn wait(&self) -> i32 {
        std::future::poll_fn(|cx| match self.get_returncode() {
            Some(code) => Poll::Ready(code),
            None => {
                self.core.wait_exit(cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

impl fmt::Debug for SubprocessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.core, f)
    }
}

/// One of a child process's pipes, from
/// [`SubprocessTransport::get_pipe_transport`]: the write pipe to its stdin, or a read pipe
/// from its stdout or stderr. The pipe's protocol is the subprocess transport's, so its
/// callbacks arrive as `pipe_data_received`, `pipe_connection_lost`, `pause_writing` and
/// `resume_writing` of the [`SubprocessProtocol`].
#[derive(Clone, Debug)]
pub enum PipeTransport {
    /// The child's stdin.
    Write(WriteTransport),
    /// The child's stdout or stderr.
    Read(ReadTransport),
}

impl PipeTransport {
    /// The write pipe (the child's stdin), if this is it.
    pub fn as_write(&self) -> Option<&WriteTransport> {
        match self {
            PipeTransport::Write(transport) => Some(transport),
            PipeTransport::Read(_) => None,
        }
    }

    /// The read pipe (the child's stdout or stderr), if this is one.
    pub fn as_read(&self) -> Option<&ReadTransport> {
        match self {
            PipeTransport::Read(transport) => Some(transport),
            PipeTransport::Write(_) => None,
        }
    }

    /// Closes the pipe (a write pipe once its buffer is flushed).
    pub fn close(&self) {
        match self {
            PipeTransport::Write(transport) => transport.close(),
            PipeTransport::Read(transport) => transport.close(),
        }
    }

    /// True once the pipe is closing or closed.
    pub fn is_closing(&self) -> bool {
        match self {
            PipeTransport::Write(transport) => transport.is_closing(),
            PipeTransport::Read(transport) => transport.is_closing(),
        }
    }
}

/// The protocol of each pipe transport: passes what the pipe reports on to the subprocess
/// transport, naming the child's fd (asyncio's `ReadSubprocessPipeProto` and
/// `WriteSubprocessPipeProto`). Holds the core until the pipe's `connection_lost`.
struct PipeForwarder {
    /// The child's fd at the other end.
    fd: RawFd,
    /// The subprocess transport.
    core: Rc<SubprocessCore>,
}

impl<T> BaseProtocol<T> for PipeForwarder {
    fn connection_lost(&mut self, error: Option<Error>) {
        self.core.pipe_lost(self.fd, error);
    }

    fn pause_writing(&mut self) {
        self.core.emit(super::protocol::SubprocessEvent::PauseWriting);
    }

    fn resume_writing(&mut self) {
        self.core.emit(super::protocol::SubprocessEvent::ResumeWriting);
    }
}

impl Protocol<ReadTransport> for PipeForwarder {
    fn data_received(&mut self, data: &[u8]) {
        self.core.pipe_data(self.fd, data);
    }
}

/// The loop's ends of the child's pipes (by the child's fd 0, 1, 2), before they become
/// transports.
pub(crate) type ParentEnds = [Option<OwnedFd>; 3];

/// Connects the loop's end of each pipe as a pipe transport of `core` (stdin a write pipe,
/// stdout and stderr read pipes).
pub(crate) async fn connect_pipes(
    event_loop: &EventLoop,
    core: &Rc<SubprocessCore>,
    ends: ParentEnds,
) -> Result<()> {
    let [stdin, stdout, stderr] = ends;
    if let Some(end) = stdin {
        let forwarder = || PipeForwarder { fd: 0, core: core.clone() };
        let (transport, _) = event_loop.connect_write_pipe(forwarder, end).await?;
        core.set_pipe(0, PipeTransport::Write(transport));
    }
    for (fd, end) in [(1, stdout), (2, stderr)] {
        let Some(end) = end else { continue };
        let forwarder = || PipeForwarder { fd, core: core.clone() };
        let (transport, _) = event_loop.connect_read_pipe(forwarder, end).await?;
        core.set_pipe(fd, PipeTransport::Read(transport));
    }
    Ok(())
}
