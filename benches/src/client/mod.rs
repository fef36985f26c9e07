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
//!
//! `--client uring` drives the same load from an io_uring loop instead ([`UringClient`]).

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
mod uring;

pub use link::Link;
pub use messages::{Echo, Http, Messages};
pub use uring::{ring as uring_ring, UringClient};

/// A load generator's loop: what [`Generator::window`] drives.
pub trait Generator {
    /// Queues `pipeline` messages on each connection to `server` and starts writing them.
    fn start(&mut self, server: usize, now: Instant) -> io::Result<()>;

    /// Whether all of `server`'s messages are back.
    fn idle(&self, server: usize) -> bool;

    /// Waits at most `wait` (at least a millisecond for the epoll client) for the loop's
    /// events and handles them: replies counted into `tally` in `phase`, requests written.
    fn turn(&mut self, phase: Phase, wait: Duration, tally: &mut Tally) -> io::Result<()>;

    /// Runs the loop until `until`, or in `Drain` until `server` has nothing in flight.
    fn turn_until(
        &mut self,
        server: usize,
        phase: Phase,
        until: Instant,
        tally: &mut Tally,
    ) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= until || (phase == Phase::Drain && self.idle(server)) {
                return Ok(());
            }
            self.turn(phase, until - now, tally)?;
        }
    }

    /// The load it was made for.
    fn load(&self) -> Load;

    /// One window on server `server`: warm-up, the measured part (with `sample` read at its
    /// edges), then a drain of its messages.
    fn window(
        &mut self,
        server: usize,
        sample: &dyn Fn() -> io::Result<ProcessSample>,
    ) -> io::Result<Outcome> {
        let (now, load) = (Instant::now(), self.load());
        self.start(server, now)?;
        // Only `Measure` counts into it: warm-up and drain leave it alone.
        let mut tally = Tally { requests: 0, latency: Histogram::default() };
        self.turn_until(server, Phase::Warmup, now + load.warmup, &mut tally)?;
        let (started, before) = (Instant::now(), sample()?);
        self.turn_until(server, Phase::Measure, started + load.duration, &mut tally)?;
        let (elapsed, after) = (started.elapsed(), sample()?);
        self.turn_until(server, Phase::Drain, Instant::now() + DRAIN_LIMIT, &mut tally)?;
        if !self.idle(server) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "replies still missing after 5 s"));
        }
        let server = after.since(before);
        Ok(Outcome { requests: tally.requests, elapsed, latency: tally.latency, server })
    }
}

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

/// One connection's messages and replies, whichever loop drives it.
#[derive(Default)]
struct Pending<R> {
    /// When each message in flight was queued, oldest first.
    in_flight: VecDeque<Instant>,
    /// Bytes queued but not yet written.
    unsent: usize,
    /// Where in a request the next byte to write is.
    offset: usize,
    /// What is known of the reply being received.
    replies: R,
}

impl<R> Pending<R> {
    /// Queues `count` messages of `size` bytes at `now`.
    fn queue(&mut self, count: usize, size: usize, now: Instant) {
        for _ in 0..count {
            self.in_flight.push_back(now);
        }
        self.unsent += count * size;
    }

    /// `n` queued bytes were written.
    fn wrote(&mut self, n: usize, size: usize) {
        (self.unsent, self.offset) = (self.unsent - n, (self.offset + n) % size);
    }

    /// `data` came in at `now`: each reply it completes is counted (in `Measure`) and, unless
    /// draining, its message queued again.
    fn received<M: Messages<Replies = R>>(
        &mut self,
        messages: &M,
        data: &[u8],
        now: Instant,
        phase: Phase,
        tally: &mut Tally,
    ) -> io::Result<()> {
        let (done, size) = (messages.replies(&mut self.replies, data)?, messages.request().len());
        for _ in 0..done {
            let sent_at = self.in_flight.pop_front().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "more replies than requests")
            })?;
            if phase == Phase::Measure {
                tally.latency.record(now.duration_since(sent_at).as_nanos() as u64);
                tally.requests += 1;
            }
        }
        if phase != Phase::Drain {
            self.queue(done, size, now);
        }
        Ok(())
    }
}

/// One connection's state.
struct Conn<R> {
    stream: Link,
    /// Its messages and replies.
    pending: Pending<R>,
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
    /// What `epoll_wait` reports (kept, not zeroed per wait).
    events: Vec<libc::epoll_event>,
}

/// Where a window is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Echoed messages are sent again but not counted.
    Warmup,
    /// Echoed messages are counted and sent again.
    Measure,
    /// Echoed messages are not sent again.
    Drain,
}

