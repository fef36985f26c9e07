//! Tests of the socket ops with real TCP sockets on 127.0.0.1.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::tests::CONFIGS;
use super::UringDriver;
use crate::driver::{Completion, Interest, Op, SockAddrBuf};

const LIMIT: Duration = Duration::from_secs(5);

fn each_route(test: impl Fn(&[&str], UringDriver<u32>)) {
    for disabled in CONFIGS {
        let Some(driver) = super::tests::ring(disabled) else { return };
        test(disabled, driver);
    }
}

/// Turns until `want` completions arrived or `limit` passed.
fn collect(d: &mut UringDriver<u32>, want: usize, limit: Duration) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while out.len() < want && start.elapsed() < limit {
        d.turn(Some(limit.saturating_sub(start.elapsed())), &mut out).expect("turn");
    }
    out
}

/// Submits `op` and returns its one completion.
fn run(cfg: &[&str], d: &mut UringDriver<u32>, op: Op) -> Completion<u32> {
    let id = d.submit(op, 9);
    let mut out = collect(d, 1, LIMIT);
    assert_eq!(out.len(), 1, "{cfg:?}: {out:?}");
    let c = out.pop().unwrap();
    assert_eq!((c.id, c.owner, c.more), (id, 9, false), "{cfg:?}");
    assert_eq!(d.in_flight(), 0, "{cfg:?}");
    c
}

fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A connected pair: ours non-blocking (the driver's side), the peer blocking with a timeout.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let (l, addr) = listener();
    let peer = TcpStream::connect(addr).unwrap();
    let ours = loop {
        match l.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("accept: {e}"),
        }
    };
    ours.set_nonblocking(true).unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    (ours, peer)
}

/// A fresh non-blocking, close-on-exec TCP socket.
fn tcp_socket() -> OwnedFd {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, ty, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: the fd was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn sockaddr(addr: SocketAddr) -> Box<SockAddrBuf> {
    let SocketAddr::V4(v4) = addr else { panic!("IPv4 only: {addr}") };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let mut buf = SockAddrBuf::empty();
    // SAFETY: `sockaddr_storage` is larger than `sockaddr_in` and aligned for any address.
    unsafe { std::ptr::write((&mut buf.storage as *mut libc::sockaddr_storage).cast(), sin) };
    buf.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    buf
}

#[test]
fn connect_succeeds_to_a_listener_and_is_refused_by_a_closed_port() {
    each_route(|cfg, mut d| {
        let (l, addr) = listener();
        let sock = tcp_socket();
        let c = run(cfg, &mut d, Op::Connect { fd: sock.as_raw_fd(), addr: sockaddr(addr) });
        assert_eq!(c.result.unwrap(), 0, "{cfg:?}");
        assert!(matches!(c.op, Some(Op::Connect { .. })));
        drop(l);
        let sock = tcp_socket();
        let c = run(cfg, &mut d, Op::Connect { fd: sock.as_raw_fd(), addr: sockaddr(addr) });
        let err = c.result.expect_err("connect to a closed port");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{cfg:?}");
    });
}

#[test]
fn send_sends_from_the_offset_and_the_peer_reads_it() {
    each_route(|cfg, mut d| {
        let (ours, mut peer) = tcp_pair();
        let buf = Bytes::from_static(b"hello world");
        let c = run(cfg, &mut d, Op::Send { fd: ours.as_raw_fd(), buf, offset: 6 });
        assert_eq!(c.result.unwrap(), 5, "{cfg:?}");
        let Some(Op::Send { buf, offset, .. }) = c.op else { panic!("{cfg:?}: {:?}", c.op) };
        assert_eq!((&buf[..], offset), (&b"hello world"[..], 6));
        let mut got = [0; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        let bad = Op::Send { fd: ours.as_raw_fd(), buf, offset: 12 };
        let err = run(cfg, &mut d, bad).result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{cfg:?}");
    });
}

#[test]
fn a_big_send_to_a_stalled_peer_can_be_cancelled() {
    each_route(|cfg, mut d| {
        let (ours, mut peer) = tcp_pair();
        let big = Bytes::from(vec![0x5a; 8 << 20]);
        // The first send may complete short; keep sending until one stays pending.
        let (mut offset, mut out) = (0, Vec::new());
        let pending = loop {
            let op = Op::Send { fd: ours.as_raw_fd(), buf: big.clone(), offset };
            let id = d.submit(op, 9);
            let start = Instant::now();
            while out.is_empty() && start.elapsed() < Duration::from_millis(50) {
                d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
            }
            match out.pop() {
                None => break id,
                Some(c) => {
                    let n = c.result.expect("send") as usize;
                    assert!(n > 0 && offset + n < big.len(), "{cfg:?}: sent {n} of {}", big.len());
                    offset += n;
                }
            }
        };
        assert_eq!(d.cancel(pending), Some(9));
        assert_eq!(d.cancel(pending), None);
        drop(big); // the slot's clone keeps the bytes alive until the final CQE
        let start = Instant::now();
        while d.in_flight() > 0 && start.elapsed() < LIMIT {
            d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
        }
        assert!(out.is_empty(), "{cfg:?}: {out:?}");
        assert_eq!(d.in_flight(), 0, "{cfg:?}");
        // The peer gets exactly what the completed sends reported, maybe plus what the
        // cancelled send got out before its cancel (io_uring reports that as ECANCELED).
        drop(ours);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert!(got.len() >= offset && got.iter().all(|b| *b == 0x5a), "{cfg:?}");
    });
}

#[test]
fn every_final_completion_hands_the_op_back() {
    each_route(|cfg, mut d| {
        let (ours, _peer) = tcp_pair();
        let c = run(cfg, &mut d, Op::Poll { fd: ours.as_raw_fd(), interest: Interest::WRITE });
        assert!(matches!(c.op, Some(Op::Poll { .. })), "{cfg:?}: {:?}", c.op);
        let c = run(cfg, &mut d, Op::Poll { fd: -1, interest: Interest::READ });
        assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::EBADF), "{cfg:?}");
        assert!(matches!(c.op, Some(Op::Poll { fd: -1, .. })));
    });
}

#[test]
fn dropping_the_driver_with_a_read_in_flight_does_not_hang() {
    each_route(|cfg, mut d| {
        let (ours, _peer) = tcp_pair();
        d.submit(Op::Read { fd: ours.as_raw_fd(), buf: Vec::with_capacity(1 << 16) }, 1);
        d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        d.submit(Op::Read { fd: ours.as_raw_fd(), buf: Vec::with_capacity(16) }, 2);
        let start = Instant::now();
        assert!(d.shutdown(), "{cfg:?}");
        drop(d);
        assert!(start.elapsed() < Duration::from_millis(900), "{cfg:?}: {:?}", start.elapsed());
    });
}
