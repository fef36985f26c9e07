//! The backend seam: completion-style operations under one contract, two backends.
//!
//! Everything above this module (the loop, transports, servers) is backend-agnostic; everything
//! OS-specific lives below it: `uring/` (io_uring, the proactor) and `epoll/` (readiness
//! emulating the same completions, feature `fallback`). [`any::Driver`] picks one at run time.
//!
//! # The contract every backend meets
//!
//! * **Ops.** One-shot: [`Op::Poll`], [`Op::Connect`], [`Op::Send`], [`Op::SendMsg`],
//!   [`Op::Read`], [`Op::Write`], [`Op::SendFile`], [`Op::WaitId`]. Persistent (below):
//!   [`Op::RecvMulti`], [`Op::RecvMsgMulti`], [`Op::AcceptMulti`]. Sockets receive and
//!   accept only through the persistent ops (the `sock_*` calls use `Poll` and their own
//!   syscalls).
//! * **Submission.** [`Driver::submit`](any::Driver::submit) takes an [`Op`] (which owns every
//!   buffer and address the kernel may touch) and an *owner* value `T` chosen by the loop, and
//!   returns an [`OpId`]. The op is queued: it reaches the kernel at the next
//!   [`turn`](any::Driver::turn), not before; submission makes no syscall, never blocks and
//!   never calls back.
//! * **Completion.** [`turn`](any::Driver::turn) submits everything queued, then waits (one
//!   `io_uring_enter` or `epoll_wait`) until at least one completion is ready, the timeout
//!   passes, or the [`EventFd`] from [`waker`](any::Driver::waker) is woken; it appends the
//!   completions to the caller's vector and returns (even when it then returns an error:
//!   the caller dispatches what is in the vector either way). It never runs loop code:
//!   dispatch happens after it returns, so handlers may submit and cancel freely. A completion
//!   carries the owner and the kernel's result (`Ok(n)` or the errno as `io::Error`). For a
//!   one-shot op it is final. Spurious returns with no completion are allowed; `EINTR`,
//!   `EBUSY`/`EAGAIN` from the kernel and CQ overflow are handled inside and never reach the
//!   caller. Only the turn touches the kernel's queues, and
//!   [`submit_queued`](any::Driver::submit_queued): it hands the kernel what is queued without
//!   waiting (io_uring; epoll, whose ops are syscalls made inside a turn, does nothing),
//!   appending what that completes at once to the caller's vector. The loop calls it as it
//!   stops running, and after a dispatch whose sends hold receive buffers (so those come back
//!   before the next wait needs them).
//! * **Ownership.** The driver owns an op's resources from `submit` until the kernel's *final*
//!   completion for it, whatever happens to the owner meanwhile. No kernel-visible pointer points
//!   into a future, a task or a user buffer.
//! * **Cancellation.** [`cancel`](any::Driver::cancel) detaches the owner at once and returns
//!   it; no completion for that op is delivered afterwards. An op not yet in the kernel is
//!   withdrawn: the kernel never sees it. io_uring sends `ASYNC_CANCEL` for one it holds and
//!   keeps the op's memory until the final CQE arrives; epoll drops the interest at once.
//!   [`withdraw`](any::Driver::withdraw) cancels a one-shot op only while nothing of it has
//!   happened (io_uring: not yet submitted; epoll: queued, or waiting for readiness, since
//!   each of its syscalls finishes inside a turn), so the caller knows no byte moved, and
//!   hands the op back with its owner; else it leaves the op as it was.
//! * **Appending to a send.** [`append`](any::Driver::append) adds bytes to an
//!   [`Op::Send`] of a copy the op owns ([`SendBuf::Copied`]) while the op is still queued
//!   (io_uring: its SQE is built at the turn, from the copy as it is then; epoll: before its
//!   first try), and says whether it did; any other op or state is left as it was.
//! * **Fd numbers: only the driver closes an fd it handed to the kernel.** An op names its fd
//!   by number, and the kernel resolves the number when the op runs: when the SQE is submitted,
//!   or later still for an op that runs in an io-wq worker or behind a link. So an fd an op has
//!   named is closed only by [`close_fd`](any::Driver::close_fd), which closes it once every
//!   op naming it was withdrawn before submission or reached its final completion (at once if
//!   none is left); the number stays allocated until then, and no stale op can connect, write,
//!   read or shut down a new file that gets it. Every path that closes such an fd goes through
//!   it: transports and listeners ([`LoopFd`](crate::event_loop::LoopFd), on close and
//!   on drop), connect attempts, and the driver's own shutdown. The one exception is an fd the
//!   loop does not own and names only in `Poll` ops (a user's socket in a `sock_*` call, an
//!   `add_reader` fd): a poll moves no data, a cancelled one is withdrawn or holds the file it
//!   resolved, and the loop calls [`forget_fd`](any::Driver::forget_fd) before its owner may
//!   close it, so a backend that keys state by number (epoll) drops it first. A negative fd
//!   completes with `EBADF`; a regular file polls as always ready.
//! * **Threads.** A driver is created, turned and dropped on one thread: it is `!Send`, as the
//!   loop is (its receive buffers are `Rc`-shared with the `RecvBuf`s it hands out, with no
//!   atomic operation per chunk). io_uring's `SINGLE_ISSUER` and the registered ring fd rely
//!   on it. Only the [`EventFd`] crosses threads.
//! * **Shutdown.** Dropping a driver detaches every owner, withdraws what the kernel has not
//!   seen, cancels the rest and waits (bounded) for their final completions; then it closes
//!   the fds whose close waited for those ops, and drops the owners last (an owner's drop may
//!   close an fd itself, safe only then). Memory the kernel could still use is leaked rather
//!   than freed, and so are fds whose ops the kernel did not hand back.
//!
//! * **Persistent ops.** [`Op::RecvMulti`], [`Op::RecvMsgMulti`] and [`Op::AcceptMulti`]
//!   complete many times: each result comes with `more()` (a recv chunk or a datagram
//!   carries its bytes in [`Completion::data`]),
//!   and the op ends only with a final completion (end of stream, an error, or `ECANCELED`
//!   after [`end_gracefully`](any::Driver::end_gracefully)). The backend re-arms them itself whenever the kernel
//!   ends them early, and waits, out of the kernel, while its receive buffers are exhausted
//!   (`ENOBUFS` never reaches the owner, also when it races an `end_gracefully`). `end_gracefully` is the gentle
//!   cancel: it asks the kernel to end the op but keeps
//!   the owner, so whatever the kernel had already taken (bytes a recv consumed, connections
//!   accepted) is still delivered, in order, before the final `ECANCELED`; `cancel` drops
//!   them (buffers go back to the ring, accepted fds are closed).
//!
//! * **Reaping a child.** [`Op::WaitId`] waits for the exit of the child its pidfd refers to
//!   and reaps it. A cancel never reaps; but, as for any op, a cancel can come too late: an
//!   `IORING_OP_WAITID` that the child's exit already woke reaps the child all the same. Its
//!   result is dropped as for any cancelled op, but not the status: the op's [`ExitInfo`],
//!   shared with the owner, holds it. So after a cancel the child was reaped once or not at
//!   all, and the owner can tell which (`wait_id.rs`).
//!
//! `Poll` is one-shot and level-checked when armed: if the fd is already ready it completes at
//! once. Re-arming after each dispatch therefore gives selector (level-triggered) semantics on
//! both backends, which is what `add_reader`/`add_writer` promise.

