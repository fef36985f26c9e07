//! Turns and their timeouts, the waker, cancellation (also at scale), and dropping a driver
//! with ops in flight.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{collect, each_config, outcomes, poll, read_some, settle, tcp_pair, turn_once};
use super::{no_look, unix_stream_pair, write, Look, LIMIT};
use crate::driver::any::Driver;
use crate::driver::{Backend, Interest, Op, OpId};
use crate::test_support::pipe;

#[test]
fn a_timeout_with_nothing_to_do_waits_at_least_that_long() {
    each_config(|mut d| {
        let waits = [10_000_000, 500_000, 1, 0].map(Duration::from_nanos);
        let (a, _b) = unix_stream_pair();
        for op_waiting in [false, true] {
            if op_waiting {
                d.submit(poll(&a, Interest::READ), 1);
            }
            for wait in waits {
                let (start, mut out) = (Instant::now(), Vec::new());
                d.turn(Some(wait), &mut out).unwrap();
                let took = start.elapsed();
                assert!(took >= wait, "{wait:?} took {took:?} (an op waiting: {op_waiting})");
                assert!(out.is_empty(), "{out:?}");
            }
        }
    });
}

#[test]
fn the_waker_interrupts_a_wait_from_another_thread() {
    each_config(|mut d| {
        let (a, _b) = unix_stream_pair();
        d.submit(poll(&a, Interest::READ), 1);
        for round in 0..3 {
            let (waker, woke) = (d.waker(), Arc::new(AtomicBool::new(false)));
            let woke2 = Arc::clone(&woke);
            let t = thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                woke2.store(true, Ordering::SeqCst);
                waker.wake().unwrap();
            });
            let (start, mut out) = (Instant::now(), Vec::new());
            // The contract allows a turn to return early with nothing: wait for the wake.
            while !woke.load(Ordering::SeqCst) {
                d.turn(None, &mut out).unwrap();
            }
            d.turn(Some(Duration::ZERO), &mut out).unwrap();
            assert!(out.is_empty(), "round {round}: a wake-up is no completion: {out:?}");
            assert!(start.elapsed() < LIMIT, "round {round}");
            t.join().unwrap();
            assert_eq!(d.waker().drain().unwrap(), 0, "round {round}: the turn took the wake");
            assert_eq!(d.in_flight(), 1, "round {round}: the poll still waits");
        }
    });
}

#[test]
fn shrinking_timeouts_still_bound_the_wait() {
    each_config(|mut d| {
        let mut out = Vec::new();
        let (r, w) = pipe();
        d.submit(poll(&r, Interest::READ), 1);
        let waker = d.waker();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            waker.wake().unwrap();
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(20) {
            d.turn(Some(Duration::from_secs(30)), &mut out).unwrap();
        }
        t.join().unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(15) {
            d.turn(Some(Duration::from_millis(15).saturating_sub(start.elapsed())), &mut out)
                .unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        assert!(out.is_empty());
        write(&w, b"x");
        assert_eq!(collect(&mut d, 1, LIMIT).len(), 1);
    });
}

#[test]
fn cancel_suppresses_the_completion_and_frees_the_slot() {
    each_config(|mut d| {
        let (r, w) = pipe();
        let (r2, w2) = pipe();
        let waiting = d.submit(poll(&r, Interest::READ), 1);
        let mut out = Vec::new();
        d.turn(Some(Duration::ZERO), &mut out).unwrap();
        assert_eq!(d.cancel(waiting), Some(1));
        assert_eq!(d.cancel(waiting), None);
        // A poll that completes in the kernel before its cancel is seen is suppressed too.
        write(&w2, b"x");
        let ready = d.submit(poll(&r2, Interest::READ), 2);
        assert_eq!(d.cancel(ready), Some(2));
        write(&w, b"x");
        for _ in 0..5 {
            d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
        }
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.cancel(OpId::new(12345, 1)), None);
    });
}

#[test]
fn many_submits_and_cancels_leave_nothing_in_flight() {
    each_config(|mut d| {
        let (a, _b) = unix_stream_pair();
        let (c, _e) = unix_stream_pair();
        cancel_before_the_turn(&mut d, [&a, &c]);
        cancel_after_the_turn(&mut d, &a, &no_look);
        cancel_right_after_each_submit(&mut d, &a);
    });
}

/// Submits 10,000 polls alternating over `fds`, for reading or writing, and cancels each before
/// any turn, each cancel handing its owner back; then nothing is in flight or delivered.
pub(crate) fn cancel_before_the_turn(d: &mut Driver<u32>, fds: [&dyn AsRawFd; 2]) {
    let ids: Vec<_> = (0..10_000u32)
        .map(|i| {
            let interest = if i % 3 == 0 { Interest::WRITE } else { Interest::READ };
            d.submit(poll(fds[i as usize % 2], interest), i)
        })
        .collect();
    assert_eq!(d.in_flight(), 10_000);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(d.cancel(*id), Some(i as u32));
    }
    assert_eq!(d.in_flight(), 0);
    assert!(turn_once(d, Some(Duration::ZERO)).is_empty());
}

/// Submits 10,000 polls on `fd`, turns (they are in the kernel or registered: `armed` sees the
/// driver then), cancels them newest first; nothing is delivered, and nothing stays in flight.
pub(crate) fn cancel_after_the_turn(d: &mut Driver<u32>, fd: &impl AsRawFd, armed: Look) {
    let ids: Vec<_> = (0..10_000).map(|i| d.submit(poll(fd, Interest::READ), i)).collect();
    assert!(turn_once(d, Some(Duration::ZERO)).is_empty());
    armed(d, fd.as_raw_fd());
    for id in ids.into_iter().rev() {
        assert!(d.cancel(id).is_some());
    }
    let out = settle(d);
    assert!(out.is_empty(), "{} completions after cancel", out.len());
}

