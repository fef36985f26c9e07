//! The kinds inside [`Error`](super::Error)'s variants: what a caller matches on.

/// Which misuse an [`Error::Runtime`](super::Error::Runtime) reports (asyncio's
/// `RuntimeError`s, told apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeKind {
    /// `run_forever`/`run_until_complete` on a loop that is already running.
    LoopRunning,
    /// `close` on a running loop.
    CloseRunningLoop,
    /// Running a loop while another loop runs on this thread.
    OtherLoopRunning,
    /// The call needs a loop running on this thread and none is (`get_running_loop`,
    /// `sleep`, `spawn`, ...).
    NoRunningLoop,
    /// `get_event_loop` with no loop running or set on this thread.
    NoCurrentLoop,
    /// The loop stopped before the future given to `run_until_complete` (or a loop thread's
    /// `main`) completed.
    StoppedBeforeComplete,
    /// A future of one loop awaited in a task of another.
    DifferentLoop,
    /// The server is closed (`start_serving`, `serve_forever`).
    ServerClosed,
    /// `serve_forever` while another `serve_forever` of the same server runs.
    AlreadyServing,
    /// The transport is closing or closed (`sendfile`, `start_tls`).
    TransportClosing,
    /// A write after `write_eof`.
    WriteAfterEof,
    /// A write, or a second `sendfile`, while a `sendfile` runs on the transport.
    SendfileInProgress,
    /// A call on a transport handle that `start_tls` handed over to TLS.
    HandedOverToTls,
    /// `start_tls` on a transport that already speaks TLS.
    AlreadyTls,
    /// New work for an executor that was shut down.
    ExecutorShutdown,
    /// A signal that cannot be caught (SIGKILL, SIGSTOP, libc's reserved ones).
    UncatchableSignal,
    /// Anything rarer (a protocol's `get_buffer` returning an empty buffer, a loop thread
    /// dying at start, errors made by user code): see the message.
    Other,
}

/// Which state an [`Error::InvalidState`](super::Error::InvalidState) found (asyncio's
/// `InvalidStateError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateKind {
    /// The future or task is already done (`set_result`, `set_exception` twice).
    AlreadyDone,
    /// The future or task is not done yet (`result`, `exception` while pending).
    NotDone,
    /// The output was already moved out by an earlier await or wait.
    AlreadyTaken,
}

/// What is wrong with an argument ([`Error::InvalidArgument`](super::Error::InvalidArgument),
/// asyncio's `ValueError`/`TypeError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArgumentKind {
    /// A NaN delay, time or timeout.
    NotANumber,
    /// A number outside what the call takes (a signal number, a limit of 0, water marks the
    /// wrong way round, a size too large ...).
    OutOfRange,
    /// Something the call needs is not given, or is empty (no path and no sock, an empty set
    /// of tasks, an empty separator, no TLS config ...).
    Missing,
    /// Arguments or options that exclude each other (host and sock, a sock with socket
    /// options, addresses of different families, an option only meaningful with another ...).
    Conflicting,
    /// An fd that is not what the call needs: negative, a socket of the wrong family or
    /// type, a blocking socket, a file of the wrong kind.
    UnsuitableFd,
    /// Text that cannot be passed on: a NUL byte, a unix path too long, an unknown name.
    Malformed,
    /// A TLS configuration or session rustls refused.
    Tls,
    /// Anything rarer: see the message.
    Other,
}

/// Why a TLS connection failed ([`Error::Tls`](super::Error::Tls)).
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
