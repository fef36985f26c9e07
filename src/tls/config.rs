//! [`TlsConfig`] (asyncio's `ssl.SSLContext`) and the checks of the `ssl`, `server_hostname`,
//! `ssl_handshake_timeout` and `ssl_shutdown_timeout` arguments, as asyncio makes them.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};

use crate::error::{ArgumentKind, Error, Result};

/// asyncio's default `ssl_handshake_timeout`: 60 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: f64 = 60.0;

/// asyncio's default `ssl_shutdown_timeout`: 30 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: f64 = 30.0;

/// A TLS configuration (asyncio's `ssl.SSLContext`): a rustls client or server config, so
/// resolvers, ALPN, session resumption and client authentication are rustls' own.
///
/// [`TlsConfig::default_client`] is asyncio's `ssl=True`: it trusts Mozilla's root
/// certificates (`webpki-roots`) and checks the server's name. Configs built here use the
/// `ring` crypto provider; a config you build yourself may use any provider rustls has.
///
/// ```
/// use ringloop::{ConnectOptions, TlsConfig};
///
/// let options = ConnectOptions::new().ssl(TlsConfig::default_client());
/// assert!(options.ssl.is_some());
/// ```
#[derive(Clone, Debug)]
pub enum TlsConfig {
    /// The client side: `create_connection`, `create_unix_connection`, `open_connection`,
    /// `start_tls` with `server_side` false.
    Client(Arc<ClientConfig>),
    /// The server side: `create_server`, `create_unix_server`, `start_server`,
    /// `connect_accepted_socket_with`, `start_tls` with `server_side` true.
    Server(Arc<ServerConfig>),
}

impl TlsConfig {
    /// asyncio's `ssl=True` (`ssl.create_default_context()`): a client config that trusts
    /// Mozilla's root certificates (the `webpki-roots` crate), checks the server's name, and
    /// speaks TLS 1.2 and 1.3 with rustls' default cipher suites on the `ring` provider.
    /// Built once per process; each call is a cheap clone.
    pub fn default_client() -> TlsConfig {
        static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        let config = DEFAULT.get_or_init(|| {
            let roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            Arc::new(client_builder().with_root_certificates(roots).with_no_client_auth())
        });
        TlsConfig::Client(config.clone())
    }

    /// A client config that trusts `roots` only (a private CA, a test certificate), with the
    /// same defaults as [`default_client`](Self::default_client).
    pub fn client_trusting(roots: RootCertStore) -> TlsConfig {
        let config = client_builder().with_root_certificates(roots).with_no_client_auth();
        TlsConfig::Client(Arc::new(config))
    }

    /// A client config that trusts `roots` and checks the server's certificate chain and
    /// dates, but **not its name**: asyncio's `check_hostname = False`.
    ///
    /// # Security
    /// Any server holding any certificate from `roots` is then accepted for any name, which
    /// allows man-in-the-middle attacks. Use it only where the name cannot be known and the
    /// roots are yours alone.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `roots` is empty.
    pub fn dangerous_client_without_hostname_check(roots: RootCertStore) -> Result<TlsConfig> {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .map_err(|e| {
                    Error::invalid_argument(ArgumentKind::Tls, format!("TLS client config: {e}"))
                })?;
        let config = client_builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(webpki)))
            .with_no_client_auth();
        Ok(TlsConfig::Client(Arc::new(config)))
    }

    /// A server config presenting `cert_chain` (the server's certificate first) with `key`,
    /// without client authentication, TLS 1.2 and 1.3 on the `ring` provider.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the key does not suit the certificate or is unsupported.
    pub fn server(
        cert_chain: Vec<CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<TlsConfig> {
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| {
                Error::invalid_argument(ArgumentKind::Tls, format!("TLS server config: {e}"))
            })?
            .with_no_client_auth()
            .with_single_cert(cert_chain, key)
            .map_err(|e| {
                Error::invalid_argument(ArgumentKind::Tls, format!("TLS server config: {e}"))
            })?;
        Ok(TlsConfig::Server(Arc::new(config)))
    }

    /// True for a server config.
    pub fn is_server(&self) -> bool {
        matches!(self, TlsConfig::Server(_))
    }
}

/// `From<Config>` and `From<Arc<Config>>` for `TlsConfig`, into the `Variant` of each
/// `Config => Variant`.
macro_rules! tls_config_from {
    ($($config:ty => $variant:ident),*) => {
        $(
            impl From<$config> for TlsConfig {
                fn from(config: $config) -> TlsConfig {
                    TlsConfig::$variant(Arc::new(config))
                }
            }

            impl From<Arc<$config>> for TlsConfig {
                fn from(config: Arc<$config>) -> TlsConfig {
                    TlsConfig::$variant(config)
                }
            }
        )*
    };
}

tls_config_from!(ClientConfig => Client, ServerConfig => Server);

/// The crypto provider of the configs built here: `ring`, which builds with a C compiler
/// alone (`aws-lc-rs` needs cmake), with X25519 as the preferred key exchange (rustls'
/// `ring` defaults put P-384 first, whose generic arithmetic in `ring` costs about ten times
/// X25519's per handshake), then P-256 and P-384. rustls 0.23.48 deprecated
/// `ring::default_provider` only to point at post-quantum key exchange, which `ring` lacks.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    let provider = PROVIDER.get_or_init(|| {
        use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
        Arc::new(provider)
    });
    provider.clone()
}

