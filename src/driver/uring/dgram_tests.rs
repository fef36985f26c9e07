//! `SendMsg` on real UDP sockets, on every route: io_uring's opcode, io_uring's syscall
//! fallback (`op_sendmsg` disabled) and, with `fallback`, epoll. (Receiving is
//! `RecvMsgMulti`: `dgram_multi_tests.rs`.)

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::SockAddr;

use crate::driver::any::Driver;
use crate::driver::{Completion, Op, SendMsgBuf};

const LIMIT: Duration = Duration::from_secs(5);

/// Every driver route datagram ops can take on this kernel, named.
fn drivers() -> Vec<(&'static str, Driver<u32>)> {
    super::tests::drivers(&[("uring", &[])])
}

fn udp() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

/// Turns until `n` completions arrived.
fn collect(d: &mut Driver<u32>, n: usize) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while out.len() < n && start.elapsed() < LIMIT {
        d.turn(Some(LIMIT), &mut out).unwrap();
    }
    assert_eq!(out.len(), n, "{out:?}");
    out
}

/// Turns until one completion arrives.
fn one(d: &mut Driver<u32>) -> Completion<u32> {
    collect(d, 1).pop().unwrap()
}

/// Receives one datagram on `socket` the plain way (waiting up to [`LIMIT`]).
fn recv_from(socket: &UdpSocket) -> (Vec<u8>, std::net::SocketAddr) {
    let mut buf = [0; 100];
    let deadline = Instant::now() + LIMIT;
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => return (buf[..n].to_vec(), from),
            Err(e) if Instant::now() < deadline => assert_eq!(e.raw_os_error(), Some(libc::EAGAIN)),
            Err(e) => panic!("no datagram: {e}"),
        }
    }
}

#[test]
fn sendmsg_to_an_address_reaches_it_from_the_sender() {
    for (name, mut d) in drivers() {
        let (a, b) = (udp(), udp());
        let to = SockAddr::from(b.local_addr().unwrap());
        let msg = SendMsgBuf::new(Bytes::from_static(b"hello"), Some(&to));
        let id = d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 2);
        let done = one(&mut d);
        assert_eq!((done.id, done.result.unwrap()), (id, 5), "{name}");
        assert!(matches!(done.op, Some(Op::SendMsg { .. })), "{name}");
        assert_eq!(recv_from(&b), (b"hello".to_vec(), a.local_addr().unwrap()), "{name}");
    }
}

#[test]
fn sendmsg_on_a_connected_socket_needs_no_address_and_oversize_is_emsgsize() {
    for (name, mut d) in drivers() {
        let (a, b) = (udp(), udp());
        a.connect(b.local_addr().unwrap()).unwrap();
        let msg = SendMsgBuf::new(Bytes::from_static(b"x"), None);
        d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 1);
        assert_eq!(one(&mut d).result.unwrap(), 1, "{name}");
        let mut buf = [0; 4];
        let deadline = Instant::now() + LIMIT;
        while b.recv(&mut buf).is_err() && Instant::now() < deadline {}
        assert_eq!(buf[0], b'x', "{name}");
        let msg = SendMsgBuf::new(Bytes::from(vec![0; 70_000]), None);
        d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 1);
        let err = one(&mut d).result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE), "{name}");
    }
}
