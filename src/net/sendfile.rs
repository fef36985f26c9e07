//! `EventLoop::sendfile` and `EventLoop::sock_sendfile` (asyncio's "Transferring files" and
//! `loop.sock_sendfile`): the calls and their checks; the transfer itself is `crate::sendfile`.

use std::os::fd::{AsFd, AsRawFd};

use crate::error::{ArgumentKind, Error, Result, RuntimeKind};
use crate::event_loop::EventLoop;
use crate::sendfile::{socket, TransferFuture};
use crate::transport::Transport;

impl EventLoop {
    /// Sends `file` over `transport` (asyncio's `loop.sendfile`): `count` bytes from `offset`
    /// (`None`: to the end of the file; a count past the end stops there). Returns the bytes
    /// sent; an empty range (an empty file, `count == Some(0)`, `offset` at the end) sends
    /// nothing and returns 0.
    ///
    /// `file` is anything with an fd open for reading, usually a [`std::fs::File`]. A regular
    /// file goes zero-copy (splice through a pipe on io_uring, `sendfile(2)` on epoll). Other
    /// files (a pipe) and kernels that refuse the splice need `fallback = true`, which reads
    /// the file in chunks and writes them through the transport.
    ///
    /// The transport's buffer is flushed first. While the transfer runs, [`Transport::write`]
    /// is refused, `close()` and `write_eof()` wait for it to end (as for the buffer), and
    /// reading goes on. An abort or a fatal error of the transport ends it with that error. The file's
    /// position ends at `offset + sent`, also when an error or a drop ends the transfer.
    /// Dropping the future ends the transfer after the chunk the kernel holds, which reaches
    /// the socket before any later write.
    ///
    /// # Errors
    ///
    /// * [`Error::Runtime`] if the transport is closing, or already runs a `sendfile`;
    /// * [`Error::InvalidArgument`] for a file open for writing only, a directory, or an
    ///   `offset` on a file without a position;
    /// * [`Error::SendfileNotAvailable`] when zero-copy is impossible and `fallback` is false;
    ///   nothing was sent;
    /// * [`Error::Io`] for the OS's errors (the peer closed: `EPIPE`, `ECONNRESET`), with the
    ///   position set to what was sent; [`Error::Closed`] on a closed loop.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # async fn serve(transport: ringloop::Transport) -> ringloop::Result<()> {
    /// let event_loop = ringloop::get_running_loop()?;
    /// let file = std::fs::File::open("index.html")?;
    /// let sent = event_loop.sendfile(&transport, &file, 0, None, true).await?;
    /// transport.close();
    /// # let _ = sent; Ok(()) }
    /// ```
    pub async fn sendfile(
        &self,
        transport: &Transport,
        file: &impl AsFd,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
    ) -> Result<u64> {
        self.check_open()?;
        let what = format!("sendfile(fd {})", transport.socket_fd().unwrap_or(-1));
        if transport.is_closing() {
            return Err(Error::runtime(
                RuntimeKind::TransportClosing,
                format!("{what}: the transport is closing"),
            ));
        }
        let Some(transfer) = self.transfer_of(file.as_fd(), offset, count, fallback, what)? else {
            return Ok(0);
        };
        transport.start_sendfile(transfer)?.await
    }

    /// Sends `file` over the stream socket `sock` (asyncio's `loop.sock_sendfile`), with the
    /// rules of [`sendfile`](Self::sendfile): `count` bytes from `offset`, the bytes sent,
    /// zero-copy or (with `fallback`) copied, the file position at `offset + sent` at the end.
    ///
    /// Dropping the future before the end: on io_uring, when a chunk is in flight, the socket
    /// is shut down (`SHUT_RDWR`), because bytes the kernel took from the file could otherwise
    /// be overtaken by a later send; the file position is set once the chunk ends. On epoll,
    /// and with nothing in flight, the transfer just stops.
    ///
    /// # Errors
    ///
    /// As [`sendfile`](Self::sendfile), and [`Error::InvalidArgument`] for a socket that is
    /// blocking or not `SOCK_STREAM`.
    pub async fn sock_sendfile(
        &self,
        sock: &impl AsFd,
        file: &impl AsFd,
        offset: u64,
        count: Option<u64>,
        fallback: bool,
    ) -> Result<u64> {
        self.check_open()?;
        let sock = sock.as_fd();
        let what = format!("sock_sendfile(fd {})", sock.as_raw_fd());
        check_stream_socket(sock, &what)?;
        let Some(transfer) = self.transfer_of(file.as_fd(), offset, count, fallback, what)? else {
            return Ok(0);
        };
        let job = socket::start(self, sock, transfer.clone())?;
        TransferFuture::new(transfer, move || job.abandon()).await
    }
}

/// `Ok` for a non-blocking `SOCK_STREAM` socket.
fn check_stream_socket(sock: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<()> {
    let socket = socket2::SockRef::from(&sock);
    let kind = socket.r#type().map_err(|e| Error::io(format!("{what}: the socket's type"), e))?;
    if kind != socket2::Type::STREAM {
        return Err(Error::invalid_argument(
            ArgumentKind::UnsuitableFd,
            format!("{what}: only SOCK_STREAM sockets are supported, got {kind:?}"),
        ));
    }
    super::sock::check_nonblocking(sock, &what)
}
