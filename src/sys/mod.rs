//! The crate's one wrapper around raw syscalls, and the eventfd both backends wake with.
//!
//! Calls that `nix` wraps safely (`fcntl` on an fd the caller holds, `eventfd`, `pipe2`, ...) go
//! through `nix`; the rest through [`syscall!`], which turns the `-1` of a raw call into the
//! errno, once. [`retry_eintr`] repeats a call that a signal interrupted, and [`would_block`]
//! says whether an error only means "not now". [`send`], [`recv`], [`sendmsg`] and
//! [`recvmsg`], the loop's per-message socket calls, skip glibc's cancellation-point wrappers.

use std::io;
#[cfg(any(test, feature = "fallback"))]
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

mod eventfd;

pub(crate) use eventfd::EventFd;

/// Evaluates a raw syscall's return value once and turns `-1` into
/// `Err(io::Error::last_os_error())`, anything else into `Ok(value)`.
///
/// The caller writes the `unsafe` block (and its `// SAFETY:` comment) itself:
/// `syscall!(unsafe { libc::close(fd) })`.
macro_rules! syscall {
    ($ret:expr) => {{
        let ret = $ret;
        if ret == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }};
}

pub(crate) use syscall;

/// Runs `call` again for as long as it fails with `EINTR` (a signal arrived before it did
/// anything); returns its first other result.
#[inline]
pub(crate) fn retry_eintr<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// `sendto(fd, buf, flags)` with no address, made through `syscall(2)` rather than glibc's
/// `send`: that one is a cancellation point, which in a process of more than one thread
/// brackets every call with `pthread_enable_asynccancel`/`pthread_disable_asynccancel`
/// (about 1% of a server's CPU in the HTTP benchmark). The loop's sends carry `MSG_DONTWAIT`
/// and never block, so cancellation has nothing to interrupt. The count sent, maybe short.
#[inline]
pub(crate) fn send(fd: RawFd, buf: &[u8], flags: libc::c_int) -> io::Result<usize> {
    send_to(fd, buf, flags, None)
}

/// `sendto(fd, buf, flags, to)` through `syscall(2)` (see [`send`]): the count sent. With
/// `to`, the datagram goes there; without, to the connected peer.
#[inline]
pub(crate) fn send_to(
    fd: RawFd,
    buf: &[u8],
    flags: libc::c_int,
    to: Option<&socket2::SockAddr>,
) -> io::Result<usize> {
    let (fd, flags) = (fd as libc::c_long, flags as libc::c_long);
    let (addr, addr_len) = to.map_or((std::ptr::null(), 0), |to| (to.as_ptr(), to.len()));
    let addr_len = addr_len as libc::c_long;
    // SAFETY: the kernel reads at most `buf.len()` bytes of the live slice `buf`, and
    // `addr_len` bytes of the live address `to` (or none: null, length 0). Every argument is
    // a `long` or a pointer, as `syscall(2)` reads them.
    let n = syscall!(unsafe {
        libc::syscall(libc::SYS_sendto, fd, buf.as_ptr(), buf.len(), flags, addr, addr_len)
    })?;
    Ok(n as usize)
}

/// `recvfrom(fd, buf, flags)` with no address, through `syscall(2)` (see [`send`]): the count
/// received into the first bytes of `buf` (0: end of stream).
#[cfg(any(test, feature = "fallback"))]
#[inline]
pub(crate) fn recv(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
    flags: libc::c_int,
) -> io::Result<usize> {
    let (fd, flags) = (fd as libc::c_long, flags as libc::c_long);
    let (addr, addr_len) =
        (std::ptr::null_mut::<libc::sockaddr>(), std::ptr::null_mut::<libc::socklen_t>());
    // SAFETY: the kernel writes at most `buf.len()` bytes into the live slice `buf`, and no
    // address (null pointers). Every argument is a `long` or a pointer (see `send`).
    let n = syscall!(unsafe {
        libc::syscall(libc::SYS_recvfrom, fd, buf.as_mut_ptr(), buf.len(), flags, addr, addr_len)
    })?;
    Ok(n as usize)
}

/// `sendmsg(fd, hdr, flags)` through `syscall(2)` (see [`send`]): the count sent.
///
/// # Safety
/// `hdr` must point at a live `msghdr` whose iovecs, address and control pointers describe
/// live memory of the lengths it gives.
#[cfg(feature = "fallback")]
pub(crate) unsafe fn sendmsg(
    fd: RawFd,
    hdr: *const libc::msghdr,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: the caller's contract: the kernel only reads `hdr` and what it points at.
    unsafe { msg_call(libc::SYS_sendmsg, fd, hdr, flags) }
}

