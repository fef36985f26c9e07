//! Datagrams on UDP and Unix datagram sockets: `SendMsg`, and the persistent `RecvMsgMulti`
//! (whole datagrams with their sender, `EMSGSIZE` for oversize ones, errors that end the op);
//! `SendMsg` of several chunks on a stream socket too (a transport's queued writes).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Instant;

use bytes::Bytes;
use socket2::SockAddr;

use super::{collect, each_config, no_look, settle, udp, unix_datagram_pair, Look, LIMIT};
use crate::driver::any::Driver;
use crate::driver::dgram::DATAGRAM_CAPACITY;
use crate::driver::{Backend, Completion, Op, SendMsgBuf};

/// Turns until `n` completions arrived (asserted).
fn exactly(d: &mut Driver<u32>, n: usize) -> Vec<Completion<u32>> {
    let out = collect(d, n, LIMIT);
    assert_eq!(out.len(), n, "{out:?}");
    out
}

/// Receives one datagram on `socket` the plain way (waiting up to [`LIMIT`]).
fn recv_from(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
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

fn source_of(c: &Completion<u32>) -> Option<SocketAddr> {
    c.data.as_ref()?.source().and_then(SockAddr::as_socket)
}

#[test]
fn sendmsg_to_an_address_reaches_it_from_the_sender() {
    each_config(|mut d| {
        let (a, b) = (udp(), udp());
        let to = SockAddr::from(b.local_addr().unwrap());
        let msg = SendMsgBuf::new(Bytes::from_static(b"hello"), Some(&to));
        let id = d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 2);
        let done = exactly(&mut d, 1).pop().unwrap();
        assert_eq!((done.id, done.result.unwrap()), (id, 5));
        assert!(matches!(done.op, Some(Op::SendMsg { .. })));
        assert_eq!(recv_from(&b), (b"hello".to_vec(), a.local_addr().unwrap()));
    });
}

#[test]
fn vectored_sendmsg_on_a_stream_socket_sends_the_chunks_in_order() {
    each_config(|mut d| {
        let (ours, mut peer) = super::tcp_pair();
        let chunks = vec![Bytes::from_static(b"ab"), Bytes::from(vec![b'c'; 70_000]), "d".into()];
        let msg = SendMsgBuf::vectored(chunks);
        let id = d.submit(Op::SendMsg { fd: ours.as_raw_fd(), msg }, 1);
        let done = exactly(&mut d, 1).pop().unwrap();
        assert_eq!(done.id, id);
        // The socket may take a prefix only (the transport resubmits the rest).
        let sent = done.result.unwrap() as usize;
        assert!(sent > 2, "sent {sent}");
        let mut want = b"ab".to_vec();
        want.extend(std::iter::repeat_n(b'c', 70_000));
        want.push(b'd');
        let mut got = vec![0; sent];
        std::io::Read::read_exact(&mut peer, &mut got).unwrap();
        assert!(got == want[..sent], "the chunks arrive in order, nothing repeated");
    });
}

#[test]
fn sendmsg_on_a_connected_socket_needs_no_address_and_oversize_is_emsgsize() {
    each_config(|mut d| {
        let (a, b) = (udp(), udp());
        a.connect(b.local_addr().unwrap()).unwrap();
        let msg = SendMsgBuf::new(Bytes::from_static(b"x"), None);
        d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 1);
        assert_eq!(exactly(&mut d, 1)[0].result.as_ref().unwrap(), &1);
        let mut buf = [0; 4];
        let deadline = Instant::now() + LIMIT;
        while b.recv(&mut buf).is_err() && Instant::now() < deadline {}
        assert_eq!(buf[0], b'x');
        let msg = SendMsgBuf::new(Bytes::from(vec![0; 70_000]), None);
        d.submit(Op::SendMsg { fd: a.as_raw_fd(), msg }, 1);
        let err = exactly(&mut d, 1).pop().unwrap().result.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EMSGSIZE));
    });
}

