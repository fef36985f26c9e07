//! [`Address`]: asyncio's `host, port` arguments as one value, for clients and servers alike
//! (with [`Hosts`], a server's several hosts), and its resolution through the loop's own
//! `getaddrinfo`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::dns::{describe_lookup, AddrInfo, AddrInfoHints};
use crate::error::{ArgumentKind, Error, Result};
use crate::event_loop::EventLoop;

/// Where to connect, listen or bind: asyncio's `host` and `port` arguments as one value, taken
/// as `impl Into<Address>` by [`create_connection`](EventLoop::create_connection),
/// [`create_server`](EventLoop::create_server), [`open_connection`](EventLoop::open_connection),
/// [`start_server`](EventLoop::start_server), [`sock_connect`](EventLoop::sock_connect) and the
/// `local_addr`/`remote_addr` options.
///
/// | written as | means |
/// |---|---|
/// | a [`SocketAddr`] (or `SocketAddrV4`, `SocketAddrV6`, `(IpAddr, u16)`) | that address: no lookup |
/// | `"127.0.0.1:8080"`, `"[::1]:80"` | the same, parsed |
/// | `"localhost:80"`, `"[fe80::1%eth0]:80"`, `("localhost", 80)` | a host and a port, resolved with the loop's [`getaddrinfo`](EventLoop::getaddrinfo) |
/// | `(hosts, port)`, `hosts` anything [`Hosts`] converts from: `(["127.0.0.1", "::1"], 80)`, `(None::<&str>, 80)` | several hosts (a server listens on each), or none |
/// | `8080` (a `u16`), `":8080"`, `("", 8080)` | asyncio's `host=None`: every interface for a server, loopback for a client |
/// | [`Address::NONE`] | neither host nor port: the call's `sock` option gives the socket |
///
/// Text that is none of these converts all the same; the call it is given to then fails with
/// [`Error::InvalidArgument`] naming it (no panic, nothing resolved).
///
/// ```
/// use std::net::SocketAddr;
/// use ringloop::Address;
///
/// let parsed = Address::from("127.0.0.1:8080");
/// assert_eq!(parsed, Address::from(SocketAddr::from(([127, 0, 0, 1], 8080))));
/// assert_eq!(Address::from(("localhost", 80)), Address::from("localhost:80"));
/// assert_eq!(Address::from("[::1]:80").to_string(), "[::1]:80");
/// assert_eq!(Address::from(8080).to_string(), "*:8080");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Address(Repr);

/// What an [`Address`] holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// Neither host nor port.
    None,
    /// A socket address, used as is.
    Socket(SocketAddr),
    /// Hosts (names or numeric) and a port, to resolve.
    Host(Hosts, u16),
    /// Text that is not an address: refused by the call it is given to.
    Invalid(String),
}

/// One address to look up: a literal, or a host (`None`: getaddrinfo's `NULL` node) and port.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lookup<'a> {
    /// A socket address: no lookup.
    Socket(SocketAddr),
    /// A host and port for `getaddrinfo`.
    Host(Option<&'a str>, u16),
}

impl Address {
    /// Neither host nor port (asyncio's `host=None, port=None`): for a call whose `sock`
    /// option gives an existing socket.
    pub const NONE: Address = Address(Repr::None);

    /// True for [`Address::NONE`].
    pub(crate) fn is_none(&self) -> bool {
        self.0 == Repr::None
    }

    /// The lookups the address stands for, one per host (none for [`Address::NONE`]);
    /// [`Error::InvalidArgument`] for text that is not an address.
    pub(crate) fn lookups(&self, call: &str) -> Result<Vec<Lookup<'_>>> {
        Ok(match &self.0 {
            Repr::None => Vec::new(),
            Repr::Socket(addr) => vec![Lookup::Socket(*addr)],
            Repr::Host(Hosts::Any, port) => vec![Lookup::Host(None, *port)],
            Repr::Host(Hosts::List(hosts), port) => {
                let names = hosts.iter().map(|h| Some(h.as_str()).filter(|h| !h.is_empty()));
                names.map(|host| Lookup::Host(host, *port)).collect()
            }
            Repr::Invalid(text) => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Malformed,
                    format!(
                    "{call}: {text:?} is not an address: expected HOST:PORT, [IPV6]:PORT or :PORT"
                ),
                ))
            }
        })
    }

    /// The one lookup of a call that connects or binds one socket: `None` for
    /// [`Address::NONE`], [`Error::InvalidArgument`] for several hosts or invalid text.
    pub(crate) fn single(&self, call: &str) -> Result<Option<Lookup<'_>>> {
        let mut lookups = self.lookups(call)?;
        if lookups.len() > 1 {
            let message = format!("{call}: one host expected, got {self}");
            return Err(Error::invalid_argument(ArgumentKind::Conflicting, message));
        }
        Ok(lookups.pop())
    }
}

