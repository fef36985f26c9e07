//! The persistent stream ops (`RecvMulti`, `AcceptMulti`) with real TCP sockets, on io_uring
//! and, with `fallback`, epoll. (Datagrams: `dgram_multi_tests.rs`.)

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::slot::SlotState;
use super::UringDriver;
use crate::driver::any::Driver;
use crate::driver::{Completion, Op, OpId, RecvBuf};

const LIMIT: Duration = Duration::from_secs(5);

/// io_uring and, with `fallback`, epoll.
fn drivers() -> Vec<(&'static str, Driver<u32>)> {
    super::tests::drivers(&[("uring", &[])])
}

/// Whether `d` hands chunks over in ring slots (io_uring).
fn uses_ring(d: &Driver<u32>) -> bool {
    matches!(d, Driver::Uring(_))
}

/// Whether op `id` is parked (out of the kernel after `ENOBUFS`).
fn is_parked(d: &UringDriver<u32>, id: OpId) -> bool {
    d.table.slots.get(id.0).is_some_and(|s| matches!(s.state, SlotState::Parked(_)))
}

/// Turns until `add` (handed each result's bytes) says all came, or `LIMIT`, holding the
/// buffers so that a two-buffer ring runs dry: they are dropped once the op is seen parked
/// with two held, or after `LIMIT / 2` (a kernel that never reports `ENOBUFS`). Every result
/// must keep the op going. Returns whether the op parked.
pub(super) fn receive_holding_buffers(
    d: &mut UringDriver<u32>,
    id: OpId,
    what: &str,
    mut add: impl FnMut(&[u8]) -> bool,
) -> bool {
    let (mut held, mut parked, mut all) = (Vec::<RecvBuf>::new(), false, false);
    let start = Instant::now();
    while !all && start.elapsed() < LIMIT {
        let mut out = Vec::new();
        d.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
        for c in out {
            assert!(c.more, "{what}: the op must survive ENOBUFS: {c:?}");
            let data = c.data.unwrap_or_else(|| panic!("{what}: bytes"));
            all = add(&data);
            held.push(data);
        }
        parked |= is_parked(d, id);
        if held.len() == 2 && parked {
            held.clear(); // the ring refills; the parked op is re-armed next turn
        } else if start.elapsed() > LIMIT / 2 {
            held.clear(); // the kernel never reported ENOBUFS: let the test end
        }
    }
    parked
}

/// Turns until `done(out)` or `LIMIT`.
fn turn_until(
    d: &mut Driver<u32>,
    out: &mut Vec<Completion<u32>>,
    done: impl Fn(&[Completion<u32>]) -> bool,
) {
    let start = Instant::now();
    while !done(out) && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(50)), out).expect("turn");
    }
}

/// Turns at least three times, then until no op is in flight (io_uring frees a cancelled op
/// at its final CQE) or `LIMIT`.
fn settle(d: &mut Driver<u32>, out: &mut Vec<Completion<u32>>) {
    let start = Instant::now();
    for turns in 0.. {
        if (turns >= 3 && d.in_flight() == 0) || start.elapsed() > LIMIT {
            break;
        }
        d.turn(Some(Duration::from_millis(20)), out).unwrap();
    }
}

/// 50 ms, or `RINGLOOP_MAX_WAIT_MS` when set: under valgrind (docs/testing.md) a thread
/// waiting in `io_uring_enter` keeps valgrind's lock, and a peer thread needs the gaps.
fn short_wait() -> Duration {
    let capped = std::env::var("RINGLOOP_MAX_WAIT_MS").ok().and_then(|ms| ms.parse().ok());
    Duration::from_millis(capped.unwrap_or(50))
}

/// A connected pair: ours non-blocking (the driver's), the peer blocking.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    (ours, peer)
}

/// A driver with a stream ring of two buffers; `None` (printed) without io_uring.
pub(super) fn tiny_ring(cfg: &[&str]) -> Option<UringDriver<u32>> {
    super::tests::ring::<u32>(cfg)?; // skips (printed), or fails under RINGLOOP_REQUIRE_URING
    Some(UringDriver::with_ring(cfg, 2).expect("a ring like the one just made"))
}

fn bytes_of(out: &[Completion<u32>]) -> Vec<u8> {
    out.iter().filter_map(|c| c.data.as_deref()).flatten().copied().collect()
}

