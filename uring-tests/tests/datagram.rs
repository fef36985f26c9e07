//! `create_datagram_endpoint` and the datagram transport: BEHAVIOURS section 12 (items 99–103)
//! and item 104's state machine for datagram protocols, on every backend built in, with real
//! UDP and unix datagram sockets.
//!
//! Not applicable (made impossible by types): item 101's "local_addr not a 2-tuple" (an
//! [`EndpointAddr`] is a host and port or a path) and item 102's "str payload" and
//! "bytearray copied" (`sendto` takes `&[u8]` and copies what it queues). Item 103's
//! "non-OSError → fatal" is tested as a panic in a protocol callback; its lost-write counter
//! is observed as "nothing is sent" (the log line after five is not tested).

use std::cell::RefCell;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;

use ringloop::{
    ArgumentKind, BaseProtocol, DatagramOptions, DatagramProtocol, DatagramTransport, EndpointAddr,
    Error, EventLoop, ExtraInfo,
};
use socket2::SockAddr;
use uring_tests::{
    backend_tests, capture_exceptions, in_child, open_fds, run_until, spin, TempDir,
};

/// Generous bound for "this must happen" waits (2 shared cores, debug build).
const WAIT: f64 = 20.0;
/// How long "this must not happen" is watched for.
const QUIET: f64 = 0.1;

/// A recording protocol that checks item 104's order: made, then datagrams and errors, then
/// lost exactly once.
#[derive(Default)]
struct Rec {
    transport: Option<DatagramTransport>,
    /// Echo every datagram back to its sender.
    echo: bool,
    /// Panic in `datagram_received`.
    panic_on_data: bool,
    /// Do not record datagrams (a long-running echo server).
    forget: bool,
    datagrams: Vec<(Vec<u8>, Option<SockAddr>)>,
    errors: Vec<Error>,
    lost: Vec<Option<Error>>,
    pauses: usize,
    resumes: usize,
    /// Order violations seen.
    violations: Vec<String>,
}

impl Rec {
    fn check_open(&mut self, callback: &str) {
        if self.transport.is_none() {
            self.violations.push(format!("{callback} before connection_made"));
        }
        if !self.lost.is_empty() {
            self.violations.push(format!("{callback} after connection_lost"));
        }
    }

    fn check(&self) {
        assert!(self.violations.is_empty(), "{:?}", self.violations);
    }
}

impl BaseProtocol<DatagramTransport> for Rec {
    fn connection_made(&mut self, transport: DatagramTransport) {
        if self.transport.is_some() {
            self.violations.push("connection_made twice".into());
        }
        self.transport = Some(transport);
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        if self.transport.is_none() {
            self.violations.push("connection_lost before connection_made".into());
        }
        self.lost.push(error);
    }

    fn pause_writing(&mut self) {
        self.pauses += 1;
    }

    fn resume_writing(&mut self) {
        self.resumes += 1;
    }
}

impl DatagramProtocol for Rec {
    fn datagram_received(&mut self, data: &[u8], addr: Option<SockAddr>) {
        self.check_open("datagram_received");
        if self.panic_on_data {
            uring_tests::quiet_panic("datagram_received failed");
        }
        if self.echo {
            let transport = self.transport.as_ref().unwrap();
            transport.sendto(data, addr.as_ref()).unwrap();
        }
        if !self.forget {
            self.datagrams.push((data.to_vec(), addr));
        }
    }

    fn error_received(&mut self, error: Error) {
        self.check_open("error_received");
        self.errors.push(error);
    }
}

type Endpoint = (DatagramTransport, Rc<RefCell<Rec>>);

/// How many datagrams [`Pinger`] sends.
const PINGS: usize = 10_000;

/// Sends [`PINGS`] datagrams of sizes spread over 1..=65,507 bytes to an echo server, two in
/// flight (the loopback receive buffer holds only a few 64 KiB datagrams, and UDP drops what
/// does not fit), and checks each echo byte for byte, in order.
struct Pinger {
    transport: Option<DatagramTransport>,
    /// Pseudo-random bytes; datagram `i` is a window of them at a varying offset.
    pool: Vec<u8>,
    sent: usize,
    checked: usize,
    /// The first echo that differed.
    bad: Option<String>,
    errors: Vec<Error>,
    lost: bool,
}

