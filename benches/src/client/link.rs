//! A load connection: plain TCP, or TLS over it (rustls, driven non-blocking from the
//! client's epoll loop). The handshake is done blocking at connect time, so the measured
//! windows see only application data.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// One connection of the load.
pub enum Link {
    /// Bytes as they are.
    Plain(TcpStream),
    /// Through a TLS session.
    Tls(Box<TlsLink>),
}

/// A TLS session over a non-blocking socket.
pub struct TlsLink {
    tcp: TcpStream,
    conn: ClientConnection,
}

impl Link {
    /// Wraps a connected, blocking `tcp`: as is, or with `tls` after a (blocking) handshake
    /// with `localhost`. Either way non-blocking afterwards.
    pub fn new(mut tcp: TcpStream, tls: Option<&Arc<ClientConfig>>) -> io::Result<Link> {
        let Some(config) = tls else {
            tcp.set_nonblocking(true)?;
            return Ok(Link::Plain(tcp));
        };
        let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
        let mut conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        tcp.set_nonblocking(true)?;
        Ok(Link::Tls(Box::new(TlsLink { tcp, conn })))
    }

    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Link::Plain(tcp) => tcp,
            Link::Tls(tls) => &tls.tcp,
        }
    }

    /// Records not yet written to the socket: wait for writability even with nothing new to
    /// send.
    pub fn pending_out(&self) -> bool {
        matches!(self, Link::Tls(tls) if tls.conn.wants_write())
    }
}

impl AsRawFd for Link {
    fn as_raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

impl TlsLink {
    /// Writes pending records; `WouldBlock` if the socket took less than all of them.
    fn push_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.tcp)?;
        }
        Ok(())
    }
}

impl Read for Link {
    /// Plaintext: what rustls has, else what the socket brings (`WouldBlock` when neither
    /// has any; `Ok(0)` at the peer's `close_notify`).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let tls = match self {
            Link::Plain(tcp) => return tcp.read(buf),
            Link::Tls(tls) => tls,
        };
        loop {
            match tls.conn.reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return done,
            }
            if tls.conn.read_tls(&mut tls.tcp)? == 0 {
                return Ok(0);
            }
            tls.conn.process_new_packets().map_err(io::Error::other)?;
            let _ = tls.push_records(); // a key update or an alert
        }
    }
}

impl Write for Link {
    /// Encrypts what rustls takes of `buf` and writes the records; `WouldBlock` while older
    /// records are still waiting for the socket.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tls = match self {
            Link::Plain(tcp) => return tcp.write(buf),
            Link::Tls(tls) => tls,
        };
        tls.push_records()?;
        let taken = tls.conn.writer().write(buf)?;
        match tls.push_records() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(taken),
            other => other.map(|()| taken),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(tcp) => tcp.flush(),
            Link::Tls(tls) => tls.push_records(),
        }
    }
}