impl Lookup<'_> {
    /// The host as text (a literal's IP), as TLS's default `server_hostname`.
    pub(crate) fn host(&self) -> Option<String> {
        match self {
            Lookup::Socket(addr) => Some(addr.ip().to_string()),
            Lookup::Host(host, _) => host.map(str::to_owned),
        }
    }
}

impl fmt::Display for Lookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lookup::Socket(addr) => write!(f, "{addr}"),
            Lookup::Host(None, port) => write!(f, "*:{port}"),
            Lookup::Host(host @ Some(_), port) => f.write_str(&describe_lookup(*host, *port)),
        }
    }
}

impl fmt::Display for Address {
    /// `127.0.0.1:8080`, `localhost:80`, `[::1]:80`, `*:8080` (every interface), several
    /// hosts joined by `, `; invalid text as given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::None => f.write_str("no address"),
            Repr::Invalid(text) => f.write_str(text),
            _ => {
                let lookups = self.lookups("").unwrap_or_default();
                for (index, lookup) in lookups.iter().enumerate() {
                    let separator = if index == 0 { "" } else { ", " };
                    write!(f, "{separator}{lookup}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// `text` read as an address (see [`Address`]).
fn parse(text: &str) -> Repr {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Repr::Socket(addr);
    }
    let invalid = || Repr::Invalid(text.to_owned());
    let Some((host, port)) = text.rsplit_once(':') else { return invalid() };
    let Ok(port) = port.parse::<u16>() else { return invalid() };
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(bracketed) => bracketed,
        // An unbracketed IPv6 host is ambiguous ("::1:80").
        None if host.contains(':') => return invalid(),
        None => host,
    };
    if host.contains(['[', ']']) {
        return invalid();
    }
    Repr::Host(Hosts::from(host), port)
}

impl From<&str> for Address {
    fn from(text: &str) -> Address {
        Address(parse(text))
    }
}

impl From<String> for Address {
    fn from(text: String) -> Address {
        Address(parse(&text))
    }
}

impl From<&String> for Address {
    fn from(text: &String) -> Address {
        Address(parse(text))
    }
}

impl From<&Address> for Address {
    fn from(address: &Address) -> Address {
        address.clone()
    }
}

impl From<u16> for Address {
    /// A port on every interface (asyncio's `host=None`).
    fn from(port: u16) -> Address {
        Address(Repr::Host(Hosts::Any, port))
    }
}

impl<H: Into<Hosts>> From<(H, u16)> for Address {
    fn from((hosts, port): (H, u16)) -> Address {
        Address(Repr::Host(hosts.into(), port))
    }
}

/// `From` a socket address type, stored as a [`SocketAddr`].
macro_rules! address_from_socket {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Address {
            fn from(addr: $ty) -> Address {
                Address(Repr::Socket(SocketAddr::from(addr)))
            }
        }
    )*};
}

address_from_socket!(
    SocketAddr,
    SocketAddrV4,
    SocketAddrV6,
    (IpAddr, u16),
    (Ipv4Addr, u16),
    (Ipv6Addr, u16)
);

impl EventLoop {
    /// The addresses `lookup` stands for with `hints`: a literal as is, a host through
    /// [`getaddrinfo`](EventLoop::getaddrinfo). A literal of a family the hints exclude goes
    /// to `getaddrinfo` too, for its error (or its `AI_V4MAPPED` answer). An empty answer is
    /// an [`Error::Io`] naming `call` and the address.
    pub(crate) async fn resolve(
        &self,
        call: &str,
        lookup: Lookup<'_>,
        hints: AddrInfoHints,
    ) -> Result<Vec<AddrInfo>> {
        let found = match lookup {
            Lookup::Socket(addr) => match literal_info(addr, &hints) {
                Some(info) => vec![info],
                None => self.getaddrinfo(Some(&addr.ip().to_string()), addr.port(), hints).await?,
            },
            Lookup::Host(host, port) => self.getaddrinfo(host, port, hints).await?,
        };
        if found.is_empty() {
            let error = io::Error::other("no address found");
            return Err(Error::io(format!("{call}: getaddrinfo({lookup})"), error));
        }
        Ok(found)
    }
}

