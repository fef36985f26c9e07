//! Panic payloads as text, and the last-resort output for what must be seen.

use std::fmt;

/// A panic payload as text, for [`Error::Panic`](super::Error::Panic) and exception-handler messages.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

/// [`log_or_stderr`] with `format!` arguments, the level named by its `log::Level` variant:
/// `loop_log!(Warn, "fd {fd} leaked")`. For what the loop reports on its own (notices,
/// warnings, errors), which the user must see whether or not a logger is installed.
macro_rules! loop_log {
    ($level:ident, $($arg:tt)+) => {
        $crate::error::log_or_stderr(::log::Level::$level, format_args!($($arg)+))
    };
}
pub(crate) use loop_log;

/// Logs `message` at `level` under the `ringloop` target, or, when no `log` backend is set up,
/// writes it to stderr as `ringloop: <level>: <message>`: Python logging's last-resort handler.
///
/// The rule: "no backend" is `log::max_level() == LevelFilter::Off`, the `log` crate's state
/// until a logger sets a level (every logger crate does when installed). A program that
/// installs a logger and then turns all logging off (`log::set_max_level(Off)`) also gets the
/// stderr line: there is no other way to tell it from no logger at all. A logger that
/// filters out the `ringloop` target by its own rules is obeyed: nothing is printed.
pub(crate) fn log_or_stderr(level: log::Level, message: fmt::Arguments<'_>) {
    if log::max_level() == log::LevelFilter::Off {
        let level = level.as_str().to_ascii_lowercase();
        eprintln!("ringloop: {level}: {message}");
    } else {
        log::log!(target: "ringloop", level, "{message}");
    }
}
