//! [`Transfer`]: one `sendfile` in progress — the file, how far it got, and the task waiting
//! for it — shared by the transport's and the socket's paths, and [`TransferFuture`], what
//! that task awaits.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::source::Source;
use crate::driver::Op;
use crate::error::{loop_log, Error, Result, StateKind};
use crate::event_loop::LoopFd;

/// The most bytes one chunk asks for. io_uring's chunk is a pipe's capacity at most (1 MiB)
/// and epoll's what the socket's buffer takes, so this only bounds the `u32` the op carries.
const SPLICE_ASK: u64 = 1 << 30;

/// Bytes one copy chunk reads (the chunked fallback).
pub(crate) const COPY_CHUNK: usize = 256 * 1024;

/// How a transfer moves the file's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// Zero-copy: `Op::SendFile` (splice on io_uring, `sendfile(2)` on epoll).
    ZeroCopy,
    /// The chunked fallback: `Op::Read` into a buffer, then the transport's write path.
    Copy,
}

/// Where the waiting task is.
enum Outcome {
    /// Running; the waker of the task awaiting it.
    Running(Option<Waker>),
    /// Ended: the bytes sent, or the error.
    Done(Result<u64>),
    /// The task took the result.
    Taken,
}

/// What a chunk's completion came to.
pub(crate) enum Step {
    /// Send the next chunk.
    Next,
    /// A copy chunk's bytes, to write in order; then the next chunk, or the end.
    Copied(Bytes),
    /// The transfer ended: the transport finishes it with [`Transfer::finish`].
    Ended(Result<()>),
}

/// One `sendfile`: the file (a duplicate of the caller's, owned by the loop, so the driver
/// closes it only once no op names it), the range, the bytes sent so far and the waiting task.
pub(crate) struct Transfer {
    /// The file, duplicated: it shares the caller's file position.
    file: LoopFd,
    /// Zero-copy or the chunked fallback (the fallback can take over when the kernel refuses).
    method: Cell<Method>,
    /// Whether falling back is allowed.
    may_fall_back: bool,
    /// Where it starts.
    start: u64,
    /// Where it stops (exclusive); `None`: at the end of the file.
    end: Option<u64>,
    /// Whether the file has a position (a regular file; a pipe has none).
    seekable: bool,
    /// Bytes sent (or, for copies, handed to the transport's write path) so far.
    sent: Cell<u64>,
    /// The waiting task's side.
    outcome: RefCell<Outcome>,
    /// The task stopped waiting (its future was dropped): end after the chunk in flight.
    abandoned: Cell<bool>,
    /// What the errors name ("sendfile(fd 7)").
    what: String,
}

impl Transfer {
    /// A transfer of `source` to the socket named in `what`, by `method`.
    pub(crate) fn new(source: Source, method: Method, may_fall_back: bool, what: String) -> Self {
        Transfer {
            file: source.file,
            method: Cell::new(method),
            may_fall_back,
            start: source.start,
            end: source.end,
            seekable: source.seekable,
            sent: Cell::new(0),
            outcome: RefCell::new(Outcome::Running(None)),
            abandoned: Cell::new(false),
            what,
        }
    }

    /// `n` bytes counted as sent were not (copied bytes a send failed to deliver).
    pub(crate) fn take_back(&self, n: u64) {
        self.sent.set(self.sent.get().saturating_sub(n));
    }

    /// What errors name ("sendfile(fd 7)").
    pub(crate) fn what(&self) -> String {
        self.what.clone()
    }

    /// True once it ended (or its task stopped waiting and nothing is in flight).
    pub(crate) fn is_done(&self) -> bool {
        !matches!(*self.outcome.borrow(), Outcome::Running(_))
    }

    /// The op for the next chunk to `socket`; `None` when the range is all sent.
    pub(crate) fn next_op(&self, socket: std::os::fd::RawFd) -> Option<Op> {
        let at = self.start + self.sent.get();
        let left = match self.end {
            Some(end) => end.saturating_sub(at),
            None => u64::MAX,
        };
        if left == 0 {
            return None;
        }
        Some(match self.method.get() {
            Method::ZeroCopy => Op::SendFile {
                fd: socket,
                file: self.file.raw(),
                offset: at,
                len: left.min(SPLICE_ASK) as u32,
            },
            Method::Copy => {
                let len = left.min(COPY_CHUNK as u64) as usize;
                Op::Read { fd: self.file.raw(), buf: Vec::with_capacity(len) }
            }
        })
    }

    /// A chunk completed with `result` (and `op`, the chunk's op with its buffer).
    pub(crate) fn on_chunk(&self, result: io::Result<u32>, op: Option<Op>) -> Step {
        let n = match result {
            Ok(0) => return Step::Ended(Ok(())),
            Ok(n) => u64::from(n),
            Err(err) if self.refused_at_start(&err) => return self.fall_back(err),
            Err(err) => return Step::Ended(Err(Error::io(self.what.clone(), err))),
        };
        self.sent.set(self.sent.get() + n);
        match (self.method.get(), op) {
            (Method::Copy, Some(Op::Read { buf, .. })) => Step::Copied(Bytes::from(buf)),
            _ if !self.wants_more() => Step::Ended(Ok(())),
            _ => Step::Next,
        }
    }

