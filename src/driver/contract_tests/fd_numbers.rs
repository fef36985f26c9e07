//! fd-number integrity: only the driver closes an fd it handed to the kernel, once no op names
//! it, and no stale op ever acts on a number that was closed and reused. Each test puts a new
//! socket on the freed number deliberately (`dup2`) and checks that the loop never connects,
//! writes to, reads from or shuts down that socket.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use bytes::Bytes;

use super::{collect, each_config, high, is_open, poll, settle, sockaddr, tcp_pair, tcp_socket};
use super::{no_look, outcomes, turns, Look, IN, LIMIT};
use crate::driver::any::Driver;
use crate::driver::{Interest, Op};

/// A TCP pair (see [`tcp_pair`]) with ours moved to a high number (see [`high`]): ours, its
/// number, and the peer.
fn high_tcp_pair() -> (OwnedFd, RawFd, TcpStream) {
    let (ours, peer) = tcp_pair();
    let ours = high(ours);
    let number = ours.as_raw_fd();
    (ours, number, peer)
}

/// Puts `new` on the number `fd` (which must be free) and returns it owned there.
fn reuse(fd: RawFd, new: impl Into<OwnedFd>) -> OwnedFd {
    assert!(!is_open(fd), "fd {fd} is still allocated: nothing to reuse");
    // SAFETY: dup2 takes no pointers; `fd` is free, so nothing of anyone else's is replaced.
    let got = unsafe { libc::dup2(new.into().as_raw_fd(), fd) };
    assert_eq!(got, fd, "dup2: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` now refers to `new`'s socket and nothing else owns this number.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Whether socket `fd` is connected to anything.
fn is_connected(fd: &OwnedFd) -> bool {
    socket2::SockRef::from(fd).peer_addr().is_ok()
}

/// Whether `peer` got anything, or end of stream, within 200 ms.
fn peer_got_anything(peer: &mut TcpStream) -> bool {
    peer.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    loop {
        match peer.read(&mut [0; 64]) {
            Ok(_) => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("peer read: {e}"),
        }
    }
}

#[test]
fn close_fd_closes_at_once_when_no_op_names_the_fd() {
    each_config(|mut d| {
        let (ours, number, mut peer) = high_tcp_pair();
        d.close_fd(ours);
        assert!(!is_open(number), "not closed");
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "the peer sees end of stream");
        close_an_fd_after_its_poll(&mut d, &no_look);
    });
}

/// A poll of an fd completes, then `close_fd` closes the fd at once (`polled` sees the driver
/// and the number before): the number is free and the peer sees the socket gone. Returns the
/// number.
pub(crate) fn close_an_fd_after_its_poll(d: &mut Driver<u32>, polled: Look) -> RawFd {
    let (ours, number, mut peer) = high_tcp_pair();
    peer.write_all(b"x").unwrap();
    let id = d.submit(poll(&ours, Interest::READ), 1);
    assert_eq!(outcomes(&collect(d, 1, LIMIT)), [(id, 1, IN)]);
    polled(d, number);
    d.close_fd(ours);
    assert!(!is_open(number), "not closed");
    // Closed with "x" unread, the socket resets the connection.
    match peer.read(&mut [0; 8]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the peer still sees a live socket: {other:?}"),
    }
    number
}

#[test]
fn close_fd_waits_for_an_op_in_flight_then_closes() {
    each_config(|mut d| {
        let (ours, number, _peer) = high_tcp_pair();
        let id = d.submit(Op::Poll { fd: number, interest: Interest::READ }, 1);
        turns(&mut d, 1); // in the kernel (io_uring) or waiting for readiness (epoll)
        d.close_fd(ours);
        assert!(is_open(number), "closed while an op names it");
        turns(&mut d, 2);
        assert!(is_open(number), "closed while an op names it");
        assert_eq!(d.cancel(id), Some(1));
        let out = settle(&mut d);
        assert!(out.is_empty(), "{out:?}");
        assert!(!is_open(number), "never closed");
    });
}

#[test]
fn a_connect_cancelled_before_the_turn_never_connects_the_number_reused() {
    each_config(|mut d| {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        target.set_nonblocking(true).unwrap();
        let socket = high(tcp_socket());
        let number = socket.as_raw_fd();
        let op = Op::Connect { fd: number, addr: sockaddr(target.local_addr().unwrap()) };
        let id = d.submit(op, 1);
        assert_eq!(d.cancel(id), Some(1));
        d.close_fd(socket);
        // The connect was withdrawn: nothing names the number, so it is free at once.
        let someone_elses = reuse(number, tcp_socket());
        let out = settle(&mut d);
        turns(&mut d, 3);
        assert!(out.is_empty(), "{out:?}");
        assert!(!is_connected(&someone_elses), "the stale connect connected it");
        let accepted = target.accept().map(drop);
        assert_eq!(accepted.unwrap_err().kind(), ErrorKind::WouldBlock, "a connection");
    });
}

#[test]
fn a_send_cancelled_before_the_turn_never_writes_to_the_number_reused() {
    each_config(|mut d| {
        let (ours, number, mut old_peer) = high_tcp_pair();
        let op = Op::Send { fd: number, buf: Bytes::from_static(b"secret").into(), offset: 0 };
        let id = d.submit(op, 1);
        assert_eq!(d.cancel(id), Some(1));
        d.close_fd(ours);
        let (theirs, mut their_peer) = tcp_pair();
        let _someone_elses = reuse(number, theirs);
        turns(&mut d, 3);
        assert!(!peer_got_anything(&mut their_peer), "bytes reached the wrong socket");
        assert_eq!(old_peer.read(&mut [0; 8]).unwrap(), 0, "nothing sent, then closed");
    });
}

#[test]
fn a_send_in_the_kernel_keeps_its_number_until_its_final_completion() {
    each_config(|mut d| {
        let (ours, number, old_peer) = high_tcp_pair();
        // Send until one send stays pending (the peer does not read).
        let big = Bytes::from(vec![7u8; 8 << 20]);
        let (mut offset, mut pending) = (0, None);
        while pending.is_none() {
            let id = d.submit(Op::Send { fd: number, buf: big.clone().into(), offset }, 1);
            match turns(&mut d, 3).pop() {
                Some(c) => offset += c.result.expect("send") as usize,
                None => pending = Some(id),
            }
            assert!(offset < big.len(), "the peer took everything");
        }
        let id = pending.unwrap();
        assert_eq!(d.cancel(id), Some(1));
        d.close_fd(ours);
        let out = settle(&mut d);
        assert!(out.is_empty(), "{out:?}");
        assert!(!is_open(number), "closed once the send ended");
        let (theirs, mut their_peer) = tcp_pair();
        let _someone_elses = reuse(number, theirs);
        turns(&mut d, 3);
        assert!(!peer_got_anything(&mut their_peer), "bytes reached the wrong socket");
        drop(old_peer);
    });
}

#[test]
fn a_recv_cancelled_and_closed_never_reads_from_the_number_reused() {
    each_config(|mut d| {
        let (ours, number, _old_peer) = high_tcp_pair();
        let id = d.submit(Op::RecvMulti { fd: number }, 1);
        turns(&mut d, 1);
        assert_eq!(d.cancel(id), Some(1));
        d.close_fd(ours);
        settle(&mut d);
        let (theirs, mut their_peer) = tcp_pair();
        let someone_elses = reuse(number, theirs);
        their_peer.write_all(b"for someone else").unwrap();
        turns(&mut d, 3);
        let mut got = [0; 32];
        let n = (&TcpStream::from(someone_elses)).read(&mut got).unwrap();
        assert_eq!(&got[..n], b"for someone else", "the stale recv took the bytes");
    });
}

#[test]
fn dropping_the_driver_closes_the_fds_waiting_for_their_ops_after_those_ended() {
    each_config(|mut d| {
        let (ours, number, mut peer) = high_tcp_pair();
        d.submit(Op::Poll { fd: number, interest: Interest::READ }, 1);
        turns(&mut d, 1);
        d.close_fd(ours);
        assert!(is_open(number));
        drop(d);
        assert!(!is_open(number), "the close waited for an op the drop ended");
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0);
    });
}
