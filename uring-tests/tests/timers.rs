//! Timers (BEHAVIOURS 18–28): `call_later`, `call_at`, `time`, `TimerHandle`, the timer heap and
//! the poll timeout.
//!
//! Not applicable:
//! - BEHAVIOURS 18, `call_later(None, cb)` / `call_at(None, cb)` → TypeError: the delay is
//!   `impl Into<Delay>` (`f64` or `Duration`) and the time an `f64`; the nearest Rust case, NaN,
//!   is tested (`Error::InvalidArgument`).
//! - BEHAVIOURS 25, `<`/`>` against a non-handle → TypeError and `==` → False: `PartialOrd` and
//!   `PartialEq` only exist between `TimerHandle`s, so such a comparison does not compile.
use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use ringloop::{Error, EventLoop, TimerHandle};
use uring_tests::{backend_tests, log, rec, run_until, socketpair, watchdog};

/// One loop iteration (`stop()` first: zero poll timeout).
fn one_iteration(lp: &EventLoop) {
    lp.stop();
    lp.run_forever().unwrap();
}

/// `n` timers that do nothing, 10 s and more away, 1 ms apart.
fn far_timers(lp: &EventLoop, n: u32) -> Vec<TimerHandle> {
    (0..n).map(|i| lp.call_later(10.0 + f64::from(i) * 0.001, || {}).unwrap()).collect()
}

/// Cancels `timers`, runs one iteration and returns `scheduled_timers()`.
fn cancel_then_iterate(lp: &EventLoop, timers: &[TimerHandle]) -> (usize, usize) {
    timers.iter().for_each(TimerHandle::cancel);
    one_iteration(lp);
    lp.scheduled_timers()
}

/// CPU time this thread has used, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A timer callback recording the loop time at which it ran.
fn stamp(lp: &EventLoop, at: &Rc<Cell<Option<f64>>>) -> impl FnOnce() + 'static {
    let (lp, at) = (lp.clone(), at.clone());
    move || at.set(Some(lp.time()))
}

