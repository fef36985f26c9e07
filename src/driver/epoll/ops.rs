//! What each op does on epoll: the readiness it waits for, and when it makes its non-blocking
//! syscall (`driver/syscall.rs`, shared with io_uring's syscall routes).
//!
//! Each syscall gives the result io_uring would put in the op's CQE: `Ok(n)` or the errno.
//! `EAGAIN` (and `EINTR`) never complete an op: it keeps waiting for readiness instead.

use std::io;
use std::os::fd::RawFd;

use crate::driver::dgram;
use crate::driver::syscall::{self, persistent_syscall, Persistent};
use crate::driver::{BufPool, Op};

/// Conditions reported whatever the interest, as io_uring's `POLL_ADD` reports them.
pub(super) const ALWAYS_REPORTED: u32 = (libc::POLLERR | libc::POLLHUP) as u32;
/// The interest bits that are events; the high bits are epoll flags (`EPOLLET`, `EPOLLONESHOT`,
/// ...) an op must not smuggle in, as registrations are shared and level-triggered.
const EVENT_BITS: u32 = 0xffff;
/// Readable.
const IN: u32 = libc::POLLIN as u32;
/// Writable.
const OUT: u32 = libc::POLLOUT as u32;

/// The fd `op` works on and the readiness it waits for (`poll(2)` bits; 0 if it never waits).
pub(super) fn readiness(op: &Op) -> (RawFd, u32) {
    match *op {
        Op::Poll { fd, interest } => (fd, interest.0 & EVENT_BITS),
        Op::Read { fd, .. } => (fd, IN),
        Op::RecvMulti { fd } | Op::AcceptMulti { fd } | Op::RecvMsgMulti { fd } => (fd, IN),
        Op::Connect { fd, .. } | Op::Send { fd, .. } | Op::Write { fd, .. } => (fd, OUT),
        Op::SendMsg { fd, .. } => (fd, OUT),
    }
}

/// Whether `op` starts with a try at the next turn rather than by waiting for readiness: it has
/// a syscall to make before it can wait (`Connect`) or usually succeeds at once (`Send`,
/// `SendMsg`, `Write`: sockets and pipes are usually writable).
pub(super) fn tries_first(op: &Op) -> bool {
    matches!(op, Op::Connect { .. } | Op::Send { .. } | Op::Write { .. } | Op::SendMsg { .. })
}

/// The first try of a [`tries_first`] op, at the start of a turn; `None`: wait for readiness.
pub(super) fn start(op: &mut Op) -> Option<io::Result<u32>> {
    match op {
        Op::Connect { fd, addr } => match syscall::connect(*fd, addr) {
            // Under way: POLLOUT says when done.
            Err(e) if syscall::in_progress(&e) => None,
            result => Some(result),
        },
        Op::Send { fd, buf, offset } => keep_waiting_on_eagain(syscall::send(*fd, buf, *offset)),
        Op::Write { fd, buf, offset } => keep_waiting_on_eagain(syscall::write(*fd, buf, *offset)),
        Op::SendMsg { fd, msg } => keep_waiting_on_eagain(syscall::sendmsg(*fd, msg)),
        Op::Poll { .. } | Op::Read { .. } => unreachable!("only ops that try first are started"),
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
        Op::Connect { fd, .. } => Some(syscall::socket_error(*fd)),
        Op::Send { fd, buf, offset } => keep_waiting_on_eagain(syscall::send(*fd, buf, *offset)),
        Op::SendMsg { fd, msg } => keep_waiting_on_eagain(syscall::sendmsg(*fd, msg)),
        Op::Read { fd, buf } => keep_waiting_on_eagain(syscall::read(*fd, buf)),
        Op::Write { fd, buf, offset } => keep_waiting_on_eagain(syscall::write(*fd, buf, *offset)),
        Op::RecvMulti { .. } | Op::AcceptMulti { .. } | Op::RecvMsgMulti { .. } => {
            unreachable!("see attempt_persistent")
        }
    }
}

/// One syscall of persistent `op` now that its fd reports `revents` (see
/// [`persistent_syscall`]): `pool` holds the buffers every `RecvMulti` shares, `scratch` the
/// one every `RecvMsgMulti` receives into.
pub(super) fn attempt_persistent(
    op: &Op,
    revents: u32,
    pool: &BufPool,
    scratch: &mut dgram::Scratch,
) -> Persistent {
    if revents & (IN | ALWAYS_REPORTED) == 0 {
        return Persistent::Wait;
    }
    persistent_syscall(op, pool, scratch)
}

/// `None` (keep waiting) for `EAGAIN` and `EINTR`, the final result otherwise.
fn keep_waiting_on_eagain(result: io::Result<u32>) -> Option<io::Result<u32>> {
    match result {
        Err(e) if syscall::would_block(&e) => None,
        result => Some(result),
    }
}
