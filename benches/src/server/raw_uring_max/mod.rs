//! The limit row, `raw-uring-max`: the strongest io_uring echo loop we could write, with no
//! runtime. Each technique below can be switched off or on to measure what it buys
//! ([`techniques`]: `raw-uring-max-no-link`, `raw-uring-max-with-poll-first`).
//!
//! Every connection has one buffer and exactly one recv in flight (or a linked send→recv pair,
//! whose last completion is the recv's). Used by `raw-uring-max`:
//! - `defer-taskrun`: the ring is set up `IORING_SETUP_SINGLE_ISSUER |
//!   IORING_SETUP_DEFER_TASKRUN`: completion work runs only inside our own `io_uring_enter`,
//!   never as task work interrupting the loop, and the kernel skips the locking a ring shared
//!   between threads needs.
//! - `ring-fd`: the ring's own fd is registered (`IORING_REGISTER_RING_FDS`), so each
//!   `io_uring_enter` names it by index and skips the fd table lookup (`fget`/`fput`).
//! - `fixed-files`: a sparse registered file table (`IORING_REGISTER_FILES` sparse) and a
//!   multishot accept that installs each connection as a direct descriptor
//!   (`IORING_FILE_INDEX_ALLOC`): the socket never enters the process's fd table, every op
//!   names it by slot with `IOSQE_FIXED_FILE` (no `fget`/`fput` per op) and `IORING_OP_CLOSE`
//!   on the slot closes it. `TCP_NODELAY` is set on the listener; accepted sockets inherit it.
//! - `link`: per request one send of what the recv got, linked (`IOSQE_IO_LINK`) to the next
//!   recv into the same buffer, both queued from the recv's completion and submitted by the
//!   iteration's single `submit_and_wait(1)`. Without it the recv is queued when the send's
//!   completion arrives, one iteration later.
//! - `skip`: `IOSQE_CQE_SKIP_SUCCESS` on the linked send, so a request costs one completion
//!   (the recv's). Only with `link`: otherwise the send's completion starts the next recv.
//!
//! Left out of `raw-uring-max` because they measured slower here (`-with-NAME` adds them):
//! - `poll-first`: `IORING_RECVSEND_POLL_FIRST` on the recv, which then arms its poll at once
//!   instead of first trying the receive. A busy server usually finds the next request already
//!   there by the time the linked recv runs, so arming the poll first is work it need not do.
//! - `fixed-buffers`: the region of [`buffers::REGISTERED`] registered buffers
//!   (`IORING_REGISTER_BUFFERS`), read and written with `READ_FIXED`/`WRITE_FIXED` instead of
//!   `RECV`/`SEND`.
//!
//! Correctness: `SEND` carries `MSG_WAITALL`, so the kernel itself retries a short send until
//! the whole chunk is out, or fails it; a `WRITE_FIXED` may end short, which fails its link. A
//! failed or short send posts its completion even with `skip`; the linked recv is then
//! cancelled without running, and posts no completion of its own when the send was `skip`
//! (`-ECANCELED`, ignored, otherwise). So the loop re-sends the rest of a short send (with a
//! new linked recv) and closes the connection on a failed send, or on a recv that ends with
//! EOF or an error: in each case the connection's last op has ended. (A first version waited for the
//! recv's `-ECANCELED` after a skipped send, and leaked every connection reset while its echo
//! was being sent.) The kernel's slot or fd number may go to a new connection as soon as it
//! is closed, so every `user_data` carries the slot's generation and a completion of an
//! earlier connection is ignored.
//!
//! Also tried and not kept (see `docs/benchmarks.md`): a multishot recv into a provided buffer
//! ring, with one plain send per chunk that hands the buffer back on its completion.

mod buffers;
pub mod techniques;

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use io_uring::{
    cqueue, opcode, squeue, types, CompletionQueue, IoUring, SubmissionQueue, Submitter,
};

