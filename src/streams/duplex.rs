//! `DuplexStream`: a connection's reader and writer in one value, for the APIs that take one
//! I/O object (tokio-util's `Framed`, `futures`' `copy_bidirectional`-style helpers).

use std::fmt;

use super::{StreamReader, StreamWriter, WriterTransport};
use crate::transport::Transport;

/// A stream connection's [`StreamReader`] and [`StreamWriter`] as one value: `AsyncRead` and
/// `AsyncWrite` at once (`futures_io`'s always; tokio's with the feature `tokio-io`), for
/// whatever wants a single I/O object, such as `tokio_util::codec::Framed`.
///
/// Reads and writes behave exactly as the reader's and the writer's (see their trait impls);
/// [`split`](Self::split) borrows the two halves, [`into_parts`](Self::into_parts) gives them
/// back. Dropping it drops the writer, which closes the connection if it was the last clone.
///
/// ```
/// use ringloop::{ConnectOptions, DuplexStream, ServerOptions};
/// use futures_io::{AsyncRead, AsyncWrite};
///
/// fn io_object(_: &(impl AsyncRead + AsyncWrite + Unpin)) {}
///
/// ringloop::run(async {
///     let lp = ringloop::get_running_loop()?;
///     let server = lp
///         .start_server(|_reader, _writer| async {}, "127.0.0.1:0", ServerOptions::new())
///         .await?;
///     let address = server.sockets()[0].as_socket().unwrap();
///     let (reader, writer) = lp.open_connection(address, ConnectOptions::new()).await?;
///     let stream = DuplexStream::new(reader, writer);
///     io_object(&stream);
///     let (_reader, writer) = stream.into_parts();
///     writer.close();
///     server.close();
///     Ok::<_, ringloop::Error>(())
/// })??;
/// # Ok::<(), ringloop::Error>(())
/// ```
pub struct DuplexStream<T: WriterTransport = Transport> {
    /// The reading half.
    pub(super) reader: StreamReader,
    /// The writing half.
    pub(super) writer: StreamWriter<T>,
}

impl<T: WriterTransport> DuplexStream<T> {
    /// Joins a reader and a writer, as [`EventLoop::open_connection`] and
    /// [`EventLoop::start_server`]'s callback give them (or a child's stdout and stdin).
    ///
    /// [`EventLoop::open_connection`]: crate::EventLoop::open_connection
    /// [`EventLoop::start_server`]: crate::EventLoop::start_server
    pub fn new(reader: StreamReader, writer: StreamWriter<T>) -> DuplexStream<T> {
        DuplexStream { reader, writer }
    }

    /// The reading half.
    pub fn reader(&self) -> &StreamReader {
        &self.reader
    }

    /// The writing half (its transport, `get_extra_info`, `abort`).
    pub fn writer(&self) -> &StreamWriter<T> {
        &self.writer
    }

    /// Both halves, borrowed mutably: to read and write through the I/O traits' extension
    /// methods at the same time.
    pub fn split(&mut self) -> (&mut StreamReader, &mut StreamWriter<T>) {
        (&mut self.reader, &mut self.writer)
    }

    /// The reader and the writer back.
    pub fn into_parts(self) -> (StreamReader, StreamWriter<T>) {
        (self.reader, self.writer)
    }
}

impl<T: WriterTransport> From<(StreamReader, StreamWriter<T>)> for DuplexStream<T> {
    /// [`DuplexStream::new`] on what `open_connection` returns.
    fn from((reader, writer): (StreamReader, StreamWriter<T>)) -> DuplexStream<T> {
        DuplexStream::new(reader, writer)
    }
}

impl<T: WriterTransport> fmt::Debug for DuplexStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DuplexStream")
            .field("reader", &self.reader)
            .field("writer", &self.writer)
            .finish()
    }
}
