//! TLS between ringloop peers (`create_connection`/`create_server` with `ssl`, the Unix
//! forms, `connect_accepted_socket_with`, the streams, `BufferedProtocol`): the transport
//! interface over TLS, flow control by the plaintext backlog, `get_extra_info`, and the
//! checks of the TLS arguments. On every backend built in.

use std::os::fd::OwnedFd;

use ringloop::{
    AcceptedSocketOptions, Address, BaseProtocol, BufferedProtocol, ConnectOptions, Error,
    EventLoop, ExtraInfo, Server, ServerOptions, StreamReader, StreamWriter, TlsConfig, Transport,
    UnixConnectOptions, UnixServerOptions,
};
use uring_tests::tls::{
    client_options, close_server, pki, rustls_peer_server, tls_connect, tls_server, Shared, TlsRec,
    WAIT,
};
use uring_tests::{backend_tests, my_warnings, pattern, run_until, run_within, Ev, TempDir};

/// A recorder that pauses reading at its first `data_received`.
struct PauseOnData(TlsRec);

impl BaseProtocol for PauseOnData {
    fn connection_made(&mut self, transport: ringloop::Transport) {
        self.0.connection_made(transport);
    }
    fn connection_lost(&mut self, error: Option<Error>) {
        self.0.connection_lost(error);
    }
}

impl ringloop::Protocol for PauseOnData {
    fn data_received(&mut self, data: &[u8]) {
        if self.0.data.is_empty() {
            self.0.transport.as_ref().unwrap().pause_reading();
        }
        self.0.data_received(data);
    }
    fn eof_received(&mut self) -> bool {
        self.0.eof_received()
    }
}

/// Runs `exchange(reader, writer)` over a streams connection (with `client`'s options) to a
/// TLS streams server that echoes lines, then closes the server; returns what `exchange` did.
fn exchange_with_tls_echo<F>(
    lp: &EventLoop,
    client: ConnectOptions,
    exchange: impl FnOnce(StreamReader, StreamWriter) -> F + 'static,
) -> Vec<u8>
where
    F: std::future::Future<Output = Result<Vec<u8>, Error>> + 'static,
{
    let lp2 = lp.clone();
    run_within(lp, WAIT, async move {
        let options = ServerOptions::default().ssl(pki().server());
        let server = lp2.start_server(uring_tests::echo_lines, "127.0.0.1:0", options).await?;
        let port = server.sockets()[0].as_socket().unwrap().port();
        let (reader, writer) = lp2.open_connection(("127.0.0.1", port), client).await?;
        let reply = exchange(reader, writer).await?;
        server.close();
        server.wait_closed().await;
        Ok::<_, Error>(reply)
    })
    .unwrap()
}

/// A TLS connection whose server side paused reading at once: what the client writes backs
/// up into its plaintext backlog.
struct PausedReader {
    server: Server,
    /// The client's transport and recorder.
    transport: Transport,
    client: Shared,
    /// The server side's recorder and transport.
    reader: Shared,
    reader_transport: Transport,
}

impl PausedReader {
    fn open(lp: &EventLoop) -> PausedReader {
        let (server, port, served) = tls_server(lp, false, ServerOptions::default());
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        assert!(run_until(lp, WAIT, || served
            .borrow()
            .first()
            .is_some_and(|s| s.borrow().transport.is_some())));
        let reader = served.borrow()[0].clone();
        let reader_transport = reader.borrow().transport.clone().unwrap();
        reader_transport.pause_reading();
        assert!(!reader_transport.is_reading());
        PausedReader { server, transport, client, reader, reader_transport }
    }

    /// Closes the client's side: both sides lose the connection; then the server closes.
    fn close(self, lp: &EventLoop) {
        self.transport.close();
        let lost = || self.client.borrow().is_lost() && self.reader.borrow().is_lost();
        assert!(run_until(lp, WAIT, lost));
        close_server(lp, self.server);
    }
}

