//! Transports: one skeleton over the driver, on both backends.
//!
//! # The skeleton
//! As CPython builds `_SelectorTransport` and `_FlowControlMixin` once and specialises only the
//! read and write paths, every transport here is [`base::TransportBase`] (the fd as a
//! [`LoopFd`](crate::event_loop::LoopFd), the one lifecycle, the protocol's dispatcher, the lost-write rule) with
//! [`base::TransportCore`] (closing, aborting, `connection_lost` once, protocol failures)
//! composed with the paths it needs:
//!
//! | transport | read path | write path |
//! |---|---|---|
//! | stream (`stream.rs`) | [`read_side::ReadSide`] on a socket (`RecvMulti`) | [`write_side::WriteSide`] to a socket (`send`) |
//! | read pipe (`pipe.rs`) | `ReadSide` on a file (`Read`) | — |
//! | write pipe (`pipe.rs`) | — | `WriteSide` to a file (`write`) |
//! | datagram (`datagram.rs`) | its own `RecvMsgMulti` | its own `SendQueue` of datagrams |
//!
//! Protocol calls go through a [`Dispatcher`](crate::dispatch::Dispatcher) (`crate::dispatch`:
//! the re-entrancy queue and its events) to a type-erased protocol; no file here names a
//! protocol trait (`crate::protocol` adapts the user's protocol, `set_protocol` included).
//! Water marks and write buffers are `crate::flow_control`, which the TLS layer uses too.
//! Each transport core is the owner of its driver ops
//! ([`OpTarget`](crate::event_loop::OpTarget)) and tells them apart by the ids its sides store.
//!
//! # The layer seam (TLS)
//! A layer such as TLS sits between a stream transport and the user's protocol, as asyncio's
//! `sslproto` does: it is a *protocol* of the stream transport below (it receives the
//! ciphertext through `data_received`, writes with `write`, is told of `pause_writing`,
//! `eof_received`, `connection_lost`) and a *transport* to the protocol above. [`Transport`]
//! is a handle over a `ByteStream` (`handle.rs`), which the stream core and the layer both
//! implement, so the protocol gets the same type either way. Nothing in the driver or in these
//! files learns of TLS: the layer uses only the stream transport's public interface
//! (`set_protocol` and a hand-over that makes the old handles stale insert it into a live
//! connection for `start_tls`).

/// The methods every transport shares on its handle (`self.core`, whose `base` is a
/// [`base::TransportBase`] sending events of type `$event`): `is_closing` and `get_protocol`
/// (asyncio's `BaseTransport`), and the erased half of `set_protocol`.
macro_rules! base_transport_methods {
    ($event:ty) => {
        /// Later events go to `protocol` (`set_protocol`, once `crate::protocol` adapted it).
        pub(crate) fn replace_protocol(
            &self,
            protocol: Rc<dyn crate::dispatch::ErasedProtocol<$event>>,
        ) {
            self.core.base.dispatcher.set(protocol);
        }

        /// True once the transport is closing or closed (`close`, `abort`, EOF, an error).
        pub fn is_closing(&self) -> bool {
            !self.core.base.is_open()
        }

        /// The protocol, if it is a `P` (and `connection_lost` has not been delivered yet).
        pub fn get_protocol<P: 'static>(&self) -> Option<Rc<RefCell<P>>> {
            self.core.base.dispatcher.get()?.downcast::<RefCell<P>>().ok()
        }
    };
}

/// The methods of a writing transport's handle (asyncio's `WriteTransport`) besides its
/// writes: `abort`, and the write-buffer methods over its core's outgoing buffer `$buffer` (a
/// [`Buffered`](crate::flow_control::Buffered)).
macro_rules! write_transport_methods {
    ($buffer:ident) => {
        /// Closes at once: what is buffered is dropped, `connection_lost(None)` follows.
        /// Idempotent.
        pub fn abort(&self) {
            self.core.finish(None);
        }

        /// Sets the water marks (asyncio's rules: `high` alone gives `low = high/4`, `low`
        /// alone gives `high = 4*low`, none gives 64 KiB / 16 KiB; `high < low` is an error).
        /// `pause_writing` follows at once if the buffer is already above the new `high`.
        pub fn set_write_buffer_limits(
            &self,
            high: Option<usize>,
            low: Option<usize>,
        ) -> Result<()> {
            let flow = self.core.$buffer.set_limits(high, low)?;
            self.core.notify_flow(flow);
            Ok(())
        }

        /// `(low, high)`.
        pub fn get_write_buffer_limits(&self) -> (usize, usize) {
            self.core.$buffer.limits()
        }

        /// What is buffered and not yet sent: bytes (a datagram endpoint counts 8 more per
        /// datagram, asyncio's estimate).
        pub fn get_write_buffer_size(&self) -> usize {
            self.core.$buffer.size()
        }
    };
}

