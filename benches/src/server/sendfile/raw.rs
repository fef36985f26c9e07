//! The raw baselines, with no event loop: one thread `poll(2)`s the listener and every
//! connection still sending, and a writable connection's [`Mover`] moves bytes until the
//! socket is full or the file all sent (then the connection is closed). A short send is taken
//! to mean a full socket: the loop polls before trying again rather than spend a call on
//! `EAGAIN` (the strongest simple loop; ringloop's epoll driver makes that call).
//!
//! - [`SendFile`]: `sendfile(2)` from the file at the connection's offset;
//! - [`Splice`]: `splice(2)` file → pipe, then pipe → socket, through a pipe of 1 MiB from a
//!   small pool (ringloop's io_uring path does the same splices as two linked SQEs).

use std::fs::File;
use std::io::{self, ErrorKind};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use crate::sys;

/// How one connection's bytes move from the file to the socket.
pub trait Mover: Sized {
    /// What the connections share (a pipe pool).
    type Shared: Default;

    /// Starts sending the `size` bytes of `file`.
    fn start(shared: &mut Self::Shared, file: File, size: u64) -> io::Result<Self>;

    /// Moves bytes to `socket` until it is full (`Ok(false)`) or everything is sent
    /// (`Ok(true)`).
    fn advance(&mut self, socket: &TcpStream) -> io::Result<bool>;

    /// The connection is done with (sent or failed).
    fn finish(self, shared: &mut Self::Shared);
}

/// `sendfile(2)`.
pub struct SendFile {
    file: File,
    /// The next byte to send.
    offset: i64,
    size: i64,
}

impl Mover for SendFile {
    type Shared = ();

    fn start((): &mut (), file: File, size: u64) -> io::Result<SendFile> {
        let size = i64::try_from(size).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        Ok(SendFile { file, offset: 0, size })
    }

    fn advance(&mut self, socket: &TcpStream) -> io::Result<bool> {
        while self.offset < self.size {
            let ask = (self.size - self.offset).min(1 << 30) as usize;
            match sys::sendfile(socket, &self.file, &mut self.offset, ask) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()), // the file shrank
                Ok(n) if n < ask => return Ok(false),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("sendfile: {e}"))),
            }
        }
        Ok(true)
    }

    fn finish(self, (): &mut ()) {}
}

/// A pipe to splice through.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// Empty pipes kept for later connections.
const POOL_MAX: usize = 8;

/// `splice(2)` file → pipe → socket.
pub struct Splice {
    file: File,
    /// The next byte of the file to splice into the pipe.
    offset: i64,
    size: i64,
    pipe: Pipe,
    /// Bytes in the pipe, not yet in the socket.
    in_pipe: usize,
}

impl Mover for Splice {
    type Shared = Vec<Pipe>;

    fn start(pool: &mut Vec<Pipe>, file: File, size: u64) -> io::Result<Splice> {
        let size = i64::try_from(size).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
        let pipe = match pool.pop() {
            Some(pipe) => pipe,
            None => {
                let (read, write) = sys::pipe()?;
                let capacity = sys::pipe_capacity(&write)?;
                Pipe { read, write, capacity }
            }
        };
        Ok(Splice { file, offset: 0, size, pipe, in_pipe: 0 })
    }

    fn advance(&mut self, socket: &TcpStream) -> io::Result<bool> {
        let nonblock = libc::SPLICE_F_NONBLOCK;
        loop {
            if self.in_pipe == 0 {
                if self.offset == self.size {
                    return Ok(true);
                }
                let ask = ((self.size - self.offset) as usize).min(self.pipe.capacity);
                let offset = Some(&mut self.offset);
                self.in_pipe =
                    match sys::splice(&self.file, offset, &self.pipe.write, ask, nonblock) {
                        Ok(0) => return Err(ErrorKind::UnexpectedEof.into()), // the file shrank
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io::Error::new(e.kind(), format!("splice in: {e}"))),
                    };
            }
            let ask = self.in_pipe;
            match sys::splice(&self.pipe.read, None, socket, ask, nonblock) {
                Ok(n) if n < ask => {
                    self.in_pipe -= n;
                    return Ok(false);
                }
                Ok(n) => self.in_pipe -= n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("splice out: {e}"))),
            }
        }
    }

    fn finish(self, pool: &mut Vec<Pipe>) {
        // A pipe with bytes left in it (a failed send) is closed, not reused.
        if self.in_pipe == 0 && pool.len() < POOL_MAX {
            pool.push(self.pipe);
        }
    }
}

/// A connection still sending.
struct Conn<M> {
    socket: TcpStream,
    mover: M,
}

/// Serves `path` to every connection with `M` until the process exits.
pub fn serve<M: Mover>(
    listener: TcpListener,
    path: &Path,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| format!("listener: {e}"))?;
    let mut shared = M::Shared::default();
    let mut conns: Vec<Conn<M>> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    announce()?;
    loop {
        fds.clear();
        fds.push(libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let out = libc::POLLOUT;
        fds.extend(conns.iter().map(|c| libc::pollfd {
            fd: c.socket.as_raw_fd(),
            events: out,
            revents: 0,
        }));
        // SAFETY (in syscall!): `fds` is a live array of `fds.len()` pollfds.
        match sys::syscall!(poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1)) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
        // Backwards, so that removing a connection leaves the indices still to visit alone.
        for i in (0..conns.len()).rev() {
            if fds[i + 1].revents != 0 {
                let conn = &mut conns[i];
                if done_with(&mut conn.mover, &conn.socket) {
                    conns.swap_remove(i).mover.finish(&mut shared);
                }
            }
        }
        if fds[0].revents != 0 {
            accept_all(&listener, path, &mut shared, &mut conns);
        }
    }
}

/// Moves `mover` on; true when the connection is done with (all sent, or an error, printed).
fn done_with<M: Mover>(mover: &mut M, socket: &TcpStream) -> bool {
    mover.advance(socket).unwrap_or_else(|e| {
        eprintln!("sendfile server: {e}");
        true
    })
}

/// Accepts every pending connection, starts its transfer and sends what the socket takes.
fn accept_all<M: Mover>(
    listener: &TcpListener,
    path: &Path,
    shared: &mut M::Shared,
    conns: &mut Vec<Conn<M>>,
) {
    loop {
        let socket = match listener.accept() {
            Ok((socket, _)) => socket,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return eprintln!("sendfile server: accept: {e}"),
        };
        let started = start::<M>(&socket, path, shared);
        let mut mover = match started {
            Ok(mover) => mover,
            Err(e) => {
                eprintln!("sendfile server: {}: {e}", path.display());
                continue;
            }
        };
        match done_with(&mut mover, &socket) {
            true => mover.finish(shared),
            false => conns.push(Conn { socket, mover }),
        }
    }
}

/// Readies a new connection and opens the file for it.
fn start<M: Mover>(socket: &TcpStream, path: &Path, shared: &mut M::Shared) -> io::Result<M> {
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    M::start(shared, file, size)
}
