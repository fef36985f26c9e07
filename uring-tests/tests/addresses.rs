//! asyncio's `host, port` as one [`Address`] (issue 16, "Signatures that fit Rust"): a server
//! and a client from each form — `SocketAddr`, `(host, port)`, `"ip:port"`, `"localhost:port"`,
//! an IPv6 literal — and malformed addresses refused with a typed error, never a panic.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};

use ringloop::{
    Address, BaseProtocol, ConnectOptions, DatagramOptions, DatagramProtocol, Error, EventLoop,
    Server, ServerOptions,
};
use uring_tests::{backend_tests, echo_lines, off_loop, run_within, skipped, Received};

/// True where IPv6 loopback works (a container may have none).
fn has_ipv6() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Each way to write an IPv4 loopback address with `port`, named for failure messages.
fn v4_forms(port: u16) -> Vec<(&'static str, Address)> {
    vec![
        ("SocketAddr", SocketAddr::from(([127, 0, 0, 1], port)).into()),
        ("(&str, u16)", ("127.0.0.1", port).into()),
        ("(String, u16)", (String::from("127.0.0.1"), port).into()),
        ("\"ip:port\"", format!("127.0.0.1:{port}").into()),
        ("\"localhost:port\"", format!("localhost:{port}").into()),
    ]
}

/// Each way to write the IPv6 loopback address with `port`.
fn v6_forms(port: u16) -> Vec<(&'static str, Address)> {
    vec![
        ("SocketAddrV6", SocketAddr::from((Ipv6Addr::LOCALHOST, port)).into()),
        ("(\"::1\", u16)", ("::1", port).into()),
        ("\"[::1]:port\"", format!("[::1]:{port}").into()),
    ]
}

/// The v4 forms, and the v6 ones where IPv6 works (said once when skipped).
fn all_forms(port: u16) -> Vec<(&'static str, Address)> {
    let mut forms = v4_forms(port);
    if has_ipv6() {
        forms.extend(v6_forms(port));
    } else {
        skipped("the IPv6 address forms: no IPv6 loopback here");
    }
    forms
}

/// Sends a line to `at` from a blocking client thread and returns the echo.
async fn echo_through(lp: &EventLoop, at: SocketAddr) -> String {
    off_loop(lp, move || {
        let mut stream = TcpStream::connect(at).expect("connect");
        stream.write_all(b"ping\n").unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        line
    })
    .await
}

/// The server's first socket address.
fn first_addr(server: &Server) -> SocketAddr {
    server.sockets()[0].as_socket().expect("an inet socket")
}

/// A streams server that echoes lines, listening on `address`.
async fn line_echo_server(lp: &EventLoop, address: &str) -> Server {
    let server = lp.start_server(echo_lines, address, ServerOptions::new()).await;
    server.unwrap_or_else(|e| panic!("start_server({address}): {e}"))
}

/// A datagram protocol that does nothing.
struct Quiet;
impl BaseProtocol<ringloop::DatagramTransport> for Quiet {}
impl DatagramProtocol for Quiet {}

