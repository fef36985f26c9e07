//! TLS on rustls: a layer between a stream transport and the protocol, as asyncio's
//! `sslproto` sits.
//!
//! The user's protocol gets the same [`Transport`](crate::Transport) type as over a plain
//! socket, with the whole interface: write buffering, flow control (`pause_writing` and
//! `resume_writing` follow the plaintext not yet encrypted), `pause_reading` and
//! `resume_reading`, `close` (which sends `close_notify` first) and `abort`; `write_eof` is
//! refused, as TLS cannot half-close. `BufferedProtocol` and the streams work over it
//! unchanged. Nothing in the transports or the driver knows of TLS: the layer is a protocol
//! of the stream transport below (`TlsLayer` implements the dispatcher's protocol
//! interface) and a `ByteStream` behind the handle the user holds.
//!
//! - `config.rs`: [`TlsConfig`] (asyncio's `SSLContext`) and the checks of the TLS
//!   arguments (`server_hostname` defaulting to `host`, the timeouts);
//! - `session.rs`: one rustls connection, as the layer drives it;
//! - `layer.rs`: the layer's stages, the events from below, the read path and closing;
//! - `app_side.rs`: the transport the user sees, the write path and flow control;
//! - `start.rs`: where connections start, and [`EventLoop::start_tls`](crate::EventLoop::start_tls);
//! - `sendfile.rs`: `sendfile` through the layer (the chunked fallback);
//! - `errors.rs`: rustls' errors as [`Error::Tls`](crate::Error::Tls) with their reason.
//!
//! The crypto provider is `ring` (it builds with a C compiler alone).
//!
//! # Timeouts
//! `ssl_handshake_timeout` (60 s by default) ends a handshake that does not finish with an
//! [`Error::Timeout`](crate::Error::Timeout) naming the handshake; `ssl_shutdown_timeout`
//! (30 s) aborts a connection whose peer never answers `close_notify` (its
//! `connection_lost` gets an [`Error::Timeout`](crate::Error::Timeout)).
//!
//! # Endings
//! The peer's `close_notify` brings `eof_received` (whose answer TLS cannot honour), then
//! the layer sends its own and the connection closes: `connection_lost(None)`. A peer that
//! closes without `close_notify` brings `connection_lost` with an [`Error::Tls`] of kind
//! [`TlsErrorKind::Truncated`](crate::TlsErrorKind::Truncated): what it sent may have been
//! cut short.
//!
//! # `sendfile`
//! `EventLoop::sendfile` over a TLS transport takes the chunked fallback (the kernel cannot
//! encrypt): chunks of the file are read and written through the layer (`sendfile.rs`); with
//! `fallback = false` it is `Error::SendfileNotAvailable`.
//!
//! [`Error::Tls`]: crate::Error::Tls

#[macro_use]
mod options;
mod app_side;
mod config;
mod errors;
mod layer;
mod scratch;
mod sendfile;
mod session;
mod start;

pub use config::{crypto_provider, TlsConfig, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT};
pub(crate) use config::{TlsArgs, TlsSetup};
pub use start::StartTlsOptions;
pub(crate) use start::{accept, connect};

/// The PEM and DER types the configs take (rustls' `pki-types`), re-exported so callers
/// need no direct dependency: `CertificateDer::pem_file_iter`, `PrivateKeyDer::from_pem_file`.
pub use rustls::pki_types;
pub use rustls::{ClientConfig, RootCertStore, ServerConfig};
