//! Received bytes handed from the driver to the loop by `Op::RecvMulti` and `Op::RecvMsgMulti`
//! completions, and the io_uring provided-buffer rings they may live in.
//!
//! A [`RecvBuf`] is either a slot of a [`BufRing`] (io_uring, zero copy: the kernel wrote the
//! bytes there) or a buffer of epoll's [`BufPool`] (epoll `recv`s straight into one). Dropping either gives the buffer back at once (to the ring,
//! or to the pool), so a completion's bytes should be used and dropped in the same dispatch
//! (the stream transport copies them only when it must hold them, reading paused). Neither
//! route copies or allocates per chunk once warm: an idle connection holds no buffer, and a
//! busy loop reuses the same few.

use std::cell::Cell;
#[cfg(feature = "fallback")]
use std::cell::{RefCell, RefMut};
use std::io;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread::ThreadId;

use bytes::Bytes;
use socket2::SockAddr;

/// Bytes a multishot recv delivered (a stream chunk, or one whole datagram and its sender).
/// Derefs to exactly the received bytes.
pub(crate) struct RecvBuf {
    /// Where they are.
    inner: Inner,
    /// A datagram's sender (`None` for stream bytes, or a sender without an address). Boxed:
    /// a `SockAddr` is 132 bytes, and every stream chunk's completion would move them.
    source: Option<Box<SockAddr>>,
}

/// Offsets and lengths in `u32` (a buffer is at most 64 KiB) and the pooled buffer's length
/// in its `Vec`, so that this is 32 bytes, a `RecvBuf` 40 and a driver `Completion` carrying
/// one 128: a completion is moved a few times on its way to its owner, and from 129 bytes on
/// each move was a `memcpy` call.
enum Inner {
    /// `len` bytes at `offset` in buffer `bid` of `ring`; the buffer goes back on drop.
    Ring { ring: Rc<BufRing>, offset: u32, len: u32, bid: u16 },
    /// `buf`'s bytes (what was received), a buffer of `pool`; given back to it on drop.
    #[cfg(feature = "fallback")]
    Pooled { pool: BufPool, buf: Vec<u8> },
    /// Bytes of its own: a datagram copied out of epoll's scratch buffer (and tests).
    #[cfg(any(test, feature = "fallback"))]
    Owned(Vec<u8>),
}

impl RecvBuf {
    /// Bytes of their own.
    #[cfg(test)]
    pub(crate) fn owned(bytes: Vec<u8>) -> RecvBuf {
        RecvBuf { inner: Inner::Owned(bytes), source: None }
    }

    /// A datagram copied out of a driver scratch buffer, with its sender.
    #[cfg(feature = "fallback")]
    pub(crate) fn datagram(bytes: Vec<u8>, source: Option<SockAddr>) -> RecvBuf {
        RecvBuf { inner: Inner::Owned(bytes), source: source.map(Box::new) }
    }

    /// Narrows a ring slot to the `len` bytes at `offset` of what it holds (a multishot
    /// `RECVMSG` buffer: header, name, then the payload) and attaches the sender.
    pub(crate) fn into_datagram(
        mut self,
        start: usize,
        len: usize,
        from: Option<SockAddr>,
    ) -> Self {
        match &mut self.inner {
            Inner::Ring { offset, len: held, .. } => {
                let start = u32::try_from(start).unwrap_or(u32::MAX).min(*held);
                *offset += start;
                *held = u32::try_from(len).unwrap_or(u32::MAX).min(*held - start);
            }
            #[cfg(feature = "fallback")]
            Inner::Pooled { buf, .. } => {
                let start = start.min(buf.len());
                buf.copy_within(start.., 0);
                buf.truncate(len.min(buf.len() - start));
            }
            #[cfg(any(test, feature = "fallback"))]
            Inner::Owned(bytes) => {
                bytes.truncate(start.saturating_add(len));
                bytes.drain(..start.min(bytes.len()));
            }
        }
        self.source = from.map(Box::new);
        self
    }

    /// The datagram's sender, if the kernel gave one.
    pub(crate) fn source(&self) -> Option<&SockAddr> {
        self.source.as_deref()
    }

