//! Name resolution: `getaddrinfo` and `getnameinfo`, run on the default executor.
//!
//! [`EventLoop::getaddrinfo`] and [`EventLoop::getnameinfo`] are asyncio's coroutines of the
//! same names: libc's blocking calls, moved onto the loop's default executor so the loop keeps
//! running. Results and errors are what `socket.getaddrinfo` / `socket.getnameinfo` give.
//!
//! # Implementation
//!
//! `getnameinfo` is the `dns_lookup` crate's, which fails (an [`Error::Io`]) on a host or
//! service name that is not UTF-8. `getaddrinfo` calls libc directly: `dns_lookup`'s panics on
//! a canonical name that is not UTF-8, where this module converts it lossily, as it converts
//! nothing else (glibc gives names from DNS as ASCII, so only a hosts file or another NSS source
//! can hold such a name). Both report libc's failures through `dns_lookup`'s `LookupError`,
//! which carries the `EAI_*` code and `gai_strerror`'s text (and, for `EAI_SYSTEM`, `errno`).
//!
//! A numeric host (an IPv4 or IPv6 literal, with an optional `%scope`) with a numeric or no
//! port is resolved on the loop thread, without a thread hop, by `numeric_lookup`. That
//! fast path mirrors glibc's `gaih_inet` for the inputs it accepts and declines everything
//! else (`None`), which then goes to libc: it is an optimisation that never changes a result.
//! The unit test `fast_path_equals_libc` checks it against libc over a grid of inputs. It is
//! compiled only for glibc (`target_env = "gnu"`); elsewhere every lookup goes to libc.

use std::ffi::{CStr, CString};
use std::fmt;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ptr;

use dns_lookup::LookupError;

use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;

/// One result of [`EventLoop::getaddrinfo`]: one `struct addrinfo` of libc's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// Address family (`libc::AF_INET` or `libc::AF_INET6`).
    pub family: i32,
    /// Socket type (`libc::SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, ...).
    pub socktype: i32,
    /// Protocol (`libc::IPPROTO_TCP`, `IPPROTO_UDP`, 0, ...).
    pub protocol: i32,
    /// The canonical name: set on the first result only, and only with `AI_CANONNAME`.
    pub canonname: Option<String>,
    /// The address; for IPv6 with its flow info and scope id as libc gave them.
    pub addr: SocketAddr,
}

/// What [`EventLoop::getaddrinfo`] should look for: the `hints` of libc's `getaddrinfo`
/// (asyncio's `family`, `type`, `proto` and `flags` arguments).
///
/// `Default` is all zeros: any family (`AF_UNSPEC`), any socket type and protocol, no flags.
///
/// ```
/// use ringloop::net::dns::AddrInfoHints;
///
/// let hints = AddrInfoHints::new().family(libc::AF_INET).socktype(libc::SOCK_STREAM);
/// assert_eq!((hints.family, hints.socktype, hints.protocol, hints.flags), (2, 1, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrInfoHints {
    /// `ai_family`: `AF_UNSPEC` (0), `AF_INET` or `AF_INET6`.
    pub family: i32,
    /// `ai_socktype`: 0 for any, or `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_RAW`, ...
    pub socktype: i32,
    /// `ai_protocol`: 0 for any, or `IPPROTO_TCP`, `IPPROTO_UDP`, ...
    pub protocol: i32,
    /// `ai_flags`: `AI_PASSIVE`, `AI_CANONNAME`, `AI_NUMERICHOST`, `AI_NUMERICSERV`, ...
    pub flags: i32,
}

impl AddrInfoHints {
    /// All zeros: the same as `AddrInfoHints::default()`.
    pub fn new() -> AddrInfoHints {
        AddrInfoHints::default()
    }

    setters! {
        family: i32,
        socktype: i32,
        protocol: i32,
        flags: i32,
    }
}

/// The port argument of [`EventLoop::getaddrinfo`] (libc's `service`), built with `into()`
/// from a `u16`, a `&str` (a number or a service name such as `"http"`) or an `Option<&str>`
/// (`None` is [`Service::Any`], a `NULL` service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service<'a> {
    /// No service (`NULL`): results have port 0.
    Any,
    /// A port number, passed to libc as its decimal text.
    Port(u16),
    /// A service name or number as text, passed to libc as is.
    Name(&'a str),
}

