//! Message headers for `recvmsg(2)`/`sendmsg(2)` (`Op::SendMsg`, epoll's datagram
//! receives): a `msghdr`, its `iovec`s and the address, in one heap block the op (or
//! driver) owns, so every pointer the kernel is given stays valid until it is done.
//!
//! # Implementation
//! The `msghdr` points into its own block (at the `iovec` and the address) and at the data's
//! heap storage. The block is boxed and never moved while an op holds it, and
//! [`RecvMsgBuf::header`]/[`SendMsgBuf::header`] refresh every pointer right before each
//! syscall or SQE, so even a block that moved between two ops is pointed at correctly.

use std::fmt;
use std::mem;
use std::ptr;

use bytes::Bytes;
use socket2::SockAddr;

/// A zeroed `msghdr` (plain old data: all-zero is a valid empty header).
fn zeroed_header() -> libc::msghdr {
    // SAFETY: msghdr is a C struct of integers and raw pointers; all-zero is valid.
    unsafe { mem::zeroed() }
}

/// A zeroed `sockaddr_storage` (`AF_UNSPEC`).
fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    unsafe { mem::zeroed() }
}

/// The size of a `sockaddr_storage`.
const STORAGE_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// Where one received datagram lands: the data buffer, the sender's address and the kernel's
/// `msg_flags` (`MSG_TRUNC` says the datagram was longer than the buffer).
#[cfg(feature = "fallback")]
pub(crate) struct RecvMsgBuf {
    /// The header given to the kernel; after the op, `msg_namelen` and `msg_flags` are the
    /// kernel's.
    hdr: libc::msghdr,
    /// The one iovec: all of `data`.
    iov: libc::iovec,
    /// The sender's address.
    addr: libc::sockaddr_storage,
    /// The data buffer; its length is the most one receive takes.
    data: Vec<u8>,
}

#[cfg(feature = "fallback")]
impl RecvMsgBuf {
    /// A buffer for datagrams of up to `capacity` bytes. It is zeroed once (it is meant to be
    /// reused).
    pub(crate) fn new(capacity: usize) -> Box<RecvMsgBuf> {
        Box::new(RecvMsgBuf {
            hdr: zeroed_header(),
            iov: libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 },
            addr: zeroed_storage(),
            data: vec![0; capacity],
        })
    }

    /// Points the header at this block's iovec, address and data, with the full capacities,
    /// and returns it for `recvmsg(2)`. Valid while `self` is neither
    /// moved nor dropped.
    pub(crate) fn header(&mut self) -> *mut libc::msghdr {
        self.iov =
            libc::iovec { iov_base: self.data.as_mut_ptr().cast(), iov_len: self.data.len() };
        self.hdr = zeroed_header();
        self.hdr.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
        self.hdr.msg_namelen = STORAGE_LEN;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
        &mut self.hdr
    }

    /// The first `n` bytes received (`n` as the op's result; clamped to the buffer).
    pub(crate) fn data(&self, n: usize) -> &[u8] {
        &self.data[..n.min(self.data.len())]
    }

    /// Whether the last datagram was longer than the buffer (and so cut short): the kernel's
    /// `MSG_TRUNC` in `msg_flags`.
    pub(crate) fn truncated(&self) -> bool {
        self.hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// The sender's address, `None` when the kernel gave none (an unbound unix socket).
    pub(crate) fn source(&self) -> Option<SockAddr> {
        // The kernel wrote `msg_namelen` bytes of address into `addr` (the rest of the storage
        // is zeroed or an older address).
        source_address(&self.addr, self.hdr.msg_namelen)
    }
}

