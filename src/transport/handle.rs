//! [`Transport`], the handle a stream protocol is given, over a [`ByteStream`]: the stream
//! transport's core (`stream.rs`), or a layer over one such as TLS (`crate::tls`), so the
//! user's protocol gets the same type either way.
//!
//! # Implementation
//! The handle is `Rc<dyn ByteStream>` plus the generation of the stream it was made in: each
//! method is one indirect call, after one more that reads the stream's generation. A stream
//! handed over to a layer by `start_tls` ([`Transport::hand_over`]) moves to its next
//! generation and the layer gets a handle of it; handles of an older one are *stale*: their
//! writes fail with [`Error::Runtime`], their other calls do nothing, and `is_closing` is
//! true, so code still holding the plain transport cannot write around the layer (asyncio
//! only says "must stop using" it). The rule lives here alone: a [`ByteStream`] never sees a
//! stale handle's call. (A flag shared by a generation's handles would cost an allocation
//! per connection; the number costs nothing.)

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;

use bytes::Bytes;
use socket2::SockAddr;

use super::DynProtocol;
use super::ExtraInfo;
use crate::error::{Error, Result, RuntimeKind};
use crate::sendfile::{Transfer, TransferFuture};

/// What a [`Transport`] handle drives: the whole stream-transport interface, type-erased.
/// The stream transport's core and the TLS layer implement it.
pub(crate) trait ByteStream: fmt::Debug {
    /// [`Transport::write`].
    fn write(self: Rc<Self>, data: &[u8]) -> Result<()>;
    /// [`Transport::write_bytes`].
    fn write_bytes(self: Rc<Self>, data: Bytes) -> Result<()>;
    /// [`Transport::writelines`], the buffers not empty.
    fn writelines(self: Rc<Self>, buffers: &[&[u8]]) -> Result<()>;
    /// [`Transport::write_eof`].
    fn write_eof(self: Rc<Self>);
    /// [`Transport::can_write_eof`].
    fn can_write_eof(&self) -> bool;
    /// [`Transport::close`].
    fn close(self: Rc<Self>);
    /// [`Transport::abort`].
    fn abort(self: Rc<Self>);
    /// [`Transport::is_closing`].
    fn is_closing(&self) -> bool;
    /// The protocol object, for [`Transport::get_protocol`].
    fn protocol(&self) -> Option<Rc<dyn Any>>;
    /// [`Transport::set_protocol`], the protocol adapted.
    fn set_protocol(&self, protocol: Rc<DynProtocol>);
    /// [`Transport::set_write_buffer_limits`].
    fn set_write_buffer_limits(
        self: Rc<Self>,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<()>;
    /// [`Transport::get_write_buffer_limits`].
    fn write_buffer_limits(&self) -> (usize, usize);
    /// [`Transport::get_write_buffer_size`].
    fn write_buffer_size(&self) -> usize;
    /// [`Transport::peername`].
    fn peername(&self) -> Option<SockAddr>;
    /// [`Transport::sockname`].
    fn sockname(&self) -> Option<SockAddr>;
    /// [`Transport::socket_fd`].
    fn socket_fd(&self) -> Option<RawFd>;
    /// [`Transport::get_extra_info`].
    fn extra_info(&self, name: &str) -> Option<ExtraInfo>;
    /// [`Transport::pause_reading`].
    fn pause_reading(self: Rc<Self>);
    /// [`Transport::resume_reading`].
    fn resume_reading(self: Rc<Self>);
    /// [`Transport::is_reading`].
    fn is_reading(&self) -> bool;
    /// Calls `hook` once the connection is lost and its socket handed to the driver.
    fn on_connection_lost(&self, hook: Box<dyn FnOnce()>);
    /// Runs `transfer` once the write buffer is flushed (`EventLoop::sendfile`).
    fn start_sendfile(self: Rc<Self>, transfer: Rc<Transfer>) -> Result<TransferFuture>;
    /// The stream's generation (see the module docs); a stream that is never handed over
    /// stays at 0.
    fn generation(&self) -> u32 {
        0
    }
    /// Hands the stream over to a layer inserted above it (`start_tls`): its next generation,
    /// or an error when it cannot be (closing, its write side shut down, a layer itself).
    fn hand_over(&self) -> Result<u32>;
}

/// The error a stale handle's write gets (see the module docs).
pub(crate) fn stale_handle(call: &str) -> Error {
    Error::runtime(
        RuntimeKind::HandedOverToTls,
        format!(
            "{call}: this transport was handed over to TLS by start_tls(): use the transport \
         start_tls() returned"
        ),
    )
}

/// A stream transport: asyncio's `Transport` for TCP and Unix stream sockets, plain or over
/// TLS. Cheap to clone; clones refer to the same connection.
#[derive(Clone)]
pub struct Transport {
    /// The stream it drives.
    stream: Rc<dyn ByteStream>,
    /// The stream's generation it was made in: stale once the stream moved on.
    generation: u32,
}

impl Transport {
    /// A handle on `stream`.
    pub(crate) fn new(stream: Rc<dyn ByteStream>) -> Transport {
        Transport { stream, generation: 0 }
    }

