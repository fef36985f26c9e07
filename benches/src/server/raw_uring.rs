//! The limit: an echo loop on io_uring with no runtime. Multishot accept, then per connection
//! one op at a time (recv into the connection's buffer, send it back, recv again), and one
//! `submit_and_wait(1)` per iteration.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// The accept op's `user_data`; a connection's ops carry its slab key.
const ACCEPT: u64 = u64::MAX;
const BUFFER: usize = 64 * 1024;

/// One accepted connection and its single op in flight.
struct Conn {
    /// The socket; closed when the connection is dropped.
    fd: OwnedFd,
    /// Where recv writes and send reads; the kernel owns it while an op is in flight.
    buf: Box<[u8]>,
    /// Bytes received into `buf` that are being echoed.
    len: usize,
    /// Bytes of `buf[..len]` sent so far.
    sent: usize,
}

/// Serves until the process exits.
pub fn serve(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    // As ringloop does where the kernel allows (6.1+): completions run only inside our own
    // io_uring_enter, no interrupting task work.
    let mut ring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)
        .or_else(|_| IoUring::new(1024))
        .map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let accept =
        opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd())).build().user_data(ACCEPT);
    push(&mut ring, &accept)?;
    announce()?;
    let mut completions: Vec<cqueue::Entry> = Vec::with_capacity(1024);
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
        completions.extend(ring.completion());
        for cqe in completions.drain(..) {
            let res = cqe.result();
            if cqe.user_data() == ACCEPT {
                if res >= 0 {
                    // SAFETY: a successful accept CQE's result is a new fd that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(res) };
                    let _ = crate::sys::set_nodelay(fd.as_raw_fd());
                    let conn =
                        Conn { fd, buf: vec![0; BUFFER].into_boxed_slice(), len: 0, sent: 0 };
                    let key = free.pop().unwrap_or(conns.len());
                    if key == conns.len() {
                        conns.push(None);
                    }
                    let entry = recv(conns[key].insert(conn), key);
                    push(&mut ring, &entry)?;
                }
                if !cqueue::more(cqe.flags()) {
                    push(&mut ring, &accept)?; // the kernel ended the multishot: re-arm it
                }
                continue;
            }
            let key = cqe.user_data() as usize;
            let Some(conn) = conns[key].as_mut() else { continue };
            let next = if res <= 0 {
                None // EOF or error: drop the connection (its one op has just completed)
            } else if conn.len == 0 {
                conn.len = res as usize;
                conn.sent = 0;
                Some(send(conn, key))
            } else {
                conn.sent += res as usize;
                if conn.sent < conn.len {
                    Some(send(conn, key))
                } else {
                    conn.len = 0;
                    Some(recv(conn, key))
                }
            };
            match next {
                Some(entry) => push(&mut ring, &entry)?,
                None => {
                    conns[key] = None;
                    free.push(key);
                }
            }
        }
    }
}

/// A recv into the whole of `conn.buf`.
fn recv(conn: &mut Conn, key: usize) -> squeue::Entry {
    opcode::Recv::new(types::Fd(conn.fd.as_raw_fd()), conn.buf.as_mut_ptr(), BUFFER as u32)
        .build()
        .user_data(key as u64)
}

/// A send of what is left of `conn.buf[..conn.len]`.
fn send(conn: &mut Conn, key: usize) -> squeue::Entry {
    let rest = &conn.buf[conn.sent..conn.len];
    opcode::Send::new(types::Fd(conn.fd.as_raw_fd()), rest.as_ptr(), rest.len() as u32)
        .build()
        .user_data(key as u64)
}

/// Queues `entry`, submitting first when the submission queue is full.
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> Result<(), String> {
    loop {
        // SAFETY: every entry points into a `Conn`'s boxed buffer (or at no buffer: accept).
        // A connection has at most one op in flight and is dropped only when that op's
        // completion arrives, so the buffer and fd outlive the op; the box never moves.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit().map_err(|e| format!("io_uring_enter (queue full): {e}"))?;
    }
}