    /// A second holder of these bytes, for a send of them that the loop batches without
    /// copying (see [`into_bytes`](Self::into_bytes)): the ring slot goes back to the kernel
    /// only once every holder is dropped. `None` for bytes not in a ring slot, and while sends
    /// hold half the ring (slots out for any other reason are not counted): the loop submits a
    /// send holding a slot right after the dispatch, and a send the socket takes whole gives
    /// its slot back before the next wait, when the kernel takes buffers for receives; the
    /// limit keeps sends stuck on slow peers from starving the loop's reads. (When the sends
    /// waited for the turn's enter, their slots were still out in its wait, and lending while
    /// up to half the ring was out made every third receive of a 16 KiB ping-pong end in
    /// `ENOBUFS`: `docs/benchmarks.md`.) Nor for a chunk that filled its buffer: more bytes
    /// were waiting, a stream is flowing, and its slots are better kept for receiving (lending
    /// those cost 5% at pipelined 16 KiB echo).
    pub(crate) fn lend(&self) -> Option<RecvBuf> {
        match &self.inner {
            Inner::Ring { ring, bid, offset, len }
                if (*len as usize) < ring.buf_size && ring.lends() =>
            {
                ring.hold(*bid);
                let inner =
                    Inner::Ring { ring: Rc::clone(ring), bid: *bid, offset: *offset, len: *len };
                Some(RecvBuf { inner, source: None })
            }
            _ => None,
        }
    }

    /// The bytes as a [`Bytes`] that holds them (no copy): for a lent slot (see
    /// [`lend`](Self::lend)) handed to a send. `Bytes` is `Send`; the slot is not (its ring is
    /// the loop thread's), so dropped on another thread the `Bytes` leaks the slot rather than
    /// give it back from there (never happens: the write buffer and the driver holding it stay
    /// on the loop's thread).
    pub(crate) fn into_bytes(self) -> Bytes {
        if let Some(ring) = self.ring() {
            ring.sending.set(ring.sending.get() + 1);
        }
        let (ptr, len) = (self.as_ptr(), self.len());
        Bytes::from_owner(Lent { buf: ManuallyDrop::new(self), thread: this_thread(), ptr, len })
    }

    /// The ring whose slot holds these bytes, if they are in one.
    fn ring(&self) -> Option<&BufRing> {
        match &self.inner {
            Inner::Ring { ring, .. } => Some(ring),
            #[cfg(feature = "fallback")]
            Inner::Pooled { .. } => None,
            #[cfg(any(test, feature = "fallback"))]
            Inner::Owned(_) => None,
        }
    }

    /// [`into_bytes`](Self::into_bytes) narrowed to `part`, if `part` lies in these bytes
    /// (else `self` back).
    pub(crate) fn into_bytes_of(self, part: &[u8]) -> Result<Bytes, RecvBuf> {
        let start = (part.as_ptr() as usize).wrapping_sub(self.as_ptr() as usize);
        if start > self.len() || self.len() - start < part.len() {
            return Err(self);
        }
        Ok(self.into_bytes().slice(start..start + part.len()))
    }

    /// Whether the bytes live in a provided-buffer ring slot (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn is_ring_slot(&self) -> bool {
        matches!(self.inner, Inner::Ring { .. })
    }
}

impl Deref for RecvBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: the kernel wrote the bytes `offset..offset + len` (within `buf_size`: `take`
            // refuses more, `into_datagram` only narrows) of buffer `bid`, which left the ring
            // with that CQE and is not handed to the kernel again until this value is dropped;
            // the ring's memory lives as long as the `Rc`.
            Inner::Ring { ring, bid, offset, len } => unsafe {
                std::slice::from_raw_parts(ring.buf_ptr(*bid).add(*offset as usize), *len as usize)
            },
            #[cfg(feature = "fallback")]
            Inner::Pooled { buf, .. } => buf,
            #[cfg(any(test, feature = "fallback"))]
            Inner::Owned(bytes) => bytes,
        }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Ring { ring, bid, .. } => ring.release(*bid),
            #[cfg(feature = "fallback")]
            Inner::Pooled { pool, buf, .. } => pool.give_back(std::mem::take(buf)),
            #[cfg(any(test, feature = "fallback"))]
            Inner::Owned(_) => {}
        }
    }
}

/// A lent ring slot inside a [`Bytes`] (see [`RecvBuf::into_bytes`]).
struct Lent {
    /// The slot, dropped only on the thread that lent it.
    buf: ManuallyDrop<RecvBuf>,
    /// That thread.
    thread: ThreadId,
    /// Where the bytes are, so reading them never touches the ring's `Rc`.
    ptr: *const u8,
    /// How many.
    len: usize,
}

