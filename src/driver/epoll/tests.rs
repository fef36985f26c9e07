//! What only the epoll driver does: one registration per fd, shared by its ops and reconciled
//! lazily; completions of one event in one turn, oldest first; fd numbers reused under a
//! registration; `epoll_pwait2`; the table left behind. (The contract every driver meets:
//! `driver/contract_tests/`, whose scenarios these tests also run to look at the table.)

use std::os::fd::{AsRawFd, RawFd};
use std::thread;
use std::time::{Duration, Instant};

use super::table::Registration;
use super::EpollDriver;
use crate::driver::any::Driver;
use crate::driver::contract_tests::{cancel_a_stalled_send, cancel_after_the_turn};
use crate::driver::contract_tests::{cancel_before_the_turn, close_an_fd_after_its_poll};
use crate::driver::contract_tests::{outcomes, poll, read_and_send_on_one_fd};
use crate::driver::contract_tests::{rearm_while_data_is_unread, receive_past_urgent_data};
use crate::driver::contract_tests::{send_to_a_full_socket, tcp_pair, turn_once};
use crate::driver::contract_tests::{unix_stream_pair, write, HUP, IN, LIMIT, OUT};
use crate::driver::{Interest, Op};
use crate::test_support::pipe;

const LONG: Option<Duration> = Some(LIMIT);

fn driver() -> Driver<u32> {
    Driver::Epoll(EpollDriver::new().expect("epoll driver"))
}

/// The epoll driver inside `d`, which must be one.
fn epoll(d: &Driver<u32>) -> &EpollDriver<u32> {
    match d {
        Driver::Epoll(e) => e,
        Driver::Uring(_) => unreachable!("an epoll test on io_uring"),
    }
}

/// What the kernel knows of `fd`, as of the last reconcile.
fn registration(d: &Driver<u32>, fd: RawFd) -> Registration {
    epoll(d).table.fds[&fd].registration
}

#[test]
fn reader_and_writer_share_one_registration() {
    let mut d = driver();
    let (a, b) = unix_stream_pair();
    let reader = d.submit(poll(&a, Interest::READ), 1);
    let writer = d.submit(poll(&a, Interest::WRITE), 2);
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(writer, 2, OUT)]);
    assert_eq!(registration(&d, a.as_raw_fd()), Registration::Epoll(IN | OUT));
    // The reader still waits; the mask shrinks to it at the next turn.
    assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(registration(&d, a.as_raw_fd()), Registration::Epoll(IN));
    write(&b, b"x");
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(reader, 1, IN)]);
}

#[test]
fn cancelling_one_of_two_ops_shrinks_the_registration_to_the_other() {
    let mut d = driver();
    let (a, _b) = unix_stream_pair();
    d.submit(poll(&a, Interest::READ), 1);
    let writer = d.submit(poll(&a, Interest::WRITE), 2);
    assert_eq!(d.cancel(writer), Some(2));
    assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(registration(&d, a.as_raw_fd()), Registration::Epoll(IN));
}

#[test]
fn a_rearmed_poll_keeps_its_registration_and_an_idle_fd_is_deleted() {
    let mut d = driver();
    rearm_while_data_is_unread(&mut d, &|d, fd| {
        // Re-armed before the next turn: the registration was kept, not deleted and re-added.
        assert_eq!(registration(d, fd), Registration::Epoll(IN));
    });
    assert!(epoll(&d).table.fds.is_empty(), "an idle fd is deleted at the next turn");
}

#[test]
fn ops_waiting_for_the_same_readiness_complete_oldest_first() {
    let mut d = driver();
    let (a, b) = unix_stream_pair();
    let ids: Vec<_> = (0..4).map(|owner| d.submit(poll(&a, Interest::READ), owner)).collect();
    d.cancel(ids[1]);
    write(&b, b"x");
    let expected: Vec<_> = [0, 2, 3].iter().map(|&i| (ids[i], i as u32, IN)).collect();
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), expected);
    // A hangup completes the ops of both directions in the one turn, oldest first too.
    let (rx, tx) = pipe();
    let reader = d.submit(poll(&rx, Interest::READ), 1);
    let writer = d.submit(poll(&rx, Interest::WRITE), 2);
    assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
    drop(tx);
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(reader, 1, HUP), (writer, 2, HUP)]);
}

#[test]
fn an_infinite_turn_returns_only_at_the_wake() {
    let mut d = driver();
    let (a, _b) = unix_stream_pair();
    d.submit(poll(&a, Interest::READ), 1);
    let waker = d.waker();
    let start = Instant::now();
    let thread = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let mut out = Vec::new();
    d.turn(None, &mut out).unwrap();
    assert!(out.is_empty(), "a wake-up is no completion: {out:?}");
    assert!(start.elapsed() >= Duration::from_millis(50), "returned before the wake");
    thread.join().unwrap();
}

