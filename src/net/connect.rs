//! `create_connection`: resolve, connect (one address after another, or Happy Eyeballs), and
//! wrap the connected socket in a stream [`Transport`].
//!
//! # Implementation
//!
//! As asyncio's `base_events.create_connection`: the addresses `getaddrinfo` gives are
//! optionally interleaved by family (`interleave_by_family`), then tried by a
//! `staggered::staggered_race` — with no delay that is plain
//! one-after-another. Each attempt owns its socket; an attempt that fails, loses the race or is
//! dropped closes it, after its in-flight `Connect` op has been cancelled.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use socket2::{Domain, Protocol as SockProtocol, SockAddr, Socket, Type};

use super::address::{Address, Lookup};
use super::dns::{AddrInfo, AddrInfoHints};
use super::staggered::{staggered_race, Attempt};
use crate::driver::{Op, SockAddrBuf};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::{EventLoop, OpFuture};
use crate::protocol::adapt;
use crate::protocol::AnyProtocol;
use crate::tls::TlsConfig;
use crate::transport::Transport;

/// The keyword arguments of [`EventLoop::create_connection`] (asyncio's `ssl`, `family`,
/// `proto`, `flags`, `sock`, `local_addr`, `server_hostname`, `ssl_handshake_timeout`,
/// `ssl_shutdown_timeout`, `happy_eyeballs_delay`, `interleave`, `all_errors`).
///
/// `Default` is asyncio's defaults: any family, no socket, no local address, no Happy Eyeballs.
///
/// ```
/// use ringloop::ConnectOptions;
///
/// let options = ConnectOptions::new().family(libc::AF_INET).happy_eyeballs_delay(0.25);
/// assert_eq!(options.happy_eyeballs_delay, Some(0.25));
/// assert_eq!(options.interleave, None); // 1 in effect, as Happy Eyeballs is on
/// ```
#[derive(Debug, Default)]
pub struct ConnectOptions {
    /// Speak TLS with this client config ([`TlsConfig::default_client`] is asyncio's
    /// `ssl=True`); the call then returns once the handshake is done.
    pub ssl: Option<TlsConfig>,
    /// `getaddrinfo`'s `ai_family` for `host` (and `local_addr`): 0 (any), `AF_INET`, `AF_INET6`.
    pub family: i32,
    /// `getaddrinfo`'s `ai_protocol`: 0 (any) or `IPPROTO_TCP`.
    pub proto: i32,
    /// `getaddrinfo`'s `ai_flags` (`AI_*`).
    pub flags: i32,
    /// An already connected stream socket to use instead of an address (which must then be
    /// [`Address::NONE`]); the transport takes ownership of it.
    pub sock: Option<OwnedFd>,
    /// The address to bind the socket to before connecting, resolved like the address
    /// connected to, with the same `family`.
    pub local_addr: Option<Address>,
    /// The name to check the server's certificate against, and send as SNI (only with
    /// `ssl`). Defaults to `host`; required when there is no `host` (with `sock`). An empty
    /// name sends no SNI and checks no name: the config must then check none either
    /// ([`TlsConfig::dangerous_client_without_hostname_check`], which allows
    /// man-in-the-middle attacks).
    pub server_hostname: Option<String>,
    /// Seconds the TLS handshake may take before the connection is aborted with an
    /// [`Error::Timeout`] (default 60; only with `ssl`).
    pub ssl_handshake_timeout: Option<f64>,
    /// Seconds the closing `close_notify` exchange may take before the connection is
    /// aborted (default 30; only with `ssl`).
    pub ssl_shutdown_timeout: Option<f64>,
    /// Enables Happy Eyeballs (RFC 8305): seconds to wait for an attempt before starting the
    /// next in parallel (the RFC recommends 0.25).
    pub happy_eyeballs_delay: Option<f64>,
    /// Interleave addresses by family, the first family `interleave` times first (RFC 8305's
    /// "First Address Family Count"); 0 keeps libc's order. Defaults to 1 with Happy Eyeballs,
    /// else 0.
    pub interleave: Option<usize>,
    /// On failure, return every error as [`Error::Multiple`] (even just one).
    pub all_errors: bool,
}