#[test]
fn recv_multi_delivers_every_chunk_in_order_then_end_of_stream() {
    for (name, mut d) in drivers() {
        let (ours, mut peer) = tcp_pair();
        let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for i in 0..5 {
            let chunk = format!("chunk {i};");
            peer.write_all(chunk.as_bytes()).unwrap();
            expected.extend_from_slice(chunk.as_bytes());
            turn_until(&mut d, &mut out, |out| bytes_of(out).len() == expected.len());
        }
        assert_eq!(bytes_of(&out), expected, "{name}");
        assert_eq!(out.len(), 5, "{name}: one completion per chunk: {out:?}");
        for c in &out {
            assert_eq!((c.id, c.owner, c.more), (id, 1, true), "{name}");
            let data = c.data.as_ref().expect("a chunk carries its bytes");
            assert_eq!(data.len() as u32, *c.result.as_ref().unwrap(), "{name}");
            assert_eq!(data.is_ring_slot(), uses_ring(&d), "{name}");
        }
        assert_eq!(d.in_flight(), 1, "{name}: the op keeps going");
        out.clear();
        drop(peer);
        turn_until(&mut d, &mut out, |out| !out.is_empty());
        let last = out.pop().expect("end of stream");
        assert_eq!((last.result.unwrap(), last.more), (0, false), "{name}");
        assert!(matches!(last.op, Some(Op::RecvMulti { .. })), "{name}");
        assert_eq!(d.in_flight(), 0, "{name}");
    }
}

#[test]
fn a_big_transfer_arrives_whole_in_order() {
    for (name, mut d) in drivers() {
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
            d.turn(Some(short_wait()), &mut out).unwrap();
            got.extend(bytes_of(&out));
        }
        writer.join().unwrap().unwrap();
        assert!(got == sent, "{name}: {} of {} bytes, or out of order", got.len(), sent.len());
    }
}

#[test]
fn enobufs_parks_the_recv_until_buffers_return_and_loses_no_data() {
    for cfg in super::tests::CONFIGS {
        // Two buffers: 40 KiB need at least 3 of them.
        let Some(mut d) = tiny_ring(cfg) else { return };
        let (ours, mut peer) = tcp_pair();
        let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).unwrap();
        let mut got = Vec::new();
        let parked = receive_holding_buffers(&mut d, id, &format!("{cfg:?}"), |data| {
            got.extend_from_slice(data);
            got.len() >= sent.len()
        });
        assert_eq!(got, sent, "{cfg:?}: every byte, in order");
        assert!(parked, "{cfg:?}: a dry ring parks the op");
        assert!(d.cancel(id).is_some());
    }
}

#[test]
fn a_cancelled_recv_multi_reports_nothing_more() {
    for (name, mut d) in drivers() {
        let (ours, mut peer) = tcp_pair();
        let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
        let mut out = Vec::new();
        peer.write_all(b"first").unwrap();
        turn_until(&mut d, &mut out, |out| !out.is_empty());
        assert_eq!(bytes_of(&out), b"first", "{name}");
        out.clear();
        assert_eq!(d.cancel(id), Some(1), "{name}");
        // io_uring keeps the slot until the final CQE; epoll drops the op at once.
        let kept = usize::from(matches!(d, Driver::Uring(_)));
        assert_eq!(d.in_flight(), kept, "{name}: freed only at the final CQE");
        peer.write_all(b"after").unwrap();
        settle(&mut d, &mut out);
        assert!(out.is_empty(), "{name}: nothing after cancel: {out:?}");
        assert_eq!(d.in_flight(), 0, "{name}");
        if let Some(d) = super::tests::uring_of(&d) {
            let all = usize::from(super::persistent::RING_BUFFERS);
            assert_eq!(d.rings.stream.available(), all, "{name}: every buffer back");
        }
    }
}

#[test]
fn stop_delivers_what_was_received_then_ecanceled_and_leaves_the_rest_in_the_socket() {
    for (name, mut d) in drivers() {
        let (ours, mut peer) = tcp_pair();
        let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
        let mut out = Vec::new();
        peer.write_all(b"one").unwrap();
        turn_until(&mut d, &mut out, |out| !out.is_empty());
        d.stop(id);
        peer.write_all(b"two").unwrap();
        turn_until(&mut d, &mut out, |out| out.last().is_some_and(|c| !c.more));
        let last = out.pop().unwrap();
        assert_eq!(last.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED), "{name}");
        assert_eq!(d.in_flight(), 0, "{name}");
        // What the op did not take is still in the socket: nothing is lost.
        let mut rest = Vec::new();
        std::thread::sleep(Duration::from_millis(20));
        let _ =
            (&ours).read_to_end(&mut rest).map_err(|e| assert_eq!(e.kind(), ErrorKind::WouldBlock));
        let mut all = bytes_of(&out);
        all.extend(rest);
        assert_eq!(all, b"onetwo", "{name}");
    }
}

