//! The non-blocking syscall behind each op, which epoll makes at readiness.
//!
//! Each returns what the op's CQE would carry on io_uring: `Ok(n)` or the errno. None of them
//! decides whether to wait: [`would_block`] (and [`in_progress`] for a connect) tell the caller.
//! Transfers are capped at [`MAX_IO`] bytes, as the io_uring SQEs are, so a count always fits a
//! CQE's `i32` result.

use std::io;
use std::mem;
use std::os::fd::RawFd;

use crate::driver::{RecvMsgBuf, SendMsgBuf, SockAddrBuf, MAX_IO};
use crate::sys::syscall;
pub(crate) use crate::sys::would_block;

/// The size of a `sockaddr_storage`, the most any address takes.
const STORAGE_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Whether a [`connect`] error says the connection is under way (`EINPROGRESS`, or `EINTR`,
/// which leaves a non-blocking connect under way): wait for `POLLOUT`, then [`socket_error`].
pub(crate) fn in_progress(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR))
}

/// `connect(fd, addr)`: 0, or the errno (see [`in_progress`]).
pub(crate) fn connect(fd: RawFd, addr: &SockAddrBuf) -> io::Result<u32> {
    let len = addr.len.min(STORAGE_LEN);
    let storage = (&addr.storage as *const libc::sockaddr_storage).cast();
    // SAFETY: the kernel reads at most `len` bytes of the live sockaddr_storage `addr.storage`.
    syscall!(unsafe { libc::connect(fd, storage, len) })?;
    Ok(0)
}

/// The outcome of a non-blocking connect once the socket is writable (`SO_ERROR`): 0, or the
/// pending error (or the errno of `getsockopt` itself).
pub(crate) fn socket_error(fd: RawFd) -> io::Result<u32> {
    match socket_option(fd, libc::SO_ERROR)? {
        0 => Ok(0),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Whether `fd` is a TCP socket (`SO_PROTOCOL`); false for anything else and on error.
pub(crate) fn is_tcp(fd: RawFd) -> bool {
    socket_option(fd, libc::SO_PROTOCOL).is_ok_and(|protocol| protocol == libc::IPPROTO_TCP)
}

/// The `c_int` value of socket option `name` at level `SOL_SOCKET`.
fn socket_option(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    let ptr = (&mut value as *mut libc::c_int).cast();
    // SAFETY: the kernel writes at most `len` bytes into the live c_int `value` and updates the
    // live socklen_t `len`.
    syscall!(unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, name, ptr, &mut len) })?;
    Ok(value)
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)` without the peer's address: the new fd.
pub(crate) fn accept(fd: RawFd) -> io::Result<u32> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let (addr, len) = (std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: accept4 with null address pointers writes no memory.
    let new = syscall!(unsafe { libc::accept4(fd, addr, len, flags) })?;
    Ok(new as u32)
}

/// `recv(MSG_DONTWAIT)` into the spare capacity of `buf`, which grows by the count received
/// (0: end of stream). MSG_DONTWAIT keeps even a blocking socket from blocking the loop.
#[inline]
pub(crate) fn recv(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<u32> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(MAX_IO);
    let n = crate::sys::recv(fd, &mut spare[..len], libc::MSG_DONTWAIT)?;
    // SAFETY: the kernel initialised the first `n <= len` bytes of the spare capacity, so the
    // first `buf.len() + n` bytes are initialised and within the capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n as u32)
}

/// `send(MSG_NOSIGNAL | MSG_DONTWAIT)` of `buf[offset..]`: the count sent (may be short);
/// `EINVAL` for an offset past the end.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8], offset: usize) -> io::Result<u32> {
    let bytes = tail(buf, offset)?;
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
    let len = bytes.len().min(MAX_IO);
    Ok(crate::sys::send(fd, &bytes[..len], flags)? as u32)
}

/// `recvmsg(MSG_DONTWAIT)` of one datagram into `msg`: the count taken (the datagram, its
/// sender and `MSG_TRUNC` are in `msg`).
pub(crate) fn recvmsg(fd: RawFd, msg: &mut RecvMsgBuf) -> io::Result<u32> {
    let hdr = msg.header();
    // SAFETY: `hdr` points at the live boxed header, whose iovec, address and data pointers
    // `header()` just set to live memory of the given sizes inside `msg`.
    let n = unsafe { crate::sys::recvmsg(fd, hdr, libc::MSG_DONTWAIT) }?;
    Ok(n as u32)
}

/// `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` of the datagram in `msg`: the count sent.
pub(crate) fn sendmsg(fd: RawFd, msg: &mut SendMsgBuf) -> io::Result<u32> {
    let hdr = msg.header();
    // SAFETY: `hdr` points at the live boxed header, whose iovec and address pointers
    // `header()` just set to live memory inside `msg`; the kernel only reads them.
    let n = unsafe { crate::sys::sendmsg(fd, hdr, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) }?;
    Ok(n as u32)
}

/// `read(2)` into the spare capacity of `buf`, which grows by the count read (0: end of file).
/// The fd is expected to be non-blocking (the pipe transports make it so): a blocking one would
/// block the loop if another reader drained it after its readiness. A regular file reads at once.
pub(crate) fn read(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<u32> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(MAX_IO);
    // SAFETY: the kernel writes at most `len` bytes into `spare`, live memory owned by `buf`.
    let n = syscall!(unsafe { libc::read(fd, spare.as_mut_ptr().cast(), len) })? as usize;
    // SAFETY: the kernel initialised the first `n <= len` bytes of the spare capacity, so the
    // first `buf.len() + n` bytes are initialised and within the capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n as u32)
}

/// `write(2)` of `buf[offset..]`: the count written (may be short); `EINVAL` for an offset
/// past the end.
pub(crate) fn write(fd: RawFd, buf: &[u8], offset: usize) -> io::Result<u32> {
    let bytes = tail(buf, offset)?;
    let len = bytes.len().min(MAX_IO);
    // SAFETY: the kernel reads at most `len` bytes of the live slice `bytes`.
    let n = syscall!(unsafe { libc::write(fd, bytes.as_ptr().cast(), len) })?;
    Ok(n as u32)
}

/// `sendfile(socket, file, &offset, len)`: the bytes sent (0 at the end of the file). The
/// file's position does not move.
pub(crate) fn sendfile(socket: RawFd, file: RawFd, offset: u64, len: u32) -> io::Result<u32> {
    let mut off = libc::off64_t::try_from(offset).map_err(|_| einval())?;
    let len = (len as usize).min(MAX_IO);
    // SAFETY: the kernel reads and updates the live `off64_t` `off`; no other memory is passed.
    let n = syscall!(unsafe { libc::sendfile64(socket, file, &mut off, len) })?;
    Ok(n as u32)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// `buf[offset..]`, or `EINVAL` for an offset past the end.
fn tail(buf: &[u8], offset: usize) -> io::Result<&[u8]> {
    buf.get(offset..).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fds_and_offsets_are_errnos() {
        let errno = |r: io::Result<u32>| r.unwrap_err().raw_os_error();
        assert_eq!(errno(send(-1, b"ab", 3)), Some(libc::EINVAL));
        assert_eq!(errno(write(-1, b"ab", 3)), Some(libc::EINVAL));
        assert_eq!(errno(send(-1, b"ab", 2)), Some(libc::EBADF));
        assert_eq!(errno(read(-1, &mut Vec::with_capacity(4))), Some(libc::EBADF));
    }
}