impl From<u16> for Service<'_> {
    fn from(port: u16) -> Self {
        Service::Port(port)
    }
}

impl<'a> From<&'a str> for Service<'a> {
    fn from(name: &'a str) -> Self {
        Service::Name(name)
    }
}

impl<'a> From<Option<&'a str>> for Service<'a> {
    fn from(name: Option<&'a str>) -> Self {
        name.map_or(Service::Any, Service::Name)
    }
}

impl fmt::Display for Service<'_> {
    /// The port or service name as given (`80`, `http`); `any port` for [`Service::Any`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Any => f.write_str("any port"),
            Service::Port(port) => write!(f, "{port}"),
            Service::Name(name) => f.write_str(name),
        }
    }
}

/// A name lookup as messages show it, in Rust's address idiom: `example.com:80`,
/// `[::1]:http` (an IPv6 host in brackets), `example.com` (no port), `port 80` (no host).
pub(crate) fn describe_lookup<'a>(host: Option<&str>, service: impl Into<Service<'a>>) -> String {
    match (host, service.into()) {
        (None, Service::Any) => "no host, any port".to_string(),
        (None, service) => format!("port {service}"),
        (Some(host), Service::Any) => host.to_string(),
        (Some(host), service) if host.contains(':') => format!("[{host}]:{service}"),
        (Some(host), service) => format!("{host}:{service}"),
    }
}

impl Service<'_> {
    /// The service as libc's text (`None` for `NULL`).
    fn to_text(self) -> Option<String> {
        match self {
            Service::Any => None,
            Service::Port(port) => Some(port.to_string()),
            Service::Name(name) => Some(name.to_owned()),
        }
    }
}

impl EventLoop {
    /// Resolves `host` and `port` into socket addresses (asyncio's `loop.getaddrinfo`): the
    /// list libc's `getaddrinfo` returns, in libc's order.
    ///
    /// `host` is `None` for a `NULL` node (the wildcard address with `AI_PASSIVE`, else
    /// loopback); `""` is passed to libc as is, which rejects it, as `socket.getaddrinfo`
    /// does. `port` is a `u16`, a `&str` (number or service name) or `None::<&str>`.
    ///
    /// Numeric hosts with a numeric or no port are answered at once, on the loop thread;
    /// everything else runs libc's `getaddrinfo` on the default executor.
    ///
    /// # Errors
    ///
    /// [`Error::Dns`] with the `EAI_*` code for libc's failures (asyncio's `socket.gaierror`),
    /// naming the host and port asked; [`Error::Io`] for `EAI_SYSTEM`;
    /// [`Error::InvalidArgument`] if `host` or `port` holds a NUL byte; [`Error::Runtime`] if
    /// the lookup needs the default executor after `shutdown_default_executor`.
    ///
    /// # Example
    ///
    /// ```
    /// use ringloop::net::dns::AddrInfoHints;
    ///
    /// let addrs = ringloop::run(async {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     let hints = AddrInfoHints::new().socktype(libc::SOCK_STREAM);
    ///     event_loop.getaddrinfo(Some("127.0.0.1"), 8080, hints).await
    /// })
    /// .unwrap()?;
    /// assert_eq!(addrs.len(), 1);
    /// assert_eq!(addrs[0].addr, "127.0.0.1:8080".parse().unwrap());
    /// assert_eq!((addrs[0].family, addrs[0].protocol), (libc::AF_INET, libc::IPPROTO_TCP));
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn getaddrinfo<'a>(
        &self,
        host: Option<&str>,
        port: impl Into<Service<'a>>,
        hints: AddrInfoHints,
    ) -> Result<Vec<AddrInfo>> {
        self.check_open()?;
        let service = port.into();
        if let Some(found) = host.and_then(|host| numeric_lookup(host, service, &hints)) {
            return Ok(found);
        }
        let host = host.map(str::to_owned);
        let service = service.to_text();
        self.run_in_executor(None, move || {
            blocking_getaddrinfo(host.as_deref(), service.as_deref(), &hints)
        })?
        .await?
    }

    /// Turns `addr` into a host name and a service name (asyncio's `loop.getnameinfo`): libc's
    /// `getnameinfo` with `flags` (`NI_NUMERICHOST`, `NI_NUMERICSERV`, `NI_NAMEREQD`, ...),
    /// run on the default executor.
    ///
    /// # Errors
    ///
    /// [`Error::Dns`] with the `EAI_*` code, naming the address; [`Error::Io`] for
    /// `EAI_SYSTEM` and for a host or service name that is not UTF-8; [`Error::Runtime`] after
    /// `shutdown_default_executor`.
    ///
    /// ```
    /// let names = ringloop::run(async {
    ///     let event_loop = ringloop::get_running_loop().unwrap();
    ///     let flags = libc::NI_NUMERICHOST | libc::NI_NUMERICSERV;
    ///     event_loop.getnameinfo("127.0.0.1:80".parse().unwrap(), flags).await
    /// })
    /// .unwrap()?;
    /// assert_eq!(names, ("127.0.0.1".to_string(), "80".to_string()));
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn getnameinfo(&self, addr: SocketAddr, flags: i32) -> Result<(String, String)> {
        self.check_open()?;
        self.run_in_executor(None, move || blocking_getnameinfo(addr, flags))?.await?
    }
}