#[test]
fn fds_epoll_refuses_leave_no_entry() {
    let mut d = driver();
    for fd in [-1, i32::MAX - 1] {
        d.submit(Op::Poll { fd, interest: Interest::READ }, 5);
        assert_eq!(turn_once(&mut d, None).len(), 1, "fd {fd}: EBADF");
    }
    assert!(epoll(&d).table.fds.is_empty());
    let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let reader = d.submit(poll(&file, Interest::READ), 1);
    let both = d.submit(poll(&file, Interest(IN | OUT)), 2);
    let out = turn_once(&mut d, None);
    assert_eq!(outcomes(&out), [(reader, 1, IN), (both, 2, IN | OUT)], "oldest first");
    assert!(epoll(&d).table.fds.is_empty(), "a regular file is never registered");
}

#[test]
fn an_fd_number_reused_for_a_new_file_is_registered_again() {
    let mut d = driver();
    let (a, b) = unix_stream_pair();
    write(&b, b"x");
    let id = d.submit(poll(&a, Interest::READ), 1);
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(id, 1, IN)]);
    // Replace the file behind `a`'s number: the kernel drops the registration with it.
    let (c, _e) = unix_stream_pair();
    // SAFETY: both descriptors are open; `a` owns its number and will close the new file.
    assert!(unsafe { libc::dup2(c.as_raw_fd(), a.as_raw_fd()) } >= 0);
    drop(c);
    let id = d.submit(poll(&a, Interest::WRITE), 2); // MOD → ENOENT → ADD
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(id, 2, OUT)]);
    assert_eq!(registration(&d, a.as_raw_fd()), Registration::Epoll(OUT));
}

#[test]
fn ten_thousand_submits_and_cancels_leave_nothing_behind() {
    let mut d = driver();
    let (a, _b) = unix_stream_pair();
    let (c, _e) = unix_stream_pair();
    cancel_before_the_turn(&mut d, [&a, &c]);
    let table = &epoll(&d).table;
    assert!(table.fds.is_empty() && table.dirty.is_empty() && table.ready.is_empty());
    // Registered first, then cancelled: deleted at the next turn.
    cancel_after_the_turn(&mut d, &a, &|d, fd| {
        assert_eq!(registration(d, fd), Registration::Epoll(IN));
    });
    assert!(epoll(&d).table.fds.is_empty());
}

#[test]
fn features_name_epoll_pwait2_when_in_use() {
    let d = driver();
    assert_eq!(d.features().contains(&"epoll_pwait2"), epoll(&d).poller.uses_epoll_pwait2());
}

#[test]
fn a_send_that_would_block_waits_for_pollout() {
    let mut d = driver();
    send_to_a_full_socket(&mut d, &|d, fd| {
        assert_eq!(registration(d, fd), Registration::Epoll(OUT));
    });
}

#[test]
fn a_cancelled_pending_send_drops_its_registration() {
    let mut d = driver();
    cancel_a_stalled_send(&mut d, &|d, _| {
        assert!(epoll(d).table.fds.is_empty(), "the registration went with the op");
    });
}

#[test]
fn close_fd_forgets_the_registration() {
    let mut d = driver();
    let fd = close_an_fd_after_its_poll(&mut d, &|d, fd| {
        assert!(epoll(d).table.fds.contains_key(&fd), "registered");
    });
    assert!(!epoll(&d).table.fds.contains_key(&fd));
}

#[test]
fn a_read_and_a_send_on_one_fd_share_one_registration() {
    let mut d = driver();
    read_and_send_on_one_fd(&mut d, &|d, fd| {
        assert_eq!(registration(d, fd), Registration::Epoll(IN | OUT));
    });
}

/// One turn of at most `timeout`: the owners of its completions, in the order delivered.
fn owners_of_one_turn(d: &mut Driver<u32>, timeout: Option<Duration>) -> Vec<u32> {
    let mut out = Vec::new();
    d.turn(timeout, &mut out).expect("turn");
    out.iter().map(|c| c.owner).collect()
}

#[test]
fn a_turn_that_received_64_kib_leaves_the_other_ready_fds_to_the_next_turn() {
    let mut d = driver();
    let pairs: Vec<_> = (0..3).map(|_| unix_stream_pair()).collect();
    write(&pairs[0].1, &vec![7; super::TURN_BYTES]);
    write(&pairs[1].1, b"x");
    write(&pairs[2].1, b"y");
    for (owner, (ours, _)) in pairs.iter().enumerate() {
        d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, owner as u32);
    }
    // Registered in submission order, so the wait reports them in that order.
    assert_eq!(owners_of_one_turn(&mut d, LONG), [0], "the 64 KiB chunk spent the turn");
    assert_eq!(epoll(&d).deferred.len(), 2);
    // The next turn goes on with the same wait's fds.
    assert_eq!(owners_of_one_turn(&mut d, Some(Duration::ZERO)), [1, 2]);
    assert!(epoll(&d).deferred.is_empty());
}

