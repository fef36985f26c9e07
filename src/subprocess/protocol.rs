//! [`SubprocessProtocol`] (asyncio's `SubprocessProtocol`), the events a subprocess transport
//! sends it, and the adapter through which the transport's dispatcher calls it.

use std::any::Any;
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;

use super::transport::SubprocessTransport;
use crate::dispatch::{call, Deliver, Delivered, ErasedProtocol, Role};
use crate::error::Error;
use crate::protocol::BaseProtocol;

/// The callbacks of a child process started by
/// [`subprocess_exec`](crate::EventLoop::subprocess_exec) or
/// [`subprocess_shell`](crate::EventLoop::subprocess_shell) (asyncio's `SubprocessProtocol`).
///
/// From [`BaseProtocol`]: `connection_made(transport)` first; `pause_writing` and
/// `resume_writing` for the stdin pipe's write buffer; `connection_lost(None)` last, exactly
/// once, **after the child exited and every pipe closed** (a grandchild that keeps the
/// child's stdout open keeps it waiting). In between, in the order they happen:
/// `pipe_data_received`, `pipe_connection_lost` once per pipe, and `process_exited` once.
///
/// Re-entrancy and panics are handled as for [`Protocol`](crate::Protocol): a callback the
/// transport would make while the protocol is inside one comes right after it returns; a
/// panic goes to the exception handler, and one in `pipe_data_received` also closes that
/// pipe with the panic as its error.
pub trait SubprocessProtocol: BaseProtocol<SubprocessTransport> {
    /// The child wrote `data` to its stdout (`fd` 1) or stderr (`fd` 2). `data` is only
    /// valid during the call.
    fn pipe_data_received(&mut self, fd: RawFd, data: &[u8]) {
        let _ = (fd, data);
    }

    /// The pipe to the child's `fd` (0, 1 or 2) closed: `None` at its end (EOF, or closed
    /// by `close()`), else the error (a write to a stdin the child had closed gives `EPIPE`).
    fn pipe_connection_lost(&mut self, fd: RawFd, error: Option<Error>) {
        let _ = (fd, error);
    }

    /// The child exited; [`get_returncode`](SubprocessTransport::get_returncode) has its
    /// status.
    fn process_exited(&mut self) {}
}

/// A callback of a [`SubprocessProtocol`], as the transport's dispatcher queues it.
pub(crate) enum SubprocessEvent {
    /// `connection_made`.
    Made(SubprocessTransport),
    /// `pipe_data_received` (the bytes copied: the pipe's read buffer is reused).
    PipeData(RawFd, Vec<u8>),
    /// `pipe_connection_lost`.
    PipeLost(RawFd, Option<Error>),
    /// `process_exited`.
    Exited,
    /// `connection_lost`.
    Lost(Option<Error>),
    /// `pause_writing` (the stdin pipe's buffer).
    PauseWriting,
    /// `resume_writing`.
    ResumeWriting,
}

impl Deliver for SubprocessEvent {
    /// The pipe's fd in the child, and the bytes.
    type Data<'a> = (RawFd, &'a [u8]);

    fn copied((fd, data): (RawFd, &[u8])) -> Self {
        SubprocessEvent::PipeData(fd, data.to_vec())
    }

    fn lost(error: Option<Error>) -> Self {
        SubprocessEvent::Lost(error)
    }

    fn callback(&self) -> &'static str {
        match self {
            SubprocessEvent::Made(_) => "connection_made",
            SubprocessEvent::PipeData(..) => "pipe_data_received",
            SubprocessEvent::PipeLost(..) => "pipe_connection_lost",
            SubprocessEvent::Exited => "process_exited",
            SubprocessEvent::Lost(_) => "connection_lost",
            SubprocessEvent::PauseWriting => "pause_writing",
            SubprocessEvent::ResumeWriting => "resume_writing",
        }
    }

    /// Only a failure in `pipe_data_received` is fatal (for its pipe, as asyncio's pipe
    /// transport closes on a failing `data_received`); asyncio runs the others as plain
    /// callbacks, so their failure is only reported.
    fn role(&self) -> Role {
        match self {
            SubprocessEvent::PipeData(..) => Role::Other,
            SubprocessEvent::Lost(_) => Role::Lost,
            _ => Role::Notice,
        }
    }
}

/// `pipe_data_received` calls that failed, with their pipe: the transport closes each such
/// pipe with the failure's error.
pub(crate) type FailedPipes = RefCell<Vec<(RawFd, Error)>>;

/// A [`SubprocessProtocol`] shared with the user, as the dispatcher drives it.
pub(crate) struct SubprocessAdapter<P> {
    /// The user's protocol.
    pub(crate) protocol: Rc<RefCell<P>>,
    /// Where a failing `pipe_data_received` is recorded with its fd.
    pub(crate) failed_pipes: Rc<FailedPipes>,
}

impl<P> SubprocessAdapter<P> {
    /// Records a failed `pipe_data_received` on `fd` for the transport to act on.
    fn note(&self, fd: Option<RawFd>, delivered: &Delivered<SubprocessEvent>) {
        if let (Some(fd), Delivered::Failed(failure)) = (fd, delivered) {
            self.failed_pipes.borrow_mut().push((fd, failure.error.clone()));
        }
    }
}

impl<P: SubprocessProtocol + 'static> ErasedProtocol<SubprocessEvent> for SubprocessAdapter<P> {
    fn deliver(&self, event: SubprocessEvent) -> Delivered<SubprocessEvent> {
        let fd = match &event {
            SubprocessEvent::PipeData(fd, _) => Some(*fd),
            _ => None,
        };
        let delivered = call(
            &self.protocol,
            event.callback(),
            event,
            |e| e,
            |protocol, event, _| {
                match event {
                    SubprocessEvent::Made(transport) => protocol.connection_made(transport),
                    SubprocessEvent::PipeData(fd, data) => protocol.pipe_data_received(fd, &data),
                    SubprocessEvent::PipeLost(fd, error) => {
                        protocol.pipe_connection_lost(fd, error)
                    }
                    SubprocessEvent::Exited => protocol.process_exited(),
                    SubprocessEvent::Lost(error) => protocol.connection_lost(error),
                    SubprocessEvent::PauseWriting => protocol.pause_writing(),
                    SubprocessEvent::ResumeWriting => protocol.resume_writing(),
                }
                Ok(false)
            },
        );
        self.note(fd, &delivered);
        delivered
    }

    fn data(&self, (fd, data): (RawFd, &[u8])) -> Delivered<SubprocessEvent> {
        let copy = SubprocessEvent::copied;
        let delivered = call(&self.protocol, "pipe_data_received", (fd, data), copy, |p, _, _| {
            p.pipe_data_received(fd, data);
            Ok(false)
        });
        self.note(Some(fd), &delivered);
        delivered
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.protocol.clone()
    }
}