/// The address methods of a socket transport (stream or datagram), on its core's `names` (the
/// addresses at creation) and fd.
macro_rules! socket_methods {
    () => {
        /// The peer's address (at creation), if the socket is connected.
        pub fn peername(&self) -> Option<SockAddr> {
            self.core.names.peer()
        }

        /// The local address (at creation).
        pub fn sockname(&self) -> Option<SockAddr> {
            self.core.names.sock()
        }

        /// The socket's fd while open.
        pub fn socket_fd(&self) -> Option<RawFd> {
            self.core.base.fd.open_fd()
        }

        /// asyncio's `get_extra_info`: `"peername"`, `"sockname"` or `"socket"`.
        pub fn get_extra_info(&self, name: &str) -> Option<ExtraInfo> {
            let core = &self.core;
            ExtraInfo::of_socket(name, &core.names, &core.base.fd)
        }
    };
}

/// `Debug` for a transport handle: its core's.
macro_rules! debug_as_core {
    ($handle:ty) => {
        impl fmt::Debug for $handle {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.core, f)
            }
        }
    };
}

pub(crate) mod base;
mod copy_pool;
mod datagram;
pub(crate) mod handle;
mod pipe;
mod read_side;
mod socket_names;
mod stream;
pub(crate) mod write_side;

use std::os::fd::RawFd;

use crate::dispatch::{ErasedProtocol, Event};

pub(crate) use datagram::describe_addr;
pub use datagram::DatagramTransport;
pub use handle::Transport;
pub(crate) use pipe::{CheckedPipe, PipeKind};
pub use pipe::{ReadTransport, WriteTransport};
use socket_names::SocketNames;

/// A byte transport's protocol, type-erased (the stream transport's, or with `T`, a pipe's).
pub(crate) type DynProtocol<T = Transport> = dyn ErasedProtocol<Event<T>>;

/// A value of a transport's `get_extra_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtraInfo {
    /// A socket address (`peername`, `sockname`).
    Address(socket2::SockAddr),
    /// A file descriptor (`socket`, `pipe`).
    Fd(RawFd),
    /// Bytes: a TLS peer's certificate, DER-encoded (`peercert`); the negotiated ALPN
    /// protocol (`alpn_protocol`).
    Bytes(Vec<u8>),
    /// Text: the TLS server name (`server_hostname`).
    Text(String),
    /// Every certificate a TLS peer sent, DER-encoded, its own first (`peercert_chain`).
    Certificates(Vec<Vec<u8>>),
    /// The TLS cipher in use (`cipher`), as asyncio's `(name, version, secret_bits)`.
    Cipher {
        /// The IANA name of the cipher suite (`TLS13_AES_256_GCM_SHA384`).
        name: String,
        /// The protocol version (`TLSv1.3`, `TLSv1.2`).
        version: String,
        /// The bits of the symmetric key.
        secret_bits: u16,
    },
}

impl ExtraInfo {
    /// A socket transport's `get_extra_info(name)`: `"peername"` and `"sockname"` (the
    /// addresses at creation), `"socket"` (the fd while open).
    pub(crate) fn of_socket(
        name: &str,
        names: &SocketNames,
        fd: &crate::event_loop::LoopFd,
    ) -> Option<ExtraInfo> {
        match name {
            "peername" => names.peer().map(ExtraInfo::Address),
            "sockname" => names.sock().map(ExtraInfo::Address),
            "socket" => fd.open_fd().map(ExtraInfo::Fd),
            _ => None,
        }
    }
}
