//! `StreamWriter`: asyncio's `StreamWriter` (write, drain, close, abort, wait_closed), over a
//! connection's [`Transport`] or a child's stdin pipe; the poll steps of the I/O traits.

use std::cell::Cell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{connection_reset, Link, StreamState};
use crate::error::Result;
use crate::transport::{ExtraInfo, Transport, WriteTransport};

/// A transport a [`StreamWriter`] writes to: the stream [`Transport`] of a connection, or the
/// [`WriteTransport`] of a child process's stdin
/// ([`Process::stdin`](crate::subprocess::Process::stdin)). Sealed: implemented for those two.
pub trait WriterTransport: sealed::Sealed {}

impl WriterTransport for Transport {}
impl WriterTransport for WriteTransport {}

mod sealed {
    use crate::error::Result;
    use crate::transport::ExtraInfo;

    /// What a [`StreamWriter`](super::StreamWriter) calls on its transport: the transport's
    /// own methods of the same names.
    pub trait Sealed: std::fmt::Debug + 'static {
        /// `write`.
        fn write(&self, data: &[u8]) -> Result<()>;
        /// `writelines`.
        fn writelines<I: IntoIterator<Item = B>, B: AsRef<[u8]>>(&self, buffers: I) -> Result<()>;
        /// `write_eof`.
        fn write_eof(&self);
        /// `can_write_eof`.
        fn can_write_eof(&self) -> bool;
        /// `close`.
        fn close(&self);
        /// `abort`.
        fn abort(&self);
        /// `is_closing`.
        fn is_closing(&self) -> bool;
        /// `get_extra_info`.
        fn get_extra_info(&self, name: &str) -> Option<ExtraInfo>;
    }

    /// Implements [`Sealed`] for `$transport` with its own methods; `$wrap` turns what its
    /// `write` and `writelines` return into a `Result`.
    macro_rules! forward {
        ($transport:ty, $wrap:expr) => {
            impl Sealed for $transport {
                fn write(&self, data: &[u8]) -> Result<()> {
                    $wrap(<$transport>::write(self, data))
                }
                fn writelines<I: IntoIterator<Item = B>, B: AsRef<[u8]>>(
                    &self,
                    buffers: I,
                ) -> Result<()> {
                    $wrap(<$transport>::writelines(self, buffers))
                }
                fn write_eof(&self) {
                    <$transport>::write_eof(self)
                }
                fn can_write_eof(&self) -> bool {
                    <$transport>::can_write_eof(self)
                }
                fn close(&self) {
                    <$transport>::close(self)
                }
                fn abort(&self) {
                    <$transport>::abort(self)
                }
                fn is_closing(&self) -> bool {
                    <$transport>::is_closing(self)
                }
                fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
                    <$transport>::get_extra_info(self, name)
                }
            }
        };
    }

    forward!(super::Transport, std::convert::identity);
    // A pipe's write never fails: once the pipe is closed it drops the data, and `drain`
    // reports that.
    forward!(super::WriteTransport, Ok);
}

/// The writing side of a stream (asyncio's `StreamWriter`): of a connection (`T` the stream
/// [`Transport`]) or of a child process's stdin (`T` its [`WriteTransport`]). Cheap to clone;
/// when the last clone is dropped without `close()`, the transport is closed (as asyncio's
/// `StreamWriter.__del__`).
#[derive(Clone)]
pub struct StreamWriter<T: WriterTransport = Transport> {
    /// Closes the transport when the last clone goes.
    inner: Rc<WriterInner<T>>,
}

/// What the clones of a writer share.
struct WriterInner<T: WriterTransport> {
    /// The connection, or the pipe.
    transport: T,
    /// The state shared with the reader and the protocol.
    state: Rc<StreamState>,
    /// How this writer ended the transport, if it did.
    ended: Cell<Ended>,
}

