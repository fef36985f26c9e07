//! Protocols: the callbacks a transport drives (asyncio's `BaseProtocol`, `Protocol`,
//! `BufferedProtocol`).
//!
//! Call order, guaranteed by every transport: `connection_made` first, then any number of
//! `data_received`/`buffer_updated`, then at most one `eof_received`, then `connection_lost`
//! exactly once. `pause_writing`/`resume_writing` alternate, starting with `pause_writing`.
//!
//! Protocol methods take `&mut self`. A protocol may call any transport method from any of its
//! callbacks, `close` and `abort` included; a callback that the transport would make while the
//! protocol is already inside one (for example `pause_writing` from inside its own `write`) is
//! delivered right after the running callback returns, in order.
//!
//! A callback that panics never unwinds into the loop: the panic goes to the loop's exception
//! handler. As in asyncio, a panic in a callback that receives data (`data_received`,
//! `eof_received`, `get_buffer`, `buffer_updated`, `datagram_received`, `error_received`) is a
//! fatal error for its connection: the transport is force-closed, so
//! `connection_lost(Some(Error::Panic(..)))` follows. A panic in `connection_made`,
//! `pause_writing` or `resume_writing` is only reported ("protocol.X() failed") and the
//! transport goes on, as asyncio does with an exception there.

mod adapters;

pub use adapters::Receive;
pub(crate) use adapters::{adapt, adapt_datagram, adapt_read_pipe, adapt_write_pipe};

use crate::error::Error;

/// Callbacks common to every protocol (asyncio's `BaseProtocol`).
///
/// `T` is the transport the protocol is given: the stream [`Transport`] by default, a
/// [`ReadTransport`] for `connect_read_pipe`, a [`WriteTransport`] for `connect_write_pipe`
/// (implement `BaseProtocol<WriteTransport>`: a write pipe needs no `Protocol`), a
/// [`DatagramTransport`] for a [`DatagramProtocol`].
///
/// [`Transport`]: crate::Transport
/// [`ReadTransport`]: crate::ReadTransport
/// [`WriteTransport`]: crate::WriteTransport
/// [`DatagramTransport`]: crate::DatagramTransport
pub trait BaseProtocol<T = crate::transport::Transport> {
    /// The connection is made; `transport` is the protocol's handle to it (keep a clone).
    fn connection_made(&mut self, transport: T) {
        let _ = transport;
    }

    /// The connection is gone: `None` on a clean close (EOF, `close()`), else the error.
    /// Called exactly once, last.
    fn connection_lost(&mut self, error: Option<Error>) {
        let _ = error;
    }

    /// The transport's write buffer went over its high-water mark: stop writing for a while.
    ///
    /// **Honour it.** The transport never refuses a `write`: a protocol that keeps writing
    /// after this call buffers everything in memory, and a peer that does not read then grows
    /// that buffer without bound (a trial reached 3.5 GB in 8 seconds). Stop producing until
    /// [`resume_writing`](Self::resume_writing), or use the streams layer, whose `drain()`
    /// waits for it.
    fn pause_writing(&mut self) {}

    /// The write buffer drained below the low-water mark: writing may resume.
    fn resume_writing(&mut self) {}
}

/// A streaming protocol whose bytes the transport hands over as they arrive (asyncio's
/// `Protocol`). `T` is the transport type, as for [`BaseProtocol`].
pub trait Protocol<T = crate::transport::Transport>: BaseProtocol<T> {
    /// Some bytes arrived. `data` is only valid during the call (it borrows the loop's read
    /// buffer): copy what must outlive it.
    fn data_received(&mut self, data: &[u8]) {
        let _ = data;
    }

    /// The peer closed its writing side. Return `true` to keep the connection half-open (the
    /// protocol can still write and must close it later), `false` to let the transport close.
    fn eof_received(&mut self) -> bool {
        false
    }
}

