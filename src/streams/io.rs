//! The async I/O traits on the streams: `futures_io`'s `AsyncRead`/`AsyncWrite` always, tokio's
//! with the feature `tokio-io`, on [`StreamReader`], [`StreamWriter`] and [`DuplexStream`].
//! Every impl forwards to the one poll step of the reader or the writer, so the two families
//! behave alike:
//!
//! - read: copies what is buffered (never waits when something is); `Ok(0)` (tokio: nothing
//!   filled) at EOF; the connection's error as an `io::Error` (the [`Error`](crate::Error)
//!   inside) once it was lost with one.
//! - write: queues all of the bytes on the transport, or returns `Pending` while the transport
//!   has paused the writer (its write buffer is over the high-water mark, see
//!   `Transport::set_write_buffer_limits`), waking the task when it resumes writing. An error
//!   once the writer is closing or the connection lost (`ECONNRESET`), or after `write_eof`.
//! - flush: [`StreamWriter::drain`]: ready once the transport has not paused the writer (its
//!   buffer at or below the high-water mark); the transport sends the rest on its own. Once
//!   the connection is gone: `Ok` if this writer's `close()` ended it (what was buffered was
//!   sent first; tokio-util's `Framed` flushes before each poll of its shutdown), else its
//!   error, or `ECONNRESET` (after an `abort()`, say: the buffer was dropped).
//! - `futures_io`'s close: `close()` (buffered data is still sent), then `wait_closed`.
//! - tokio's shutdown: `write_eof()` (the transport sends what is buffered, then a FIN;
//!   reading goes on), ready at once; over TLS, which cannot half-close, as `futures_io`'s
//!   close (`close_notify`, then the whole connection closes).
//!
//! The reader's and the writer's own methods come first where the extension traits have one
//! of the same name (`read`, `read_to_end`, `write`, `close`): call those as
//! `AsyncReadExt::read(&mut reader, &mut buf)`, or through a [`DuplexStream`], which has none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{DuplexStream, StreamReader, StreamWriter, WriterTransport};

/// Implements the read traits for `$ty` (generic over `$t`), `$reader` naming its reader.
macro_rules! read_traits {
    ($ty:ty $(, $t:ident)?; |$this:ident| $reader:expr) => {
        impl<$($t: WriterTransport)?> futures_io::AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let $this = self.get_mut();
                let max = buf.len();
                $reader.poll_read_with(cx, max, |bytes| buf[..bytes.len()].copy_from_slice(bytes))
            }
        }

        #[cfg(feature = "tokio-io")]
        impl<$($t: WriterTransport)?> tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let $this = self.get_mut();
                let max = buf.remaining();
                $reader.poll_read_with(cx, max, |bytes| buf.put_slice(bytes)).map_ok(drop)
            }
        }
    };
}

/// Implements the write trait `$trait` for `$ty` (generic over `T`), `$writer` naming its
/// writer; `$close` is the trait's closing method, done by the writer's `$close_io`.
macro_rules! write_trait {
    ($trait:path, $close:ident => $close_io:ident; $ty:ty; |$this:ident| $writer:expr) => {
        impl<T: WriterTransport> $trait for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let $this = self.get_mut();
                $writer.poll_write_io(cx, buf)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $this = self.get_mut();
                $writer.poll_flush_io(cx)
            }

            fn $close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let $this = self.get_mut();
                $writer.$close_io(cx)
            }
        }
    };
}

read_traits!(StreamReader; |this| this);
read_traits!(DuplexStream<T>, T; |this| this.reader);
write_trait!(futures_io::AsyncWrite, poll_close => poll_close_io; StreamWriter<T>; |this| this);
write_trait!(
    futures_io::AsyncWrite, poll_close => poll_close_io;
    DuplexStream<T>; |this| this.writer
);
#[cfg(feature = "tokio-io")]
write_trait!(
    tokio::io::AsyncWrite, poll_shutdown => poll_shutdown_io;
    StreamWriter<T>; |this| this
);
#[cfg(feature = "tokio-io")]
write_trait!(
    tokio::io::AsyncWrite, poll_shutdown => poll_shutdown_io;
    DuplexStream<T>; |this| this.writer
);
