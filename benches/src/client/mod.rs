//! The load: one epoll thread holding N connections to each server, driving one server at a
//! time. In a server's window each of its connections keeps `pipeline` messages in flight
//! (ping-pong when 1; what a message is, echo bytes or an HTTP request, is [`Messages`]): a
//! message counts when its whole reply came back, and its latency runs from when it was
//! queued to then. A connection writes all it has queued in one write. Between windows the
//! active server's messages are drained, so the next server starts alone.
//!
//! Windows are short and the caller alternates servers, so a slow patch of the shared machine
//! (seconds long) falls on all of them alike instead of on whichever ran then.
//!
//! A connection is a [`Link`]: plain TCP, or TLS over it for the `tls` command.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::histogram::Histogram;
use crate::sys::{self, epoll_ctl, syscall, ProcessSample};

mod link;
mod messages;

pub use link::Link;
pub use messages::{Echo, Http, Messages};

/// What one load window is.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Connections per server.
    pub connections: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// Unmeasured time at the start of each window.
    pub warmup: Duration,
    /// The measured part of each window.
    pub duration: Duration,
}

/// What one measured window saw.
#[derive(Debug)]
pub struct Outcome {
    /// Messages answered in full within the window.
    pub requests: u64,
    /// The window's actual length.
    pub elapsed: Duration,
    /// Latency of those messages.
    pub latency: Histogram,
    /// The server's CPU time and context switches over the window.
    pub server: ProcessSample,
}

/// How long draining a server's messages after its window may take.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// One connection's state.
struct Conn<R> {
    stream: Link,
    /// When each message in flight was queued, oldest first.
    in_flight: VecDeque<Instant>,
    /// Bytes queued but not yet written.
    unsent: usize,
    /// Where in a request the next byte to write is.
    offset: usize,
    /// What is known of the reply being received.
    replies: R,
    /// Whether EPOLLOUT is registered (a write hit WouldBlock).
    want_write: bool,
}

/// Connections to every server, on one epoll instance.
pub struct Client<M: Messages> {
    epoll: OwnedFd,
    /// `servers[s][i]`: connection `i` to server `s` (epoll key `s << 32 | i`).
    servers: Vec<Vec<Conn<M::Replies>>>,
    load: Load,
    messages: M,
    /// Requests back to back (at least 256 KiB of them), what writes take their bytes from.
    payload: Vec<u8>,
    read_buf: Vec<u8>,
}

/// Where a window is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Echoed messages are sent again but not counted.
    Warmup,
    /// Echoed messages are counted and sent again.
    Measure,
    /// Echoed messages are not sent again.
    Drain,
}

/// What echoed messages are counted into.
struct Tally {
    requests: u64,
    latency: Histogram,
}

impl<M: Messages> Client<M> {
    /// Opens `load.connections` connections to each of `ports` (127.0.0.1), over TLS with
    /// `tls`.
    pub fn connect(
        ports: &[u16],
        load: &Load,
        messages: M,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> io::Result<Client<M>> {
        let epoll = sys::epoll()?;
        let mut servers = Vec::with_capacity(ports.len());
        for (s, &port) in ports.iter().enumerate() {
            let mut conns = Vec::with_capacity(load.connections);
            for i in 0..load.connections {
                let stream = connect(port)?;
                stream.set_nodelay(true)?;
                let stream = Link::new(stream, tls)?;
                epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, &stream, libc::EPOLLIN as u32, key(s, i))?;
                conns.push(Conn {
                    stream,
                    in_flight: VecDeque::new(),
                    unsent: 0,
                    offset: 0,
                    replies: M::Replies::default(),
                    want_write: false,
                });
            }
            servers.push(conns);
        }
        let payload = messages.request().repeat((256 * 1024 / messages.request().len()).max(1));
        Ok(Client {
            epoll,
            servers,
            load: *load,
            messages,
            payload,
            read_buf: vec![0u8; 256 * 1024],
        })
    }