impl ConnectOptions {
    /// The defaults: the same as `ConnectOptions::default()`.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    setters! {
        family: i32,
        proto: i32,
        flags: i32,
        /// Sets `sock` (an already connected stream socket).
        sock: Some(into OwnedFd),
        /// Sets `local_addr`: anything [`Address`] converts from (`"127.0.0.1:0"`,
        /// `("localhost", 0)`, a `SocketAddr`, ...).
        local_addr: Some(into Address),
        /// Sets `happy_eyeballs_delay` (seconds).
        happy_eyeballs_delay: Some(f64),
        interleave: Some(usize),
        all_errors: bool,
    }

    tls_setters!(client);
}

impl EventLoop {
    /// Opens a TCP connection to `address` and wraps it in a transport driving
    /// `protocol_factory()`'s protocol (asyncio's `loop.create_connection`). Returns the
    /// transport and the protocol; `connection_made` runs at the next iteration. The protocol
    /// is a [`Protocol`](crate::Protocol) or a [`BufferedProtocol`](crate::BufferedProtocol).
    ///
    /// `address` is anything [`Address`] converts from: `"127.0.0.1:8080"`, `"[::1]:80"`,
    /// `"localhost:80"`, `("localhost", 80)`, a `SocketAddr` (asyncio's `host, port`). A host
    /// is resolved with `getaddrinfo` (numeric hosts without a thread hop) and the addresses
    /// are tried in order — or raced, with `happy_eyeballs_delay` — until one connects. With
    /// `options.sock`, that connected socket is used instead (the address must then be
    /// [`Address::NONE`]). `TCP_NODELAY` is set on TCP connections.
    ///
    /// With `options.ssl` the connection speaks TLS (see [`crate::tls`]): the call returns
    /// once the handshake is done, just after the protocol's `connection_made`, and the
    /// transport has the same interface over TLS.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`]: text that is not an address, several hosts, `sock`
    ///   together with an address, neither of the two, a `sock` that is not a stream socket, a `happy_eyeballs_delay` that is negative or NaN;
    ///   `server_hostname` or a TLS timeout without `ssl`, `ssl` without `server_hostname`
    ///   and without a host, a server config, a timeout that is not a positive number.
    /// - With `ssl`, the handshake's error: [`Error::Tls`] naming the reason (an untrusted
    ///   or expired certificate, a hostname mismatch, a peer that refused or does not speak
    ///   TLS), [`Error::Timeout`] after `ssl_handshake_timeout`, [`Error::Io`] if the peer
    ///   closed the connection; the connection is closed.
    /// - [`Error::Dns`] from resolving `host` or `local_addr`; [`Error::Io`] if either
    ///   resolves to nothing.
    /// - Every address failed: the one error if there was one, or all had the same message;
    ///   else an [`Error::Io`] "every address failed: ..." listing them. With `all_errors`:
    ///   [`Error::Multiple`] holding each. Connect errors keep their errno (`ECONNREFUSED`
    ///   ...) and name the address; bind errors (`EADDRINUSE` ...) name the local address.
    /// - [`Error::Timeout`] "create_connection failed" if no attempt finished and none failed.
    ///
    /// # Example
    ///
    /// ```
    /// use std::io::Read;
    /// use ringloop::{BaseProtocol, ConnectOptions, Protocol, Transport};
    ///
    /// struct Hello;
    /// impl BaseProtocol for Hello {
    ///     fn connection_made(&mut self, transport: Transport) {
    ///         transport.write(b"hello").unwrap();
    ///         transport.close();
    ///     }
    /// }
    /// impl Protocol for Hello {}
    ///
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = listener.local_addr()?.port();
    /// let peer = std::thread::spawn(move || {
    ///     let (mut stream, _) = listener.accept().unwrap();
    ///     let mut got = String::new();
    ///     stream.read_to_string(&mut got).unwrap();
    ///     got
    /// });
    /// let peername = ringloop::run(async move {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let address = ("127.0.0.1", port);
    ///     let (transport, _hello) =
    ///         lp.create_connection(|| Hello, address, ConnectOptions::new()).await?;
    ///     Ok::<_, ringloop::Error>(transport.peername())
    /// })??;
    /// assert_eq!(peername.and_then(|a| a.as_socket()).map(|a| a.port()), Some(port));
    /// assert_eq!(peer.join().unwrap(), "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn create_connection<K, P, F>(
        &self,
        protocol_factory: F,
        address: impl Into<Address>,
        options: ConnectOptions,
    ) -> Result<(Transport, Rc<RefCell<P>>)>
    where
        P: AnyProtocol<K>,
        F: FnOnce() -> P,
    {
        self.check_open()?;
        let address = address.into();
        let lookup = address.single("create_connection")?;
        let mut options = options;
        let host = lookup.as_ref().and_then(Lookup::host);
        let tls = options.tls_args("create_connection").client(host.as_deref())?;
        if let Some(delay) = options.happy_eyeballs_delay {
            if delay.is_nan() || delay < 0.0 {
                return Err(Error::invalid_argument(
                    ArgumentKind::OutOfRange,
                    format!(
                        "create_connection: happy_eyeballs_delay must be a non-negative number of \
                     seconds, got {delay}"
                    ),
                ));
            }
        }
        let socket =
            match (lookup, options.sock.take()) {
                (Some(_), Some(_)) => return Err(Error::invalid_argument(
                    ArgumentKind::Conflicting,
                    "create_connection: host/port and sock can not be specified at the same time",
                )),
                (None, None) => {
                    return Err(Error::invalid_argument(
                        ArgumentKind::Missing,
                        "create_connection: host and port was not specified and no sock specified",
                    ))
                }
                (None, Some(sock)) => sock,
                (Some(lookup), None) => self.connect_socket(lookup, &options).await?,
            };
        let protocol = Rc::new(RefCell::new(protocol_factory()));
        let app = adapt(protocol.clone());
        Ok((self.open_stream(socket, app, tls, "create_connection").await?, protocol))
    }

    /// Resolves, then connects to the first address that accepts: the connected socket.
    async fn connect_socket(
        &self,
        lookup: Lookup<'_>,
        options: &ConnectOptions,
    ) -> Result<OwnedFd> {
        let hints = AddrInfoHints::new()
            .family(options.family)
            .socktype(libc::SOCK_STREAM)
            .protocol(options.proto)
            .flags(options.flags);
        let infos = self.resolve("create_connection", lookup, hints).await?;
        let local_addr = options.local_addr.as_ref().unwrap_or(&Address::NONE);
        let local = match local_addr.single("create_connection: local_addr")? {
            Some(local) => Some(Rc::new(self.resolve("create_connection", local, hints).await?)),
            None => None,
        };
        self.connect_any(infos, local, options).await
    }

    /// Connects to one of `infos` (in order, or raced with Happy Eyeballs), each socket bound
    /// to a `local` address of its family if given: the connected socket.
    async fn connect_any(
        &self,
        mut infos: Vec<AddrInfo>,
        local: Option<Rc<Vec<AddrInfo>>>,
        options: &ConnectOptions,
    ) -> Result<OwnedFd> {
        let delay = options.happy_eyeballs_delay;
        let interleave = options.interleave.unwrap_or(if delay.is_some() { 1 } else { 0 });
        if interleave > 0 {
            infos = interleave_by_family(infos, interleave, |info| info.family);
        }
        let factories = infos
            .into_iter()
            .map(|info| {
                let (event_loop, local) = (self.clone(), local.clone());
                move || connect_attempt(event_loop, info, local)
            })
            .collect();
        self.race_attempts(factories, delay, options.all_errors).await
    }

    /// Runs the attempts as a staggered race: the winner's socket, or the errors combined
    /// (see [`combine_errors`]). A non-OS error ([`AttemptError::Fatal`]) ends the race at
    /// once and is returned as it is, even with `all_errors`, as in asyncio.
    async fn race_attempts<Fut, F>(
        &self,
        factories: Vec<F>,
        delay: Option<f64>,
        all_errors: bool,
    ) -> Result<OwnedFd>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<OwnedFd, AttemptError>>,
    {
        let ends_race = |err: &AttemptError| matches!(err, AttemptError::Fatal(_));
        let outcome = staggered_race(self, factories, delay, ends_race).await?;
        if let Some((_, socket)) = outcome.winner {
            return Ok(socket);
        }
        let mut errors = Vec::new();
        for attempt in outcome.attempts {
            match attempt {
                Attempt::Failed(AttemptError::Fatal(error)) => return Err(error),
                Attempt::Failed(AttemptError::Os(failed)) => errors.extend(failed),
                Attempt::Won | Attempt::Cancelled => {}
            }
        }
        Err(combine_errors(errors, all_errors))
    }
}

