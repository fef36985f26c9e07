//! `run_in_executor`, the default executor and its shutdown: BEHAVIOURS section 5 (items
//! 40–42), and `Executor` construction.
//!
//! Item 42 checks a logged warning, through the harness's capturing logger
//! ([`uring_tests::install_logger`]).
//!
//! Not applicable in Rust:
//! - 42, first half (`set_default_executor(not a ThreadPoolExecutor)` → TypeError):
//!   `set_default_executor` takes an `Executor`, so nothing else type-checks.
//! - Process pools (`ProcessPoolExecutor`): ringloop's executor is a thread pool only.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use ringloop::{Error, EventLoop, ExceptionContext, Executor, RuntimeKind};
use uring_tests::{backend_tests, install_logger, quiet_panic, run_until, take_my_logs};

/// Upper bound for anything that should happen "soon" on a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(10);

// --- helpers ---

/// Installs a handler that counts its calls.
fn count_exceptions(lp: &EventLoop) -> Rc<Cell<usize>> {
    let calls = Rc::new(Cell::new(0));
    let c = calls.clone();
    lp.set_exception_handler(Some(move |_: &EventLoop, _: &ExceptionContext| c.set(c.get() + 1)));
    calls
}

/// A job's result that reports the thread it is dropped on.
struct DropReporter(Sender<ThreadId>);

impl Drop for DropReporter {
    fn drop(&mut self) {
        let _ = self.0.send(thread::current().id());
    }
}

/// A gate a job waits on (bounded by [`PATIENCE`]; dropping the sender opens it too).
fn gate() -> (Sender<()>, Receiver<()>) {
    mpsc::channel()
}

