//! `create_server` for TCP: resolving the hosts and binding one listening socket per address.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use socket2::{Domain, SockRef, Socket, Type};

use super::{protocol_maker, Listener, Server, ServerOptions, Serving};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::net::accepted::prepare_stream_socket;
use crate::net::address::{Address, Lookup};
use crate::net::dns::{AddrInfo, AddrInfoHints};
use crate::protocol::AnyProtocol;

/// Creates, configures and binds a socket for `info`; `Ok(None)` when the family is not
/// supported here (skipped, as asyncio does).
fn bind_socket(info: &AddrInfo, options: &ServerOptions) -> Result<Option<Socket>> {
    let kind = Type::STREAM.nonblocking().cloexec();
    let protocol = (info.protocol != 0).then(|| socket2::Protocol::from(info.protocol));
    let socket = match Socket::new(Domain::from(info.family), kind, protocol) {
        Ok(socket) => socket,
        Err(err) => {
            log::debug!(target: "ringloop", "create_server: no socket for {:?}: {err}", info.addr);
            return Ok(None);
        }
    };
    let what = info.addr;
    let option_error = |name: &str, e: io::Error| Error::io(format!("{name} on {what}"), e);
    socket.set_reuse_address(options.reuse_address).map_err(|e| option_error("SO_REUSEADDR", e))?;
    if options.reuse_port {
        socket.set_reuse_port(true).map_err(|e| option_error("SO_REUSEPORT", e))?;
    }
    if options.keep_alive {
        socket.set_keepalive(true).map_err(|e| option_error("SO_KEEPALIVE", e))?;
    }
    if info.family == libc::AF_INET6 {
        // Lets the IPv4 wildcard bind the same port (asyncio does the same).
        socket.set_only_v6(true).map_err(|e| option_error("IPV6_V6ONLY", e))?;
    }
    socket
        .bind(&info.addr.into())
        .map_err(|e| Error::io(format!("error while attempting to bind on address {what}"), e))?;
    Ok(Some(socket))
}

impl EventLoop {
    /// Creates a TCP server listening on `address` (asyncio's `loop.create_server`); each
    /// accepted connection gets a [`Transport`](crate::Transport) driving a fresh
    /// `protocol_factory()`.
    ///
    /// `address` is anything [`Address`] converts from: `"127.0.0.1:8080"`, `"[::1]:0"`,
    /// `"localhost:8080"`, a `SocketAddr`, `(host, port)` with one host or several
    /// (`(["127.0.0.1", "::1"], 8080)`), or a bare port (`8080`, `":8080"`: every interface,
    /// asyncio's `host=None`). Port 0 picks a free port per socket. With
    /// [`ServerOptions::sock`], `address` must be [`Address::NONE`]. Hosts are resolved with
    /// `AI_PASSIVE` and `SOCK_STREAM`; a `SocketAddr` is bound as is.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for text that is not an address, an address with `sock`,
    /// neither of the two, or a `sock` that is not `SOCK_STREAM`; [`Error::Dns`] from resolution; [`Error::Io`] naming
    /// the address when a bind fails (every socket created so far is closed).
    ///
    /// # Example
    ///
    /// An echo server on a free port and a blocking client on a thread:
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use ringloop::{BaseProtocol, Protocol, ServerOptions, Transport};
    ///
    /// #[derive(Default)]
    /// struct Echo(Option<Transport>);
    /// impl BaseProtocol for Echo {
    ///     fn connection_made(&mut self, transport: Transport) {
    ///         self.0 = Some(transport);
    ///     }
    /// }
    /// impl Protocol for Echo {
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         let _ = self.0.as_ref().unwrap().write(data);
    ///     }
    /// }
    ///
    /// let reply = ringloop::run(async {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let server = lp.create_server(Echo::default, "127.0.0.1:0", ServerOptions::new()).await?;
    ///     let port = server.sockets()[0].as_socket().unwrap().port();
    ///     let client = move || -> std::io::Result<Vec<u8>> {
    ///         let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    ///         stream.write_all(b"hello")?;
    ///         let mut reply = [0; 5];
    ///         stream.read_exact(&mut reply)?;
    ///         Ok(reply.to_vec())
    ///     };
    ///     let reply = lp.run_in_executor(None, client)?.await?;
    ///     server.close();
    ///     server.wait_closed().await; // the client has disconnected
    ///     Ok::<_, ringloop::Error>(reply)
    /// })??;
    /// assert_eq!(reply.unwrap(), b"hello");
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn create_server<K, P, F>(
        &self,
        protocol_factory: F,
        address: impl Into<Address>,
        mut options: ServerOptions,
    ) -> Result<Server>
    where
        P: AnyProtocol<K>,
        F: Fn() -> P + 'static,
    {
        self.check_open()?;
        let tls = options.tls_args("create_server").server()?;
        let address = address.into();
        let lookups = address.lookups("create_server")?;
        let listeners = match options.sock.take() {
            Some(_) if !address.is_none() => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Conflicting,
                    "host/port and sock can not be specified at the same time",
                ));
            }
            Some(sock) => vec![adopt_socket(sock)?],
            None if address.is_none() => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Missing,
                    "Neither host/port nor sock were specified",
                ))
            }
            None => self.bind_all(lookups, &options).await?,
        };
        let make_protocol = protocol_maker(protocol_factory);
        let (backlog, start_serving) = (options.backlog, options.start_serving);
        Server::start(self, listeners, Serving { make_protocol, tls, backlog, start_serving }, None)
    }

    /// Resolves every host and binds one socket per unique address.
    async fn bind_all(
        &self,
        lookups: Vec<Lookup<'_>>,
        options: &ServerOptions,
    ) -> Result<Vec<Listener>> {
        let hints = AddrInfoHints::new()
            .family(options.family)
            .socktype(libc::SOCK_STREAM)
            .flags(libc::AI_PASSIVE | options.flags);
        let mut infos: Vec<AddrInfo> = Vec::new();
        for lookup in lookups {
            for info in self.resolve("create_server", lookup, hints).await? {
                let same = |i: &AddrInfo| {
                    (i.family, i.protocol, i.addr) == (info.family, info.protocol, info.addr)
                };
                if !infos.iter().any(same) {
                    infos.push(info);
                }
            }
        }
        let mut listeners = Vec::new();
        for info in &infos {
            // On error, the sockets bound so far are dropped (closed) with `listeners`.
            if let Some(socket) = bind_socket(info, options)? {
                let addr = socket.local_addr().map_err(|e| Error::io("getsockname", e))?;
                listeners.push(Listener { fd: socket.into(), addr });
            }
        }
        if listeners.is_empty() {
            let error = io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
            return Err(Error::io("create_server: no socket could be created", error));
        }
        Ok(listeners)
    }
}

/// Checks and prepares a user-supplied socket (`ServerOptions::sock`): a stream socket, made
/// non-blocking, and its address.
fn adopt_socket(sock: OwnedFd) -> Result<Listener> {
    let fd = sock.as_raw_fd();
    prepare_stream_socket(&sock, "create_server")?;
    let addr = SockRef::from(&sock)
        .local_addr()
        .map_err(|e| Error::io(format!("getsockname(fd {fd})"), e))?;
    Ok(Listener { fd: sock, addr })
}
