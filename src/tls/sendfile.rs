//! `EventLoop::sendfile` over TLS: the kernel cannot encrypt, so a transfer always takes the
//! chunked fallback (asyncio's `_sendfile_fallback`): each chunk of the file is read by an
//! `Op::Read` into a buffer and written through the layer, which encrypts it; with
//! `fallback = false` the call is `Error::SendfileNotAvailable`, nothing sent.
//!
//! The rules are the stream transport's (`sendfile/side.rs`): the backlog is flushed first
//! (here: reads wait while the plaintext backlog is above its low-water mark, which also keeps
//! a slow peer from growing it), `write` is refused while the transfer runs, `close()` waits
//! for its end (then sends `close_notify`), a fatal error of the socket ends it with that
//! error (an abort, or an end without one: "the TLS connection ended"), and dropping the
//! `sendfile` future ends it after the chunk being read. One task per transfer drives the
//! chunks.

use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use super::app_side::Plaintext;
use super::layer::{Stage, TlsLayer};
use crate::error::{Error, Result};
use crate::sendfile::{Step, Transfer, TransferFuture};

impl TlsLayer {
    /// Starts `transfer` through the layer (see the module docs).
    pub(super) fn begin_sendfile(
        self: &Rc<Self>,
        transfer: Rc<Transfer>,
    ) -> Result<TransferFuture> {
        // `EventLoop::sendfile` refused a closing transport just before.
        if self.sendfile.borrow().is_some() {
            return Err(crate::sendfile::another_in_progress());
        }
        transfer.copy_instead(
            "a TLS transport cannot send a file zero-copy (the kernel does not encrypt)",
        )?;
        let event_loop = self.event_loop().ok_or(Error::Closed)?;
        *self.sendfile.borrow_mut() = Some(transfer.clone());
        event_loop.create_task(self.clone().copy_file(transfer.clone()))?;
        let abandoned = transfer.clone();
        Ok(TransferFuture::new(transfer, move || abandoned.abandon()))
    }

    /// True while a `sendfile` runs.
    pub(super) fn in_sendfile(&self) -> bool {
        self.sendfile.borrow().is_some()
    }

    /// The task of one transfer: read a chunk, write it through the layer, until the range
    /// is sent, the task's caller gave up, or the connection ends.
    async fn copy_file(self: Rc<Self>, transfer: Rc<Transfer>) {
        let result = self.copy_chunks(&transfer).await;
        transfer.finish(result);
        self.sendfile.borrow_mut().take();
        if self.stage.get() == Stage::Flushing {
            self.start_shutdown_timer();
            self.pump_backlog(); // close() waited for the transfer: close_notify follows
        }
    }

    async fn copy_chunks(self: &Rc<Self>, transfer: &Transfer) -> Result<()> {
        let event_loop = self.event_loop().ok_or(Error::Closed)?;
        let ended = || {
            let lost = io::Error::new(io::ErrorKind::ConnectionAborted, "the TLS connection ended");
            Err(Error::io(transfer.what(), lost))
        };
        loop {
            self.backlog_drained().await;
            if !self.takes_data() {
                return ended();
            }
            if !transfer.wants_more() {
                return Ok(());
            }
            let Some(op) = transfer.next_op(-1) else { return Ok(()) };
            let (result, op) = event_loop.submit_op(op)?.await;
            if !self.takes_data() {
                return ended();
            }
            match transfer.on_chunk(result, op) {
                Step::Next => {}
                Step::Copied(bytes) => {
                    let flow = self.push_plaintext([Plaintext::Owned(bytes)]);
                    self.to_app_flow(flow);
                }
                Step::Ended(result) => return result,
            }
        }
    }

    /// Resolves once the plaintext backlog is at or below its low-water mark, or the layer
    /// stopped taking data.
    async fn backlog_drained(&self) {
        poll_fn(|cx| {
            let (low, _) = self.backlog.borrow().limits();
            if !self.takes_data() || self.backlog.borrow().len() <= low {
                return Poll::Ready(());
            }
            *self.drained_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Whether the transfer's bytes still go anywhere (open, or closing after the transfer).
    fn takes_data(&self) -> bool {
        matches!(self.stage.get(), Stage::Wrapped | Stage::Flushing)
    }

    /// The stream below is gone (with `error`, the socket's, if it failed): a transfer
    /// running ends with that error, the file position counting what the layer took, and its
    /// task is woken to stop. Without an error it ends as the connection having ended.
    pub(super) fn sendfile_lost(&self, error: Option<&Error>) {
        if let (Some(transfer), Some(error)) = (self.sendfile.borrow().as_ref(), error) {
            transfer.finish(Err(error.clone()));
        }
        self.wake_sendfile();
    }

    /// Wakes a transfer waiting for the backlog to drain (or for the end).
    pub(super) fn wake_sendfile(&self) {
        if let Some(waker) = self.drained_waker.borrow_mut().take() {
            waker.wake();
        }
    }
}
