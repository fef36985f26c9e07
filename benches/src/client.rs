//! The load: N connections on one epoll thread, each keeping `pipeline` messages of `size`
//! bytes in flight (ping-pong when 1): a message counts when all its bytes came back, and its
//! latency runs from when it was queued to then.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::histogram::Histogram;
use crate::sys::{syscall, ProcessSample};

/// What one load run is.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Connections.
    pub connections: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// What one measured window saw.
#[derive(Debug)]
pub struct Outcome {
    /// Messages echoed in full within the window.
    pub requests: u64,
    /// The window's actual length.
    pub elapsed: Duration,
    /// Latency of those messages.
    pub latency: Histogram,
    /// The server's CPU time and context switches over the window.
    pub server: ProcessSample,
}

/// One connection's state.
struct Conn {
    stream: TcpStream,
    /// When each message in flight was queued, oldest first.
    in_flight: VecDeque<Instant>,
    /// Bytes queued but not yet written.
    unsent: usize,
    /// Bytes of the oldest in-flight message received so far.
    received: usize,
    /// Whether EPOLLOUT is registered (a write hit WouldBlock).
    want_write: bool,
}

/// Drives `load` against `127.0.0.1:port`; `server_sample` reads the server's CPU time and
/// context switches at the measured window's edges.
pub fn run(
    port: u16,
    load: &Load,
    server_sample: &dyn Fn() -> io::Result<ProcessSample>,
) -> io::Result<Outcome> {
    // SAFETY (in syscall!): epoll_create1 takes no pointers.
    let raw = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
    // SAFETY: a successful epoll_create1 returns a new fd that nothing else owns.
    let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut conns = Vec::with_capacity(load.connections);
    for i in 0..load.connections {
        let stream = connect(port)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), libc::EPOLLIN as u32, i)?;
        conns.push(Conn {
            stream,
            in_flight: VecDeque::new(),
            unsent: 0,
            received: 0,
            want_write: false,
        });
    }
    let payload = vec![0x5au8; load.size.min(256 * 1024)];
    let mut read_buf = vec![0u8; 256 * 1024];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let now = Instant::now();
    for (i, conn) in conns.iter_mut().enumerate() {
        for _ in 0..load.pipeline {
            conn.in_flight.push_back(now);
            conn.unsent += load.size;
        }
        flush(&epoll, conn, i, &payload)?;
    }

    let mut latency = Histogram::default();
    let mut requests = 0u64;
    let warm_until = now + load.warmup;
    let mut measuring: Option<(Instant, ProcessSample)> = None;
    let mut end = warm_until + load.duration;
    loop {
        let now = Instant::now();
        match measuring {
            None if now >= warm_until => {
                measuring = Some((now, server_sample()?));
                end = now + load.duration;
                latency = Histogram::default();
                requests = 0;
            }
            Some(_) if now >= end => break,
            _ => {}
        }
        // SAFETY (in syscall!): `events` is a live buffer of `events.len()` entries.
        let n =
            syscall!(epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 10));
        let n = match n {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(io::Error::new(e.kind(), format!("epoll_wait: {e}"))),
        };
        let now = Instant::now();
        for event in &events[..n] {
            let (flags, i) = (event.events, event.u64 as usize);
            let conn = &mut conns[i];
            if flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                let got = match conn.stream.read(&mut read_buf) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed a connection",
                        ))
                    }
                    Ok(got) => got,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(io::Error::new(e.kind(), format!("read: {e}"))),
                };
                conn.received += got;
                while conn.received >= load.size {
                    conn.received -= load.size;
                    let sent_at = conn.in_flight.pop_front().expect("echoed more than was sent");
                    latency.record(now.duration_since(sent_at).as_nanos() as u64);
                    requests += 1;
                    conn.in_flight.push_back(now);
                    conn.unsent += load.size;
                }
            }
            flush(&epoll, conn, i, &payload)?;
        }
    }
    let (started, before) = measuring.expect("the window started before it ended");
    let server = server_sample()?.since(before);
    Ok(Outcome { requests, elapsed: started.elapsed(), latency, server })
}

/// Connects, retrying for up to a second while the server comes up.
fn connect(port: u16) -> io::Result<TcpStream> {
    let mut attempts = 0;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return Ok(stream),
            Err(e) if attempts < 50 => {
                attempts += 1;
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("connect 127.0.0.1:{port}: {e}")))
            }
        }
    }
}

/// Writes what `conn` has queued; watches for writability while some is left.
fn flush(epoll: &OwnedFd, conn: &mut Conn, key: usize, payload: &[u8]) -> io::Result<()> {
    while conn.unsent > 0 {
        match conn.stream.write(&payload[..conn.unsent.min(payload.len())]) {
            Ok(n) => conn.unsent -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("write: {e}"))),
        }
    }
    let want_write = conn.unsent > 0;
    if want_write != conn.want_write {
        conn.want_write = want_write;
        let out = if want_write { libc::EPOLLOUT as u32 } else { 0 };
        epoll_ctl(
            epoll,
            libc::EPOLL_CTL_MOD,
            conn.stream.as_raw_fd(),
            libc::EPOLLIN as u32 | out,
            key,
        )?;
    }
    Ok(())
}

fn epoll_ctl(epoll: &OwnedFd, op: i32, fd: i32, events: u32, key: usize) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: key as u64 };
    // SAFETY (in syscall!): `event` lives across the call; both fds are open.
    syscall!(epoll_ctl(epoll.as_raw_fd(), op, fd, &mut event))
        .map(drop)
        .map_err(|e| io::Error::new(e.kind(), format!("epoll_ctl(fd {fd}): {e}")))
}
