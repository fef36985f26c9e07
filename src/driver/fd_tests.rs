//! fd-number integrity on every driver: only the driver closes an fd it handed to the kernel,
//! once no op names it, and no stale op ever acts on a number that was closed and reused. Each
//! test puts a new socket on the freed number deliberately (`dup2`) and checks that the loop
//! never connects, writes to, reads from or shuts down that socket.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::any::Driver;
use super::uring::UringDriver;
use super::{Completion, Interest, Op, SockAddrBuf};

const LIMIT: Duration = Duration::from_secs(5);

/// io_uring (skipped, printed, where the kernel lacks it) and, with `fallback`, epoll.
fn drivers() -> Vec<(&'static str, Driver<u32>)> {
    let mut drivers = Vec::new();
    match UringDriver::with_disabled(&[]) {
        Ok(d) => drivers.push(("uring", Driver::Uring(d))),
        Err(err) => crate::test_support::uring_missing("fd integrity test", &err),
    }
    #[cfg(feature = "fallback")]
    drivers.push(("epoll", Driver::Epoll(super::epoll::EpollDriver::new().expect("epoll"))));
    drivers
}

/// Turns `n` times without blocking long; returns the completions.
fn turns(d: &mut Driver<u32>, n: usize) -> Vec<Completion<u32>> {
    let mut out = Vec::new();
    for _ in 0..n {
        d.turn(Some(Duration::from_millis(5)), &mut out).expect("turn");
    }
    out
}

/// Turns until no op is in flight, or [`LIMIT`].
fn settle(d: &mut Driver<u32>) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while d.in_flight() > 0 && start.elapsed() < LIMIT {
        d.turn(Some(Duration::from_millis(10)), &mut out).expect("turn");
    }
    assert_eq!(d.in_flight(), 0, "ops left");
    out
}

/// Moves `fd` to a number of 2000 or more, away from the numbers tests running in parallel
/// get (fds are allocated lowest first), so that number can be watched and reused on purpose.
fn high(fd: OwnedFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC takes no pointers; the new fd is fresh and ours alone.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 2000) };
    assert!(new >= 2000, "F_DUPFD_CLOEXEC: {}", std::io::Error::last_os_error());
    // SAFETY: `new` was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(new) }
}