use buffers::{Buf, Buffers, BUFFER};
pub use techniques::Techniques;

/// `IORING_RECVSEND_POLL_FIRST` (include/uapi/linux/io_uring.h), in the SQE's `ioprio`.
const RECVSEND_POLL_FIRST: u16 = 1;
/// Submission queue entries (the completion queue has four times as many).
const ENTRIES: u32 = 1024;
/// Registered file slots: connections the loop can hold with `fixed-files`.
const FIXED_SLOTS: usize = 16 * 1024;

/// What an op is, in the top two bits of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept = 0,
    Recv = 1,
    Send = 2,
    Close = 3,
}

/// `user_data`: the op (bits 62-63), the slot's generation (bits 32-61), the slot (bits 0-31).
fn tag(op: Op, generation: u32, slot: u32) -> u64 {
    (op as u64) << 62 | u64::from(generation & 0x3fff_ffff) << 32 | u64::from(slot)
}

fn untag(user_data: u64) -> (Op, u32, u32) {
    let op = [Op::Accept, Op::Recv, Op::Send, Op::Close][(user_data >> 62) as usize];
    (op, (user_data >> 32) as u32 & 0x3fff_ffff, user_data as u32)
}

/// One accepted connection.
struct Conn {
    /// Where each recv lands and the send after it reads from. The kernel owns it while an op
    /// is in flight; it goes back to the pool only after the connection's last completion.
    buf: Buf,
    /// Bytes of `buf` being echoed.
    len: usize,
    /// Bytes of `buf[..len]` sent so far (a short send is re-sent from there).
    sent: usize,
}

/// The loop's state apart from the ring.
struct Echo {
    techniques: Techniques,
    /// Connections by slot (direct descriptor index, or fd number); `None` when free.
    conns: Vec<Option<Conn>>,
    /// Per slot, bumped at each accept into it: a completion of an earlier connection in the
    /// same slot carries an older generation and is ignored.
    generations: Vec<u32>,
    /// The buffers not in use.
    buffers: Buffers,
    /// The multishot accept, re-armed whenever the kernel ends it.
    accept: squeue::Entry,
}

/// The submission side: the queue and the submitter that flushes it when full.
struct Queue<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
}

impl Queue<'_> {
    /// Queues `entries` together (a link must not be cut by a submission), submitting first
    /// when they do not fit.
    fn push(&mut self, entries: &[squeue::Entry]) -> Result<(), String> {
        if self.sq.capacity() - self.sq.len() < entries.len() {
            self.sq.sync();
            self.submitter.submit().map_err(|e| format!("io_uring_enter (queue full): {e}"))?;
            self.sq.sync();
        }
        // SAFETY: each entry's buffer is its connection's, which goes back to the pool only
        // after the connection's last completion (see `Conn::buf`), and the pool never frees
        // or moves a buffer; accept and close carry no buffer. Linked entries are pushed in one
        // call, so the chain stays whole.
        unsafe { self.sq.push_multiple(entries) }.map_err(|_| "submission queue full".to_string())
    }
}

/// Serves until the process exits.
pub fn serve(
    listener: TcpListener,
    techniques: Techniques,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    crate::sys::set_nodelay(listener.as_raw_fd()).map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let mut ring = build_ring(techniques)?;
    let (mut submitter, sq, mut cq) = ring.split();
    if techniques.ring_fd {
        submitter.register_ring_fd().map_err(|e| format!("IORING_REGISTER_RING_FDS: {e}"))?;
    }
    if techniques.fixed_files {
        crate::sys::raise_nofile(FIXED_SLOTS as u64)?;
        submitter
            .register_files_sparse(FIXED_SLOTS as u32)
            .map_err(|e| format!("IORING_REGISTER_FILES (sparse): {e}"))?;
    }
    let buffers = Buffers::new(&submitter, techniques.fixed_buffers)?;
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .allocate_file_index(techniques.fixed_files)
        .build()
        .user_data(tag(Op::Accept, 0, 0));
    let mut echo = Echo { techniques, conns: Vec::new(), generations: Vec::new(), buffers, accept };
    let mut queue = Queue { submitter, sq };
    queue.push(std::slice::from_ref(&echo.accept))?;
    announce()?;
    let error = loop {
        queue.sq.sync();
        match queue.submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => break format!("io_uring_enter: {e}"),
        }
        queue.sq.sync();
        if let Err(e) = echo.dispatch(&mut cq, &mut queue) {
            break e;
        }
    };
    // Ops may still be in flight: leak their buffers rather than free them under the kernel.
    std::mem::forget(echo);
    Err(error)
}

