//! `create_datagram_endpoint`: a UDP or unix datagram socket, bound and/or connected as asked,
//! wrapped in a [`DatagramTransport`].
//!
//! # Implementation
//!
//! As asyncio's `base_events.create_datagram_endpoint`: `local_addr` and `remote_addr` are
//! resolved (`SOCK_DGRAM`), paired by `(family, proto)`, and the pairs tried in order until a
//! socket is made, bound and connected; every socket that fails is closed (dropped). With
//! `allow_broadcast` the socket is not connected: `remote_addr` is then only the transport's
//! default destination.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use super::address::Address;
use super::dns::AddrInfoHints;
use crate::error::{loop_log, ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;
use crate::protocol::{adapt_datagram, DatagramProtocol};
use crate::transport::DatagramTransport;

/// An endpoint address: asyncio's `(host, port)` tuple or unix path string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointAddr {
    /// An IP address, or a host (name or numeric) and port resolved with `getaddrinfo`.
    Inet(Address),
    /// A unix socket path (`AF_UNIX`); a leading NUL byte names an abstract socket.
    Unix(PathBuf),
}

impl fmt::Display for EndpointAddr {
    /// `host:port` (`[host]:port` for an IPv6 host), or the unix path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddr::Inet(address) => write!(f, "{address}"),
            EndpointAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The keyword arguments of [`EventLoop::create_datagram_endpoint`] (asyncio's `local_addr`,
/// `remote_addr`, `family`, `proto`, `flags`, `reuse_port`, `allow_broadcast`, `sock`).
///
/// `Default` is asyncio's defaults: nothing set. `SO_REUSEADDR` is never set (asyncio removed
/// `reuse_address` for datagrams: it lets another process steal the port).
///
/// ```
/// use ringloop::{DatagramOptions, EndpointAddr};
///
/// let options = DatagramOptions::new().local_addr("127.0.0.1:9999").reuse_port(true);
/// assert_eq!(options.local_addr, Some(EndpointAddr::Inet("127.0.0.1:9999".into())));
/// ```
#[derive(Debug, Default)]
pub struct DatagramOptions {
    /// Where to bind the socket.
    pub local_addr: Option<EndpointAddr>,
    /// Where to connect the socket (or, with `allow_broadcast`, the default destination).
    pub remote_addr: Option<EndpointAddr>,
    /// `AF_INET`, `AF_INET6` or `AF_UNIX`; 0 picks it from the addresses.
    pub family: i32,
    /// `getaddrinfo`'s and `socket`'s protocol: 0 or `IPPROTO_UDP`.
    pub proto: i32,
    /// `getaddrinfo`'s `ai_flags` (`AI_*`).
    pub flags: i32,
    /// `SO_REUSEPORT`: several endpoints may bind one port.
    pub reuse_port: bool,
    /// `SO_BROADCAST`: sending to broadcast addresses is allowed; the socket is not connected.
    pub allow_broadcast: bool,
    /// An existing datagram socket to use instead (no other option may be set); the transport
    /// takes ownership of it and makes it non-blocking.
    pub sock: Option<OwnedFd>,
}

impl DatagramOptions {
    /// The defaults: the same as `DatagramOptions::default()`.
    pub fn new() -> DatagramOptions {
        DatagramOptions::default()
    }

    /// Sets `local_addr` to an IP address: anything [`Address`] converts from
    /// (`"127.0.0.1:0"`, `("localhost", 9999)`, a `SocketAddr`, ...).
    pub fn local_addr(mut self, address: impl Into<Address>) -> DatagramOptions {
        self.local_addr = Some(EndpointAddr::Inet(address.into()));
        self
    }

    /// Sets `remote_addr` to an IP address, as [`local_addr`](Self::local_addr).
    pub fn remote_addr(mut self, address: impl Into<Address>) -> DatagramOptions {
        self.remote_addr = Some(EndpointAddr::Inet(address.into()));
        self
    }

    /// Sets `local_addr` to a unix socket path (and `family` to `AF_UNIX`).
    pub fn local_path(mut self, path: impl Into<PathBuf>) -> DatagramOptions {
        self.local_addr = Some(EndpointAddr::Unix(path.into()));
        self.family = libc::AF_UNIX;
        self
    }

    /// Sets `remote_addr` to a unix socket path (and `family` to `AF_UNIX`).
    pub fn remote_path(mut self, path: impl Into<PathBuf>) -> DatagramOptions {
        self.remote_addr = Some(EndpointAddr::Unix(path.into()));
        self.family = libc::AF_UNIX;
        self
    }

    setters! {
        family: i32,
        proto: i32,
        flags: i32,
        reuse_port: bool,
        allow_broadcast: bool,
        /// Sets `sock` (an existing datagram socket).
        sock: Some(into OwnedFd),
    }

    /// The options set besides `sock`, as asyncio lists them in its error.
    fn modifiers(&self) -> Vec<String> {
        let mut set = Vec::new();
        for (name, addr) in [("local_addr", &self.local_addr), ("remote_addr", &self.remote_addr)] {
            if let Some(addr) = addr {
                set.push(format!("{name}={addr}"));
            }
        }
        let mut add = |on: bool, text: String| on.then(|| set.push(text));
        add(self.family != 0, format!("family={}", self.family));
        add(self.proto != 0, format!("proto={}", self.proto));
        add(self.flags != 0, format!("flags={}", self.flags));
        add(self.reuse_port, "reuse_port=true".into());
        add(self.allow_broadcast, "allow_broadcast=true".into());
        set
    }
}

/// `(family, proto)`: how asyncio groups the resolved addresses.
type FamilyProto = (i32, i32);

/// One way to make the socket: family, protocol and the resolved addresses.
#[derive(Debug)]
struct Candidate {
    /// The socket's family.
    family: i32,
    /// The socket's protocol.
    proto: i32,
    /// Bind here.
    local: Option<SockAddr>,
    /// Connect here (or, with `allow_broadcast`, the default destination).
    remote: Option<SockAddr>,
}

impl EventLoop {
    /// Creates a datagram endpoint (asyncio's `loop.create_datagram_endpoint`): a UDP socket
    /// (or unix datagram socket, `family = AF_UNIX`), bound to `local_addr` and connected to
    /// `remote_addr` as given, driving `protocol_factory()`'s protocol. Returns the transport
    /// and the protocol; `connection_made` runs at the next iteration.
    ///
    /// With `remote_addr` the endpoint is connected: [`DatagramTransport::sendto`] takes no
    /// address (or only that one), only that peer's datagrams arrive, and an ICMP
    /// port-unreachable is reported to `error_received` as `ECONNREFUSED` (the endpoint stays
    /// usable). With `allow_broadcast` the socket is not connected and `remote_addr` is only
    /// the default destination. A unix `local_addr` whose file is a stale socket is replaced.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: `sock` with any other option, or a `sock` that is not a
    ///   datagram socket ("A datagram socket was expected"); a unix address with an IP family
    ///   or the other way round, local and remote of different kinds, text that is not an
    ///   address or several hosts; neither an address nor
    ///   a family ("unexpected address family"); addresses that resolve to no common family
    ///   ("... have no address family in common").
    /// - [`Error::Dns`] from resolving; [`Error::Io`] from `socket`, `bind` (`EADDRINUSE`,
    ///   ...) or `connect`, naming the address: the first error when every candidate failed.
    ///
    /// # Example
    ///
    /// ```
    /// use ringloop::{BaseProtocol, DatagramOptions, DatagramProtocol, DatagramTransport};
    /// use socket2::SockAddr;
    ///
    /// struct Echo(Option<DatagramTransport>);
    /// impl BaseProtocol<DatagramTransport> for Echo {
    ///     fn connection_made(&mut self, transport: DatagramTransport) {
    ///         self.0 = Some(transport);
    ///     }
    /// }
    ///
    /// impl DatagramProtocol for Echo {
    ///     fn datagram_received(&mut self, data: &[u8], addr: Option<SockAddr>) {
    ///         let transport = self.0.as_ref().unwrap();
    ///         transport.sendto(data, addr.as_ref()).unwrap();
    ///     }
    /// }
    ///
    /// let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// let reply = ringloop::run(async move {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let options = DatagramOptions::new().local_addr("127.0.0.1:0");
    ///     let (transport, _echo) = lp.create_datagram_endpoint(|| Echo(None), options).await?;
    ///     let server = transport.sockname().and_then(|a| a.as_socket()).unwrap();
    ///     client.send_to(b"ping", server).unwrap();
    ///     // The reply is read on another thread while the loop echoes.
    ///     let reply = lp.run_in_executor(None, move || {
    ///         let mut buf = [0; 16];
    ///         let n = client.recv(&mut buf).unwrap();
    ///         buf[..n].to_vec()
    ///     })?;
    ///     let reply = reply.await?;
    ///     transport.close();
    ///     Ok::<_, ringloop::Error>(reply)
    /// })??;
    /// assert_eq!(reply, b"ping");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn create_datagram_endpoint<P, F>(
        &self,
        protocol_factory: F,
        options: DatagramOptions,
    ) -> Result<(DatagramTransport, Rc<RefCell<P>>)>
    where
        P: DatagramProtocol + 'static,
        F: FnOnce() -> P,
    {
        self.check_open()?;
        let mut options = options;
        let (socket, address) = match options.sock.take() {
            Some(sock) => (adopt_socket(sock, &options)?, None),
            None => {
                let candidates = self.datagram_candidates(&options).await?;
                open_first(candidates, &options)?
            }
        };
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let transport =
            DatagramTransport::start(self, socket, adapt_datagram(protocol.clone()), address)?;
        Ok((transport, protocol))
    }

    /// The `(family, proto, local, remote)` combinations to try, in order.
    async fn datagram_candidates(&self, options: &DatagramOptions) -> Result<Vec<Candidate>> {
        let (local, remote) = (options.local_addr.as_ref(), options.remote_addr.as_ref());
        let unix = |a: Option<&EndpointAddr>| matches!(a, Some(EndpointAddr::Unix(_)));
        let inet = |a: Option<&EndpointAddr>| matches!(a, Some(EndpointAddr::Inet(..)));
        if (unix(local) || unix(remote)) && (inet(local) || inet(remote)) {
            return Err(Error::invalid_argument(
                ArgumentKind::Conflicting,
                format!(
                    "create_datagram_endpoint: local_addr {} and remote_addr {} are of different \
                     address families",
                    endpoint_text(local),
                    endpoint_text(remote)
                ),
            ));
        }
        if local.is_none() && remote.is_none() {
            if options.family == 0 {
                return Err(Error::invalid_argument(
                    ArgumentKind::Missing,
                    "create_datagram_endpoint: unexpected address family: give local_addr, \
                     remote_addr or family",
                ));
            }
            let (family, proto) = (options.family, options.proto);
            return Ok(vec![Candidate { family, proto, local: None, remote: None }]);
        }
        if options.family == libc::AF_UNIX || unix(local) || unix(remote) {
            return unix_candidate(options);
        }
        self.inet_candidates(options).await
    }

    /// Resolves `local_addr` and `remote_addr` and pairs them by `(family, proto)`.
    async fn inet_candidates(&self, options: &DatagramOptions) -> Result<Vec<Candidate>> {
        let hints = AddrInfoHints::new()
            .family(options.family)
            .socktype(libc::SOCK_DGRAM)
            .protocol(options.proto)
            .flags(options.flags);
        let mut pairs: Vec<(FamilyProto, [Option<SocketAddr>; 2])> = Vec::new();
        for (index, addr) in [&options.local_addr, &options.remote_addr].into_iter().enumerate() {
            let Some(EndpointAddr::Inet(address)) = addr else { continue };
            let Some(lookup) = address.single("create_datagram_endpoint")? else { continue };
            for info in self.resolve("create_datagram_endpoint", lookup, hints).await? {
                let key = (info.family, info.protocol);
                let at = match pairs.iter().position(|(k, _)| *k == key) {
                    Some(at) => at,
                    None => {
                        pairs.push((key, [None, None]));
                        pairs.len() - 1
                    }
                };
                pairs[at].1[index].get_or_insert(info.addr);
            }
        }
        let wanted = [options.local_addr.is_some(), options.remote_addr.is_some()];
        let candidates: Vec<Candidate> = pairs
            .into_iter()
            .filter(|(_, addrs)| (0..2).all(|i| !wanted[i] || addrs[i].is_some()))
            .map(|((family, proto), [local, remote])| Candidate {
                family,
                proto,
                local: local.map(SockAddr::from),
                remote: remote.map(SockAddr::from),
            })
            .collect();
        if candidates.is_empty() {
            return Err(Error::invalid_argument(
                ArgumentKind::Conflicting,
                format!(
                    "create_datagram_endpoint: local_addr {} and remote_addr {} have no address \
                     family in common",
                    endpoint_text(options.local_addr.as_ref()),
                    endpoint_text(options.remote_addr.as_ref())
                ),
            ));
        }
        Ok(candidates)
    }
}

/// An optional endpoint as messages show it: its address, or `none`.
fn endpoint_text(addr: Option<&EndpointAddr>) -> String {
    addr.map_or_else(|| "none".to_string(), ToString::to_string)
}

/// The one candidate of an `AF_UNIX` endpoint; a stale socket file at `local_addr` is removed.
fn unix_candidate(options: &DatagramOptions) -> Result<Vec<Candidate>> {
    if options.family != libc::AF_UNIX && options.family != 0 {
        return Err(Error::invalid_argument(
            ArgumentKind::Conflicting,
            format!(
                "create_datagram_endpoint: unix paths need family AF_UNIX, not {}",
                options.family
            ),
        ));
    }
    let path = |addr: &Option<EndpointAddr>| -> Result<Option<SockAddr>> {
        match addr {
            None => Ok(None),
            Some(EndpointAddr::Unix(path)) => SockAddr::unix(path).map(Some).map_err(|e| {
                Error::invalid_argument(
                    ArgumentKind::Malformed,
                    format!("create_datagram_endpoint: unix path {}: {e}", path.display()),
                )
            }),
            Some(other) => Err(Error::invalid_argument(
                ArgumentKind::Conflicting,
                format!(
                    "create_datagram_endpoint: family AF_UNIX needs a unix path, not {other:?}"
                ),
            )),
        }
    };
    let (local, remote) = (path(&options.local_addr)?, path(&options.remote_addr)?);
    if let Some(EndpointAddr::Unix(local)) = &options.local_addr {
        remove_stale_socket(local);
    }
    Ok(vec![Candidate { family: libc::AF_UNIX, proto: options.proto, local, remote }])
}

/// asyncio removes a socket file left at a unix `local_addr` before binding (a dead
/// endpoint's); anything else there is left for `bind` to refuse.
fn remove_stale_socket(path: &Path) {
    if path.as_os_str().as_encoded_bytes().first().is_some_and(|b| *b == 0) {
        return; // abstract: no file
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if let Err(err) = std::fs::remove_file(path) {
                loop_log!(Error, "Unable to remove stale UNIX socket {path:?}: {err}");
            }
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => loop_log!(Error, "Unable to check or remove stale UNIX socket {path:?}: {err}"),
    }
}

/// Checks and prepares a user's `sock`.
fn adopt_socket(sock: OwnedFd, options: &DatagramOptions) -> Result<OwnedFd> {
    let modifiers = options.modifiers();
    if !modifiers.is_empty() {
        return Err(Error::invalid_argument(
            ArgumentKind::Conflicting,
            format!(
                "create_datagram_endpoint: socket options cannot be used with sock ({})",
                modifiers.join(", ")
            ),
        ));
    }
    let socket = socket2::SockRef::from(&sock);
    let what =
        |call: &str| format!("create_datagram_endpoint(sock fd {}): {call}", sock.as_raw_fd());
    let kind = socket.r#type().map_err(|e| Error::io(what("getsockopt(SO_TYPE)"), e))?;
    if kind != Type::DGRAM {
        return Err(Error::invalid_argument(
            ArgumentKind::UnsuitableFd,
            format!("A datagram socket was expected, got fd {} of type {kind:?}", sock.as_raw_fd()),
        ));
    }
    socket.set_nonblocking(true).map_err(|e| Error::io(what("set_nonblocking"), e))?;
    Ok(sock)
}

/// Tries each candidate until one gives a socket: the socket and the transport's `address`.
fn open_first(
    candidates: Vec<Candidate>,
    options: &DatagramOptions,
) -> Result<(OwnedFd, Option<SockAddr>)> {
    let mut first_error = None;
    for candidate in candidates {
        match open_socket(&candidate, options) {
            Ok(socket) => return Ok((socket.into(), candidate.remote)),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error
        .unwrap_or_else(|| Error::invalid_argument(ArgumentKind::Missing, "no address to try")))
}

/// Makes one socket: options, bind, connect. Dropping it on an error closes it.
fn open_socket(candidate: &Candidate, options: &DatagramOptions) -> Result<Socket> {
    let describe = crate::transport::describe_addr;
    let ty = Type::DGRAM.nonblocking().cloexec();
    let proto = (candidate.proto != 0).then(|| SockProtocol::from(candidate.proto));
    let socket = Socket::new(Domain::from(candidate.family), ty, proto).map_err(|e| {
        Error::io(format!("create_datagram_endpoint: socket(family {})", candidate.family), e)
    })?;
    let option = |name: &str, e| Error::io(format!("create_datagram_endpoint: {name}"), e);
    if options.reuse_port {
        socket.set_reuse_port(true).map_err(|e| option("setsockopt(SO_REUSEPORT)", e))?;
    }
    if options.allow_broadcast {
        socket.set_broadcast(true).map_err(|e| option("setsockopt(SO_BROADCAST)", e))?;
    }
    if let Some(local) = &candidate.local {
        socket.bind(local).map_err(|e| {
            let what = format!("error while attempting to bind on address {}", describe(local));
            Error::io(what, e)
        })?;
    }
    if let (Some(remote), false) = (&candidate.remote, options.allow_broadcast) {
        // A datagram connect only sets the default peer: it never blocks.
        socket.connect(remote).map_err(|e| {
            Error::io(format!("create_datagram_endpoint: connect to {}", describe(remote)), e)
        })?;
    }
    Ok(socket)
}