/// How a writer ended its transport: what a flush after the end reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Not by this writer (yet).
    No,
    /// `close()`: the buffered data is sent before the transport closes, so a flush once the
    /// connection is lost (cleanly) has nothing left to do.
    Closed,
    /// `abort()`: the buffered data was dropped, so a flush fails.
    Aborted,
}

impl<T: WriterTransport> Drop for WriterInner<T> {
    fn drop(&mut self) {
        if !self.transport.is_closing() {
            self.transport.close();
        }
    }
}

impl<T: WriterTransport> StreamWriter<T> {
    pub(crate) fn new(transport: T, state: Rc<StreamState>) -> StreamWriter<T> {
        StreamWriter {
            inner: Rc::new(WriterInner { transport, state, ended: Cell::new(Ended::No) }),
        }
    }

    fn state(&self) -> &StreamState {
        &self.inner.state
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.inner.transport
    }

    /// Queues `data` on the transport; never blocks (call [`drain`](Self::drain) to wait
    /// for the buffer to empty). After `close()` or once the connection is lost the data is
    /// dropped, and `drain` reports it. On a connection, `Error::Runtime` after
    /// `write_eof()` (a child's stdin is closed by `write_eof`, and drops later writes).
    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.transport().write(data)
    }

    /// Writes each buffer in order (asyncio's `writelines`).
    pub fn writelines<I, B>(&self, buffers: I) -> Result<()>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.transport().writelines(buffers)
    }

    /// Closes the write side once the buffer is flushed; idempotent.
    pub fn write_eof(&self) {
        self.transport().write_eof();
    }

    /// True: stream transports support `write_eof`.
    pub fn can_write_eof(&self) -> bool {
        self.transport().can_write_eof()
    }

    /// Closes the transport (buffered data is still sent); [`is_closing`](Self::is_closing)
    /// is true at once. Await [`wait_closed`](Self::wait_closed) for the end.
    pub fn close(&self) {
        if self.inner.ended.get() == Ended::No {
            self.inner.ended.set(Ended::Closed);
        }
        self.transport().close();
    }

    /// Closes the transport at once (asyncio's `writer.transport.abort()`): the data still
    /// buffered is dropped, the socket (or a child's stdin pipe) is closed without waiting for
    /// it, and `connection_lost(None)` follows. The peer reads what the kernel had already taken, then
    /// end of file (or `ECONNRESET` if it still had data in flight to this side, which the
    /// kernel answers with a reset); readers of this connection read what they had buffered,
    /// then end of file; [`wait_closed`](Self::wait_closed) returns `Ok`. Idempotent; a no-op
    /// once the connection is lost.
    pub fn abort(&self) {
        if !self.state().is_lost() {
            self.inner.ended.set(Ended::Aborted);
        }
        self.transport().abort();
    }

    /// True once `close()` or `abort()` was called or the connection was lost.
    pub fn is_closing(&self) -> bool {
        self.transport().is_closing()
    }

    /// The transport's `get_extra_info`.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.transport().get_extra_info(name)
    }

    /// Waits until `connection_lost` was delivered (asyncio's `wait_closed`), whether or not
    /// the peer's data was read; the connection's error if it was lost with one.
    pub async fn wait_closed(&self) -> Result<()> {
        std::future::poll_fn(|cx| self.poll_closed(cx)).await
    }

    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match &*self.state().link.borrow() {
            Link::Lost(None) => return Poll::Ready(Ok(())),
            Link::Lost(Some(error)) => return Poll::Ready(Err(error.clone())),
            Link::Up => {}
        }
        self.state().closed_wakers.register(cx.waker());
        Poll::Pending
    }

    /// Waits until writing may go on (asyncio's `drain`): at once unless the transport paused
    /// the writer (its buffer is over the high-water mark), else until it resumes.
    ///
    /// Errors: the connection's error if it was lost with one; once the transport is closing
    /// and the connection lost, `Error::Io` with `ECONNRESET` ("Connection lost"). A drain
    /// that was waiting when the connection closed cleanly returns `Ok`, as in asyncio.
    pub async fn drain(&self) -> Result<()> {
        if let Some(error) = self.state().exception() {
            return Err(error);
        }
        if self.is_closing() {
            // Let a `connection_lost` already scheduled run first, so that it is seen.
            yield_now().await;
        }
        let waiting = Cell::new(None);
        std::future::poll_fn(|cx| {
            let state = self.state();
            match waiting.get() {
                Some(since) if state.drain_generation.get() != since => {
                    if let Link::Lost(Some(error)) = &*state.link.borrow() {
                        return Poll::Ready(Err(error.clone()));
                    }
                    if !state.writing_paused.get() || state.is_lost() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Some(_) => {}
                None => {
                    if state.is_lost() {
                        return Poll::Ready(Err(connection_reset("drain")));
                    }
                    if !state.writing_paused.get() {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
            waiting.set(Some(state.drain_generation.get()));
            state.drain_wakers.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The `poll_write` of the I/O traits: queues all of `buf`, or returns `Pending` while the
    /// transport has paused the writer (its buffer is over the high-water mark) and wakes the
    /// task when it resumes. An error once the writer is closing or the connection lost
    /// (`ECONNRESET`), or after `write_eof` (`Error::Runtime` inside).
    pub(crate) fn poll_write_io(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let state = self.state();
        if let Some(error) = state.exception() {
            return Poll::Ready(Err(io::Error::from(error)));
        }
        if self.is_closing() {
            return Poll::Ready(Err(io::Error::from(connection_reset("write"))));
        }
        if state.writing_paused.get() {
            state.drain_wakers.register(cx.waker());
            return Poll::Pending;
        }
        Poll::Ready(self.write(buf).map(|()| buf.len()).map_err(io::Error::from))
    }

    /// The `poll_flush` of the I/O traits, [`drain`](Self::drain): ready when the transport
    /// has not paused the writer. Once the connection is gone: its error if it was lost with
    /// one; `Ok` if this writer's `close()` ended it (the buffer was sent before the close:
    /// tokio-util's `Framed` flushes before each poll of its shutdown); else `ECONNRESET`.
    pub(crate) fn poll_flush_io(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let state = self.state();
        if let Some(error) = state.exception() {
            return Poll::Ready(Err(io::Error::from(error)));
        }
        if state.is_lost() {
            if self.inner.ended.get() == Ended::Closed {
                return Poll::Ready(Ok(()));
            }
            return Poll::Ready(Err(io::Error::from(connection_reset("flush"))));
        }
        if !state.writing_paused.get() {
            return Poll::Ready(Ok(()));
        }
        state.drain_wakers.register(cx.waker());
        Poll::Pending
    }

    /// `futures_io`'s `poll_close`: `close()`, then [`wait_closed`](Self::wait_closed).
    pub(crate) fn poll_close_io(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close();
        self.poll_closed(cx).map_err(io::Error::from)
    }

    /// tokio's `poll_shutdown`: [`write_eof`](Self::write_eof) where the transport can
    /// half-close (ready at once: the transport sends what is buffered, then the FIN, and
    /// reading goes on; `Ok` again once closing, the connection's error once lost with one);
    /// over TLS, which cannot, [`poll_close_io`](Self::poll_close_io).
    #[cfg_attr(not(feature = "tokio-io"), allow(dead_code))]
    pub(crate) fn poll_shutdown_io(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.can_write_eof() {
            return self.poll_close_io(cx);
        }
        if let Some(error) = self.state().exception() {
            return Poll::Ready(Err(io::Error::from(error)));
        }
        if self.is_closing() {
            return Poll::Ready(Ok(()));
        }
        self.write_eof();
        Poll::Ready(Ok(()))
    }
}

/// Returns `Pending` once, after waking its task (asyncio's `sleep(0)`).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

impl<T: WriterTransport> fmt::Debug for StreamWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<StreamWriter transport={:?}>", self.transport())
    }
}

impl<T: WriterTransport> fmt::Debug for WriterInner<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<StreamWriter transport={:?}>", self.transport)
    }
}
