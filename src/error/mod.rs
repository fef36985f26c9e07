//! `ringloop::Error`: the typed errors that stand in for asyncio's exceptions.

use std::io;
use std::sync::Arc;

mod convert;
mod display;
mod kinds;
mod report;
#[cfg(test)]
mod tests;

pub use kinds::{ArgumentKind, DnsErrorKind, RuntimeKind, StateKind, TlsErrorKind};
pub(crate) use report::{log_or_stderr, loop_log, panic_message};

/// Shorthand for `Result<T, ringloop::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ringloop, each with a message saying what and why.
///
/// | asyncio | ringloop |
/// |---|---|
/// | `RuntimeError` (loop closed) | [`Error::Closed`] |
/// | `RuntimeError` (misuse: nested run, close while running, stopped early, ...) | [`Error::Runtime`], its [`RuntimeKind`] says which |
/// | `InvalidStateError` | [`Error::InvalidState`] |
/// | `ValueError` / `TypeError` | [`Error::InvalidArgument`] |
/// | `OSError` and subclasses | [`Error::Io`] |
/// | `CancelledError` | [`Error::Cancelled`] |
/// | `TimeoutError` | [`Error::Timeout`] |
/// | an exception raised by a callback or coroutine | [`Error::Panic`] / [`Error::Custom`] |
/// | `ExceptionGroup` | [`Error::Multiple`] |
/// | `socket.gaierror` | [`Error::Dns`] |
/// | `asyncio.IncompleteReadError` | [`Error::IncompleteRead`] |
/// | `asyncio.LimitOverrunError` | [`Error::LimitOverrun`] |
/// | `ssl.SSLError`, `ssl.SSLCertVerificationError` | [`Error::Tls`] |
/// | `asyncio.SendfileNotAvailableError` | [`Error::SendfileNotAvailable`] |
///
/// `Runtime`, `InvalidState` and `InvalidArgument` carry a kind to match ([`RuntimeKind`],
/// [`StateKind`], [`ArgumentKind`]) besides their message, as `Tls` and `Dns` do.
///
/// `Display` says what and why in one line, OS error included (`"connect to /run/app.sock: No
/// such file or directory (os error 2)"`), so `eprintln!("{err}")` is enough;
/// [`source()`](std::error::Error::source) therefore does not return what `Display` already
/// printed (the Rust API guidelines' rule, so chains from `anyhow` and the like name the OS
/// error once): it is `None` for [`Error::Io`] (reach the OS error with
/// [`io_error`](Error::io_error) or [`raw_os_error`](Error::raw_os_error)), and for
/// [`Error::Custom`] the wrapped error's own `source()`. `From<Error> for std::io::Error` maps
/// each variant to an [`io::ErrorKind`].
///
/// `Error` is `Clone` (I/O errors are shared behind an `Arc`) because one future's exception can
/// reach several awaiters, as in asyncio.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Error {
    /// The event loop is closed.
    Closed,
    /// The call is not allowed in the loop's current state (asyncio's `RuntimeError`).
    Runtime {
        /// Which condition, for matching.
        kind: RuntimeKind,
        /// What was refused and why.
        message: String,
    },
    /// A future or task is not in the state the call needs (asyncio's `InvalidStateError`).
    InvalidState {
        /// Which condition, for matching.
        kind: StateKind,
        /// What was refused and why.
        message: String,
    },
    /// An argument is invalid (asyncio's `ValueError`/`TypeError`).
    InvalidArgument {
        /// What is wrong with it, for matching.
        kind: ArgumentKind,
        /// Which call, which argument, and why.
        message: String,
    },
    /// An OS error, with the operation that met it.
    Io {
        /// What was being done ("add_reader(fd 7)", "creating the ring", ...).
        context: String,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// The future or task was cancelled.
    Cancelled,
    /// An operation timed out.
    Timeout(String),
    /// A callback or task panicked; the payload's message.
    Panic(String),
    /// The kernel or the build lacks what the call needs.
    Unsupported(String),
    /// Zero-copy `sendfile` is impossible for this file or transport, and the call was told
    /// not to fall back to copying (asyncio's `SendfileNotAvailableError`); nothing was sent.
    SendfileNotAvailable(String),
    /// An error set by user code (`Future::set_exception`).
    Custom(Arc<dyn std::error::Error + Send + Sync>),
    /// Several errors at once (asyncio's `ExceptionGroup`).
    Multiple(Vec<Error>),
    /// Name resolution failed (asyncio's `socket.gaierror`): why, the `EAI_*` code and
    /// `gai_strerror`'s text, with the host and port asked for.
    Dns {
        /// Why, for matching.
        kind: DnsErrorKind,
        /// The `EAI_*` code (negative on glibc, e.g. `libc::EAI_NONAME`).
        code: i32,
        /// What was asked and what failed: `getaddrinfo(example.invalid:80): Name or service
        /// not known`.
        message: String,
    },
    /// A stream read met EOF before it was done (asyncio's `IncompleteReadError`): what was
    /// read, and how many bytes were expected (`None` when reading up to a separator).
    IncompleteRead {
        /// The bytes read before EOF (no longer buffered).
        partial: Vec<u8>,
        /// The number of bytes asked for; `None` for `readuntil`.
        expected: Option<usize>,
    },
    /// A stream read hit the reader's buffer limit before finding the separator (asyncio's
    /// `LimitOverrunError`); the data stays buffered.
    LimitOverrun {
        /// How many buffered bytes may be skipped (asyncio's `consumed`).
        consumed: usize,
        /// What went over the limit, and the limit.
        message: String,
    },
    /// A TLS connection failed (asyncio's `ssl.SSLError` and `ssl.SSLCertVerificationError`):
    /// the handshake was refused, by us or by the peer, or the peer broke the protocol or cut
    /// the connection short. A handshake that takes too long is an [`Error::Timeout`], as in
    /// asyncio.
    Tls {
        /// Why, for matching.
        kind: TlsErrorKind,
        /// What failed and why, as a log should show it ("certificate not trusted: ...").
        message: String,
    },
}

