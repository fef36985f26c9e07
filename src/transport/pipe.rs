//! What the pipe transports share: the checks and the
//! non-blocking switch that `connect_read_pipe`/`connect_write_pipe` apply. The fd and its
//! loop are a [`LoopFd`].
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

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use super::dispatch::TransportCore;
use super::loop_fd::LoopFd;
use crate::error::{Error, Result};
use crate::event_loop::EventLoop;

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
    build: impl FnOnce(LoopFd, PipeKind, Rc<RefCell<P>>) -> C,
    start: impl FnOnce(&Rc<C>, PipeKind) + 'static,
) -> Result<(Rc<C>, Rc<RefCell<P>>)> {
    event_loop.check_open()?;
    let kind = prepare(&pipe, call)?;
    let protocol = Rc::new(RefCell::new(protocol_factory()));
    let core = Rc::new(build(LoopFd::new(event_loop, pipe), kind, protocol.clone()));
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