/// A streaming protocol that lends the transport its own buffer to read into (asyncio's
/// `BufferedProtocol`): no copy between the kernel and the protocol.
pub trait BufferedProtocol: BaseProtocol {
    /// A buffer for the next read; at least one byte. `size_hint` is the recommended size, or
    /// 0 when the transport has no preference. An empty buffer is a fatal error for the
    /// connection.
    fn get_buffer(&mut self, size_hint: usize) -> &mut [u8];

    /// `nbytes` bytes were written at the start of the buffer last returned by `get_buffer`.
    fn buffer_updated(&mut self, nbytes: usize);

    /// As [`Protocol::eof_received`].
    fn eof_received(&mut self) -> bool {
        false
    }
}

/// Marks a [`Protocol`] for [`AnyProtocol`]: bytes are handed over with `data_received`.
#[derive(Debug)]
pub enum StreamingKind {}

/// Marks a [`BufferedProtocol`] for [`AnyProtocol`]: bytes are copied into the protocol's own
/// buffer (`get_buffer`, then `buffer_updated`).
#[derive(Debug)]
pub enum BufferedKind {}

/// A protocol a stream transport can drive: every [`Protocol`] (kind [`StreamingKind`]) and
/// every [`BufferedProtocol`] (kind [`BufferedKind`]). `create_connection`, `create_server`,
/// `connect_accepted_socket` and `Transport::set_protocol` take either, as asyncio's do; `Kind`
/// is inferred, so callers never name it (a type implementing both traits must pick one with
/// a turbofish).
///
/// The trait is sealed: it is implemented for exactly those two families.
///
/// ```
/// use ringloop::{AnyProtocol, BaseProtocol, BufferedKind, BufferedProtocol};
///
/// struct Sink(Vec<u8>, usize);
/// impl BaseProtocol for Sink {}
/// impl BufferedProtocol for Sink {
///     fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
///         &mut self.0
///     }
///     fn buffer_updated(&mut self, nbytes: usize) {
///         self.1 += nbytes;
///     }
/// }
/// fn drivable<K, P: AnyProtocol<K>>(_: &P) {}
/// drivable::<BufferedKind, _>(&Sink(vec![0; 16], 0));
/// ```
pub trait AnyProtocol<Kind>: Receive<Kind> + 'static {}

impl<P: Protocol + 'static> AnyProtocol<StreamingKind> for P {}
impl<P: BufferedProtocol + 'static> AnyProtocol<BufferedKind> for P {}

/// A datagram protocol (asyncio's `DatagramProtocol`): the callbacks of a
/// [`DatagramTransport`](crate::DatagramTransport) made by
/// [`EventLoop::create_datagram_endpoint`](crate::EventLoop::create_datagram_endpoint).
/// As in asyncio it extends [`BaseProtocol`], of a `DatagramTransport` here (implement
/// `BaseProtocol<DatagramTransport>` for `connection_made` and the rest): `pause_writing` and
/// `resume_writing` follow the send queue (past its high-water mark, drained to its low-water
/// mark); `sendto` never refuses a datagram, so ignoring them grows the queue without bound
/// while the socket cannot send.
///
/// Call order: `connection_made` first, then any number of `datagram_received` and
/// `error_received`, then `connection_lost` exactly once (`None` after `close()`/`abort()`,
/// else the fatal error). Re-entrancy and panics are handled as for [`Protocol`]: a callback
/// the transport would make while the protocol is inside one is delivered right after it
/// returns; a panic force-closes the endpoint.
pub trait DatagramProtocol: BaseProtocol<crate::DatagramTransport> {
    /// One whole datagram arrived from `addr` (`None` when the sender has no address, as an
    /// unbound unix socket). `data` is only valid during the call.
    fn datagram_received(&mut self, data: &[u8], addr: Option<socket2::SockAddr>) {
        let _ = (data, addr);
    }

    /// A send or receive failed without ending the endpoint: for example `ECONNREFUSED` after
    /// an ICMP port-unreachable on a connected endpoint, `EMSGSIZE` for a datagram too long to
    /// send, or a received datagram longer than the receive buffer (never delivered cut short).
    fn error_received(&mut self, error: Error) {
        let _ = error;
    }
}
