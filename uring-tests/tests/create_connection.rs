//! `create_connection`: BEHAVIOURS section 9 (items 61–72, and 75's argument check).
//!
//! Only loopback is used. A connect that stays pending is made by filling a listener's
//! backlog (`listen(0)`, never accepting): the kernel then drops further SYNs. Cases that need
//! a host resolving to several addresses (items 63's "Multiple exceptions", 68, 70) are unit
//! tests in `src/net/connect/tests.rs`, which can hand the address list in directly: here
//! `localhost` may resolve to one address only. So is item 64 (a non-OS error from an attempt
//! propagates unwrapped): no public input makes an attempt fail with anything but an OS error
//! today, so the unit test scripts the failing attempt beside real ones, on both backends.

use std::cell::RefCell;
use std::future::Future as StdFuture;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use ringloop::{Address, BaseProtocol, ConnectOptions, Error, EventLoop, Protocol, Transport};
use uring_tests::{
    accepts_within, backend_tests, full_listener, run_until, run_within, settle, Received,
};

/// Runs `future` on `lp` with a 10 s watchdog (`Err(Runtime)` if it fires).
fn run<T: 'static>(lp: &EventLoop, future: impl StdFuture<Output = T> + 'static) -> T {
    run_within(lp, 10.0, future)
}

/// `create_connection(Received, address, options)` run to completion.
fn connect(
    lp: &EventLoop,
    address: impl Into<Address>,
    options: ConnectOptions,
) -> ringloop::Result<(Transport, Rc<RefCell<Received>>)> {
    let (lp2, address) = (lp.clone(), address.into());
    run(lp, async move { lp2.create_connection(Received::default, address, options).await })
}

/// A loopback port with no listener (bound, then released).
fn closed_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

fn skip(test: &str, why: &str) {
    uring_tests::skipped(format_args!("{test}: {why}"));
}

backend_tests! {
    /// Item 61: transport and protocol, peername/sockname, data both ways.
    fn item61_connects_and_data_flows(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut stream, from) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).unwrap();
            stream.write_all(b"world").unwrap();
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).unwrap();
            (buf, from)
        });
        let (transport, protocol) =
            connect(lp, ("127.0.0.1", addr.port()), ConnectOptions::new()).unwrap();
        assert_eq!(transport.peername().and_then(|a| a.as_socket()), Some(addr));
        let sockname = transport.sockname().and_then(|a| a.as_socket()).unwrap();
        transport.write(b"hello").unwrap();
        assert!(run_until(lp, 5.0, || protocol.borrow().data == b"world"));
        assert!(protocol.borrow().transport.is_some(), "connection_made ran");
        transport.close();
        assert!(run_until(lp, 5.0, || protocol.borrow().lost));
        let (got, from) = peer.join().unwrap();
        assert_eq!((&got, from), (b"hello", sockname));
    }

    /// Item 61: `sock=` takes an already connected socket.
    fn item61_sock_is_used_as_is(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let local = stream.local_addr().unwrap();
        let (transport, protocol) = connect(lp, Address::NONE, ConnectOptions::new().sock(stream)).unwrap();
        assert_eq!(transport.sockname().and_then(|a| a.as_socket()), Some(local));
        server.write_all(b"ping").unwrap();
        assert!(run_until(lp, 5.0, || protocol.borrow().data == b"ping"));
        transport.close();
        assert!(run_until(lp, 5.0, || protocol.borrow().lost));
    }

    /// Item 62: `local_addr` binds; in use → EADDRINUSE naming the address; no address of the
    /// remote's family → an I/O error.
    fn item62_local_addr(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let local_port = closed_port("127.0.0.1");
        let options = ConnectOptions::new().local_addr(("127.0.0.1", local_port));
        let (transport, _) = connect(lp, ("127.0.0.1", port), options).unwrap();
        let sockname = transport.sockname().and_then(|a| a.as_socket()).unwrap();
        assert_eq!(sockname.port(), local_port);
        transport.close();

        let in_use = TcpListener::bind("127.0.0.1:0").unwrap();
        let in_use_addr = in_use.local_addr().unwrap();
        let options = ConnectOptions::new().local_addr(("127.0.0.1", in_use_addr.port()));
        let err = connect(lp, ("127.0.0.1", port), options).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err}");
        assert!(err.to_string().contains(&in_use_addr.to_string()), "{err}");

        let options = ConnectOptions::new().local_addr(("::1", 0));
        let err = connect(lp, ("127.0.0.1", port), options).unwrap_err();
        assert!(err.to_string().contains("no matching local address"), "{err}");
        settle(lp);
    }

    /// Item 63 (one address) and the errno: refused → ECONNREFUSED naming the address; with
    /// `all_errors`, a group of one.
    fn item63_refused_errors(lp) {
        let port = closed_port("127.0.0.1");
        let err = connect(lp, ("127.0.0.1", port), ConnectOptions::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
        let options = ConnectOptions::new().all_errors(true);
        let err = connect(lp, ("127.0.0.1", port), options).unwrap_err();
        let Error::Multiple(errors) = &err else { panic!("not a group: {err:?}") };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].raw_os_error(), Some(libc::ECONNREFUSED));
        settle(lp);
    }

    /// Item 65: cancelling a pending connect cancels its op and closes its socket: once the
    /// backlog frees up, no connection from it ever arrives.
    fn item65_cancel_closes_the_socket(lp) {
        let Some((listener, filling)) = full_listener("127.0.0.1:0".parse().unwrap()) else {
            return skip("item65", "the kernel never left a connect pending");
        };
        let port = listener.local_addr().unwrap().port();
        let lp2 = lp.clone();
        let task = lp
            .create_task(async move {
                lp2.create_connection(Received::default, ("127.0.0.1", port), ConnectOptions::new())
                    .await
            })
            .unwrap();
        let canceller = task.clone();
        lp.call_later(0.2, move || {
            canceller.cancel();
        })
        .unwrap();
        let result = run(lp, task);
        assert!(matches!(result, Err(Error::Cancelled)), "{:?}", result.map(|_| ()));
        settle(lp);
        // Free the backlog; a socket still open would now connect (SYN retransmit, ~1 s).
        let accepted = accepts_within(&listener, Duration::from_millis(1500));
        assert_eq!(accepted, filling.len(), "the cancelled connect went on");
    }

    /// Item 66: argument checks, and item 75's `server_hostname` without TLS.
    fn item66_argument_checks(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // sock with an address of any form: the error says they exclude each other.
        let exclusive = "host/port and sock can not be specified at the same time";
        let addresses = [Address::from("127.0.0.1:1"), ("localhost", 1).into(), 1.into()];
        for address in addresses {
            let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let options = ConnectOptions::new().sock(stream);
            let err = connect(lp, address, options).unwrap_err();
            assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains(exclusive)), "{err:?}");
        }
        let err = connect(lp, Address::NONE, ConnectOptions::new()).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains("no sock")), "{err:?}");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = connect(lp, Address::NONE, ConnectOptions::new().sock(udp)).unwrap_err();
        let stream_expected = matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains("A Stream Socket was expected"));
        assert!(stream_expected, "{err:?}");
        let options = ConnectOptions::new().server_hostname("example.com");
        let err = connect(lp, ("127.0.0.1", 1), options).unwrap_err();
        assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains("ssl")), "{err:?}");
        let options = ConnectOptions::new().happy_eyeballs_delay(f64::NAN);
        let err = connect(lp, ("127.0.0.1", 1), options).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
        // A family getaddrinfo cannot satisfy: a DNS error, not a connect.
        let options = ConnectOptions::new().family(libc::AF_INET6);
        let err = connect(lp, ("127.0.0.1", 1), options).unwrap_err();
        assert!(matches!(err, Error::Dns { .. }), "{err:?}");
    }

    /// Item 67: numeric hosts skip DNS (they work with no executor), IPv4 and IPv6.
    fn item67_numeric_hosts_skip_dns(lp) {
        let lp2 = lp.clone();
        run(lp, async move { lp2.shutdown_default_executor(None).await }).unwrap();
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let (t, _) = connect(lp, ("127.0.0.1", v4.local_addr().unwrap().port()), ConnectOptions::new()).unwrap();
        t.close();
        match TcpListener::bind("[::1]:0") {
            Ok(v6) => {
                let addr = v6.local_addr().unwrap();
                let (t, _) = connect(lp, ("::1", addr.port()), ConnectOptions::new()).unwrap();
                assert_eq!(t.peername().and_then(|a| a.as_socket()), Some(addr));
                t.close();
            }
            Err(err) => skip("item67 ::1", &err.to_string()),
        }
        settle(lp);
    }

    /// Items 68/70 with one address: Happy Eyeballs on a single working address connects.
    fn item68_happy_eyeballs_single_address(lp) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ConnectOptions::new().happy_eyeballs_delay(0.05);
        let (t, _) = connect(lp, ("127.0.0.1", addr.port()), options).unwrap();
        assert_eq!(t.peername().and_then(|a| a.as_socket()), Some(addr));
        t.close();
        settle(lp);
    }
}