/// How one connect attempt failed.
#[derive(Debug)]
enum AttemptError {
    /// OS errors (asyncio's `OSError`: [`Error::Io`]): recorded, and the next address tried.
    Os(Vec<Error>),
    /// Any other error (asyncio: a non-`OSError` exception): it ends `create_connection` at
    /// once, unwrapped.
    Fatal(Error),
}

impl From<Error> for AttemptError {
    fn from(error: Error) -> AttemptError {
        match error {
            Error::Io { .. } => AttemptError::Os(vec![error]),
            other => AttemptError::Fatal(other),
        }
    }
}

/// A connect in flight and its socket. Dropping it cancels the op and hands the socket to the
/// driver to close (the contract's `close_fd`): a `Connect` the kernel may still hold names the
/// socket's number, so only the driver may close it, once that op is withdrawn or ended, and
/// no later socket that gets the same number can be connected by it.
pub(super) struct InFlight {
    /// The loop whose driver runs the op.
    pub(super) event_loop: EventLoop,
    /// The `Connect` op (taken when it completes or on drop).
    pub(super) op: Option<OpFuture>,
    /// The socket being connected (taken on success).
    pub(super) socket: Option<Socket>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        drop(self.op.take());
        if let Some(socket) = self.socket.take() {
            // Without a driver the closure, and the socket with it, is dropped: closed at once.
            let fd = OwnedFd::from(socket);
            self.event_loop.with_driver(move |driver| driver.close_fd(fd));
        }
    }
}

