//! The io_uring side of the persistent ops: the provided-buffer rings (tiny rings that run dry,
//! `ENOBUFS` parking and re-arming, every buffer back after a cancel) and CQEs forced into the
//! driver for interleavings a real kernel shows only rarely. (What every driver does with
//! these ops: `driver/contract_tests/persistent.rs` and `datagrams.rs`.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::persistent::{self, BUF_SIZE, DGRAM_BUFFERS, RING_BUFFERS};
use super::slot::SlotState;
use super::tests::uring_of;
use super::UringDriver;
use crate::driver::any::Driver;
use crate::driver::contract_tests::{
    cancel_a_datagram_receive, cancel_a_recv_multi, each_uring_config,
};
use crate::driver::contract_tests::{high, is_open};
use crate::driver::contract_tests::{tcp_pair, udp, unix_datagram_pair, uring_driver, LIMIT};
use crate::driver::dgram::MULTISHOT_PREFIX;
use crate::driver::{Op, OpId, RecvBuf};

/// Whether op `id` is parked (out of the kernel after `ENOBUFS`).
fn is_parked(d: &UringDriver<u32>, id: OpId) -> bool {
    d.table.slots.get(id.key()).is_some_and(|s| matches!(s.state, SlotState::Parked(_)))
}

/// `d` with a stream ring of two buffers.
fn tiny_ring(d: UringDriver<u32>, disabled: &[&str]) -> UringDriver<u32> {
    drop(d);
    UringDriver::with_ring(disabled, 2).expect("a ring like the one just made")
}

/// A driver whose datagram ring has two buffers of `size` bytes; `None` (printed) without
/// io_uring.
fn tiny_dgram_ring(size: usize) -> Option<UringDriver<u32>> {
    let mut d = uring_driver(&[])?;
    d.rings.dgram_shape = Some((2, size));
    Some(d)
}

/// Turns until `add` (handed each result's bytes) says all came, or `LIMIT`, holding the
/// buffers so that a two-buffer ring runs dry: they are dropped once the op is seen parked
/// with two held, or after `LIMIT / 2` (a kernel that never reports `ENOBUFS`). Every result
/// must keep the op going. Returns whether the op parked.
fn receive_holding_buffers(
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
            assert!(c.more(), "{what}: the op must survive ENOBUFS: {c:?}");
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

#[test]
fn enobufs_parks_the_recv_until_buffers_return_and_loses_no_data() {
    each_uring_config(|d, disabled| {
        // Two buffers: two and a half buffers' worth needs at least 3 of them.
        let mut d = tiny_ring(d, disabled);
        let (ours, mut peer) = tcp_pair();
        let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
        let sent: Vec<u8> = (0..BUF_SIZE * 5 / 2).map(|i| (i % 251) as u8).collect();
        peer.write_all(&sent).unwrap();
        let mut got = Vec::new();
        let parked = receive_holding_buffers(&mut d, id, "a stream", |data| {
            got.extend_from_slice(data);
            got.len() >= sent.len()
        });
        assert!(got == sent, "{} of {} bytes, or out of order", got.len(), sent.len());
        assert!(parked, "a dry ring parks the op");
        assert!(d.cancel(id).is_some());
    });
}

#[test]
fn a_driver_dropped_with_a_parked_recv_shuts_down_at_once() {
    let Some(d) = uring_driver(&[]) else { return };
    let mut d = tiny_ring(d, &[]);
    let (ours, mut peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    peer.write_all(&vec![7; BUF_SIZE * 3]).unwrap(); // more than the two buffers hold
    let mut held = Vec::new();
    let start = Instant::now();
    while !is_parked(&d, id) && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(20)), &mut held).unwrap();
    }
    assert!(is_parked(&d, id), "the dry ring parks the op");
    let start = Instant::now();
    assert!(d.shutdown().0, "every final CQE came back");
    assert!(start.elapsed() < Duration::from_millis(500), "no wait for a CQE that cannot come");
    assert_eq!(d.in_flight(), 0);
    drop(held); // after the driver's shutdown: the buffers are not republished
}

#[test]
fn a_cancelled_recv_multi_gives_every_buffer_back() {
    each_uring_config(|d, _| {
        cancel_a_recv_multi(&mut Driver::Uring(d), &|d, _| {
            let all = usize::from(RING_BUFFERS);
            assert_eq!(uring_of(d).rings.stream.available(), all, "every buffer back");
        });
    });
}