    /// True unless the stream was handed over since the handle was made.
    fn is_current(&self) -> bool {
        self.stream.generation() == self.generation
    }

    /// The stream, unless the handle is stale.
    fn live(&self) -> Option<Rc<dyn ByteStream>> {
        self.is_current().then(|| self.stream.clone())
    }

    /// Calls `act` on the stream unless the handle is stale.
    fn if_live(&self, act: impl FnOnce(Rc<dyn ByteStream>)) {
        if let Some(stream) = self.live() {
            act(stream);
        }
    }

    /// The stream for `call`, or the stale handle's error.
    fn acting(&self, call: &str) -> Result<Rc<dyn ByteStream>> {
        self.live().ok_or_else(|| stale_handle(call))
    }

    /// Sends `data`; never blocks. With nothing buffered it is offered to the kernel at once;
    /// what the kernel does not take is copied into the write buffer and sent in order
    /// (`pause_writing` when the buffer passes the high-water mark). After `close()` or once
    /// the connection is lost the data is dropped (and, once more than five were, logged).
    /// Empty `data` does nothing. `Error::Runtime` after `write_eof()`.
    ///
    /// Over TLS, `data` is encrypted as the connection can take it; the buffer that
    /// `pause_writing` watches is the plaintext not yet encrypted.
    pub fn write(&self, data: &[u8]) -> Result<()> {
        self.acting("write")?.write(data)
    }

    /// [`write`](Self::write) without a copy.
    pub fn write_bytes(&self, data: Bytes) -> Result<()> {
        self.acting("write")?.write_bytes(data)
    }

    /// Writes the buffers in order, as one write (asyncio's `writelines`): with nothing
    /// buffered they go to the kernel in one vectored `sendmsg(2)`; what it does not take —
    /// the rest of a buffer it took part of, then the following buffers — is queued in order,
    /// and `pause_writing` comes once, after all of it is queued, as in asyncio.
    pub fn writelines<I, B>(&self, buffers: I) -> Result<()>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let owned: Vec<B> = buffers.into_iter().collect();
        let slices: Vec<&[u8]> =
            owned.iter().map(AsRef::as_ref).filter(|b| !b.is_empty()).collect();
        self.acting("writelines")?.writelines(&slices)
    }

    /// Closes the write side after the buffer is flushed (`shutdown(SHUT_WR)`); reading goes
    /// on. Idempotent; does nothing once closing.
    ///
    /// TLS cannot half-close: on a TLS transport this does nothing but log a warning
    /// ([`can_write_eof`](Self::can_write_eof) is false there; asyncio raises
    /// `NotImplementedError`). Close the transport instead.
    pub fn write_eof(&self) {
        self.if_live(ByteStream::write_eof);
    }

    /// True for a plain stream socket; false over TLS, which cannot half-close.
    pub fn can_write_eof(&self) -> bool {
        self.stream.can_write_eof()
    }

    /// Closes the transport: reading stops at once; buffered data is flushed, then
    /// `connection_lost(None)` is called and the socket closed. Idempotent.
    ///
    /// Over TLS, the buffered plaintext is sent, then `close_notify`; the socket closes once
    /// the peer answers with its own `close_notify` (or closes), or after the shutdown
    /// timeout (`ssl_shutdown_timeout`, 30 s by default), when the connection is aborted and
    /// `connection_lost` gets an [`Error::Timeout`].
    pub fn close(&self) {
        self.if_live(ByteStream::close);
    }

    /// Closes at once: the write buffer is dropped, `connection_lost(None)` follows.
    pub fn abort(&self) {
        self.if_live(ByteStream::abort);
    }

