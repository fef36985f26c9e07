//! Python's `repr()` of the values the echo examples print, so their output is the asyncio
//! documentation's character for character.

use std::net::SocketAddr;

use socket2::SockAddr;

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

/// An address as Python prints a socket address (`getpeername()`, a datagram's sender):
/// `('127.0.0.1', 8888)` or `('::1', 8888, 0, 0)`; a unix path as its string; `None` without
/// one.
pub fn py_sockaddr(addr: Option<&SockAddr>) -> String {
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