/// One attempt: a socket for `info`, bound to a `local` address of its family if asked, then
/// connected. Every error met is returned (several bind errors, or one connect error).
///
/// Closing the socket of a failed or cancelled attempt cannot hide its error: it is closed by
/// dropping it, which ignores `close(2)`'s result (asyncio: an `OSError` from `sock.close()`
/// in cleanup is swallowed so the original error propagates).
async fn connect_attempt(
    event_loop: EventLoop,
    info: AddrInfo,
    local: Option<Rc<Vec<AddrInfo>>>,
) -> std::result::Result<OwnedFd, AttemptError> {
    let ty = Type::STREAM.nonblocking().cloexec();
    let protocol = Some(SockProtocol::from(info.protocol));
    let socket = Socket::new(Domain::from(info.family), ty, protocol).map_err(|e| {
        let what =
            format!("create_connection: socket({}) for {}", family_name(info.family), info.addr);
        AttemptError::Os(vec![Error::io(what, e)])
    })?;
    if let Some(local) = local {
        bind_local(&socket, info.family, &local).map_err(AttemptError::Os)?;
    }
    let op = Op::Connect { fd: socket.as_raw_fd(), addr: sockaddr_buf(&info.addr.into()) };
    let op = event_loop.submit_op(op)?;
    let mut in_flight = InFlight { event_loop, op: Some(op), socket: Some(socket) };
    let (result, _op) = in_flight.op.as_mut().expect("set just above").await;
    in_flight.op = None;
    match result {
        Ok(_) => Ok(in_flight.socket.take().expect("set until success").into()),
        Err(err) => {
            let error = Error::io(format!("Connect call failed {}", info.addr), err);
            Err(AttemptError::Os(vec![error]))
        }
    }
}

