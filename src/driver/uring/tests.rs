//! What only the io_uring driver does: the setup and its features, the registered ring fd,
//! CQ overflow, shutdown, and the slab. (The buffer rings: `persistent_tests.rs`; the contract
//! every driver meets: `driver/contract_tests/`.)

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::UringDriver;
use crate::driver::any::Driver;
use crate::driver::contract_tests::{cancel_right_after_each_submit, collect, poll, tcp_pair};
use crate::driver::contract_tests::{each_uring_config, uring_driver, write, LIMIT};
use crate::driver::{Interest, Op};
use crate::test_support::pipe;

/// The io_uring driver inside `d`, which must be one.
pub(super) fn uring_of(d: &Driver<u32>) -> &UringDriver<u32> {
    match d {
        Driver::Uring(u) => u,
        #[cfg(feature = "fallback")]
        Driver::Epoll(_) => unreachable!("an io_uring test on epoll"),
    }
}

#[test]
fn features_name_the_whole_set_and_the_optimizations_on() {
    let Some(best) = uring_driver(&[]) else { return };
    let features = best.features();
    for part in ["single_issuer", "defer_taskrun", "buffer_ring", "multishot_recv"] {
        assert!(features.contains(&part), "{part}: {features:?}");
    }
    let Some(plain) = uring_driver(&["registered_ring"]) else { return };
    assert!(!plain.features().contains(&"registered_ring"), "{:?}", plain.features());
    // IORING_OP_WAITID came in 6.7.
    let has_waitid = kernel_version() >= (6, 7);
    assert_eq!(features.contains(&"waitid"), has_waitid, "{features:?}");
    let Some(plain) = uring_driver(&["waitid"]) else { return };
    assert!(!plain.features().contains(&"waitid"), "{:?}", plain.features());
}

/// The running kernel's version, `(major, minor)`, from `uname`.
fn kernel_version() -> (u32, u32) {
    // SAFETY: all-zero is a valid utsname, which uname fills in.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a live, writable utsname.
    assert_eq!(unsafe { libc::uname(&mut name) }, 0);
    // SAFETY: uname leaves `release` a NUL-terminated string.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) }.to_string_lossy();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

#[test]
fn a_kernel_lacking_part_of_the_set_is_refused_with_its_name() {
    let Some(_) = uring_driver(&[]) else { return };
    for part in ["defer_taskrun", "buffer_ring", "multishot_recv", "multishot_accept"] {
        let err = UringDriver::<u32>::with_disabled(&[part]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{part}: {err}");
        assert!(err.to_string().contains(part), "{part}: {err}");
    }
}

#[test]
fn the_ring_fd_is_registered_and_unregistered_at_drop() {
    let Some(first) = uring_driver(&[]) else { return };
    assert!(first.features().contains(&"registered_ring"), "{:?}", first.features());
    drop(first);
    // A thread has 16 registration slots: without the unregistering drop, the 17th ring in a
    // row would go unregistered.
    for n in 0..20 {
        let mut d = Driver::Uring(uring_driver(&[]).expect("a ring like the first"));
        assert!(d.features().contains(&"registered_ring"), "ring {n}: {:?}", d.features());
        let (r, w) = pipe();
        d.submit(poll(&r, Interest::READ), 1);
        write(&w, b"x");
        assert_eq!(collect(&mut d, 1, LIMIT).len(), 1, "ring {n}");
    }
    let off = uring_driver(&["registered_ring"]).expect("a ring");
    assert!(!off.features().contains(&"registered_ring"), "{:?}", off.features());
}

#[test]
fn many_submits_and_cancels_do_not_grow_memory() {
    each_uring_config(|d, _| {
        let mut d = Driver::Uring(d);
        let (r, _w) = pipe();
        cancel_right_after_each_submit(&mut d, &r);
        let slots = uring_of(&d).table.slots.capacity();
        assert!(slots <= 1024, "slab grew to {slots}");
    });
}

#[test]
fn shutdown_gets_every_final_cqe_back() {
    each_uring_config(|mut d, _| {
        let (r, _w) = pipe();
        let (a, _b) = UnixStream::pair().unwrap();
        let (ours, _peer) = tcp_pair();
        for i in 0..300 {
            d.submit(poll(&r, Interest::READ), i);
        }
        let cancelled = d.submit(poll(&r, Interest::READ), 300);
        d.submit(Op::Read { fd: ours.as_raw_fd(), buf: Vec::with_capacity(1 << 16) }, 303);
        d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        d.cancel(cancelled);
        d.submit(poll(&a, Interest::WRITE), 301); // completes, never reaped
        d.submit(poll(&r, Interest::READ), 302); // never submitted
        d.submit(Op::Read { fd: ours.as_raw_fd(), buf: Vec::with_capacity(16) }, 304); // neither
        assert!(d.shutdown().0);
        assert_eq!(d.in_flight(), 0);
        assert!(!d.wake.is_armed());
    });
}

#[test]
fn completions_that_overflow_the_cq_are_all_delivered() {
    each_uring_config(|d, _| {
        let mut d = Driver::Uring(d);
        let (a, _b) = UnixStream::pair().unwrap();
        let n = 3000; // the CQ holds 512
        for i in 0..n {
            d.submit(poll(&a, Interest::WRITE), i);
        }
        let out = collect(&mut d, n as usize, LIMIT);
        let mut owners: Vec<u32> = out.iter().map(|c| c.owner).collect();
        owners.sort_unstable();
        assert!(owners == (0..n).collect::<Vec<_>>(), "{} of {n}", owners.len());
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn submit_queued_delivers_what_the_kernel_finished_as_it_submitted() {
    each_uring_config(|d, _| {
        let mut d = Driver::Uring(d);
        let (ours, peer) = tcp_pair();
        let buf = bytes::Bytes::from_static(b"sent at once");
        d.submit(Op::Send { fd: ours.as_raw_fd(), buf: buf.into(), offset: 0 }, 7);
        let mut out = Vec::new();
        d.submit_queued(&mut out).unwrap();
        // A send the socket takes whole completes as it is submitted, with no wait.
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].owner, out[0].result.as_ref().ok()), (7, Some(&12)));
        assert!(out[0].op.is_some(), "the op comes back with its buffer");
        assert_eq!(d.in_flight(), 0);
        let mut got = [0u8; 12];
        std::io::Read::read_exact(&mut &peer, &mut got).unwrap();
        assert_eq!(&got, b"sent at once");
    });
}