/// `recvmsg(fd, hdr, flags)` through `syscall(2)` (see [`send`]): the count received.
///
/// # Safety
/// `hdr` must point at a live `msghdr` whose iovecs, address and control pointers describe
/// live, writable memory of the lengths it gives.
#[cfg(feature = "fallback")]
pub(crate) unsafe fn recvmsg(
    fd: RawFd,
    hdr: *mut libc::msghdr,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: the caller's contract: the kernel writes only within what `hdr` describes.
    unsafe { msg_call(libc::SYS_recvmsg, fd, hdr, flags) }
}

/// `sendmsg` or `recvmsg` (`number`) through `syscall(2)`, every argument a `long` or a
/// pointer: the count.
///
/// # Safety
/// As [`sendmsg`] or [`recvmsg`], whichever `number` names.
#[cfg(feature = "fallback")]
unsafe fn msg_call(
    number: libc::c_long,
    fd: RawFd,
    hdr: *const libc::msghdr,
    flags: libc::c_int,
) -> io::Result<usize> {
    let (fd, flags) = (fd as libc::c_long, flags as libc::c_long);
    // SAFETY: the caller's contract.
    let n = syscall!(unsafe { libc::syscall(number, fd, hdr, flags) })?;
    Ok(n as usize)
}

/// Whether `err` only says "not now" (`EAGAIN`, which is `EWOULDBLOCK`, or `EINTR`): wait for
/// readiness and try again.
pub(crate) fn would_block(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno<T: std::fmt::Debug>(result: io::Result<T>) -> Option<i32> {
        result.unwrap_err().raw_os_error()
    }

    #[test]
    fn syscall_maps_minus_one_to_the_errno_and_keeps_other_values() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: F_GETFD passes no memory; `fd` is open (owned by `file`).
        let flags = syscall!(unsafe { libc::fcntl(fd, libc::F_GETFD) });
        assert_eq!(flags.unwrap(), libc::FD_CLOEXEC);
        // SAFETY: F_GETFD passes no memory; -1 is never an open fd.
        assert_eq!(errno(syscall!(unsafe { libc::fcntl(-1, libc::F_GETFD) })), Some(libc::EBADF));
        let mut byte = 0u8;
        // SAFETY: reads at most 1 byte into a live local (from no fd: -1 fails first).
        let n = syscall!(unsafe { libc::read(-1, (&mut byte as *mut u8).cast(), 1) });
        assert_eq!(errno(n), Some(libc::EBADF));
        // SAFETY: reads at most 1 byte into a live local from the open `fd` (/dev/null: EOF).
        let n =
            retry_eintr(|| syscall!(unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) }));
        assert_eq!(n.unwrap(), 0);
    }

    #[test]
    fn retry_eintr_repeats_only_interrupted_calls() {
        let mut calls = 0;
        let result = retry_eintr(|| {
            calls += 1;
            match calls {
                1 | 2 => Err(io::Error::from_raw_os_error(libc::EINTR)),
                _ => Ok(calls),
            }
        });
        assert_eq!((result.unwrap(), calls), (3, 3));

        let mut calls = 0;
        let result = retry_eintr(|| -> io::Result<()> {
            calls += 1;
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        });
        assert_eq!((errno(result), calls), (Some(libc::EAGAIN), 1));
    }

    #[test]
    fn send_and_recv_move_bytes_and_report_errnos() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        assert_eq!(send(a.as_raw_fd(), b"hello", flags).unwrap(), 5);
        let mut buf = [MaybeUninit::new(0u8); 8];
        assert_eq!(recv(b.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT).unwrap(), 5);
        // SAFETY: `buf` was fully initialised above.
        assert_eq!(
            unsafe { std::mem::transmute::<[MaybeUninit<u8>; 8], [u8; 8]>(buf) }[..5],
            *b"hello"
        );
        assert_eq!(errno(recv(b.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT)), Some(libc::EAGAIN));
        assert_eq!(errno(send(-1, b"x", flags)), Some(libc::EBADF));
        drop(b);
        assert_eq!(errno(send(a.as_raw_fd(), b"x", flags)), Some(libc::EPIPE));
        assert_eq!(recv(a.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT).unwrap(), 0, "end of stream");
    }

    #[test]
    fn would_block_is_eagain_and_eintr_only() {
        let e = io::Error::from_raw_os_error;
        assert!(would_block(&e(libc::EAGAIN)) && would_block(&e(libc::EWOULDBLOCK)));
        assert!(would_block(&e(libc::EINTR)));
        assert!(!would_block(&e(libc::EPIPE)) && !would_block(&e(libc::EINPROGRESS)));
        assert!(!would_block(&io::Error::other("not an errno")));
    }
}