backend_tests! {
    fn a_server_from_each_address_form_serves(lp) {
        for (name, address) in all_forms(0) {
            let shown = address.to_string();
            let lp2 = lp.clone();
            run_within(lp, 10.0, async move {
                let server = lp2.start_server(echo_lines, address, ServerOptions::new()).await;
                let server = server.unwrap_or_else(|e| panic!("start_server({name}): {e}"));
                let bound = server.sockets();
                assert!(!bound.is_empty(), "{name}: no socket");
                for sockaddr in bound {
                    let at = sockaddr.as_socket().unwrap();
                    assert!(at.ip().is_loopback(), "{name} ({shown}) bound {at}");
                    assert_eq!(echo_through(&lp2, at).await, "ping\n", "{name} at {at}");
                }
                server.close();
                server.wait_closed().await;
            });
        }
    }

    fn a_protocol_server_from_a_socket_addr_and_a_bare_port(lp) {
        let lp2 = lp.clone();
        run_within(lp, 10.0, async move {
            let literal = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = lp2.create_server(Received::default, literal, ServerOptions::new());
            let server = server.await.expect("create_server(SocketAddr)");
            assert_eq!(first_addr(&server).ip(), literal.ip());
            server.close();
            // A bare port: every interface (asyncio's host=None), so loopback reaches it.
            let server = lp2.create_server(Received::default, 0, ServerOptions::new()).await;
            let server = server.expect("create_server(port)");
            for sockaddr in server.sockets() {
                assert!(sockaddr.as_socket().unwrap().ip().is_unspecified(), "{sockaddr:?}");
            }
            let port = first_addr(&server).port();
            let (transport, _) = lp2
                .create_connection(Received::default, ("127.0.0.1", port), ConnectOptions::new())
                .await
                .expect("connect to the wildcard server");
            transport.close();
            server.close();
        });
    }

    fn a_client_from_each_address_form_connects(lp) {
        let lp2 = lp.clone();
        run_within(lp, 10.0, async move {
            let v4 = line_echo_server(&lp2, "127.0.0.1:0").await;
            let mut clients = v4_forms(first_addr(&v4).port());
            let v6 = if has_ipv6() {
                let v6 = line_echo_server(&lp2, "[::1]:0").await;
                clients.extend(v6_forms(first_addr(&v6).port()));
                Some(v6)
            } else {
                skipped("the IPv6 client forms: no IPv6 loopback here");
                None
            };
            for (name, address) in clients {
                // Through the streams API (open_connection) ...
                let opened = lp2.open_connection(address.clone(), ConnectOptions::new()).await;
                let (reader, writer) = opened.unwrap_or_else(|e| panic!("open_connection({name}): {e}"));
                writer.write(b"ping\n").unwrap();
                assert_eq!(reader.readline().await.unwrap(), b"ping\n", "{name}");
                writer.close();
                // ... and the protocol API (create_connection).
                let connected = lp2.create_connection(Received::default, address, ConnectOptions::new());
                let (transport, _) = connected.await.unwrap_or_else(|e| panic!("create_connection({name}): {e}"));
                assert!(transport.peername().and_then(|a| a.as_socket()).unwrap().ip().is_loopback());
                transport.close();
            }
            v4.close();
            if let Some(v6) = v6 {
                v6.close();
            }
        });
    }

    fn a_local_addr_from_each_form(lp) {
        let lp2 = lp.clone();
        run_within(lp, 10.0, async move {
            let server = line_echo_server(&lp2, "127.0.0.1:0").await;
            let to = first_addr(&server);
            let locals: [Address; 3] =
                [SocketAddr::from(([127, 0, 0, 1], 0)).into(), "127.0.0.1:0".into(), ("127.0.0.1", 0).into()];
            for local in locals {
                let options = ConnectOptions::new().local_addr(local.clone());
                let (transport, _) = lp2.create_connection(Received::default, to, options).await.unwrap();
                let bound = transport.sockname().and_then(|a| a.as_socket()).unwrap();
                assert_eq!(bound.ip(), to.ip(), "local_addr {local}");
                transport.close();
            }
            // The datagram options take the same forms.
            let options = DatagramOptions::new().local_addr("127.0.0.1:0").remote_addr(to);
            let (transport, _) = lp2.create_datagram_endpoint(|| Quiet, options).await.unwrap();
            assert_eq!(transport.peername().and_then(|a| a.as_socket()), Some(to));
            transport.close();
            server.close();
        });
    }

    fn a_malformed_address_is_a_typed_error(lp) {
        let lp2 = lp.clone();
        run_within(lp, 10.0, async move {
            for text in ["localhost", "127.0.0.1", "::1:80", "host:http", "host:65536", "[::1", ""] {
                let connect = lp2.create_connection(Received::default, text, ConnectOptions::new());
                match connect.await {
                    Err(Error::InvalidArgument { message: msg, .. }) => assert!(
                        msg.contains(&format!("{text:?} is not an address")),
                        "create_connection({text:?}): {msg}"
                    ),
                    other => panic!("create_connection({text:?}): {:?}", other.map(|_| ())),
                }
                let serve = lp2.create_server(Received::default, text, ServerOptions::new()).await;
                assert!(matches!(serve, Err(Error::InvalidArgument { .. })), "create_server({text:?})");
                let opened = lp2.open_connection(text, ConnectOptions::new()).await;
                assert!(matches!(opened, Err(Error::InvalidArgument { .. })), "open_connection({text:?})");
                let options = DatagramOptions::new().local_addr(text);
                let endpoint = lp2.create_datagram_endpoint(|| Quiet, options).await;
                assert!(matches!(endpoint, Err(Error::InvalidArgument { .. })), "local_addr({text:?})");
            }
            // Several hosts make sense for a server only.
            let several = lp2.create_connection(Received::default, (["127.0.0.1", "::1"], 1), ConnectOptions::new());
            match several.await {
                Err(Error::InvalidArgument { message: msg, .. }) => assert!(msg.contains("one host expected"), "{msg}"),
                other => panic!("several hosts: {:?}", other.map(|_| ())),
            }
        });
    }
}