/// A sender's address from the first `len` bytes of `storage`, as `recvmsg(2)` (or a multishot
/// `RECVMSG` buffer) gave it: `None` when there is none (an unbound unix socket: no more than
/// the family). `len` is clamped to the storage.
pub(crate) fn source_address(
    storage: &libc::sockaddr_storage,
    len: libc::socklen_t,
) -> Option<SockAddr> {
    let len = len.min(STORAGE_LEN);
    if (len as usize) <= mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: `storage` is a whole, initialised sockaddr_storage whose first `len` bytes (at
    // most its size) are the address the kernel wrote.
    Some(unsafe { SockAddr::new(*storage, len) })
}

#[cfg(feature = "fallback")]
impl fmt::Debug for RecvMsgBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecvMsgBuf(capacity {}, flags {:#x})", self.data.len(), self.hdr.msg_flags)
    }
}

/// Bytes to send with one `sendmsg(2)`, and where to (`None`: the connected peer): one
/// datagram, or the queued writes of a stream socket as one vectored send.
pub(crate) struct SendMsgBuf {
    /// The header given to the kernel.
    hdr: libc::msghdr,
    /// One iovec per chunk of `data`, refreshed by [`header`](Self::header).
    iovs: Vec<libc::iovec>,
    /// The destination (`addr_len` 0: none).
    addr: libc::sockaddr_storage,
    /// How many bytes of `addr` are meaningful.
    addr_len: libc::socklen_t,
    /// The bytes, in order (a datagram is one chunk).
    data: Vec<Bytes>,
}

impl SendMsgBuf {
    /// `data` for `to` (`None`: the connected peer).
    pub(crate) fn new(data: Bytes, to: Option<&SockAddr>) -> Box<SendMsgBuf> {
        let mut addr = zeroed_storage();
        let mut addr_len = 0;
        if let Some(to) = to {
            addr_len = to.len().min(STORAGE_LEN);
            // SAFETY: `to.as_ptr()` points at `to.len()` initialised bytes (a SockAddr is
            // stored in a sockaddr_storage); at most a storage's size is copied into our own,
            // distinct storage.
            unsafe {
                ptr::copy_nonoverlapping(
                    to.as_ptr().cast::<u8>(),
                    (&mut addr as *mut libc::sockaddr_storage).cast::<u8>(),
                    addr_len as usize,
                );
            }
        }
        let iovs = Vec::with_capacity(1);
        Box::new(SendMsgBuf { hdr: zeroed_header(), iovs, addr, addr_len, data: vec![data] })
    }

    /// The chunks `data`, in order, as one send to a connected stream socket (a short count
    /// is possible, as for `send(2)`). At most `UIO_MAXIOV` (1024) chunks.
    pub(crate) fn vectored(data: Vec<Bytes>) -> Box<SendMsgBuf> {
        debug_assert!(data.len() <= 1024, "more chunks than UIO_MAXIOV");
        let iovs = Vec::with_capacity(data.len());
        let (addr, addr_len) = (zeroed_storage(), 0);
        Box::new(SendMsgBuf { hdr: zeroed_header(), iovs, addr, addr_len, data })
    }

    /// Points the header at this block's iovecs, address and data and returns it for
    /// `sendmsg(2)` or `IORING_OP_SENDMSG`. Valid while `self` is neither moved nor dropped.
    pub(crate) fn header(&mut self) -> *const libc::msghdr {
        // The kernel only reads through iov_base for a send.
        self.iovs.clear();
        let iov = |b: &Bytes| libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() };
        self.iovs.extend(self.data.iter().map(iov));
        self.hdr = zeroed_header();
        if self.addr_len > 0 {
            self.hdr.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
            self.hdr.msg_namelen = self.addr_len;
        }
        self.hdr.msg_iov = self.iovs.as_mut_ptr();
        self.hdr.msg_iovlen = self.iovs.len();
        &self.hdr
    }

    /// The bytes to send.
    fn len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }
}

impl fmt::Debug for SendMsgBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (len, chunks, addr_len) = (self.len(), self.data.len(), self.addr_len);
        write!(f, "SendMsgBuf({len} bytes in {chunks} chunks, address len {addr_len})")
    }
}
