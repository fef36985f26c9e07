//! TLS failures: refused certificates (untrusted, wrong name, expired), a handshake that
//! stalls, a peer that sends garbage, a peer that closes without `close_notify`, a peer that
//! never answers `close_notify`. Each ends in an error that names its reason, never a panic
//! or a hang, and a protocol that had the connection gets `connection_lost` exactly once.
//! On every backend built in.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use ringloop::{ConnectOptions, Error, ServerOptions, TlsErrorKind};
use uring_tests::tls::{
    client_options, close_server, pki, rustls_peer_server, tls_connect, tls_server, Tap, TlsRec,
    WAIT,
};
use uring_tests::{backend_tests, capture_exceptions, run_until, run_within, Ev};

/// Connects with `options` to `port`, the client protocol recorded in the returned recorder
/// (which a refused handshake leaves without a single callback).
fn try_connect(
    lp: &ringloop::EventLoop,
    port: u16,
    options: ConnectOptions,
) -> (Result<ringloop::Transport, Error>, Rc<RefCell<TlsRec>>) {
    let seen = Rc::new(RefCell::new(TlsRec::default()));
    let (lp2, rec) = (lp.clone(), seen.clone());
    let result = run_within(lp, WAIT, async move {
        let factory = move || Tap(rec);
        lp2.create_connection(factory, ("127.0.0.1", port), options).await
    });
    (result.map(|(transport, _)| transport), seen)
}

/// A refused server certificate: the client's error names the reason, its protocol never
/// got the connection; the server drops the connection without ever calling its protocol.
fn refused(
    lp: &ringloop::EventLoop,
    server_tls: ringloop::TlsConfig,
    options: ConnectOptions,
    kind: TlsErrorKind,
    reason: &str,
) {
    let (server, port, served) = tls_server(lp, false, ServerOptions::default().ssl(server_tls));
    let (result, seen) = try_connect(lp, port, options);
    let error = result.expect_err("the handshake must be refused");
    assert_eq!(error.tls_kind(), Some(kind), "{error}");
    assert!(error.to_string().contains(reason), "{error}");
    assert!(error.to_string().contains(&format!("127.0.0.1:{port}")), "names the peer: {error}");
    assert!(seen.borrow().events.is_empty(), "{:?}", seen.borrow().events);
    assert!(run_until(lp, WAIT, || server.connection_count() == 0));
    assert!(served.borrow().iter().all(|s| s.borrow().events.is_empty()));
    close_server(lp, server);
}

/// Runs the loop until `peer` reads the end of the connection (EOF or a reset), whatever
/// bytes (an alert) come first.
fn dropped_by_server(lp: &ringloop::EventLoop, peer: &TcpStream) -> bool {
    peer.set_nonblocking(true).unwrap();
    run_until(lp, WAIT, || {
        let mut sink = [0u8; 256];
        loop {
            match (&*peer).read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    })
}

backend_tests! {
    fn untrusted_certificate_is_refused(lp) {
        let server_tls = pki().untrusted.server_config();
        refused(lp, server_tls, client_options(), TlsErrorKind::UntrustedCertificate, "certificate not trusted");
    }

    fn hostname_mismatch_is_refused(lp) {
        let options = client_options().server_hostname("other.example");
        refused(lp, pki().server(), options, TlsErrorKind::HostnameMismatch, "hostname mismatch");
    }

    fn expired_certificate_is_refused(lp) {
        let server_tls = pki().expired.server_config();
        refused(lp, server_tls, client_options(), TlsErrorKind::ExpiredCertificate, "certificate expired");
    }

    /// A server that accepts and never answers: the handshake timeout ends the call with an
    /// error naming the handshake; a client that never speaks is dropped by a TLS server
    /// after its own handshake timeout, the protocol never called.
    fn stalled_handshake_times_out(lp) {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let options = client_options().ssl_handshake_timeout(0.3);
        let (result, seen) = try_connect(lp, port, options);
        let error = result.expect_err("must time out");
        assert!(matches!(&error, Error::Timeout(m) if m.contains("TLS handshake") && m.contains("0.3 seconds")), "{error}");
        assert!(seen.borrow().events.is_empty());
        drop(silent);

        let options = ServerOptions::default().ssl_handshake_timeout(0.3);
        let (server, port, served) = tls_server(lp, false, options);
        let mute = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(dropped_by_server(lp, &mute), "the server did not drop the silent client");
        assert!(run_until(lp, WAIT, || server.connection_count() == 0));
        assert!(served.borrow().iter().all(|s| s.borrow().events.is_empty()));
        close_server(lp, server);
    }

    /// Garbage instead of TLS, either way: an error saying so, no panic, nothing reported to
    /// the exception handler.
    fn garbage_instead_of_tls(lp) {
        let reported = capture_exceptions(lp);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut hello = [0u8; 512];
            let _ = tcp.read(&mut hello);
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            let _ = tcp.read(&mut hello); // until the client gives up
        });
        let (result, seen) = try_connect(lp, port, client_options());
        let error = result.expect_err("garbage is no handshake");
        assert_eq!(error.tls_kind(), Some(TlsErrorKind::Protocol), "{error}");
        assert!(error.to_string().contains("does not speak valid TLS"), "{error}");
        assert!(seen.borrow().events.is_empty());
        peer.join().unwrap();

        let (server, port, served) = tls_server(lp, false, ServerOptions::default());
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
        tcp.write_all(b"and then no TLS at all\r\n").unwrap();
        assert!(dropped_by_server(lp, &tcp), "the server did not drop the garbage sender");
        assert!(run_until(lp, WAIT, || server.connection_count() == 0));
        assert!(served.borrow().iter().all(|s| s.borrow().events.is_empty()));
        close_server(lp, server);
        assert!(reported.borrow().is_empty(), "{:?}", reported.borrow());
    }

    /// A peer that closes the TCP connection without `close_notify`: what it sent arrives,
    /// then `connection_lost` reports the truncation (no `eof_received`), once.
    fn missing_close_notify_is_truncation(lp) {
        let (port, peer) = rustls_peer_server(|stream| {
            stream.write_all(b"partial answer").unwrap();
            stream.flush().unwrap();
            // Dropped without close_notify: the socket closes with a bare FIN.
        });
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        peer.join().unwrap();
        let client = client.borrow();
        assert_eq!(client.data, b"partial answer");
        assert!(!client.events.contains(&Ev::Eof), "{:?}", client.events);
        assert_eq!(client.lost_count(), 1);
        let error = client.lost_error.clone().expect("an error");
        assert_eq!(error.tls_kind(), Some(TlsErrorKind::Truncated), "{error}");
        assert!(error.to_string().contains("without close_notify"), "{error}");
        assert!(transport.is_closing());
    }

    /// A peer that never answers `close_notify` (nor closes): the shutdown timeout aborts the
    /// connection, and `connection_lost` says so.
    fn silent_peer_hits_the_shutdown_timeout(lp) {
        let (port, peer) = rustls_peer_server(|stream| {
            std::thread::sleep(Duration::from_secs(3)); // reads nothing, answers nothing
            let _ = stream.sock.shutdown(std::net::Shutdown::Both);
        });
        let options = client_options().ssl_shutdown_timeout(0.3);
        let (transport, client) = tls_connect(lp, port, options).unwrap();
        transport.close();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        let error = client.borrow().lost_error.clone().expect("a timeout");
        assert!(matches!(&error, Error::Timeout(m) if m.contains("TLS shutdown") && m.contains("0.3 seconds")), "{error}");
        assert_eq!(client.borrow().lost_count(), 1);
        peer.join().unwrap();
    }
}
