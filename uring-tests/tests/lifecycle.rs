//! Loop lifecycle (BEHAVIOURS section 1): run_forever, run_until_complete, stop, close; obtaining
//! the loop (`get_running_loop`, `get_event_loop`, `set_event_loop`, `new_event_loop`) and
//! `ringloop::run`.
//!
//! Translated rather than ported:
//! - BEHAVIOURS 6, 7, 8 (a `BaseException`/`KeyboardInterrupt` escaping the loop): Rust has no
//!   exception that must escape; a panic in a callback or task is caught. The tests check that a
//!   panic in the awaited future comes back from `run_until_complete` as `Error::Panic` and
//!   leaves no stale stop (6, 7), that it is not reported again to the exception handler (7),
//!   and that a panic in a `call_soon` callback goes to the exception handler while the loop
//!   keeps running and stays open (8).
//! - BEHAVIOURS 12 (self-pipe closed): the loop's own fds (ring or epoll fd, eventfd) are counted
//!   in `/proc/self/fd`; the count is taken in a child process so other tests cannot disturb it.
//!
//! Not applicable:
//! - BEHAVIOURS 4, first half (`run_until_complete(non-awaitable)` → TypeError): it takes
//!   `F: std::future::Future`; anything else does not compile.
//! - BEHAVIOURS 4, second half (`run_until_complete(future of another loop)` → ValueError): it
//!   takes any Rust future, and a loop cannot tell whose a plain future is; a ringloop `Future`
//!   or `Task` of another loop knows, and is refused when polled, with `Error::Runtime` of kind
//!   `DifferentLoop` (asyncio's RuntimeError for the same await inside a task), pinned by
//!   `awaiting_another_loops_future_is_refused`.
//! - BEHAVIOURS 11, `add_signal_handler` after close: the loop has no signal API yet
//!   (section 17).
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ringloop::{Backend, Error, EventLoop, RuntimeKind, Task};
use uring_tests::{
    backend_tests, capture_exceptions, counting_callback, drop_flag, log, open_fds, rec,
    rec_then_schedule, run_ready, run_until, socketpair, watchdog,
};

/// True if `a` and `b` are the same loop: a callback scheduled on `a` shows up in `b`'s queue.
fn same_loop(a: &EventLoop, b: &EventLoop) -> bool {
    let before = b.ready_len();
    a.call_soon(|| {}).unwrap().cancel();
    b.ready_len() == before + 1
}

fn explode(msg: &str) -> i32 {
    panic!("{msg}")
}

/// A future that is pending once, then ready (lets other ready work run in between).
async fn yield_now(lp: &EventLoop) {
    let fut = lp.create_future::<()>();
    let setter = fut.clone();
    lp.call_soon(move || setter.set_result(()).unwrap()).unwrap();
    fut.await.unwrap();
}

/// Clears this thread's current loop when dropped (also when a test fails).
struct ClearCurrentLoop;

impl Drop for ClearCurrentLoop {
    fn drop(&mut self) {
        ringloop::set_event_loop(None);
    }
}