backend_tests! {
    /// Data both ways, `connection_made` before `create_connection` returns, a clean close
    /// (`close_notify` both ways): each side's `connection_lost(None)` exactly once.
    fn echo_round_trip_and_clean_close(lp) {
        let (server, port, served) = tls_server(lp, true, ServerOptions::default());
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        assert_eq!(client.borrow().events, vec![Ev::Made]);
        assert!(!transport.is_closing() && transport.is_reading());
        transport.write(b"hello ").unwrap();
        transport.writelines([&b"over "[..], b"tls"]).unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().data.len() == 14));
        assert_eq!(client.borrow().data, b"hello over tls");
        transport.close();
        assert!(transport.is_closing());
        let server_side = served.borrow()[0].clone();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost() && server_side.borrow().is_lost()));
        let client = client.borrow();
        assert_eq!(client.events.first(), Some(&Ev::Made));
        assert_eq!(client.events.last(), Some(&Ev::Lost(None)), "{:?}", client.lost_error);
        assert_eq!(client.lost_count(), 1);
        let server_side = server_side.borrow();
        assert_eq!(server_side.data, b"hello over tls");
        assert_eq!(server_side.events.first(), Some(&Ev::Made));
        assert!(server_side.events.contains(&Ev::Eof), "close_notify is eof_received");
        assert_eq!(server_side.events.last(), Some(&Ev::Lost(None)), "{:?}", server_side.lost_error);
        assert_eq!(server_side.lost_count(), 1);
        close_server(lp, server);
    }

    /// `get_extra_info` over TLS: the peer's certificate, the cipher, the names, no
    /// compression, and the socket's own names.
    fn extra_info(lp) {
        let (server, port, served) = tls_server(lp, false, ServerOptions::default());
        let options = client_options().server_hostname("localhost");
        let (transport, _client) = tls_connect(lp, port, options).unwrap();
        let peercert = transport.get_extra_info("peercert");
        assert_eq!(peercert, Some(ExtraInfo::Bytes(pki().good.cert.to_vec())));
        let Some(ExtraInfo::Certificates(chain)) = transport.get_extra_info("peercert_chain") else {
            panic!("no chain")
        };
        assert_eq!(chain.len(), 1);
        let Some(ExtraInfo::Cipher { name, version, secret_bits }) = transport.get_extra_info("cipher")
        else {
            panic!("no cipher")
        };
        assert!(name.starts_with("TLS13_"), "{name}");
        assert_eq!(version, "TLSv1.3");
        assert!(secret_bits == 128 || secret_bits == 256);
        assert_eq!(transport.get_extra_info("compression"), None);
        assert_eq!(transport.get_extra_info("server_hostname"), Some(ExtraInfo::Text("localhost".into())));
        assert!(matches!(transport.get_extra_info("peername"), Some(ExtraInfo::Address(a)) if a.as_socket().unwrap().port() == port));
        assert!(matches!(transport.get_extra_info("socket"), Some(ExtraInfo::Fd(_))));
        assert!(transport.socket_fd().is_some() && transport.sockname().is_some());
        assert!(run_until(lp, WAIT, || served.borrow().first().is_some_and(|s| s.borrow().transport.is_some())));
        let server_transport = served.borrow()[0].borrow().transport.clone().unwrap();
        let sni = server_transport.get_extra_info("server_hostname");
        assert_eq!(sni, Some(ExtraInfo::Text("localhost".into())), "the client's SNI");
        assert_eq!(server_transport.get_extra_info("peercert"), None, "no client certificate");
        transport.abort();
        close_server(lp, server);
    }

    /// ALPN: the protocol both sides agree on is reported on both, from configs the user
    /// built with rustls.
    fn alpn_is_negotiated_and_reported(lp) {
        let mut server = (*uring_tests::tls::rustls_server()).clone();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut client = (*uring_tests::tls::rustls_client()).clone();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let options = ServerOptions::default().ssl(server);
        let (server, port, served) = tls_server(lp, false, options);
        let (transport, _) = tls_connect(lp, port, ConnectOptions::new().ssl(client)).unwrap();
        let negotiated = Some(ExtraInfo::Bytes(b"http/1.1".to_vec()));
        assert_eq!(transport.get_extra_info("alpn_protocol"), negotiated);
        assert!(run_until(lp, WAIT, || served.borrow().first().is_some_and(|s| s.borrow().transport.is_some())));
        let server_side = served.borrow()[0].borrow().transport.clone().unwrap();
        assert_eq!(server_side.get_extra_info("alpn_protocol"), negotiated);
        transport.abort();
        close_server(lp, server);
    }

    /// `write_eof` is refused (logged; TLS cannot half-close) and `can_write_eof` is false;
    /// the transport goes on working.
    fn write_eof_is_refused(lp) {
        let (server, port, _served) = tls_server(lp, true, ServerOptions::default());
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        assert!(!transport.can_write_eof());
        let before = my_warnings("cannot half-close");
        transport.write_eof();
        assert_eq!(my_warnings("cannot half-close"), before + 1);
        assert!(!transport.is_closing());
        transport.write(b"still open").unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().data == b"still open"));
        transport.close();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        close_server(lp, server);
    }

    /// 1 MiB each way, in one write: every byte arrives, in order.
    fn one_mib_both_ways_intact(lp) {
        let (server, port, _served) = tls_server(lp, true, ServerOptions::default());
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        let payload = pattern(1 << 20);
        transport.write(&payload).unwrap();
        assert!(run_until(lp, WAIT * 3.0, || client.borrow().data.len() >= payload.len()));
        assert!(client.borrow().data == payload, "the echo differs");
        transport.close();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        assert_eq!(client.borrow().lost_error.as_ref().map(ToString::to_string), None);
        close_server(lp, server);
    }

    /// A reader that stops reading: the writer's plaintext backlog crosses the high-water
    /// mark and `pause_writing` comes, while memory stays bounded (the backlog, not the
    /// written total); once the reader resumes, everything arrives and `resume_writing`
    /// comes.
    fn slow_reader_pauses_the_writer(lp) {
        let paused = PausedReader::open(lp);
        let (transport, client, reader) = (&paused.transport, &paused.client, &paused.reader);
        let chunk = pattern(64 * 1024);
        let mut written = 0;
        while !client.borrow().events.contains(&Ev::Pause) && written < 64 << 20 {
            transport.write(&chunk).unwrap();
            written += chunk.len();
            run_until(lp, 0.01, || false);
        }
        assert!(client.borrow().events.contains(&Ev::Pause), "no pause_writing after {written} bytes");
        let (low, high) = transport.get_write_buffer_limits();
        assert_eq!((low, high), (16 * 1024, 64 * 1024));
        assert!(transport.get_write_buffer_size() <= high + chunk.len(), "backlog bounded");
        assert!(written < 32 << 20, "paused only after {written} bytes");
        paused.reader_transport.resume_reading();
        assert!(run_until(lp, WAIT * 3.0, || reader.borrow().data.len() == written));
        assert!(client.borrow().events.contains(&Ev::Resume));
        assert_eq!(transport.get_write_buffer_size(), 0);
        assert!(reader.borrow().data.chunks(chunk.len()).all(|c| c == chunk), "corrupted");
        paused.close(lp);
    }

    /// `writelines` of many small buffers and `write_bytes` of large ones, before and while the
    /// plaintext waits in the backlog (the reader paused): every byte arrives once, in order.
    fn writelines_and_write_bytes_keep_order(lp) {
        let paused = PausedReader::open(lp);
        let (transport, reader) = (&paused.transport, &paused.reader);
        let mut expected = Vec::new();
        for round in 0..64usize {
            let lines: Vec<Vec<u8>> = (0..50).map(|i| format!("{round}:{i};").into_bytes()).collect();
            transport.writelines(&lines).unwrap();
            expected.extend(lines.concat());
            let big = bytes::Bytes::from(pattern(100_000 + round));
            transport.write_bytes(big.clone()).unwrap();
            expected.extend_from_slice(&big);
            run_until(lp, 0.001, || false);
        }
        assert!(transport.get_write_buffer_size() > 0, "nothing waited in the backlog");
        paused.reader_transport.resume_reading();
        assert!(run_until(lp, WAIT * 3.0, || reader.borrow().data.len() >= expected.len()));
        assert!(reader.borrow().data == expected, "reordered, lost or repeated bytes");
        assert_eq!(transport.get_write_buffer_size(), 0);
        paused.close(lp);
    }

    /// `set_write_buffer_limits` on a TLS transport: asyncio's rules, and a backlog already
    /// above the new mark pauses at once.
    fn write_buffer_limits(lp) {
        let (server, port, _served) = tls_server(lp, false, ServerOptions::default());
        let (transport, _client) = tls_connect(lp, port, client_options()).unwrap();
        transport.set_write_buffer_limits(Some(100), None).unwrap();
        assert_eq!(transport.get_write_buffer_limits(), (25, 100));
        assert!(matches!(transport.set_write_buffer_limits(Some(1), Some(2)), Err(Error::InvalidArgument { .. })));
        transport.abort();
        close_server(lp, server);
    }

    /// The streams over TLS: `start_server`/`open_connection` with `ssl`, lines echoed,
    /// `wait_closed` clean.
    fn streams_over_tls(lp) {
        let options = ConnectOptions::new().ssl(pki().client()).server_hostname("localhost");
        let reply = exchange_with_tls_echo(lp, options, |reader, writer| async move {
            writer.write(b"first line\nsecond ")?;
            writer.write(b"line\n")?;
            writer.drain().await?;
            let mut reply = reader.readline().await?;
            reply.extend(reader.readline().await?);
            assert!(!writer.can_write_eof());
            writer.close();
            writer.wait_closed().await?;
            Ok(reply)
        });
        assert_eq!(reply, b"first line\nsecond line\n");
    }

    /// The futures-io traits of the streams over TLS.
    fn futures_io_over_tls(lp) {
        use futures_util::{AsyncReadExt, AsyncWriteExt};
        let options = ConnectOptions::new().ssl(pki().client());
        let reply = exchange_with_tls_echo(lp, options, |mut reader, mut writer| async move {
            writer.write_all(b"via futures-io\n").await.unwrap();
            writer.flush().await.unwrap();
            let mut reply = vec![0; 15];
            reader.read_exact(&mut reply).await.unwrap();
            AsyncWriteExt::close(&mut writer).await.unwrap();
            Ok(reply)
        });
        assert_eq!(reply, b"via futures-io\n");
    }

    /// A `BufferedProtocol` over TLS gets every byte through its own buffer.
    fn buffered_protocol_over_tls(lp) {
        struct Buf {
            buffer: Vec<u8>,
            got: Vec<u8>,
            lost: usize,
        }
        impl BaseProtocol for Buf {
            fn connection_lost(&mut self, _error: Option<Error>) {
                self.lost += 1;
            }
        }
        impl BufferedProtocol for Buf {
            fn get_buffer(&mut self, _size_hint: usize) -> &mut [u8] {
                &mut self.buffer
            }
            fn buffer_updated(&mut self, nbytes: usize) {
                self.got.extend_from_slice(&self.buffer[..nbytes]);
            }
        }
        let (server, port, _served) = tls_server(lp, true, ServerOptions::default());
        let lp2 = lp.clone();
        let (transport, buf) = run_within(lp, WAIT, async move {
            let factory = || Buf { buffer: vec![0; 1000], got: Vec::new(), lost: 0 };
            lp2.create_connection(factory, ("127.0.0.1", port), client_options()).await
        })
        .unwrap();
        let payload = pattern(100_000);
        transport.write(&payload).unwrap();
        assert!(run_until(lp, WAIT, || buf.borrow().got.len() == payload.len()));
        assert!(buf.borrow().got == payload);
        transport.close();
        assert!(run_until(lp, WAIT, || buf.borrow().lost == 1));
        close_server(lp, server);
    }

    /// `pause_reading` over TLS holds what arrives; `resume_reading` delivers it in order.
    fn pause_and_resume_reading(lp) {
        let (server, port, _served) = tls_server(lp, true, ServerOptions::default());
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        transport.pause_reading();
        assert!(!transport.is_reading());
        transport.write(b"one ").unwrap();
        transport.write(b"two").unwrap();
        run_until(lp, 0.3, || false);
        assert!(client.borrow().data.is_empty(), "delivered while paused");
        transport.resume_reading();
        assert!(transport.is_reading());
        assert!(run_until(lp, WAIT, || client.borrow().data == b"one two"));
        transport.close();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        close_server(lp, server);
    }

    /// A peer that sends data, `close_notify`, and closes, while the reader is paused: on
    /// `resume_reading` the data comes, then `eof_received`, then a clean `connection_lost`
    /// (the EOF waited behind the held bytes, so no truncation is reported).
    fn paused_reader_gets_data_then_close_notify(lp) {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (port, peer) = rustls_peer_server(move |stream| {
            use std::io::Write;
            wait.recv().unwrap(); // until the reader paused
            stream.write_all(b"last words").unwrap();
            stream.conn.send_close_notify();
            stream.flush().unwrap();
        });
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        transport.pause_reading();
        go.send(()).unwrap();
        peer.join().unwrap();
        run_until(lp, 0.3, || false);
        assert!(client.borrow().data.is_empty());
        transport.resume_reading();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost()));
        let client = client.borrow();
        assert_eq!(client.data, b"last words");
        assert_eq!(&client.events[client.events.len() - 2..], &[Ev::Eof, Ev::Lost(None)], "{:?}", client.lost_error);
    }

    /// The reader pauses inside `data_received`, in the middle of a chunk that also holds
    /// more records, `close_notify` and (behind it) the stream's EOF: nothing more comes while
    /// paused; on `resume_reading` the rest, then `eof_received`, then a clean
    /// `connection_lost`.
    fn pause_inside_a_chunk_holds_the_rest_and_the_eof(lp) {
        // Four records of 16 KiB (more than one read of records: the first callback cannot
        // have them all), then close_notify, in one write.
        let payload = pattern(64 * 1024);
        let sent = payload.clone();
        let (port, peer) = rustls_peer_server(move |stream| {
            use std::io::Write;
            stream.conn.writer().write_all(&sent).unwrap();
            stream.conn.send_close_notify();
            stream.flush().unwrap();
        });
        let lp2 = lp.clone();
        let (transport, client) = run_within(lp, WAIT, async move {
            let factory = || PauseOnData(TlsRec::default());
            lp2.create_connection(factory, ("127.0.0.1", port), client_options()).await
        })
        .unwrap();
        peer.join().unwrap();
        assert!(run_until(lp, WAIT, || !client.borrow().0.data.is_empty()));
        let first = client.borrow().0.data.len();
        run_until(lp, 0.3, || false);
        assert_eq!(client.borrow().0.data.len(), first, "delivered while paused");
        assert!(first < payload.len());
        assert!(!client.borrow().0.is_lost());
        transport.resume_reading();
        assert!(run_until(lp, WAIT, || client.borrow().0.is_lost()));
        let rec = &client.borrow().0;
        assert!(rec.data == payload, "all of it, in order");
        assert_eq!(&rec.events[rec.events.len() - 2..], &[Ev::Eof, Ev::Lost(None)], "{:?}", rec.lost_error);
    }

    /// `abort` over TLS: `connection_lost(None)` once; the peer, cut off without
    /// `close_notify`, learns of a truncation.
    fn abort_is_truncation_for_the_peer(lp) {
        let (server, port, served) = tls_server(lp, true, ServerOptions::default());
        let (transport, client) = tls_connect(lp, port, client_options()).unwrap();
        // A round trip first, so nothing is left unread (closing a socket with unread data
        // resets the connection instead).
        transport.write(b"x").unwrap();
        assert!(run_until(lp, WAIT, || client.borrow().data == b"x"));
        transport.abort();
        assert!(transport.is_closing());
        let peer = served.borrow()[0].clone();
        assert!(run_until(lp, WAIT, || client.borrow().is_lost() && peer.borrow().is_lost()));
        assert_eq!(client.borrow().events.last(), Some(&Ev::Lost(None)));
        let error = peer.borrow().lost_error.clone().expect("the peer sees an error");
        assert_eq!(error.tls_kind(), Some(ringloop::TlsErrorKind::Truncated), "{error}");
        assert!(error.to_string().contains("close_notify"), "{error}");
        close_server(lp, server);
    }

    /// A loop closed with TLS connections open lets go of both sides' protocols (each keeps
    /// its transport: the layer, the protocol and the stream below hold one another).
    fn closing_the_loop_with_tls_connections_open_frees_them(lp) {
        let own = EventLoop::with_backend(lp.backend()).unwrap();
        let (server, port, served) = tls_server(&own, true, ServerOptions::default());
        let (transport, client) = tls_connect(&own, port, client_options()).unwrap();
        transport.write(b"x").unwrap();
        assert!(run_until(&own, WAIT, || client.borrow().data == b"x"));
        let peer = served.borrow()[0].clone();
        drop((transport, server));
        own.close().unwrap();
        assert_eq!(std::rc::Rc::strong_count(&client), 1, "the client's protocol was let go");
        assert_eq!(std::rc::Rc::strong_count(&peer), 2, "the server side's (and `served`)");
        assert!(!client.borrow().is_lost() && !peer.borrow().is_lost(), "no callback");
    }

    /// TLS over Unix stream sockets (`server_hostname` required: a path is no host name).
    fn unix_sockets(lp) {
        let dir = TempDir::for_test(lp, "tls-unix");
        let path = dir.join("tls.sock");
        let lp2 = lp.clone();
        let (sent, got) = run_within(lp, WAIT, async move {
            let options = UnixServerOptions::default().ssl(pki().server());
            let server = lp2.start_unix_server(uring_tests::echo_lines, &path, options).await?;
            let refused = lp2
                .open_unix_connection(&path, UnixConnectOptions::new().ssl(pki().client()))
                .await
                .err();
            let options = UnixConnectOptions::new().ssl(pki().client()).server_hostname("localhost");
            let (reader, writer) = lp2.open_unix_connection(&path, options).await?;
            writer.write(b"over a unix socket\n")?;
            let line = reader.readline().await?;
            writer.close();
            writer.wait_closed().await?;
            server.close();
            server.wait_closed().await;
            Ok::<_, Error>((refused, line))
        })
        .unwrap();
        assert!(matches!(&sent, Some(Error::InvalidArgument { message: m, .. }) if m.contains("server_hostname")), "{sent:?}");
        assert_eq!(got, b"over a unix socket\n");
    }

    /// `connect_accepted_socket_with` serves TLS on an accepted socket and returns after the
    /// handshake; a client on `sock` needs `server_hostname`.
    fn accepted_socket(lp) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lp2 = lp.clone();
        let (client_side, server_side) = run_within(lp, WAIT, async move {
            let client_sock = std::net::TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            let missing_name = lp2
                .create_connection(TlsRec::default, Address::NONE, ConnectOptions::new().ssl(pki().client()).sock(client_sock.try_clone().unwrap()))
                .await
                .err();
            assert!(matches!(missing_name, Some(Error::InvalidArgument { message: ref m, .. }) if m.contains("server_hostname")), "{missing_name:?}");
            let options = ConnectOptions::new().ssl(pki().client()).sock(client_sock).server_hostname("localhost");
            let lp3 = lp2.clone();
            let server = lp2
                .create_task(async move {
                    let options = AcceptedSocketOptions::new().ssl(pki().server());
                    lp3.connect_accepted_socket_with(TlsRec::default, OwnedFd::from(accepted), options).await
                })
                .unwrap();
            let client = lp2.create_connection(TlsRec::echo, Address::NONE, options).await;
            (client.unwrap(), server.await.unwrap().unwrap())
        });
        let (server_transport, server_rec) = server_side;
        assert_eq!(server_rec.borrow().events, vec![Ev::Made]);
        server_transport.write(b"ping").unwrap();
        assert!(run_until(lp, WAIT, || server_rec.borrow().data == b"ping"));
        client_side.0.close();
        assert!(run_until(lp, WAIT, || server_rec.borrow().is_lost() && client_side.1.borrow().is_lost()));
        assert_eq!(server_rec.borrow().events.last(), Some(&Ev::Lost(None)));
    }

    /// The TLS arguments are checked as asyncio checks them, before anything connects.
    fn argument_rules(lp) {
        let lp2 = lp.clone();
        let errors = run_within(lp, WAIT, async move {
            let connect = |options: ConnectOptions| {
                let lp = lp2.clone();
                async move { lp.create_connection(TlsRec::default, ("127.0.0.1", 9), options).await.err() }
            };
            vec![
                connect(ConnectOptions::new().server_hostname("x")).await,
                connect(ConnectOptions::new().ssl_handshake_timeout(1.0)).await,
                connect(ConnectOptions::new().ssl_shutdown_timeout(1.0)).await,
                connect(client_options().ssl_handshake_timeout(-1.0)).await,
                connect(client_options().ssl_shutdown_timeout(0.0)).await,
                connect(ConnectOptions::new().ssl(pki().server())).await,
                connect(client_options().server_hostname("not a name!")).await,
                lp2.create_server(TlsRec::default, "127.0.0.1:0", ServerOptions::default().ssl(pki().client())).await.err(),
                lp2.create_server(TlsRec::default, "127.0.0.1:0", ServerOptions::default().ssl_handshake_timeout(5.0)).await.err(),
            ]
        });
        let expected = [
            "server_hostname is only meaningful with ssl",
            "ssl_handshake_timeout is only meaningful with ssl",
            "ssl_shutdown_timeout is only meaningful with ssl",
            "ssl_handshake_timeout should be a positive number, got -1",
            "ssl_shutdown_timeout should be a positive number, got 0",
            "ssl must be a client config",
            "is not a DNS name or an IP address",
            "ssl must be a server config",
            "ssl_handshake_timeout is only meaningful with ssl",
        ];
        for (error, text) in errors.iter().zip(expected) {
            assert!(matches!(error, Some(Error::InvalidArgument { message: m, .. }) if m.contains(text)), "{error:?} vs {text}");
        }
    }

    /// `TlsConfig::dangerous_client_without_hostname_check`: a name the certificate does not
    /// have is accepted (and an empty `server_hostname` sends none), the chain still checked.
    fn hostname_check_off_is_explicit(lp) {
        let (server, port, _served) = tls_server(lp, false, ServerOptions::default());
        let lax = TlsConfig::dangerous_client_without_hostname_check(pki().roots()).unwrap();
        let options = ConnectOptions::new().ssl(lax.clone()).server_hostname("other.example");
        let (transport, _) = tls_connect(lp, port, options).unwrap();
        transport.abort();
        let (transport, _) = tls_connect(lp, port, ConnectOptions::new().ssl(lax).server_hostname("")).unwrap();
        assert_eq!(transport.get_extra_info("server_hostname"), None);
        transport.abort();
        close_server(lp, server);
    }
}