#[test]
fn deferred_readiness_of_an_fd_number_given_to_a_new_file_is_dropped() {
    let mut d = driver();
    let (big, big_peer) = unix_stream_pair();
    let (a, a_peer) = unix_stream_pair();
    write(&big_peer, &vec![7; super::TURN_BYTES]);
    write(&a_peer, b"x");
    d.submit(Op::RecvMulti { fd: big.as_raw_fd() }, 1);
    let reader = d.submit(poll(&a, Interest::READ), 2);
    assert_eq!(owners_of_one_turn(&mut d, LONG), [1]);
    assert_eq!(epoll(&d).deferred.len(), 1, "a's readiness waits for the next turn");
    // The loop stops using `a`'s number, and a new file with nothing to read takes it.
    assert_eq!(d.cancel(reader), Some(2));
    d.forget_fd(a.as_raw_fd());
    let (c, _c_peer) = unix_stream_pair();
    // SAFETY: both descriptors are open; `a` owns its number and will close the new file.
    assert!(unsafe { libc::dup2(c.as_raw_fd(), a.as_raw_fd()) } >= 0);
    drop(c);
    d.submit(poll(&a, Interest::READ), 3);
    assert!(owners_of_one_turn(&mut d, Some(Duration::ZERO)).is_empty(), "stale readiness");
    assert!(epoll(&d).deferred.is_empty());
    assert!(owners_of_one_turn(&mut d, Some(Duration::ZERO)).is_empty(), "nothing to read");
}

#[test]
fn a_sendfile_waits_for_pollout_before_its_first_call() {
    use crate::driver::contract_tests::file_with;
    let mut d = driver();
    let (ours, _peer) = unix_stream_pair();
    let file = file_with(b"hello");
    let op = Op::SendFile { fd: ours.as_raw_fd(), file: file.as_raw_fd(), offset: 0, len: 5 };
    let id = d.submit(op, 1);
    // Not queued for a try at the next turn (as a `Send` is): waiting for writability.
    assert!(epoll(&d).table.queued.is_empty());
    assert!(epoll(&d).table.fds.contains_key(&ours.as_raw_fd()));
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(id, 1, 5)]);
}

#[test]
fn a_registration_the_table_does_not_know_is_deleted_also_when_the_turn_is_spent() {
    let mut d = driver();
    let (big, big_peer) = unix_stream_pair();
    write(&big_peer, &vec![7; 2 * super::TURN_BYTES]);
    d.submit(Op::RecvMulti { fd: big.as_raw_fd() }, 1);
    assert_eq!(owners_of_one_turn(&mut d, LONG), [1]);
    // A registration made behind the table's back, ready, and reported after `big` (which
    // level triggering put back at the end of the ready list with data left).
    let (stray, stray_peer) = unix_stream_pair();
    write(&stray_peer, b"x");
    let token = stray.as_raw_fd() as u64;
    epoll(&d).poller.add(stray.as_raw_fd(), IN, token).expect("add");
    assert_eq!(owners_of_one_turn(&mut d, LONG), [1], "big's next chunk spends the turn");
    assert!(epoll(&d).deferred.is_empty(), "an unknown fd is not kept for later");
    // Deleted: adding it again is allowed (EEXIST otherwise).
    epoll(&d).poller.add(stray.as_raw_fd(), IN, token).expect("registered again");
}

#[test]
fn a_tcp_socket_that_only_receives_is_edge_triggered_and_others_are_not() {
    let mut d = driver();
    let (tcp, _peer) = tcp_pair();
    let (unix, _unix_peer) = unix_stream_pair();
    d.submit(Op::RecvMulti { fd: tcp.as_raw_fd() }, 1);
    d.submit(Op::RecvMulti { fd: unix.as_raw_fd() }, 2);
    let writer = d.submit(poll(&tcp, Interest::WRITE), 3);
    assert_eq!(outcomes(&turn_once(&mut d, LONG)), [(writer, 3, OUT)]);
    assert_eq!(registration(&d, tcp.as_raw_fd()), Registration::Epoll(IN | OUT));
    assert_eq!(registration(&d, unix.as_raw_fd()), Registration::Epoll(IN));
    // The writer is gone: the receive alone, edge-triggered.
    assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
    assert_eq!(registration(&d, tcp.as_raw_fd()), Registration::Epoll(IN | EDGE));
}

/// What an edge-triggered registration adds to the mask.
const EDGE: u32 = (libc::EPOLLET | libc::EPOLLRDHUP | libc::EPOLLPRI) as u32;

#[test]
fn urgent_data_turns_an_edge_triggered_socket_to_level_triggering() {
    let mut d = driver();
    receive_past_urgent_data(
        &mut d,
        &|d, fd| assert_eq!(registration(d, fd), Registration::Epoll(IN | EDGE)),
        &|d, fd| assert_eq!(registration(d, fd), Registration::Epoll(IN)),
    );
}

#[test]
fn an_fd_entry_stays_small() {
    // One per fd the loop waits on, in a hash map sized to a power of two: at 10,000 idle
    // connections each of its bytes is ~0.0016 KiB per connection (issue 15 asks ≤ 1.2 KiB).
    let bucket = std::mem::size_of::<(RawFd, super::table::FdEntry)>();
    assert!(bucket <= 40, "{bucket} bytes per fd entry");
}
