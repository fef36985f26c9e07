//! A connected socket becoming a connection, plain or TLS: what `create_connection`,
//! `create_unix_connection` and `connect_accepted_socket` end with (asyncio's
//! `_create_connection_transport`), and `connect_accepted_socket`'s TLS arguments.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use socket2::SockRef;

use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::adapt;
use crate::protocol::AnyProtocol;
use crate::tls::{self, TlsConfig, TlsSetup};
use crate::transport::DynProtocol;
use crate::transport::Transport;

/// The TLS keyword arguments of [`EventLoop::connect_accepted_socket_with`] (asyncio's `ssl`,
/// `ssl_handshake_timeout`, `ssl_shutdown_timeout`). `Default`: no TLS.
#[derive(Clone, Debug, Default)]
pub struct AcceptedSocketOptions {
    /// Serve TLS on the connection (a [`TlsConfig::Server`]: the socket was accepted).
    pub ssl: Option<TlsConfig>,
    /// How long the client may take to finish its handshake, in seconds (60 if `None`).
    pub ssl_handshake_timeout: Option<f64>,
    /// How long the client may take to answer our `close_notify`, in seconds (30 if `None`).
    pub ssl_shutdown_timeout: Option<f64>,
}

impl AcceptedSocketOptions {
    /// No TLS.
    pub fn new() -> AcceptedSocketOptions {
        AcceptedSocketOptions::default()
    }

    tls_setters!(server);
}

impl EventLoop {
    /// [`connect_accepted_socket`](Self::connect_accepted_socket) with asyncio's TLS
    /// arguments: with `options.ssl` (a server config) the connection speaks TLS, and this
    /// returns once the handshake is done, just after the protocol's `connection_made`.
    ///
    /// # Errors
    /// As `connect_accepted_socket`; [`Error::InvalidArgument`](crate::Error::InvalidArgument)
    /// for a client config or a timeout without `ssl` or not positive; the handshake's error
    /// ([`Error::Tls`](crate::Error::Tls), [`Error::Timeout`](crate::Error::Timeout),
    /// [`Error::Io`](crate::Error::Io)), the socket then closed.
    pub async fn connect_accepted_socket_with<K, P, F>(
        &self,
        protocol_factory: F,
        socket: OwnedFd,
        options: AcceptedSocketOptions,
    ) -> Result<(Transport, Rc<RefCell<P>>)>
    where
        P: AnyProtocol<K>,
        F: FnOnce() -> P,
    {
        let tls = options.tls_args("connect_accepted_socket").server()?;
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let app = adapt(protocol.clone());
        Ok((self.open_stream(socket, app, tls, "connect_accepted_socket").await?, protocol))
    }

    /// Wraps the connected `socket` in a transport driving `app`: a plain one, or with `tls`
    /// a TLS one, returned once its handshake is done.
    pub(crate) async fn open_stream(
        &self,
        socket: OwnedFd,
        app: Rc<DynProtocol>,
        tls: Option<TlsSetup>,
        call: &str,
    ) -> Result<Transport> {
        self.check_open()?;
        prepare_stream_socket(&socket, call)?;
        match tls {
            None => Transport::start(self, socket, app),
            Some(setup) => tls::connect(self, socket, app, &setup).await,
        }
    }

    /// Wraps an already connected stream socket in a transport driving `protocol_factory()`'s
    /// protocol (asyncio's `connect_accepted_socket`). `connection_made` runs at the next
    /// iteration; the returned `Rc` is the protocol the transport drives. The protocol is a
    /// [`Protocol`](crate::Protocol) or a [`BufferedProtocol`](crate::BufferedProtocol).
    pub async fn connect_accepted_socket<K, P, F>(
        &self,
        protocol_factory: F,
        socket: OwnedFd,
    ) -> Result<(Transport, Rc<RefCell<P>>)>
    where
        P: AnyProtocol<K>,
        F: FnOnce() -> P,
    {
        prepare_stream_socket(&socket, "connect_accepted_socket")?;
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let transport = Transport::start(self, socket, adapt(protocol.clone()))?;
        Ok((transport, protocol))
    }
}

/// Checks that `socket` is a stream socket and makes it non-blocking, for a transport;
/// `call` names the caller in errors.
pub(crate) fn prepare_stream_socket(socket: &OwnedFd, call: &str) -> Result<()> {
    let fd = socket.as_raw_fd();
    let kind =
        SockRef::from(socket).r#type().map_err(|e| Error::io(format!("{call}(fd {fd})"), e))?;
    if kind != socket2::Type::STREAM {
        return Err(Error::invalid_argument(
            ArgumentKind::UnsuitableFd,
            format!("A Stream Socket was expected, got fd {fd} of type {kind:?}"),
        ));
    }
    SockRef::from(socket)
        .set_nonblocking(true)
        .map_err(|e| Error::io(format!("{call}: set_nonblocking"), e))
}
