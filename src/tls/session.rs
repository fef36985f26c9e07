//! [`Session`]: one rustls connection (client or server) as the layer drives it: ciphertext
//! in, records out, plaintext in and out, and what `get_extra_info` reports about it.

use std::io::{self, BufRead, Write};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ServerConnection};

use super::config::{TlsConfig, TlsSetup};
use crate::error::{ArgumentKind, Error, Result};
use crate::transport::ExtraInfo;

/// What [`Session::feed`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    /// Took some ciphertext and processed the records it completed.
    Took,
    /// Took nothing: the decrypted plaintext must be taken first.
    Full,
}

/// What [`Session::take_plaintext`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plain {
    /// Bytes were appended.
    Data,
    /// Nothing decrypted yet.
    Nothing,
    /// The peer sent `close_notify`, and everything before it was taken.
    Closed,
}

/// One TLS session.
pub(crate) struct Session {
    /// rustls' state machine.
    conn: Connection,
    /// The name a client asked for (`None` on a server, or an empty `server_hostname`).
    asked_name: Option<String>,
}

impl Session {
    /// A session for `setup` (the client sends its hello at the first [`take_tls`]).
    ///
    /// [`take_tls`]: Session::take_tls
    pub(crate) fn new(setup: &TlsSetup) -> Result<Session> {
        let refused = |e: rustls::Error| {
            Error::invalid_argument(ArgumentKind::Tls, format!("TLS session: {e}"))
        };
        let (conn, asked_name) = match (&setup.config, &setup.server_name) {
            (TlsConfig::Client(config), Some(name)) => {
                let asked = match name {
                    ServerName::DnsName(dns) => Some(dns.as_ref().to_owned()),
                    ServerName::IpAddress(ip) if !std::net::IpAddr::from(*ip).is_unspecified() => {
                        Some(std::net::IpAddr::from(*ip).to_string())
                    }
                    _ => None,
                };
                let client =
                    ClientConnection::new(config.clone(), name.clone()).map_err(refused)?;
                (Connection::Client(client), asked)
            }
            (TlsConfig::Server(config), _) => {
                (Connection::Server(ServerConnection::new(config.clone()).map_err(refused)?), None)
            }
            (TlsConfig::Client(_), None) => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Missing,
                    "TLS client session without a name",
                ))
            }
        };
        Ok(Session { conn, asked_name })
    }

    /// True until the handshake is done.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds ciphertext from the front of `data` (advanced past what was taken) and processes
    /// the records it completes. On a rustls error the alert to send is queued (take it with
    /// [`take_tls`](Self::take_tls)).
    pub(crate) fn feed(&mut self, data: &mut &[u8]) -> std::result::Result<Fed, rustls::Error> {
        match self.conn.read_tls(data) {
            Ok(_) => {}
            // rustls' back-pressure: its plaintext buffer is full.
            Err(e) if e.kind() == io::ErrorKind::Other => return Ok(Fed::Full),
            // A record longer than any TLS record: not TLS.
            Err(e) => return Err(rustls::Error::General(format!("reading records: {e}"))),
        }
        self.conn.process_new_packets()?;
        Ok(Fed::Took)
    }

    /// Tells rustls the peer's stream ended (TCP EOF).
    pub(crate) fn feed_eof(&mut self) {
        let _ = self.conn.read_tls(&mut io::empty());
    }

    /// True when rustls has records waiting to be sent.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Appends every record waiting to be sent to `out`; true if there were any.
    pub(crate) fn take_tls(&mut self, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break; // writing to a Vec cannot fail
            }
        }
        out.len() > before
    }

    /// Appends the decrypted plaintext to `out`.
    pub(crate) fn take_plaintext(&mut self, out: &mut Vec<u8>) -> Plain {
        let mut reader = self.conn.reader();
        let mut took = false;
        loop {
            match reader.fill_buf() {
                Ok([]) => return if took { Plain::Data } else { Plain::Closed },
                Ok(chunk) => {
                    let len = chunk.len();
                    out.extend_from_slice(chunk);
                    reader.consume(len);
                    took = true;
                }
                // WouldBlock: nothing more yet; UnexpectedEof (no close_notify): the layer
                // reports the truncation when the stream's EOF reaches it.
                Err(_) => return if took { Plain::Data } else { Plain::Nothing },
            }
        }
    }

    /// Encrypts as much of `data` as rustls buffers (64 KiB of records at most waiting): the
    /// bytes taken.
    pub(crate) fn encrypt(&mut self, data: &[u8]) -> usize {
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Queues `close_notify`.
    pub(crate) fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// `get_extra_info`'s TLS names (see [`crate::Transport::get_extra_info`]); `None` for
    /// the others.
    pub(crate) fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        let conn = &self.conn;
        match name {
            "peercert" => Some(ExtraInfo::Bytes(conn.peer_certificates()?.first()?.to_vec())),
            "peercert_chain" => Some(ExtraInfo::Certificates(
                conn.peer_certificates()?.iter().map(|c| c.to_vec()).collect(),
            )),
            "cipher" => {
                let suite = conn.negotiated_cipher_suite()?;
                let name = suite
                    .suite()
                    .as_str()
                    .map_or_else(|| format!("{:?}", suite.suite()), Into::into);
                let version = match conn.protocol_version()? {
                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
                    other => format!("{other:?}"),
                };
                let secret_bits = if name.contains("AES_128") { 128 } else { 256 };
                Some(ExtraInfo::Cipher { name, version, secret_bits })
            }
            "alpn_protocol" => Some(ExtraInfo::Bytes(conn.alpn_protocol()?.to_vec())),
            "server_hostname" => match conn {
                Connection::Client(_) => self.asked_name.clone().map(ExtraInfo::Text),
                Connection::Server(server) => {
                    server.server_name().map(|n| ExtraInfo::Text(n.into()))
                }
            },
            _ => None,
        }
    }
}