/// libc's `getaddrinfo`, blocking: the whole list, freed before returning.
pub(crate) fn blocking_getaddrinfo(
    host: Option<&str>,
    service: Option<&str>,
    hints: &AddrInfoHints,
) -> Result<Vec<AddrInfo>> {
    let what = || format!("getaddrinfo({})", describe_lookup(host, service));
    let to_c = |text: Option<&str>, name: &str| -> Result<Option<CString>> {
        text.map(CString::new).transpose().map_err(|_| {
            Error::invalid_argument(
                ArgumentKind::Malformed,
                format!("{}: {name} contains a NUL byte", what()),
            )
        })
    };
    let c_host = to_c(host, "host")?;
    let c_service = to_c(service, "port")?;
    // SAFETY: `addrinfo` is plain old data; all zeros (null pointers) is a valid value.
    let mut c_hints: libc::addrinfo = unsafe { mem::zeroed() };
    c_hints.ai_family = hints.family;
    c_hints.ai_socktype = hints.socktype;
    c_hints.ai_protocol = hints.protocol;
    c_hints.ai_flags = hints.flags;
    let mut list = AddrInfoList(ptr::null_mut());
    // SAFETY: the strings are NUL-terminated and outlive the call; `c_hints` is a valid
    // addrinfo; `list.0` receives a list that `AddrInfoList` frees exactly once.
    let code = unsafe {
        libc::getaddrinfo(
            c_host.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            c_service.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            &c_hints,
            &mut list.0,
        )
    };
    if code != 0 {
        return Err(lookup_error(what(), LookupError::new(code)));
    }
    Ok(list.to_vec())
}

/// libc's `getnameinfo` through `dns_lookup`, blocking.
pub(crate) fn blocking_getnameinfo(addr: SocketAddr, flags: i32) -> Result<(String, String)> {
    dns_lookup::getnameinfo(&addr, flags)
        .map_err(|err| lookup_error(format!("getnameinfo({addr}, flags {flags:#x})"), err))
}

/// What `dns_lookup`'s error messages put before `gai_strerror`'s text.
const LOOKUP_PREFIX: &str = "failed to lookup address information: ";

/// The failure `err` of a call described by `what` as an [`Error`]: an [`Error::Dns`] with the
/// `EAI_*` code and `gai_strerror`'s text; an [`Error::Io`] for `EAI_SYSTEM` (with the OS error
/// `dns_lookup` read right after the call) and for errors that are not libc's (code 0).
fn lookup_error(what: String, err: LookupError) -> Error {
    match err.error_num() {
        0 | libc::EAI_SYSTEM => Error::io(what, err.into()),
        code => {
            let text = err.to_string();
            let text = text.strip_prefix(LOOKUP_PREFIX).unwrap_or(&text);
            Error::dns(code, format!("{what}: {text}"))
        }
    }
}