pub(crate) mod any;
#[cfg(test)]
mod contract_tests;
pub(crate) mod dgram;
#[cfg(feature = "fallback")]
pub(crate) mod epoll;
mod fd_uses;
mod msg;
pub(crate) mod recv_buf;
mod send_buf;
pub(crate) mod uring;
pub(crate) mod wait_id;

use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;

pub(crate) use crate::sys::EventFd;
#[cfg(feature = "fallback")]
pub(crate) use recv_buf::BufPool;
pub(crate) use recv_buf::RecvBuf;

#[cfg(feature = "fallback")]
pub(crate) use msg::RecvMsgBuf;
pub(crate) use msg::SendMsgBuf;
pub(crate) use send_buf::SendBuf;
pub(crate) use wait_id::ExitInfo;

/// The most bytes one read, write, recv or send moves: results are a CQE's `i32`.
pub(crate) const MAX_IO: usize = i32::MAX as usize;

/// Identity of an op in flight: the key of its slot in the driver's slab (the SQE `user_data`
/// on io_uring) and that slot's generation. Keys are reused after the final completion, and
/// an owner may still name its op after that: the loop reaps a completion in the turn and
/// dispatches it later, and an op submitted meanwhile may take the key. The generation tells
/// the two apart, so a cancel or withdraw with an id whose op has ended does nothing, and a
/// completion is never taken for a newer op's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OpId {
    key: u32,
    generation: u32,
}

