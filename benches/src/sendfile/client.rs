//! The `sendfile` clients: `n` connections to a server at once on one epoll instance, each
//! discarding what it receives and counting it until the server closes the connection.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys::{self, syscall};

/// How a client throws away what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// `read(2)` into a 256 KiB buffer, as a real client reads: the client pays a copy.
    Read,
    /// `splice(2)` socket → pipe → `/dev/null`: no copy on the client's side, so the server
    /// is more often the bottleneck.
    Splice,
}

impl Discard {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Discard::Read => "read",
            Discard::Splice => "splice",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn parse(name: &str) -> Result<Discard, String> {
        [Discard::Read, Discard::Splice]
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| format!("--discard must be read or splice, not {name:?}"))
    }
}

/// One connection and what it received.
struct Conn {
    stream: TcpStream,
    received: u64,
    /// Reached EOF.
    done: bool,
    /// The pipe it splices through (`Discard::Splice`).
    pipe: Option<(OwnedFd, OwnedFd)>,
}

/// Where received bytes go.
struct Sink {
    discard: Discard,
    buf: Vec<u8>,
    /// `/dev/null`, for `Discard::Splice`.
    null: Option<File>,
}

/// Connects `n` connections to `127.0.0.1:port` and receives on all of them until each
/// reaches EOF; the bytes each received. `timeout` bounds the whole.
pub fn receive(port: u16, n: usize, discard: Discard, timeout: Duration) -> io::Result<Vec<u64>> {
    let deadline = Instant::now() + timeout;
    let epoll = sys::epoll()?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let stream = crate::client::connect(port)?;
        stream.set_nonblocking(true)?;
        sys::epoll_ctl(&epoll, libc::EPOLL_CTL_ADD, &stream, libc::EPOLLIN as u32, i as u64)?;
        let pipe = match discard {
            Discard::Read => None,
            Discard::Splice => Some(sys::pipe()?),
        };
        conns.push(Conn { stream, received: 0, done: false, pipe });
    }
    let null = match discard {
        Discard::Read => None,
        Discard::Splice => Some(File::options().write(true).open("/dev/null")?),
    };
    let mut sink = Sink { discard, buf: vec![0u8; 256 * 1024], null };
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut open = n;
    while open > 0 {
        let now = Instant::now();
        if now >= deadline {
            let got: Vec<u64> = conns.iter().map(|c| c.received).collect();
            let msg = format!("not all received within {timeout:?} (bytes so far: {got:?})");
            return Err(io::Error::new(ErrorKind::TimedOut, msg));
        }
        let wait = (deadline - now).as_millis().clamp(1, 100) as i32;
        // SAFETY (in syscall!): `events` is a live buffer of `events.len()` entries.
        let ready = match syscall!(epoll_wait(
            epoll.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as i32,
            wait
        )) {
            Ok(ready) => ready as usize,
            Err(e) if e.kind() == ErrorKind::Interrupted => 0,
            Err(e) => return Err(io::Error::new(e.kind(), format!("epoll_wait: {e}"))),
        };
        for event in &events[..ready] {
            let conn = &mut conns[event.u64 as usize];
            if !conn.done && sink.drain(conn)? {
                conn.done = true;
                open -= 1;
                sys::epoll_ctl(&epoll, libc::EPOLL_CTL_DEL, &conn.stream, 0, 0)?;
            }
        }
    }
    Ok(conns.iter().map(|c| c.received).collect())
}

impl Sink {
    /// Takes what `conn` has until it would block; true at EOF.
    fn drain(&mut self, conn: &mut Conn) -> io::Result<bool> {
        loop {
            let got = match self.discard {
                Discard::Read => conn.stream.read(&mut self.buf),
                Discard::Splice => self.splice(conn),
            };
            match got {
                Ok(0) => return Ok(true),
                Ok(n) => conn.received += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("receiving: {e}"))),
            }
        }
    }

    /// Splices what the socket has into the connection's pipe, then the pipe into
    /// `/dev/null`; the bytes moved.
    fn splice(&self, conn: &Conn) -> io::Result<usize> {
        let ((read, write), null) =
            (conn.pipe.as_ref().expect("a pipe"), self.null.as_ref().expect("/dev/null"));
        let n = sys::splice(&conn.stream, None, write, 1 << 20, libc::SPLICE_F_NONBLOCK)?;
        let mut left = n;
        while left > 0 {
            match sys::splice(read, None, null, left, 0)? {
                0 => return Err(io::Error::other("splice to /dev/null took nothing")),
                moved => left -= moved,
            }
        }
        Ok(n)
    }
}
