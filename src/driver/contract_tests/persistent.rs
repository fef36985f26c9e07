//! The persistent stream ops, `RecvMulti` and `AcceptMulti`, on TCP over 127.0.0.1: many
//! results then a final one, `end_gracefully` delivering what was taken, `cancel` dropping it.
//! (Datagrams: `datagrams.rs`.)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{each_config, kept_after_cancel, listener, no_look, settle, tcp_pair, turn_until};
use super::{short_wait, turn_once, Look, LIMIT};
use crate::driver::any::Driver;
use crate::driver::{Backend, Completion, Op, OpId};

/// The bytes of every chunk in `out`, in order.
fn bytes_of(out: &[Completion<u32>]) -> Vec<u8> {
    out.iter().filter_map(|c| c.data.as_deref()).flatten().copied().collect()
}

/// A TCP pair with a `RecvMulti` (owner 1) on ours: the op, ours and the peer.
fn receiving(d: &mut Driver<u32>) -> (OpId, TcpStream, TcpStream) {
    let (ours, peer) = tcp_pair();
    let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    (id, ours, peer)
}

#[test]
fn recv_multi_delivers_every_chunk_in_order_then_end_of_stream() {
    each_config(|mut d| {
        let (id, _ours, mut peer) = receiving(&mut d);
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for i in 0..5 {
            let chunk = format!("chunk {i};");
            peer.write_all(chunk.as_bytes()).unwrap();
            expected.extend_from_slice(chunk.as_bytes());
            turn_until(&mut d, &mut out, |out| bytes_of(out).len() == expected.len());
        }
        assert_eq!(bytes_of(&out), expected);
        assert_eq!(out.len(), 5, "one completion per chunk: {out:?}");
        for c in &out {
            assert_eq!((c.id, c.owner, c.more()), (id, 1, true));
            let data = c.data.as_ref().expect("a chunk carries its bytes");
            assert_eq!(data.len() as u32, *c.result.as_ref().unwrap());
            assert_eq!(data.is_ring_slot(), d.backend() == Backend::Uring, "io_uring lends slots");
        }
        assert_eq!(d.in_flight(), 1, "the op keeps going");
        out.clear();
        drop(peer);
        turn_until(&mut d, &mut out, |out| !out.is_empty());
        let last = out.pop().expect("end of stream");
        assert_eq!((last.more(), last.result.unwrap()), (false, 0));
        assert!(matches!(last.op, Some(Op::RecvMulti { .. })));
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn a_big_transfer_arrives_whole_in_order() {
    each_config(|mut d| {
        let (_, _ours, peer) = receiving(&mut d);
        let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            std::thread::spawn(move || (&peer).write_all(&sent))
        };
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < sent.len() && start.elapsed() < LIMIT {
            let mut out = Vec::new();
            d.turn(Some(short_wait()), &mut out).unwrap();
            got.extend(bytes_of(&out));
        }
        writer.join().unwrap().unwrap();
        assert!(got == sent, "{} of {} bytes, or out of order", got.len(), sent.len());
    });
}

#[test]
fn a_cancelled_recv_multi_reports_nothing_more() {
    each_config(|mut d| cancel_a_recv_multi(&mut d, &no_look));
}

/// A `RecvMulti` that delivered a chunk is cancelled: it reports nothing more, also when more
/// bytes come, and its slot is freed at once (epoll) or at its final CQE (io_uring). `settled`
/// sees the driver once nothing is in flight.
pub(crate) fn cancel_a_recv_multi(d: &mut Driver<u32>, settled: Look) {
    let (id, ours, mut peer) = receiving(d);
    let mut out = Vec::new();
    peer.write_all(b"first").unwrap();
    turn_until(d, &mut out, |out| !out.is_empty());
    assert_eq!(bytes_of(&out), b"first");
    drop(out);
    assert_eq!(d.cancel(id), Some(1));
    assert_eq!(d.in_flight(), kept_after_cancel(d), "freed only at the final CQE");
    peer.write_all(b"after").unwrap();
    let out = settle(d);
    assert!(out.is_empty(), "nothing after cancel: {out:?}");
    settled(d, ours.as_raw_fd());
}

#[test]
fn stop_delivers_what_was_received_then_ecanceled_and_leaves_the_rest_in_the_socket() {
    each_config(|mut d| {
        let (id, ours, mut peer) = receiving(&mut d);
        let mut out = Vec::new();
        peer.write_all(b"one").unwrap();
        turn_until(&mut d, &mut out, |out| !out.is_empty());
        d.end_gracefully(id);
        peer.write_all(b"two").unwrap();
        turn_until(&mut d, &mut out, |out| out.last().is_some_and(|c| !c.more()));
        let last = out.pop().unwrap();
        assert_eq!(last.result.unwrap_err().raw_os_error(), Some(libc::ECANCELED));
        assert_eq!(d.in_flight(), 0);
        // What the op did not take is still in the socket: nothing is lost.
        let mut rest = Vec::new();
        std::thread::sleep(Duration::from_millis(20));
        let _ =
            (&ours).read_to_end(&mut rest).map_err(|e| assert_eq!(e.kind(), ErrorKind::WouldBlock));
        let mut all = bytes_of(&out);
        all.extend(rest);
        assert_eq!(all, b"onetwo");
    });
}

/// 100 KiB of patterned bytes: more than one receive buffer (64 KiB).
fn more_than_a_buffer() -> Vec<u8> {
    (0..100 * 1024).map(|i| (i % 251) as u8).collect()
}

/// A `RecvMulti` armed on a socket already holding more than one buffer's worth (on epoll,
/// one edge for it all) receives it all, with nothing more coming.
#[test]
fn recv_multi_takes_more_than_a_buffer_that_was_there_before_it() {
    each_config(|mut d| {
        let (ours, mut peer) = tcp_pair();
        let data = more_than_a_buffer();
        peer.write_all(&data).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
        let mut out = Vec::new();
        turn_until(&mut d, &mut out, |out| bytes_of(out).len() >= data.len());
        assert!(bytes_of(&out) == data, "the rest never came");
    });
}

/// An end of stream that came with the last bytes, before the `RecvMulti` was armed (on
/// epoll, one edge for both), is delivered after them: for less than a buffer and for more.
#[test]
fn recv_multi_delivers_an_end_that_came_with_the_last_bytes() {
    each_config(|mut d| {
        for payload in [b"hello".to_vec(), more_than_a_buffer()] {
            let (ours, mut peer) = tcp_pair();
            peer.write_all(&payload).unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let id = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
            let mut out = Vec::new();
            turn_until(&mut d, &mut out, |out| out.iter().any(|c| !c.more()));
            let got = bytes_of(&out);
            assert!(got == payload, "{} bytes of {}", got.len(), payload.len());
            let end = out.last().expect("completions");
            assert!(end.id == id && !end.more() && matches!(end.result, Ok(0)), "no end: {out:?}");
            // As the loop does before its socket closes (the next pair may reuse the number).
            d.forget_fd(ours.as_raw_fd());
        }
    });
}

#[test]
fn recv_multi_receives_the_bytes_after_urgent_data() {
    each_config(|mut d| receive_past_urgent_data(&mut d, &no_look, &no_look));
}

/// TCP urgent data (`MSG_OOB`) in the middle of a stream: a receive stops at the urgent mark,
/// short of the bytes after it (on epoll no edge says they are there), and they still come;
/// the urgent byte itself is not in the stream. `armed` sees the driver once the `RecvMulti`
/// is registered, `after` once everything arrived.
pub(crate) fn receive_past_urgent_data(d: &mut Driver<u32>, armed: Look, after: Look) {
    let (ours, mut peer) = tcp_pair();
    d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 1);
    assert!(turn_once(d, Some(Duration::ZERO)).is_empty());
    armed(d, ours.as_raw_fd());
    let mut out = Vec::new();
    peer.write_all(b"ab").unwrap();
    // SAFETY: sends one byte from a live buffer on the peer's open socket.
    let sent = unsafe { libc::send(peer.as_raw_fd(), b"c".as_ptr().cast(), 1, libc::MSG_OOB) };
    assert_eq!(sent, 1);
    peer.write_all(b"de").unwrap();
    turn_until(d, &mut out, |out| bytes_of(out).len() >= 4);
    assert_eq!(bytes_of(&out), b"abde", "the bytes after the urgent mark never came");
    after(d, ours.as_raw_fd());
}

#[test]
fn accept_multi_accepts_several_connections_until_cancelled() {
    each_config(|mut d| {
        let (listener, addr) = listener();
        let id = d.submit(Op::AcceptMulti { fd: listener.as_raw_fd() }, 3);
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut out = Vec::new();
        turn_until(&mut d, &mut out, |out| out.len() >= 3);
        assert_eq!(out.len(), 3, "{out:?}");
        let mut ports: Vec<u16> = out
            .iter()
            .map(|c| {
                assert_eq!((c.id, c.owner, c.more()), (id, 3, true));
                let fd = c.result.as_ref().copied().expect("an accepted fd") as i32;
                // SAFETY: the accept made this fd for us; nothing else owns it.
                let stream = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
                // SAFETY: F_GETFL and F_GETFD only read the flags.
                let (status, fd_flags) =
                    unsafe { (libc::fcntl(fd, libc::F_GETFL), libc::fcntl(fd, libc::F_GETFD)) };
                assert!(status & libc::O_NONBLOCK != 0, "the accepted fd is non-blocking");
                assert!(fd_flags & libc::FD_CLOEXEC != 0, "the accepted fd is close-on-exec");
                stream.peer_addr().unwrap().port()
            })
            .collect();
        ports.sort_unstable();
        let mut expected: Vec<u16> =
            clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
        expected.sort_unstable();
        assert_eq!(ports, expected);
        assert_eq!(d.in_flight(), 1);
        out.clear();
        assert_eq!(d.cancel(id), Some(3));
        let _late = TcpStream::connect(addr).unwrap();
        let out = settle(&mut d);
        assert!(out.is_empty(), "{out:?}");
    });
}