backend_tests! {
    // BEHAVIOURS 40
    fn run_in_executor_default_runs_on_another_thread(lp) {
        let loop_thread = thread::current().id();
        let fut = lp.run_in_executor(None, || (thread::current().id(), 6 * 7)).unwrap();
        let (worker, value) = lp.run_until_complete(fut).unwrap().unwrap();
        assert_eq!(value, 42);
        assert_ne!(worker, loop_thread, "f ran on the loop thread");
    }

    fn run_in_executor_awaited_inside_a_task(lp) {
        let inner = lp.clone();
        let got = lp
            .run_until_complete(async move {
                let a = inner.run_in_executor(None, || 20).unwrap();
                let b = inner.run_in_executor(None, || 22).unwrap();
                a.await.unwrap() + b.await.unwrap()
            })
            .unwrap();
        assert_eq!(got, 42);
    }

    fn run_in_executor_explicit_executor_runs_two_at_once(lp) {
        let executor = Executor::new(2).unwrap().with_thread_name_prefix("explicit-pool");
        assert_eq!(executor.max_workers(), 2);
        // Each job waits (bounded) until both have started: only two concurrent workers
        // let both see the other.
        let started = Arc::new((Mutex::new(0usize), Condvar::new()));
        let job = |started: Arc<(Mutex<usize>, Condvar)>| {
            move || {
                let (count, cv) = &*started;
                let mut n = count.lock().unwrap();
                *n += 1;
                cv.notify_all();
                let (n, _) = cv.wait_timeout_while(n, PATIENCE, |n| *n < 2).unwrap();
                let name = thread::current().name().unwrap_or("").to_string();
                (*n >= 2, thread::current().id(), name)
            }
        };
        let f1 = lp.run_in_executor(Some(&executor), job(started.clone())).unwrap();
        let f2 = lp.run_in_executor(Some(&executor), job(started.clone())).unwrap();
        let (r1, r2) = lp.run_until_complete(async move { (f1.await, f2.await) }).unwrap();
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        assert!(r1.0 && r2.0, "the two jobs did not run concurrently");
        assert_ne!(r1.1, r2.1);
        assert_ne!(r1.1, thread::current().id());
        assert!(r1.2.starts_with("explicit-pool"), "ran on {:?}, not the explicit executor", r1.2);
        assert!(executor.worker_count() <= 2);
        assert!(executor.shutdown(true, Some(PATIENCE)));
    }

    fn run_in_executor_panic_gives_error_panic(lp) {
        let calls = count_exceptions(lp);
        let fut = lp.run_in_executor(None, || -> u8 { quiet_panic("worker boom") }).unwrap();
        let got = lp.run_until_complete(fut.clone()).unwrap();
        assert!(matches!(got, Err(Error::Panic(ref m)) if m.contains("worker boom")), "{got:?}");
        assert!(matches!(fut.exception(), Ok(Some(Error::Panic(_)))));
        // The loop and the pool both carry on.
        let again = lp.run_in_executor(None, || 5u8).unwrap();
        assert_eq!(lp.run_until_complete(again).unwrap().unwrap(), 5);
        assert_eq!(calls.get(), 0, "a panic returned to the caller was also reported");
    }

    // BEHAVIOURS 41: the worker finishes after the loop closed.
    fn cancelled_call_finishing_after_close_does_not_reach_the_loop(lp) {
        install_logger();
        let calls = count_exceptions(lp);
        let (open_tx, open_rx) = gate();
        let (dropped_tx, dropped_rx) = mpsc::channel();
        let (returned_tx, returned_rx) = mpsc::channel();
        let fut = lp
            .run_in_executor(None, move || {
                let _ = open_rx.recv_timeout(PATIENCE);
                let _ = returned_tx.send(thread::current().id());
                DropReporter(dropped_tx)
            })
            .unwrap();
        assert!(fut.cancel());
        assert!(fut.cancelled());
        let shutdown_lp = lp.clone();
        lp.run_until_complete(async move {
            shutdown_lp.shutdown_default_executor(Some(Duration::from_millis(10))).await
        })
        .unwrap()
        .unwrap();
        lp.close().unwrap();
        let handle = lp.handle();
        assert!(handle.is_closed());

        open_tx.send(()).unwrap();
        let worker = returned_rx.recv_timeout(PATIENCE).expect("the job never finished");
        let dropped_on = dropped_rx.recv_timeout(PATIENCE).expect("the job's result was never dropped");
        assert_ne!(dropped_on, thread::current().id(), "the result was delivered to the closed loop");
        assert_eq!(dropped_on, worker, "the result should be dropped on the worker");
        assert!(fut.cancelled());
        assert_eq!(calls.get(), 0);
        take_my_logs();
    }

    // BEHAVIOURS 41, as asyncio tests it: the worker finishes during the shutdown.
    fn cancelled_call_then_shutdown_then_close(lp) {
        let calls = count_exceptions(lp);
        let (dropped_tx, dropped_rx) = mpsc::channel();
        let fut = lp
            .run_in_executor(None, move || {
                thread::sleep(Duration::from_millis(50));
                DropReporter(dropped_tx)
            })
            .unwrap();
        let done_callbacks = Rc::new(Cell::new(0));
        let d = done_callbacks.clone();
        fut.add_done_callback(move |_| d.set(d.get() + 1));
        assert!(fut.cancel());
        let shutdown_lp = lp.clone();
        lp.run_until_complete(async move { shutdown_lp.shutdown_default_executor(None).await })
            .unwrap()
            .unwrap();
        // shutdown_default_executor(None) waits for the worker, and the worker's result (sent
        // to the loop before the worker exited) has been discarded by then.
        dropped_rx.try_recv().expect("the worker's result was not released when shutdown returned");
        lp.close().unwrap();
        assert!(fut.cancelled(), "a cancelled future got the worker's result");
        assert_eq!(done_callbacks.get(), 1, "done callbacks must run exactly once (for the cancel)");
        assert_eq!(calls.get(), 0);
    }

    // BEHAVIOURS 42 (second half)
    fn shutdown_default_executor_timeout_returns_promptly_with_a_warning(lp) {
        install_logger();
        take_my_logs();
        let (open_tx, open_rx) = gate();
        let (finished_tx, finished_rx) = mpsc::channel();
        let fut = lp
            .run_in_executor(None, move || {
                let _ = open_rx.recv_timeout(PATIENCE);
                let _ = finished_tx.send(());
            })
            .unwrap();
        let shutdown_lp = lp.clone();
        let started = Instant::now();
        let got = lp.run_until_complete(async move {
            shutdown_lp.shutdown_default_executor(Some(Duration::from_millis(10))).await
        });
        let took = started.elapsed();
        let still_running = finished_rx.try_recv().is_err();
        open_tx.send(()).unwrap();
        assert!(matches!(got, Ok(Ok(()))), "{got:?}");
        assert!(took < Duration::from_secs(2), "shutdown blocked on the job for {took:?}");
        assert!(still_running, "shutdown waited for the job");
        let logs = take_my_logs();
        assert!(
            logs.iter().any(|r| r.level == log::Level::Warn
                && r.text.contains("did not finish joining")),
            "no warning about the executor not joining: {logs:?}"
        );
        // The job still completes on its own, and the loop can receive its result.
        assert!(run_until(lp, PATIENCE.as_secs_f64(), || fut.done()));
        assert!(fut.result().is_ok());
        finished_rx.recv_timeout(PATIENCE).unwrap();
    }

    fn shutdown_default_executor_waits_for_running_jobs(lp) {
        let finished = Arc::new(Mutex::new(false));
        let f = finished.clone();
        let fut = lp
            .run_in_executor(None, move || {
                thread::sleep(Duration::from_millis(50));
                *f.lock().unwrap() = true;
            })
            .unwrap();
        let shutdown_lp = lp.clone();
        lp.run_until_complete(async move { shutdown_lp.shutdown_default_executor(None).await })
            .unwrap()
            .unwrap();
        assert!(*finished.lock().unwrap(), "shutdown returned before the job finished");
        assert!(run_until(lp, 5.0, || fut.done()));
    }

    fn run_in_executor_none_after_shutdown_is_an_error(lp) {
        // Also when the default executor was never created.
        let shutdown_lp = lp.clone();
        lp.run_until_complete(async move { shutdown_lp.shutdown_default_executor(None).await })
            .unwrap()
            .unwrap();
        let ran = Arc::new(Mutex::new(false));
        let r = ran.clone();
        let got = lp.run_in_executor(None, move || *r.lock().unwrap() = true);
        assert!(matches!(got, Err(Error::Runtime { kind: RuntimeKind::ExecutorShutdown, .. })), "{got:?}");
        thread::sleep(Duration::from_millis(20));
        assert!(!*ran.lock().unwrap());
        // An explicit executor still works.
        let executor = Executor::new(1).unwrap();
        let fut = lp.run_in_executor(Some(&executor), || 9).unwrap();
        assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 9);
        executor.shutdown(true, Some(PATIENCE));
    }

    fn set_default_executor_is_used_for_none(lp) {
        let executor = Executor::new(1).unwrap().with_thread_name_prefix("my-default");
        lp.set_default_executor(executor.clone());
        let fut = lp
            .run_in_executor(None, || thread::current().name().unwrap_or("").to_string())
            .unwrap();
        let name = lp.run_until_complete(fut).unwrap().unwrap();
        assert!(name.starts_with("my-default"), "ran on {name:?}");
        // shutdown_default_executor shuts that executor down.
        let shutdown_lp = lp.clone();
        lp.run_until_complete(async move { shutdown_lp.shutdown_default_executor(None).await })
            .unwrap()
            .unwrap();
        assert!(executor.is_shutdown());
    }

    fn run_in_executor_on_a_closed_loop(lp) {
        lp.close().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let got = lp.run_in_executor(None, move || drop(tx));
        assert!(matches!(got, Err(Error::Closed)), "{got:?}");
        // The closure was dropped without running (the channel is disconnected, nothing sent).
        assert!(matches!(rx.recv_timeout(PATIENCE), Err(mpsc::RecvTimeoutError::Disconnected)));
    }
}

#[test]
fn executor_new_zero_workers_is_invalid() {
    assert!(matches!(Executor::new(0), Err(Error::InvalidArgument { .. })));
    assert_eq!(Executor::new(3).unwrap().max_workers(), 3);
}
