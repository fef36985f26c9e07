//! The limit row, `raw-uring-max`: the strongest io_uring echo loop we could write, with no
//! runtime. Each technique below can be switched off or on to measure what it buys
//! ([`techniques`]: `raw-uring-max-no-fixed-files`, `raw-uring-max-no-multishot-no-link`).
//!
//! Used by `raw-uring-max`, whatever the receive design:
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
//! - `multishot`: one multishot recv per connection from a provided-buffer ring, and a send
//!   per chunk received, straight from its ring buffer ([`multishot`]). It measured 3-7%
//!   cheaper per request than the linked loop below at 64 B and 1 KiB, level at 16 KiB
//!   (`docs/benchmarks.md`).
//!
//! Without `multishot` (`raw-uring-max-no-multishot`), the linked loop of this file: every
//! connection has one buffer and exactly one recv in flight (or a linked send→recv pair, whose
//! last completion is the recv's), with
//! - `link`: per request one send of what the recv got, linked (`IOSQE_IO_LINK`) to the next
//!   recv into the same buffer, both queued from the recv's completion and submitted by the
//!   iteration's single `submit_and_wait(1)`. Without it the recv is queued when the send's
//!   completion arrives, one iteration later.
//! - `skip`: `IOSQE_CQE_SKIP_SUCCESS` on the linked send, so a request costs one completion
//!   (the recv's). Only with `link`: otherwise the send's completion starts the next recv.
//!
//! Left out of the linked loop because they measured slower here (`-with-NAME` adds them):
//! - `poll-first`: `IORING_RECVSEND_POLL_FIRST` on the recv, which then arms its poll at once
//!   instead of first trying the receive. A busy server usually finds the next request already
//!   there by the time the linked recv runs, so arming the poll first is work it need not do.
//! - `fixed-buffers`: the region of [`buffers::REGISTERED`] registered buffers
//!   (`IORING_REGISTER_BUFFERS`), read and written with `READ_FIXED`/`WRITE_FIXED` instead of
//!   `RECV`/`SEND`.
//!
//! Correctness of the linked loop: `SEND` carries `MSG_WAITALL`, so the kernel itself retries a
//! short send until the whole chunk is out, or fails it; a `WRITE_FIXED` may end short, which
//! fails its link. A failed or short send posts its completion even with `skip`; the linked
//! recv is then cancelled without running, and posts no completion of its own when the send
//! was `skip` (`-ECANCELED`, ignored, otherwise). So the loop re-sends the rest of a short send
//! (with a new linked recv) and closes the connection on a failed send, or on a recv that ends
//! with EOF or an error: in each case the connection's last op has ended. (A first version
//! waited for the recv's `-ECANCELED` after a skipped send, and leaked every connection reset
//! while its echo was being sent.) The kernel's slot or fd number may go to a new connection as
//! soon as it is closed, so every `user_data` carries the slot's generation and a completion of
//! an earlier connection is ignored.

mod buffers;
mod multishot;
mod slots;
pub mod techniques;

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use io_uring::{
    cqueue, opcode, squeue, types, CompletionQueue, IoUring, SubmissionQueue, Submitter,
};

use buffers::{Buf, Buffers, BUFFER};
use slots::Slots;
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
    slots: Slots<Conn>,
    /// The buffers not in use.
    buffers: Buffers,
}

/// What a loop design does with each kind of completion ([`dispatch`] sorts them).
trait Design {
    /// The design's connections.
    fn slots(&self) -> &Slots<impl Sized>;
    /// An accept's completion.
    fn accepted(&mut self, cqe: &cqueue::Entry, queue: &mut Queue<'_>) -> Result<(), String>;
    /// A recv's completion, of the connection in `slot` now.
    fn received(
        &mut self,
        slot: u32,
        cqe: &cqueue::Entry,
        queue: &mut Queue<'_>,
    ) -> Result<(), String>;
    /// A send's completion (`res`), of the connection in `slot` now.
    fn sent(&mut self, slot: u32, res: i32, queue: &mut Queue<'_>) -> Result<(), String>;
}

/// Hands every completion the kernel has posted to `design`; completions of a connection no
/// longer in its slot, and of closes and cancels (only a failure posts one), are dropped.
fn dispatch(
    design: &mut impl Design,
    cq: &mut CompletionQueue<'_>,
    queue: &mut Queue<'_>,
) -> Result<(), String> {
    cq.sync();
    for cqe in &mut *cq {
        let (op, generation, slot) = untag(cqe.user_data());
        match op {
            Op::Accept => design.accepted(&cqe, queue)?,
            _ if !design.slots().current(slot, generation) => {} // stale
            Op::Recv => design.received(slot, &cqe, queue)?,
            Op::Send => design.sent(slot, cqe.result(), queue)?,
            Op::Close => {}
        }
    }
    cq.sync();
    Ok(())
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
        // or moves a buffer (with `multishot`, a ring buffer, given back to the ring only on
        // its send's completion, and the ring is never freed); accept, close and cancel carry
        // no buffer. Linked entries are pushed in one call, so the chain stays whole.
        unsafe { self.sq.push_multiple(entries) }.map_err(|_| "submission queue full".to_string())
    }
}

/// Serves until the process exits.
pub fn serve(
    listener: TcpListener,
    techniques: Techniques,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    if techniques.multishot {
        return multishot::serve(listener, techniques, announce);
    }
    let echo = |submitter: &Submitter<'_>, accept| {
        let buffers = Buffers::new(submitter, techniques.fixed_buffers)?;
        Ok(Echo { techniques, slots: Slots::new(accept, techniques.fixed_files), buffers })
    };
    run(&listener, techniques, announce, echo)
}

