//! Tests of the persistent ops (`RecvMulti`, `AcceptMulti`) on epoll, with real TCP sockets.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::EpollDriver;
use crate::driver::{Completion, Op};

type Driver = EpollDriver<u32>;

const LIMIT: Duration = Duration::from_secs(5);

fn turn_until(
    d: &mut Driver,
    out: &mut Vec<Completion<u32>>,
    done: impl Fn(&[Completion<u32>]) -> bool,
) {
    let start = Instant::now();
    while !done(out) && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(50)), out).expect("turn");
    }
}

/// (ours: non-blocking, the driver's; peer: blocking).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (ours, peer)
}

fn bytes_of(out: &[Completion<u32>]) -> Vec<u8> {
    out.iter().filter_map(|c| c.data.as_deref()).flatten().copied().collect()
}

#[test]
fn recv_multi_delivers_every_chunk_in_order_then_end_of_stream() {
    let mut d = EpollDriver::new().unwrap();
    let (ours, mut peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    let (mut out, mut expected) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let chunk = format!("chunk {i};");
        peer.write_all(chunk.as_bytes()).unwrap();
        expected.extend_from_slice(chunk.as_bytes());
        turn_until(&mut d, &mut out, |out| bytes_of(out).len() == expected.len());
    }
    assert_eq!(bytes_of(&out), expected);
    assert_eq!(out.len(), 5, "one completion per chunk: {out:?}");
    for c in &out {
        assert_eq!((c.id, c.owner, c.more), (id, 1, true));
        let data = c.data.as_ref().expect("a chunk carries its bytes");
        assert_eq!(data.len() as u32, *c.result.as_ref().unwrap());
        assert!(!data.is_ring_slot(), "epoll hands over copies");
    }
    assert_eq!(d.in_flight(), 1);
    out.clear();
    drop(peer);
    turn_until(&mut d, &mut out, |out| !out.is_empty());
    let last = out.pop().expect("end of stream");
    assert_eq!((last.result.unwrap(), last.more), (0, false));
    assert!(matches!(last.op, Some(Op::RecvMulti { .. })));
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn a_big_transfer_arrives_whole_in_order_through_the_shared_buffer() {
    let mut d = EpollDriver::new().unwrap();
    let (ours, peer) = tcp_pair();
    let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let sent = sent.clone();
        std::thread::spawn(move || (&peer).write_all(&sent))
    };
    d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < sent.len() && start.elapsed() < LIMIT {
        let mut out = Vec::new();
        d.turn(Some(Duration::from_millis(50)), &mut out).unwrap();
        got.extend(bytes_of(&out));
    }
    writer.join().unwrap().unwrap();
    assert!(got == sent, "{} of {} bytes, or out of order", got.len(), sent.len());
}

#[test]
fn a_cancelled_recv_multi_reports_nothing_more() {
    let mut d = EpollDriver::new().unwrap();
    let (ours, mut peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    let mut out = Vec::new();
    peer.write_all(b"first").unwrap();
    turn_until(&mut d, &mut out, |out| !out.is_empty());
    out.clear();
    assert_eq!(d.cancel(id), Some(1));
    assert_eq!(d.in_flight(), 0);
    peer.write_all(b"after").unwrap();
    for _ in 0..3 {
        d.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
    }
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn stop_delivers_what_was_received_then_ecanceled_and_leaves_the_rest_in_the_socket() {
    let mut d = EpollDriver::new().unwrap();
    let (ours, mut peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    let mut out = Vec::new();
    peer.write_all(b"one").unwrap();
    turn_until(&mut d, &mut out, |out| !out.is_empty());
    d.stop(id);
    peer.write_all(b"two").unwrap();
    turn_until(&mut d, &mut out, |out| out.last().is_some_and(|c| !c.more));
    let last = out.pop().unwrap();
    assert_eq!(last.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    assert_eq!(d.in_flight(), 0);
    std::thread::sleep(Duration::from_millis(20));
    let mut rest = Vec::new();
    let _ = (&ours).read_to_end(&mut rest).map_err(|e| assert_eq!(e.kind(), ErrorKind::WouldBlock));
    let mut all = bytes_of(&out);
    all.extend(rest);
    assert_eq!(all, b"onetwo");
}

#[test]
fn accept_multi_accepts_several_connections_until_cancelled() {
    let mut d = EpollDriver::new().unwrap();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let id = d.submit(Op::AcceptMulti { fd: listener.as_raw_fd() }, 3);
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut out = Vec::new();
    turn_until(&mut d, &mut out, |out| out.len() >= 3);
    let mut ports: Vec<u16> = out
        .iter()
        .map(|c| {
            assert_eq!((c.id, c.owner, c.more), (id, 3, true));
            let fd = c.result.as_ref().copied().expect("an accepted fd") as i32;
            // SAFETY: the accept made this fd for us; nothing else owns it.
            let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
            // SAFETY: F_GETFL only reads the flags.
            assert!(unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK != 0);
            stream.peer_addr().unwrap().port()
        })
        .collect();
    ports.sort_unstable();
    let mut expected: Vec<u16> = clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
    expected.sort_unstable();
    assert_eq!(ports, expected);
    assert_eq!(d.in_flight(), 1);
    out.clear();
    assert_eq!(d.cancel(id), Some(3));
    let _late = TcpStream::connect(addr).unwrap();
    for _ in 0..3 {
        d.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
    }
    assert!(out.is_empty() && d.in_flight() == 0, "{out:?}");
}