#[test]
fn one_op_delivers_many_whole_datagrams_each_with_its_source() {
    each_config(|mut d| {
        let (a, b, ours) = (udp(), udp(), udp());
        let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 7);
        let to = ours.local_addr().unwrap();
        let sent: [(&UdpSocket, &[u8]); 5] =
            [(&a, b"one"), (&b, b"two"), (&a, b""), (&b, &[9; 60_000]), (&a, b"last")];
        for (from, data) in sent {
            from.send_to(data, to).unwrap();
        }
        let out = exactly(&mut d, sent.len());
        for (i, (c, (from, data))) in out.iter().zip(sent).enumerate() {
            assert_eq!((c.id, c.owner, c.more()), (id, 7, true), "datagram {i}");
            assert_eq!(c.result.as_ref().unwrap(), &(data.len() as u32), "datagram {i}");
            let got = c.data.as_ref().expect("a datagram carries its bytes");
            assert!(&got[..] == data, "datagram {i}: not whole ({} bytes)", got.len());
            assert_eq!(got.is_ring_slot(), d.backend() == Backend::Uring, "io_uring lends slots");
            assert_eq!(source_of(c), Some(from.local_addr().unwrap()), "datagram {i}");
        }
        assert_eq!(d.in_flight(), 1, "the op keeps going");
        assert_eq!(d.cancel(id), Some(7));
    });
}

#[test]
fn an_oversize_datagram_is_emsgsize_and_the_next_one_still_comes() {
    each_config(|mut d| {
        let (peer, ours) = unix_datagram_pair();
        let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
        peer.send(&vec![1; DATAGRAM_CAPACITY + 1]).unwrap();
        peer.send(&vec![2; DATAGRAM_CAPACITY]).unwrap();
        let out = exactly(&mut d, 2);
        let err = out[0].result.as_ref().unwrap_err();
        assert_eq!((err.raw_os_error(), out[0].more()), (Some(libc::EMSGSIZE), true));
        assert!(out[0].data.is_none(), "never delivered cut short");
        let next = out[1].data.as_deref().expect("the next datagram");
        assert!(next.len() == DATAGRAM_CAPACITY && next.iter().all(|b| *b == 2), "{}", next.len());
        assert_eq!(out[1].data.as_ref().unwrap().source(), None, "unbound peer");
        assert_eq!(d.cancel(id), Some(1));
    });
}

#[test]
fn a_receive_error_ends_the_op_and_a_new_one_receives_again() {
    each_config(|mut d| {
        let (ours, closed) = (udp(), udp());
        ours.connect(closed.local_addr().unwrap()).unwrap();
        drop(closed);
        ours.send(b"nobody listens").unwrap(); // ICMP port unreachable: ECONNREFUSED
        d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
        let out = collect(&mut d, 1, LIMIT);
        let last = out.last().expect("a final completion");
        let err = last.result.as_ref().unwrap_err();
        assert_eq!((err.raw_os_error(), last.more()), (Some(libc::ECONNREFUSED), false));
        assert!(matches!(last.op, Some(Op::RecvMsgMulti { .. })));
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn a_cancelled_op_frees_nothing_early_and_reports_nothing() {
    each_config(|mut d| cancel_a_datagram_receive(&mut d, &no_look));
}

/// A `RecvMsgMulti` that delivered a datagram is cancelled while the datagram is still held:
/// nothing more is reported, the datagram outlives its op, and a datagram that came meanwhile
/// is still queued for the next op. `settled` sees the driver once the op ended and the held
/// datagram was dropped.
pub(crate) fn cancel_a_datagram_receive(d: &mut Driver<u32>, settled: Look) {
    let (a, ours) = (udp(), udp());
    let to = ours.local_addr().unwrap();
    let id = d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 1);
    a.send_to(b"kept", to).unwrap();
    let held = exactly(d, 1).pop().and_then(|c| c.data).expect("the first datagram");
    assert_eq!(d.cancel(id), Some(1));
    let out = settle(d);
    assert!(out.is_empty(), "nothing after cancel: {out:?}");
    assert_eq!(&*held, b"kept", "a delivered datagram outlives its op");
    drop(held);
    settled(d, ours.as_raw_fd());
    a.send_to(b"later", to).unwrap();
    d.submit(Op::RecvMsgMulti { fd: ours.as_raw_fd() }, 2);
    let out = collect(d, 1, LIMIT);
    assert_eq!(out[0].data.as_deref(), Some(&b"later"[..]), "still queued");
}
