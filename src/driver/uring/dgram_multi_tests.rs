//! `RecvMsgMulti` with real UDP and unix datagram sockets: io_uring's multishot `RECVMSG` on
//! the datagram ring and, with `fallback`, epoll.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use socket2::SockAddr;

use super::UringDriver;
use crate::driver::any::Driver;
use crate::driver::dgram::{DATAGRAM_CAPACITY, MULTISHOT_PREFIX};
use crate::driver::{Completion, Op};

const LIMIT: Duration = Duration::from_secs(5);

/// Every route `RecvMsgMulti` can take on this kernel, named, and whether it hands over ring
/// slots.
fn drivers() -> Vec<(&'static str, Driver<u32>, bool)> {
    super::tests::drivers(&[("uring", &[])])
        .into_iter()
        .map(|(name, d)| {
            let ring = matches!(d, Driver::Uring(_));
            (name, d, ring)
        })
        .collect()
}

fn udp() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

fn unix_pair() -> (UnixDatagram, UnixDatagram) {
    let (a, b) = UnixDatagram::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    (a, b)
}

/// Turns until `n` completions arrived or [`LIMIT`].
fn collect(d: &mut Driver<u32>, n: usize) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while out.len() < n && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
    }
    out
}

fn source_of(c: &Completion<u32>) -> Option<std::net::SocketAddr> {
    c.data.as_ref()?.source().and_then(SockAddr::as_socket)
}

#[test]
fn one_op_delivers_many_whole_datagrams_each_with_its_source() {
    for (name, mut d, ring) in drivers() {
        let (a, b, ours) = (udp(), udp(), udp());
        let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 7);
        let to = ours.local_addr().unwrap();
        let sent: [(&UdpSocket, &[u8]); 5] =
            [(&a, b"one"), (&b, b"two"), (&a, b""), (&b, &[9; 60_000]), (&a, b"last")];
        for (from, data) in sent {
            from.send_to(data, to).unwrap();
        }
        let out = collect(&mut d, sent.len());
        assert_eq!(out.len(), sent.len(), "{name}: {out:?}");
        for (c, (from, data)) in out.iter().zip(sent) {
            assert_eq!((c.id, c.owner, c.more), (id, 7, true), "{name}");
            assert_eq!(c.result.as_ref().unwrap(), &(data.len() as u32), "{name}");
            let got = c.data.as_ref().expect("a datagram carries its bytes");
            assert_eq!(&got[..], data, "{name}: whole, never split or merged");
            assert_eq!(got.is_ring_slot(), ring, "{name}");
            assert_eq!(source_of(c), Some(from.local_addr().unwrap()), "{name}");
        }
        assert_eq!(d.in_flight(), 1, "{name}: the op keeps going");
        assert_eq!(d.cancel(id), Some(7), "{name}");
    }
}

#[test]
fn an_oversize_datagram_is_emsgsize_and_the_next_one_still_comes() {
    for (name, mut d, _) in drivers() {
        let (peer, ours) = unix_pair();
        let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
        peer.send(&vec![1; DATAGRAM_CAPACITY + 1]).unwrap();
        peer.send(&vec![2; DATAGRAM_CAPACITY]).unwrap();
        let out = collect(&mut d, 2);
        assert_eq!(out.len(), 2, "{name}: {out:?}");
        let err = out[0].result.as_ref().unwrap_err();
        assert_eq!((err.raw_os_error(), out[0].more), (Some(libc::EMSGSIZE), true), "{name}");
        assert!(out[0].data.is_none(), "{name}: never delivered cut short");
        assert_eq!(out[1].data.as_deref(), Some(&vec![2; DATAGRAM_CAPACITY][..]), "{name}");
        assert_eq!(out[1].data.as_ref().unwrap().source(), None, "{name}: unbound peer");
        assert_eq!(d.cancel(id), Some(1), "{name}");
    }
}

