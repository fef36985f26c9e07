//! `Display` and `std::error::Error` for [`Error`]: one line that says what and why, and a
//! `source()` that never repeats it.

use std::fmt;

use super::Error;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Closed => f.write_str("the event loop is closed"),
            Error::Runtime { message, .. }
            | Error::InvalidState { message, .. }
            | Error::InvalidArgument { message, .. }
            | Error::Dns { message, .. }
            | Error::LimitOverrun { message, .. }
            | Error::Tls { message, .. } => f.write_str(message),
            Error::Timeout(msg) | Error::Unsupported(msg) | Error::SendfileNotAvailable(msg) => {
                f.write_str(msg)
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::IncompleteRead { partial, expected: Some(expected) } => {
                write!(f, "{} bytes read on a total of {expected} expected bytes", partial.len())
            }
            Error::IncompleteRead { partial, expected: None } => {
                write!(f, "{} bytes read before EOF, without the separator", partial.len())
            }
            Error::Cancelled => f.write_str("cancelled"),
            Error::Panic(msg) => write!(f, "panicked: {msg}"),
            Error::Custom(err) => err.fmt(f),
            Error::Multiple(errors) => {
                f.write_str("multiple errors: ")?;
                for (i, err) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    err.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    /// What `Display` did not print: `None` for [`Error::Io`] (its `Display` ends with the OS
    /// error), and the wrapped error's own source for [`Error::Custom`] (whose `Display` is the
    /// wrapped error's).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Custom(err) => err.source(),
            _ => None,
        }
    }
}
