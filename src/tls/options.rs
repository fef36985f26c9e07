//! The builder methods of asyncio's TLS arguments, written once for every options struct
//! that has the fields `ssl_handshake_timeout` and `ssl_shutdown_timeout`, and `ssl` (and a
//! client's `server_hostname`): `ConnectOptions`, `UnixConnectOptions`, `ServerOptions`,
//! `UnixServerOptions`, `AcceptedSocketOptions`, `StartTlsOptions`.

/// The setters of `ssl_handshake_timeout` and `ssl_shutdown_timeout`.
macro_rules! tls_timeout_setters {
    () => {
        setters! {
            /// Sets `ssl_handshake_timeout` (seconds; only with `ssl`).
            ssl_handshake_timeout: Some(f64),
            /// Sets `ssl_shutdown_timeout` (seconds; only with `ssl`).
            ssl_shutdown_timeout: Some(f64),
        }
    };
}

/// The setters of the TLS arguments and `tls_args(call)`, which hands them to
/// [`TlsArgs`](crate::tls::TlsArgs)' checks: `client` for a struct with `server_hostname`,
/// `server` for one without.
macro_rules! tls_setters {
    (client) => {
        tls_setters!(@ssl);

        setters! {
            /// Sets `server_hostname` (only with `ssl`).
            server_hostname: Some(into String),
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
        setters! {
            /// Sets `ssl`: speak TLS with this config ([`TlsConfig`](crate::TlsConfig)).
            ssl: Some(into $crate::tls::TlsConfig),
        }

        tls_timeout_setters!();
    };
}
