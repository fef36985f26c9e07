//! Calls from other threads (BEHAVIOURS 15): `LoopHandle::call_soon_threadsafe`,
//! `ThreadsafeHandle::cancel`, `LoopHandle::stop`, and waking a loop blocked in the kernel.
//!
//! Not applicable:
//! - BEHAVIOURS 17 (debug mode: `call_soon`/`call_later`/`call_at` from a thread that is not the
//!   loop's → RuntimeError): `EventLoop` is `!Send`, so only the loop's thread can call them;
//!   other threads hold a `LoopHandle`, whose calls are all thread-safe.
use std::cell::Cell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringloop::{EventLoop, LoopHandle, ThreadsafeHandle};
use uring_tests::{backend_tests, capture_error_texts, run_ready, socketpair, watchdog};

const PATIENCE: Duration = Duration::from_secs(5);

/// Stops the loop through I/O (not through the thread-safe path under test) if a test has not
/// finished after `secs`: a loop waiting in the kernel with no timer cannot hang the suite.
struct IoWatchdog {
    /// The loop watched.
    lp: EventLoop,
    /// Becomes readable when the watchdog bites.
    reader: UnixStream,
    /// True once it bit.
    fired: Rc<Cell<bool>>,
    /// Dropped to call the watchdog off.
    call_off: Option<mpsc::Sender<()>>,
    /// Writes to the socket on timeout.
    thread: Option<JoinHandle<()>>,
}

impl IoWatchdog {
    fn new(lp: &EventLoop, secs: u64) -> IoWatchdog {
        let (reader, mut writer) = socketpair();
        let (call_off, rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
                writer.write_all(b"!").unwrap();
            }
        });
        let fired = Rc::new(Cell::new(false));
        let (flag, stopper) = (fired.clone(), lp.clone());
        lp.add_reader(reader.as_raw_fd(), move || {
            flag.set(true);
            stopper.stop();
        })
        .unwrap();
        IoWatchdog { lp: lp.clone(), reader, fired, call_off: Some(call_off), thread: Some(thread) }
    }

    fn fired(&self) -> bool {
        self.fired.get()
    }
}

