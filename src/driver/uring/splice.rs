//! `Op::SendFile` on io_uring: file → pipe → socket, with two `IORING_OP_SPLICE`s linked by
//! `IOSQE_IO_LINK`, through a pipe of the driver's pool; no byte is copied to user space.
//!
//! # Implementation
//! One op is one chunk, at most the pipe's capacity. The first SQE (the op's own `user_data`)
//! splices from the file at the op's offset into the pipe; the second (`user_data` with
//! [`DRAIN`] set) splices from the pipe into the socket, linked so that it starts once the
//! first is done. A short first splice (the file ended) breaks the link: the second completes
//! with `ECANCELED`, and the bytes in the pipe are drained by another pipe → socket SQE; so is
//! what a short send left. The op ends when no SQE of it is out and either the pipe is empty or
//! an error stopped it. Its result is the bytes the socket took; what an error left in the pipe
//! was never counted (the file's bytes are read again from `offset + sent` by whoever goes on),
//! and that pipe is closed, not pooled: the pool takes a pipe back only empty.
//!
//! The socket is non-blocking, so a pipe → socket splice into a full socket answers `EAGAIN`
//! (io_uring does not poll for a splice): from then on each drain is a `POLL_ADD` for
//! writability linked before the splice.
//!
//! A cancel sends an `AsyncCancel` for each `user_data` of the op; the slot waits until every
//! SQE of the op came back before it is freed (the pipe with it).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::types::Fd;
use io_uring::{opcode, squeue};

use super::slot::{result, user_data, SlotState};
use super::table::OpTable;
use crate::driver::{Completion, Op};

/// Set in the `user_data` of a `SendFile`'s pipe → socket SQEs (below the internal range).
pub(super) const DRAIN: u64 = 1 << 62;
/// Set (with [`DRAIN`]) in the `user_data` of the `POLL_ADD` that waits, linked before a
/// pipe → socket splice, for the socket to take more.
pub(super) const DRAIN_POLL: u64 = 1 << 61;

/// Pipes kept idle for later transfers.
const POOL_MAX: usize = 8;

/// The size pipes are grown to (a chunk of a transfer is at most this): 1 MiB, the default
/// `pipe-max-size`.
const PIPE_SIZE: i32 = 1 << 20;

/// A pipe the driver splices through, grown as far as the system allows.
#[derive(Debug)]
pub(super) struct Pipe {
    /// The read end (spliced into the socket).
    read: OwnedFd,
    /// The write end (spliced into from the file).
    write: OwnedFd,
    /// Its capacity in bytes (`F_GETPIPE_SZ`).
    capacity: u32,
}

impl Pipe {
    /// A non-blocking, close-on-exec pipe, grown to [`PIPE_SIZE`], or to
    /// `/proc/sys/fs/pipe-max-size` where the system allows less (the file is read only then).
    fn new() -> io::Result<Pipe> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        if fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)).is_err() {
            let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            // Unprivileged processes may also meet a per-user limit (EPERM): the default
            // size stays.
            if let Some(max) = max.filter(|&max| max < PIPE_SIZE) {
                let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(max));
            }
        }
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)?;
        Ok(Pipe { read, write, capacity: u32::try_from(capacity).unwrap_or(65536) })
    }
}

/// The driver's idle pipes.
#[derive(Debug, Default)]
pub(super) struct PipePool {
    /// Empty pipes, ready for a transfer.
    idle: Vec<Pipe>,
}