/// The loop both designs share: sets up the ring with `techniques`' registrations, makes the
/// design's state with `make` (given the submitter, for registrations of its own, and the
/// multishot accept of `listener`, to re-arm), queues the accept, announces, then submits and
/// waits, [`dispatch`]ing the completions, until an error.
fn run<D: Design>(
    listener: &TcpListener,
    techniques: Techniques,
    announce: impl FnOnce() -> Result<(), String>,
    make: impl FnOnce(&Submitter<'_>, squeue::Entry) -> Result<D, String>,
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
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .allocate_file_index(techniques.fixed_files)
        .build()
        .user_data(tag(Op::Accept, 0, 0));
    let mut state = make(&submitter, accept.clone())?;
    let mut queue = Queue { submitter, sq };
    queue.push(std::slice::from_ref(&accept))?;
    announce()?;
    let error = loop {
        queue.sq.sync();
        match queue.submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => break format!("io_uring_enter: {e}"),
        }
        queue.sq.sync();
        if let Err(e) = dispatch(&mut state, &mut cq, &mut queue) {
            break e;
        }
    };
    // Ops may still be in flight: leak their buffers rather than free them under the kernel.
    std::mem::forget(state);
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

impl Design for Echo {
    fn slots(&self) -> &Slots<impl Sized> {
        &self.slots
    }

    /// A new connection: its first recv.
    fn accepted(&mut self, cqe: &cqueue::Entry, queue: &mut Queue<'_>) -> Result<(), String> {
        let buffers = &mut self.buffers;
        let conn = || Conn { buf: buffers.take(), len: 0, sent: 0 };
        let Some(slot) = self.slots.accepted(cqe, queue, conn)? else { return Ok(()) };
        let recv = self.recv(slot);
        queue.push(&[recv])
    }

    /// A recv ended: echo what it got, or close at EOF or on an error. `-ECANCELED` means its
    /// linked send failed or ended short, and that send's completion deals with it.
    fn received(
        &mut self,
        slot: u32,
        cqe: &cqueue::Entry,
        queue: &mut Queue<'_>,
    ) -> Result<(), String> {
        let Some(conn) = self.slots.get_mut(slot) else { return Ok(()) };
        match cqe.result() {
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
        let Some(conn) = self.slots.get_mut(slot) else { return Ok(()) };
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
}

impl Echo {
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
        if let Some(conn) = self.slots.close(slot, queue)? {
            self.buffers.give(conn.buf);
        }
        Ok(())
    }

    /// A recv into the whole of the connection's buffer.
    fn recv(&mut self, slot: u32) -> squeue::Entry {
        let conn = self.slots.get_mut(slot).expect("a live connection");
        let (fd, ptr, len) =
            (types::Fd(slot as i32), self.buffers.ptr(&mut conn.buf), BUFFER as u32);
        let entry = match conn.buf {
            Buf::Registered(index) => opcode::ReadFixed::new(fd, ptr, len, index).build(),
            Buf::Heap(_) => {
                let ioprio = if self.techniques.poll_first { RECVSEND_POLL_FIRST } else { 0 };
                opcode::Recv::new(fd, ptr, len).ioprio(ioprio).build()
            }
        };
        self.slots.target(Op::Recv, slot, entry)
    }

    /// A send of what is left of the connection's echo: all of it or an error (`SEND` with
    /// `MSG_WAITALL`), or possibly less (`WRITE_FIXED`).
    fn send(&mut self, slot: u32) -> squeue::Entry {
        let conn = self.slots.get_mut(slot).expect("a live connection");
        // SAFETY: `sent < len <= BUFFER`, so the pointer stays inside the connection's buffer.
        let ptr = unsafe { self.buffers.ptr(&mut conn.buf).add(conn.sent) };
        let (fd, len) = (types::Fd(slot as i32), (conn.len - conn.sent) as u32);
        let entry = match conn.buf {
            Buf::Registered(index) => opcode::WriteFixed::new(fd, ptr, len, index).build(),
            Buf::Heap(_) => opcode::Send::new(fd, ptr, len).flags(libc::MSG_WAITALL).build(),
        };
        self.slots.target(Op::Send, slot, entry)
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
