//! `HyperIo`: hyper's `rt::Read` and `rt::Write` over a stream connection's reader and writer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use ::hyper::rt::{Read, ReadBufCursor, Write};
use futures_io::AsyncWrite;

use crate::streams::{StreamReader, StreamWriter};

/// A stream connection as hyper's I/O (`hyper::rt::Read + hyper::rt::Write`), for
/// `hyper::server::conn::http1::Builder::serve_connection` or hyper's client `handshake`.
///
/// Reads copy straight from the reader's buffer into hyper's (no intermediate buffer, no
/// `unsafe`); writes queue on the transport at once and wait only while the transport has
/// paused writing (backpressure: its buffer is over the high-water mark), as
/// [`StreamWriter::drain`] does. `poll_shutdown` closes the connection after its buffer is
/// flushed and completes once it is closed.
#[derive(Debug)]
pub struct HyperIo {
    /// Where request bytes come from.
    reader: StreamReader,
    /// Where response bytes go.
    writer: StreamWriter,
}

impl HyperIo {
    /// Wraps a connection's reader and writer, as [`EventLoop::start_server`]'s callback or
    /// [`EventLoop::open_connection`] give them.
    ///
    /// [`EventLoop::start_server`]: crate::EventLoop::start_server
    /// [`EventLoop::open_connection`]: crate::EventLoop::open_connection
    pub fn new(reader: StreamReader, writer: StreamWriter) -> HyperIo {
        HyperIo { reader, writer }
    }

    /// The reader and writer back (after `Connection::into_parts`, say).
    pub fn into_inner(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// The connection's writer (its transport, `get_extra_info`).
    pub fn writer(&self) -> &StreamWriter {
        &self.writer
    }
}

impl Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let max = buf.remaining();
        self.reader.poll_read_with(cx, max, |bytes| buf.put_slice(bytes)).map_ok(drop)
    }
}

impl Write for HyperIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_close(cx)
    }
}