impl Pinger {
    fn new() -> Pinger {
        let mut state = 0x2545_f491_u32;
        let pool = (0..2 * 65_536)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        Pinger {
            transport: None,
            pool,
            sent: 0,
            checked: 0,
            bad: None,
            errors: vec![],
            lost: false,
        }
    }

    /// The size of datagram `i`: the two ends of the range, then a stride through it.
    fn size(i: usize) -> usize {
        match i {
            0 => 1,
            1 => 65_507,
            _ => 1 + (i * 7_919) % 65_507,
        }
    }

    fn window(&self, i: usize) -> &[u8] {
        &self.pool[i % 65_536..i % 65_536 + Self::size(i)]
    }

    fn send_next(&mut self) {
        if self.sent < PINGS {
            let transport = self.transport.as_ref().unwrap();
            transport.sendto(self.window(self.sent), None).unwrap();
            self.sent += 1;
        }
    }
}

impl BaseProtocol<DatagramTransport> for Pinger {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
        self.send_next();
        self.send_next();
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.lost = true;
    }
}

impl DatagramProtocol for Pinger {
    fn datagram_received(&mut self, data: &[u8], _addr: Option<SockAddr>) {
        let i = self.checked;
        if data != self.window(i) {
            let len = data.len();
            self.bad.get_or_insert(format!("echo {i}: {len} bytes, {} sent", Self::size(i)));
        }
        self.checked += 1;
        self.send_next();
    }

    fn error_received(&mut self, error: Error) {
        self.errors.push(error);
    }
}

/// `create_datagram_endpoint` run to completion.
fn endpoint_with(lp: &EventLoop, rec: Rec, options: DatagramOptions) -> Result<Endpoint, Error> {
    let lp2 = lp.clone();
    lp.run_until_complete(async move { lp2.create_datagram_endpoint(move || rec, options).await })
        .expect("run_until_complete")
}

/// The error of a `create_datagram_endpoint` that must fail.
fn endpoint_err(lp: &EventLoop, options: DatagramOptions) -> Error {
    match endpoint_with(lp, Rec::default(), options) {
        Ok(_) => panic!("create_datagram_endpoint succeeded"),
        Err(err) => err,
    }
}

fn endpoint(lp: &EventLoop, options: DatagramOptions) -> Endpoint {
    let made = endpoint_with(lp, Rec::default(), options).expect("create_datagram_endpoint");
    assert!(run_until(lp, WAIT, || made.1.borrow().transport.is_some()), "connection_made");
    made
}

fn echo_endpoint(lp: &EventLoop, options: DatagramOptions) -> Endpoint {
    let made = endpoint_with(lp, Rec { echo: true, ..Rec::default() }, options).unwrap();
    assert!(run_until(lp, WAIT, || made.1.borrow().transport.is_some()), "connection_made");
    made
}

fn sockname(transport: &DatagramTransport) -> SocketAddr {
    transport.sockname().and_then(|a| a.as_socket()).expect("an IP sockname")
}

/// A UDP port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn getsockopt(fd: RawFd, option: i32) -> i32 {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes given.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut i32).cast(), &mut len)
    };
    assert_eq!(rc, 0, "getsockopt({option})");
    value
}

fn close_and_wait(lp: &EventLoop, endpoint: &Endpoint) {
    endpoint.0.close();
    assert!(run_until(lp, WAIT, || !endpoint.1.borrow().lost.is_empty()), "connection_lost");
}

fn errno(error: &Error) -> Option<i32> {
    error.raw_os_error()
}

/// `client` sends `data` to its remote, the echo endpoint `server`: the echo comes back to
/// `client`. Returns the address `server` saw the datagram from.
fn echo_once(
    lp: &EventLoop,
    client: &Endpoint,
    server: &Endpoint,
    data: &[u8],
) -> Option<SockAddr> {
    client.0.sendto(data, None).unwrap();
    assert!(run_until(lp, WAIT, || client.1.borrow().datagrams.len() == 1), "the echo");
    assert_eq!(client.1.borrow().datagrams[0].0, data);
    server.1.borrow().datagrams[0].1.clone()
}