backend_tests! {
    // BEHAVIOURS 1
    fn nested_run_on_the_same_loop_is_refused(lp) {
        let inner = lp.clone();
        let (nested_ruc, nested_forever, still_running) = lp
            .run_until_complete(async move {
                let ruc = inner.run_until_complete(async { 1 });
                let forever = inner.run_forever();
                (ruc, forever, inner.is_running())
            })
            .unwrap();
        let running = Some(RuntimeKind::LoopRunning);
        assert_eq!(nested_ruc.as_ref().err().and_then(Error::runtime_kind), running, "{nested_ruc:?}");
        assert_eq!(nested_forever.as_ref().err().and_then(Error::runtime_kind), running);
        assert!(still_running, "a refused nested run must not mark the loop idle");

        // From a plain callback too.
        let results = Rc::new(RefCell::new(Vec::new()));
        let (sink, inner) = (results.clone(), lp.clone());
        lp.call_soon(move || {
            sink.borrow_mut().push(inner.run_forever());
            sink.borrow_mut().push(inner.run_until_complete(async {}));
            inner.stop();
        })
        .unwrap();
        lp.run_forever().unwrap();
        assert_eq!(results.borrow().len(), 2);
        for r in results.borrow().iter() {
            assert!(matches!(r, Err(Error::Runtime { kind: RuntimeKind::LoopRunning, .. })), "{r:?}");
        }
        // The loop is intact.
        assert!(!lp.is_running());
        assert_eq!(lp.run_until_complete(async { 5 }).unwrap(), 5);
    }

    // BEHAVIOURS 2
    fn running_another_loop_inside_a_running_loop_is_refused(lp) {
        let other = EventLoop::with_backend(lp.backend()).unwrap();
        let results = Rc::new(RefCell::new(Vec::new()));
        // The callback's asserts panic into the exception handler: seen here, and the stop
        // comes first so that a failing one cannot hang the loop.
        let reports = capture_exceptions(lp);
        let (sink, b, a) = (results.clone(), other.clone(), lp.clone());
        lp.call_soon(move || {
            a.stop();
            sink.borrow_mut().push(b.run_forever());
            sink.borrow_mut().push(b.run_until_complete(async {}));
            assert!(!b.is_running(), "B must not be marked running");
            let running = ringloop::get_running_loop().unwrap();
            assert!(same_loop(&running, &a), "get_running_loop must still give A");
        })
        .unwrap();
        lp.run_forever().unwrap();
        assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
        assert_eq!(results.borrow().len(), 2);
        for r in results.borrow().iter() {
            match r {
                Err(Error::Runtime { kind: RuntimeKind::OtherLoopRunning, message: msg }) => {
                    assert!(msg.contains("another loop"), "{msg}")
                }
                other => panic!("expected Error::Runtime, got {other:?}"),
            }
        }
        // Once A is done, B runs normally.
        let ran = log();
        other.call_soon(rec(&ran, "b")).unwrap();
        run_ready(&other);
        assert_eq!(*ran.borrow(), ["b"]);
        assert!(matches!(ringloop::get_running_loop(), Err(Error::Runtime { .. })));
        other.close().unwrap();
    }

    // BEHAVIOURS 3
    // run_until_complete polls a plain future in place (it may borrow), so stopping early
    // drops it; given a task, the task stays pending as in asyncio.
    fn stop_before_the_future_completes_is_an_error(lp) {
        let fut = lp.create_future::<i32>();
        let awaited = lp.create_task(fut.clone()).unwrap();
        let stopper = lp.clone();
        lp.call_soon(move || stopper.stop()).unwrap();
        let r = lp.run_until_complete(awaited);
        match r {
            Err(Error::Runtime { kind: RuntimeKind::StoppedBeforeComplete, message: msg }) => {
                assert!(msg.contains("stopped before"), "{msg}")
            }
            other => panic!("expected Error::Runtime, got {other:?}"),
        }
        assert_eq!(lp.pending_tasks(), 1, "the task stays pending");

        // stop() before run_until_complete: one iteration, then the same error.
        lp.stop();
        let never = lp.create_task(lp.create_future::<()>()).unwrap();
        let r = lp.run_until_complete(never);
        assert!(matches!(r, Err(Error::Runtime { kind: RuntimeKind::StoppedBeforeComplete, .. })), "{r:?}");

        // No stale stop: a later run_forever runs until its own stop.
        let (ticked, t0) = (Rc::new(Cell::new(false)), lp.time());
        let flag = ticked.clone();
        lp.call_later(0.02, move || flag.set(true)).unwrap();
        let (_timer, stopped) = watchdog(lp, 0.05);
        lp.run_forever().unwrap();
        assert!(stopped.get() && ticked.get(), "run_forever returned before its stop");
        assert!(lp.time() - t0 >= 0.05 - 1e-6);
        // The first task can still finish, and run_until_complete works again.
        fut.set_result(3).unwrap();
        assert_eq!(lp.run_until_complete(async { 9 }).unwrap(), 9);
        assert_eq!(lp.pending_tasks(), 1, "only the task of the pre-stopped run is left");
    }

    // BEHAVIOURS 4 (Rust meaning; see the header): refused at once, as asyncio does.
    fn awaiting_another_loops_future_is_refused(lp) {
        let other = EventLoop::with_backend(lp.backend()).unwrap();
        let fut = other.create_future::<&str>();
        let setter = fut.clone();
        lp.call_later(0.01, move || setter.set_result("done").unwrap()).unwrap();
        let (_timer, stopped) = watchdog(lp, 5.0);
        let r = lp.run_until_complete(fut).unwrap();
        assert!(!stopped.get(), "the await hung");
        let err = r.expect_err("a future of another loop");
        assert_eq!(err.runtime_kind(), Some(RuntimeKind::DifferentLoop), "{err}");
        other.close().unwrap();
    }

    // BEHAVIOURS 5
    fn stop_before_run_forever_runs_one_iteration(lp) {
        let (mut reader, mut writer) = socketpair();
        writer.write_all(b"x").unwrap();
        let io_calls = Rc::new(Cell::new(0));
        let count = io_calls.clone();
        lp.add_reader(reader.as_raw_fd(), move || count.set(count.get() + 1)).unwrap();
        let ran = log();
        lp.call_soon(rec_then_schedule(lp, &ran, "cb", "scheduled by cb")).unwrap();
        let far = Rc::new(Cell::new(false));
        let flag = far.clone();
        lp.call_later(10.0, move || flag.set(true)).unwrap();

        lp.stop();
        let t0 = lp.time();
        lp.run_forever().unwrap();
        let took = lp.time() - t0;
        assert!(took < 1.0, "stop() before run_forever must poll with a zero timeout ({took} s)");
        assert_eq!(*ran.borrow(), ["cb"], "exactly the ready callbacks run");
        assert_eq!(io_calls.get(), 1, "the ready fd's callback runs once in that poll");
        assert_eq!(lp.ready_len(), 1, "the callback cb scheduled waits for the next run");
        assert!(!far.get());
        assert_eq!(lp.scheduled_timers(), (1, 0));
        assert!(!lp.is_running());
        assert!(lp.remove_reader(reader.as_raw_fd()));
        let mut buf = [0u8; 1];
        std::io::Read::read(&mut reader, &mut buf).unwrap();

        // Nothing ready at all, only the far timer: the zero timeout comes from stop() alone.
        lp.stop();
        lp.run_forever().unwrap();
        assert_eq!(*ran.borrow(), ["cb", "scheduled by cb"]);
        assert_eq!(lp.ready_len(), 0);
        lp.stop();
        let t0 = lp.time();
        lp.run_forever().unwrap();
        let took = lp.time() - t0;
        assert!(took < 1.0, "with nothing ready, stop() first must still not wait ({took} s)");
        assert!(!far.get());
    }

    // BEHAVIOURS 5 (the idiom)
    fn call_soon_then_stop_runs_the_callback_once(lp) {
        let (ran, count) = counting_callback();
        lp.call_soon(count).unwrap();
        run_ready(lp);
        assert_eq!(ran.get(), 1);
        // And the loop can run again.
        run_ready(lp);
        assert_eq!(ran.get(), 1);
    }

    fn stop_while_running_finishes_the_current_batch(lp) {
        let ran = log();
        let (inner, sink) = (lp.clone(), ran.clone());
        lp.call_soon(move || {
            sink.borrow_mut().push("a");
            inner.stop();
            inner.call_soon(rec(&sink, "c")).unwrap();
        })
        .unwrap();
        lp.call_soon(rec(&ran, "b")).unwrap();
        let (_timer, forced) = watchdog(lp, 5.0);
        lp.run_forever().unwrap();
        assert!(!forced.get());
        assert_eq!(*ran.borrow(), ["a", "b"], "the batch finishes, its offspring wait");
        assert_eq!(lp.ready_len(), 1);
        run_ready(lp);
        assert_eq!(*ran.borrow(), ["a", "b", "c"], "they run at the next run_forever");
    }

    // BEHAVIOURS 6
    // BEHAVIOURS 7 (a panic stands in for the BaseException; see the header)
    fn panic_in_the_awaited_future_is_returned_and_leaves_no_stale_stop(lp) {
        let reports = capture_exceptions(lp);
        let r = lp.run_until_complete(async { explode("boom-6") });
        match r {
            Err(Error::Panic(msg)) => assert!(msg.contains("boom-6"), "{msg}"),
            other => panic!("expected Error::Panic, got {other:?}"),
        }
        assert!(!lp.is_running() && !lp.is_closed());
        // A later run_forever runs until an explicit stop.
        let ticked = Rc::new(Cell::new(false));
        let flag = ticked.clone();
        lp.call_later(0.01, move || flag.set(true)).unwrap();
        let t0 = lp.time();
        let (_timer, stopped) = watchdog(lp, 0.05);
        lp.run_forever().unwrap();
        assert!(ticked.get() && stopped.get(), "run_forever returned before its stop");
        assert!(lp.time() - t0 >= 0.05 - 1e-6);
        // A later run_until_complete succeeds.
        assert_eq!(lp.run_until_complete(async { 7 }).unwrap(), 7);
        lp.close().unwrap();
        assert!(
            reports.borrow().is_empty(),
            "the panic was returned to the caller; it must not be reported too: {:?}",
            reports.borrow()
        );
    }

    // BEHAVIOURS 8 (a panic stands in for the BaseException; see the header)
    fn panic_in_a_callback_is_reported_and_the_loop_keeps_running(lp) {
        let reports = capture_exceptions(lp);
        let ran = log();
        lp.call_soon(|| {
            explode("boom-8");
        })
        .unwrap();
        lp.call_soon(rec(&ran, "after")).unwrap();
        run_ready(lp);
        assert_eq!(*ran.borrow(), ["after"]);
        assert!(!lp.is_closed() && !lp.is_running());
        let reports = reports.borrow();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].message.starts_with("Exception in callback"), "{}", reports[0].message);
        assert!(matches!(&reports[0].error, Some(Error::Panic(m)) if m.contains("boom-8")));
    }

    // BEHAVIOURS 10
    fn close_while_running_is_refused(lp) {
        let results = Rc::new(RefCell::new(Vec::new()));
        let (sink, inner) = (results.clone(), lp.clone());
        lp.call_soon(move || {
            sink.borrow_mut().push(inner.close());
            inner.stop();
        })
        .unwrap();
        lp.run_forever().unwrap();
        let inner = lp.clone();
        let from_task = lp.run_until_complete(async move { inner.close() }).unwrap();
        results.borrow_mut().push(from_task);
        for r in results.borrow().iter() {
            assert!(matches!(r, Err(Error::Runtime { kind: RuntimeKind::CloseRunningLoop, .. })), "{r:?}");
        }
        assert!(!lp.is_closed());
        assert_eq!(lp.run_until_complete(async { 1 }).unwrap(), 1, "the loop still works");
        lp.close().unwrap();
        assert!(lp.is_closed());
    }

    // BEHAVIOURS 11 (pending work is discarded)
    fn close_is_idempotent_and_discards_pending_work(lp) {
        let tracker = Rc::new(());
        let ran = Rc::new(Cell::new(0));
        let bump = |t: Rc<()>| {
            let ran = ran.clone();
            move || {
                let _t = t;
                ran.set(ran.get() + 1);
            }
        };
        lp.call_soon(bump(tracker.clone())).unwrap();
        lp.call_later(0.0, bump(tracker.clone())).unwrap();
        lp.call_later(3600.0, bump(tracker.clone())).unwrap();
        lp.call_at(lp.time() - 1.0, bump(tracker.clone())).unwrap();
        let in_task = bump(tracker.clone());
        let task = lp.create_task(async move { in_task() }).unwrap();
        let (reader, _writer) = socketpair();
        let watched = tracker.clone();
        lp.add_reader(reader.as_raw_fd(), move || {
            let _ = &watched;
        })
        .unwrap();
        let remote = Arc::new(());
        let remote_ran = Arc::new(AtomicUsize::new(0));
        {
            let (remote, remote_ran) = (remote.clone(), remote_ran.clone());
            let handle = lp.handle();
            std::thread::spawn(move || {
                handle
                    .call_soon_threadsafe(move || {
                        let _r = remote;
                        remote_ran.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap();
            })
            .join()
            .unwrap();
        }
        assert_eq!(Rc::strong_count(&tracker), 7);
        assert_eq!(Arc::strong_count(&remote), 2);

        lp.close().unwrap();
        assert!(lp.is_closed() && !lp.is_running());
        assert_eq!(ran.get(), 0, "discarded callbacks never run");
        assert_eq!(remote_ran.load(Ordering::SeqCst), 0);
        assert_eq!(Rc::strong_count(&tracker), 1, "what they captured is dropped at close");
        assert_eq!(Arc::strong_count(&remote), 1);
        assert!(task.done(), "a task dropped at close is done");
        assert_eq!(lp.scheduled_timers(), (0, 0));
        assert_eq!(lp.ready_len(), 0);

        lp.close().unwrap();
        assert!(lp.is_closed(), "close is idempotent and irreversible");
    }

    // BEHAVIOURS 11 (every scheduling call after close)
    fn everything_after_close_is_refused(lp) {
        let (sock, _peer) = socketpair();
        let fd = sock.as_raw_fd();
        lp.add_reader(fd, || {}).unwrap();
        lp.add_writer(fd, || {}).unwrap();
        let handle = lp.handle();
        lp.close().unwrap();

        fn closed<T: std::fmt::Debug>(what: &str, r: ringloop::Result<T>) {
            assert!(matches!(r, Err(Error::Closed)), "{what} after close: {r:?}");
        }
        let tracker = Rc::new(());
        let t = tracker.clone();
        closed("call_soon", lp.call_soon(move || drop(t)));
        assert_eq!(Rc::strong_count(&tracker), 1, "a refused callback is dropped");
        closed("run_forever", lp.run_forever());
        closed("run_until_complete", lp.run_until_complete(async {}));
        closed("EventLoop::call_soon_threadsafe", lp.call_soon_threadsafe(|| {}));
        closed("LoopHandle::call_soon_threadsafe", handle.call_soon_threadsafe(|| {}));
        let from_thread = handle.clone();
        let r = std::thread::spawn(move || from_thread.call_soon_threadsafe(|| {}).err())
            .join()
            .unwrap();
        assert!(matches!(r, Some(Error::Closed)), "call_soon_threadsafe from a thread: {r:?}");
        assert!(handle.is_closed());
        closed("call_later", lp.call_later(0.1, || {}));
        closed("call_at", lp.call_at(lp.time() + 0.1, || {}));
        closed("create_task", lp.create_task(async {}).map(|_| ()));
        closed("run_in_executor(None)", lp.run_in_executor(None, || 1).map(|_| ()));
        let executor = ringloop::Executor::new(1).unwrap();
        closed("run_in_executor(Some)", lp.run_in_executor(Some(&executor), || 1).map(|_| ()));
        executor.shutdown(true, None);
        closed("add_reader", lp.add_reader(fd, || {}));
        closed("add_writer", lp.add_writer(fd, || {}));
        assert!(!lp.remove_reader(fd), "remove_reader after close returns false");
        assert!(!lp.remove_writer(fd), "remove_writer after close returns false");
        assert!(lp.close().is_ok());
    }

    // BEHAVIOURS 12 (measured in a child process: see `fd_count_child`)
    fn close_releases_the_loops_fds(lp) {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["fd_count_child", "--exact", "--include-ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(FD_CHILD_ENV, lp.backend().name())
            .env("RINGLOOP_BACKEND", lp.backend().name())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "fd check failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains(FD_CHILD_OK), "the fd check did not run:\n{stdout}\n{stderr}");
    }

    fn get_running_loop_inside_callbacks_and_tasks(lp) {
        let none = ringloop::get_running_loop().map(drop);
        assert!(matches!(none, Err(Error::Runtime { kind: RuntimeKind::NoRunningLoop, .. })), "idle loop");
        let seen = Rc::new(Cell::new(0));
        let (sink, me) = (seen.clone(), lp.clone());
        lp.call_soon(move || {
            me.stop(); // first: a failing assert below must not hang the loop
            let running = ringloop::get_running_loop().unwrap();
            assert!(running.is_running());
            assert!(same_loop(&running, &me));
            sink.set(sink.get() + 1);
        })
        .unwrap();
        lp.run_forever().unwrap();
        let me = lp.clone();
        let in_task = lp
            .run_until_complete(async move {
                let running = ringloop::get_running_loop().unwrap();
                same_loop(&running, &me)
            })
            .unwrap();
        assert!(in_task);
        assert_eq!(seen.get(), 1);
        assert!(matches!(ringloop::get_running_loop(), Err(Error::Runtime { .. })), "after run");
    }

    fn get_event_loop_and_set_event_loop(lp) {
        let _clear = ClearCurrentLoop;
        ringloop::set_event_loop(None);
        let none = ringloop::get_event_loop().map(drop);
        assert!(matches!(none, Err(Error::Runtime { kind: RuntimeKind::NoCurrentLoop, .. })), "{none:?}");
        ringloop::set_event_loop(Some(lp.clone()));
        let current = ringloop::get_event_loop().unwrap();
        assert!(same_loop(&current, lp));
        assert!(!current.is_running());

        // The running loop wins over the current one.
        let other = EventLoop::with_backend(lp.backend()).unwrap();
        ringloop::set_event_loop(Some(other.clone()));
        let (found, me) = (Rc::new(Cell::new(false)), lp.clone());
        let sink = found.clone();
        lp.call_soon(move || {
            sink.set(same_loop(&ringloop::get_event_loop().unwrap(), &me));
            me.stop();
        })
        .unwrap();
        lp.run_forever().unwrap();
        assert!(found.get(), "get_event_loop inside a running loop gives the running loop");
        assert!(same_loop(&ringloop::get_event_loop().unwrap(), &other));

        ringloop::set_event_loop(None);
        assert!(matches!(ringloop::get_event_loop(), Err(Error::Runtime { .. })));
        other.close().unwrap();
    }

    fn run_inside_a_running_loop_is_refused(lp) {
        let result = Rc::new(RefCell::new(None));
        let (sink, me) = (result.clone(), lp.clone());
        lp.call_soon(move || {
            *sink.borrow_mut() = Some(ringloop::run(async { 1 }));
            me.stop();
        })
        .unwrap();
        lp.run_forever().unwrap();
        let r = result.borrow_mut().take().unwrap();
        assert!(matches!(r, Err(Error::Runtime { .. })), "{r:?}");
    }
}

const FD_CHILD_ENV: &str = "RINGLOOP_TEST_FD_CHILD";
const FD_CHILD_OK: &str = "FD-CHILD-OK";

/// BEHAVIOURS 12, run alone in a child process by `close_releases_the_loops_fds` (the fd count
/// of a process running other tests in parallel changes under our feet).
#[test]
#[ignore = "run in a child process by close_releases_the_loops_fds"]
fn fd_count_child() {
    let Ok(name) = std::env::var(FD_CHILD_ENV) else { return };
    let backend = if name == "uring" { Backend::Uring } else { Backend::Epoll };
    let (reader, mut writer) = socketpair();
    let before = open_fds();
    for round in 0..2 {
        let lp = EventLoop::with_backend(backend).unwrap();
        assert!(open_fds() > before, "round {round}: the loop owns no fd?");
        let handle = lp.handle();
        // Use every fd the loop has: I/O, timers, cross-thread wake-ups.
        writer.write_all(b"x").unwrap();
        let got_io = Rc::new(Cell::new(false));
        let flag = got_io.clone();
        lp.add_reader(reader.as_raw_fd(), move || flag.set(true)).unwrap();
        let woken = Arc::new(AtomicUsize::new(0));
        let (remote, count) = (handle.clone(), woken.clone());
        std::thread::spawn(move || {
            remote
                .call_soon_threadsafe(move || {
                    count.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap()
        })
        .join()
        .unwrap();
        lp.call_later(0.005, || {}).unwrap();
        assert!(run_until(&lp, 5.0, || got_io.get() && woken.load(Ordering::SeqCst) == 1));
        let mut buf = [0u8; 8];
        std::io::Read::read(&mut &reader, &mut buf).unwrap();
        lp.close().unwrap();
        // `handle` is still alive: the eventfd must be closed anyway.
        assert_eq!(open_fds(), before, "round {round}: close() left fds open");
        drop(handle);
        drop(lp);
        assert_eq!(open_fds(), before, "round {round}");
    }
    // ringloop::run closes its loop too (RINGLOOP_BACKEND is set for this process).
    assert_eq!(ringloop::run(async { 1 }).unwrap(), 1);
    assert_eq!(open_fds(), before, "ringloop::run left fds open");
    println!("{FD_CHILD_OK}");
}

#[test]
fn get_running_loop_without_a_running_loop_errors() {
    std::thread::spawn(|| {
        assert!(matches!(ringloop::get_running_loop(), Err(Error::Runtime { .. })));
        match ringloop::get_event_loop() {
            Err(Error::Runtime { message: msg, .. }) => {
                assert!(msg.contains("no current event loop"), "{msg}")
            }
            other => panic!("expected Error::Runtime, got {other:?}"),
        }
    })
    .join()
    .unwrap();
}

#[test]
fn new_event_loop_returns_a_fresh_idle_loop() {
    let _clear = ClearCurrentLoop;
    let a = match ringloop::new_event_loop() {
        Err(Error::Unsupported(why)) => {
            uring_tests::skipped(format_args!("new_event_loop_returns_a_fresh_idle_loop: {why}"));
            return;
        }
        other => other.unwrap(),
    };
    let b = ringloop::new_event_loop().unwrap();
    assert!(!a.is_running() && !a.is_closed());
    assert!(!same_loop(&a, &b), "each call makes a new loop");
    assert!(ringloop::get_running_loop().is_err(), "new_event_loop does not run the loop");
    assert!(ringloop::get_event_loop().is_err(), "new_event_loop does not set the current loop");
    a.close().unwrap();
    b.close().unwrap();
}

#[test]
fn run_returns_the_output_cancels_leftover_tasks_and_closes() {
    let (guard, dropped) = drop_flag();
    let leftover: Rc<RefCell<Option<Task<()>>>> = Rc::new(RefCell::new(None));
    let slot = leftover.clone();
    let result = ringloop::run(async move {
        let lp = ringloop::get_running_loop().unwrap();
        let never = lp.create_future::<()>();
        let task = lp
            .create_task(async move {
                let _guard = guard;
                let _ = never.await;
            })
            .unwrap();
        *slot.borrow_mut() = Some(task);
        yield_now(&lp).await;
        (lp, 42)
    });
    let (lp, output) = match result {
        Err(Error::Unsupported(why)) => {
            uring_tests::skipped(format_args!(
                "run_returns_the_output_cancels_leftover_tasks_and_closes: {why}"
            ));
            return;
        }
        other => other.unwrap(),
    };
    assert_eq!(output, 42);
    assert!(lp.is_closed(), "run closes its loop");
    assert!(dropped.get(), "the leftover task's future was dropped");
    let task = leftover.borrow_mut().take().unwrap();
    assert!(task.cancelled(), "the leftover task was cancelled");
    assert!(ringloop::get_running_loop().is_err());

    // A panic in the future comes back as Error::Panic.
    let r = ringloop::run(async { explode("boom-run") });
    assert!(matches!(&r, Err(Error::Panic(m)) if m.contains("boom-run")), "{r:?}");
}
