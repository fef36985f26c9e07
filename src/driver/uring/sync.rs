//! Ops the kernel's io_uring lacks (or `RINGLOOP_DISABLE` switches off), done with the
//! plain non-blocking syscall; `POLL_ADD` waits when that would block.
//!
//! # Implementation
//! An op without its opcode is *attempted* at submit: the syscall either finishes it (the
//! result is queued and delivered at the next `turn`, never inline) or would block (`EAGAIN`,
//! or `EINPROGRESS` for connect), and then a one-shot `POLL_ADD` for the readiness it needs
//! goes to the ring under the op's own `user_data`. At that poll's CQE the op is attempted
//! again (a connect reads `SO_ERROR` instead); another `EAGAIN` re-arms the poll.
//! `shutdown` and `close` never block.

use std::mem;
use std::os::fd::RawFd;

use crate::driver::Op;

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Finished: a CQE-style result (the value, or `-errno`).
    Done(i32),
    /// Would block: wait for these `poll(2)` bits on this fd, then [`after_poll`].
    Wait(RawFd, u32),
}

/// Runs `op`'s syscall once, without blocking (with non-blocking fds, as the contract has it).
pub(super) fn attempt(op: &mut Op) -> Attempt {
    let (fd, res, wait) = match op {
        Op::Poll { fd, interest } => return Attempt::Wait(*fd, interest.0),
        // Persistent ops wait first; `multi.rs` makes their syscalls at each readiness CQE.
        Op::RecvMulti { fd } | Op::AcceptMulti { fd } | Op::RecvMsgMulti { fd } => {
            return Attempt::Wait(*fd, libc::POLLIN as u32)
        }
        Op::Connect { fd, addr } => {
            let storage = &addr.storage as *const libc::sockaddr_storage;
            // SAFETY: `storage` points to the op's live `SockAddrBuf`, `len` meaningful bytes.
            let rc = unsafe { libc::connect(*fd, storage.cast(), addr.len) };
            match cqe_res(rc as isize) {
                // Under way (or interrupted, which leaves it under way): wait for writability.
                res if res == -libc::EINPROGRESS || res == -libc::EINTR => {
                    return Attempt::Wait(*fd, libc::POLLOUT as u32)
                }
                res => (*fd, res, 0),
            }
        }
        Op::Send { fd, buf, offset } => {
            let Some(bytes) = buf.get(*offset..) else { return Attempt::Done(-libc::EINVAL) };
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            // SAFETY: reads `bytes.len()` initialised bytes from the op's live `Bytes`.
            let n = unsafe { libc::send(*fd, bytes.as_ptr().cast(), bytes.len(), flags) };
            (*fd, cqe_res(n), libc::POLLOUT)
        }
        Op::SendMsg { fd, msg } => {
            let hdr = msg.header();
            let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
            // SAFETY: `hdr` is the op's live boxed header; `header()` just pointed it at live
            // memory inside the same box, which the kernel only reads.
            let n = unsafe { libc::sendmsg(*fd, hdr, flags) };
            (*fd, cqe_res(n), libc::POLLOUT)
        }
        Op::Read { fd, buf } => {
            let spare = buf.spare_capacity_mut();
            // SAFETY: writes at most `spare.len()` bytes into the vector's spare capacity,
            // which it owns; `set_len` happens at the completion, for the bytes written.
            let n = unsafe { libc::read(*fd, spare.as_mut_ptr().cast(), spare.len()) };
            (*fd, cqe_res(n), libc::POLLIN)
        }
        Op::Write { fd, buf, offset } => {
            let Some(bytes) = buf.get(*offset..) else { return Attempt::Done(-libc::EINVAL) };
            // SAFETY: reads `bytes.len()` initialised bytes from the op's live `Bytes`.
            let n = unsafe { libc::write(*fd, bytes.as_ptr().cast(), bytes.len()) };
            (*fd, cqe_res(n), libc::POLLOUT)
        }
        Op::Shutdown { fd, how } => {
            // SAFETY: shutdown takes no pointers.
            (*fd, cqe_res(unsafe { libc::shutdown(*fd, *how) } as isize), 0)
        }
        Op::Close { fd } => {
            // SAFETY: the op owns `fd` from submit on; nothing uses it after this.
            let res = cqe_res(unsafe { libc::close(*fd) } as isize);
            // On Linux the fd is gone even when close reports EINTR: that is success here.
            return Attempt::Done(if res == -libc::EINTR { 0 } else { res });
        }
    };
    match res {
        res if (res == -libc::EAGAIN || res == -libc::EINTR) && wait != 0 => {
            Attempt::Wait(fd, wait as u32)
        }
        res => Attempt::Done(res),
    }
}

/// The readiness a `Read` or `Write` whose opcode answered `EAGAIN` waits for before its
/// syscall is tried (`None` for other ops: their `EAGAIN` is final).
pub(super) fn wait_for(op: &Op) -> Option<(RawFd, u32)> {
    match *op {
        Op::Read { fd, .. } => Some((fd, libc::POLLIN as u32)),
        Op::Write { fd, .. } => Some((fd, libc::POLLOUT as u32)),
        _ => None,
    }
}

/// Continues `op` after its `POLL_ADD` completed with `res`.
pub(super) fn after_poll(op: &mut Op, res: i32) -> Attempt {
    if res < 0 {
        return Attempt::Done(res);
    }
    match op {
        Op::Connect { fd, .. } => Attempt::Done(match socket_error(*fd) {
            Ok(0) => 0,
            Ok(e) | Err(e) => -e,
        }),
        _ => attempt(op),
    }
}

/// `getsockopt(SO_ERROR)`: the pending error of a socket (0: none), or the errno of the call.
fn socket_error(fd: RawFd) -> Result<i32, i32> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    let ptr = (&mut err as *mut libc::c_int).cast();
    // SAFETY: `err` and `len` are live locals; `len` is `err`'s size.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, ptr, &mut len) };
    match cqe_res(rc as isize) {
        0.. => Ok(err),
        res => Err(-res),
    }
}

/// A syscall's return value as a CQE result: the value, or `-errno` for -1. Counts above
/// `i32::MAX` cannot happen (the kernel caps one transfer below 2 GiB).
fn cqe_res(rc: isize) -> i32 {
    if rc == -1 {
        -errno()
    } else {
        i32::try_from(rc).unwrap_or(i32::MAX)
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_fd_finishes_with_ebadf_and_send_checks_its_offset() {
        let mut op = Op::Shutdown { fd: -1, how: libc::SHUT_WR };
        assert_eq!(attempt(&mut op), Attempt::Done(-libc::EBADF));
        let mut op = Op::Send { fd: -1, buf: bytes::Bytes::from_static(b"ab"), offset: 3 };
        assert_eq!(attempt(&mut op), Attempt::Done(-libc::EINVAL));
        assert_eq!(after_poll(&mut op, -libc::ECANCELED), Attempt::Done(-libc::ECANCELED));
    }
}