/// Submits and at once cancels 10,000 polls on `fd`, turning every 64: nothing is delivered,
/// and within ten more turns nothing is in flight.
pub(crate) fn cancel_right_after_each_submit(d: &mut Driver<u32>, fd: &impl AsRawFd) {
    let mut out = Vec::new();
    for i in 0..10_000 {
        let id = d.submit(poll(fd, Interest::READ), i);
        assert_eq!(d.cancel(id), Some(i));
        if i % 64 == 0 {
            d.turn(Some(Duration::ZERO), &mut out).unwrap();
        }
    }
    for _ in 0..10 {
        if d.in_flight() == 0 {
            break;
        }
        d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
    }
    assert!(out.is_empty(), "{} completions after cancel", out.len());
    assert_eq!(d.in_flight(), 0);
}

/// More ops than io_uring's SQ holds (256), and more completions than its CQ does (512).
#[test]
fn a_thousand_polls_on_one_fd_all_complete() {
    each_config(|mut d| {
        let (r, w) = pipe();
        for i in 0..1000 {
            d.submit(poll(&r, Interest::READ), i);
        }
        write(&w, b"x");
        let out = collect(&mut d, 1000, LIMIT);
        assert_eq!(out.len(), 1000);
        assert!(out.iter().all(|c| c.result.is_ok()));
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn dropping_a_driver_with_ops_in_flight_does_not_hang() {
    each_config(|mut d| {
        let (r, _w) = pipe();
        let (ours, _peer) = tcp_pair();
        for i in 0..100 {
            d.submit(poll(&r, Interest::READ), i);
        }
        d.submit(Op::Read { fd: ours.as_raw_fd(), buf: Vec::with_capacity(1 << 16) }, 100);
        d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        // Never submitted before the drop.
        d.submit(poll(&r, Interest::READ), 101);
        d.submit(Op::Read { fd: ours.as_raw_fd(), buf: Vec::with_capacity(16) }, 102);
        let start = Instant::now();
        drop(d);
        assert!(start.elapsed() < Duration::from_millis(900), "{:?}", start.elapsed());
    });
}

#[test]
fn withdraw_takes_back_an_op_not_yet_submitted() {
    each_config(|mut d| {
        let (ours, peer) = unix_stream_pair();
        let send =
            Op::Send { fd: ours.as_raw_fd(), buf: Bytes::from_static(b"never").into(), offset: 0 };
        let id = d.submit(send, 7);
        assert_eq!(d.withdraw(id).map(|(owner, _)| owner), Some(7));
        assert!(d.withdraw(id).is_none(), "withdrawn twice");
        assert!(settle(&mut d).is_empty(), "a withdrawn op completed");
        assert_eq!(read_some(&peer), 0, "a withdrawn send was made");
    });
}

#[test]
fn an_id_whose_op_ended_names_nothing_though_its_slot_is_reused() {
    each_config(|mut d| {
        // The loop reaps a completion in the turn and dispatches it later: meanwhile an op
        // submitted by another owner may take the slot, while the first still holds its id.
        let (r, w) = pipe();
        write(&w, b"x");
        let ended = d.submit(poll(&r, Interest::READ), 1);
        let out = collect(&mut d, 1, LIMIT);
        assert_eq!(out.iter().map(|c| c.id).collect::<Vec<_>>(), [ended], "the id it was given");
        let (ours, peer) = unix_stream_pair();
        let send =
            Op::Send { fd: ours.as_raw_fd(), buf: Bytes::from_static(b"new").into(), offset: 0 };
        let newer = d.submit(send, 2);
        assert_eq!(newer.key(), ended.key(), "the freed slot is reused (what this test needs)");
        assert_ne!(newer, ended);
        assert!(d.withdraw(ended).is_none(), "a stale id withdrew the newer op");
        assert_eq!(d.cancel(ended), None, "a stale id cancelled the newer op");
        d.end_gracefully(ended);
        let out = collect(&mut d, 1, LIMIT);
        assert_eq!(outcomes(&out), vec![(newer, 2, 3)], "the newer op completes, as itself");
        assert_eq!(read_some(&peer), 3);
    });
}

#[test]
fn withdraw_leaves_what_may_have_begun() {
    each_config(|mut d| {
        // A read of an empty pipe after a turn: in the kernel on io_uring; on epoll waiting
        // for readiness, with no syscall made that moved anything.
        let (r, w) = pipe();
        let id = d.submit(Op::Read { fd: r.as_raw_fd(), buf: Vec::with_capacity(16) }, 1);
        assert!(turn_once(&mut d, Some(Duration::ZERO)).is_empty());
        let withdrawn = d.withdraw(id).map(|(owner, _)| owner);
        write(&w, b"data");
        if d.backend() == Backend::Uring {
            assert_eq!(withdrawn, None);
            let out = collect(&mut d, 1, LIMIT);
            assert_eq!(outcomes(&out), vec![(id, 1, 4)], "the read was not left as it was");
            assert!(d.withdraw(id).is_none(), "a delivered op withdrawn");
        } else {
            assert_eq!(withdrawn, Some(1));
            assert!(settle(&mut d).is_empty(), "a withdrawn op completed");
            assert_eq!(read_some(&r), 4, "a withdrawn read took bytes");
        }
        // A persistent op may have delivered already: never withdrawn, even before its turn.
        let (ours, _peer) = tcp_pair();
        let recv = d.submit(Op::RecvMulti { fd: ours.as_raw_fd() }, 2);
        assert!(d.withdraw(recv).is_none());
        assert_eq!(d.cancel(recv), Some(2));
        settle(&mut d);
    });
}
