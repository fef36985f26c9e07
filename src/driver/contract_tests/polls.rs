//! `Poll`: one-shot, level-checked when armed, `POLLERR`/`POLLHUP` always reported; a bad fd is
//! `EBADF` and a regular file always ready; cancelling a poll.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::turn_once;
use super::{collect, each_config, outcomes, outcomes_by_owner, poll, read_some, run, settle};
use super::{no_look, unix_stream_pair, write, Look, HUP, IN, LIMIT, OUT};
use crate::driver::any::Driver;
use crate::driver::{Interest, Op};
use crate::test_support::pipe;

#[test]
fn poll_completes_with_pollin_after_a_write() {
    each_config(|mut d| {
        let (r, w) = pipe();
        let id = d.submit(poll(&r, Interest::READ), 7);
        assert_eq!(d.in_flight(), 1);
        let early = collect(&mut d, 1, Duration::from_millis(20));
        assert!(early.is_empty(), "{early:?}");
        write(&w, b"x");
        let start = Instant::now();
        let out = collect(&mut d, 1, LIMIT);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        assert_eq!(outcomes(&out), [(id, 7, IN)]);
        assert!(!out[0].more() && matches!(out[0].op, Some(Op::Poll { .. })), "{out:?}");
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.cancel(id), None, "a completed op is gone");
    });
}

#[test]
fn poll_on_a_ready_fd_completes_at_once() {
    each_config(|mut d| {
        let (a, b) = unix_stream_pair();
        write(&b, b"hi");
        let reader = d.submit(poll(&a, Interest::READ), 1);
        let writer = d.submit(poll(&b, Interest::WRITE), 2);
        // The first turn, with no timeout: both are ready when armed.
        let out = turn_once(&mut d, None);
        assert_eq!(outcomes_by_owner(&out), [(reader, 1, IN), (writer, 2, OUT)]);
    });
}

#[test]
fn hangup_completes_ops_of_both_directions() {
    each_config(|mut d| {
        let (rx, tx) = pipe();
        let reader = d.submit(poll(&rx, Interest::READ), 1);
        let writer = d.submit(poll(&rx, Interest::WRITE), 2); // a read end never becomes writable
        assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
        drop(tx);
        let start = Instant::now();
        let out = collect(&mut d, 2, LIMIT);
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        assert_eq!(outcomes_by_owner(&out), [(reader, 1, HUP), (writer, 2, HUP)]);
    });
}

#[test]
fn a_regular_file_is_always_ready() {
    each_config(|mut d| {
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let reader = d.submit(poll(&file, Interest::READ), 1);
        let both = d.submit(poll(&file, Interest(IN | OUT)), 2);
        let out = turn_once(&mut d, None);
        assert_eq!(outcomes_by_owner(&out), [(reader, 1, IN), (both, 2, IN | OUT)]);
        let again = d.submit(poll(&file, Interest::READ), 3);
        assert_eq!(outcomes(&turn_once(&mut d, None)), [(again, 3, IN)]);
    });
}

#[test]
fn an_invalid_fd_completes_with_ebadf_at_once() {
    assert!(!super::is_open(9999), "fd 9999 is open");
    each_config(|mut d| {
        for fd in [-1, 9999, i32::MAX - 1] {
            let id = d.submit(Op::Poll { fd, interest: Interest::READ }, 5);
            let out = turn_once(&mut d, None);
            assert_eq!(out.len(), 1, "fd {fd}: {out:?}");
            let errno = out[0].result.as_ref().unwrap_err().raw_os_error();
            assert_eq!((out[0].id, out[0].owner, errno), (id, 5, Some(libc::EBADF)), "fd {fd}");
        }
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn a_cancelled_ebadf_op_is_never_delivered() {
    each_config(|mut d| {
        let id = d.submit(Op::Poll { fd: -1, interest: Interest::READ }, 5);
        assert_eq!(d.cancel(id), Some(5));
        assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn every_final_completion_hands_the_op_back() {
    each_config(|mut d| {
        let (ours, _peer) = super::tcp_pair();
        let c = run(&mut d, Op::Poll { fd: ours.as_raw_fd(), interest: Interest::WRITE });
        assert!(matches!(c.op, Some(Op::Poll { .. })), "{:?}", c.op);
        let c = run(&mut d, Op::Poll { fd: -1, interest: Interest::READ });
        assert_eq!(c.result.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(matches!(c.op, Some(Op::Poll { fd: -1, .. })));
    });
}

#[test]
fn cancelling_one_of_two_ops_on_an_fd_keeps_the_other() {
    each_config(|mut d| {
        let (a, b) = unix_stream_pair();
        let reader = d.submit(poll(&a, Interest::READ), 1);
        let writer = d.submit(poll(&a, Interest::WRITE), 2);
        assert_eq!(d.cancel(writer), Some(2));
        assert_eq!(d.cancel(writer), None);
        assert_eq!(d.in_flight(), 1);
        assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty(), "nothing for a cancelled op");
        write(&b, b"x");
        assert_eq!(outcomes(&collect(&mut d, 1, LIMIT)), [(reader, 1, IN)]);

        let reader = d.submit(poll(&a, Interest::READ), 3);
        let writer = d.submit(poll(&a, Interest::WRITE), 4);
        assert_eq!(d.cancel(reader), Some(3));
        assert_eq!(outcomes(&collect(&mut d, 1, LIMIT)), [(writer, 4, OUT)]);
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn resubmitting_while_data_is_unread_completes_again() {
    each_config(|mut d| rearm_while_data_is_unread(&mut d, &no_look));
}

/// A poll re-armed right after its completion completes again while the data is unread (the
/// selector semantics `add_reader` promises), and no longer once it is read; `rearmed` sees
/// the driver and the fd after each completion. Ends with nothing in flight.
pub(crate) fn rearm_while_data_is_unread(d: &mut Driver<u32>, rearmed: Look) {
    let (a, b) = unix_stream_pair();
    write(&b, b"x");
    for owner in 0..3 {
        let id = d.submit(poll(&a, Interest::READ), owner);
        assert_eq!(outcomes(&turn_once(d, Some(LIMIT))), [(id, owner, IN)]);
        rearmed(d, a.as_raw_fd());
    }
    assert_eq!(read_some(&a), 1);
    let id = d.submit(poll(&a, Interest::READ), 9);
    assert!(turn_once(d, Some(Duration::ZERO)).is_empty(), "drained: no longer ready");
    assert_eq!(d.cancel(id), Some(9));
    let out = settle(d);
    assert!(out.is_empty(), "{out:?}");
}