/// The ring, with `defer-taskrun`'s setup flags if asked.
fn build_ring(techniques: Techniques) -> Result<IoUring, String> {
    let mut builder = IoUring::builder();
    builder.setup_cqsize(ENTRIES * 4);
    if techniques.defer_taskrun {
        builder.setup_single_issuer().setup_defer_taskrun();
    }
    builder.build(ENTRIES).map_err(|e| format!("io_uring_setup: {e}"))
}

impl Echo {
    /// Handles every completion the kernel has posted.
    fn dispatch(
        &mut self,
        cq: &mut CompletionQueue<'_>,
        queue: &mut Queue<'_>,
    ) -> Result<(), String> {
        cq.sync();
        for cqe in &mut *cq {
            let (op, generation, slot) = untag(cqe.user_data());
            match op {
                Op::Accept => self.accepted(&cqe, queue)?,
                _ if self.generations.get(slot as usize) != Some(&generation) => {} // stale
                Op::Recv => self.received(slot, cqe.result(), queue)?,
                Op::Send => self.sent(slot, cqe.result(), queue)?,
                Op::Close => {} // only a failed close posts one; the slot is already free
            }
        }
        cq.sync();
        Ok(())
    }

    /// A new connection (its direct descriptor slot or fd in the result): the first recv.
    fn accepted(&mut self, cqe: &cqueue::Entry, queue: &mut Queue<'_>) -> Result<(), String> {
        if !cqueue::more(cqe.flags()) {
            queue.push(std::slice::from_ref(&self.accept))?; // the kernel ended it: re-arm
        }
        let Ok(slot) = u32::try_from(cqe.result()) else { return Ok(()) }; // accept error
        let index = slot as usize;
        if index >= self.conns.len() {
            self.conns.resize_with(index + 1, || None);
            self.generations.resize(index + 1, 0);
        }
        self.generations[index] = self.generations[index].wrapping_add(1) & 0x3fff_ffff;
        self.conns[index] = Some(Conn { buf: self.buffers.take(), len: 0, sent: 0 });
        let recv = self.recv(slot);
        queue.push(&[recv])
    }

    /// A recv ended: echo what it got, or close at EOF or on an error. `-ECANCELED` means its
    /// linked send failed or ended short, and that send's completion deals with it.
    fn received(&mut self, slot: u32, res: i32, queue: &mut Queue<'_>) -> Result<(), String> {
        let Some(conn) = self.conns[slot as usize].as_mut() else { return Ok(()) };
        match res {
            n if n > 0 => {
                (conn.len, conn.sent) = (n as usize, 0);
                self.send_then_recv(slot, queue)
            }
            n if n == -libc::ECANCELED => Ok(()),
            _ => self.close(slot, queue),
        }
    }

    /// A send's completion (with `link` and `skip`, only a failed or short send posts one). A
    /// failed send closes the connection. A short one (`WRITE_FIXED`, or `SEND` cut short by an
    /// error) is re-sent from where it stopped, with a new recv linked to it: a short or failed
    /// send cancels its linked recv. Unlinked, a whole send starts the next recv.
    fn sent(&mut self, slot: u32, res: i32, queue: &mut Queue<'_>) -> Result<(), String> {
        let Some(conn) = self.conns[slot as usize].as_mut() else { return Ok(()) };
        if res <= 0 {
            return self.close(slot, queue);
        }
        conn.sent += res as usize;
        if conn.sent < conn.len {
            return self.send_then_recv(slot, queue);
        }
        if self.techniques.link {
            return Ok(()); // the linked recv is on its way
        }
        let recv = self.recv(slot);
        queue.push(&[recv])
    }

