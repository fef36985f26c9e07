//! Datagrams for `Op::RecvMsgMulti`, shared by the backends: the sizes every route agrees on,
//! the `msghdr` a multishot `RECVMSG` is armed with, the parsing of what the kernel puts in a
//! provided buffer, and the `recvmsg(2)` into a driver scratch buffer of the readiness routes.
//!
//! Every route hands over one whole datagram per completion (never split, never merged) with
//! its sender, or `EMSGSIZE` for a datagram longer than [`DATAGRAM_CAPACITY`] (the kernel
//! flagged `MSG_TRUNC`): a cut datagram is never delivered.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use socket2::SockAddr;

use super::msg::source_address;
use super::{RecvBuf, RecvMsgBuf};

/// The longest datagram every route delivers whole: more than the largest UDP payload
/// (65,507 bytes over IPv4, 65,527 over IPv6), so only an oversize unix datagram is cut (and
/// then reported as `EMSGSIZE`).
pub(crate) const DATAGRAM_CAPACITY: usize = 64 * 1024 + 1024;

/// Bytes reserved for the sender's address in a multishot `RECVMSG` buffer.
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_storage>();

/// What a multishot `RECVMSG` puts before the payload: `io_uring_recvmsg_out` (16 bytes),
/// then [`NAME_LEN`] bytes of address (no control data is asked for).
pub(crate) const MULTISHOT_PREFIX: usize = 16 + NAME_LEN;

/// Bytes per buffer of the datagram ring: the prefix plus [`DATAGRAM_CAPACITY`].
pub(crate) const RING_BUF_SIZE: usize = MULTISHOT_PREFIX + DATAGRAM_CAPACITY;

/// The `msghdr` of every multishot `RECVMSG`: only `msg_namelen` (room for any address) and
/// `msg_controllen` (0) mean anything to the kernel, which only reads it.
struct MultishotHeader(libc::msghdr);

// SAFETY: the header's pointers are all null and it is never written after initialisation:
// sharing it between threads shares only immutable integers.
unsafe impl Sync for MultishotHeader {}
// SAFETY: as above.
unsafe impl Send for MultishotHeader {}

/// The `msghdr` for `RecvMsgMulti` SQEs. It lives in a static, so it outlives every SQE and
/// CQE that refers to it, whatever happens to the driver.
pub(crate) fn multishot_header() -> &'static libc::msghdr {
    static HEADER: OnceLock<MultishotHeader> = OnceLock::new();
    &HEADER
        .get_or_init(|| {
            // SAFETY: msghdr is a C struct of integers and raw pointers; all-zero is valid.
            let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
            hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            MultishotHeader(hdr)
        })
        .0
}

/// The datagram in a multishot `RECVMSG` buffer (`buf`: the CQE's byte count of it), narrowed
/// to its payload with its sender; `Err(-EMSGSIZE)` if it did not fit (the buffer goes back to
/// the ring as `buf` is dropped), `Err(-EIO)` for a buffer too short to hold the header.
pub(crate) fn parse_multishot(buf: RecvBuf) -> Result<RecvBuf, i32> {
    let Ok(out) = io_uring::types::RecvMsgOut::parse(&buf, multishot_header()) else {
        log::error!("io_uring: a multishot recvmsg buffer of {} bytes has no header", buf.len());
        return Err(-libc::EIO);
    };
    if out.is_payload_truncated() {
        return Err(-libc::EMSGSIZE);
    }
    let source = source(out.name_data());
    let len = out.payload_data().len();
    Ok(buf.into_datagram(MULTISHOT_PREFIX, len, source))
}

/// A sender address from the bytes the kernel gave; `None` for none (an unbound unix socket).
fn source(name: &[u8]) -> Option<SockAddr> {
    let len = name.len().min(NAME_LEN);
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: `len` bytes are copied from the live slice `name` into the distinct local
    // `storage`, which is `NAME_LEN >= len` bytes long.
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.as_ptr(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len,
        )
    };
    source_address(&storage, len as libc::socklen_t)
}

/// The readiness routes' receive buffer for datagrams: one per driver, allocated (as a
/// [`RecvMsgBuf`] of [`DATAGRAM_CAPACITY`] bytes) at the first receive.
pub(crate) type Scratch = Option<Box<RecvMsgBuf>>;

/// One non-blocking `recvmsg(2)` of a datagram on `fd` into `scratch`, handed over as an
/// exact-size copy with its sender. `EMSGSIZE` for a datagram that did not fit (it is
/// consumed); other errors as the kernel gave them (`EAGAIN`: nothing queued).
pub(crate) fn recv_into_scratch(fd: RawFd, scratch: &mut Scratch) -> io::Result<RecvBuf> {
    let msg = scratch.get_or_insert_with(|| RecvMsgBuf::new(DATAGRAM_CAPACITY));
    let n = super::syscall::recvmsg(fd, msg)? as usize;
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

    #[test]
    fn the_multishot_header_asks_for_an_address_and_nothing_else() {
        let hdr = multishot_header();
        assert_eq!((hdr.msg_namelen as usize, hdr.msg_controllen), (NAME_LEN, 0));
    }
}
