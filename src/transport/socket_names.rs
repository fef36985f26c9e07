//! A socket transport's addresses, read once at creation (asyncio caches `peername` and
//! `sockname` too, so `get_extra_info` answers after the close): kept compact, because every
//! connection holds them.

use std::net::SocketAddr;

use socket2::{SockAddr, SockRef};

/// One cached address: an internet address inline (as small as `SocketAddr`), any other
/// (a Unix path) boxed — a `SockAddr` is a whole `sockaddr_storage`, 128 bytes.
#[derive(Clone)]
enum Name {
    /// IPv4 or IPv6.
    Inet(SocketAddr),
    /// Anything else.
    Other(Box<SockAddr>),
}

impl Name {
    fn of(addr: SockAddr) -> Name {
        match addr.as_socket() {
            Some(inet) => Name::Inet(inet),
            None => Name::Other(Box::new(addr)),
        }
    }

    fn to_sock_addr(&self) -> SockAddr {
        match self {
            Name::Inet(inet) => SockAddr::from(*inet),
            Name::Other(addr) => (**addr).clone(),
        }
    }
}

/// The local and peer addresses of a socket at creation.
#[derive(Clone, Default)]
pub(crate) struct SocketNames {
    /// `getpeername`, if connected.
    peer: Option<Name>,
    /// `getsockname`.
    sock: Option<Name>,
}

impl SocketNames {
    /// Reads both addresses of `socket` now (absent ones are `None`).
    pub(crate) fn of(socket: &SockRef<'_>) -> SocketNames {
        SocketNames {
            peer: socket.peer_addr().ok().map(Name::of),
            sock: socket.local_addr().ok().map(Name::of),
        }
    }

    /// The peer's address, if the socket was connected.
    pub(crate) fn peer(&self) -> Option<SockAddr> {
        self.peer.as_ref().map(Name::to_sock_addr)
    }

    /// True when the socket was connected.
    pub(crate) fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    /// True when the local address is IPv4 or IPv6.
    pub(crate) fn is_inet(&self) -> bool {
        matches!(self.sock, Some(Name::Inet(_)))
    }

    /// The local address.
    pub(crate) fn sock(&self) -> Option<SockAddr> {
        self.sock.as_ref().map(Name::to_sock_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_back_as_they_were_and_stay_small() {
        let listener = std::net::TcpListener::bind("[::1]:0")
            .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let names = SocketNames::of(&SockRef::from(&client));
        assert_eq!(names.peer().and_then(|a| a.as_socket()), Some(listener.local_addr().unwrap()));
        assert_eq!(names.sock().and_then(|a| a.as_socket()), Some(client.local_addr().unwrap()));
        let dir = std::env::temp_dir().join(format!("ringloop-names-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let names = SocketNames::of(&SockRef::from(&unix));
        assert_eq!(names.sock().and_then(|a| a.as_pathname().map(Into::into)), Some(dir.clone()));
        assert!(!names.has_peer());
        std::fs::remove_file(&dir).unwrap();
        assert!(std::mem::size_of::<SocketNames>() <= 64, "{}", std::mem::size_of::<SocketNames>());
    }
}