impl PipePool {
    /// An idle pipe, or a new one.
    fn take(&mut self) -> io::Result<Pipe> {
        match self.idle.pop() {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Keeps `pipe` (known to be empty) unless enough are idle; otherwise it is closed.
    fn give_back(&mut self, pipe: Pipe) {
        if self.idle.len() < POOL_MAX {
            self.idle.push(pipe);
        }
    }
}

/// Where one `SendFile` op's chunk is.
#[derive(Debug)]
pub(super) struct SpliceJob {
    /// The pipe it moves the bytes through.
    pipe: Pipe,
    /// Its SQEs in the kernel.
    outstanding: u8,
    /// Bytes spliced into the pipe.
    filled: u32,
    /// Bytes the socket took (out of the pipe).
    sent: u32,
    /// The first error met (`-errno`), other than the `ECANCELED` of a broken link.
    error: Option<i32>,
    /// The socket was full once: each drain waits for writability first.
    wait_first: bool,
}

impl SpliceJob {
    /// Bytes in the pipe, once none of the op's SQEs is out. Filled and sent are counted apart
    /// so that the CQEs of the two linked splices may be reaped in either order.
    fn in_pipe(&self) -> u32 {
        self.filled.saturating_sub(self.sent)
    }
}

/// The SQEs that op `key` (a `SendFile`, queued) sends next: the linked file → pipe and
/// pipe → socket splices of a new chunk, or one more pipe → socket splice to drain the pipe.
/// `Err(-errno)` if no pipe could be had.
pub(super) fn sqes(
    table: &mut OpTable<impl Sized>,
    pipes: &mut PipePool,
    key: usize,
) -> Result<[Option<squeue::Entry>; 2], i32> {
    let slot = &mut table.slots[key];
    let Op::SendFile { fd, file, offset, len } = slot.op else {
        unreachable!("only a SendFile op is spliced")
    };
    let socket = Fd(fd);
    let move_pages = libc::SPLICE_F_MOVE;
    if let Some(job) = slot.job.as_mut() {
        // Draining what a short send, a full socket or a broken link left in the pipe.
        let pipe = Fd(job.pipe.read.as_raw_fd());
        let drain = opcode::Splice::new(pipe, -1, socket, -1, job.in_pipe())
            .flags(move_pages)
            .build()
            .user_data(user_data(key) | DRAIN);
        if !job.wait_first {
            job.outstanding = 1;
            return Ok([Some(drain), None]);
        }
        job.outstanding = 2;
        let writable = opcode::PollAdd::new(socket, libc::POLLOUT as u32)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(user_data(key) | DRAIN | DRAIN_POLL);
        return Ok([Some(writable), Some(drain)]);
    }
    // Before the pipe is taken: an error must not cost a pooled pipe.
    let offset = i64::try_from(offset).map_err(|_| -libc::EINVAL)?;
    let pipe = pipes.take().map_err(|e| -e.raw_os_error().unwrap_or(libc::EMFILE))?;
    let chunk = len.min(pipe.capacity);
    let fill = opcode::Splice::new(Fd(file), offset, Fd(pipe.write.as_raw_fd()), -1, chunk)
        .flags(move_pages)
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(user_data(key));
    let drain = opcode::Splice::new(Fd(pipe.read.as_raw_fd()), -1, socket, -1, chunk)
        .flags(move_pages)
        .build()
        .user_data(user_data(key) | DRAIN);
    let job =
        SpliceJob { pipe, outstanding: 2, filled: 0, sent: 0, error: None, wait_first: false };
    slot.job = Some(Box::new(job));
    Ok([Some(fill), Some(drain)])
}

/// Which SQE of a `SendFile` op a CQE is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// File → pipe.
    Fill,
    /// The wait for the socket to take more.
    Wait,
    /// Pipe → socket.
    Drain,
}

/// A CQE of `SendFile` op `key`, for its `step`. Once none of its SQEs is out, the op goes on
/// (queued to drain the pipe) or ends.
pub(super) fn on_cqe<T>(
    table: &mut OpTable<T>,
    pipes: &mut PipePool,
    key: usize,
    res: i32,
    step: Step,
    out: &mut Vec<Completion<T>>,
) {
    let Some(job) = table.slots.get_mut(key).and_then(|slot| slot.job.as_mut()) else {
        return log::error!("io_uring: splice CQE for op {key}, which has no transfer");
    };
    job.outstanding = job.outstanding.saturating_sub(1);
    match (u32::try_from(res), step) {
        (Ok(n), Step::Fill) => job.filled += n,
        (Ok(_), Step::Wait) => {}
        (Ok(n), Step::Drain) => job.sent += n,
        // The socket is full: wait for it before each drain from now on.
        (Err(_), Step::Drain) if res == -libc::EAGAIN => job.wait_first = true,
        // The link broke (a short fill), or a cancel: the pipe says what is left.
        (Err(_), _) if res == -libc::ECANCELED => {}
        (Err(_), _) => {
            job.error.get_or_insert(res);
        }
    }
    if job.outstanding > 0 {
        return;
    }
    let slot = &mut table.slots[key];
    let goes_on = job_goes_on(slot.job.as_deref());
    if goes_on && matches!(slot.state, SlotState::Submitted(_)) {
        if let SlotState::Submitted(owner) =
            std::mem::replace(&mut slot.state, SlotState::Cancelled)
        {
            slot.state = SlotState::Queued(owner);
            table.pending.push(key);
        }
        return;
    }
    let mut slot = table.free(key);
    let job = *slot.job.take().expect("checked above");
    let result = match (job.sent, job.error) {
        (0, Some(err)) => result(err),
        (sent, _) => Ok(sent),
    };
    if job.in_pipe() == 0 {
        pipes.give_back(job.pipe);
    }
    if let SlotState::Submitted(owner) = slot.state {
        let (id, op) = (table.id(key), Some(slot.op));
        out.push(Completion { id, owner, result, op, data: None });
    }
}

/// Whether a transfer with nothing out goes on: bytes wait in the pipe and nothing failed.
fn job_goes_on(job: Option<&SpliceJob>) -> bool {
    job.is_some_and(|job| job.in_pipe() > 0 && job.error.is_none())
}
