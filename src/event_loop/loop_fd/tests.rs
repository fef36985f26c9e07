//! [`LoopFd`] on both backends: close cancels the ops in its slots, then closes once through
//! the driver; drop closes what nobody closed through the driver too, which waits for someone
//! else's op still naming the fd; without a driver the fd closes at once.

use std::cell::Cell;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::LoopFd;
use crate::driver::{Interest, Op};
use crate::event_loop::nobody;
use crate::EventLoop;

fn loops() -> Vec<EventLoop> {
    crate::test_support::loops("loop_fd")
}

/// A `LoopFd` for one end of a socket pair, and the other end (non-blocking) to watch it.
fn pair(lp: &EventLoop) -> (LoopFd, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    (LoopFd::new(lp, OwnedFd::from(a)), b)
}

/// Runs `n` loop iterations.
fn turn(lp: &EventLoop, n: usize) {
    for _ in 0..n {
        let stopper = lp.clone();
        lp.call_soon(move || stopper.stop()).unwrap();
        lp.run_forever().unwrap();
    }
}

/// Whether the peer of `b` is closed: a read gives end of stream, not "would block".
fn peer_closed(b: &mut UnixStream) -> bool {
    match b.read(&mut [0; 8]) {
        Ok(0) => true,
        Err(err) if err.kind() == ErrorKind::WouldBlock => false,
        other => panic!("unexpected read on the peer: {other:?}"),
    }
}

#[test]
fn close_cancels_the_ops_in_flight_then_closes_the_fd_once() {
    for lp in loops() {
        let (fd, mut b) = pair(&lp);
        let raw = fd.raw();
        let op = Op::Poll { fd: raw, interest: Interest::READ };
        let slot = Cell::new(fd.submit(op, nobody()));
        assert!(slot.get().is_some());
        assert!(!peer_closed(&mut b), "{:?}: closed early", lp.backend());
        fd.close(&[&slot]);
        assert_eq!(slot.get(), None, "{:?}: the poll's slot is emptied", lp.backend());
        assert!(!fd.is_open() && fd.open_fd().is_none() && fd.with_fd(|_| ()).is_none());
        assert_eq!(fd.raw(), raw, "the number stays for messages");
        let in_flight = lp.ops_in_flight();
        fd.close(&[&slot]);
        drop(fd);
        assert_eq!(
            lp.ops_in_flight(),
            in_flight,
            "{:?}: a second close or the drop submitted",
            lp.backend()
        );
        turn(&lp, 5);
        assert_eq!(lp.ops_in_flight(), 0, "{:?}", lp.backend());
        assert!(peer_closed(&mut b), "{:?}: the fd is still open", lp.backend());
        lp.close().unwrap();
    }
}

#[test]
fn dropping_an_open_loop_fd_closes_it_at_once() {
    for lp in loops() {
        let (fd, mut b) = pair(&lp);
        assert_eq!(fd.open_fd(), Some(fd.raw()));
        // A poll a watcher is done with: its fd stays registered on epoll until forgotten.
        let op = Op::Poll { fd: fd.raw(), interest: Interest::WRITE };
        let poll = lp.submit_op(op).unwrap();
        let (result, _) = lp.run_until_complete(poll).unwrap();
        assert!(result.is_ok());
        drop(fd);
        assert!(peer_closed(&mut b), "{:?}: the fd is still open", lp.backend());
        assert_eq!(lp.ops_in_flight(), 0, "{:?}: an op was submitted", lp.backend());
        // The number may be reused at once: a new fd on it is watched afresh.
        let (fd, mut b) = pair(&lp);
        let op = Op::Poll { fd: fd.raw(), interest: Interest::WRITE };
        let (result, _) = lp.run_until_complete(lp.submit_op(op).unwrap()).unwrap();
        assert!(result.is_ok(), "{:?}", lp.backend());
        drop(fd);
        assert!(peer_closed(&mut b));
        lp.close().unwrap();
    }
}

#[test]
fn dropping_an_open_loop_fd_under_someone_elses_op_closes_it_once_that_op_ends() {
    // As a server's listener, dropped unclosed while its accept task still awaits an accept:
    // the number must stay allocated while an op (queued, or in the kernel) names it.
    for submitted in [false, true] {
        for lp in loops() {
            let backend = lp.backend();
            let (fd, mut b) = pair(&lp);
            let op = Op::Poll { fd: fd.raw(), interest: Interest::READ };
            let poll = lp.submit_op(op).unwrap();
            if submitted {
                turn(&lp, 1); // the poll is in the kernel (io_uring) or waiting (epoll)
            }
            drop(fd);
            turn(&lp, 2);
            assert!(!peer_closed(&mut b), "{backend:?} ({submitted}): closed under an op");
            drop(poll);
            turn(&lp, 5);
            assert!(peer_closed(&mut b), "{backend:?} ({submitted}): still open");
            assert_eq!(lp.ops_in_flight(), 0, "{backend:?}");
            lp.close().unwrap();
        }
    }
}

#[test]
fn without_a_driver_close_and_drop_close_the_fd_at_once() {
    for lp in loops() {
        let (closed, mut b1) = pair(&lp);
        let (dropped, mut b2) = pair(&lp);
        lp.close().unwrap();
        closed.close(&[]);
        assert!(peer_closed(&mut b1), "{:?}: close left the fd open", lp.backend());
        drop(dropped);
        assert!(peer_closed(&mut b2), "{:?}: drop left the fd open", lp.backend());
    }
    // And with the loop itself gone.
    let lp = EventLoop::new().unwrap();
    let (fd, mut b) = pair(&lp);
    drop(lp);
    assert!(fd.event_loop().is_none());
    assert_eq!(fd.submit(Op::Poll { fd: fd.raw(), interest: Interest::READ }, nobody()), None);
    drop(fd);
    assert!(peer_closed(&mut b), "drop without a loop left the fd open");
}

#[test]
fn with_fd_borrows_the_open_fd() {
    for lp in loops() {
        let (fd, _b) = pair(&lp);
        assert_eq!(fd.with_fd(|borrowed| borrowed.as_raw_fd()), Some(fd.raw()));
        lp.close().unwrap();
    }
}