/// Owns the list libc's `getaddrinfo` returned and frees it when dropped, whatever path
/// the caller leaves by.
struct AddrInfoList(*mut libc::addrinfo);

impl AddrInfoList {
    /// The list as [`AddrInfo`]s, in order. Entries of families other than IPv4 and IPv6
    /// (which glibc does not return) are skipped.
    fn to_vec(&self) -> Vec<AddrInfo> {
        let mut found = Vec::new();
        let mut node = self.0;
        while !node.is_null() {
            // SAFETY: `node` is an entry of the list libc returned, alive until `self` drops.
            let ai = unsafe { &*node };
            // SAFETY: libc gives `ai_addr` pointing at `ai_addrlen` bytes of a socket address.
            if let Some(addr) = unsafe { from_sockaddr(ai.ai_addr, ai.ai_addrlen) } {
                let canonname = (!ai.ai_canonname.is_null()).then(|| {
                    // SAFETY: a non-null `ai_canonname` is a NUL-terminated string of the list.
                    let name = unsafe { CStr::from_ptr(ai.ai_canonname) };
                    name.to_string_lossy().into_owned()
                });
                found.push(AddrInfo {
                    family: ai.ai_family,
                    socktype: ai.ai_socktype,
                    protocol: ai.ai_protocol,
                    canonname,
                    addr,
                });
            }
            node = ai.ai_next;
        }
        found
    }
}

impl Drop for AddrInfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a non-null pointer here came from a successful `getaddrinfo` and has not
            // been freed: only this drop frees it.
            unsafe { libc::freeaddrinfo(self.0) };
        }
    }
}