impl Drop for IoWatchdog {
    fn drop(&mut self) {
        drop(self.call_off.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.lp.remove_reader(self.reader.as_raw_fd());
    }
}

/// The kernel id of the calling thread.
fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Waits (at most 2 s) until thread `tid` of this process sleeps in the kernel (state `S` seen
/// three times in a row); false if it never did.
fn wait_until_blocked(tid: i32) -> bool {
    let path = format!("/proc/self/task/{tid}/stat");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut seen = 0;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        seen = if state == Some('S') { seen + 1 } else { 0 };
        if seen == 3 {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    false
}

/// These tests assert that the loop sleeps in the kernel with no timer; `RINGLOOP_MAX_WAIT_MS`
/// (the valgrind knob) caps every wait, so they cannot hold under it: skip, printed.
fn skip_when_waits_are_capped() -> bool {
    let capped = std::env::var_os("RINGLOOP_MAX_WAIT_MS").is_some();
    if capped {
        uring_tests::skipped("RINGLOOP_MAX_WAIT_MS caps the wait");
    }
    capped
}

/// Runs `act(handle)` on another thread once the loop has blocked in the kernel (no timers, no
/// ready work), then runs the loop until something stops it. Returns whether the loop was seen
/// blocked and whether the I/O watchdog had to stop it.
fn from_thread_while_blocked(
    lp: &EventLoop,
    act: impl FnOnce(LoopHandle) + Send + 'static,
) -> (bool, bool) {
    let watchdog = IoWatchdog::new(lp, 5);
    let (tid_tx, tid_rx) = mpsc::channel();
    lp.call_soon(move || tid_tx.send(gettid()).unwrap()).unwrap();
    let handle = lp.handle();
    let thread = thread::spawn(move || {
        let tid = tid_rx.recv_timeout(PATIENCE).expect("the loop never ran");
        let blocked = wait_until_blocked(tid);
        act(handle);
        blocked
    });
    assert_eq!(lp.scheduled_timers(), (0, 0), "no timer may bound the wait");
    lp.run_forever().unwrap();
    let blocked = thread.join().unwrap();
    (blocked, watchdog.fired())
}

backend_tests! {
    fn threadsafe_call_wakes_a_loop_blocked_in_the_kernel(lp) {
        if skip_when_waits_are_capped() {
            return;
        }
        let ran: Arc<Mutex<Option<(thread::ThreadId, Duration)>>> = Arc::default();
        let sink = ran.clone();
        let (blocked, bitten) = from_thread_while_blocked(lp, move |handle| {
            let sent = Instant::now();
            handle
                .call_soon_threadsafe(move || {
                    *sink.lock().unwrap() = Some((thread::current().id(), sent.elapsed()));
                    ringloop::get_running_loop().unwrap().stop();
                })
                .unwrap();
        });
        assert!(blocked, "the loop never blocked in the kernel (spinning?)");
        assert!(!bitten, "the threadsafe call did not wake the loop");
        let (on, latency) = ran.lock().unwrap().take().expect("the callback never ran");
        assert_eq!(on, thread::current().id(), "it runs on the loop thread");
        assert!(latency < Duration::from_secs(1), "woken after {latency:?}");
    }

    fn loop_handle_stop_from_another_thread_stops_a_blocked_loop(lp) {
        if skip_when_waits_are_capped() {
            return;
        }
        let (blocked, bitten) = from_thread_while_blocked(lp, |handle| handle.stop().unwrap());
        assert!(blocked, "the loop never blocked in the kernel (spinning?)");
        assert!(!bitten, "LoopHandle::stop did not wake the loop");
        assert!(!lp.is_running());
    }

    fn loop_handle_stop_before_run_forever_runs_one_iteration(lp) {
        let handle = lp.handle();
        thread::spawn(move || handle.stop().unwrap()).join().unwrap();
        let ran = Rc::new(Cell::new(0));
        let count = ran.clone();
        lp.call_soon(move || count.set(count.get() + 1)).unwrap();
        lp.call_later(10.0, || unreachable!("the far timer fired")).unwrap();
        let t0 = lp.time();
        lp.run_forever().unwrap();
        assert!(lp.time() - t0 < 1.0, "took {} s", lp.time() - t0);
        assert_eq!(ran.get(), 1);
    }

    // The documented `call_soon_threadsafe(cb); stop()` from a thread must run cb before the
    // loop returns, also when a callback on the loop thread takes in the queue mid-batch.
    fn loop_handle_stop_comes_after_callbacks_queued_before_it(lp) {
        let ran = Arc::new(AtomicBool::new(false));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (queued_tx, queued_rx) = mpsc::channel::<()>();
        let (handle, flag) = (lp.handle(), ran.clone());
        let thread = thread::spawn(move || {
            go_rx.recv_timeout(PATIENCE).unwrap();
            handle.call_soon_threadsafe(move || flag.store(true, Ordering::SeqCst)).unwrap();
            handle.stop().unwrap();
            queued_tx.send(()).unwrap();
        });
        let inner = lp.clone();
        lp.call_soon(move || {
            go_tx.send(()).unwrap();
            queued_rx.recv_timeout(PATIENCE).unwrap();
            // Any call_soon takes in what other threads queued (to keep FIFO with them).
            inner.call_soon(|| {}).unwrap();
        })
        .unwrap();
        let (_timer, forced) = watchdog(lp, 5.0);
        lp.run_forever().unwrap();
        thread.join().unwrap();
        assert!(!forced.get());
        assert!(
            ran.load(Ordering::SeqCst),
            "run_forever returned before a callback queued ahead of LoopHandle::stop() ran"
        );
    }

    // BEHAVIOURS 15
    fn threadsafe_call_is_fifo_with_call_soon_made_afterwards(lp) {
        let words = Arc::new(Mutex::new(Vec::new()));
        let ran_on = Arc::new(Mutex::new(None));
        let (handle, sink, on) = (lp.handle(), words.clone(), ran_on.clone());
        thread::spawn(move || {
            handle
                .call_soon_threadsafe(move || {
                    sink.lock().unwrap().push("hello");
                    *on.lock().unwrap() = Some(thread::current().id());
                })
                .unwrap();
        })
        .join()
        .unwrap();
        let sink = words.clone();
        lp.call_soon(move || sink.lock().unwrap().push("world")).unwrap();
        run_ready(lp);
        assert_eq!(*words.lock().unwrap(), ["hello", "world"]);
        assert_eq!(*ran_on.lock().unwrap(), Some(thread::current().id()));
    }

    // BEHAVIOURS 15 (stress)
    fn four_thousand_threadsafe_calls_from_a_thread_all_run(lp) {
        const N: usize = 4096;
        let counter = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        lp.call_soon(move || go_tx.send(()).unwrap()).unwrap();
        let (handle, count) = (lp.handle(), counter.clone());
        let thread = thread::spawn(move || {
            go_rx.recv_timeout(PATIENCE).unwrap();
            for i in 0..N {
                let count = count.clone();
                handle
                    .call_soon_threadsafe(move || {
                        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                        if n < N - 512 {
                            // A timer and a racing cancel, as in uvloop's test.
                            let lp = ringloop::get_running_loop().unwrap();
                            let timer = lp.call_later(0.01, || {}).unwrap();
                            let jitter = (n % 5) as f64 * 0.0001;
                            lp.call_later(0.0005 + jitter, move || timer.cancel()).unwrap();
                        }
                    })
                    .unwrap();
                if i % 64 == 0 {
                    thread::yield_now();
                }
            }
            handle.call_soon_threadsafe(|| ringloop::get_running_loop().unwrap().stop()).unwrap();
        });
        let (_timer, forced) = watchdog(lp, 20.0);
        lp.run_forever().unwrap();
        thread.join().unwrap();
        assert!(!forced.get(), "the stop call never arrived");
        assert_eq!(counter.load(Ordering::SeqCst), N);
    }

    fn threadsafe_calls_from_several_threads_keep_per_thread_order(lp) {
        const THREADS: usize = 4;
        const CALLS: usize = 1000;
        let seen: Arc<Mutex<Vec<(usize, usize)>>> = Arc::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut gos = Vec::new();
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (tx, rx) = mpsc::channel::<()>();
                gos.push(tx);
                let (handle, seen, finished) = (lp.handle(), seen.clone(), finished.clone());
                thread::spawn(move || {
                    rx.recv_timeout(PATIENCE).unwrap();
                    for i in 0..CALLS {
                        let seen = seen.clone();
                        handle.call_soon_threadsafe(move || seen.lock().unwrap().push((t, i))).unwrap();
                    }
                    handle
                        .call_soon_threadsafe(move || {
                            if finished.fetch_add(1, Ordering::SeqCst) + 1 == THREADS {
                                ringloop::get_running_loop().unwrap().stop();
                            }
                        })
                        .unwrap();
                })
            })
            .collect();
        lp.call_soon(move || gos.into_iter().for_each(|tx| tx.send(()).unwrap())).unwrap();
        let (_timer, forced) = watchdog(lp, 20.0);
        lp.run_forever().unwrap();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(!forced.get());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), THREADS * CALLS);
        for t in 0..THREADS {
            let mine: Vec<usize> = seen.iter().filter(|(who, _)| *who == t).map(|p| p.1).collect();
            assert_eq!(mine, (0..CALLS).collect::<Vec<_>>(), "thread {t}'s calls out of order");
        }
    }

    fn threadsafe_handle_cancel_from_another_thread_prevents_the_run(lp) {
        let captured = Arc::new(());
        let ran = Arc::new(AtomicUsize::new(0));
        let (handle, keep, count) = (lp.handle(), captured.clone(), ran.clone());
        thread::spawn(move || {
            let h = handle
                .call_soon_threadsafe(move || {
                    let _keep = keep;
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            h.cancel();
            assert!(h.cancelled());
        })
        .join()
        .unwrap();
        assert_eq!(Arc::strong_count(&captured), 1, "cancel drops the callback at once");
        run_ready(lp);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    // Cancelled after the loop took the callback into its ready queue, before it ran.
    fn threadsafe_handle_cancel_after_the_loop_took_the_call_in(lp) {
        let reports = capture_error_texts(lp);
        let ran = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (queued_tx, queued_rx) = mpsc::channel::<()>();
        let (cancel_tx, cancel_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (handle, count) = (lp.handle(), ran.clone());
        let thread = thread::spawn(move || {
            go_rx.recv_timeout(PATIENCE).unwrap();
            let h: ThreadsafeHandle = handle
                .call_soon_threadsafe(move || {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            queued_tx.send(()).unwrap();
            cancel_rx.recv_timeout(PATIENCE).unwrap();
            h.cancel();
            done_tx.send(()).unwrap();
        });
        let inner = lp.clone();
        lp.call_soon(move || {
            go_tx.send(()).unwrap();
            queued_rx.recv_timeout(PATIENCE).unwrap();
            let before = inner.ready_len();
            let stopper = inner.clone();
            inner.call_soon(move || stopper.stop()).unwrap(); // takes the queued call in first
            assert_eq!(inner.ready_len(), before + 2, "the threadsafe call was taken in");
            cancel_tx.send(()).unwrap();
            done_rx.recv_timeout(PATIENCE).unwrap();
        })
        .unwrap();
        let (_timer, forced) = watchdog(lp, 5.0);
        lp.run_forever().unwrap();
        thread.join().unwrap();
        assert!(!forced.get());
        assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
        assert_eq!(ran.load(Ordering::SeqCst), 0, "a cancelled call ran");
    }

    fn call_soon_threadsafe_after_close_is_closed(lp) {
        let handle = lp.handle();
        assert!(!handle.is_closed());
        lp.close().unwrap();
        assert!(handle.is_closed());
        let captured = Arc::new(());
        let keep = captured.clone();
        let r = thread::spawn(move || handle.call_soon_threadsafe(move || drop(keep)).err())
            .join()
            .unwrap();
        assert!(matches!(r, Some(ringloop::Error::Closed)), "{r:?}");
        assert_eq!(Arc::strong_count(&captured), 1, "the refused callback was dropped");
    }
}

#[test]
fn handles_for_other_threads_are_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<LoopHandle>();
    check::<ThreadsafeHandle>();
}