    /// Queues the send of the rest of the connection's echo and, with `link`, the recv after it.
    fn send_then_recv(&mut self, slot: u32, queue: &mut Queue<'_>) -> Result<(), String> {
        let t = self.techniques;
        let send = self.send(slot);
        if !t.link {
            return queue.push(&[send]);
        }
        let flags = match t.skip {
            true => squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS,
            false => squeue::Flags::IO_LINK,
        };
        let recv = self.recv(slot);
        queue.push(&[send.flags(flags), recv])
    }

    /// Closes the connection in `slot`, which has no op in flight.
    fn close(&mut self, slot: u32, queue: &mut Queue<'_>) -> Result<(), String> {
        let Some(conn) = self.conns[slot as usize].take() else { return Ok(()) };
        self.buffers.give(conn.buf);
        let close = match self.techniques.fixed_files {
            true => opcode::Close::new(types::Fixed(slot)).build(),
            false => opcode::Close::new(types::Fd(slot as i32)).build(),
        };
        let generation = self.generations[slot as usize];
        let close = close.flags(squeue::Flags::SKIP_SUCCESS);
        queue.push(&[close.user_data(tag(Op::Close, generation, slot))])
    }

    /// The op's socket and tag: the slot, as a direct descriptor with `fixed-files`.
    fn target(&self, op: Op, slot: u32, entry: squeue::Entry) -> squeue::Entry {
        let entry = entry.user_data(tag(op, self.generations[slot as usize], slot));
        match self.techniques.fixed_files {
            true => entry.flags(squeue::Flags::FIXED_FILE),
            false => entry,
        }
    }

    /// A recv into the whole of the connection's buffer.
    fn recv(&mut self, slot: u32) -> squeue::Entry {
        let conn = self.conns[slot as usize].as_mut().expect("a live connection");
        let (fd, ptr, len) =
            (types::Fd(slot as i32), self.buffers.ptr(&mut conn.buf), BUFFER as u32);
        let entry = match conn.buf {
            Buf::Registered(index) => opcode::ReadFixed::new(fd, ptr, len, index).build(),
            Buf::Heap(_) => {
                let ioprio = if self.techniques.poll_first { RECVSEND_POLL_FIRST } else { 0 };
                opcode::Recv::new(fd, ptr, len).ioprio(ioprio).build()
            }
        };
        self.target(Op::Recv, slot, entry)
    }

    /// A send of what is left of the connection's echo: all of it or an error (`SEND` with
    /// `MSG_WAITALL`), or possibly less (`WRITE_FIXED`).
    fn send(&mut self, slot: u32) -> squeue::Entry {
        let conn = self.conns[slot as usize].as_mut().expect("a live connection");
        // SAFETY: `sent < len <= BUFFER`, so the pointer stays inside the connection's buffer.
        let ptr = unsafe { self.buffers.ptr(&mut conn.buf).add(conn.sent) };
        let (fd, len) = (types::Fd(slot as i32), (conn.len - conn.sent) as u32);
        let entry = match conn.buf {
            Buf::Registered(index) => opcode::WriteFixed::new(fd, ptr, len, index).build(),
            Buf::Heap(_) => opcode::Send::new(fd, ptr, len).flags(libc::MSG_WAITALL).build(),
        };
        self.target(Op::Send, slot, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for (op, generation, slot) in [(Op::Recv, 7, 3), (Op::Close, 0x3fff_ffff, u32::MAX)] {
            assert_eq!(untag(tag(op, generation, slot)), (op, generation, slot));
        }
    }
}
