//! The epoll baseline: an echo loop on epoll with no runtime, the row ringloop's epoll backend
//! is read against. Level-triggered; a connection is watched for input while it has nothing
//! left to send, and for output (input ignored) while a short send left some. Per request: one
//! `recv` and one `send`, plus a share of the iteration's one `epoll_wait`.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::{self, epoll_ctl, syscall};

/// The listener's `u64` in its epoll event; a connection's is its index.
const LISTENER: u64 = u64::MAX;
/// Bytes read at once (the buffer is the loop's, shared: a chunk is echoed before the next read).
const BUFFER: usize = 64 * 1024;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// One accepted connection.
struct Conn {
    /// The socket; closing it also removes it from the epoll set.
    fd: OwnedFd,
    /// Received bytes a short send left behind, in order.
    pending: Vec<u8>,
}

/// Serves until the process exits.
pub fn serve(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| format!("set_nonblocking: {e}"))?;
    let epoll = sys::epoll().map_err(|e| format!("epoll_create1: {e}"))?;
    watch(&epoll, libc::EPOLL_CTL_ADD, &listener, libc::EPOLLIN, LISTENER)?;
    announce()?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; BUFFER];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        // SAFETY (in syscall!): `events` has room for `EVENTS` entries, which the kernel fills.
        let ready = syscall!(epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, -1));
        let ready = match ready {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for event in &events[..ready] {
            let token = event.u64;
            if token == LISTENER {
                accept_all(&listener, &epoll, &mut conns, &mut free)?;
                continue;
            }
            let key = token as usize;
            let Some(conn) = conns[key].as_mut() else { continue };
            let open = match conn.pending.is_empty() {
                true => echo(conn, &mut buf, &epoll, key),
                false => flush(conn, &epoll, key),
            };
            if !open {
                conns[key] = None; // closes the socket
                free.push(key);
            }
        }
    }
}

/// Accepts every waiting connection and watches it for input.
fn accept_all(
    listener: &TcpListener,
    epoll: &OwnedFd,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> Result<(), String> {
    loop {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        let (no_addr, no_len) = (std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY (in syscall!): null address pointers ask for no peer address.
        let fd = match syscall!(accept4(listener.as_raw_fd(), no_addr, no_len, flags)) {
            // SAFETY: a successful accept4 returns a new fd that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(()), // the peer went away before the accept (ECONNABORTED, ...)
        };
        let _ = crate::sys::set_nodelay(fd.as_raw_fd());
        let key = free.pop().unwrap_or(conns.len());
        if key == conns.len() {
            conns.push(None);
        }
        watch(epoll, libc::EPOLL_CTL_ADD, &fd, libc::EPOLLIN, key as u64)?;
        conns[key] = Some(Conn { fd, pending: Vec::new() });
    }
}

/// Input is ready: one `recv`, sent straight back. False once the connection is to close (EOF
/// or an error).
fn echo(conn: &mut Conn, buf: &mut [u8], epoll: &OwnedFd, key: usize) -> bool {
    // SAFETY (in syscall!): `buf` is writable for its whole length.
    let got = match syscall!(recv(conn.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)) {
        Ok(0) => return false,
        Ok(n) => n as usize,
        Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
    };
    let Some(sent) = send_some(&conn.fd, &buf[..got]) else { return false };
    if sent < got {
        conn.pending.extend_from_slice(&buf[sent..got]);
        return watch(epoll, libc::EPOLL_CTL_MOD, &conn.fd, libc::EPOLLOUT, key as u64).is_ok();
    }
    true
}

/// Output is ready: sends what a short send left; once all is sent, watches for input again.
fn flush(conn: &mut Conn, epoll: &OwnedFd, key: usize) -> bool {
    let Some(sent) = send_some(&conn.fd, &conn.pending) else { return false };
    conn.pending.drain(..sent);
    if !conn.pending.is_empty() {
        return true;
    }
    watch(epoll, libc::EPOLL_CTL_MOD, &conn.fd, libc::EPOLLIN, key as u64).is_ok()
}

/// Sends as much of `data` as the socket takes now: the bytes sent, or `None` on an error.
fn send_some(fd: &OwnedFd, data: &[u8]) -> Option<usize> {
    let mut sent = 0;
    while sent < data.len() {
        let rest = &data[sent..];
        // SAFETY (in syscall!): `rest` is readable for its whole length.
        match syscall!(send(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL)) {
            Ok(n) => sent += n as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(sent)
}

/// [`sys::epoll_ctl`] with `events` as `epoll_event` flags, its error as the server's.
fn watch(
    epoll: &OwnedFd,
    op: i32,
    fd: &impl AsRawFd,
    events: i32,
    token: u64,
) -> Result<(), String> {
    epoll_ctl(epoll, op, fd, events as u32, token).map_err(|e| e.to_string())
}
