//! One recipe per op on epoll, in one place: the readiness it waits for ([`readiness`]),
//! whether it tries its syscall before waiting ([`tries_first`]), the syscall and what it makes
//! of the answer ([`start`], [`attempt`], [`attempt_persistent`]). The syscalls themselves are
//! in `syscall.rs`.
//!
//! Each gives the result io_uring would put in the op's CQE: `Ok(n)` or the errno. `EAGAIN` and
//! `EINTR` ([`syscall::would_block`]) never complete an op: it keeps waiting for readiness.

use std::io;
use std::os::fd::RawFd;

use super::syscall;
use crate::driver::dgram::DATAGRAM_CAPACITY;
use crate::driver::{BufPool, Op, RecvBuf, RecvMsgBuf};

/// Conditions reported whatever the interest, as io_uring's `POLL_ADD` reports them.
pub(super) const ALWAYS_REPORTED: u32 = (libc::POLLERR | libc::POLLHUP) as u32;
/// The interest bits that are events; the high bits are epoll flags (`EPOLLET`, `EPOLLONESHOT`,
/// ...) an op must not smuggle in, as registrations are shared and their triggering is the
/// table's choice (`FdTable::wanted`).
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
        // A pidfd is readable once its process exited.
        Op::WaitId { pidfd, .. } => (pidfd, IN),
        Op::RecvMulti { fd } | Op::AcceptMulti { fd } | Op::RecvMsgMulti { fd } => (fd, IN),
        Op::Connect { fd, .. } | Op::Send { fd, .. } | Op::Write { fd, .. } => (fd, OUT),
        Op::SendMsg { fd, .. } | Op::SendFile { fd, .. } => (fd, OUT),
    }
}

/// Whether `op` starts with a try at the next turn rather than by waiting for readiness: it has
/// a syscall to make before it can wait (`Connect`) or usually succeeds at once (`Send`,
/// `SendMsg`, `Write`: sockets and pipes are usually writable).
///
/// `SendFile` waits first: each chunk of a transfer asks for the rest of the file and gets what
/// the socket takes, so every chunk after the first finds the socket full, and a try would cost
/// a `sendfile(2)` that answers `EAGAIN`. One call per writability is what the raw baseline
/// makes; the first chunk pays a turn for it (`docs/benchmarks.md`, "sendfile").
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
        Op::SendFile { fd, file, offset, len } => {
            keep_waiting_on_eagain(syscall::sendfile(*fd, *file, *offset, *len))
        }
        Op::Poll { .. } | Op::Read { .. } | Op::WaitId { .. } => {
            unreachable!("only ops that try first are started")
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
        Op::Connect { fd, .. } => Some(syscall::socket_error(*fd)),
        Op::Send { fd, buf, offset } => keep_waiting_on_eagain(syscall::send(*fd, buf, *offset)),
        Op::SendMsg { fd, msg } => keep_waiting_on_eagain(syscall::sendmsg(*fd, msg)),
        Op::SendFile { fd, file, offset, len } => {
            keep_waiting_on_eagain(syscall::sendfile(*fd, *file, *offset, *len))
        }
        Op::Read { fd, buf } => keep_waiting_on_eagain(syscall::read(*fd, buf)),
        Op::Write { fd, buf, offset } => keep_waiting_on_eagain(syscall::write(*fd, buf, *offset)),
        // SAFETY: no kernel op writes `info` on epoll; the owner reads it only once the driver
        // let go of the op.
        Op::WaitId { pidfd, info } => match unsafe { info.reap(*pidfd) } {
            Ok(true) => Some(Ok(0)),
            // Still running (a readable pidfd says otherwise, but waiting on costs nothing).
            Ok(false) => None,
            result => keep_waiting_on_eagain(result.map(|_| 0)),
        },
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
    scratch: &mut Scratch,
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

/// What one syscall of a persistent op came to.
pub(crate) enum Persistent {
    /// Nothing (`EAGAIN`, `EINTR`, or a connection aborted before its accept): keep waiting.
    Wait,
    /// A result to hand over (a chunk, a datagram, a connection, or `EMSGSIZE`); keep waiting.
    More(io::Result<u32>, Option<RecvBuf>),
    /// The final result (end of stream, an error).
    End(io::Result<u32>),
}

/// The syscall of persistent `op` once its fd is readable: a `recv` into a buffer of `pool`,
/// handed over with the bytes; a `recvmsg` of one datagram into `scratch` (handed over as a
/// copy, with its sender); or an `accept`.
pub(crate) fn persistent_syscall(op: &Op, pool: &BufPool, scratch: &mut Scratch) -> Persistent {
    match *op {
        Op::RecvMulti { fd } => match pool.recv(fd) {
            Ok(None) => Persistent::End(Ok(0)),
            Ok(Some(bytes)) => Persistent::More(Ok(bytes.len() as u32), Some(bytes)),
            Err(e) if syscall::would_block(&e) => Persistent::Wait,
            Err(e) => Persistent::End(Err(e)),
        },
        Op::RecvMsgMulti { fd } => match recv_into_scratch(fd, scratch) {
            Ok(datagram) => Persistent::More(Ok(datagram.len() as u32), Some(datagram)),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Persistent::More(Err(e), None),
            Err(e) if syscall::would_block(&e) => Persistent::Wait,
            Err(e) => Persistent::End(Err(e)),
        },
        Op::AcceptMulti { fd } => match syscall::accept(fd) {
            Ok(new) => Persistent::More(Ok(new), None),
            // The peer gave up before the accept: not the listener's fault; wait for the next.
            Err(e) if syscall::would_block(&e) || e.raw_os_error() == Some(libc::ECONNABORTED) => {
                Persistent::Wait
            }
            Err(e) => Persistent::End(Err(e)),
        },
        _ => unreachable!("only persistent ops come here"),
    }
}

/// epoll's receive buffer for datagrams: one per driver, allocated (as a
/// [`RecvMsgBuf`] of [`DATAGRAM_CAPACITY`] bytes) at the first receive.
pub(crate) type Scratch = Option<Box<RecvMsgBuf>>;

/// One non-blocking `recvmsg(2)` of a datagram on `fd` into `scratch`, handed over as an
/// exact-size copy with its sender. `EMSGSIZE` for a datagram that did not fit (it is
/// consumed); other errors as the kernel gave them (`EAGAIN`: nothing queued).
pub(crate) fn recv_into_scratch(fd: RawFd, scratch: &mut Scratch) -> io::Result<RecvBuf> {
    let msg = scratch.get_or_insert_with(|| RecvMsgBuf::new(DATAGRAM_CAPACITY));
    let n = syscall::recvmsg(fd, msg)? as usize;
    if msg.truncated() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(RecvBuf::datagram(msg.data(n).to_vec(), msg.source()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn scratch_receives_whole_datagrams_and_reports_oversize_ones() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut scratch = None;
        let err = recv_into_scratch(b.as_raw_fd(), &mut scratch).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EAGAIN));
        a.send(&vec![1; DATAGRAM_CAPACITY + 1]).unwrap();
        a.send(b"").unwrap();
        a.send(&vec![2; DATAGRAM_CAPACITY]).unwrap();
        let err = recv_into_scratch(b.as_raw_fd(), &mut scratch).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
        let empty = recv_into_scratch(b.as_raw_fd(), &mut scratch).unwrap();
        assert!(empty.is_empty() && empty.source().is_none(), "{empty:?}");
        let full = recv_into_scratch(b.as_raw_fd(), &mut scratch).unwrap();
        assert_eq!(&*full, &vec![2; DATAGRAM_CAPACITY][..]);
    }
}
