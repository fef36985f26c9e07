//! The arguments of `create_server`: [`ServerOptions`] (its hosts are [`Hosts`](crate::Hosts),
//! part of an [`Address`](crate::Address)).

use std::os::fd::OwnedFd;

use crate::tls::TlsConfig;

/// The keyword arguments of [`EventLoop::create_server`](crate::EventLoop::create_server). `Default`: any family, no extra
/// flags, no socket, backlog 100, `SO_REUSEADDR` on, `SO_REUSEPORT` and `SO_KEEPALIVE` off,
/// serving at once, no TLS.
#[derive(Debug)]
pub struct ServerOptions {
    /// Serve TLS with this server config: each connection's protocol gets `connection_made`
    /// once its handshake is done (a connection whose handshake fails never reaches it).
    pub ssl: Option<TlsConfig>,
    /// Seconds each TLS handshake may take before the connection is aborted (default 60;
    /// only with `ssl`).
    pub ssl_handshake_timeout: Option<f64>,
    /// Seconds the closing `close_notify` exchange may take (default 30; only with `ssl`).
    pub ssl_shutdown_timeout: Option<f64>,
    /// `AF_UNSPEC` (0), `AF_INET` or `AF_INET6`: restricts resolution.
    pub family: i32,
    /// `getaddrinfo` flags, added to `AI_PASSIVE`.
    pub flags: i32,
    /// An already bound (or listening) `SOCK_STREAM` socket to serve on, used as is; no host
    /// may be given with it.
    pub sock: Option<OwnedFd>,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// `SO_REUSEADDR` on the sockets created.
    pub reuse_address: bool,
    /// `SO_REUSEPORT` on the sockets created (several servers may bind one port).
    pub reuse_port: bool,
    /// `SO_KEEPALIVE` on the listening sockets (accepted sockets inherit it).
    pub keep_alive: bool,
    /// Accept at once; otherwise the sockets listen (the kernel queues connections up to the
    /// backlog) and accepting starts on [`Server::start_serving`](crate::Server::start_serving)
    /// or [`Server::serve_forever`](crate::Server::serve_forever).
    pub start_serving: bool,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            ssl: None,
            ssl_handshake_timeout: None,
            ssl_shutdown_timeout: None,
            family: libc::AF_UNSPEC,
            flags: 0,
            sock: None,
            backlog: 100,
            reuse_address: true,
            reuse_port: false,
            keep_alive: false,
            start_serving: true,
        }
    }
}

impl ServerOptions {
    /// The defaults: the same as `ServerOptions::default()`.
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    tls_setters!(server);

    setters! {
        family: i32,
        flags: i32,
        sock: Some(into OwnedFd),
        backlog: i32,
        reuse_address: bool,
        reuse_port: bool,
        keep_alive: bool,
        start_serving: bool,
    }
}