    /// True once the transport is closing or closed (`close`, `abort`, EOF, an error), and
    /// on a handle of a transport [`start_tls`](crate::EventLoop::start_tls) took over.
    pub fn is_closing(&self) -> bool {
        !self.is_current() || self.stream.is_closing()
    }

    /// The protocol, if it is a `P` (and `connection_lost` has not been delivered yet).
    pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
        self.live()?.protocol()?.downcast::<RefCell<P>>().ok()
    }

    /// Sets the water marks (asyncio's rules: `high` alone gives `low = high/4`, `low`
    /// alone gives `high = 4*low`, none gives 64 KiB / 16 KiB; `high < low` is an error).
    /// `pause_writing` follows at once if the buffer is already above the new `high`.
    pub fn set_write_buffer_limits(&self, high: Option<usize>, low: Option<usize>) -> Result<()> {
        self.acting("set_write_buffer_limits")?.set_write_buffer_limits(high, low)
    }

    /// `(low, high)`.
    pub fn get_write_buffer_limits(&self) -> (usize, usize) {
        self.stream.write_buffer_limits()
    }

    /// What is buffered and not yet sent, in bytes (over TLS: the plaintext not yet
    /// encrypted).
    pub fn get_write_buffer_size(&self) -> usize {
        self.stream.write_buffer_size()
    }

    /// The peer's address (at creation), if the socket is connected.
    pub fn peername(&self) -> Option<SockAddr> {
        self.stream.peername()
    }

    /// The local address (at creation).
    pub fn sockname(&self) -> Option<SockAddr> {
        self.stream.sockname()
    }

    /// The socket's fd while open.
    pub fn socket_fd(&self) -> Option<RawFd> {
        self.stream.socket_fd()
    }

    /// asyncio's `get_extra_info`: `"peername"`, `"sockname"` or `"socket"`; over TLS also
    /// `"peercert"` (the peer's certificate, DER: [`ExtraInfo::Bytes`]), `"peercert_chain"`
    /// (every certificate the peer sent: [`ExtraInfo::Certificates`]), `"cipher"`
    /// ([`ExtraInfo::Cipher`]), `"alpn_protocol"` (the protocol negotiated) and
    /// `"server_hostname"` (the name a client asked for, which a server got as SNI:
    /// [`ExtraInfo::Text`]). `"compression"` is `None`, as in asyncio: rustls never
    /// compresses.
    pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.stream.extra_info(name)
    }

    /// Stops delivering data until [`resume_reading`](Self::resume_reading); data that
    /// arrives meanwhile is held, in order. Idempotent.
    pub fn pause_reading(&self) {
        self.if_live(ByteStream::pause_reading);
    }

    /// Resumes delivery: held data first, then new reads. Idempotent.
    pub fn resume_reading(&self) {
        self.if_live(ByteStream::resume_reading);
    }

    /// True unless reading is paused or the transport is closing (asyncio's `is_reading`);
    /// still true after an EOF the protocol kept open, though nothing more can arrive.
    pub fn is_reading(&self) -> bool {
        self.is_current() && self.stream.is_reading()
    }

    /// Calls `hook` once the connection is lost and its socket handed to the driver to close
    /// (at the next iteration, if that already happened). For servers tracking connections.
    pub(crate) fn on_connection_lost(&self, hook: impl FnOnce() + 'static) {
        self.stream.on_connection_lost(Box::new(hook));
    }

    /// Switches to an already adapted protocol: `set_protocol` (in `crate::protocol`, which
    /// adapts it), or a layer inserted by `start_tls`.
    pub(crate) fn replace_protocol(&self, protocol: Rc<DynProtocol>) {
        if self.is_current() {
            self.stream.set_protocol(protocol);
        }
    }

    /// Runs `transfer` on this transport once its buffer is flushed (`EventLoop::sendfile`).
    pub(crate) fn start_sendfile(&self, transfer: Rc<Transfer>) -> Result<TransferFuture> {
        self.acting("sendfile")?.start_sendfile(transfer)
    }

    /// A handle for a layer inserted above this stream (`start_tls`); this handle and every
    /// clone of it are stale from now on (see the module docs).
    pub(crate) fn hand_over(&self) -> Result<Transport> {
        let generation = self.acting("start_tls")?.hand_over()?;
        Ok(Transport { stream: self.stream.clone(), generation })
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.stream, f)
    }
}