    /// Whether another chunk is wanted (not abandoned, and the range not all sent).
    pub(crate) fn wants_more(&self) -> bool {
        !self.abandoned.get() && !self.end.is_some_and(|end| self.start + self.sent.get() >= end)
    }

    /// Whether `err` from a first zero-copy chunk says the kernel cannot splice this pair (a
    /// socket or file type without splice support).
    fn refused_at_start(&self, err: &io::Error) -> bool {
        let refusals = [libc::EINVAL, libc::ENOSYS, libc::EOPNOTSUPP];
        self.method.get() == Method::ZeroCopy
            && self.sent.get() == 0
            && err.raw_os_error().is_some_and(|e| refusals.contains(&e))
    }

    /// Makes the transfer take the chunked fallback from its start, for a transport that
    /// cannot take zero-copy bytes (TLS: the kernel does not encrypt) or a kernel that refused
    /// the first splice; without `fallback`, `SendfileNotAvailable` saying `why`, nothing sent.
    /// An error if the file cannot be put back at the start (the copy would read elsewhere).
    pub(crate) fn copy_instead(&self, why: &str) -> Result<()> {
        if self.method.get() == Method::Copy {
            return Ok(());
        }
        if !self.may_fall_back {
            return Err(Error::SendfileNotAvailable(format!(
                "{}: {why}; nothing was sent (pass fallback = true to copy it through the loop)",
                self.what
            )));
        }
        self.method.set(Method::Copy);
        if self.seekable {
            self.seek(self.start).map_err(|e| Error::io(self.what.clone(), e))?;
        }
        Ok(())
    }

    /// The kernel refused to splice the file (`err`): the chunked fallback if allowed (see
    /// [`copy_instead`](Self::copy_instead)), else the end with `SendfileNotAvailable`.
    fn fall_back(&self, err: io::Error) -> Step {
        let why = format!("the kernel cannot send this file zero-copy ({err})");
        match self.copy_instead(&why) {
            Ok(()) => Step::Next,
            Err(error) => Step::Ended(Err(error)),
        }
    }

    /// Ends the transfer with `result` (the bytes sent, or the error): the file's position is
    /// set to `start + sent`, and the waiting task woken. Only the first call counts.
    pub(crate) fn finish(&self, result: Result<()>) {
        if self.is_done() {
            return;
        }
        let sent = self.sent.get();
        if self.seekable {
            if let Err(err) = self.seek(self.start + sent) {
                loop_log!(Warn, "{}: setting the file position: {err}", self.what);
            }
        }
        let previous = std::mem::replace(
            &mut *self.outcome.borrow_mut(),
            Outcome::Done(result.map(|()| sent)),
        );
        if let Outcome::Running(Some(waker)) = previous {
            waker.wake();
        }
    }

    /// The waiting task is gone: the transfer ends after the chunk in flight (the caller
    /// finishes it at once when none is).
    pub(crate) fn abandon(&self) {
        self.abandoned.set(true);
    }

    /// `lseek(SEEK_SET)` on the duplicate, which moves the caller's file too.
    fn seek(&self, to: u64) -> io::Result<()> {
        self.file
            .with_fd(|fd| super::source::seek(fd, to))
            .unwrap_or(Ok(()))
            .map_err(io::Error::from)
    }
}

/// What `sendfile` awaits: the transfer's result. Dropping it before the end abandons the
/// transfer through `on_drop` (the path's own rule: see `side.rs` and `socket.rs`).
pub(crate) struct TransferFuture {
    /// The transfer.
    transfer: Rc<Transfer>,
    /// Called once if the future is dropped before the transfer ended.
    on_drop: Option<Box<dyn FnOnce()>>,
}

impl TransferFuture {
    /// Awaits `transfer`; `on_drop` runs if the future is dropped first.
    pub(crate) fn new(transfer: Rc<Transfer>, on_drop: impl FnOnce() + 'static) -> Self {
        TransferFuture { transfer, on_drop: Some(Box::new(on_drop)) }
    }
}

impl Future for TransferFuture {
    type Output = Result<u64>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        let mut outcome = self.transfer.outcome.borrow_mut();
        match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Running(_) => {
                *outcome = Outcome::Running(Some(cx.waker().clone()));
                Poll::Pending
            }
            Outcome::Done(result) => {
                drop(outcome);
                self.on_drop = None;
                Poll::Ready(result)
            }
            Outcome::Taken => Poll::Ready(Err(Error::invalid_state(
                StateKind::AlreadyTaken,
                "the sendfile's result was already taken",
            ))),
        }
    }
}

impl Drop for TransferFuture {
    fn drop(&mut self) {
        if let Some(on_drop) = self.on_drop.take() {
            if !self.transfer.is_done() {
                on_drop();
            }
        }
    }
}
