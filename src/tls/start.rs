//! Where TLS connections start: a client's (`create_connection` and its kin: the call
//! returns once the handshake is done), a server's accepted connection (the protocol gets
//! `connection_made` once its handshake is done), and `start_tls` on a live connection.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use super::config::{TlsArgs, TlsConfig, TlsSetup};
use super::layer::{Stage, TlsLayer};
use super::session::Session;
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::future::Future;
use crate::protocol::adapt;
use crate::protocol::AnyProtocol;
use crate::transport::DynProtocol;
use crate::transport::Transport;

/// The keyword arguments of [`EventLoop::start_tls`] (asyncio's `server_side`,
/// `server_hostname`, `ssl_handshake_timeout`, `ssl_shutdown_timeout`). `Default`: the client
/// side, no name, asyncio's timeouts (60 s, 30 s).
#[derive(Clone, Debug, Default)]
pub struct StartTlsOptions {
    /// Upgrade as the server (the config must be a [`TlsConfig::Server`]).
    pub server_side: bool,
    /// A client's name for the server: sent as SNI and checked against its certificate.
    /// Required on the client side (there is no `host` to default to); `""` sends no name
    /// and needs a config that checks none
    /// ([`TlsConfig::dangerous_client_without_hostname_check`]).
    pub server_hostname: Option<String>,
    /// Seconds the handshake may take (default 60).
    pub ssl_handshake_timeout: Option<f64>,
    /// Seconds the closing `close_notify` exchange may take before the connection is
    /// aborted (default 30).
    pub ssl_shutdown_timeout: Option<f64>,
}

impl StartTlsOptions {
    /// The defaults.
    pub fn new() -> StartTlsOptions {
        StartTlsOptions::default()
    }

    setters! {
        server_side: bool,
        server_hostname: Some(into String),
    }

    tls_timeout_setters!();
}

/// A new layer for `setup` driving `app`, over a stream transport started on `socket`.
fn layer_on_socket(
    event_loop: &EventLoop,
    socket: OwnedFd,
    app: Rc<DynProtocol>,
    setup: &TlsSetup,
) -> Result<Rc<TlsLayer>> {
    let session = Session::new(setup)?;
    let layer = TlsLayer::new(event_loop, app, session, setup, false);
    let lower = Transport::start(event_loop, socket, layer.clone())?;
    layer.attach(lower);
    Ok(layer)
}

/// A client connection on the connected `socket`: the TLS transport, once the handshake is
/// done (`app` got `connection_made` just before).
pub(crate) async fn connect(
    event_loop: &EventLoop,
    socket: OwnedFd,
    app: Rc<DynProtocol>,
    setup: &TlsSetup,
) -> Result<Transport> {
    let layer = layer_on_socket(event_loop, socket, app, setup)?;
    let waiter = layer.handshake_waiter(event_loop);
    handshake(layer, waiter).await
}

/// A server's accepted connection on `socket`: its TLS transport at once (the handshake
/// runs; `app` gets `connection_made` when it is done).
pub(crate) fn accept(
    event_loop: &EventLoop,
    socket: OwnedFd,
    app: Rc<DynProtocol>,
    setup: &TlsSetup,
) -> Result<Transport> {
    Ok(layer_on_socket(event_loop, socket, app, setup)?.handle())
}

/// Awaits the end of `layer`'s handshake: its transport, or the handshake's error. Dropped
/// before (the caller was cancelled), it aborts the connection, as asyncio closes it.
async fn handshake(layer: Rc<TlsLayer>, waiter: Future<()>) -> Result<Transport> {
    struct AbortUnlessDone(Rc<TlsLayer>);
    impl Drop for AbortUnlessDone {
        fn drop(&mut self) {
            if matches!(self.0.stage.get(), Stage::Connecting | Stage::Handshaking) {
                self.0.stage.set(Stage::Closed);
                self.0.abort_lower();
            }
        }
    }
    let guard = AbortUnlessDone(layer);
    waiter.await?;
    Ok(guard.0.handle())
}

impl EventLoop {
    /// Upgrades a live connection to TLS (asyncio's `loop.start_tls`, for STARTTLS): inserts
    /// a TLS layer between `transport` and `protocol` and returns, once the handshake is
    /// done, the new transport `protocol` must use from then on.
    ///
    /// The layer is inserted when this is **called**, not when the future is first polled,
    /// so it may be called from inside `data_received` (after answering the peer's request
    /// to upgrade, say): every byte that arrives after that callback goes to TLS, and none
    /// is lost. `transport` and its clones are stale from the call on: their writes fail with
    /// [`Error::Runtime`](crate::Error::Runtime) naming `start_tls`, their other calls do
    /// nothing and `is_closing()` is true. `protocol` does not get `connection_made` again;
    /// it gets `connection_lost` exactly once, when the TLS connection ends (with the error
    /// if the handshake fails). Dropping the future before the handshake is done aborts the
    /// connection.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a config of the wrong
    /// side, a client without `server_hostname`, or a timeout that is not a positive number;
    /// [`Error::Runtime`](crate::Error::Runtime) for a transport that is closing, already
    /// upgraded, or TLS itself; the handshake's error ([`Error::Tls`](crate::Error::Tls),
    /// [`Error::Timeout`](crate::Error::Timeout), [`Error::Io`](crate::Error::Io)).
    pub fn start_tls<K, P>(
        &self,
        transport: &Transport,
        protocol: Rc<RefCell<P>>,
        sslcontext: TlsConfig,
        options: StartTlsOptions,
    ) -> impl std::future::Future<Output = Result<Transport>> + 'static
    where
        P: AnyProtocol<K>,
    {
        let started = self.insert_tls(transport, adapt(protocol), &sslcontext, &options);
        let event_loop = self.clone();
        async move {
            let layer = started?;
            let waiter = layer.handshake_waiter(&event_loop);
            handshake(layer, waiter).await
        }
    }

    /// The synchronous part of [`start_tls`](Self::start_tls): checks, then the layer takes
    /// the stream over and the handshake starts.
    fn insert_tls(
        &self,
        transport: &Transport,
        app: Rc<DynProtocol>,
        sslcontext: &TlsConfig,
        options: &StartTlsOptions,
    ) -> Result<Rc<TlsLayer>> {
        self.check_open()?;
        let args = TlsArgs {
            call: "start_tls",
            ssl: Some(sslcontext),
            server_hostname: options.server_hostname.as_deref(),
            handshake_timeout: options.ssl_handshake_timeout,
            shutdown_timeout: options.ssl_shutdown_timeout,
        };
        let setup = match options.server_side {
            true => args.server()?,
            false => args.client(None)?,
        };
        let setup = setup.ok_or_else(|| {
            Error::invalid_argument(ArgumentKind::Missing, "start_tls: no config")
        })?;
        let session = Session::new(&setup)?;
        let lower = transport.hand_over()?;
        let layer = TlsLayer::new(self, app, session, &setup, true);
        lower.replace_protocol(layer.clone());
        layer.attach(lower.clone());
        lower.resume_reading(); // in case the plain protocol had paused it
        layer.start_handshake();
        Ok(layer)
    }
}
