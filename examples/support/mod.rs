//! Shared by the examples: running one on a loop with clear errors, flag parsing, and Python's
//! `repr()` for the echo examples' output. (Not an example itself: no `main.rs`.)
// Each example uses part of this module.
#![allow(dead_code)]

use std::fmt::Display;
use std::process::ExitCode;

use ringloop::{Backend, EventLoop};

/// Creates a loop with `open`, runs `body` on it, closes it (asyncio's
/// `try: ... finally: loop.close()`), and turns any error into a message on stderr prefixed
/// with `name`, and exit status 1. Never panics on an error.
pub fn run_example(
    name: &str,
    open: impl FnOnce() -> ringloop::Result<EventLoop>,
    body: impl FnOnce(&EventLoop) -> Result<(), String>,
) -> ExitCode {
    let event_loop = match open() {
        Ok(event_loop) => event_loop,
        Err(err) => {
            eprintln!("{name}: cannot create the event loop: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = body(&event_loop);
    let closed = event_loop.close().map_err(|e| format!("close: {e}"));
    match result.and(closed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A loop on `backend`, or the best one (`RINGLOOP_BACKEND` honoured) when `None`.
pub fn open_loop(backend: Option<Backend>) -> ringloop::Result<EventLoop> {
    match backend {
        Some(backend) => EventLoop::with_backend(backend),
        None => EventLoop::new(),
    }
}

/// Parses a flag's value, naming the flag in the error.
pub fn parse_value<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: Display,
{
    value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
}

/// `--backend uring|epoll`.
pub fn parse_backend(name: &str) -> Result<Backend, String> {
    match name {
        "uring" => Ok(Backend::Uring),
        "epoll" => Ok(Backend::Epoll),
        other => Err(format!("--backend must be uring or epoll, not {other:?}")),
    }
}

/// Python's `repr()` of a `str`: single quotes unless the text has `'` and no `"`; `\\`, the
/// quote and control characters escaped.
pub fn py_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x100 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// An address as Python prints a socket's `getpeername()`: `('127.0.0.1', 8888)` or
/// `('::1', 8888, 0, 0)`.
pub fn py_address(addr: Option<std::net::SocketAddr>) -> String {
    match addr {
        Some(std::net::SocketAddr::V4(a)) => format!("('{}', {})", a.ip(), a.port()),
        Some(std::net::SocketAddr::V6(a)) => {
            format!("('{}', {}, {}, {})", a.ip(), a.port(), a.flowinfo(), a.scope_id())
        }
        None => "None".into(),
    }
}

/// An address as Python prints a socket address: `('127.0.0.1', 8888)` or
/// `('::1', 8888, 0, 0)`; a unix path as its string; `None` without one.
pub fn py_sockaddr(addr: Option<&socket2::SockAddr>) -> String {
    use std::net::SocketAddr;
    match addr.and_then(|a| a.as_socket()) {
        Some(SocketAddr::V4(a)) => format!("('{}', {})", a.ip(), a.port()),
        Some(SocketAddr::V6(a)) => {
            format!("('{}', {}, {}, {})", a.ip(), a.port(), a.flowinfo(), a.scope_id())
        }
        None => match addr.and_then(|a| a.as_pathname()) {
            Some(path) => py_repr(&path.to_string_lossy()),
            None => "None".into(),
        },
    }
}