// SAFETY: what `Lent` shares with its thread is the ring (an `Rc` and `Cell`s), and it touches
// the ring only in `drop`, which does so only on the thread that lent it (elsewhere it leaks
// the slot). `as_ref` reads bytes the kernel wrote before the slot was lent; they are not
// written again until every holder is dropped (the slot is out of the ring until then).
unsafe impl Send for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` are the slot's received bytes (taken from the `RecvBuf`
        // this holds), valid and unchanged while it lives (see the `Send` impl).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if THREAD_ID.with(Cell::get) == Some(self.thread) {
            if let Some(ring) = self.buf.ring() {
                ring.sending.set(ring.sending.get() - 1);
            }
            // SAFETY: dropped once, here; `buf` is not used again.
            unsafe { ManuallyDrop::drop(&mut self.buf) };
        }
    }
}

thread_local! {
    /// The thread's id once it lent a slot, in a thread-local that needs no destructor: `Lent`'s
    /// drop reads it also while the thread's other thread-locals are destroyed (a loop kept in
    /// one and dropped at thread exit drops its sends' `Bytes` then), where
    /// `std::thread::current` may panic.
    static THREAD_ID: Cell<Option<ThreadId>> = const { Cell::new(None) };
}

/// The calling thread's id (see [`THREAD_ID`]).
fn this_thread() -> ThreadId {
    THREAD_ID.with(|id| {
        id.get().unwrap_or_else(|| {
            let current = std::thread::current().id();
            id.set(Some(current));
            current
        })
    })
}

/// epoll's receive buffers, reused: [`recv`](Self::recv) receives into one and
/// hands it over in a [`RecvBuf`], which gives it back when dropped.
/// At most [`MAX_IDLE`](Self::MAX_IDLE) idle buffers are kept. Like the driver that owns it,
/// it stays on the loop's thread.
#[cfg(feature = "fallback")]
#[derive(Clone, Default)]
pub(crate) struct BufPool(Rc<RefCell<Vec<Vec<u8>>>>);

#[cfg(feature = "fallback")]
impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BufPool({} idle)", self.idle().len())
    }
}

#[cfg(feature = "fallback")]
impl BufPool {
    /// Bytes per buffer: one `recv` takes at most this much. A 64 KiB read lets a stream
    /// that is sending fast be echoed or forwarded in 64 KiB writes, which cost the kernel
    /// far less per byte than 16 KiB ones (measured: pipelined 16 KiB echo, 2026-12-06).
    pub(crate) const BUF_SIZE: usize = 64 * 1024;
    /// Idle buffers kept for reuse; more are freed. A turn can hand out one per ready
    /// connection: fewer would free and allocate buffers every turn under load. Buffers are
    /// not zeroed, so a page costs memory only once a `recv` wrote into it: at most 4 MiB per
    /// loop, and far less while messages are small.
    const MAX_IDLE: usize = 64;

    /// `recv(fd, MSG_DONTWAIT)` into a pooled buffer: `Ok(Some(bytes))`, `Ok(None)` at the end
    /// of the stream, or the error (`EAGAIN` included). The buffer goes straight back to the
    /// pool unless bytes came.
    #[inline]
    pub(crate) fn recv(&self, fd: std::os::fd::RawFd) -> io::Result<Option<RecvBuf>> {
        let mut buf = self.idle().pop().unwrap_or_else(|| Vec::with_capacity(Self::BUF_SIZE));
        match super::epoll::syscall::recv(fd, &mut buf) {
            Ok(len) if len > 0 => {
                debug_assert_eq!(buf.len(), len as usize, "a recv into an empty pooled buffer");
                let inner = Inner::Pooled { pool: self.clone(), buf };
                Ok(Some(RecvBuf { inner, source: None }))
            }
            result => {
                self.give_back(buf);
                result.map(|_| None)
            }
        }
    }

    fn idle(&self) -> RefMut<'_, Vec<Vec<u8>>> {
        // Borrowed only inside this type's methods, which call out to nothing.
        self.0.borrow_mut()
    }

    /// Keeps `buf` for reuse unless enough are idle already.
    fn give_back(&self, mut buf: Vec<u8>) {
        let mut idle = self.idle();
        if idle.len() < Self::MAX_IDLE && buf.capacity() >= Self::BUF_SIZE {
            buf.clear();
            idle.push(buf);
        }
    }
}

impl std::fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Ring { .. } => "ring",
            #[cfg(feature = "fallback")]
            Inner::Pooled { .. } => "pooled",
            #[cfg(any(test, feature = "fallback"))]
            Inner::Owned(_) => "owned",
        };
        write!(f, "RecvBuf({kind}, {} bytes)", self.len())
    }
}

/// An anonymous private mapping, zero-filled; pages cost memory only once touched.
struct Mapping {
    /// Start (page-aligned).
    ptr: NonNull<u8>,
    /// Length in bytes.
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: NonNull::new(ptr.cast()).expect("mmap never returns null"), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr+len` is this mapping, unmapped once; the owner (the ring) is dropped
        // only when the kernel can no longer write into it (see `BufRing`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// An io_uring provided-buffer ring (`IORING_REGISTER_PBUF_RING`, 5.19) and its buffers: `entries`