/// Whether the number `fd` is allocated.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Puts `new` on the number `fd` (which must be free) and returns it owned there.
fn reuse(fd: RawFd, new: OwnedFd) -> OwnedFd {
    assert!(!is_open(fd), "fd {fd} is still allocated: nothing to reuse");
    // SAFETY: dup2 takes no pointers; `fd` is free, so nothing of anyone else's is replaced.
    let got = unsafe { libc::dup2(new.as_raw_fd(), fd) };
    assert_eq!(got, fd, "dup2: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` now refers to `new`'s socket and nothing else owns this number.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A connected TCP pair: ours (non-blocking, as the driver needs) and the peer (blocking,
/// with a read timeout).
fn tcp_pair() -> (OwnedFd, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (ours, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    (OwnedFd::from(ours), peer)
}

/// A fresh non-blocking TCP socket.
fn tcp_socket() -> OwnedFd {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    OwnedFd::from(socket)
}

fn sockaddr(addr: SocketAddr) -> Box<SockAddrBuf> {
    let addr = socket2::SockAddr::from(addr);
    let mut buf = SockAddrBuf::empty();
    // SAFETY: a `SockAddr` holds at most a `sockaddr_storage`, which `buf.storage` is.
    unsafe {
        std::ptr::copy_nonoverlapping(
            addr.as_ptr().cast::<u8>(),
            (&mut buf.storage as *mut libc::sockaddr_storage).cast::<u8>(),
            addr.len() as usize,
        )
    };
    buf.len = addr.len();
    buf
}

/// Whether socket `fd` is connected to anything.
fn is_connected(fd: &OwnedFd) -> bool {
    socket2::SockRef::from(fd).peer_addr().is_ok()
}

/// Whether `peer` (with a read timeout) got anything, or end of stream.
fn peer_got_anything(peer: &mut TcpStream) -> bool {
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
    for (name, mut d) in drivers() {
        let (ours, mut peer) = tcp_pair();
        let ours = high(ours);
        let number = ours.as_raw_fd();
        d.close_fd(ours);
        assert!(!is_open(number), "{name}: not closed");
        peer.set_read_timeout(Some(LIMIT)).unwrap();
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "{name}: the peer sees end of stream");
    }
}

#[test]
fn close_fd_waits_for_an_op_in_flight_then_closes() {
    for (name, mut d) in drivers() {
        let (ours, _peer) = tcp_pair();
        let ours = high(ours);
        let number = ours.as_raw_fd();
        let id = d.submit(Op::Poll { fd: number, interest: Interest::READ }, 1);
        turns(&mut d, 1); // in the kernel (io_uring) or waiting for readiness (epoll)
        d.close_fd(ours);
        assert!(is_open(number), "{name}: closed while an op names it");
        turns(&mut d, 2);
        assert!(is_open(number), "{name}: closed while an op names it");
        assert_eq!(d.cancel(id), Some(1), "{name}");
        let out = settle(&mut d);
        assert!(out.is_empty(), "{name}: {out:?}");
        assert!(!is_open(number), "{name}: never closed");
    }
}

#[test]
fn a_connect_cancelled_before_the_turn_never_connects_the_number_reused() {
    for (name, mut d) in drivers() {
        let target = TcpListener::bind("127.0.0.1:0").unwrap();
        target.set_nonblocking(true).unwrap();
        let socket = high(tcp_socket());
        let number = socket.as_raw_fd();
        let op = Op::Connect { fd: number, addr: sockaddr(target.local_addr().unwrap()) };
        let id = d.submit(op, 1);
        assert_eq!(d.cancel(id), Some(1), "{name}");
        d.close_fd(socket);
        // The connect was withdrawn: nothing names the number, so it is free at once.
        let someone_elses = reuse(number, tcp_socket());
        let out = settle(&mut d);
        turns(&mut d, 3);
        assert!(out.is_empty(), "{name}: {out:?}");
        assert!(!is_connected(&someone_elses), "{name}: the stale connect connected it");
        let accepted = target.accept().map(drop);
        assert_eq!(accepted.unwrap_err().kind(), ErrorKind::WouldBlock, "{name}: a connection");
    }
}

#[test]
fn a_send_cancelled_before_the_turn_never_writes_to_the_number_reused() {
    for (name, mut d) in drivers() {
        let (ours, mut old_peer) = tcp_pair();
        let ours = high(ours);
        let number = ours.as_raw_fd();
        let op = Op::Send { fd: number, buf: Bytes::from_static(b"secret"), offset: 0 };
        let id = d.submit(op, 1);
        assert_eq!(d.cancel(id), Some(1), "{name}");
        d.close_fd(ours);
        let (theirs, mut their_peer) = tcp_pair();
        let _someone_elses = reuse(number, theirs);
        turns(&mut d, 3);
        assert!(!peer_got_anything(&mut their_peer), "{name}: bytes reached the wrong socket");
        old_peer.set_read_timeout(Some(LIMIT)).unwrap();
        assert_eq!(old_peer.read(&mut [0; 8]).unwrap(), 0, "{name}: nothing sent, then closed");
    }
}

#[test]
fn a_send_in_the_kernel_keeps_its_number_until_its_final_completion() {
    for (name, mut d) in drivers() {
        let (ours, old_peer) = tcp_pair();
        let ours = high(ours);
        let number = ours.as_raw_fd();
        // Send until one send stays pending (the peer does not read).
        let big = Bytes::from(vec![7u8; 8 << 20]);
        let (mut offset, mut pending) = (0, None);
        while pending.is_none() {
            let id = d.submit(Op::Send { fd: number, buf: big.clone(), offset }, 1);
            match turns(&mut d, 3).pop() {
                Some(c) => offset += c.result.expect("send") as usize,
                None => pending = Some(id),
            }
            assert!(offset < big.len(), "{name}: the peer took everything");
        }
        let id = pending.unwrap();
        assert_eq!(d.cancel(id), Some(1), "{name}");
        d.close_fd(ours);
        let out = settle(&mut d);
        assert!(out.is_empty(), "{name}: {out:?}");
        assert!(!is_open(number), "{name}: closed once the send ended");
        let (theirs, mut their_peer) = tcp_pair();
        let _someone_elses = reuse(number, theirs);
        turns(&mut d, 3);
        assert!(!peer_got_anything(&mut their_peer), "{name}: bytes reached the wrong socket");
        drop(old_peer);
    }
}

#[test]
fn a_recv_cancelled_and_closed_never_reads_from_the_number_reused() {
    for (name, mut d) in drivers() {
        let (ours, _old_peer) = tcp_pair();
        let ours = high(ours);
        let number = ours.as_raw_fd();
        let id = d.submit(Op::RecvMulti { fd: number }, 1);
        turns(&mut d, 1);
        assert_eq!(d.cancel(id), Some(1), "{name}");
        d.close_fd(ours);
        settle(&mut d);
        let (theirs, mut their_peer) = tcp_pair();
        let someone_elses = reuse(number, theirs);
        their_peer.write_all(b"for someone else").unwrap();
        turns(&mut d, 3);
        let mut got = [0; 32];
        let n = (&TcpStream::from(someone_elses)).read(&mut got).unwrap();
        assert_eq!(&got[..n], b"for someone else", "{name}: the stale recv took the bytes");
    }
}

#[test]
fn dropping_the_driver_closes_the_fds_waiting_for_their_ops_after_those_ended() {
    for (name, mut d) in drivers() {
        let (ours, mut peer) = tcp_pair();
        let ours = high(ours);
        let number = ours.as_raw_fd();
        d.submit(Op::Poll { fd: number, interest: Interest::READ }, 1);
        turns(&mut d, 1);
        d.close_fd(ours);
        assert!(is_open(number), "{name}");
        drop(d);
        assert!(!is_open(number), "{name}: the close waited for an op the drop ended");
        peer.set_read_timeout(Some(LIMIT)).unwrap();
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "{name}");
    }
}
