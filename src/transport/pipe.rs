//! What the pipe transports share: the fd and its loop, the driver owner of their ops, the
//! checks and the non-blocking switch that `connect_read_pipe`/`connect_write_pipe` apply.
//!
//! # Non-blocking pipes
//! asyncio's selector loop sets a pipe non-blocking; ringloop does so on **both** backends.
//! On epoll it is what makes a read or write after a readiness report safe. On io_uring a
//! `READ` on a *blocking* pipe is handed to an io-wq worker thread that then sleeps in
//! `read(2)` until data comes, pinning the worker (and keeping the fd number busy in a way a
//! cancel cannot always undo); on a non-blocking pipe the kernel waits with its internal poll
//! instead, which a cancel withdraws at once. `O_NONBLOCK` belongs to the open file
//! description, so it is shared with every other holder of the pipe (a child process that
//! inherited it, for instance), as in asyncio.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use super::dispatch::TransportCore;
use super::pipe_read::ReadCore;
use super::pipe_write::{WriteCore, WriteOp};
use super::ExtraInfo;
use crate::driver::{Op, OpId};
use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, ExceptionContext, Inner, OpOwner};

/// Whose op completed, for a pipe transport (held by the driver as the op's owner).
#[derive(Clone)]
pub(crate) enum PipeOwner {
    /// The read of a read pipe.
    Read(Rc<ReadCore>),
    /// The readiness poll a read pipe on a FIFO waits for before its first read.
    ReadPoll(Rc<ReadCore>),
    /// An op of a write pipe.
    Write(Rc<WriteCore>, WriteOp),
    /// The final close of a pipe's fd: nobody waits for it.
    Close,
}

impl PipeOwner {
    /// Hands a driver completion to its transport.
    pub(crate) fn on_completion(self, result: io::Result<u32>, op: Option<Op>) {
        match self {
            PipeOwner::Read(core) => core.on_read(result, op),
            PipeOwner::ReadPoll(core) => core.on_first_poll(result),
            PipeOwner::Write(core, which) => core.on_completion(which, result),
            PipeOwner::Close => {}
        }
    }
}

/// What kind of file a pipe transport was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PipeKind {
    /// A pipe or FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character device (a tty, a PTY, `/dev/null` ...).
    CharDevice,
}

/// Checks that `fd` is a pipe, FIFO, socket or character device (asyncio: "Pipe transport is
/// for pipes/sockets only."), and makes it non-blocking (see the module docs).
pub(super) fn prepare(fd: &OwnedFd, call: &str) -> Result<PipeKind> {
    let raw = fd.as_raw_fd();
    // SAFETY: a zeroed `stat` is a valid out-argument; fstat fills it for the open fd `raw`.
    let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
    // SAFETY: `st` is a live stat buffer, `raw` an fd owned by `fd`.
    if unsafe { libc::fstat(raw, &mut st) } != 0 {
        return Err(Error::io(format!("{call}: fstat(fd {raw})"), io::Error::last_os_error()));
    }
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => PipeKind::Fifo,
        libc::S_IFSOCK => PipeKind::Socket,
        libc::S_IFCHR => PipeKind::CharDevice,
        mode => {
            return Err(Error::InvalidArgument(format!(
                "{call}: Pipe transport is for pipes/sockets only (fd {raw} has file type \
                 {mode:#o}, not a pipe, FIFO, socket or character device)"
            )))
        }
    };
    set_nonblocking(raw).map_err(|e| Error::io(format!("{call}: O_NONBLOCK on fd {raw}"), e))?;
    Ok(kind)
}

/// What `connect_read_pipe` and `connect_write_pipe` share: checks `pipe` and makes it
/// non-blocking (see [`prepare`]; `call` names the caller), makes the protocol and the
/// transport's core (`build`), then at the next iteration runs `start` (`connection_made`,
/// then the first op) and retries what met a borrowed protocol. Returns once `start` has run.
pub(super) async fn connect<C: TransportCore, P>(
    event_loop: &EventLoop,
    call: &str,
    pipe: OwnedFd,
    protocol_factory: impl FnOnce() -> P,
    build: impl FnOnce(PipeFd, PipeKind, Rc<RefCell<P>>) -> C,
    start: impl FnOnce(&Rc<C>, PipeKind) + 'static,
) -> Result<(Rc<C>, Rc<RefCell<P>>)> {
    event_loop.check_open()?;
    let kind = prepare(&pipe, call)?;
    let protocol = Rc::new(RefCell::new(protocol_factory()));
    let core = Rc::new(build(PipeFd::new(event_loop, pipe), kind, protocol.clone()));
    let made = event_loop.create_future::<()>();
    let (starter, done) = (core.clone(), made.clone());
    event_loop.call_soon(move || {
        start(&starter, kind);
        starter.flush_deferred_later();
        let _ = done.set_result(());
    })?;
    made.await?;
    Ok((core, protocol))
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL takes no pointer.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: fcntl with F_SETFL takes an int.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The fd of a pipe transport and the loop it runs on.
pub(super) struct PipeFd {
    /// The loop.
    pub(super) event_loop: Weak<Inner>,
    /// The pipe; `None` once its close was submitted.
    pub(super) fd: RefCell<Option<OwnedFd>>,
    /// Its number, for ops and logs.
    pub(super) raw_fd: RawFd,
}

impl PipeFd {
    pub(super) fn new(event_loop: &EventLoop, fd: OwnedFd) -> PipeFd {
        PipeFd {
            event_loop: Rc::downgrade(&event_loop.inner),
            raw_fd: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
        }
    }

    pub(super) fn event_loop(&self) -> Option<EventLoop> {
        self.event_loop.upgrade().map(|inner| EventLoop { inner })
    }

    /// Submits `op` for `owner`; `None` if the loop is gone.
    pub(super) fn submit(&self, op: Op, owner: PipeOwner) -> Option<OpId> {
        self.event_loop()?.with_driver(|driver| driver.submit(op, OpOwner::Pipe(owner)))
    }

    /// Cancels the op in `slot`, if any.
    pub(super) fn cancel(&self, slot: &Cell<Option<OpId>>) {
        if let Some(id) = slot.take() {
            if let Some(event_loop) = self.event_loop() {
                event_loop.with_driver(|driver| driver.cancel(id));
            }
        }
    }

    /// Closes the fd through the driver: an `Op::Close` is ordered after every op submitted
    /// before it (a cancelled read or write), so none can reach a file that reuses the number.
    /// Without a loop (or driver) the fd is closed here.
    pub(super) fn close(&self) {
        let Some(fd) = self.fd.borrow_mut().take() else { return };
        let Some(event_loop) = self.event_loop() else { return drop(fd) };
        // The op owns the fd from here on; if the driver is gone the closure, and the fd with
        // it, is dropped unused, which closes it.
        event_loop.with_driver(move |driver| {
            driver.submit(Op::Close { fd: fd.into_raw_fd() }, OpOwner::Pipe(PipeOwner::Close))
        });
    }

    /// The fd while open (`get_extra_info("pipe")`).
    pub(super) fn raw(&self) -> Option<RawFd> {
        ExtraInfo::raw_fd(&self.fd)
    }

    /// Sends `context` (with the transport and fd filled in) to the exception handler.
    pub(super) fn report(&self, mut context: ExceptionContext, transport: impl Fn() -> String) {
        let Some(event_loop) = self.event_loop() else { return };
        context.transport = Some(transport());
        context.fd = Some(self.raw_fd);
        event_loop.call_exception_handler(context);
    }
}
