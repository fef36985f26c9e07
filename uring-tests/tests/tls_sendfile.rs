//! `EventLoop::sendfile` over TLS: the chunked fallback through the layer (the kernel cannot
//! encrypt), the bytes a real TLS peer decrypts, `fallback = false` refused, `write` refused
//! during the transfer, `close` waiting for its end. On every backend built in.

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek};
use std::net::TcpStream;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringloop::{AcceptedSocketOptions, Error, EventLoop, Transport};
use uring_tests::tls::{pki, rustls_client, WAIT};
use uring_tests::{
    backend_tests, pattern, run_ready, run_until, run_within, tcp_pair, Received, TempDir,
};

/// A peer thread: the plaintext it decrypted.
type Reader = JoinHandle<std::io::Result<Vec<u8>>>;

/// The peer's side: a rustls client stream over TCP.
type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A peer thread running a rustls client on `tcp` (reads time out after 60 s) and `read` on
/// its stream.
fn tls_peer(
    tcp: TcpStream,
    read: impl FnOnce(&mut TlsStream) -> std::io::Result<Vec<u8>> + Send + 'static,
) -> Reader {
    std::thread::spawn(move || {
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(rustls_client(), name).unwrap();
        read(&mut rustls::StreamOwned::new(conn, tcp))
    })
}

/// A rustls client on `tcp` that reads until the server's `close_notify`: the plaintext.
fn tls_reader(tcp: TcpStream) -> Reader {
    tls_peer(tcp, |stream| {
        let mut got = Vec::new();
        stream.read_to_end(&mut got)?; // Ok only at close_notify
        Ok(got)
    })
}

/// A rustls client on `tcp` that reads `n` bytes of plaintext, then drops the connection
/// with more unread (a reset): those bytes.
fn tls_quitter(tcp: TcpStream, n: usize) -> Reader {
    tls_peer(tcp, move |stream| {
        let mut got = vec![0u8; n];
        stream.read_exact(&mut got)?;
        Ok(got)
    })
}

/// A TLS server transport on our end of a TCP pair, after its handshake with a
/// [`tls_reader`] on the other end.
fn tls_connection(lp: &EventLoop) -> (Transport, Rc<RefCell<Received>>, Reader) {
    tls_connection_to(lp, tls_reader)
}

/// A TLS server transport on our end of a TCP pair whose other end `peer` runs.
fn tls_connection_to(
    lp: &EventLoop,
    peer_thread: impl FnOnce(TcpStream) -> Reader,
) -> (Transport, Rc<RefCell<Received>>, Reader) {
    let (peer, ours) = tcp_pair();
    let reader = peer_thread(peer);
    let lp2 = lp.clone();
    let (transport, protocol) = run_within(lp, WAIT, async move {
        let options = AcceptedSocketOptions::new().ssl(pki().server());
        lp2.connect_accepted_socket_with(Received::default, ours, options).await
    })
    .expect("the TLS handshake");
    (transport, protocol, reader)
}

/// A file in `dir` holding `data`.
fn file_with(dir: &TempDir, data: &[u8]) -> File {
    let path = dir.join("payload");
    std::fs::write(&path, data).unwrap();
    File::open(&path).unwrap()
}

/// Starts `lp.sendfile(...)` as a task and runs the loop until the task began the transfer;
/// its result lands in the returned slot.
fn start_sendfile(
    lp: &EventLoop,
    transport: &Transport,
    file: &File,
    offset: u64,
    fallback: bool,
) -> Rc<RefCell<Option<Result<u64, Error>>>> {
    let slot = Rc::new(RefCell::new(None));
    let (lp2, transport, file, out) =
        (lp.clone(), transport.clone(), file.try_clone().unwrap(), slot.clone());
    lp.create_task(async move {
        let result = lp2.sendfile(&transport, &file, offset, None, fallback).await;
        *out.borrow_mut() = Some(result);
    })
    .unwrap();
    run_ready(lp);
    slot
}

