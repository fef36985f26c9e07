//! What each op does on epoll: the readiness it waits for and its non-blocking syscall.
//!
//! Each syscall gives the result io_uring would put in the op's CQE: `Ok(n)` or the errno.
//! `EAGAIN` (and `EINTR`) never complete an op: it keeps waiting for readiness instead.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use ringloop_fallback::syscall;

use crate::driver::{persistent_syscall, BufPool, Op, Persistent, SendMsgBuf, SockAddrBuf};

/// Conditions reported whatever the interest, as io_uring's `POLL_ADD` reports them.
pub(super) const ALWAYS_REPORTED: u32 = (libc::POLLERR | libc::POLLHUP) as u32;
/// The interest bits that are events; the high bits are epoll flags (`EPOLLET`, `EPOLLONESHOT`,
/// ...) an op must not smuggle in, as registrations are shared and level-triggered.
const EVENT_BITS: u32 = 0xffff;
/// Readable.
const IN: u32 = libc::POLLIN as u32;
/// Writable.
const OUT: u32 = libc::POLLOUT as u32;
/// The most bytes one recv or send moves: io_uring results are `i32`.
const MAX_IO: usize = i32::MAX as usize;

/// The fd `op` works on and the readiness it waits for (`poll(2)` bits; 0 if it never waits).
pub(super) fn readiness(op: &Op) -> (RawFd, u32) {
    match *op {
        Op::Poll { fd, interest } => (fd, interest.0 & EVENT_BITS),
        Op::Read { fd, .. } => (fd, IN),
        Op::RecvMulti { fd } | Op::AcceptMulti { fd } | Op::RecvMsgMulti { fd } => (fd, IN),
        Op::Connect { fd, .. } | Op::Send { fd, .. } | Op::Write { fd, .. } => (fd, OUT),
        Op::SendMsg { fd, .. } => (fd, OUT),
        Op::Shutdown { fd, .. } | Op::Close { fd } => (fd, 0),
    }
}

/// Whether `op` starts with a try at the next turn rather than by waiting for readiness: it has
/// a syscall to make before it can wait (`Connect`), usually succeeds at once (`Send`,
/// `Write`: sockets and pipes are usually writable) or never waits (`Shutdown`, `Close`).
pub(super) fn tries_first(op: &Op) -> bool {
    matches!(
        op,
        Op::Connect { .. }
            | Op::Send { .. }
            | Op::Write { .. }
            | Op::SendMsg { .. }
            | Op::Shutdown { .. }
            | Op::Close { .. }
    )
}

/// The first try of a [`tries_first`] op, at the start of a turn; `None`: wait for readiness.
///
/// `Close` is the table's business (it forgets the fd first): see [`close`].
pub(super) fn start(op: &mut Op) -> Option<io::Result<u32>> {
    match op {
        Op::Connect { fd, addr } => match connect(*fd, addr) {
            // Under way (a signal cannot stop a non-blocking connect): POLLOUT says when done.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => None,
            result => Some(result),
        },
        Op::Send { fd, buf, offset } => keep_waiting_on_eagain(send(*fd, buf, *offset)),
        Op::Write { fd, buf, offset } => keep_waiting_on_eagain(write(*fd, buf, *offset)),
        Op::Shutdown { fd, how } => Some(shutdown(*fd, *how)),
        Op::SendMsg { fd, msg } => keep_waiting_on_eagain(sendmsg(*fd, msg)),
        Op::Poll { .. } | Op::Read { .. } | Op::Close { .. } => {
            unreachable!("only ops that try first are started, and Close by the table")
        }
        Op::RecvMulti { .. } | Op::AcceptMulti { .. } | Op::RecvMsgMulti { .. } => {
            unreachable!("persistent ops wait first")
        }
    }
}

/// Tries to finish waiting `op` now that its fd reports `revents`; `None` keeps it waiting.
///
/// An op is tried only if `revents` has what it waits for, or `POLLERR`/`POLLHUP`: then the
/// syscall itself reports the real error or the end of the stream.
pub(super) fn attempt(op: &mut Op, revents: u32) -> Option<io::Result<u32>> {
    let hit = revents & (readiness(op).1 | ALWAYS_REPORTED);
    if hit == 0 {
        return None;
    }
    match op {
        Op::Poll { .. } => Some(Ok(hit)),
        Op::Connect { fd, .. } => Some(socket_error(*fd)),
        Op::Send { fd, buf, offset } => keep_waiting_on_eagain(send(*fd, buf, *offset)),
        Op::SendMsg { fd, msg } => keep_waiting_on_eagain(sendmsg(*fd, msg)),
        Op::Read { fd, buf } => keep_waiting_on_eagain(read(*fd, buf)),
        Op::Write { fd, buf, offset } => keep_waiting_on_eagain(write(*fd, buf, *offset)),
        Op::Shutdown { .. } | Op::Close { .. } => unreachable!("{op:?} never waits"),
        Op::RecvMulti { .. } | Op::AcceptMulti { .. } | Op::RecvMsgMulti { .. } => {
            unreachable!("see attempt_persistent")
        }
    }
}