/// A client config builder on [`provider`] with TLS 1.2 and 1.3.
fn client_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring has cipher suites for TLS 1.2 and 1.3")
}

/// A verifier that checks everything the webpki verifier checks but the name (see
/// [`TlsConfig::dangerous_client_without_hostname_check`]): the name is checked last, so a
/// name mismatch means everything else passed.
#[derive(Debug)]
struct NoHostnameCheck(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        match verified {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS arguments of one call, checked: what a layer is built from.
#[derive(Clone, Debug)]
pub(crate) struct TlsSetup {
    /// The config.
    pub(crate) config: TlsConfig,
    /// A client's name for the server: SNI and the certificate check (`None` on a server).
    pub(crate) server_name: Option<ServerName<'static>>,
    /// Seconds the handshake may take.
    pub(crate) handshake_timeout: f64,
    /// Seconds the closing `close_notify` exchange may take.
    pub(crate) shutdown_timeout: f64,
}

/// The TLS keyword arguments of a call, as given.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TlsArgs<'a> {
    /// The call, for messages (`create_connection`).
    pub(crate) call: &'a str,
    /// `ssl`.
    pub(crate) ssl: Option<&'a TlsConfig>,
    /// `server_hostname`.
    pub(crate) server_hostname: Option<&'a str>,
    /// `ssl_handshake_timeout`.
    pub(crate) handshake_timeout: Option<f64>,
    /// `ssl_shutdown_timeout`.
    pub(crate) shutdown_timeout: Option<f64>,
}

impl TlsArgs<'_> {
    /// The client side's setup (`None` without `ssl`), asyncio's rules: `server_hostname`
    /// and the timeouts only with `ssl`; `server_hostname` defaults to `host`, and is required
    /// when there is no host; an empty `server_hostname` sends no SNI and checks no name (the
    /// config must then not check it either: see
    /// [`TlsConfig::dangerous_client_without_hostname_check`]).
    pub(crate) fn client(&self, host: Option<&str>) -> Result<Option<TlsSetup>> {
        let Some(ssl) = self.ssl else { return self.without_ssl().map(|()| None) };
        let TlsConfig::Client(_) = ssl else {
            return Err(self.invalid(
                ArgumentKind::Conflicting,
                "ssl must be a client config (TlsConfig::Client) here",
            ));
        };
        let name = match (self.server_hostname, host.filter(|h| !h.is_empty())) {
            (Some(name), _) | (None, Some(name)) => name,
            (None, None) => {
                return Err(self.invalid(
                    ArgumentKind::Missing,
                    "You must set server_hostname when using ssl without a host",
                ))
            }
        };
        let server_name = if name.is_empty() {
            ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
        } else {
            ServerName::try_from(name.to_owned()).map_err(|e| {
                self.invalid(
                    ArgumentKind::Malformed,
                    &format!("server_hostname {name:?} is not a DNS name or an IP address: {e}"),
                )
            })?
        };
        self.setup(ssl, Some(server_name))
    }

    /// The server side's setup (`None` without `ssl`): `ssl` must be a server config.
    pub(crate) fn server(&self) -> Result<Option<TlsSetup>> {
        let Some(ssl) = self.ssl else { return self.without_ssl().map(|()| None) };
        if self.server_hostname.is_some() {
            return Err(self.invalid(
                ArgumentKind::Conflicting,
                "server_hostname is only meaningful for a client",
            ));
        }
        let TlsConfig::Server(_) = ssl else {
            return Err(self.invalid(
                ArgumentKind::Conflicting,
                "ssl must be a server config (TlsConfig::Server) here",
            ));
        };
        self.setup(ssl, None)
    }

    fn setup(
        &self,
        ssl: &TlsConfig,
        server_name: Option<ServerName<'static>>,
    ) -> Result<Option<TlsSetup>> {
        let handshake_timeout = self.timeout("ssl_handshake_timeout", self.handshake_timeout)?;
        let shutdown_timeout = self.timeout("ssl_shutdown_timeout", self.shutdown_timeout)?;
        Ok(Some(TlsSetup {
            config: ssl.clone(),
            server_name,
            handshake_timeout: handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
            shutdown_timeout: shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
        }))
    }

    /// Without `ssl`, none of the other TLS arguments may be given.
    fn without_ssl(&self) -> Result<()> {
        let given = [
            ("server_hostname", self.server_hostname.is_some()),
            ("ssl_handshake_timeout", self.handshake_timeout.is_some()),
            ("ssl_shutdown_timeout", self.shutdown_timeout.is_some()),
        ];
        match given.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(self.invalid(
                ArgumentKind::Conflicting,
                &format!("{name} is only meaningful with ssl"),
            )),
            None => Ok(()),
        }
    }

    /// A timeout: positive and finite seconds.
    fn timeout(&self, name: &str, secs: Option<f64>) -> Result<Option<f64>> {
        match secs {
            Some(secs) if !(secs > 0.0 && secs.is_finite()) => Err(self.invalid(
                ArgumentKind::OutOfRange,
                &format!("{name} should be a positive number, got {secs}"),
            )),
            other => Ok(other),
        }
    }

    fn invalid(&self, kind: ArgumentKind, what: &str) -> Error {
        Error::invalid_argument(kind, format!("{}: {what}", self.call))
    }
}
