//! The builder methods of asyncio's TLS arguments, written once for every options struct
//! that has the fields `ssl_handshake_timeout` and `ssl_shutdown_timeout`, and `ssl` (and a
//! client's `server_hostname`): `ConnectOptions`, `UnixConnectOptions`, `ServerOptions`,
//! `UnixServerOptions`, `AcceptedSocketOptions`, `StartTlsOptions`.

/// The setters of `ssl_handshake_timeout` and `ssl_shutdown_timeout`.
macro_rules! tls_timeout_setters {
    () => {
        /// Sets `ssl_handshake_timeout` (seconds; only with `ssl`).
        pub fn ssl_handshake_timeout(mut self, secs: f64) -> Self {
            self.ssl_handshake_timeout = Some(secs);
            self
        }

        /// Sets `ssl_shutdown_timeout` (seconds; only with `ssl`).
        pub fn ssl_shutdown_timeout(mut self, secs: f64) -> Self {
            self.ssl_shutdown_timeout = Some(secs);
            self
        }
    };
}

/// The setters of the TLS arguments and `tls_args(call)`, which hands them to
/// [`TlsArgs`](crate::tls::TlsArgs)' checks: `client` for a struct with `server_hostname`,
/// `server` for one without.
macro_rules! tls_setters {
    (client) => {
        tls_setters!(@ssl);

        /// Sets `server_hostname` (only with `ssl`).
        pub fn server_hostname(mut self, name: impl Into<String>) -> Self {
            self.server_hostname = Some(name.into());
            self
        }

        /// The TLS arguments, for `call`'s checks.
        pub(crate) fn tls_args<'a>(&'a self, call: &'a str) -> $crate::tls::TlsArgs<'a> {
            $crate::tls::TlsArgs {
                call,
                ssl: self.ssl.as_ref(),
                server_hostname: self.server_hostname.as_deref(),
                handshake_timeout: self.ssl_handshake_timeout,
                shutdown_timeout: self.ssl_shutdown_timeout,
            }
        }
    };
    (server) => {
        tls_setters!(@ssl);

        /// The TLS arguments, for `call`'s checks.
        pub(crate) fn tls_args<'a>(&'a self, call: &'a str) -> $crate::tls::TlsArgs<'a> {
            $crate::tls::TlsArgs {
                call,
                ssl: self.ssl.as_ref(),
                server_hostname: None,
                handshake_timeout: self.ssl_handshake_timeout,
                shutdown_timeout: self.ssl_shutdown_timeout,
            }
        }
    };
    (@ssl) => {
        /// Sets `ssl`: speak TLS with this config ([`TlsConfig`](crate::TlsConfig)).
        pub fn ssl(mut self, config: impl Into<$crate::tls::TlsConfig>) -> Self {
            self.ssl = Some(config.into());
            self
        }

        tls_timeout_setters!();
    };
}
