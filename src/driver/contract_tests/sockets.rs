//! `Connect` and `Send` on TCP over 127.0.0.1: results, offsets, waiting for room, cancelling
//! a send the peer does not take.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    backed_up_pair, collect, drain, each_config, kept_after_cancel, listener, run, settle,
};
use super::{no_look, run_errno, sockaddr, tcp_pair, tcp_socket, turn_once, turns, Look, LIMIT};
use crate::driver::any::Driver;
use crate::driver::{Op, SendBuf};

#[test]
fn connect_succeeds_to_a_listener_and_is_refused_by_a_closed_port() {
    each_config(|mut d| {
        let (l, addr) = listener();
        let sock = tcp_socket();
        let c = run(&mut d, Op::Connect { fd: sock.as_raw_fd(), addr: sockaddr(addr) });
        assert_eq!(c.result.unwrap(), 0);
        assert!(matches!(c.op, Some(Op::Connect { .. })));
        drop(super::accept(&l)); // the listener has the connection
        drop(l);
        let sock = tcp_socket();
        let refused = run_errno(&mut d, Op::Connect { fd: sock.as_raw_fd(), addr: sockaddr(addr) });
        assert_eq!(refused, Some(libc::ECONNREFUSED), "a closed port");
    });
}

#[test]
fn send_sends_from_the_offset_and_the_peer_reads_it() {
    each_config(|mut d| {
        let (ours, mut peer) = tcp_pair();
        let buf = Bytes::from_static(b"hello world");
        let c = run(&mut d, Op::Send { fd: ours.as_raw_fd(), buf: buf.into(), offset: 6 });
        assert_eq!(c.result.unwrap(), 5);
        let Some(Op::Send { buf, offset, .. }) = c.op else { panic!("{:?}", c.op) };
        assert_eq!((&buf[..], offset), (&b"hello world"[..], 6));
        let mut got = [0; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"world");
        let bad = Op::Send { fd: ours.as_raw_fd(), buf, offset: 12 };
        assert_eq!(run_errno(&mut d, bad), Some(libc::EINVAL));
    });
}

#[test]
fn a_queued_send_of_its_own_copy_is_appended_to_until_its_turn() {
    each_config(|mut d| {
        let (ours, mut peer) = tcp_pair();
        let copy = SendBuf::Copied(b"one".to_vec());
        let id = d.submit(Op::Send { fd: ours.as_raw_fd(), buf: copy, offset: 0 }, 1);
        assert!(d.append(id, &[b", two", b"", b", three"]), "queued: the copy grows");
        let shared = Bytes::from_static(b"shared").into();
        let other = d.submit(Op::Send { fd: ours.as_raw_fd(), buf: shared, offset: 0 }, 2);
        assert!(!d.append(other, &[b"!"]), "shared bytes are never written to");
        let out = collect(&mut d, 2, LIMIT);
        assert!(!d.append(id, &[b"late"]), "appended after its turn");
        let mut results: Vec<_> =
            out.iter().map(|c| (c.owner, c.result.as_ref().ok().copied())).collect();
        results.sort();
        assert_eq!(results, [(1, Some(15)), (2, Some(6))]);
        let sent = out.into_iter().find(|c| c.owner == 1).and_then(|c| c.op);
        let Some(Op::Send { buf: SendBuf::Copied(copy), .. }) = sent else { panic!("{sent:?}") };
        assert_eq!(copy, b"one, two, three", "the copy comes back with the completion");
        let mut got = [0; 21];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one, two, threeshared", "in the order submitted, appends included");
    });
}

#[test]
fn a_withdrawn_send_hands_back_its_copy_unsent() {
    each_config(|mut d| {
        let (ours, peer) = tcp_pair();
        let copy = SendBuf::Copied(b"kept".to_vec());
        let id = d.submit(Op::Send { fd: ours.as_raw_fd(), buf: copy, offset: 0 }, 3);
        assert!(d.append(id, &[b" back"]));
        let Some((3, Op::Send { buf: SendBuf::Copied(copy), .. })) = d.withdraw(id) else {
            panic!("not withdrawn with its op")
        };
        assert_eq!(copy, b"kept back");
        assert!(!d.append(id, &[b"!"]), "a withdrawn send appended to");
        assert!(settle(&mut d).is_empty(), "a withdrawn send completed");
        peer.set_nonblocking(true).unwrap();
        assert!((&peer).read(&mut [0; 16]).is_err(), "a withdrawn send was made");
    });
}

#[test]
fn a_send_that_would_block_waits_until_the_peer_reads() {
    each_config(|mut d| send_to_a_full_socket(&mut d, &no_look));
}