#[test]
fn accept_multi_accepts_several_connections_until_cancelled() {
    for (name, mut d) in drivers() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let id = d.submit(Op::AcceptMulti { fd: listener.as_raw_fd() }, 3);
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut out = Vec::new();
        turn_until(&mut d, &mut out, |out| out.len() >= 3);
        assert_eq!(out.len(), 3, "{name}: {out:?}");
        let mut ports: Vec<u16> = out
            .iter()
            .map(|c| {
                assert_eq!((c.id, c.owner, c.more), (id, 3, true), "{name}");
                let fd = c.result.as_ref().copied().expect("an accepted fd") as i32;
                // SAFETY: the accept made this fd for us; nothing else owns it.
                let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
                // SAFETY: F_GETFL only reads the flags.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                assert!(flags & libc::O_NONBLOCK != 0, "{name}");
                stream.peer_addr().unwrap().port()
            })
            .collect();
        ports.sort_unstable();
        let mut expected: Vec<u16> =
            clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
        expected.sort_unstable();
        assert_eq!(ports, expected, "{name}");
        assert_eq!(d.in_flight(), 1, "{name}");
        out.clear();
        assert_eq!(d.cancel(id), Some(3), "{name}");
        let _late = TcpStream::connect(addr).unwrap();
        settle(&mut d, &mut out);
        assert!(out.is_empty() && d.in_flight() == 0, "{name}: {out:?}");
    }
}

#[test]
fn a_driver_dropped_with_a_parked_recv_shuts_down_at_once() {
    let Some(mut d) = tiny_ring(&[]) else { return };
    let (ours, mut peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    peer.write_all(&[7; 100_000]).unwrap();
    let mut held = Vec::new();
    let start = Instant::now();
    while !is_parked(&d, id) && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(20)), &mut held).unwrap();
    }
    assert!(is_parked(&d, id), "the dry ring parks the op");
    let start = Instant::now();
    assert!(d.shutdown(), "every final CQE came back");
    assert!(start.elapsed() < Duration::from_millis(500), "no wait for a CQE that cannot come");
    assert_eq!(d.in_flight(), 0);
    drop(held); // after the driver's shutdown: the buffers are not republished
}

#[test]
fn a_stopped_recv_that_meets_a_dry_ring_ends_with_ecanceled_not_enobufs() {
    // The interleaving that failed streams on rings without deferred task running: `stop`
    // sent its cancel, and the kernel ended the multishot recv with `ENOBUFS` first. Forced
    // here by handing the driver that CQE for a stopping op.
    let Some(mut d) = super::tests::ring::<u32>(&[]) else { return };
    let (ours, _peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    assert!(matches!(d.table.slots[id.0].state, SlotState::Submitted(_)));
    d.stop(id);
    assert!(matches!(d.table.slots[id.0].state, SlotState::Stopping(_)));
    let mut out = Vec::new();
    super::persistent::on_cqe(&mut d.table, &d.rings, id.0, (-libc::ENOBUFS, 0), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let last = out.pop().unwrap();
    assert!(!last.more);
    assert_eq!(last.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    // Not stopped, the same CQE parks the op instead: buffer exhaustion waits, never fails.
    // (A new driver: the first one's real op is still in its kernel under the freed key.)
    let Some(mut d) = super::tests::ring::<u32>(&[]) else { return };
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 2);
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    super::persistent::on_cqe(&mut d.table, &d.rings, id.0, (-libc::ENOBUFS, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert!(is_parked(&d, id));
}

#[test]
fn a_connection_accepted_for_a_cancelled_accept_is_closed() {
    // A multishot accept's CQE reaped after its cancel (at shutdown, say) carries a new fd
    // that nobody will take: it must be closed, or the client hangs.
    let Some(mut d) = super::tests::ring::<u32>(&[]) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let id = d.submit(Op::AcceptMulti { fd: listener.as_raw_fd() }, 1);
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    assert_eq!(d.cancel(id), Some(1));
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    let fd = OwnedFd::from(server_side);
    let number = std::os::fd::IntoRawFd::into_raw_fd(fd);
    let mut out = Vec::new();
    let more = 2; // IORING_CQE_F_MORE
    super::persistent::on_cqe(&mut d.table, &d.rings, id.0, (number, more), &mut out);
    assert!(out.is_empty(), "nothing is reported for a cancelled op");
    // SAFETY: F_GETFD only reads the flags of a number.
    assert_eq!(unsafe { libc::fcntl(number, libc::F_GETFD) }, -1, "the accepted fd was closed");
    client.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(client.read(&mut [0; 8]).unwrap(), 0, "the client sees end of stream");
}

#[test]
fn parked_recvs_are_rearmed_no_more_than_there_are_free_buffers() {
    let Some(mut d) = tiny_ring(&[]) else { return };
    let mut pairs = Vec::new();
    let mut ids = Vec::new();
    for owner in 0..6 {
        let (ours, peer) = tcp_pair();
        ids.push(d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, owner));
        pairs.push((ours, peer));
    }
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    let mut out = Vec::new();
    for id in &ids {
        super::persistent::on_cqe(&mut d.table, &d.rings, id.0, (-libc::ENOBUFS, 0), &mut out);
    }
    assert!(ids.iter().all(|id| is_parked(&d, *id)));
    super::persistent::rearm_parked(&mut d.table, &d.rings);
    let parked = ids.iter().filter(|id| is_parked(&d, **id)).count();
    assert_eq!(parked, 6 - 2, "two buffers free: two re-armed, the rest stay parked");
    assert!(!is_parked(&d, ids[0]) && !is_parked(&d, ids[1]), "oldest first");
}
