//! Ops the kernel's io_uring lacks (or `RINGLOOP_DISABLE` switches off), done with the
//! plain non-blocking syscall (`driver/syscall.rs`, shared with epoll); `POLL_ADD` waits when
//! that would block.
//!
//! # Implementation
//! An op without its opcode is *attempted* at submit: the syscall either finishes it (the
//! result is queued and delivered at the next `turn`, never inline) or would block (`EAGAIN`,
//! or `EINPROGRESS` for connect), and then a one-shot `POLL_ADD` for the readiness it needs
//! goes to the ring under the op's own `user_data`. At that poll's CQE the op is attempted
//! again (a connect reads `SO_ERROR` instead); another `EAGAIN` re-arms the poll.
//! `shutdown` and `close` never block.

use std::os::fd::RawFd;

use super::op::cqe;
use crate::driver::syscall;
use crate::driver::Op;

/// What an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attempt {
    /// Finished: a CQE-style result (the value, or `-errno`).
    Done(i32),
    /// Would block: wait for these `poll(2)` bits on this fd, then [`after_poll`].
    Wait(RawFd, u32),
}

/// Runs `op`'s syscall (`driver/syscall.rs`) once, without blocking (with non-blocking fds,
/// as the contract has it).
pub(super) fn attempt(op: &mut Op) -> Attempt {
    const IN: u32 = libc::POLLIN as u32;
    const OUT: u32 = libc::POLLOUT as u32;
    let (fd, result, wait) = match op {
        Op::Poll { fd, interest } => return Attempt::Wait(*fd, interest.0),
        // Persistent ops wait first; `multi.rs` makes their syscalls at each readiness CQE.
        Op::RecvMulti { fd } | Op::AcceptMulti { fd } | Op::RecvMsgMulti { fd } => {
            return Attempt::Wait(*fd, IN)
        }
        Op::Connect { fd, addr } => match syscall::connect(*fd, addr) {
            // Under way: wait for writability.
            Err(e) if syscall::in_progress(&e) => return Attempt::Wait(*fd, OUT),
            result => (*fd, result, None),
        },
        Op::Send { fd, buf, offset } => (*fd, syscall::send(*fd, buf, *offset), Some(OUT)),
        Op::SendMsg { fd, msg } => (*fd, syscall::sendmsg(*fd, msg), Some(OUT)),
        // `read` extends `buf` by the count itself (the opcode route does it at the CQE).
        Op::Read { fd, buf } => (*fd, syscall::read(*fd, buf), Some(IN)),
        Op::Write { fd, buf, offset } => (*fd, syscall::write(*fd, buf, *offset), Some(OUT)),
        Op::Shutdown { fd, how } => (*fd, syscall::shutdown(*fd, *how), None),
        Op::Close { fd } => (*fd, syscall::close(*fd), None),
    };
    match (result, wait) {
        (Err(e), Some(bits)) if syscall::would_block(&e) => Attempt::Wait(fd, bits),
        (result, _) => Attempt::Done(cqe(result)),
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
        Op::Connect { fd, .. } => Attempt::Done(cqe(syscall::socket_error(*fd))),
        _ => attempt(op),
    }
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