impl OpId {
    /// The id of the op in slot `key` of `generation`.
    pub(crate) fn new(key: usize, generation: u32) -> OpId {
        let key = u32::try_from(key).expect("fewer than 2^32 ops in flight");
        OpId { key, generation }
    }

    /// Its slot's key.
    pub(crate) fn key(self) -> usize {
        self.key as usize
    }
}

/// A driver's slot generations: one per slab key, advanced each time the key takes an op.
#[derive(Debug, Default)]
pub(crate) struct Generations(Vec<u32>);

impl Generations {
    /// The id of a new op in slot `key`: the key's next generation.
    pub(crate) fn issue(&mut self, key: usize) -> OpId {
        if key >= self.0.len() {
            self.0.resize(key + 1, 0);
        }
        self.0[key] = self.0[key].wrapping_add(1);
        OpId::new(key, self.0[key])
    }

    /// The id of the op in slot `key` now (for its completions).
    pub(crate) fn current(&self, key: usize) -> OpId {
        OpId::new(key, self.0.get(key).copied().unwrap_or(0))
    }

    /// The slot `id` names, unless its op has ended (the key may hold a newer op).
    pub(crate) fn key_of(&self, id: OpId) -> Option<usize> {
        (self.0.get(id.key()) == Some(&id.generation)).then(|| id.key())
    }
}

/// Readiness a `Poll` op waits for, as `poll(2)` bits (`POLLIN`, `POLLOUT`; `POLLERR` and
/// `POLLHUP` are always reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest(pub(crate) u32);

impl Interest {
    /// Readable (`POLLIN`).
    pub(crate) const READ: Interest = Interest(libc::POLLIN as u32);
    /// Writable (`POLLOUT`).
    pub(crate) const WRITE: Interest = Interest(libc::POLLOUT as u32);
}

/// A socket address the kernel reads (`Connect`), in a stable heap slot.
#[derive(Clone, Copy)]
pub(crate) struct SockAddrBuf {
    /// The address bytes.
    pub(crate) storage: libc::sockaddr_storage,
    /// How many bytes of `storage` are meaningful (in: the capacity for accept).
    pub(crate) len: libc::socklen_t,
}

impl SockAddrBuf {
    /// An empty buffer, sized for any address, to fill in.
    pub(crate) fn empty() -> Box<SockAddrBuf> {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let storage = unsafe { std::mem::zeroed::<libc::sockaddr_storage>() };
        Box::new(SockAddrBuf { storage, len: std::mem::size_of::<libc::sockaddr_storage>() as _ })
    }
}

impl std::fmt::Debug for SockAddrBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SockAddrBuf(family {}, len {})", self.storage.ss_family, self.len)
    }
}