/// The accessors of the variants that carry a `kind`: `fn name(&self) -> Option<Kind>`, the
/// kind of an `Error::Variant`, `None` for any other variant.
macro_rules! kind_accessors {
    ($($name:ident: $variant:ident => $kind:ty,)*) => {
        impl Error {
            $(
                #[doc = concat!("The kind of an [`Error::", stringify!($variant), "`], if this is one.")]
                pub fn $name(&self) -> Option<$kind> {
                    match self {
                        Error::$variant { kind, .. } => Some(*kind),
                        _ => None,
                    }
                }
            )*
        }
    };
}

kind_accessors! {
    runtime_kind: Runtime => RuntimeKind,
    state_kind: InvalidState => StateKind,
    argument_kind: InvalidArgument => ArgumentKind,
    tls_kind: Tls => TlsErrorKind,
    dns_kind: Dns => DnsErrorKind,
}

impl Error {
    /// An [`Error::Runtime`] of `kind`.
    pub fn runtime(kind: RuntimeKind, message: impl Into<String>) -> Error {
        Error::Runtime { kind, message: message.into() }
    }

    /// An [`Error::InvalidState`] of `kind`.
    pub fn invalid_state(kind: StateKind, message: impl Into<String>) -> Error {
        Error::InvalidState { kind, message: message.into() }
    }

    /// An [`Error::InvalidArgument`] of `kind`.
    pub fn invalid_argument(kind: ArgumentKind, message: impl Into<String>) -> Error {
        Error::InvalidArgument { kind, message: message.into() }
    }

    /// An [`Error::Tls`] of `kind`.
    pub fn tls(kind: TlsErrorKind, message: impl Into<String>) -> Error {
        Error::Tls { kind, message: message.into() }
    }

    /// An [`Error::Dns`] for the `EAI_*` `code`, its kind read from the code.
    pub fn dns(code: i32, message: impl Into<String>) -> Error {
        Error::Dns { kind: DnsErrorKind::from_code(code), code, message: message.into() }
    }

    /// An [`Error::Io`] from `source`, saying what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source: Arc::new(source) }
    }

    /// Wraps any error type as [`Error::Custom`] (asyncio's `set_exception(exc)`).
    pub fn custom(err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Custom(Arc::new(err))
    }

    /// The OS error inside an [`Error::Io`], if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The errno of an [`Error::Io`] from the OS.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    /// True for [`Error::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }
}