/// buffers of `buf_size` bytes, all in one mapping, and the ring of 16-byte descriptors the
/// kernel takes them from.
///
/// # Ownership (see docs/safety.md)
/// The kernel may write into any buffer published in the ring, at any time while a recv with
/// this buffer group is armed. A buffer leaves the ring when a CQE names it; from then on only
/// its [`RecvBuf`] reads it, and dropping that publishes it again. The memory is freed when the
/// last `Rc` goes: the driver drops its `Rc` only after unregistering the ring with every op's
/// final CQE in (and leaks it otherwise), and a `RecvBuf` never hands its buffer back to an
/// unregistered ring. Like the driver, a ring and its `RecvBuf`s stay on the loop's thread
/// (`Rc` and `Cell`s: no atomic operation per chunk).
pub(crate) struct BufRing {
    /// The descriptor ring (page-aligned, as the kernel requires).
    ring: Mapping,
    /// The buffers.
    bufs: Mapping,
    /// Buffers (a power of two, at most 32768).
    entries: u16,
    /// Bytes per buffer.
    buf_size: usize,
    /// Our tail: the next entry index to fill (wrapping `u16`, as the kernel's).
    tail: Cell<u16>,
    /// False once the driver unregistered the ring: given-back buffers are not published.
    live: Cell<bool>,
    /// Buffers out of the ring (delivered, not yet given back).
    out: Cell<usize>,
    /// Per buffer, its holders beyond the first (see [`RecvBuf::lend`]).
    lent: Box<[Cell<u16>]>,
    /// Slots held by a send: the live [`Lent`]s (one left on another thread stays counted,
    /// as its slot stays out).
    sending: Cell<usize>,
}