/// Item 99: a `local_addr` server and a `remote_addr` client echo; close → connection_lost.
fn echo_round_trip(lp: &EventLoop, host: &str) {
    let server = echo_endpoint(lp, DatagramOptions::new().local_addr((host, 0)));
    let port = sockname(&server.0).port();
    let client = endpoint(lp, DatagramOptions::new().remote_addr((host, port)));
    assert_eq!(client.0.peername().and_then(|a| a.as_socket()), Some(sockname(&server.0)));
    let from = echo_once(lp, &client, &server, b"hello").and_then(|a| a.as_socket());
    assert_eq!(from, Some(sockname(&client.0)), "the source address is the client's");
    close_and_wait(lp, &client);
    close_and_wait(lp, &server);
    for rec in [&client.1, &server.1] {
        let rec = rec.borrow();
        rec.check();
        assert!(rec.errors.is_empty(), "{:?}", rec.errors);
        assert!(matches!(rec.lost[..], [None]), "{:?}", rec.lost);
    }
}

backend_tests! {
    fn echo_round_trip_ipv4(lp) {
        echo_round_trip(lp, "127.0.0.1");
    }

    fn echo_round_trip_ipv6(lp) {
        if UdpSocket::bind("[::1]:0").is_err() {
            uring_tests::skipped(format_args!("echo_round_trip_ipv6: no IPv6 loopback"));
            return;
        }
        echo_round_trip(lp, "::1");
    }

    fn sending_to_a_closed_port_does_not_stop_later_receives(lp) {
        let (transport, rec) = endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0"));
        let dead = SockAddr::from(closed_port());
        transport.sendto(b"nobody", Some(&dead)).unwrap();
        spin(lp, QUIET);
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"later", sockname(&transport)).unwrap();
        assert!(run_until(lp, WAIT, || !rec.borrow().datagrams.is_empty()));
        assert_eq!(rec.borrow().datagrams[0].0, b"later");
        assert!(!transport.is_closing());
        close_and_wait(lp, &(transport, rec.clone()));
        rec.borrow().check();
    }

    fn socket_options_are_set_only_when_asked(lp) {
        // Item 100.
        let plain = endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0"));
        let fd = plain.0.socket_fd().unwrap();
        assert_eq!(getsockopt(fd, libc::SO_REUSEPORT), 0);
        assert_eq!(getsockopt(fd, libc::SO_BROADCAST), 0);
        assert_eq!(getsockopt(fd, libc::SO_REUSEADDR), 0);
        let target = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = target.local_addr().unwrap().port();
        let options = DatagramOptions::new()
            .local_addr("127.0.0.1:0")
            .remote_addr(("127.0.0.1", port))
            .reuse_port(true)
            .allow_broadcast(true);
        let asked = endpoint(lp, options);
        let fd = asked.0.socket_fd().unwrap();
        assert_eq!(getsockopt(fd, libc::SO_REUSEPORT), 1);
        assert_eq!(getsockopt(fd, libc::SO_BROADCAST), 1);
        assert_eq!(getsockopt(fd, libc::SO_REUSEADDR), 0);
        assert!(asked.0.peername().is_none(), "allow_broadcast does not connect");
        // remote_addr is still the default destination.
        asked.0.sendto(b"default", None).unwrap();
        target.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut buf = [0; 16];
        let (n, _) = target.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"default");
        close_and_wait(lp, &plain);
        close_and_wait(lp, &asked);
    }

    /// Item 101 (fds counted in a child process, alone, so other tests' fds do not count).
    fn argument_errors_are_typed_and_close_what_they_opened(lp) {
        if !in_child(lp, "argument_errors_are_typed_and_close_what_they_opened") {
            return;
        }
        let mismatch = DatagramOptions::new()
            .local_addr("127.0.0.1:0")
            .remote_addr(("127.0.0.1", 9))
            .remote_path("/tmp/x");
        let err = endpoint_err(lp, mismatch);
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        let err = endpoint_err(lp, DatagramOptions::new());
        assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains("address family")), "{err}");
        let v4_v6 = DatagramOptions::new().local_addr("127.0.0.1:0").remote_addr(("::1", 9));
        let err = endpoint_err(lp, v4_v6);
        let want = "create_datagram_endpoint: local_addr 127.0.0.1:0 and remote_addr [::1]:9 have no \
                    address family in common";
        assert!(matches!(&err, Error::InvalidArgument { kind: ArgumentKind::Conflicting, message: m } if m == want), "{err}");
        let unix_inet = DatagramOptions::new().family(libc::AF_UNIX).local_addr("127.0.0.1:0");
        let err = endpoint_err(lp, unix_inet);
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

        // A rejected sock is closed: its port can be bound again.
        let stream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream_at = stream.local_addr().unwrap();
        let err = endpoint_err(lp, DatagramOptions::new().sock(OwnedFd::from(stream)));
        assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains("A datagram socket was expected")));
        assert!(std::net::TcpListener::bind(stream_at).is_ok(), "the stream sock was closed");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp_at = udp.local_addr().unwrap();
        let both = DatagramOptions::new().sock(OwnedFd::from(udp)).reuse_port(true);
        let err = endpoint_err(lp, both);
        assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.contains("reuse_port")), "{err}");
        assert!(UdpSocket::bind(udp_at).is_ok(), "the udp sock was closed");

        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let before = open_fds();
        let err = endpoint_err(lp, DatagramOptions::new().local_addr(("127.0.0.1", port)));
        assert_eq!(errno(&err), Some(libc::EADDRINUSE), "{err}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
        // The close may take a loop turn: wait for the count to come back.
        let back = run_until(lp, WAIT, || open_fds() <= before);
        assert!(back, "the socket that failed to bind is closed: {} > {before}", open_fds());
    }

    fn sendto_checks_the_address_and_sends_empty_datagrams(lp) {
        // Item 102.
        let server = echo_endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0"));
        let port = sockname(&server.0).port();
        let client = endpoint(lp, DatagramOptions::new().remote_addr(("127.0.0.1", port)));
        let other_addr = closed_port();
        let other = SockAddr::from(other_addr);
        let err = client.0.sendto(b"x", Some(&other)).unwrap_err();
        let want = format!("sendto: this transport is connected to 127.0.0.1:{port}: send to no address");
        assert!(matches!(&err, Error::InvalidArgument { message: m, .. } if m.starts_with(&want)), "{err}");
        assert!(err.to_string().ends_with(&format!("not {other_addr}")), "{err}");
        let same = SockAddr::from(sockname(&server.0));
        client.0.sendto(b"", Some(&same)).unwrap();
        assert!(run_until(lp, WAIT, || client.1.borrow().datagrams.len() == 1));
        assert_eq!(client.1.borrow().datagrams[0].0, b"", "an empty datagram echoed");
        close_and_wait(lp, &client);
        close_and_wait(lp, &server);
    }

    fn sends_that_would_block_are_queued_in_order_with_flow_control(lp) {
        // Item 102 (EAGAIN → queue) and BaseProtocol flow control: a unix datagram peer that
        // does not read makes the kernel refuse more after a few datagrams.
        let (mine, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let (transport, rec) = endpoint(lp, DatagramOptions::new().sock(OwnedFd::from(mine)));
        transport.set_write_buffer_limits(Some(2000), Some(500)).unwrap();
        for i in 0..300u32 {
            transport.sendto(&[i.to_le_bytes().as_slice(), &[0; 96]].concat(), None).unwrap();
        }
        assert!(transport.get_write_buffer_size() > 2000, "{}", transport.get_write_buffer_size());
        assert_eq!(rec.borrow().pauses, 1, "paused once past the high-water mark");
        let got = RefCell::new(Vec::new());
        let done = run_until(lp, WAIT, || {
            let mut buf = [0; 200];
            while let Ok(n) = peer.recv(&mut buf) {
                assert_eq!(n, 100, "a datagram is never split or merged");
                got.borrow_mut().push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
            }
            got.borrow().len() == 300
        });
        let got = got.into_inner();
        assert!(done, "{} of 300 arrived", got.len());
        assert_eq!(got, (0..300).collect::<Vec<_>>(), "in order");
        // The peer may read the last datagram before the loop took its send's completion.
        assert!(run_until(lp, WAIT, || transport.get_write_buffer_size() == 0));
        assert_eq!(rec.borrow().resumes, 1);
        close_and_wait(lp, &(transport, rec.clone()));
        rec.borrow().check();
    }

    fn icmp_refusal_reaches_error_received_and_the_endpoint_stays_usable(lp) {
        // Item 103 and the connected-endpoint rule.
        let dead = closed_port();
        let options = DatagramOptions::new().local_addr("127.0.0.1:0").remote_addr(("127.0.0.1", dead.port()));
        let (transport, rec) = endpoint(lp, options);
        let refused = || {
            rec.borrow().errors.iter().any(|e| errno(e) == Some(libc::ECONNREFUSED))
        };
        let got = run_until(lp, WAIT, || {
            transport.sendto(b"anyone?", None).unwrap();
            spin(lp, 0.01);
            refused()
        });
        assert!(got, "ECONNREFUSED reached error_received: {:?}", rec.borrow().errors);
        assert!(!transport.is_closing() && rec.borrow().lost.is_empty(), "not fatal");
        // The port comes alive: the same endpoint talks to it both ways.
        let Ok(peer) = UdpSocket::bind(dead) else {
            uring_tests::skipped(format_args!("the usable-after part: port {dead} was taken meanwhile"));
            return;
        };
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        transport.sendto(b"again", None).unwrap();
        let mut buf = [0; 16];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"again");
        peer.send_to(b"back", sockname(&transport)).unwrap();
        assert!(run_until(lp, WAIT, || !rec.borrow().datagrams.is_empty()));
        assert_eq!(rec.borrow().datagrams[0].0, b"back");
        close_and_wait(lp, &(transport, rec.clone()));
        rec.borrow().check();
    }

    fn sendto_after_close_sends_nothing(lp) {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_nonblocking(true).unwrap();
        let port = peer.local_addr().unwrap().port();
        let (transport, rec) = endpoint(lp, DatagramOptions::new().remote_addr(("127.0.0.1", port)));
        transport.close();
        assert!(transport.is_closing());
        transport.sendto(b"late", None).unwrap();
        assert!(run_until(lp, WAIT, || !rec.borrow().lost.is_empty()));
        spin(lp, QUIET);
        let mut buf = [0; 8];
        assert!(peer.recv(&mut buf).is_err(), "nothing was sent");
        assert!(rec.borrow().errors.is_empty());
    }

    fn a_panicking_protocol_is_a_fatal_error(lp) {
        let seen = capture_exceptions(lp);
        let rec = Rec { panic_on_data: true, ..Rec::default() };
        let (transport, rec) =
            endpoint_with(lp, rec, DatagramOptions::new().local_addr("127.0.0.1:0")).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(run_until(lp, WAIT, || rec.borrow().transport.is_some()));
        peer.send_to(b"boom", sockname(&transport)).unwrap();
        assert!(run_until(lp, WAIT, || !rec.borrow().lost.is_empty()));
        assert!(matches!(rec.borrow().lost[..], [Some(Error::Panic(_))]), "{:?}", rec.borrow().lost);
        let seen = seen.borrow();
        assert!(seen.iter().any(|c| c.message.contains("datagram_received")), "{seen:?}");
    }

    fn oversize_datagrams_are_errors_never_truncated(lp) {
        // 65,507 bytes is the largest UDP payload over IPv4; one more is EMSGSIZE on send.
        let server = echo_endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0"));
        let port = sockname(&server.0).port();
        let client = endpoint(lp, DatagramOptions::new().remote_addr(("127.0.0.1", port)));
        client.0.sendto(&vec![1; 65_508], None).unwrap();
        assert!(run_until(lp, WAIT, || !client.1.borrow().errors.is_empty()));
        assert_eq!(errno(&client.1.borrow().errors[0]), Some(libc::EMSGSIZE));
        client.0.sendto(&vec![2; 65_507], None).unwrap();
        assert!(run_until(lp, WAIT, || client.1.borrow().datagrams.len() == 1));
        assert_eq!(client.1.borrow().datagrams[0].0, vec![2; 65_507]);
        close_and_wait(lp, &client);
        close_and_wait(lp, &server);
        // A unix datagram longer than the receive buffer: error_received, then the next one.
        let (mine, peer) = UnixDatagram::pair().unwrap();
        let (transport, rec) = endpoint(lp, DatagramOptions::new().sock(OwnedFd::from(mine)));
        peer.send(&vec![3; 100_000]).unwrap();
        peer.send(b"small").unwrap();
        assert!(run_until(lp, WAIT, || rec.borrow().datagrams.len() == 1));
        let rec_ref = rec.borrow();
        assert_eq!(rec_ref.datagrams[0].0, b"small", "the long one was not delivered cut");
        assert_eq!(rec_ref.errors.len(), 1);
        assert_eq!(errno(&rec_ref.errors[0]), Some(libc::EMSGSIZE), "{}", rec_ref.errors[0]);
        drop(rec_ref);
        close_and_wait(lp, &(transport, rec));
    }

    fn ten_thousand_datagrams_of_every_size_round_trip_intact(lp) {
        let server = endpoint_with(lp, Rec { echo: true, forget: true, ..Rec::default() },
            DatagramOptions::new().local_addr("127.0.0.1:0")).unwrap();
        let port = sockname(&server.0).port();
        let options = DatagramOptions::new().remote_addr(("127.0.0.1", port));
        let lp2 = lp.clone();
        let pinger = lp
            .run_until_complete(async move { lp2.create_datagram_endpoint(Pinger::new, options).await })
            .unwrap()
            .unwrap();
        let done = || {
            let pinger = pinger.1.borrow();
            pinger.checked == PINGS || pinger.bad.is_some() || !pinger.errors.is_empty()
        };
        let finished = run_until(lp, 120.0, done);
        let p = pinger.1.borrow();
        assert!(finished, "stalled at echo {} of {PINGS}", p.checked);
        assert_eq!(p.bad, None);
        assert!(p.errors.is_empty() && server.1.borrow().errors.is_empty(), "{:?}", p.errors);
        assert_eq!((p.checked, p.sent), (PINGS, PINGS));
        drop(p);
        close_and_wait(lp, &server);
        pinger.0.close();
        assert!(run_until(lp, WAIT, || pinger.1.borrow().lost));
    }

    fn broadcast_needs_allow_broadcast(lp) {
        let (plain, rec) = endpoint(lp, DatagramOptions::new().local_addr(("0.0.0.0", 0)));
        let broadcast = SockAddr::from("255.255.255.255:9".parse::<SocketAddr>().unwrap());
        plain.sendto(b"all", Some(&broadcast)).unwrap();
        assert!(run_until(lp, WAIT, || !rec.borrow().errors.is_empty()));
        assert_eq!(errno(&rec.borrow().errors[0]), Some(libc::EACCES), "{}", rec.borrow().errors[0]);
        close_and_wait(lp, &(plain, rec));
        let options = DatagramOptions::new().local_addr(("0.0.0.0", 0)).allow_broadcast(true);
        let (allowed, rec) = endpoint(lp, options);
        allowed.sendto(b"all", Some(&broadcast)).unwrap();
        spin(lp, QUIET);
        let errors: Vec<_> = rec.borrow().errors.iter().filter_map(errno).collect();
        // A host without a broadcast-capable route answers ENETUNREACH: still not refused.
        assert!(errors.iter().all(|e| *e != libc::EACCES), "{errors:?}");
        close_and_wait(lp, &(allowed, rec));
    }

    fn two_endpoints_with_reuse_port_bind_one_port(lp) {
        let first = endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0").reuse_port(true));
        let port = sockname(&first.0).port();
        let second = endpoint(lp, DatagramOptions::new().local_addr(("127.0.0.1", port)).reuse_port(true));
        assert_eq!(sockname(&second.0).port(), port);
        let err = endpoint_err(lp, DatagramOptions::new().local_addr(("127.0.0.1", port)));
        assert_eq!(errno(&err), Some(libc::EADDRINUSE), "without reuse_port: {err}");
        close_and_wait(lp, &first);
        close_and_wait(lp, &second);
    }

    fn unix_datagram_endpoints_echo_and_replace_a_stale_socket_file(lp) {
        let dir = TempDir::for_test(lp, "unix-datagram-endpoints");
        let (server_path, client_path) = (dir.join("server.sock"), dir.join("client.sock"));
        let server = echo_endpoint(lp, DatagramOptions::new().local_path(&server_path));
        let options = DatagramOptions::new().local_path(&client_path).remote_path(&server_path);
        let client = endpoint(lp, options);
        let from = echo_once(lp, &client, &server, b"over unix").unwrap();
        assert_eq!(from.as_pathname(), Some(client_path.as_path()));
        assert!(matches!(client.0.get_extra_info("peername"), Some(ExtraInfo::Address(_))));
        close_and_wait(lp, &client);
        close_and_wait(lp, &server);
        assert!(server_path.exists(), "the socket file stays, as asyncio leaves it");
        let again = endpoint(lp, DatagramOptions::new().local_path(&server_path));
        close_and_wait(lp, &again);
        let _ = EndpointAddr::Unix(server_path);
    }

    fn abstract_unix_datagram_endpoints_talk(lp) {
        let name = format!("\0ringloop-dgram-{}-{}", std::process::id(), lp.backend());
        let server = echo_endpoint(lp, DatagramOptions::new().local_path(&name));
        let client_name = format!("{name}-client");
        let options = DatagramOptions::new().local_path(&client_name).remote_path(&name);
        let client = endpoint(lp, options);
        let from = echo_once(lp, &client, &server, b"abstract").unwrap();
        assert_eq!(from.as_abstract_namespace(), Some(&client_name.as_bytes()[1..]));
        assert!(server.0.peername().is_none(), "an unconnected endpoint has no peername");
        close_and_wait(lp, &client);
        close_and_wait(lp, &server);
    }

    /// Counted in a child process, alone, so other tests' fds do not count.
    fn close_leaks_no_fd_and_connection_lost_comes_once(lp) {
        if !in_child(lp, "close_leaks_no_fd_and_connection_lost_comes_once") {
            return;
        }
        spin(lp, QUIET);
        let before = open_fds();
        let server = echo_endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0"));
        let port = sockname(&server.0).port();
        let client = endpoint(lp, DatagramOptions::new().remote_addr(("127.0.0.1", port)));
        let Some(ExtraInfo::Fd(fd)) = client.0.get_extra_info("socket") else { panic!("no fd") };
        assert!(fd >= 0);
        assert!(matches!(client.0.get_extra_info("sockname"), Some(ExtraInfo::Address(_))));
        client.0.sendto(b"x", None).unwrap();
        assert!(run_until(lp, WAIT, || client.1.borrow().datagrams.len() == 1));
        client.0.close();
        client.0.close();
        client.0.abort();
        server.0.abort();
        server.0.abort();
        server.0.close();
        assert!(run_until(lp, WAIT, || {
            !client.1.borrow().lost.is_empty() && !server.1.borrow().lost.is_empty()
        }));
        spin(lp, QUIET);
        assert_eq!(client.1.borrow().lost.len(), 1);
        assert_eq!(server.1.borrow().lost.len(), 1);
        assert!(client.0.socket_fd().is_none());
        assert!(run_until(lp, WAIT, || open_fds() <= before), "{} fds, {before} before", open_fds());
        client.1.borrow().check();
        server.1.borrow().check();
    }

    fn set_protocol_switches_where_datagrams_go(lp) {
        let (transport, first) = endpoint(lp, DatagramOptions::new().local_addr("127.0.0.1:0"));
        assert!(transport.get_protocol::<Rec>().is_some_and(|p| Rc::ptr_eq(&p, &first)));
        let second = Rc::new(RefCell::new(Rec { transport: Some(transport.clone()), ..Rec::default() }));
        transport.set_protocol(second.clone());
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"to the second", sockname(&transport)).unwrap();
        assert!(run_until(lp, WAIT, || !second.borrow().datagrams.is_empty()));
        assert!(first.borrow().datagrams.is_empty());
        close_and_wait(lp, &(transport, second));
    }

    fn a_family_only_endpoint_sends_unbound(lp) {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let (transport, rec) = endpoint(lp, DatagramOptions::new().family(libc::AF_INET));
        let to = SockAddr::from(peer.local_addr().unwrap());
        transport.sendto(b"hi", Some(&to)).unwrap();
        let mut buf = [0; 8];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        peer.send_to(b"reply", from).unwrap();
        assert!(run_until(lp, WAIT, || !rec.borrow().datagrams.is_empty()));
        close_and_wait(lp, &(transport, rec));
    }
}