/// What echoed messages are counted into.
pub struct Tally {
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
                conns.push(Conn { stream, pending: Pending::default(), want_write: false });
            }
            servers.push(conns);
        }
        let payload = payload(&messages);
        Ok(Client {
            epoll,
            servers,
            load: *load,
            messages,
            payload,
            read_buf: vec![0u8; 256 * 1024],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
        })
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
        let conn = &mut self.servers[s][i];
        let got = bytes_read(conn.stream.read(&mut self.read_buf), "read")?;
        conn.pending.received(&self.messages, &self.read_buf[..got], now, phase, tally)
    }

    /// Writes what connection `i` of server `s` has queued; watches for writability while
    /// some is left.
    fn flush(&mut self, s: usize, i: usize) -> io::Result<()> {
        let (conn, size) = (&mut self.servers[s][i], self.messages.request().len());
        while conn.pending.unsent > 0 {
            let end = self.payload.len().min(conn.pending.offset + conn.pending.unsent);
            match conn.stream.write(&self.payload[conn.pending.offset..end]) {
                Ok(n) => conn.pending.wrote(n, size),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("write: {e}"))),
            }
        }
        let want_write = conn.pending.unsent > 0 || conn.stream.pending_out();
        if conn.pending.unsent == 0 && want_write {
            match conn.stream.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("flush: {e}"))),
                Ok(()) => {}
            }
        }
        let want_write = conn.pending.unsent > 0 || conn.stream.pending_out();
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let out = if want_write { libc::EPOLLOUT as u32 } else { 0 };
            let events = libc::EPOLLIN as u32 | out;
            epoll_ctl(&self.epoll, libc::EPOLL_CTL_MOD, &conn.stream, events, key(s, i))?;
        }
        Ok(())
    }
}

impl<M: Messages> Generator for Client<M> {
    fn start(&mut self, server: usize, now: Instant) -> io::Result<()> {
        let (pipeline, size) = (self.load.pipeline, self.messages.request().len());
        for i in 0..self.servers[server].len() {
            self.servers[server][i].pending.queue(pipeline, size, now);
            self.flush(server, i)?;
        }
        Ok(())
    }

    fn idle(&self, server: usize) -> bool {
        self.servers[server].iter().all(|c| c.pending.in_flight.is_empty())
    }

    fn turn(&mut self, phase: Phase, wait: Duration, tally: &mut Tally) -> io::Result<()> {
        let timeout = wait.as_millis().clamp(1, 10) as i32;
        // SAFETY (in syscall!): `self.events` is a live buffer of `events.len()` entries.
        let n = syscall!(epoll_wait(
            self.epoll.as_raw_fd(),
            self.events.as_mut_ptr(),
            self.events.len() as i32,
            timeout
        ));
        let n = match n {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(io::Error::new(e.kind(), format!("epoll_wait: {e}"))),
        };
        let now = Instant::now();
        for k in 0..n {
            let event = self.events[k];
            let (s, i) = ((event.u64 >> 32) as usize, (event.u64 & 0xffff_ffff) as usize);
            if event.events & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                self.receive(s, i, now, phase, tally)?;
            }
            self.flush(s, i)?;
        }
        Ok(())
    }

    fn load(&self) -> Load {
        self.load
    }
}

/// What a read on a load connection came to: the count (0 when there was nothing yet), or the
/// run's error (the server closed the connection, or `call` failed).
fn bytes_read(read: io::Result<usize>, call: &str) -> io::Result<usize> {
    match read {
        Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed a connection")),
        Ok(got) => Ok(got),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
            Ok(0)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{call}: {e}"))),
    }
}

/// Requests back to back (at least 256 KiB of them): what writes take their bytes from.
fn payload<M: Messages>(messages: &M) -> Vec<u8> {
    messages.request().repeat((256 * 1024 / messages.request().len()).max(1))
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

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A blocking echo server on its own port, a thread per connection (left running).
    fn echo_server() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map(Result::unwrap) {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        stream.write_all(&buf[..n]).unwrap();
                    }
                });
            }
        });
        port
    }

    /// Both loops count whole echoes only, in every window, for ping-pong and pipelined
    /// load, and end with nothing in flight.
    #[test]
    fn both_clients_count_echoes_of_each_server_in_turn() {
        let ports = [echo_server(), echo_server()];
        let sample = || sys::sample_process(std::process::id());
        for pipeline in [1, 8] {
            let load = Load {
                connections: 4,
                pipeline,
                warmup: Duration::from_millis(10),
                duration: Duration::from_millis(50),
            };
            let clients: [Box<dyn Generator>; 2] = [
                Box::new(Client::connect(&ports, &load, Echo::new(300), None).unwrap()),
                Box::new(
                    UringClient::connect(uring_ring().unwrap(), &ports, &load, Echo::new(300))
                        .unwrap(),
                ),
            ];
            for mut client in clients {
                for server in [0, 1, 0] {
                    let outcome = client.window(server, &sample).unwrap();
                    assert!(outcome.requests > 0, "pipeline {pipeline}, server {server}");
                    assert!(outcome.latency.quantile(0.5) > 0);
                }
            }
        }
    }

    /// A server that closes its connections fails the window with an error, not a hang.
    #[test]
    fn a_server_closing_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        let load = Load {
            connections: 2,
            pipeline: 1,
            warmup: Duration::from_millis(10),
            duration: Duration::from_millis(20),
        };
        let sample = || sys::sample_process(std::process::id());
        let mut client =
            UringClient::connect(uring_ring().unwrap(), &[port], &load, Echo::new(64)).unwrap();
        let err = client.window(0, &sample).unwrap_err();
        assert!(err.to_string().contains("closed") || err.to_string().contains("reset"), "{err}");
    }
}
