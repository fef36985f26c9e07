//! The kinds inside [`Error`](super::Error)'s variants: what a caller matches on.

/// Why a TLS connection failed ([`Error::Tls`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The peer's certificate does not chain to a trusted root (or is self-signed).
    UntrustedCertificate,
    /// The server's certificate is not valid for the name asked for (`server_hostname`).
    HostnameMismatch,
    /// The peer's certificate has expired (or is not valid yet).
    ExpiredCertificate,
    /// The peer's certificate is unusable for another reason (revoked, wrong usage, bad
    /// signature, malformed).
    BadCertificate,
    /// The peer refused the handshake or ended the session with a fatal alert.
    PeerAlert,
    /// The peer sent something that is not valid TLS.
    Protocol,
    /// The peer closed the connection without `close_notify`: what it sent may have been cut
    /// short (a truncation attack, or a careless peer).
    Truncated,
    /// Anything else rustls reports (a local configuration problem, say).
    Other,
}

/// Why a name lookup failed ([`Error::Dns`](super::Error::Dns)): the `EAI_*` codes of
/// `getaddrinfo`/`getnameinfo`, by meaning. `EAI_SYSTEM` is not among them: it is an
/// [`Error::Io`](super::Error::Io) carrying the OS error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsErrorKind {
    /// The name is unknown, or has no address (`EAI_NONAME`, `EAI_NODATA`).
    NoName,
    /// A temporary failure: try again later (`EAI_AGAIN`).
    TemporaryFailure,
    /// A permanent failure of the name server (`EAI_FAIL`).
    Fail,
    /// The address family is not supported, or the name has no address of that family
    /// (`EAI_FAMILY`, `EAI_ADDRFAMILY`).
    Family,
    /// The service (port name) is unknown for the socket type (`EAI_SERVICE`).
    Service,
    /// Out of memory (`EAI_MEMORY`).
    Memory,
    /// Another code (`EAI_BADFLAGS`, `EAI_SOCKTYPE`, `EAI_OVERFLOW`, ...): see
    /// [`Error::Dns`](super::Error::Dns)'s `code`.
    Other,
}

/// glibc's `EAI_ADDRFAMILY` (the name has no address of the family asked): the `libc` crate
/// does not export it.
const EAI_ADDRFAMILY: i32 = -9;

impl DnsErrorKind {
    /// The kind of the `EAI_*` `code`.
    pub fn from_code(code: i32) -> DnsErrorKind {
        match code {
            libc::EAI_NONAME | libc::EAI_NODATA => DnsErrorKind::NoName,
            libc::EAI_AGAIN => DnsErrorKind::TemporaryFailure,
            libc::EAI_FAIL => DnsErrorKind::Fail,
            libc::EAI_FAMILY | EAI_ADDRFAMILY => DnsErrorKind::Family,
            libc::EAI_SERVICE => DnsErrorKind::Service,
            libc::EAI_MEMORY => DnsErrorKind::Memory,
            _ => DnsErrorKind::Other,
        }
    }
}
