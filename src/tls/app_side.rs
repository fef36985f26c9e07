//! The layer as the user's protocol sees it: the [`ByteStream`] behind its [`Transport`]
//! handle (asyncio's `_SSLProtocolTransport`), and the write path.
//!
//! # Writing and flow control
//! A write is encrypted at once while the stream below takes data (it has not said
//! `pause_writing`) and the backlog is empty; the records go straight to the stream, which
//! sends them or buffers them: in one write for all the buffers of a `writelines` (each its
//! own records, as asyncio's), unless rustls's buffer fills first. While the stream below is
//! paused, plaintext waits in the backlog (a [`WriteBuffer`] with asyncio's water marks; a
//! `write_bytes` buffer, or a chunk of a copying `sendfile`, is kept there as it is, not
//! copied): that backlog is what the user's `pause_writing`/`resume_writing` follow and what
//! `get_write_buffer_size` reports. So a slow reader holds at most the stream's high-water
//! mark of records plus the backlog's of plaintext, plus one rustls buffer (64 KiB) between
//! them.
//!
//! A TLS transport cannot be handed over again (asyncio refuses `start_tls` on one too).

use std::any::Any;
use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;

use bytes::Bytes;
use socket2::SockAddr;

use super::layer::{Stage, TlsLayer};
use crate::error::{loop_log, Error, Result, RuntimeKind};
use crate::flow_control::FlowEvent;
use crate::sendfile::{Transfer, TransferFuture};
use crate::transport::handle::ByteStream;
use crate::transport::DynProtocol;
use crate::transport::ExtraInfo;

/// Plaintext written by the user (or read by a `sendfile` that copies): borrowed, copied into
/// the backlog if it has to wait there, or owned, queued as it is.
#[derive(Clone)]
pub(super) enum Plaintext<'a> {
    /// The caller's bytes.
    Borrowed(&'a [u8]),
    /// Bytes the layer may keep.
    Owned(Bytes),
}

impl Plaintext<'_> {
    /// What is left from `from` on, to keep in the backlog.
    fn rest(self, from: usize) -> Bytes {
        match self {
            Plaintext::Borrowed(data) => Bytes::copy_from_slice(&data[from..]),
            Plaintext::Owned(data) => data.slice(from..),
        }
    }
}

impl std::ops::Deref for Plaintext<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Plaintext::Borrowed(data) => data,
            Plaintext::Owned(data) => data,
        }
    }
}

impl TlsLayer {
    /// Writes `buffers` in order: encrypted now as far as the stream below takes them, the
    /// rest into the backlog; `pause_writing` once, after all of it. `Error::Runtime` while a
    /// `sendfile` runs.
    fn write_all<'a>(
        self: &Rc<Self>,
        buffers: impl IntoIterator<Item = Plaintext<'a>> + Clone,
    ) -> Result<()> {
        if self.in_sendfile() {
            return Err(Error::runtime(
                RuntimeKind::SendfileInProgress,
                "unable to write; sendfile is in progress",
            ));
        }
        if buffers.clone().into_iter().all(|b| b.is_empty()) {
            return Ok(());
        }
        match self.stage.get() {
            Stage::Wrapped | Stage::Connecting | Stage::Handshaking => {}
            _ => {
                self.lost_writes.count("SSL connection is closed"); // asyncio's words
                return Ok(());
            }
        }
        let flow = self.push_plaintext(buffers);
        self.to_app_flow(flow);
        Ok(())
    }

    /// Encrypts `buffers` now as far as the stream below takes them, sends the records, and
    /// queues the rest in the backlog (an owned buffer as it is, a borrowed one copied): the
    /// flow event that calls for.
    pub(super) fn push_plaintext<'a>(
        self: &Rc<Self>,
        buffers: impl IntoIterator<Item = Plaintext<'a>>,
    ) -> Option<FlowEvent> {
        let mut flow = None;
        for buffer in buffers {
            let encrypting = matches!(self.stage.get(), Stage::Wrapped | Stage::Flushing);
            let mut done = 0;
            if self.backlog.borrow().is_empty() && encrypting {
                done = self.encrypt_now(&buffer);
            }
            if done < buffer.len() {
                flow = flow.or(self.backlog.borrow_mut().push(buffer.rest(done)));
            }
        }
        self.flush_records();
        flow
    }

    /// Encrypts `data` while the stream below takes the records: how many bytes were
    /// encrypted. The records are sent whenever rustls's buffer is full; the caller sends the
    /// last of them ([`flush_records`](Self::flush_records)), so the buffers of one
    /// `writelines` go down in one write where they fit.
    fn encrypt_now(self: &Rc<Self>, data: &[u8]) -> usize {
        let mut done = 0;
        let mut just_flushed = false;
        while done < data.len() && !self.lower_paused.get() {
            let taken = self.session.borrow_mut().encrypt(&data[done..]);
            if taken == 0 && just_flushed {
                break; // rustls takes nothing even with its buffer sent
            }
            done += taken;
            just_flushed = done < data.len();
            if just_flushed {
                self.flush_records(); // may bring `pause_writing` from below
            }
        }
        done
    }

    /// Encrypts the backlog while the stream below takes it (`resume_writing` to the user
    /// when it falls to the low-water mark); once closing and empty, `close_notify` follows.
    pub(super) fn pump_backlog(self: &Rc<Self>) {
        let mut flow = None;
        while !self.lower_paused.get()
            && matches!(self.stage.get(), Stage::Wrapped | Stage::Flushing)
        {
            let Some(front) = self.backlog.borrow().front() else { break };
            let done = self.encrypt_now(&front);
            flow = flow.or(self.backlog.borrow_mut().consume(done));
            if done < front.len() {
                break;
            }
        }
        self.flush_records();
        self.to_app_flow(flow);
        self.wake_sendfile();
        let flushed = self.backlog.borrow().is_empty() && !self.in_sendfile();
        if self.stage.get() == Stage::Flushing && flushed {
            self.send_close_notify();
        }
    }

    /// Delivers what was held while the user paused reading, then takes new data again; an
    /// EOF that waited behind it comes last (the stream below then closes).
    fn deliver_held(self: &Rc<Self>) {
        if self.reading_paused.get() || !self.deliver_plaintext() {
            return;
        }
        let held = std::mem::take(&mut *self.held.borrow_mut());
        if !held.is_empty() {
            self.process(&held);
        }
        if self.held.borrow().is_empty() && self.eof_held.replace(false) {
            self.end_of_stream();
            if let Some(lower) = self.lower() {
                lower.close();
            }
        }
    }
}