/// What `getaddrinfo` answers for a numeric `addr` with `hints` (the socket type asked, its
/// usual protocol), without asking it; `None` when the hints ask for the other family.
fn literal_info(addr: SocketAddr, hints: &AddrInfoHints) -> Option<AddrInfo> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    if hints.family != libc::AF_UNSPEC && hints.family != family {
        return None;
    }
    let protocol = match (hints.protocol, hints.socktype) {
        (0, libc::SOCK_STREAM) => libc::IPPROTO_TCP,
        (0, libc::SOCK_DGRAM) => libc::IPPROTO_UDP,
        (protocol, _) => protocol,
    };
    Some(AddrInfo { family, socktype: hints.socktype, protocol, canonname: None, addr })
}

/// The hosts of an [`Address`] (asyncio's `host` argument), built with
/// `into()`: `(hosts, port).into()` is an address with several hosts, or none.
///
/// `None`, `""` and [`Hosts::Any`] mean every interface: one socket per address family the
/// wildcard resolves to. A `&str`/`String` is one host; a `Vec` or array is several, and
/// duplicate addresses give one socket each (an empty string in a list also means "any").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Hosts {
    /// Every interface.
    #[default]
    Any,
    /// These hosts (names or numeric addresses).
    List(Vec<String>),
}

impl From<&str> for Hosts {
    fn from(host: &str) -> Hosts {
        if host.is_empty() {
            Hosts::Any
        } else {
            Hosts::List(vec![host.to_owned()])
        }
    }
}

impl From<String> for Hosts {
    fn from(host: String) -> Hosts {
        Hosts::from(host.as_str())
    }
}

impl From<&String> for Hosts {
    fn from(host: &String) -> Hosts {
        Hosts::from(host.as_str())
    }
}

impl<T: Into<Hosts>> From<Option<T>> for Hosts {
    fn from(host: Option<T>) -> Hosts {
        host.map_or(Hosts::Any, Into::into)
    }
}

impl<S: AsRef<str>> From<Vec<S>> for Hosts {
    fn from(hosts: Vec<S>) -> Hosts {
        Hosts::List(hosts.iter().map(|h| h.as_ref().to_owned()).collect())
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Hosts {
    fn from(hosts: [S; N]) -> Hosts {
        Hosts::List(hosts.iter().map(|h| h.as_ref().to_owned()).collect())
    }
}

impl<S: AsRef<str>> From<&[S]> for Hosts {
    fn from(hosts: &[S]) -> Hosts {
        Hosts::List(hosts.iter().map(|h| h.as_ref().to_owned()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(host: &str, port: u16) -> Repr {
        Repr::Host(Hosts::from(host), port)
    }

    #[test]
    fn text_forms() {
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(parse("127.0.0.1:8080"), Repr::Socket("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(parse("[::1]:80"), Repr::Socket(v6));
        assert_eq!(parse("localhost:80"), host("localhost", 80));
        assert_eq!(parse("[fe80::1%eth0]:80"), host("fe80::1%eth0", 80));
        assert_eq!(parse(":8080"), Repr::Host(Hosts::Any, 8080));
        for bad in
            ["", "localhost", "localhost:", "localhost:http", "host:65536", "::1:80", "[::1]"]
        {
            assert_eq!(parse(bad), Repr::Invalid(bad.into()), "{bad:?}");
        }
        assert_eq!(parse("a]:80"), Repr::Invalid("a]:80".into()));
    }

    #[test]
    fn display_is_rust_idiom() {
        assert_eq!(Address::from(("::1", 80)).to_string(), "[::1]:80");
        assert_eq!(Address::from((["a", "b"], 1)).to_string(), "a:1, b:1");
        assert_eq!(Address::from((None::<&str>, 5)).to_string(), "*:5");
        assert_eq!(Address::from((&String::from("h"), 5)), Address::from("h:5"));
        assert_eq!(format!("{:?}", Address::from("x:1")), "Address(x:1)");
    }

    #[test]
    fn single_refuses_several_hosts_and_bad_text() {
        assert!(Address::NONE.single("call").unwrap().is_none());
        let several = Address::from((["a", "b"], 1));
        let refused = several.single("call").unwrap_err();
        assert_eq!(refused.argument_kind(), Some(ArgumentKind::Conflicting), "{refused}");
        match Address::from("nonsense").single("connect") {
            Err(err @ Error::InvalidArgument { .. }) => {
                assert_eq!(err.argument_kind(), Some(ArgumentKind::Malformed));
                assert!(err.to_string().starts_with("connect: \"nonsense\""), "{err}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn literal_info_is_what_getaddrinfo_gives() {
        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let hints = AddrInfoHints::new().socktype(libc::SOCK_DGRAM);
        let info = literal_info(addr, &hints).unwrap();
        assert_eq!((info.family, info.protocol), (libc::AF_INET, libc::IPPROTO_UDP));
        assert!(literal_info(addr, &hints.family(libc::AF_INET6)).is_none());
    }
}