    /// One window on server `server`: warm-up, the measured part (with `sample` read at its
    /// edges), then a drain of its messages.
    pub fn window(
        &mut self,
        server: usize,
        sample: &dyn Fn() -> io::Result<ProcessSample>,
    ) -> io::Result<Outcome> {
        let (now, size) = (Instant::now(), self.messages.request().len());
        for i in 0..self.servers[server].len() {
            let conn = &mut self.servers[server][i];
            for _ in 0..self.load.pipeline {
                conn.in_flight.push_back(now);
                conn.unsent += size;
            }
            self.flush(server, i)?;
        }
        // Only `Measure` counts into it: warm-up and drain leave it alone.
        let mut tally = Tally { requests: 0, latency: Histogram::default() };
        self.turn_until(server, Phase::Warmup, now + self.load.warmup, &mut tally)?;
        let (started, before) = (Instant::now(), sample()?);
        self.turn_until(server, Phase::Measure, started + self.load.duration, &mut tally)?;
        let (elapsed, after) = (started.elapsed(), sample()?);
        self.turn_until(server, Phase::Drain, Instant::now() + DRAIN_LIMIT, &mut tally)?;
        if self.servers[server].iter().any(|c| !c.in_flight.is_empty()) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "replies still missing after 5 s"));
        }
        let server = after.since(before);
        Ok(Outcome { requests: tally.requests, elapsed, latency: tally.latency, server })
    }

    /// Runs the event loop until `until`, or in `Drain` until `server` has nothing in flight.
    fn turn_until(
        &mut self,
        server: usize,
        phase: Phase,
        until: Instant,
        tally: &mut Tally,
    ) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let now = Instant::now();
            let drained = || self.servers[server].iter().all(|c| c.in_flight.is_empty());
            if now >= until || (phase == Phase::Drain && drained()) {
                return Ok(());
            }
            let timeout = (until - now).as_millis().clamp(1, 10) as i32;
            // SAFETY (in syscall!): `events` is a live buffer of `events.len()` entries.
            let n = syscall!(epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout
            ));
            let n = match n {
                Ok(n) => n as usize,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(io::Error::new(e.kind(), format!("epoll_wait: {e}"))),
            };
            let now = Instant::now();
            for event in &events[..n] {
                let (s, i) = ((event.u64 >> 32) as usize, (event.u64 & 0xffff_ffff) as usize);
                if event.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                    self.receive(s, i, now, phase, tally)?;
                }
                self.flush(s, i)?;
            }
        }
    }

    /// Reads what connection `i` of server `s` has; each reply completed is counted (in
    /// `Measure`) and, unless draining, its message queued again.
    fn receive(
        &mut self,
        s: usize,
        i: usize,
        now: Instant,
        phase: Phase,
        tally: &mut Tally,
    ) -> io::Result<()> {
        let size = self.messages.request().len();
        let conn = &mut self.servers[s][i];
        let got = match conn.stream.read(&mut self.read_buf) {
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
        let done = self.messages.replies(&mut conn.replies, &self.read_buf[..got])?;
        for _ in 0..done {
            let sent_at = conn.in_flight.pop_front().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "more replies than requests")
            })?;
            if phase == Phase::Measure {
                tally.latency.record(now.duration_since(sent_at).as_nanos() as u64);
                tally.requests += 1;
            }
            if phase != Phase::Drain {
                conn.in_flight.push_back(now);
                conn.unsent += size;
            }
        }
        Ok(())
    }

    /// Writes what connection `i` of server `s` has queued; watches for writability while
    /// some is left.
    fn flush(&mut self, s: usize, i: usize) -> io::Result<()> {
        let (conn, size) = (&mut self.servers[s][i], self.messages.request().len());
        while conn.unsent > 0 {
            let end = self.payload.len().min(conn.offset + conn.unsent);
            match conn.stream.write(&self.payload[conn.offset..end]) {
                Ok(n) => (conn.unsent, conn.offset) = (conn.unsent - n, (conn.offset + n) % size),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("write: {e}"))),
            }
        }
        let want_write = conn.unsent > 0 || conn.stream.pending_out();
        if conn.unsent == 0 && want_write {
            match conn.stream.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("flush: {e}"))),
                Ok(()) => {}
            }
        }
        let want_write = conn.unsent > 0 || conn.stream.pending_out();
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let out = if want_write { libc::EPOLLOUT as u32 } else { 0 };
            let events = libc::EPOLLIN as u32 | out;
            epoll_ctl(&self.epoll, libc::EPOLL_CTL_MOD, &conn.stream, events, key(s, i))?;
        }
        Ok(())
    }
}

/// The epoll key of connection `i` to server `s`.
fn key(s: usize, i: usize) -> u64 {
    ((s as u64) << 32) | i as u64
}

/// Connects, retrying for up to a second while the server comes up.
pub(crate) fn connect(port: u16) -> io::Result<TcpStream> {
    let mut attempts = 0;
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return Ok(stream),
            Err(_) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("connect 127.0.0.1:{port}: {e}")))
            }
        }
    }
}