backend_tests! {
    // BEHAVIOURS 18
    fn call_later_goes_to_the_timer_heap_not_the_ready_queue(lp) {
        let later = lp.call_later(10.0, || {}).unwrap();
        assert_eq!(lp.ready_len(), 0);
        assert_eq!(lp.scheduled_timers(), (1, 0));
        let at = lp.call_at(lp.time() + 10.0, || {}).unwrap();
        assert_eq!(lp.ready_len(), 0);
        assert_eq!(lp.scheduled_timers(), (2, 0));
        lp.call_soon(|| {}).unwrap();
        assert_eq!(lp.ready_len(), 1);
        later.cancel();
        at.cancel();
        assert_eq!(lp.scheduled_timers(), (2, 2));
    }

    // BEHAVIOURS 18 (the Rust counterpart of a delay of None)
    fn nan_delay_or_time_is_an_invalid_argument(lp) {
        let r = lp.call_later(f64::NAN, || {});
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
        let r = lp.call_at(f64::NAN, || {});
        assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
        assert_eq!(lp.scheduled_timers(), (0, 0));
    }

    // BEHAVIOURS 19
    fn negative_delays_run_at_the_next_iteration_ordered_by_deadline(lp) {
        let order = log();
        lp.call_later(-1.0, rec(&order, "a")).unwrap();
        lp.call_later(-2.0, rec(&order, "b")).unwrap();
        lp.call_at(lp.time() - 3.0, rec(&order, "c")).unwrap();
        lp.call_later(-f64::INFINITY, rec(&order, "d")).unwrap();
        one_iteration(lp);
        assert_eq!(*order.borrow(), ["d", "c", "b", "a"]);
    }

    fn due_timers_run_after_the_callbacks_already_ready(lp) {
        let order = log();
        lp.call_later(-1.0, rec(&order, "timer")).unwrap();
        lp.call_soon(rec(&order, "soon")).unwrap();
        one_iteration(lp);
        assert_eq!(*order.borrow(), ["soon", "timer"]);
    }

    // BEHAVIOURS 20
    fn timers_never_fire_early(lp) {
        let t0 = lp.time();
        let at_fired = Rc::new(Cell::new(None));
        let at = lp.call_at(t0 + 0.1, stamp(lp, &at_fired)).unwrap();
        let mut laters = Vec::new();
        for delay in [0.07, 0.001, 0.005, 0.013, 0.05, 0.0001] {
            let fired = Rc::new(Cell::new(None));
            let start = lp.time();
            let h = lp.call_later(delay, stamp(lp, &fired)).unwrap();
            laters.push((delay, start, h, fired));
        }
        let all = || at_fired.get().is_some() && laters.iter().all(|l| l.3.get().is_some());
        assert!(run_until(lp, 5.0, all));
        let fired = at_fired.get().unwrap();
        assert!(fired >= at.when() - 1e-9, "call_at fired {} s early", at.when() - fired);
        assert!(fired - t0 >= 0.1 - 1e-9);
        for (delay, start, h, fired) in &laters {
            let fired = fired.get().unwrap();
            assert!(fired >= h.when() - 1e-9, "{delay} s timer fired {} s early", h.when() - fired);
            assert!(fired - start >= delay - 1e-9, "{delay} s timer fired after {}", fired - start);
        }
        let (_, start, _, fired) = &laters[0];
        assert!(fired.get().unwrap() - start >= 0.069, "call_later(0.07) fired before 69 ms");
    }

    fn equal_deadlines_fire_in_fifo_order(lp) {
        let order = log();
        let when = lp.time() + 0.01;
        for i in 0..20 {
            lp.call_at(when, rec(&order, i)).unwrap();
        }
        assert!(run_until(lp, 5.0, || order.borrow().len() == 20));
        assert_eq!(*order.borrow(), (0..20).collect::<Vec<_>>());
    }

    fn timers_fire_in_when_order(lp) {
        let order = log();
        for (delay, tag) in [(0.03, "30ms"), (0.01, "10ms"), (0.02, "20ms"), (0.0, "0"), (0.015, "15ms")]
        {
            lp.call_later(delay, rec(&order, tag)).unwrap();
        }
        assert!(run_until(lp, 5.0, || order.borrow().len() == 5));
        assert_eq!(*order.borrow(), ["0", "10ms", "15ms", "20ms", "30ms"]);
    }

    fn duration_delays(lp) {
        let fired = Rc::new(Cell::new(None));
        let t0 = lp.time();
        let h = lp.call_later(Duration::from_millis(30), stamp(lp, &fired)).unwrap();
        let t1 = lp.time();
        assert!(h.when() >= t0 + 0.03 - 1e-9 && h.when() <= t1 + 0.03 + 1e-6, "{}", h.when());
        let order = log();
        lp.call_later(Duration::ZERO, rec(&order, "zero")).unwrap();
        let max = lp.call_later(Duration::MAX, rec(&order, "max")).unwrap();
        one_iteration(lp);
        assert_eq!(*order.borrow(), ["zero"], "Duration::ZERO runs at the next iteration");
        assert!(run_until(lp, 5.0, || fired.get().is_some()));
        assert!(fired.get().unwrap() >= h.when() - 1e-9);
        max.cancel();
        one_iteration(lp);
        assert_eq!(lp.scheduled_timers(), (0, 0));
        assert_eq!(*order.borrow(), ["zero"]);
    }

    // BEHAVIOURS 23
    fn poll_timeout_is_the_time_to_the_next_live_timer(lp) {
        let cancelled: Vec<_> = [0.01, 0.002, 0.05]
            .into_iter()
            .map(|d| lp.call_later(d, || unreachable!("cancelled timer ran")).unwrap())
            .collect();
        let fired = Rc::new(Cell::new(false));
        let (flag, stopper) = (fired.clone(), lp.clone());
        lp.call_later(0.3, move || {
            flag.set(true);
            stopper.stop();
        })
        .unwrap();
        for h in &cancelled {
            h.cancel();
        }
        let (_watchdog, forced) = watchdog(lp, 5.0);
        assert_eq!(lp.scheduled_timers(), (5, 3));
        let (t0, cpu0) = (lp.time(), thread_cpu_seconds());
        lp.run_forever().unwrap();
        let (took, cpu) = (lp.time() - t0, thread_cpu_seconds() - cpu0);
        assert!(fired.get() && !forced.get(), "the live timer did not stop the loop");
        assert!(took >= 0.29, "returned after {took} s");
        assert!(cpu < 0.1, "the loop spun instead of waiting: {cpu} s of CPU in {took} s");
        assert_eq!(lp.scheduled_timers(), (1, 0), "only the watchdog is left");
    }

    // BEHAVIOURS 24
    fn mostly_cancelled_heap_is_rebuilt_lazily(lp) {
        let handles = far_timers(lp, 200);
        handles[..150].iter().for_each(TimerHandle::cancel);
        assert_eq!(lp.scheduled_timers(), (200, 150), "cancel only marks the timers");
        one_iteration(lp);
        assert_eq!(lp.scheduled_timers(), (50, 0), "one iteration rebuilds the heap");
        assert!(handles[150..].iter().all(|h| !h.cancelled()));
    }

    // BEHAVIOURS 24
    fn cancelled_head_timers_are_popped_and_the_count_stays_exact(lp) {
        let handles = far_timers(lp, 200);
        for h in handles[..10].iter().chain(&handles[180..]) {
            h.cancel();
        }
        handles[0].cancel(); // twice: counted once
        assert_eq!(lp.scheduled_timers(), (200, 30));
        one_iteration(lp);
        assert_eq!(lp.scheduled_timers(), (190, 20), "the cancelled head is popped, not more");
        handles[5].cancel(); // already out of the heap
        assert_eq!(lp.scheduled_timers(), (190, 20));
        // Cancelling a timer that already fired does not count either.
        let fired = Rc::new(Cell::new(false));
        let flag = fired.clone();
        let done = lp.call_later(0.0, move || flag.set(true)).unwrap();
        assert!(run_until(lp, 5.0, || fired.get()));
        done.cancel();
        assert_eq!(lp.scheduled_timers(), (190, 20));
    }

    // BEHAVIOURS 24 (thresholds: more than 100 timers and more than half cancelled)
    fn heap_is_rebuilt_only_above_the_thresholds(lp) {
        let hundred = far_timers(lp, 100);
        assert_eq!(cancel_then_iterate(lp, &hundred[1..]), (100, 99), "100 timers: never rebuilt");
        let all_cancelled = cancel_then_iterate(lp, &hundred[..1]);
        assert_eq!(all_cancelled, (0, 0), "all cancelled: popped from the head");

        let more = far_timers(lp, 101);
        let half = cancel_then_iterate(lp, &more[51..]);
        assert_eq!(half, (101, 50), "exactly half cancelled: not rebuilt");
        assert_eq!(cancel_then_iterate(lp, &more[50..51]), (50, 0), "more than half: rebuilt");
    }

    // BEHAVIOURS 24
    fn a_million_cancelled_timers_keep_the_heap_small(lp) {
        let largest = Rc::new(Cell::new(0));
        let (inner, sink) = (lp.clone(), largest.clone());
        lp.call_soon(move || {
            for _ in 0..1_000_000 {
                inner.call_later(10.0, || {}).unwrap().cancel();
                sink.set(sink.get().max(inner.scheduled_timers().0));
            }
        })
        .unwrap();
        one_iteration(lp);
        assert!(largest.get() <= 202, "the heap held {} timers", largest.get());
        one_iteration(lp);
        assert_eq!(lp.scheduled_timers(), (0, 0));
    }

    // BEHAVIOURS 25
    fn timer_handle_comparisons_and_hash(lp) {
        let when = lp.time() + 10.0;
        let h1 = lp.call_at(when, || {}).unwrap();
        let h2 = lp.call_at(when, || {}).unwrap();
        let later = lp.call_at(when + 1.0, || {}).unwrap();
        assert_eq!(h1, h2, "equal when compares equal");
        assert_eq!(h1.partial_cmp(&h2), Some(std::cmp::Ordering::Equal));
        // [<, <=, ==, >=, >] as Python's operators give them.
        let ops = |a: &TimerHandle, b: &TimerHandle| [a < b, a <= b, a == b, a >= b, a > b];
        assert_eq!(ops(&h1, &h2), [false, true, true, true, false]);
        assert_eq!(ops(&h1, &later), [true, true, false, false, false]);
        assert_eq!(ops(&later, &h1), [false, false, false, true, true]);
        assert_eq!(hash_of(&h1), hash_of(&h2));

        h2.cancel();
        assert_ne!(h1, h2, "a cancelled handle is unequal to a live one with the same when");
        assert_eq!(ops(&h1, &h2), [false; 5], "and neither smaller nor greater");
        assert_eq!(hash_of(&h1), hash_of(&h2), "the hash is that of when only");
        let h3 = lp.call_at(when, || {}).unwrap();
        h3.cancel();
        assert_eq!(h2, h3, "two cancelled handles with the same when are equal");

        let mut sorted: Vec<TimerHandle> = [0.3, 0.1, 0.2]
            .into_iter()
            .map(|d| lp.call_later(d, || {}).unwrap())
            .collect();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let whens: Vec<f64> = sorted.iter().map(TimerHandle::when).collect();
        assert!(whens.windows(2).all(|w| w[0] < w[1]), "{whens:?}");
        for h in sorted.iter().chain([&h1, &later]) {
            h.cancel();
        }
    }

    // BEHAVIOURS 26
    fn cancelled_timer_drops_what_it_captured_at_once(lp) {
        let captured = Rc::new(());
        let c = captured.clone();
        let h = lp.call_later(10.0, move || drop(c)).unwrap();
        assert_eq!(Rc::strong_count(&captured), 2);
        h.cancel();
        assert_eq!(Rc::strong_count(&captured), 1, "released by cancel, still in the heap");
        assert_eq!(lp.scheduled_timers(), (1, 1));

        // A fired timer drops its captures too, although its handle is still held.
        let fut = Rc::new(lp.create_future::<u8>());
        let c = fut.clone();
        let fired = lp.call_later(0.0, move || c.set_result(1).unwrap()).unwrap();
        assert!(run_until(lp, 5.0, || fut.done()));
        assert_eq!(Rc::strong_count(&fut), 1);
        drop(fired);
    }

    // BEHAVIOURS 27
    fn timer_handle_when_is_fixed_at_creation(lp) {
        let delay = 0.05;
        let t0 = lp.time();
        let fired = Rc::new(Cell::new(None));
        let h = lp.call_later(delay, stamp(lp, &fired)).unwrap();
        let t1 = lp.time();
        let when = h.when();
        assert!(when >= t0 + delay - 1e-9 && when <= t1 + delay + 1e-6, "{t0} {when} {t1}");
        let c = lp.call_later(delay, || {}).unwrap();
        let cancelled_when = c.when();
        c.cancel();
        assert_eq!(c.when(), cancelled_when, "unchanged by cancel");
        assert!(run_until(lp, 5.0, || fired.get().is_some()));
        assert_eq!(h.when(), when, "unchanged after firing");
        let at = lp.time() + 1.5;
        let a = lp.call_at(at, || {}).unwrap();
        assert_eq!(a.when(), at);
        a.cancel();
    }

    // BEHAVIOURS 28
    fn huge_delays_are_accepted_and_cancellable(lp) {
        let huge = [
            86400.0 * 2.0,
            f64::INFINITY,
            1e18,
            i64::MAX as f64,
            2f64.powi(55),
            2f64.powi(54),
            f64::MAX,
            Duration::MAX.as_secs_f64(),
        ];
        let fired = Rc::new(Cell::new(0));
        let mut handles = Vec::new();
        for delay in huge {
            let count = fired.clone();
            let h = lp.call_later(delay, move || count.set(count.get() + 1)).unwrap();
            assert!(h.when() >= lp.time() + 86400.0 * 2.0 - 1.0, "{delay}: when {}", h.when());
            handles.push(h);
        }
        let count = fired.clone();
        handles.push(lp.call_at(f64::INFINITY, move || count.set(count.get() + 1)).unwrap());
        // A task sleeping on a huge timer can still be cancelled.
        let wake = lp.create_future::<()>();
        let setter = wake.clone();
        handles.push(lp.call_later(f64::INFINITY, move || setter.set_result(()).unwrap()).unwrap());
        let sleeper = lp.create_task(wake).unwrap();

        // Only huge timers: the loop waits in the kernel (capped timeout) until I/O wakes it.
        let (reader, mut writer) = socketpair();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let poker = std::thread::spawn(move || {
            rx.recv_timeout(Duration::from_secs(5)).ok();
            // Not synchronisation: gives the loop time to block on its long timeout first.
            std::thread::sleep(Duration::from_millis(50));
            writer.write_all(b"x").unwrap();
        });
        let stopper = lp.clone();
        lp.add_reader(reader.as_raw_fd(), move || stopper.stop()).unwrap();
        lp.call_soon(move || tx.send(()).unwrap()).unwrap();
        lp.run_forever().unwrap();
        poker.join().unwrap();
        assert!(lp.remove_reader(reader.as_raw_fd()));
        assert_eq!(fired.get(), 0, "a huge timer fired");

        assert!(sleeper.cancel());
        let r = lp.run_until_complete(sleeper).unwrap();
        assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
        for h in &handles {
            h.cancel();
        }
        one_iteration(lp);
        assert_eq!(lp.scheduled_timers(), (0, 0));
        assert_eq!(fired.get(), 0);
    }

    fn timer_cancelled_by_an_earlier_timer_of_the_same_batch_does_not_run(lp) {
        let order = log();
        let when = lp.time() + 0.01;
        let victim: Rc<RefCell<Option<TimerHandle>>> = Rc::new(RefCell::new(None));
        let (target, sink) = (victim.clone(), order.clone());
        lp.call_at(when, move || {
            sink.borrow_mut().push("first");
            if let Some(h) = target.borrow().as_ref() {
                h.cancel();
            }
        })
        .unwrap();
        *victim.borrow_mut() = Some(lp.call_at(when, rec(&order, "victim")).unwrap());
        lp.call_at(when, rec(&order, "third")).unwrap();
        assert!(run_until(lp, 5.0, || order.borrow().len() >= 2));
        one_iteration(lp);
        assert_eq!(*order.borrow(), ["first", "third"]);
    }
}