/// A `Send` to a socket whose buffer is full waits (`waiting` sees the driver and the fd then)
/// until the peer reads, then completes whole.
pub(crate) fn send_to_a_full_socket(d: &mut Driver<u32>, waiting: Look) {
    let (ours, peer) = backed_up_pair(d);
    let id = d.submit(
        Op::Send { fd: ours.as_raw_fd(), buf: Bytes::from_static(b"more").into(), offset: 0 },
        2,
    );
    for i in 0..3 {
        let out = turn_once(d, Some(Duration::from_millis(10)));
        assert!(out.is_empty(), "the send waits: {i} {out:?}");
    }
    waiting(d, ours.as_raw_fd());
    let deadline = Instant::now() + LIMIT;
    let c = loop {
        drain(&peer);
        if let Some(c) = turn_once(d, Some(Duration::from_millis(10))).pop() {
            break c;
        }
        assert!(Instant::now() < deadline, "the send never completed");
    };
    assert_eq!((c.id, c.owner, c.result.unwrap()), (id, 2, 4));
}

#[test]
fn a_big_send_to_a_stalled_peer_can_be_cancelled() {
    each_config(|mut d| cancel_a_stalled_send(&mut d, &no_look));
}

/// Sends 8 MiB to a peer that does not read until one send stays pending, and cancels it: no
/// completion comes for it, not even once the peer reads, and the peer gets exactly the bytes
/// the completed sends reported (plus maybe what the cancelled one got out first). `settled`
/// sees the driver once nothing is in flight.
pub(crate) fn cancel_a_stalled_send(d: &mut Driver<u32>, settled: Look) {
    let (ours, mut peer) = tcp_pair();
    let big = Bytes::from(vec![0x5a; 8 << 20]);
    // The first send may complete short; keep sending until one stays pending.
    let (mut offset, mut out) = (0, Vec::new());
    let pending = loop {
        let op = Op::Send { fd: ours.as_raw_fd(), buf: big.clone().into(), offset };
        let id = d.submit(op, 9);
        let start = Instant::now();
        while out.is_empty() && start.elapsed() < Duration::from_millis(50) {
            d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
        }
        match out.pop() {
            None => break id,
            Some(c) => {
                let n = c.result.expect("send") as usize;
                assert!(n > 0 && offset + n < big.len(), "sent {n} of {}", big.len());
                offset += n;
            }
        }
    };
    assert_eq!(d.cancel(pending), Some(9));
    assert_eq!(d.cancel(pending), None);
    assert_eq!(d.in_flight(), kept_after_cancel(d));
    drop(big); // the op's clone keeps the bytes alive until the final completion
    let out = settle(d);
    assert!(out.is_empty(), "{out:?}");
    settled(d, ours.as_raw_fd());
    let mut got = Vec::new();
    peer.set_nonblocking(true).unwrap();
    let _ = (&peer).read_to_end(&mut got); // until WouldBlock: the socket has room again
    let out = turns(d, 3);
    assert!(out.is_empty(), "{out:?}");
    // io_uring reports what the cancelled send got out before its cancel as ECANCELED.
    drop(ours);
    peer.set_nonblocking(false).unwrap();
    peer.read_to_end(&mut got).unwrap();
    assert!(got.len() >= offset && got.iter().all(|b| *b == 0x5a), "{} of {offset}", got.len());
}

#[test]
fn read_and_send_waiting_on_one_fd_both_complete() {
    each_config(|mut d| read_and_send_on_one_fd(&mut d, &no_look));
}

/// A `Read` and a `Send` wait on one socket (`waiting` sees the driver and the fd then): each
/// completes when its side is ready.
pub(crate) fn read_and_send_on_one_fd(d: &mut Driver<u32>, waiting: Look) {
    let (ours, peer) = backed_up_pair(d);
    let fd = ours.as_raw_fd();
    let read = d.submit(Op::Read { fd, buf: Vec::with_capacity(16) }, 2);
    let send = d.submit(Op::Send { fd, buf: Bytes::from_static(b"tail").into(), offset: 0 }, 3);
    assert!(turn_once(d, Some(Duration::ZERO)).is_empty());
    waiting(d, fd);
    (&peer).write_all(b"hi").unwrap();
    let mut done = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while done.len() < 2 {
        drain(&peer);
        let out = turn_once(d, Some(Duration::from_millis(10)));
        done.extend(out.into_iter().map(|c| (c.id, c.result.unwrap())));
        assert!(Instant::now() < deadline, "only {done:?}");
    }
    done.sort_by_key(|&(id, _)| id.key());
    let mut expected = [(read, 2), (send, 4)];
    expected.sort_by_key(|&(id, _)| id.key());
    assert_eq!(done, expected);
}