/// A `std` address from a C socket address; `None` if it is not IPv4 or IPv6 or too short.
///
/// # Safety
///
/// `addr` must be null or point to `len` readable bytes.
unsafe fn from_sockaddr(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if addr.is_null() || (len as usize) < mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: `addr` points to at least the family field (checked above); unaligned reads
    // make no assumption on alignment.
    let family = unsafe { ptr::read_unaligned(ptr::addr_of!((*addr).sa_family)) };
    match i32::from(family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the caller's `len` covers a whole `sockaddr_in`.
            let sin = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the caller's `len` covers a whole `sockaddr_in6`.
            let sin6 = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The flags `numeric_lookup` knows to leave a numeric lookup unchanged (given the family
/// checks it makes). `AI_ADDRCONFIG`, the IDN flags and unknown bits go to libc.
#[cfg(target_env = "gnu")]
const FAST_FLAGS: i32 = libc::AI_PASSIVE
    | libc::AI_CANONNAME
    | libc::AI_NUMERICHOST
    | libc::AI_NUMERICSERV
    | libc::AI_V4MAPPED
    | libc::AI_ALL;

/// The answer glibc's `getaddrinfo` gives for a numeric `host`, computed without libc, or
/// `None` when the inputs are outside what this mirrors (the caller then asks libc).
///
/// Covered: an IPv4 literal in strict dotted-decimal or an IPv6 literal (with `%scope`, a
/// number or, for link-local addresses, an interface name) of the requested family; a numeric
/// or no service; socket types and protocols of glibc's default TCP, UDP and raw entries.
#[cfg(target_env = "gnu")]
fn numeric_lookup(
    host: &str,
    service: Service<'_>,
    hints: &AddrInfoHints,
) -> Option<Vec<AddrInfo>> {
    if hints.flags & !FAST_FLAGS != 0 {
        return None;
    }
    let port = match service {
        Service::Any => None,
        Service::Port(port) => Some(port),
        Service::Name(text) => Some(numeric_port(text)?),
    };
    let ip = parse_ip_literal(host)?;
    let (family, addr) = match ip {
        IpLiteral::V4(ip) if matches!(hints.family, libc::AF_UNSPEC | libc::AF_INET) => {
            (libc::AF_INET, SocketAddr::V4(SocketAddrV4::new(ip, port.unwrap_or(0))))
        }
        IpLiteral::V6(ip, scope) if matches!(hints.family, libc::AF_UNSPEC | libc::AF_INET6) => {
            let addr = SocketAddrV6::new(ip, port.unwrap_or(0), 0, scope);
            (libc::AF_INET6, SocketAddr::V6(addr))
        }
        _ => return None, // family errors and V4MAPPED results: libc's business
    };
    let kinds = socket_kinds(hints.socktype, hints.protocol, port.is_some())?;
    let mut found: Vec<AddrInfo> = kinds
        .into_iter()
        .map(|(socktype, protocol)| AddrInfo { family, socktype, protocol, canonname: None, addr })
        .collect();
    if hints.flags & libc::AI_CANONNAME != 0 {
        found[0].canonname = Some(host.to_owned());
    }
    Some(found)
}

/// Without glibc the fast path is not proven: every lookup goes to libc.
#[cfg(not(target_env = "gnu"))]
fn numeric_lookup(_: &str, _: Service<'_>, _: &AddrInfoHints) -> Option<Vec<AddrInfo>> {
    None
}

/// The (socktype, protocol) entries glibc's `gaih_inet_typeproto` table yields for the hints,
/// limited to its TCP, UDP and raw entries; `None` for anything else (including errors).
#[cfg(target_env = "gnu")]
fn socket_kinds(socktype: i32, protocol: i32, has_service: bool) -> Option<Vec<(i32, i32)>> {
    use libc::{IPPROTO_TCP as TCP, IPPROTO_UDP as UDP, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM};
    Some(match (socktype, protocol) {
        (0, 0) => vec![(SOCK_STREAM, TCP), (SOCK_DGRAM, UDP), (SOCK_RAW, 0)],
        (0 | SOCK_STREAM, TCP) | (SOCK_STREAM, 0) => vec![(SOCK_STREAM, TCP)],
        (0 | SOCK_DGRAM, UDP) | (SOCK_DGRAM, 0) => vec![(SOCK_DGRAM, UDP)],
        // The raw entry takes any protocol, and no service (EAI_SERVICE: left to libc).
        (SOCK_RAW, 0..=255) if !has_service => vec![(SOCK_RAW, protocol)],
        _ => return None,
    })
}

/// A service that glibc's `strtoul` reads as a port equal to it: 1 to 5 ASCII digits, at most
/// 65535. Signs, spaces, empty text and larger numbers are left to libc.
#[cfg(target_env = "gnu")]
fn numeric_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A parsed numeric host.
#[cfg(target_env = "gnu")]
enum IpLiteral {
    /// Strict dotted-decimal IPv4 (glibc also takes `127.1`, hex and octal: those go to libc).
    V4(Ipv4Addr),
    /// IPv6 with the scope id of its `%scope` suffix (0 without one).
    V6(Ipv6Addr, u32),
}

/// `host` as an IP literal the way glibc reads it, or `None` when unsure.
#[cfg(target_env = "gnu")]
fn parse_ip_literal(host: &str) -> Option<IpLiteral> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(IpLiteral::V4(ip));
    }
    let (ip, scope) = match host.split_once('%') {
        Some((ip, scope)) => (ip.parse::<Ipv6Addr>().ok()?, Some(scope)),
        None => (host.parse::<Ipv6Addr>().ok()?, None),
    };
    let scope_id = match scope {
        None => 0,
        Some(scope) => scope_id(&ip, scope)?,
    };
    Some(IpLiteral::V6(ip, scope_id))
}

/// glibc's `__inet6_scopeid_pton`: for link-local unicast and node- or link-local multicast
/// addresses an interface name first, then (for all) a decimal number that fits in `u32`.
#[cfg(target_env = "gnu")]
fn scope_id(ip: &Ipv6Addr, scope: &str) -> Option<u32> {
    let [a, b, ..] = ip.octets();
    let link_local = (a == 0xfe && b & 0xc0 == 0x80) || (a == 0xff && matches!(b & 0x0f, 1 | 2));
    if link_local {
        let name = CString::new(scope).ok()?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index != 0 {
            return Some(index);
        }
    }
    if scope.is_empty() || !scope.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    scope.parse::<u64>().ok().and_then(|n| u32::try_from(n).ok())
}

#[cfg(all(test, target_env = "gnu"))]
mod tests;
