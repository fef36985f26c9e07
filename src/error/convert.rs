//! Conversions between [`Error`] and `std::io::Error`.

use std::io;
use std::sync::Arc;

use super::{DnsErrorKind, Error, TlsErrorKind};

/// The context `From<io::Error>` gives: an error that says nothing more than its OS error,
/// turned back into that error unchanged.
const NO_CONTEXT: &str = "I/O error";

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Error {
        Error::io(NO_CONTEXT, err)
    }
}

/// For code that speaks `std::io` (an `AsyncRead` adapter, a `?` in an `io::Result`
/// function). An [`Error::Io`] keeps its [`io::ErrorKind`]; one made by `From<io::Error>`
/// (no context of its own) comes back as that very error, errno included; one with a context
/// becomes an `io::Error` of the same kind whose payload is the ringloop error, so its text
/// keeps the context, and `get_ref()` downcast to [`Error`] gives back the errno
/// ([`Error::raw_os_error`]). The other variants: `Timeout` → `TimedOut`, `InvalidArgument` →
/// `InvalidInput`, `Cancelled` → `Other` (not `Interrupted`, which `std::io` loops retry),
/// `Closed` → `NotConnected`, `Unsupported` and `SendfileNotAvailable` → `Unsupported`,
/// `IncompleteRead` → `UnexpectedEof`, `LimitOverrun` → `InvalidData`, `Tls` → `InvalidData`
/// (`UnexpectedEof` for a truncated session), `Dns` → `NotFound` for an unknown name, else
/// `Other`; the rest `Other`. The payload is always the ringloop error.
impl From<Error> for io::Error {
    fn from(err: Error) -> io::Error {
        if let Error::Io { context, source } = err {
            return match Arc::try_unwrap(source) {
                Ok(source) if context == NO_CONTEXT => source,
                Ok(source) => io::Error::new(source.kind(), Error::io(context, source)),
                Err(source) => io::Error::new(source.kind(), Error::Io { context, source }),
            };
        }
        io::Error::new(io_kind(&err), err)
    }
}

/// The [`io::ErrorKind`] of any variant but `Io`.
fn io_kind(err: &Error) -> io::ErrorKind {
    match err {
        Error::Io { source, .. } => source.kind(),
        Error::Timeout(_) => io::ErrorKind::TimedOut,
        Error::InvalidArgument { .. } => io::ErrorKind::InvalidInput,
        Error::Closed => io::ErrorKind::NotConnected,
        Error::Unsupported(_) | Error::SendfileNotAvailable(_) => io::ErrorKind::Unsupported,
        Error::IncompleteRead { .. } => io::ErrorKind::UnexpectedEof,
        Error::Tls { kind: TlsErrorKind::Truncated, .. } => io::ErrorKind::UnexpectedEof,
        Error::LimitOverrun { .. } | Error::Tls { .. } => io::ErrorKind::InvalidData,
        Error::Dns { kind: DnsErrorKind::NoName, .. } => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    }
}