impl BufRing {
    /// Maps `entries` (a power of two) buffers of `buf_size` bytes and fills the ring with them.
    /// The caller registers [`ring_addr`](Self::ring_addr) with the kernel.
    pub(crate) fn new(entries: u16, buf_size: usize) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 1 << 15, "bad buffer ring size {entries}");
        let ring = Mapping::new(usize::from(entries) * std::mem::size_of::<BufDescriptor>())?;
        let bufs = Mapping::new(usize::from(entries) * buf_size)?;
        let (tail, live, out) = (Cell::new(0), Cell::new(true), Cell::new(usize::from(entries)));
        let lent = (0..entries).map(|_| Cell::new(0)).collect();
        let sending = Cell::new(0);
        let ring = BufRing { ring, bufs, entries, buf_size, tail, live, out, lent, sending };
        for bid in 0..entries {
            ring.give_back(bid);
        }
        Ok(ring)
    }

    /// The descriptor ring's address and size, for `register_buf_ring`.
    pub(crate) fn ring_addr(&self) -> (u64, u16) {
        (self.ring.ptr.as_ptr() as u64, self.entries)
    }

    /// Buffers in the ring, available to the kernel.
    pub(crate) fn available(&self) -> usize {
        usize::from(self.entries) - self.out.get()
    }

    /// Takes buffer `bid` (named by a CQE) out of the ring as `len` received bytes; `None` (and
    /// nothing taken) if the CQE names a buffer the ring does not have or more bytes than it
    /// holds.
    pub(crate) fn take(self: &Rc<Self>, bid: u16, len: usize) -> Option<RecvBuf> {
        if bid >= self.entries || len > self.buf_size {
            return None;
        }
        let len = u32::try_from(len).ok()?;
        self.out.set(self.out.get() + 1);
        let inner = Inner::Ring { ring: Rc::clone(self), bid, offset: 0, len };
        Some(RecvBuf { inner, source: None })
    }

    /// Whether a slot may be lent (see [`RecvBuf::lend`]): sends hold fewer than half the
    /// buffers.
    fn lends(&self) -> bool {
        self.sending.get() < usize::from(self.entries) / 2
    }

    /// One more holder of buffer `bid` (out of the ring).
    fn hold(&self, bid: u16) {
        let held = &self.lent[usize::from(bid)];
        held.set(held.get() + 1);
    }

    /// A holder of buffer `bid` is done with it: the last one gives it back.
    fn release(&self, bid: u16) {
        let held = &self.lent[usize::from(bid)];
        match held.get() {
            0 => self.give_back(bid),
            n => held.set(n - 1),
        }
    }

    /// After unregistering: buffers given back from now on stay out of the ring.
    pub(crate) fn retire(&self) {
        self.live.set(false);
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < entries`, so the offset stays inside the buffers' mapping.
        unsafe { self.bufs.ptr.as_ptr().add(usize::from(bid) * self.buf_size) }
    }

    /// Publishes buffer `bid` at the tail of the ring.
    fn give_back(&self, bid: u16) {
        self.out.set(self.out.get() - 1);
        if !self.live.get() {
            return;
        }
        let base = self.ring.ptr.as_ptr().cast::<BufDescriptor>();
        let tail = self.tail.get();
        let index = usize::from(tail & (self.entries - 1));
        let len = u32::try_from(self.buf_size).unwrap_or(u32::MAX);
        // SAFETY: `index < entries`: the descriptor is inside the ring mapping. The kernel reads
        // only descriptors between its head and the published tail, and this one is past the
        // tail, so nobody reads these three fields now. They are written through raw pointers,
        // never a reference: descriptor 0's `resv` is the ring's tail, which the kernel reads
        // at any time.
        unsafe {
            let desc = base.add(index);
            std::ptr::addr_of_mut!((*desc).addr).write(self.buf_ptr(bid) as u64);
            std::ptr::addr_of_mut!((*desc).len).write(len);
            std::ptr::addr_of_mut!((*desc).bid).write(bid);
        }
        self.tail.set(tail.wrapping_add(1));
        // SAFETY: the tail is the `resv` field of descriptor 0, a 2-byte-aligned `u16` inside
        // the ring mapping that the kernel reads with acquire semantics; the release store
        // publishes the descriptor written above. Only this thread writes it.
        let shared = unsafe { &*std::ptr::addr_of!((*base).resv).cast::<AtomicU16>() };
        shared.store(tail.wrapping_add(1), Ordering::Release);
    }
}

/// One descriptor of a provided-buffer ring, as the kernel lays it out (`struct io_uring_buf`).
#[repr(C)]
struct BufDescriptor {
    /// The buffer's address.
    addr: u64,
    /// Its length.
    len: u32,
    /// Its id, which CQEs name.
    bid: u16,
    /// Unused, except in descriptor 0, where it is the ring's tail.
    resv: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_bytes_stay_small_to_move() {
        // Every completion moves its `RecvBuf` a few times between the CQE and the protocol;
        // an inline `SockAddr` (132 bytes) made that a quarter of the loop's instructions per
        // 64-byte echo (callgrind).
        assert!(std::mem::size_of::<RecvBuf>() <= 40, "{}", std::mem::size_of::<RecvBuf>());
        // And a completion, with an owner the size of the loop's (`Rc<dyn OpTarget>`), within
        // the 128 bytes the compiler moves without a `memcpy` call.
        let completion = std::mem::size_of::<super::super::Completion<Rc<dyn std::any::Any>>>();
        assert!(completion <= 128, "{completion}");
    }

    #[cfg(feature = "fallback")]
    #[test]
    fn pooled_buffers_are_reused_and_none_is_kept_for_nothing() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pool = BufPool::default();
        let again = pool.recv(b.as_raw_fd()).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EAGAIN));
        assert_eq!(pool.idle().len(), 1, "the buffer of a recv that got nothing is kept");
        std::io::Write::write_all(&mut &a, b"abc").unwrap();
        let first = pool.recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!((&*first, pool.idle().len()), (&b"abc"[..], 0));
        let address = first.as_ptr();
        drop(first);
        std::io::Write::write_all(&mut &a, b"de").unwrap();
        let second = pool.recv(b.as_raw_fd()).unwrap().unwrap();
        assert_eq!(&*second, b"de");
        assert_eq!(second.as_ptr(), address, "the same buffer, no new allocation");
        drop((second, a));
        assert!(pool.recv(b.as_raw_fd()).unwrap().is_none(), "end of stream");
        assert_eq!(pool.idle().len(), 1);
    }

    #[cfg(feature = "fallback")]
    #[test]
    fn a_narrowed_pooled_buffer_holds_just_the_part_asked_for() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pool = BufPool::default();
        std::io::Write::write_all(&mut &a, b"fghij").unwrap();
        let part = pool.recv(b.as_raw_fd()).unwrap().unwrap().into_datagram(1, 3, None);
        assert_eq!(&*part, b"ghi");
        drop(part);
        assert_eq!(pool.idle().len(), 1, "back in the pool");
    }

    #[test]
    fn slots_go_out_and_come_back() {
        let ring = Rc::new(BufRing::new(4, 64).unwrap());
        assert_eq!(ring.available(), 4);
        // SAFETY (test): write as the kernel would into a buffer it took from the ring.
        unsafe { ring.buf_ptr(2).copy_from(b"hello".as_ptr(), 5) };
        let buf = ring.take(2, 5).unwrap();
        assert_eq!((&*buf, ring.available()), (&b"hello"[..], 3));
        assert!(buf.is_ring_slot());
        drop(buf);
        assert_eq!(ring.available(), 4);
        assert_eq!(&*RecvBuf::owned(b"ab".to_vec()), b"ab");
        let buf = ring.take(2, 5).unwrap().into_datagram(1, 3, None);
        assert_eq!((&*buf, ring.available()), (&b"ell"[..], 3));
        let owned = RecvBuf::owned(b"hello".to_vec()).into_datagram(3, 9, None);
        assert_eq!(&*owned, b"lo");
    }

    /// Writes `bytes` into buffer `bid` as the kernel would, and takes it out of the ring.
    fn receive(ring: &Rc<BufRing>, bid: u16, bytes: &[u8]) -> RecvBuf {
        // SAFETY (test): buffer `bid` is in the ring, and no kernel uses this ring.
        unsafe { ring.buf_ptr(bid).copy_from(bytes.as_ptr(), bytes.len()) };
        ring.take(bid, bytes.len()).unwrap()
    }

    #[test]
    fn a_lent_slot_goes_back_once_every_holder_is_done() {
        let ring = Rc::new(BufRing::new(8, 64).unwrap());
        let buf = receive(&ring, 1, b"echo me");
        let lent = buf.lend().expect("a ring slot with the ring mostly in");
        let lent = lent.into_bytes_of(b"me").expect_err("equal bytes elsewhere are no part");
        let bytes = lent.into_bytes_of(&buf[5..]).expect("a part of the slot");
        drop(buf);
        assert_eq!((&bytes[..], ring.available()), (&b"me"[..], 7), "the bytes keep it out");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(ring.available(), 7, "a clone of the bytes still holds it");
        drop(clone);
        assert_eq!(ring.available(), 8);
        assert!(RecvBuf::owned(b"x".to_vec()).lend().is_none(), "only ring slots are lent");
        let full = receive(&ring, 3, &[7; 64]);
        assert!(full.lend().is_none(), "a chunk that filled its buffer: a stream is flowing");
    }

    #[test]
    fn no_slot_is_lent_while_half_the_ring_is_lent() {
        let ring = Rc::new(BufRing::new(8, 64).unwrap());
        let waiting: Vec<_> = (4..8).map(|bid| receive(&ring, bid, b"w")).collect();
        let mut held = Vec::new();
        for bid in 0..4 {
            let buf = receive(&ring, bid, b"a");
            held.push(
                buf.lend().expect("received bytes out of the ring do not count").into_bytes(),
            );
        }
        assert!(waiting[0].lend().is_none(), "four of eight lent: the rest is for receiving");
        held.pop();
        let again = waiting[0].lend().expect("a lent slot given back counts no more");
        drop((held, again, waiting));
        assert_eq!(ring.available(), 8);
        assert_eq!(ring.sending.get(), 0);
    }

    #[test]
    fn lent_bytes_dropped_on_another_thread_leak_the_slot() {
        let ring = Rc::new(BufRing::new(8, 64).unwrap());
        let bytes = receive(&ring, 2, b"far").lend().unwrap().into_bytes();
        let bytes = std::thread::spawn(move || {
            assert_eq!(&bytes[..], b"far");
            drop(bytes);
        });
        bytes.join().unwrap();
        assert_eq!(ring.available(), 7, "not given back from a thread that does not own the ring");
    }

    #[test]
    fn a_cqe_naming_a_buffer_out_of_range_takes_nothing() {
        let ring = Rc::new(BufRing::new(4, 64).unwrap());
        assert!(ring.take(4, 5).is_none(), "no buffer 4");
        assert!(ring.take(1, 65).is_none(), "more bytes than a buffer holds");
        assert_eq!(ring.available(), 4);
    }
}
