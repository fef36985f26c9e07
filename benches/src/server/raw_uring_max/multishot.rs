//! `multishot`: the receive side ringloop itself uses, in a raw loop. Each connection has one
//! multishot `RECV` armed for its whole life (`IORING_RECV_MULTISHOT`, `IOSQE_BUFFER_SELECT`)
//! taking buffers from a provided-buffer ring ([`RING_BUFFERS`] x [`RING_BUFFER`] bytes,
//! `IORING_REGISTER_PBUF_RING`); each chunk received is echoed by one `SEND` (`MSG_WAITALL`)
//! straight from its ring buffer, submitted by the iteration's single `submit_and_wait(1)`,
//! and the buffer goes back to the ring on the send's completion. So no recv is ever armed
//! again, at the price of a completion per send (it hands the buffer back: no `skip`).
//!
//! Correctness: a connection has at most one send in flight, and chunks received meanwhile
//! wait in its queue (two sends in flight on one socket may reach it out of order). A short
//! send is re-sent from where it stopped. The connection closes once its recv has ended (EOF,
//! an error, or cancelled after a failed send) and no send is in flight, so nothing of it is
//! in flight when its slot is freed; the generation in `user_data` is kept anyway, as in the
//! linked loop. With `defer-taskrun`, `ring-fd` and `fixed-files` as in `raw-uring-max`;
//! `link`, `skip`, `poll-first` and `fixed-buffers` do not apply. With `bundle`
//! (`raw-uring-max-with-bundle`) the recv carries `IORING_RECVSEND_BUNDLE`: one completion may
//! cover several buffers, those the ring held one after the other from the one it names, each
//! then queued as a chunk of its own.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, Submitter};

use super::{run, Design, Op, Queue, Slots, Techniques};

/// Buffers in the ring.
const RING_BUFFERS: u16 = 256;
/// Bytes per ring buffer: what one recv completion may carry.
const RING_BUFFER: usize = 64 * 1024;
/// The ring's buffer group.
const GROUP: u16 = 0;

/// One descriptor of the ring, as the kernel lays it out (`struct io_uring_buf`); descriptor
/// 0's `resv` is the ring's tail.
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// The descriptor ring: one page, as the kernel requires of its address.
#[repr(C, align(4096))]
struct DescPage([Desc; RING_BUFFERS as usize]);

/// The provided-buffer ring and its buffers. Registered once and never unregistered, freed
/// or moved: the server runs until the process exits.
struct BufRing {
    /// The descriptor ring, leaked (`Box::into_raw`): the kernel reads it for the life of
    /// the process.
    descs: *mut Desc,
    /// The buffers, back to back.
    bufs: Box<[u8]>,
    /// The next descriptor to fill (wrapping, as the kernel's).
    tail: u16,
    /// Buffers published and not yet taken by a receive.
    available: usize,
    /// With bundles, for each buffer, the tail at which it was last published: where a
    /// bundle that starts with it finds the buffers after it. `None`: receives are not bundles.
    published_at: Option<Box<[u16]>>,
}

impl BufRing {
    /// Makes the ring, fills it with every buffer, and registers it as [`GROUP`].
    fn new(submitter: &Submitter<'_>, bundles: bool) -> Result<BufRing, String> {
        const EMPTY: Desc = Desc { addr: 0, len: 0, bid: 0, resv: 0 };
        let page = Box::new(DescPage([EMPTY; RING_BUFFERS as usize]));
        let descs: *mut Desc = Box::into_raw(page).cast();
        let bufs = vec![0u8; usize::from(RING_BUFFERS) * RING_BUFFER].into_boxed_slice();
        let published_at = bundles.then(|| vec![0; usize::from(RING_BUFFERS)].into());
        let mut ring = BufRing { descs, bufs, tail: 0, available: 0, published_at };
        for bid in 0..RING_BUFFERS {
            ring.give_back(bid);
        }
        // SAFETY: the descriptors and buffers live until the process exits (the page is
        // leaked; the server never drops the ring: see `run`) and never move.
        unsafe { submitter.register_buf_ring_with_flags(descs as u64, RING_BUFFERS, GROUP, 0) }
            .map_err(|e| format!("IORING_REGISTER_PBUF_RING: {e}"))?;
        Ok(ring)
    }