#[test]
fn a_stopped_recv_that_meets_a_dry_ring_ends_with_ecanceled_not_enobufs() {
    // The interleaving that failed streams on rings without deferred task running: `end_gracefully`
    // sent its cancel, and the kernel ended the multishot recv with `ENOBUFS` first. Forced
    // here by handing the driver that CQE for a stopping op.
    let Some(mut d) = uring_driver(&[]) else { return };
    let (ours, _peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    assert!(matches!(d.table.slots[id.key()].state, SlotState::Submitted(_)));
    d.end_gracefully(id);
    assert!(matches!(d.table.slots[id.key()].state, SlotState::Stopping(_)));
    let mut out = Vec::new();
    persistent::on_cqe(&mut d.table, &d.rings, id.key(), (-libc::ENOBUFS, 0), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    let last = out.pop().unwrap();
    assert!(!last.more());
    assert_eq!(last.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
    // Not stopped, the same CQE parks the op instead: buffer exhaustion waits, never fails.
    // (A new driver: the first one's real op is still in its kernel under the freed key.)
    let Some(mut d) = uring_driver(&[]) else { return };
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 2);
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    persistent::on_cqe(&mut d.table, &d.rings, id.key(), (-libc::ENOBUFS, 0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert!(is_parked(&d, id));
}

#[test]
fn a_connection_accepted_for_a_cancelled_accept_is_closed() {
    // A multishot accept's CQE reaped after its cancel (at shutdown, say) carries a new fd
    // that nobody will take: it must be closed, or the client hangs.
    let Some(mut d) = uring_driver(&[]) else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let id = d.submit(Op::AcceptMulti { fd: listener.as_raw_fd() }, 1);
    d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
    assert_eq!(d.cancel(id), Some(1));
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    // A number no other test's fd takes (they run in parallel), so "not open" below means
    // closed by the driver, not reused since.
    let number = std::os::fd::IntoRawFd::into_raw_fd(high(server_side));
    let mut out = Vec::new();
    let more = 2; // IORING_CQE_F_MORE
    persistent::on_cqe(&mut d.table, &d.rings, id.key(), (number, more), &mut out);
    assert!(out.is_empty(), "nothing is reported for a cancelled op");
    assert!(!is_open(number), "the accepted fd was closed");
    client.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(client.read(&mut [0; 8]).unwrap(), 0, "the client sees end of stream");
}

#[test]
fn parked_recvs_are_rearmed_no_more_than_there_are_free_buffers() {
    let Some(d) = uring_driver(&[]) else { return };
    let mut d = tiny_ring(d, &[]);
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
        persistent::on_cqe(&mut d.table, &d.rings, id.key(), (-libc::ENOBUFS, 0), &mut out);
    }
    assert!(ids.iter().all(|id| is_parked(&d, *id)));
    persistent::rearm_parked(&mut d.table, &d.rings);
    let parked = ids.iter().filter(|id| is_parked(&d, **id)).count();
    assert_eq!(parked, 6 - 2, "two buffers free: two re-armed, the rest stay parked");
    assert!(!is_parked(&d, ids[0]) && !is_parked(&d, ids[1]), "oldest first");
}

#[test]
fn the_ring_payload_capacity_is_what_is_left_after_header_and_name() {
    let Some(mut d) = tiny_dgram_ring(MULTISHOT_PREFIX + 100) else { return };
    let (peer, ours) = unix_datagram_pair();
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
    let parked = receive_holding_buffers(&mut d, id, "datagrams", |data| {
        got.push(data.to_vec());
        got.len() >= sent.len()
    });
    assert_eq!(got, sent, "every datagram, whole, in order");
    assert!(parked, "a dry ring parks the op");
    assert_eq!(d.cancel(id), Some(1));
}

#[test]
fn a_cancelled_datagram_receive_gives_every_buffer_back() {
    each_uring_config(|d, _| {
        cancel_a_datagram_receive(&mut Driver::Uring(d), &|d, _| {
            let ring = uring_of(d).rings.dgram.as_ref().expect("the datagram ring");
            assert_eq!(ring.available(), usize::from(DGRAM_BUFFERS), "every buffer back");
        });
    });
}