#[test]
fn a_receive_error_ends_the_op_and_a_new_one_receives_again() {
    for (name, mut d, _) in drivers() {
        let (ours, closed) = (udp(), udp());
        ours.connect(closed.local_addr().unwrap()).unwrap();
        drop(closed);
        ours.send(b"nobody listens").unwrap(); // ICMP port unreachable: ECONNREFUSED
        d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
        let out = collect(&mut d, 1);
        let last = out.last().expect("a final completion");
        let err = last.result.as_ref().unwrap_err();
        assert_eq!((err.raw_os_error(), last.more), (Some(libc::ECONNREFUSED), false), "{name}");
        assert!(matches!(last.op, Some(Op::RecvMsgMulti { .. })), "{name}");
        assert_eq!(d.in_flight(), 0, "{name}");
    }
}

/// A uring driver whose datagram ring has two buffers of `size` bytes; `None` (printed)
/// without io_uring.
fn tiny_dgram_ring(size: usize) -> Option<UringDriver<u32>> {
    let mut d = super::tests::ring::<u32>(&[])?;
    d.rings.dgram_shape = Some((2, size));
    Some(d)
}

#[test]
fn the_ring_payload_capacity_is_what_is_left_after_header_and_name() {
    let Some(mut d) = tiny_dgram_ring(MULTISHOT_PREFIX + 100) else { return };
    let (peer, ours) = unix_pair();
    let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
    peer.send(&[5; 101]).unwrap();
    peer.send(&[6; 100]).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < 2 && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
    }
    let err = out[0].result.as_ref().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
    assert_eq!(out[1].data.as_deref(), Some(&[6; 100][..]));
    drop(out);
    assert_eq!(d.rings.dgram.as_ref().unwrap().available(), 2, "every buffer back");
    assert_eq!(d.cancel(id), Some(1));
}

#[test]
fn enobufs_parks_the_op_and_loses_no_datagram() {
    let Some(mut d) = tiny_dgram_ring(1024) else { return };
    let (a, ours) = (udp(), udp());
    let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
    let sent: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    for datagram in &sent {
        a.send_to(datagram, ours.local_addr().unwrap()).unwrap();
    }
    let mut got: Vec<Vec<u8>> = Vec::new();
    let parked = super::multi_tests::receive_holding_buffers(&mut d, id, "datagrams", |data| {
        got.push(data.to_vec());
        got.len() >= sent.len()
    });
    assert_eq!(got, sent, "every datagram, whole, in order");
    assert!(parked, "a dry ring parks the op");
    assert_eq!(d.cancel(id), Some(1));
}

#[test]
fn a_cancelled_op_frees_nothing_early_and_reports_nothing() {
    for (name, mut d, _) in drivers() {
        let (a, ours) = (udp(), udp());
        let to = ours.local_addr().unwrap();
        let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
        a.send_to(b"kept", to).unwrap();
        let mut out = collect(&mut d, 1);
        let held = out.pop().and_then(|c| c.data).expect("the first datagram");
        assert_eq!(d.cancel(id), Some(1), "{name}");
        let start = Instant::now();
        while d.in_flight() > 0 && start.elapsed() < LIMIT {
            d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
        }
        assert!(out.is_empty(), "{name}: nothing after cancel: {out:?}");
        assert_eq!(d.in_flight(), 0, "{name}");
        assert_eq!(&*held, b"kept", "{name}: a delivered datagram outlives its op");
        drop(held);
        if let Some(u) = super::tests::uring_of(&d) {
            if let Some(ring) = &u.rings.dgram {
                let all = usize::from(super::persistent::DGRAM_BUFFERS);
                assert_eq!(ring.available(), all, "{name}: every buffer back in the ring");
            }
        }
        a.send_to(b"later", to).unwrap();
        d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 2);
        let out = collect(&mut d, 1);
        assert_eq!(out[0].data.as_deref(), Some(&b"later"[..]), "{name}: still queued");
    }
}