/// Panics in `connection_made`; records what it receives and each `connection_lost`.
#[derive(Default)]
struct PanicsInMade {
    data: Vec<u8>,
    lost: Vec<Option<String>>,
}

impl BaseProtocol for PanicsInMade {
    fn connection_made(&mut self, _transport: Transport) {
        panic!("boom in connection_made");
    }
    fn connection_lost(&mut self, error: Option<Error>) {
        self.lost.push(error.map(|e| e.to_string()));
    }
}

impl Protocol for PanicsInMade {
    fn data_received(&mut self, data: &[u8]) {
        self.data.extend_from_slice(data);
    }
}

backend_tests! {
    /// Item 72: a panic in `connection_made` does not stop create_connection returning the
    /// transport and protocol. As in asyncio (which runs `connection_made` as a plain
    /// callback), the panic is reported once and the transport stays open: data still
    /// arrives, and a later `close` gives `connection_lost(None)`, once.
    fn item72_panic_in_connection_made(lp) {
        let errors = uring_tests::capture_error_texts(lp);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lp2 = lp.clone();
        let (transport, protocol) = run(lp, async move {
            lp2.create_connection(PanicsInMade::default, ("127.0.0.1", port), ConnectOptions::new())
                .await
        })
        .expect("create_connection returns");
        let (mut peer, _) = listener.accept().unwrap();
        assert!(run_until(lp, 5.0, || !errors.borrow().is_empty()), "the panic is reported");
        assert!(!transport.is_closing(), "a panic in connection_made is not fatal");
        peer.write_all(b"still here").unwrap();
        assert!(run_until(lp, 5.0, || protocol.borrow().data == b"still here"), "reads go on");
        assert!(protocol.borrow().lost.is_empty(), "not lost before close");
        transport.close();
        assert!(run_until(lp, 5.0, || !protocol.borrow().lost.is_empty()), "connection_lost");
        uring_tests::spin(lp, 0.05);
        assert_eq!(protocol.borrow().lost, vec![None], "connection_lost(None), once");
        let errors = errors.borrow();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("protocol.connection_made() failed"), "{errors:?}");
        assert!(errors[0].contains("boom in connection_made"), "{errors:?}");
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(peer.read(&mut [0u8; 1]).unwrap(), 0, "the peer sees the socket closed");
    }
}