backend_tests! {
    /// 3 MiB from an offset, through the layer: the peer decrypts exactly those bytes, the
    /// call returns their count, the file's position ends past them, and `write` is refused
    /// while the transfer runs.
    fn sendfile_over_tls_takes_the_chunked_fallback(lp) {
        let dir = TempDir::for_test(lp, "tls-sendfile");
        let data = pattern(3 * 1024 * 1024 + 5);
        let file = file_with(&dir, &data);
        let (transport, protocol, reader) = tls_connection(lp);
        let result = start_sendfile(lp, &transport, &file, 100, true);
        let refused = transport.write(b"in the middle");
        assert!(matches!(&refused, Err(Error::Runtime { message: m, .. }) if m.contains("sendfile is in progress")), "{refused:?}");
        assert!(run_until(lp, WAIT * 3.0, || result.borrow().is_some()));
        let sent = result.borrow_mut().take().unwrap().expect("the transfer");
        assert_eq!(sent, data.len() as u64 - 100);
        assert_eq!((&file).stream_position().unwrap(), data.len() as u64);
        transport.write(b"and after").unwrap();
        transport.close();
        assert!(run_until(lp, WAIT, || protocol.borrow().lost));
        let got = reader.join().unwrap().expect("a clean TLS close");
        assert_eq!(got.len(), data.len() - 100 + 9);
        assert!(got[..got.len() - 9] == data[100..], "the file's bytes, in order");
        assert_eq!(&got[got.len() - 9..], b"and after");
    }

    /// `fallback = false` over TLS: `SendfileNotAvailable` naming TLS, nothing sent.
    fn sendfile_over_tls_needs_the_fallback(lp) {
        let dir = TempDir::for_test(lp, "tls-sendfile-no-fallback");
        let file = file_with(&dir, b"never sent");
        let (transport, protocol, reader) = tls_connection(lp);
        let result = start_sendfile(lp, &transport, &file, 0, false);
        assert!(run_until(lp, WAIT, || result.borrow().is_some()));
        let error = result.borrow_mut().take().unwrap().expect_err("no zero-copy over TLS");
        assert!(matches!(&error, Error::SendfileNotAvailable(m) if m.contains("TLS")), "{error}");
        transport.close();
        assert!(run_until(lp, WAIT, || protocol.borrow().lost));
        assert_eq!(reader.join().unwrap().expect("a clean TLS close"), b"");
    }

    /// The peer resets the connection partway: the copying transfer ends with the OS's error,
    /// the file position past what the peer got and short of the end, the transport closing.
    fn the_peer_closing_mid_tls_sendfile_is_an_error_with_the_position_updated(lp) {
        let dir = TempDir::for_test(lp, "tls-sendfile-peer-close");
        let data = pattern(32 << 20);
        let file = file_with(&dir, &data);
        let (transport, protocol, quitter) =
            tls_connection_to(lp, |tcp| tls_quitter(tcp, 100 * 1024));
        let result = start_sendfile(lp, &transport, &file, 0, true);
        assert!(run_until(lp, WAIT * 3.0, || quitter.is_finished()), "the peer never quit");
        let got = quitter.join().unwrap().expect("100 KiB of plaintext");
        assert!(got[..] == data[..got.len()], "the file's first bytes");
        assert!(run_until(lp, WAIT * 3.0, || result.borrow().is_some()), "the transfer never ended");
        let error = result.borrow_mut().take().unwrap().expect_err("the peer reset");
        let errno = error.raw_os_error();
        assert!(matches!(errno, Some(libc::EPIPE | libc::ECONNRESET)), "{error}");
        let at = (&file).stream_position().unwrap();
        assert!(at >= got.len() as u64 && at < data.len() as u64, "position {at}");
        assert!(transport.is_closing());
        assert!(run_until(lp, WAIT, || protocol.borrow().lost));
    }

    /// `close()` right after starting a transfer: the transfer runs to its end, then
    /// `close_notify` goes out, then the connection closes.
    fn close_during_tls_sendfile_waits_for_its_end(lp) {
        let dir = TempDir::for_test(lp, "tls-sendfile-close");
        let data = pattern(1024 * 1024);
        let file = file_with(&dir, &data);
        let (transport, protocol, reader) = tls_connection(lp);
        let result = start_sendfile(lp, &transport, &file, 0, true);
        transport.close();
        assert!(transport.is_closing());
        assert!(run_until(lp, WAIT * 3.0, || protocol.borrow().lost));
        assert_eq!(result.borrow_mut().take().unwrap().expect("the transfer"), data.len() as u64);
        let got = reader.join().unwrap().expect("a clean TLS close");
        assert!(got == data, "all of it, then close_notify");
    }
}
