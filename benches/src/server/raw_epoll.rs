//! The epoll baseline: an echo loop on epoll with no runtime, the row ringloop's epoll backend
//! is read against. Level-triggered; a connection is watched for input while it has nothing
//! left to send, and for output (input ignored) while a short send left some. Per request: one
//! `recv` and one `send`, plus a share of the iteration's one `epoll_wait`.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
    // SAFETY: `epoll_create1` takes no pointers.
    let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .map_err(|e| format!("epoll_create1: {e}"))?;
    // SAFETY: a successful `epoll_create1` returns a new fd that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
    let epfd = epoll.as_raw_fd();
    watch(epfd, libc::EPOLL_CTL_ADD, listener.as_raw_fd(), libc::EPOLLIN, LISTENER)?;
    announce()?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; BUFFER];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        // SAFETY: `events` has room for `EVENTS` entries, which the kernel fills.
        let ready = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS as i32, -1) };
        let ready = match cvt(ready) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("epoll_wait: {e}")),
        };
        for event in &events[..ready] {
            let token = event.u64;
            if token == LISTENER {
                accept_all(&listener, epfd, &mut conns, &mut free)?;
                continue;
            }
            let key = token as usize;
            let Some(conn) = conns[key].as_mut() else { continue };
            let open = match conn.pending.is_empty() {
                true => echo(conn, &mut buf, epfd, key),
                false => flush(conn, epfd, key),
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
    epfd: RawFd,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) -> Result<(), String> {
    loop {
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: null address pointers ask for no peer address; the result is a new fd.
        let fd = unsafe {
            libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), flags)
        };
        let fd = match cvt(fd) {
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
        watch(epfd, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), libc::EPOLLIN, key as u64)?;
        conns[key] = Some(Conn { fd, pending: Vec::new() });
    }
}

/// Input is ready: one `recv`, sent straight back. False once the connection is to close (EOF
/// or an error).
fn echo(conn: &mut Conn, buf: &mut [u8], epfd: RawFd, key: usize) -> bool {
    // SAFETY: `buf` is writable for its whole length.
    let got = unsafe { libc::recv(conn.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let got = match cvt(got) {
        Ok(0) => return false,
        Ok(n) => n as usize,
        Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
    };
    let Some(sent) = send_some(&conn.fd, &buf[..got]) else { return false };
    if sent < got {
        conn.pending.extend_from_slice(&buf[sent..got]);
        return watch(epfd, libc::EPOLL_CTL_MOD, conn.fd.as_raw_fd(), libc::EPOLLOUT, key as u64)
            .is_ok();
    }
    true
}

/// Output is ready: sends what a short send left; once all is sent, watches for input again.
fn flush(conn: &mut Conn, epfd: RawFd, key: usize) -> bool {
    let Some(sent) = send_some(&conn.fd, &conn.pending) else { return false };
    conn.pending.drain(..sent);
    if !conn.pending.is_empty() {
        return true;
    }
    watch(epfd, libc::EPOLL_CTL_MOD, conn.fd.as_raw_fd(), libc::EPOLLIN, key as u64).is_ok()
}

/// Sends as much of `data` as the socket takes now: the bytes sent, or `None` on an error.
fn send_some(fd: &OwnedFd, data: &[u8]) -> Option<usize> {
    let mut sent = 0;
    while sent < data.len() {
        let rest = &data[sent..];
        // SAFETY: `rest` is readable for its whole length.
        let n = unsafe {
            libc::send(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL)
        };
        match cvt(n) {
            Ok(n) => sent += n as usize,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(sent)
}

/// `epoll_ctl(op)` for `fd` with `events` and `token`.
fn watch(epfd: RawFd, op: i32, fd: RawFd, events: i32, token: u64) -> Result<(), String> {
    let mut event = libc::epoll_event { events: events as u32, u64: token };
    // SAFETY: `event` is a valid epoll_event for the call's duration.
    cvt(unsafe { libc::epoll_ctl(epfd, op, fd, &mut event) })
        .map(drop)
        .map_err(|e| format!("epoll_ctl({op}, fd {fd}): {e}"))
}

/// A libc return value as a `Result`: the OS error when it is negative.
fn cvt<T: Default + PartialOrd>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