    /// Where buffer `bid` starts.
    fn ptr(&mut self, bid: u16) -> *mut u8 {
        self.bufs[usize::from(bid) * RING_BUFFER..].as_mut_ptr()
    }

    /// Publishes buffer `bid` at the ring's tail.
    fn give_back(&mut self, bid: u16) {
        let index = usize::from(self.tail & (RING_BUFFERS - 1));
        let addr = self.ptr(bid) as u64;
        // SAFETY: `index < RING_BUFFERS`, inside the page. The kernel reads only
        // descriptors between its head and the published tail, and this one is past it; the
        // fields are written through raw pointers because descriptor 0's `resv` (the tail) is
        // read by the kernel at any time.
        unsafe {
            let desc = self.descs.add(index);
            std::ptr::addr_of_mut!((*desc).addr).write(addr);
            std::ptr::addr_of_mut!((*desc).len).write(RING_BUFFER as u32);
            std::ptr::addr_of_mut!((*desc).bid).write(bid);
        }
        if let Some(published_at) = &mut self.published_at {
            published_at[usize::from(bid)] = self.tail;
        }
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
        // SAFETY: descriptor 0's `resv`, a 2-byte-aligned `u16` in the page that the kernel
        // reads with acquire semantics; this release store publishes the descriptor above.
        let tail = unsafe { &*std::ptr::addr_of!((*self.descs).resv).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl BufRing {
    /// Whether receives from this ring are bundles.
    fn bundles(&self) -> bool {
        self.published_at.is_some()
    }

    /// Queues on `queue`, as `(buffer id, length)`, the buffers a receive of `len` bytes
    /// filled: `first`, which its CQE names, and with bundles the buffers published after it,
    /// as many as `len` needs. They are no longer available.
    fn take_into(
        &mut self,
        first: u16,
        len: u32,
        queue: &mut VecDeque<(u16, u32)>,
    ) -> Result<(), String> {
        let Some(published_at) = &self.published_at else {
            self.available -= 1;
            queue.push_back((first, len));
            return Ok(());
        };
        let start = published_at[usize::from(first)];
        let mut left = len;
        for at in (0..).map(|i| start.wrapping_add(i)) {
            if left == 0 {
                break;
            }
            let index = usize::from(at & (RING_BUFFERS - 1));
            // SAFETY: `index < RING_BUFFERS`, inside the page; the kernel never writes a
            // descriptor's `bid` (without `IOU_PBUF_RING_INC` it only reads them).
            let bid = unsafe { std::ptr::addr_of!((*self.descs.add(index)).bid).read() };
            // Published since (the tail lapped the ring): the buffer that was there is lost.
            if published_at[usize::from(bid)] != at {
                return Err(format!("bundle: descriptor {index} re-published before it was read"));
            }
            let chunk = left.min(RING_BUFFER as u32);
            self.available -= 1;
            queue.push_back((bid, chunk));
            left -= chunk;
        }
        Ok(())
    }
}

/// One accepted connection.
#[derive(Default)]
struct Conn {
    /// Chunks received and not yet echoed whole, `(buffer id, length)`; the front one is
    /// being sent while `sending`.
    queue: VecDeque<(u16, u32)>,
    /// Bytes of the front chunk sent so far.
    sent: u32,
    /// A send is in flight.
    sending: bool,
    /// The multishot recv is armed.
    receiving: bool,
    /// A send failed: what arrives now is dropped, and the connection closes.
    failed: bool,
}

/// The loop's state apart from the ring.
struct Echo {
    slots: Slots<Conn>,
    ring: BufRing,
    /// Connections whose recv ended for want of buffers, re-armed once the ring has some.
    starved: Vec<u32>,
}

/// Serves until the process exits.
pub fn serve(
    listener: TcpListener,
    techniques: Techniques,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let echo = |submitter: &Submitter<'_>, accept| {
        let ring = BufRing::new(submitter, techniques.bundle)?;
        let slots = Slots::new(accept, techniques.fixed_files);
        Ok(Echo { slots, ring, starved: Vec::new() })
    };
    run(&listener, techniques, announce, echo)
}

impl Design for Echo {
    fn slots(&self) -> &Slots<impl Sized> {
        &self.slots
    }

    /// A new connection: its multishot recv.
    fn accepted(&mut self, cqe: &cqueue::Entry, queue: &mut Queue<'_>) -> Result<(), String> {
        let conn = || Conn { receiving: true, ..Conn::default() };
        let Some(slot) = self.slots.accepted(cqe, queue, conn)? else { return Ok(()) };
        queue.push(&[self.recv(slot)])
    }

    /// A recv completion: a chunk to echo, the end of the recv (EOF, error), or no buffer left.
    fn received(
        &mut self,
        slot: u32,
        cqe: &cqueue::Entry,
        queue: &mut Queue<'_>,
    ) -> Result<(), String> {
        let Some(conn) = self.slots.get_mut(slot) else { return Ok(()) };
        let (res, flags) = (cqe.result(), cqe.flags());
        if let (Some(bid), true) = (cqueue::buffer_select(flags), res > 0) {
            let queued = conn.queue.len();
            self.ring.take_into(bid, res as u32, &mut conn.queue)?;
            if conn.failed {
                for (bid, _) in conn.queue.drain(queued..) {
                    self.ring.give_back(bid);
                }
            }
        }
        if !cqueue::more(flags) {
            // The kernel ended the recv: armed again (at once, or once the ring has buffers)
            // unless it ended for good.
            match res {
                _ if conn.failed => conn.receiving = false,
                n if n > 0 || n == -libc::ENOBUFS => self.starved.push(slot),
                _ => conn.receiving = false,
            }
        }
        self.progress(slot, queue)
    }

    /// A send's completion: the rest of a short one, the buffer back and the next chunk after
    /// a whole one; a failed one ends the connection.
    fn sent(&mut self, slot: u32, res: i32, queue: &mut Queue<'_>) -> Result<(), String> {
        let Some(conn) = self.slots.get_mut(slot) else { return Ok(()) };
        conn.sending = false;
        if res <= 0 {
            conn.failed = true;
            for (bid, _) in conn.queue.drain(..) {
                self.ring.give_back(bid);
            }
            if conn.receiving {
                let recv = self.slots.tag(Op::Recv, slot);
                let cancel = opcode::AsyncCancel::new(recv).build();
                queue.push(&[cancel.user_data(self.slots.tag(Op::Close, slot))])?;
            }
        } else {
            conn.sent += res as u32;
            if conn.queue.front().is_some_and(|&(_, len)| conn.sent >= len) {
                let (bid, _) = conn.queue.pop_front().expect("the chunk just sent");
                conn.sent = 0;
                self.ring.give_back(bid);
            }
        }
        self.progress(slot, queue)
    }
}

impl Echo {
    /// Arms again the recvs that ended, as many as the ring has buffers for, whichever path
    /// gave those back (a send done, a failed connection's queue dropped).
    fn rearm_starved(&mut self, queue: &mut Queue<'_>) -> Result<(), String> {
        for _ in 0..self.ring.available.min(self.starved.len()) {
            let slot = self.starved.pop().expect("counted above");
            queue.push(&[self.recv(slot)])?;
        }
        Ok(())
    }

    /// Keeps a send in flight while a chunk waits; closes the connection once its recv has
    /// ended and no send is in flight.
    fn progress(&mut self, slot: u32, queue: &mut Queue<'_>) -> Result<(), String> {
        self.rearm_starved(queue)?;
        let Some(conn) = self.slots.get_mut(slot) else { return Ok(()) };
        if conn.sending {
            return Ok(());
        }
        if let Some(&(bid, len)) = conn.queue.front() {
            let sent = conn.sent;
            conn.sending = true;
            // SAFETY: `sent < len <= RING_BUFFER`: inside buffer `bid`.
            let ptr = unsafe { self.ring.ptr(bid).add(sent as usize) };
            let send = opcode::Send::new(types::Fd(slot as i32), ptr, len - sent)
                .flags(libc::MSG_WAITALL)
                .build();
            return queue.push(&[self.slots.target(Op::Send, slot, send)]);
        }
        if !conn.receiving {
            self.slots.close(slot, queue)?;
        }
        Ok(())
    }

    /// The connection's multishot recv.
    fn recv(&self, slot: u32) -> squeue::Entry {
        let fd = types::Fd(slot as i32);
        let entry = match self.ring.bundles() {
            true => opcode::RecvMultiBundle::new(fd, GROUP).build(),
            false => opcode::RecvMulti::new(fd, GROUP).build(),
        };
        self.slots.target(Op::Recv, slot, entry)
    }
}
