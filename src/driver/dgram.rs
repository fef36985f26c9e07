//! Datagrams for `Op::RecvMsgMulti`: the sizes both backends agree on, the `msghdr` a
//! multishot `RECVMSG` is armed with, and the parsing of what the kernel puts in a provided
//! buffer. (epoll's `recvmsg(2)` into a scratch buffer is in `epoll/ops.rs`.)
//!
//! Every route hands over one whole datagram per completion (never split, never merged) with
//! its sender, or `EMSGSIZE` for a datagram longer than [`DATAGRAM_CAPACITY`] (the kernel
//! flagged `MSG_TRUNC`): a cut datagram is never delivered.

use std::mem;
use std::sync::OnceLock;

use socket2::SockAddr;

use super::msg::source_address;
use super::RecvBuf;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multishot_header_asks_for_an_address_and_nothing_else() {
        let hdr = multishot_header();
        assert_eq!((hdr.msg_namelen as usize, hdr.msg_controllen), (NAME_LEN, 0));
    }
}