/// Whether `op` is persistent: it completes many times (see the contract).
pub(super) fn is_persistent(op: &Op) -> bool {
    matches!(op, Op::RecvMulti { .. } | Op::AcceptMulti { .. } | Op::RecvMsgMulti { .. })
}

/// One syscall of persistent `op` now that its fd reports `revents` (see
/// [`persistent_syscall`]): `pool` holds the buffers every `RecvMulti` shares, `scratch` the
/// one every `RecvMsgMulti` receives into.
pub(super) fn attempt_persistent(
    op: &Op,
    revents: u32,
    pool: &BufPool,
    scratch: &mut crate::driver::dgram::Scratch,
) -> Persistent {
    if revents & (IN | ALWAYS_REPORTED) == 0 {
        return Persistent::Wait;
    }
    persistent_syscall(op, pool, scratch)
}

/// `None` (keep waiting) for `EAGAIN` and `EINTR`, the final result otherwise.
fn keep_waiting_on_eagain(result: io::Result<u32>) -> Option<io::Result<u32>> {
    match result {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) => None,
        result => Some(result),
    }
}

/// The size of a `sockaddr_storage`, the most any address takes.
fn storage_len() -> libc::socklen_t {
    mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
}

/// `connect(fd, addr)`: 0, or the errno (`EINPROGRESS` for a non-blocking socket).
fn connect(fd: RawFd, addr: &SockAddrBuf) -> io::Result<u32> {
    let len = addr.len.min(storage_len());
    // SAFETY: the kernel reads at most `len` bytes of the live sockaddr_storage `addr.storage`.
    syscall!(unsafe {
        libc::connect(fd, (&addr.storage as *const libc::sockaddr_storage).cast(), len)
    })?;
    Ok(0)
}

/// The outcome of a non-blocking connect, once the socket is writable: `SO_ERROR`.
fn socket_error(fd: RawFd) -> io::Result<u32> {
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the live c_int `error` and updates the
    // live socklen_t `len`.
    syscall!(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut error as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    match error {
        0 => Ok(0),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `send(MSG_NOSIGNAL | MSG_DONTWAIT)` of `buf[offset..]`: the count sent (may be short).
fn send(fd: RawFd, buf: &[u8], offset: usize) -> io::Result<u32> {
    let Some(bytes) = buf.get(offset..) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    let len = bytes.len().min(MAX_IO);
    // SAFETY: the kernel reads at most `len` bytes of the live slice `bytes`.
    let n = syscall!(unsafe { libc::send(fd, bytes.as_ptr().cast(), len, flags) })?;
    Ok(n as u32)
}

/// `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` of the datagram in `msg`: the count sent.
fn sendmsg(fd: RawFd, msg: &mut SendMsgBuf) -> io::Result<u32> {
    let hdr = msg.header();
    // SAFETY: `hdr` points at the live boxed header, whose iovec and address pointers
    // `header()` just set to live memory inside `msg`; the kernel only reads them.
    let n = syscall!(unsafe { libc::sendmsg(fd, hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) })?;
    Ok(n as u32)
}

/// `read(2)` into the spare capacity of `buf`, which grows by the count read (0: end of file).
/// The fd is expected to be non-blocking (the pipe transports make it so): the read is only
/// tried once epoll reports it readable, but a blocking fd could still block if another
/// reader drained it meanwhile. A regular file (which epoll refuses) reads at once.
fn read(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<u32> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(MAX_IO);
    // SAFETY: the kernel writes at most `len` bytes into `spare`, live memory owned by `buf`.
    let n = syscall!(unsafe { libc::read(fd, spare.as_mut_ptr().cast(), len) })? as usize;
    // SAFETY: the kernel initialised the first `n <= len` bytes of the spare capacity, so the
    // first `buf.len() + n` bytes are initialised and within the capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n as u32)
}

/// `write(2)` of `buf[offset..]`: the count written (may be short).
fn write(fd: RawFd, buf: &[u8], offset: usize) -> io::Result<u32> {
    let Some(bytes) = buf.get(offset..) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let len = bytes.len().min(MAX_IO);
    // SAFETY: the kernel reads at most `len` bytes of the live slice `bytes`.
    let n = syscall!(unsafe { libc::write(fd, bytes.as_ptr().cast(), len) })?;
    Ok(n as u32)
}

/// `shutdown(fd, how)`: 0.
fn shutdown(fd: RawFd, how: i32) -> io::Result<u32> {
    // SAFETY: shutdown takes no pointers.
    syscall!(unsafe { libc::shutdown(fd, how) })?;
    Ok(0)
}

/// `close(fd)`: 0. The caller owns `fd` (an `Op::Close` owns it from submit on) and has made
/// the driver forget it.
pub(super) fn close(fd: RawFd) -> io::Result<u32> {
    // SAFETY: close takes no pointers; `fd` is owned by the op, so nothing else closes it or
    // uses its number meanwhile.
    syscall!(unsafe { libc::close(fd) })?;
    Ok(0)
}