/// An operation for the driver. Each variant owns whatever memory the kernel reads or writes;
/// the memory comes back in the final [`Completion::op`].
pub(crate) enum Op {
    /// Complete once when `fd` is ready for `interest` (already ready: at once); the result is
    /// the `poll(2)` revents mask.
    Poll {
        /// The watched descriptor (borrowed: the loop keeps it open while the op is in flight).
        fd: RawFd,
        /// What to wait for.
        interest: Interest,
    },
    /// Connect the non-blocking socket `fd` to `addr`. Result: 0.
    Connect {
        /// The socket.
        fd: RawFd,
        /// Where to connect.
        addr: Box<SockAddrBuf>,
    },
    /// Send `buf[offset..]` with `MSG_NOSIGNAL`. Result: bytes sent (may be short).
    Send {
        /// The socket.
        fd: RawFd,
        /// The bytes: shared, or a copy the op owns (which [`append`](any::Driver::append)
        /// may add to until the op reaches the kernel).
        buf: SendBuf,
        /// Where in `buf` to start.
        offset: usize,
    },
    /// `read(2)` into the spare capacity of `buf` (`buf.len()..buf.capacity()`) at the fd's
    /// current position: for any fd (pipes, FIFOs, character devices, PTYs, regular files).
    /// Result: the byte count (0 = end of file); the driver has extended `buf.len()` by it.
    /// The fd should be non-blocking: on io_uring a read on a *blocking* pipe is handed to an
    /// io-wq worker that it can pin until data comes, while a non-blocking one waits on the
    /// kernel's internal poll (an `EAGAIN` from the opcode, for a file the kernel cannot poll
    /// internally, waits for a `POLL_ADD` and tries the opcode again).
    Read {
        /// The descriptor.
        fd: RawFd,
        /// Where the bytes land.
        buf: Vec<u8>,
    },
    /// `write(2)` of `buf[offset..]` at the fd's current position. Result: bytes written
    /// (a short write is a result, not an error). Unlike `Send` there is no `MSG_NOSIGNAL`:
    /// a write to a pipe without readers raises `SIGPIPE`, which Rust programs ignore (the
    /// standard library sets it to `SIG_IGN` before `main`), so the result is `EPIPE`.
    Write {
        /// The descriptor.
        fd: RawFd,
        /// The bytes.
        buf: bytes::Bytes,
        /// Where in `buf` to start.
        offset: usize,
    },
    /// `sendmsg(2)` with `MSG_NOSIGNAL` of `msg`'s bytes: one datagram, to the address in
    /// `msg` or the connected peer (result: all of it, datagrams are never split), or a stream
    /// socket's queued writes as one vectored send (result: the count the socket took, which
    /// may be short, as for [`Op::Send`]).
    SendMsg {
        /// The datagram socket.
        fd: RawFd,
        /// The datagram and its destination.
        msg: Box<SendMsgBuf>,
    },
    /// Send up to `len` bytes of the regular file `file`, from `offset`, to the stream socket
    /// `fd`, without copying them through user space. Result: the bytes the socket took (a
    /// short count is a result: the file ended, or a backend chunk limit; 0 means the file
    /// ends at `offset`). Neither fd's position moves. io_uring moves the bytes through a pipe
    /// of the driver's pool with two linked `IORING_OP_SPLICE` (file → pipe, pipe → socket),
    /// and the op ends only once the pipe is empty again (bytes it holds after a short send
    /// are spliced on; after an error they are dropped with the pipe, and were never counted);
    /// epoll makes one `sendfile(2)` when the socket is writable.
    SendFile {
        /// The stream socket.
        fd: RawFd,
        /// The regular file, open for reading.
        file: RawFd,
        /// Where in the file to start.
        offset: u64,
        /// The most bytes to send.
        len: u32,
    },
    /// Reap the child `pidfd` refers to once it exits: `waitid(P_PIDFD, pidfd, WEXITED)`. Result:
    /// 0, with the child's `siginfo_t` in `info` (`si_code` `CLD_EXITED` and the exit status,
    /// or `CLD_KILLED`/`CLD_DUMPED` and the signal); `ECHILD` if it is not a child of this
    /// process or was reaped already (by someone else). A negative pidfd is `EBADF`.
    /// io_uring submits one `IORING_OP_WAITID` (6.7) where the kernel has it and the
    /// optimization `waitid` is on; otherwise a `POLL_ADD` on the pidfd, readable once the child
    /// exited, and one non-blocking `waitid` at its CQE (a child still running: poll again;
    /// also after a `WAITID` that did not wait, on a `PIDFD_NONBLOCK` pidfd). epoll waits for
    /// the pidfd to be readable, then makes that `waitid`.
    ///
    /// Cancelling never reaps on epoll or the poll route. A `WAITID` that the child's exit woke
    /// before the cancel reached it reaps all the same (the kernel's cancel no longer finds
    /// it): its result is dropped as for any cancelled op, but `info` holds the status, for
    /// the owner to read with [`ExitInfo::get`] once the driver let go. See `wait_id.rs`.
    WaitId {
        /// The child's pidfd (borrowed: the loop keeps it open while the op is in flight).
        pidfd: RawFd,
        /// Where the child's `siginfo_t` lands, shared with the owner.
        info: Rc<ExitInfo>,
    },
    /// Receive from `fd` until end of stream, an error or [`end_gracefully`](any::Driver::end_gracefully): a
    /// *persistent* op. Each chunk comes in a completion with `more()`, `Ok(n)` and the
    /// bytes in [`Completion::data`]; the final completion is `Ok(0)` (end of stream), the
    /// error, or `ECANCELED` after `end_gracefully`. No buffer is held per op while the socket is idle:
    /// io_uring takes one from the driver's provided-buffer ring (multishot recv, re-armed by
    /// the driver whenever the kernel ends it early, e.g. `ENOBUFS`, which never reaches the
    /// caller and never loses data); epoll `recv`s into a buffer of the driver's [`BufPool`]
    /// and hands it over (it returns to the pool on drop).
    RecvMulti {
        /// The socket (borrowed: the loop keeps it open while the op is in flight).
        fd: RawFd,
    },
    /// Receive datagrams on `fd` until an error or `end_gracefully`/`cancel`: a *persistent* op. Each
    /// completion with `more()` is one whole datagram: `Ok(n)` with its `n` bytes and its
    /// sender in [`Completion::data`] (an empty datagram is `Ok(0)`, not an end), or
    /// `Err(EMSGSIZE)` for a datagram longer than [`dgram::DATAGRAM_CAPACITY`], which is
    /// dropped, never delivered cut short. A datagram is never split or merged. The final
    /// completion is a receive error (`ECONNREFUSED` on a connected endpoint ...: the caller
    /// may submit again) or `ECANCELED` after `end_gracefully`. io_uring uses a multishot `RECVMSG` on a
    /// second provided-buffer ring of datagram-sized buffers (registered at the first
    /// `RecvMsgMulti`; `ENOBUFS` re-arms without losing datagrams, the kernel keeps them
    /// queued); epoll waits for readiness and `recvmsg(2)`s into one driver buffer, handed over
    /// as a copy.
    RecvMsgMulti {
        /// The datagram socket (borrowed, as for `RecvMulti`).
        fd: RawFd,
    },
    /// Accept connections on the listening socket `fd` until an error or `end_gracefully`/`cancel`: a
    /// persistent op (a multishot accept on io_uring). Each connection comes in a completion with `more()` and the new
    /// fd (non-blocking, close-on-exec) as the result; an error is the final completion.
    AcceptMulti {
        /// The listening socket.
        fd: RawFd,
    },
}