/// Binds `socket` to the first address of `local` in `family` that works.
fn bind_local(
    socket: &Socket,
    family: i32,
    local: &[AddrInfo],
) -> std::result::Result<(), Vec<Error>> {
    let mut errors = Vec::new();
    for candidate in local.iter().filter(|candidate| candidate.family == family) {
        match socket.bind(&candidate.addr.into()) {
            Ok(()) => return Ok(()),
            Err(err) => {
                let what = format!("error while attempting to bind on address {}", candidate.addr);
                errors.push(Error::io(what, err));
            }
        }
    }
    if errors.is_empty() {
        let why = format!("no matching local address with family={} found", family_name(family));
        errors.push(Error::io("create_connection", io::Error::other(why)));
    }
    Err(errors)
}

/// `AF_INET`, `AF_INET6`, or the number.
fn family_name(family: i32) -> String {
    match family {
        libc::AF_INET => "AF_INET".into(),
        libc::AF_INET6 => "AF_INET6".into(),
        other => other.to_string(),
    }
}

/// `addr` in a driver-owned buffer for `Op::Connect`.
pub(super) fn sockaddr_buf(addr: &SockAddr) -> Box<SockAddrBuf> {
    let mut buf = SockAddrBuf::empty();
    let len = addr.len();
    debug_assert!(len as usize <= std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `addr.as_ptr()` points at `len` initialised bytes (a `SockAddr` is stored in a
    // `sockaddr_storage`, so `len` fits the destination); the destination is our own, distinct
    // `sockaddr_storage`, and any bytes are a valid `sockaddr_storage`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&mut buf.storage as *mut libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        );
    }
    buf.len = len;
    buf
}

/// The single error `create_connection` reports for `errors` (asyncio's rules, item 63).
fn combine_errors(mut errors: Vec<Error>, all_errors: bool) -> Error {
    if errors.is_empty() {
        return Error::Timeout("create_connection failed".into());
    }
    if all_errors {
        return Error::Multiple(errors);
    }
    let model = errors[0].to_string();
    if errors.iter().all(|err| err.to_string() == model) {
        return errors.swap_remove(0);
    }
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let message = format!("every address failed: {}", listed.join("; "));
    Error::io("create_connection", io::Error::other(message))
}

/// Groups `items` by family (first seen first) and interleaves the groups, after taking
/// `first_family_count - 1` extra items of the first family (asyncio's
/// `_interleave_addrinfos`): v6,v6,v4,v4 with 1 gives v6,v4,v6,v4.
pub(crate) fn interleave_by_family<T>(
    items: Vec<T>,
    first_family_count: usize,
    family: impl Fn(&T) -> i32,
) -> Vec<T> {
    let mut groups: Vec<(i32, std::collections::VecDeque<T>)> = Vec::new();
    for item in items {
        let key = family(&item);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push_back(item),
            None => groups.push((key, std::collections::VecDeque::from([item]))),
        }
    }
    let mut reordered = Vec::new();
    if let Some((_, first)) = groups.first_mut() {
        let extra = first_family_count.saturating_sub(1).min(first.len());
        reordered.extend(first.drain(..extra));
    }
    while groups.iter().any(|(_, group)| !group.is_empty()) {
        for (_, group) in &mut groups {
            reordered.extend(group.pop_front());
        }
    }
    reordered
}

#[cfg(test)]
mod tests;
