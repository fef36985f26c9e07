//! Tests of the io_uring driver with real fds, each run on several ring configurations.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::UringDriver;
use crate::driver::any::Driver;
use crate::driver::{Completion, Interest, Op, OpId};
use crate::test_support::pipe;

/// `RINGLOOP_DISABLE` lists to run every test under: every optimization on, and each off.
pub(super) const CONFIGS: [&[&str]; 2] = [&[], &["registered_ring"]];

/// A ring with `disabled` features off, or `None` (after a printed SKIPPED line) when the
/// kernel has no io_uring; `RINGLOOP_REQUIRE_URING=1` makes that a failure instead.
pub(super) fn ring<T: Clone>(disabled: &[&str]) -> Option<UringDriver<T>> {
    UringDriver::with_disabled(disabled)
        .map_err(|err| crate::test_support::uring_missing("driver test", &err))
        .ok()
}

/// A driver for each named `disabled` list (io_uring ones skipped as [`ring`] skips), then,
/// with `fallback`, epoll: every route an op can take on this kernel.
pub(super) fn drivers(configs: &[(&'static str, &[&str])]) -> Vec<(&'static str, Driver<u32>)> {
    let mut drivers = Vec::new();
    for &(name, disabled) in configs {
        if let Some(d) = ring(disabled) {
            drivers.push((name, Driver::Uring(d)));
        }
    }
    #[cfg(feature = "fallback")]
    drivers.push(("epoll", Driver::Epoll(crate::driver::epoll::EpollDriver::new().unwrap())));
    drivers
}

/// The io_uring driver inside `d`, if that is what it is (an irrefutable `if let` without
/// `fallback`).
pub(super) fn uring_of<T: Clone>(d: &Driver<T>) -> Option<&UringDriver<T>> {
    match d {
        Driver::Uring(u) => Some(u),
        #[cfg(feature = "fallback")]
        Driver::Epoll(_) => None,
    }
}

fn each_config(test: impl Fn(&[&str], UringDriver<u32>)) {
    for disabled in CONFIGS {
        let Some(driver) = ring(disabled) else { return };
        test(disabled, driver);
    }
}

fn write_byte(fd: &OwnedFd) {
    // SAFETY: writes one byte from a live static to an fd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1);
}

fn poll(fd: &impl AsRawFd, interest: Interest) -> Op {
    Op::Poll { fd: fd.as_raw_fd(), interest }
}

/// Turns until `want` completions arrived or `limit` passed.
fn collect(d: &mut UringDriver<u32>, want: usize, limit: Duration) -> Vec<Completion<u32>> {
    let (start, mut out) = (Instant::now(), Vec::new());
    while out.len() < want && start.elapsed() < limit {
        d.turn(Some(limit.saturating_sub(start.elapsed())), &mut out).expect("turn");
    }
    out
}

#[test]
fn features_name_the_whole_set_and_the_optimizations_on() {
    let Some(best) = ring::<u32>(&[]) else { return };
    let features = best.features();
    for part in ["single_issuer", "defer_taskrun", "buffer_ring", "multishot_recv"] {
        assert!(features.contains(&part), "{part}: {features:?}");
    }
    let Some(plain) = ring::<u32>(&["registered_ring"]) else { return };
    assert!(!plain.features().contains(&"registered_ring"), "{:?}", plain.features());
}

#[test]
fn a_kernel_lacking_part_of_the_set_is_refused_with_its_name() {
    let Some(_) = ring::<u32>(&[]) else { return };
    for part in ["defer_taskrun", "buffer_ring", "multishot_recv", "multishot_accept"] {
        let err = UringDriver::<u32>::with_disabled(&[part]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{part}: {err}");
        assert!(err.to_string().contains(part), "{part}: {err}");
    }
}

#[test]
fn the_ring_fd_is_registered_and_unregistered_at_drop() {
    let Some(first) = ring::<u32>(&[]) else { return };
    assert!(first.features().contains(&"registered_ring"), "{:?}", first.features());
    drop(first);
    // A thread has 16 registration slots: without the unregistering drop, the 17th ring in a
    // row would go unregistered.
    for n in 0..20 {
        let mut d = ring::<u32>(&[]).expect("a ring like the first");
        assert!(d.features().contains(&"registered_ring"), "ring {n}: {:?}", d.features());
        let (r, w) = pipe();
        d.submit(poll(&r, Interest::READ), 1);
        write_byte(&w);
        assert_eq!(collect(&mut d, 1, Duration::from_secs(5)).len(), 1, "ring {n}");
    }
    let off = ring::<u32>(&["registered_ring"]).expect("a ring");
    assert!(!off.features().contains(&"registered_ring"), "{:?}", off.features());
}

#[test]
fn poll_completes_with_pollin_after_a_write() {
    each_config(|cfg, mut d| {
        let (r, w) = pipe();
        let id = d.submit(poll(&r, Interest::READ), 7);
        let mut out = Vec::new();
        d.turn(Some(Duration::from_millis(20)), &mut out).unwrap();
        assert!(out.is_empty(), "{cfg:?}: {out:?}");
        write_byte(&w);
        let out = collect(&mut d, 1, Duration::from_secs(5));
        assert_eq!(out.len(), 1, "{cfg:?}");
        let c = &out[0];
        assert_eq!((c.id, c.owner, c.more), (id, 7, false));
        assert_ne!(c.result.as_ref().unwrap() & libc::POLLIN as u32, 0, "{cfg:?}");
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn poll_on_a_ready_fd_completes_at_once() {
    each_config(|cfg, mut d| {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"hi").unwrap();
        d.submit(poll(&a, Interest::READ), 1);
        d.submit(poll(&b, Interest::WRITE), 2);
        let start = Instant::now();
        let mut out = collect(&mut d, 2, Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_secs(1), "{cfg:?}");
        out.sort_by_key(|c| c.owner);
        assert_eq!(out.len(), 2, "{cfg:?}");
        assert_ne!(out[0].result.as_ref().unwrap() & libc::POLLIN as u32, 0);
        assert_ne!(out[1].result.as_ref().unwrap() & libc::POLLOUT as u32, 0);
    });
}

#[test]
fn a_timeout_with_nothing_to_do_waits_at_least_that_long() {
    each_config(|cfg, mut d| {
        for wait in [Duration::from_millis(10), Duration::from_nanos(1), Duration::ZERO] {
            let (start, mut out) = (Instant::now(), Vec::new());
            d.turn(Some(wait), &mut out).unwrap();
            assert!(start.elapsed() >= wait, "{cfg:?}: {wait:?} took {:?}", start.elapsed());
            assert!(out.is_empty());
        }
    });
}

#[test]
fn the_waker_interrupts_a_wait_from_another_thread() {
    each_config(|cfg, mut d| {
        for round in 0..3 {
            let (waker, woke) = (d.waker(), Arc::new(AtomicBool::new(false)));
            let woke2 = Arc::clone(&woke);
            let t = thread::spawn(move || {
                thread::sleep(Duration::from_millis(30));
                woke2.store(true, Ordering::SeqCst);
                waker.wake().unwrap();
            });
            let (start, mut out) = (Instant::now(), Vec::new());
            while !woke.load(Ordering::SeqCst) {
                d.turn(None, &mut out).unwrap();
            }
            d.turn(Some(Duration::ZERO), &mut out).unwrap();
            assert!(out.is_empty() && start.elapsed() < Duration::from_secs(5), "{cfg:?} {round}");
            t.join().unwrap();
        }
    });
}

#[test]
fn cancel_suppresses_the_completion_and_frees_the_slot() {
    each_config(|cfg, mut d| {
        let (r, w) = pipe();
        let (r2, w2) = pipe();
        let waiting = d.submit(poll(&r, Interest::READ), 1);
        let mut out = Vec::new();
        d.turn(Some(Duration::ZERO), &mut out).unwrap();
        assert_eq!(d.cancel(waiting), Some(1));
        assert_eq!(d.cancel(waiting), None);
        // A poll that completes in the kernel before its cancel is seen is suppressed too.
        write_byte(&w2);
        let ready = d.submit(poll(&r2, Interest::READ), 2);
        assert_eq!(d.cancel(ready), Some(2));
        write_byte(&w);
        for _ in 0..5 {
            d.turn(Some(Duration::from_millis(10)), &mut out).unwrap();
        }
        assert!(out.is_empty(), "{cfg:?}: {out:?}");
        assert_eq!(d.in_flight(), 0, "{cfg:?}");
        assert_eq!(d.cancel(OpId(12345)), None);
    });
}

#[test]
fn dropping_a_driver_with_ops_in_flight_does_not_hang() {
    each_config(|cfg, mut d| {
        let (r, _w) = pipe();
        for i in 0..100 {
            d.submit(poll(&r, Interest::READ), i);
        }
        d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        d.submit(poll(&r, Interest::READ), 100); // never submitted before the drop
        let start = Instant::now();
        drop(d);
        assert!(start.elapsed() < Duration::from_millis(900), "{cfg:?}: {:?}", start.elapsed());
    });
}

#[test]
fn many_submits_and_cancels_do_not_grow_memory() {
    each_config(|cfg, mut d| {
        let (r, _w) = pipe();
        let mut out = Vec::new();
        for i in 0..10_000 {
            let id = d.submit(poll(&r, Interest::READ), i);
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
        assert!(out.is_empty());
        assert_eq!(d.in_flight(), 0, "{cfg:?}");
        assert!(
            d.table.slots.capacity() <= 1024,
            "{cfg:?}: slab grew to {}",
            d.table.slots.capacity()
        );
    });
}

#[test]
fn more_ops_than_the_sq_holds_all_complete() {
    each_config(|cfg, mut d| {
        let (r, w) = pipe();
        for i in 0..1000 {
            d.submit(poll(&r, Interest::READ), i);
        }
        write_byte(&w);
        let out = collect(&mut d, 1000, Duration::from_secs(5));
        assert_eq!(out.len(), 1000, "{cfg:?}");
        assert!(out.iter().all(|c| c.result.is_ok()));
        assert_eq!(d.in_flight(), 0);
    });
}

#[test]
fn an_invalid_fd_completes_with_ebadf() {
    // SAFETY: F_GETFD on a number we do not own only reads its flags.
    assert_eq!(unsafe { libc::fcntl(9999, libc::F_GETFD) }, -1, "fd 9999 is open");
    each_config(|cfg, mut d| {
        d.submit(Op::Poll { fd: 9999, interest: Interest::READ }, 5);
        let out = collect(&mut d, 1, Duration::from_secs(5));
        assert_eq!(out.len(), 1, "{cfg:?}");
        assert_eq!(out[0].result.as_ref().unwrap_err().raw_os_error(), Some(libc::EBADF));
    });
}

#[test]
fn shrinking_timeouts_still_bound_the_wait() {
    each_config(|cfg, mut d| {
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
        assert!(start.elapsed() < Duration::from_secs(1), "{cfg:?}: {:?}", start.elapsed());
        assert!(out.is_empty());
        write_byte(&w);
        assert_eq!(collect(&mut d, 1, Duration::from_secs(5)).len(), 1);
    });
}

#[test]
fn shutdown_gets_every_final_cqe_back() {
    each_config(|cfg, mut d| {
        let (r, _w) = pipe();
        let (a, _b) = UnixStream::pair().unwrap();
        for i in 0..300 {
            d.submit(poll(&r, Interest::READ), i);
        }
        let cancelled = d.submit(poll(&r, Interest::READ), 300);
        d.turn(Some(Duration::ZERO), &mut Vec::new()).unwrap();
        d.cancel(cancelled);
        d.submit(poll(&a, Interest::WRITE), 301); // completes, never reaped
        d.submit(poll(&r, Interest::READ), 302); // never submitted
        assert!(d.shutdown(), "{cfg:?}");
        assert_eq!(d.in_flight(), 0);
        assert!(!d.wake.is_armed());
    });
}

#[test]
fn completions_that_overflow_the_cq_are_all_delivered() {
    each_config(|cfg, mut d| {
        let (a, _b) = UnixStream::pair().unwrap();
        let n = 3000; // the CQ holds 512
        for i in 0..n {
            d.submit(poll(&a, Interest::WRITE), i);
        }
        let mut owners: Vec<u32> =
            collect(&mut d, n as usize, Duration::from_secs(5)).iter().map(|c| c.owner).collect();
        owners.sort_unstable();
        assert_eq!(owners, (0..n).collect::<Vec<_>>(), "{cfg:?}");
        assert_eq!(d.in_flight(), 0);
    });
}