impl std::fmt::Debug for Op {
    /// The op and its fd, with buffers shown by their length (a 16 MiB send is one line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fd = self.fd();
        match self {
            Op::Poll { interest, .. } => write!(f, "Poll(fd {fd}, {interest:?})"),
            Op::Connect { addr, .. } => write!(f, "Connect(fd {fd}, {addr:?})"),
            Op::Send { buf, offset, .. } => {
                write!(f, "Send(fd {fd}, {} bytes at {offset})", buf.len())
            }
            Op::Read { buf, .. } => {
                write!(f, "Read(fd {fd}, {} of {} bytes)", buf.len(), buf.capacity())
            }
            Op::Write { buf, offset, .. } => {
                write!(f, "Write(fd {fd}, {} bytes at {offset})", buf.len())
            }
            Op::SendMsg { .. } => write!(f, "SendMsg(fd {fd})"),
            Op::SendFile { file, offset, len, .. } => {
                write!(f, "SendFile(fd {fd}, file {file}, {len} bytes at {offset})")
            }
            Op::RecvMulti { .. } => write!(f, "RecvMulti(fd {fd})"),
            Op::RecvMsgMulti { .. } => write!(f, "RecvMsgMulti(fd {fd})"),
            Op::AcceptMulti { .. } => write!(f, "AcceptMulti(fd {fd})"),
            Op::WaitId { .. } => write!(f, "WaitId(pidfd {fd})"),
        }
    }
}

