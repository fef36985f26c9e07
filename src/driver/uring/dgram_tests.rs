//! `RecvMsg`/`SendMsg` on real UDP sockets, on every route: io_uring's opcodes, io_uring's
//! syscall fallback (`op_recvmsg,op_sendmsg` disabled) and, with `fallback`, epoll.

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::SockAddr;

use crate::driver::any::Driver;
use crate::driver::{Completion, Op, RecvMsgBuf, SendMsgBuf};

const LIMIT: Duration = Duration::from_secs(5);

/// Every driver route datagram ops can take on this kernel, named.
fn drivers() -> Vec<(&'static str, Driver<u32>)> {
    let mut drivers = Vec::new();
    for (name, disabled) in [("uring", &[][..]), ("uring sync", &["op_recvmsg", "op_sendmsg"][..])]
    {
        if let Some(d) = super::tests::ring(disabled) {
            drivers.push((name, Driver::Uring(d)));
        }
    }
    #[cfg(feature = "fallback")]
    drivers.push(("epoll", Driver::Epoll(crate::driver::epoll::EpollDriver::new().unwrap())));
    drivers
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

fn recvmsg(fd: RawFd, capacity: usize) -> Op {
    Op::RecvMsg { fd, msg: RecvMsgBuf::new(capacity) }
}

#[test]
fn sendmsg_to_an_address_and_recvmsg_with_the_source() {
    for (name, mut d) in drivers() {
        let (a, b) = (udp(), udp());
        let to = SockAddr::from(b.local_addr().unwrap());
        let id = d.submit(recvmsg(b.as_raw_fd(), 100), 1);
        let msg = SendMsgBuf::new(Bytes::from_static(b"hello"), Some(&to));
        d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 2);
        let mut got = collect(&mut d, 2);
        got.sort_by_key(|c| c.owner);
        assert_eq!(got[0].id, id);
        assert_eq!(got[0].result.as_ref().unwrap(), &5, "{name}");
        assert_eq!(got[1].result.as_ref().unwrap(), &5, "{name}");
        let Some(Op::RecvMsg { msg, .. }) = got[0].op.take() else { panic!("{name}") };
        assert_eq!(msg.data(5), b"hello", "{name}");
        assert!(!msg.truncated(), "{name}");
        let source = msg.source().and_then(|s| s.as_socket());
        assert_eq!(source, Some(a.local_addr().unwrap()), "{name}");
    }
}

#[test]
fn a_datagram_longer_than_the_buffer_is_flagged_truncated() {
    for (name, mut d) in drivers() {
        let (a, b) = (udp(), udp());
        a.send_to(&[7; 300], b.local_addr().unwrap()).unwrap();
        d.submit(recvmsg(b.as_raw_fd(), 100), 1);
        let mut done = one(&mut d);
        assert_eq!(done.result.as_ref().unwrap(), &100, "{name}");
        let Some(Op::RecvMsg { msg, .. }) = done.op.take() else { panic!("{name}") };
        assert!(msg.truncated(), "{name}: flags {:#x}", msg.flags());
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

#[test]
fn a_cancelled_recvmsg_reports_nothing_and_its_datagram_stays_queued() {
    for (name, mut d) in drivers() {
        let (a, b) = (udp(), udp());
        let id = d.submit(recvmsg(b.as_raw_fd(), 100), 1);
        let mut out = Vec::new();
        d.turn(Some(Duration::ZERO), &mut out).unwrap();
        assert_eq!(d.cancel(id), Some(1), "{name}");
        let start = Instant::now();
        while d.in_flight() > 0 && start.elapsed() < LIMIT {
            d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
        }
        assert!(out.is_empty(), "{name}: {out:?}");
        a.send_to(b"later", b.local_addr().unwrap()).unwrap();
        d.submit(recvmsg(b.as_raw_fd(), 100), 2);
        let done = one(&mut d);
        assert_eq!((done.owner, done.result.unwrap()), (2, 5), "{name}");
    }
}