impl ByteStream for TlsLayer {
    fn write(self: Rc<Self>, data: &[u8]) -> Result<()> {
        self.write_all([Plaintext::Borrowed(data)])
    }

    fn write_bytes(self: Rc<Self>, data: Bytes) -> Result<()> {
        self.write_all([Plaintext::Owned(data)])
    }

    fn writelines(self: Rc<Self>, buffers: &[&[u8]]) -> Result<()> {
        self.write_all(buffers.iter().map(|b| Plaintext::Borrowed(b)))
    }

    /// TLS cannot half-close (asyncio raises `NotImplementedError`): logged, nothing done.
    fn write_eof(self: Rc<Self>) {
        loop_log!(
            Warn,
            "write_eof() on a TLS transport does nothing: TLS cannot half-close; call close()"
        );
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    fn close(self: Rc<Self>) {
        match self.stage.get() {
            Stage::Connecting | Stage::Handshaking => {
                self.stage.set(Stage::Closed);
                self.abort_lower();
            }
            Stage::Wrapped => self.start_shutdown(),
            Stage::Flushing | Stage::ShuttingDown | Stage::Closed => {}
        }
    }

    fn abort(self: Rc<Self>) {
        self.stage.set(Stage::Closed);
        self.backlog.borrow_mut().clear();
        self.abort_lower();
    }

    fn is_closing(&self) -> bool {
        self.stage.get() != Stage::Wrapped
    }

    fn protocol(&self) -> Option<Rc<dyn Any>> {
        self.dispatcher.get()
    }

    fn set_protocol(&self, protocol: Rc<DynProtocol>) {
        self.dispatcher.set(protocol);
    }

    fn set_write_buffer_limits(
        self: Rc<Self>,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<()> {
        let flow = self.backlog.borrow_mut().set_limits(high, low)?;
        self.to_app_flow(flow);
        Ok(())
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        self.backlog.borrow().limits()
    }

    fn write_buffer_size(&self) -> usize {
        self.backlog.borrow().len()
    }

    fn peername(&self) -> Option<SockAddr> {
        self.lower()?.peername()
    }

    fn sockname(&self) -> Option<SockAddr> {
        self.lower()?.sockname()
    }

    fn socket_fd(&self) -> Option<RawFd> {
        self.lower()?.socket_fd()
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        if name == "compression" {
            return None; // rustls never compresses (asyncio reports None too)
        }
        let tls = self.session.borrow().extra_info(name);
        tls.or_else(|| self.lower()?.get_extra_info(name))
    }

    fn pause_reading(self: Rc<Self>) {
        if self.stage.get() == Stage::Wrapped && !self.reading_paused.replace(true) {
            if let Some(lower) = self.lower() {
                lower.pause_reading();
            }
        }
    }

    fn resume_reading(self: Rc<Self>) {
        if self.stage.get() != Stage::Wrapped || !self.reading_paused.replace(false) {
            return;
        }
        if let Some(lower) = self.lower() {
            lower.resume_reading();
        }
        let Some(event_loop) = self.event_loop() else { return };
        let _ = event_loop.call_soon(move || self.deliver_held());
    }

    fn is_reading(&self) -> bool {
        self.stage.get() == Stage::Wrapped && !self.reading_paused.get()
    }

    fn on_connection_lost(&self, hook: Box<dyn FnOnce()>) {
        match self.lower() {
            Some(lower) => lower.on_connection_lost(hook),
            None => drop(hook),
        }
    }

    fn start_sendfile(self: Rc<Self>, transfer: Rc<Transfer>) -> Result<TransferFuture> {
        self.begin_sendfile(transfer)
    }

    fn hand_over(&self) -> Result<u32> {
        Err(Error::runtime(RuntimeKind::AlreadyTls, "start_tls: the transport already speaks TLS"))
    }
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<TlsTransport {:?} backlog={}", self.stage.get(), self.backlog.borrow().len())?;
        match self.lower.try_borrow().ok().and_then(|lower| lower.clone()) {
            Some(lower) => write!(f, " over {lower:?}>"),
            None => f.write_str(">"),
        }
    }
}