impl Op {
    /// The fd the op names.
    pub(crate) fn fd(&self) -> RawFd {
        match *self {
            Op::Poll { fd, .. }
            | Op::Connect { fd, .. }
            | Op::Send { fd, .. }
            | Op::Read { fd, .. }
            | Op::Write { fd, .. }
            | Op::SendMsg { fd, .. }
            | Op::SendFile { fd, .. }
            | Op::RecvMulti { fd }
            | Op::RecvMsgMulti { fd }
            | Op::AcceptMulti { fd }
            | Op::WaitId { pidfd: fd, .. } => fd,
        }
    }

    /// The second fd the op names, if any (a `SendFile`'s file).
    pub(crate) fn second_fd(&self) -> Option<RawFd> {
        match *self {
            Op::SendFile { file, .. } => Some(file),
            _ => None,
        }
    }

    /// Appends `buffers` to a send of a copy of its own ([`SendBuf::Copied`]); false, with
    /// nothing done, for any other op. Each backend calls it only while the op is queued.
    pub(crate) fn append(&mut self, buffers: &[&[u8]]) -> bool {
        match self {
            Op::Send { buf, .. } => buf.append(buffers),
            _ => false,
        }
    }

    /// Whether the op is persistent: it completes many times (see the contract).
    pub(crate) fn is_persistent(&self) -> bool {
        matches!(self, Op::RecvMulti { .. } | Op::AcceptMulti { .. } | Op::RecvMsgMulti { .. })
    }

    /// Releases what a result nobody will see still holds: the fd a cancelled `AcceptMulti`
    /// accepted anyway. Called by the backends when they drop a cancelled op's result.
    pub(crate) fn discard_result(&self, res: i32) {
        let accept = matches!(self, Op::AcceptMulti { .. });
        if let (true, Ok(fd)) = (accept, std::os::fd::RawFd::try_from(res)) {
            if fd >= 0 {
                // SAFETY: the kernel just created `fd` for this accept and nobody else has
                // seen it; closing it here is its only use.
                drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
            }
        }
    }
}

/// One completion handed back by [`turn`](any::Driver::turn).
#[derive(Debug)]
pub(crate) struct Completion<T> {
    /// The op this completes.
    pub(crate) id: OpId,
    /// The owner given at submit (a clone while the op keeps going, moved out when final).
    pub(crate) owner: T,
    /// `Ok(res)` for a non-negative CQE result, otherwise the errno.
    pub(crate) result: io::Result<u32>,
    /// The op with its buffers, handed back on the final completion; `None` exactly while a
    /// persistent op keeps going (the owner's `Completed::more`). (No separate flag: at 129
    /// bytes a completion was moved with a `memcpy` call, twice per request; see `RecvBuf`.)
    pub(crate) op: Option<Op>,
    /// The bytes of an [`Op::RecvMulti`] chunk or an [`Op::RecvMsgMulti`] datagram (with its
    /// sender); `None` for every other completion. Drop it soon: on io_uring it is a slot of
    /// one of the driver's buffer rings until dropped.
    pub(crate) data: Option<RecvBuf>,
}

#[cfg(test)]
impl<T> Completion<T> {
    /// True while a persistent op keeps going (this completion is not its last), as the
    /// owner's `Completed::more` reads it.
    pub(crate) fn more(&self) -> bool {
        self.op.is_none()
    }
}

/// Which backend a loop runs on (`SelectorEventLoop` ↔ `Epoll`, `ProactorEventLoop` ↔ `Uring`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring: the completion-based proactor.
    Uring,
    /// epoll readiness with emulated completions (feature `fallback`).
    Epoll,
}

impl Backend {
    /// The name used by `RINGLOOP_BACKEND` and in logs: `"uring"` or `"epoll"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
