//! Zero-copy file transfer: the machinery behind [`EventLoop::sendfile`] on a stream
//! transport and [`EventLoop::sock_sendfile`] on a socket (asyncio's "Transferring files" and
//! `loop.sock_sendfile`, whose API is in `net/sendfile.rs`).
//!
//! # Implementation
//! A transfer ([`transfer::Transfer`]) is a range of a file, sent chunk by chunk, one driver
//! op per chunk: `Op::SendFile`, which io_uring runs as two linked `IORING_OP_SPLICE`s through
//! a pipe of the driver's pool (file → pipe → socket) and epoll as `sendfile(2)` when the
//! socket is writable. One chunk per completion, so a transfer of any size never holds the
//! loop and transfers on one loop progress side by side.
//!
//! Where zero-copy is impossible — the file is not a regular file, or the kernel refuses the
//! splice before sending anything — `fallback = true` copies instead: `Op::Read` of a chunk
//! into a buffer (`IORING_OP_READ` on io_uring), written through the transport's write path
//! or `Op::Send`s on the socket; `fallback = false` is [`Error::SendfileNotAvailable`] with
//! nothing sent.
//!
//! The file is duplicated for the transfer (the duplicate shares the caller's file position),
//! so the driver alone closes what the kernel reads from; the position is set to
//! `offset + sent` when the transfer ends, however it ends. The transport's rules during a
//! transfer are in `side.rs`, the socket's in `socket.rs`.

mod side;
pub(crate) mod socket;
mod source;
mod transfer;

use std::os::fd::AsRawFd;
use std::rc::Rc;

pub(crate) use side::{SendFileHost, SendFileSide};
pub(crate) use transfer::{Step, Transfer, TransferFuture};

use self::source::Source;
use self::transfer::Method;
use crate::error::{Error, Result, RuntimeKind};
use crate::event_loop::EventLoop;

impl EventLoop {
    /// The transfer `what` makes of `file` (checked and duplicated): zero-copy for a regular
    /// file, the copy for others when `fallback` allows; `None` when the range is empty.
    pub(crate) fn transfer_of(
        &self,
        file: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
        what: String,
    ) -> Result<Option<Rc<Transfer>>> {
        let Some(source) = Source::open(self, file, offset, count, &what)? else { return Ok(None) };
        let method = choose_method(&source, file, fallback, &what)?;
        Ok(Some(Rc::new(Transfer::new(source, method, fallback, what))))
    }
}

/// Zero-copy for a regular file; the copy for others when allowed.
fn choose_method(
    source: &Source,
    file: std::os::fd::BorrowedFd<'_>,
    fallback: bool,
    what: &str,
) -> Result<Method> {
    match (source.seekable, fallback) {
        (true, _) => Ok(Method::ZeroCopy),
        (false, true) => Ok(Method::Copy),
        (false, false) => Err(Error::SendfileNotAvailable(format!(
            "{what}: file fd {} is not a regular file, so it cannot be sent zero-copy; nothing \
             was sent (pass fallback = true to copy it through the loop)",
            file.as_raw_fd()
        ))),
    }
}

/// The error of a second transfer started on a transport while one runs.
pub(crate) fn another_in_progress() -> Error {
    let message = "sendfile: another sendfile is in progress on this transport";
    Error::runtime(RuntimeKind::SendfileInProgress, message)
}
