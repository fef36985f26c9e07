//! asyncio's module-level helpers (the "async toolbox"): `sleep`, `wait_for`/`timeout`,
//! `gather`/`gather_all`, `wait`, `shield`, `create_task`/`spawn`, `run_until_complete` with a
//! future that borrows, and `LoopHandle::run_coroutine_threadsafe`.
//!
//! Waits are bounded generously (a loaded 2-core machine); durations are only asserted as
//! "not early".

use std::cell::{Cell, RefCell};
use std::future::Future as StdFuture;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ringloop::{
    create_task, gather, gather_all, shield, sleep, spawn, timeout, wait, wait_for, ArgumentKind,
    Error, EventLoop, ReturnWhen, Task,
};
use uring_tests::{
    backend_tests, drop_flag, quiet_panic, run_ready, run_until, watchdog, DropFlag,
};

/// The bound on anything that should take milliseconds.
const PATIENCE: f64 = 10.0;

/// A delay that no test waits out.
const FOREVER: f64 = 3600.0;

/// Runs `future` to completion on `lp`, failing the test if it takes longer than [`PATIENCE`].
fn run_main<F: StdFuture>(lp: &EventLoop, future: F) -> F::Output {
    let (timer, fired) = watchdog(lp, PATIENCE);
    let output = lp.run_until_complete(future);
    timer.cancel();
    assert!(!fired.get(), "the watchdog stopped the loop: the future hung");
    output.expect("run_until_complete")
}

/// Sleeps `delay`, then fails or gives `delay`; holds `guard` until it ends or is dropped.
async fn job(delay: f64, fail: bool, guard: DropFlag) -> Result<f64, Error> {
    let _guard = guard;
    sleep(delay).await?;
    if fail {
        return Err(Error::invalid_argument(
            ArgumentKind::Other,
            format!("job of {delay} s failed"),
        ));
    }
    Ok(delay)
}

/// A task that sleeps `delay` and then gives `value`.
fn sleeper<T: 'static>(delay: f64, value: T) -> Task<Result<T, Error>> {
    create_task(async move { sleep(delay).await.map(|()| value) }).unwrap()
}

/// Counts the polls of the future it wraps.
struct CountPolls<F> {
    /// The future.
    inner: Pin<Box<F>>,
    /// Polls so far.
    polls: Rc<Cell<u32>>,
}

impl<F: StdFuture> StdFuture for CountPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

/// A waker that does nothing, for polling by hand.
struct NoopWake;

impl Wake for NoopWake {
    fn wake(self: Arc<Self>) {}
}

type BoxedJob = Pin<Box<dyn StdFuture<Output = Result<(), Error>>>>;

backend_tests! {
    fn sleep_never_fires_early(lp) {
        run_main(lp, async {
            for delay in [0.001, 0.005, 0.02] {
                let start = lp.time();
                sleep(delay).await.unwrap();
                let slept = lp.time() - start;
                assert!(slept >= delay - 1e-9, "sleep({delay}) returned after {slept} s");
            }
            let start = lp.time();
            sleep(Duration::from_millis(3)).await.unwrap();
            assert!(lp.time() - start >= 0.003 - 1e-9);
        });
    }

    fn sleeps_end_in_deadline_order(lp) {
        let order = Rc::new(RefCell::new(Vec::new()));
        let sleeps = [0.03, 0.01, 0.02, 0.0].into_iter().enumerate().map(|(index, delay)| {
            let order = order.clone();
            async move {
                sleep(delay).await?;
                order.borrow_mut().push(index);
                Ok::<_, Error>(index)
            }
        });
        let indices = run_main(lp, gather(sleeps)).unwrap();
        assert_eq!(indices, [0, 1, 2, 3], "gather gives the results in the order given");
        assert_eq!(*order.borrow(), [3, 1, 2, 0], "the sleeps ended out of deadline order");
    }

    fn sleep_zero_yields_to_ready_callbacks_without_a_timer(lp) {
        let order = Rc::new(RefCell::new(Vec::new()));
        run_main(lp, async {
            let log = order.clone();
            lp.call_soon(move || log.borrow_mut().push("callback")).unwrap();
            let timers = lp.scheduled_timers(); // the watchdog's
            sleep(0.0).await.unwrap();
            order.borrow_mut().push("after sleep(0)");
            assert_eq!(lp.scheduled_timers(), timers, "sleep(0) scheduled a timer");
            sleep(-1.0).await.unwrap();
        });
        assert_eq!(*order.borrow(), ["callback", "after sleep(0)"]);
    }

    fn dropped_sleep_cancels_its_timer(lp) {
        let task = lp.create_task(async { sleep(FOREVER).await }).unwrap();
        run_ready(lp);
        assert_eq!(lp.scheduled_timers(), (1, 0), "the sleep armed one timer");
        task.cancel();
        run_ready(lp);
        run_ready(lp);
        assert!(task.cancelled());
        assert_eq!(lp.scheduled_timers(), (0, 0), "the dropped sleep left its timer behind");

        // A limit that was not reached leaves no timer either.
        assert_eq!(run_main(lp, wait_for(async { 5 }, FOREVER)).unwrap(), 5);
        run_main(lp, wait_for(sleep(0.001), FOREVER)).unwrap().unwrap();
        run_ready(lp);
        assert_eq!(lp.scheduled_timers(), (0, 0), "wait_for left its timer behind");
        assert_eq!(lp.pending_tasks(), 0);
    }

    fn sleep_needs_a_running_loop_and_a_number(lp) {
        let waker = Waker::from(Arc::new(NoopWake));
        let mut outside = sleep(0.01);
        match Pin::new(&mut outside).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(Err(Error::Runtime { message: msg, .. })) => {
                assert!(msg.contains("sleep") && msg.contains("no running event loop"), "{msg}")
            }
            other => panic!("expected Error::Runtime, got {other:?}"),
        }
        let nan = run_main(lp, sleep(f64::NAN));
        let nan_kind = ArgumentKind::NotANumber;
        assert!(matches!(nan, Err(Error::InvalidArgument { kind, message: ref m }) if kind == nan_kind && m.contains("NaN")), "{nan:?}");
    }

    fn wait_for_and_timeout_give_the_output_in_time(lp) {
        run_main(lp, async {
            let quick = async { sleep(0.001).await.map(|()| 5) };
            assert_eq!(wait_for(quick, PATIENCE).await.unwrap().unwrap(), 5);
            let spelled = timeout(Duration::from_secs(10), async { 6 }).await;
            assert_eq!(spelled.unwrap(), 6);
            let fut = lp.create_future::<&str>();
            let setter = fut.clone();
            lp.call_later(0.02, move || setter.set_result("late but unlimited").unwrap()).unwrap();
            assert_eq!(wait_for(fut, None).await.unwrap().unwrap(), "late but unlimited");
        });
    }

    fn wait_for_timeout_drops_the_inner_future(lp) {
        run_main(lp, async {
            let (guard, dropped) = drop_flag();
            let start = lp.time();
            let got = wait_for(job(FOREVER, false, guard), 0.01).await;
            match got {
                Err(Error::Timeout(msg)) => {
                    assert!(msg.contains("wait_for") && msg.contains("0.01 s"), "{msg}")
                }
                other => panic!("expected Error::Timeout, got {other:?}"),
            }
            assert!(lp.time() - start >= 0.01 - 1e-9, "timed out early");
            assert!(dropped.get(), "the inner future outlived the time-out");

            let (guard, dropped) = drop_flag();
            let got = timeout(Duration::from_millis(5), job(FOREVER, false, guard)).await;
            assert!(matches!(got, Err(Error::Timeout(ref m)) if m.contains("timeout")), "{got:?}");
            assert!(dropped.get(), "timeout kept the inner future");
        });
        run_ready(lp);
        assert_eq!(lp.scheduled_timers(), (0, 0), "the inner sleeps left timers behind");
    }

    fn gather_gives_results_in_the_order_given_and_may_borrow(lp) {
        let names = ["ada".to_string(), "brian".to_string(), "cy".to_string()];
        let lengths = run_main(lp, gather(names.iter().zip([0.02, 0.0, 0.01]).map(
            |(name, delay)| async move {
                sleep(delay).await?;
                Ok::<_, Error>(name.len())
            },
        )));
        assert_eq!(lengths.unwrap(), [3, 5, 2]);
        let nothing: Vec<std::future::Ready<Result<u8, Error>>> = Vec::new();
        assert!(run_main(lp, gather(nothing)).unwrap().is_empty());
        let none: Vec<std::future::Ready<u8>> = Vec::new();
        assert!(run_main(lp, gather_all(none)).is_empty());
    }

    fn gather_fails_fast_and_drops_the_rest(lp) {
        let (g0, d0) = drop_flag();
        let (g1, d1) = drop_flag();
        let (g2, d2) = drop_flag();
        let jobs = [job(FOREVER, false, g0), job(0.001, true, g1), job(FOREVER, false, g2)];
        let got = run_main(lp, gather(jobs));
        assert!(matches!(got, Err(Error::InvalidArgument { message: ref m, .. }) if m.contains("0.001")), "{got:?}");
        assert!(d0.get() && d1.get() && d2.get(), "gather kept futures after the first error");
        run_ready(lp);
        assert_eq!(lp.scheduled_timers(), (0, 0), "the dropped jobs left timers behind");
    }

    fn gather_all_collects_every_outcome(lp) {
        let guards: Vec<_> = (0..3).map(|_| drop_flag()).collect();
        let mut flags = Vec::new();
        let mut jobs = Vec::new();
        for ((guard, dropped), (delay, fail)) in guards.into_iter().zip([(0.002, false), (0.001, true), (0.0, false)]) {
            flags.push(dropped);
            jobs.push(job(delay, fail, guard));
        }
        let outcomes = run_main(lp, gather_all(jobs));
        assert!(matches!(outcomes[0], Ok(d) if d == 0.002), "{outcomes:?}");
        assert!(matches!(outcomes[1], Err(Error::InvalidArgument { .. })), "{outcomes:?}");
        assert!(matches!(outcomes[2], Ok(d) if d == 0.0), "{outcomes:?}");
        assert!(flags.iter().all(|f| f.get()));
    }

    fn gather_polls_only_the_futures_that_were_woken(lp) {
        let polls = Rc::new(Cell::new(0));
        let patient: BoxedJob = Box::pin(CountPolls { inner: Box::pin(sleep(0.02)), polls: polls.clone() });
        let busy: BoxedJob = Box::pin(async {
            for _ in 0..20 {
                sleep(0.0).await?;
            }
            Ok(())
        });
        run_main(lp, gather([patient, busy])).unwrap();
        assert_eq!(polls.get(), 2, "the sleeping future was polled at its siblings' wakes");
    }

    fn wait_first_completed_returns_at_the_first_done_task(lp) {
        let (done, pending) = run_main(lp, async {
            let tasks = [sleeper(FOREVER, 0), sleeper(0.001, 1), sleeper(FOREVER, 2)];
            wait(tasks, ReturnWhen::FirstCompleted, None).await.unwrap()
        });
        assert_eq!((done.len(), pending.len()), (1, 2));
        assert!(pending.iter().all(|t| !t.done()));
        let first = done.into_iter().next().unwrap();
        assert_eq!(run_main(lp, first).unwrap().unwrap(), 1);
        pending.iter().for_each(|t| assert!(t.cancel()));
        run_ready(lp);
        assert_eq!(lp.pending_tasks(), 0);
    }

    fn wait_first_exception_returns_at_the_first_failure(lp) {
        run_main(lp, async {
            let ok = sleeper(0.001, ());
            let failing = create_task(async {
                sleep(0.005).await?;
                Err::<(), _>(Error::invalid_argument(ArgumentKind::Other, "failed"))
            })
            .unwrap();
            let slow = sleeper(FOREVER, ());
            let (done, pending) = wait([ok, failing, slow], ReturnWhen::FirstException, PATIENCE).await.unwrap();
            assert_eq!((done.len(), pending.len()), (2, 1), "returned before or long after the failure");
            pending[0].cancel();

            // A panic is a failure too.
            let panicking = create_task(async {
                sleep(0.001).await.unwrap();
                quiet_panic("task failed")
            })
            .unwrap();
            let slow = create_task(async { sleep(FOREVER).await.unwrap() }).unwrap();
            let (done, pending) = wait([panicking, slow], ReturnWhen::FirstException, None).await.unwrap();
            assert_eq!((done.len(), pending.len()), (1, 1));
            assert!(matches!(done[0].exception(), Ok(Some(Error::Panic(_)))));
            pending[0].cancel();

            // Cancellation is no failure: without one, it waits for all.
            let cancelled = sleeper(FOREVER, 0);
            cancelled.cancel();
            let (done, pending) = wait([cancelled, sleeper(0.003, 1)], ReturnWhen::FirstException, None).await.unwrap();
            assert_eq!((done.len(), pending.len()), (2, 0));
        });
    }

    fn wait_all_completed_waits_for_every_task_in_the_order_given(lp) {
        let outputs = run_main(lp, async {
            let tasks = [sleeper(0.003, "a"), sleeper(0.001, "b"), sleeper(0.002, "c")];
            let (done, pending) = wait(tasks, ReturnWhen::AllCompleted, None).await.unwrap();
            assert!(pending.is_empty());
            let mut outputs = Vec::new();
            for task in done {
                outputs.push(task.await.unwrap().unwrap());
            }
            outputs
        });
        assert_eq!(outputs, ["a", "b", "c"]);
    }

    fn wait_time_out_returns_the_pending_tasks(lp) {
        run_main(lp, async {
            let start = lp.time();
            let tasks = vec![sleeper(0.001, 0), sleeper(FOREVER, 1)];
            let (done, pending) = wait(tasks, ReturnWhen::AllCompleted, 0.02).await.unwrap();
            assert!(lp.time() - start >= 0.02 - 1e-9, "timed out early");
            assert_eq!((done.len(), pending.len()), (1, 1), "a time-out is not an error");
            assert!(pending[0].cancel());
            let none: Vec<Task<Result<u8, Error>>> = Vec::new();
            let empty = wait(none, ReturnWhen::FirstCompleted, None).await;
            assert!(matches!(empty, Err(Error::InvalidArgument { message: ref m, .. }) if m.contains("empty")), "{empty:?}");
        });
    }

    fn shield_keeps_the_work_running_when_the_caller_is_cancelled(lp) {
        let finished = Rc::new(Cell::new(false));
        let (guard, dropped) = drop_flag();
        let flag = finished.clone();
        let caller = lp
            .create_task(async move {
                let work = shield(async move {
                    let _guard = guard;
                    sleep(0.02).await.unwrap();
                    flag.set(true);
                    7
                });
                work.unwrap().await
            })
            .unwrap();
        run_ready(lp);
        assert!(caller.cancel());
        run_ready(lp);
        assert!(caller.cancelled(), "the caller was not cancelled");
        assert!(!dropped.get(), "cancelling the caller dropped the shielded work");
        assert!(run_until(lp, PATIENCE, || finished.get()), "the shielded work did not finish");
        assert!(run_until(lp, PATIENCE, || dropped.get()));

        assert_eq!(run_main(lp, async { shield(async { 3 }).unwrap().await.unwrap() }), 3);
        assert!(matches!(shield(async {}), Err(Error::Runtime { .. })), "shield without a loop");
    }

    fn create_task_and_spawn_need_a_running_loop(lp) {
        match create_task(async {}) {
            Err(Error::Runtime { message: msg, .. }) => assert!(msg.contains("no running event loop"), "{msg}"),
            other => panic!("expected Error::Runtime, got {other:?}"),
        }
        assert!(matches!(spawn(async {}), Err(Error::Runtime { message: ref m, .. }) if m.contains("spawn")));
        let sum = run_main(lp, async {
            let a = create_task(async { 4 }).unwrap();
            let b = spawn(async { 5 }).unwrap();
            a.await.unwrap() + b.await.unwrap()
        });
        assert_eq!(sum, 9);
    }

    fn run_until_complete_polls_a_borrowing_future_in_place(lp) {
        let words = vec!["polled", "in", "place"];
        let mut total = 0;
        lp.call_soon({
            let lp = lp.clone();
            move || assert!(lp.is_running())
        })
        .unwrap();
        run_main(lp, async {
            for word in &words {
                sleep(0.0).await.unwrap();
                total += word.len();
            }
            assert_eq!(lp.pending_tasks(), 0, "the main future is not a task");
        });
        assert_eq!(total, 13);

        // Stopped before completion: the error asyncio gives, and the future is dropped.
        let (guard, dropped) = drop_flag();
        let stopper = lp.clone();
        lp.call_later(0.005, move || stopper.stop()).unwrap();
        let got = lp.run_until_complete(job(FOREVER, false, guard));
        assert!(matches!(got, Err(Error::Runtime { message: ref m, .. }) if m == "Event loop stopped before Future completed."), "{got:?}");
        assert!(dropped.get(), "the borrowed future outlived run_until_complete");

        // A panic in the main future is returned as Error::Panic.
        let got = lp.run_until_complete(async { quiet_panic("main failed") });
        assert!(matches!(got, Err(Error::Panic(ref m)) if m == "main failed"), "{got:?}");
    }

    fn run_coroutine_threadsafe_blocks_a_thread_for_the_output(lp) {
        let handle = lp.handle();
        let caller = std::thread::spawn(move || {
            let plain = handle.run_coroutine_threadsafe(async { 6 * 7 }).unwrap().wait();
            let slept = handle
                .run_coroutine_threadsafe_with(|| async { sleep(0.005).await.map(|()| "slept") })
                .unwrap()
                .result(PATIENCE);
            let never = handle.run_coroutine_threadsafe(std::future::pending::<()>()).unwrap();
            let late = never.result(0.01);
            let still_pending = !never.done();
            never.cancel();
            let panicked = handle.run_coroutine_threadsafe(async { quiet_panic("thread job") }).unwrap().wait();
            handle.stop().unwrap();
            (plain, slept, late, still_pending, panicked)
        });
        let (_timer, fired) = watchdog(lp, PATIENCE);
        lp.run_forever().unwrap();
        assert!(!fired.get(), "the thread did not stop the loop");
        let (plain, slept, late, still_pending, panicked) = caller.join().unwrap();
        assert_eq!(plain.unwrap(), 42);
        assert_eq!(slept.unwrap().unwrap(), "slept");
        assert!(matches!(late, Err(Error::Timeout(ref m)) if m.contains("keeps running")), "{late:?}");
        assert!(still_pending, "a timed-out result() ended the work");
        assert!(matches!(panicked, Err(Error::Panic(ref m)) if m == "thread job"), "{panicked:?}");
        run_ready(lp);
        assert_eq!(lp.pending_tasks(), 0, "a cancelled coroutine's task is left");
    }

    fn run_coroutine_threadsafe_cancel_drops_the_future(lp) {
        let started = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        let (started_in_loop, dropped_in_loop) = (started.clone(), dropped.clone());
        let handle = lp.handle();
        let caller = std::thread::spawn(move || {
            struct SendFlag(Arc<AtomicBool>);
            impl Drop for SendFlag {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let guard = SendFlag(dropped_in_loop);
            let work = handle
                .run_coroutine_threadsafe(async move {
                    let _guard = guard;
                    started_in_loop.store(true, Ordering::SeqCst);
                    std::future::pending::<()>().await
                })
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs_f64(PATIENCE);
            while !started.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let outcome = (work.cancel(), work.cancel(), work.cancelled(), work.wait());
            handle.stop().unwrap();
            outcome
        });
        let (_timer, fired) = watchdog(lp, PATIENCE);
        lp.run_forever().unwrap();
        assert!(!fired.get(), "the thread did not stop the loop");
        let (first, second, cancelled, waited) = caller.join().unwrap();
        assert!(first && !second && cancelled, "cancel() answers");
        assert!(matches!(waited, Err(Error::Cancelled)), "{waited:?}");
        assert!(run_until(lp, PATIENCE, || dropped.load(Ordering::SeqCst)), "the future was not dropped");
        assert_eq!(lp.pending_tasks(), 0);
    }

    fn concurrent_future_is_awaitable_from_another_loop(lp) {
        let (handle, backend) = (lp.handle(), lp.backend());
        let caller = std::thread::spawn(move || {
            let other = EventLoop::with_backend(backend).unwrap();
            let submitted = handle.run_coroutine_threadsafe_with(|| async { sleep(0.002).await.map(|()| 5) });
            let got = other.run_until_complete(submitted.unwrap());
            handle.stop().unwrap();
            other.close().unwrap();
            got
        });
        let (_timer, fired) = watchdog(lp, PATIENCE);
        lp.run_forever().unwrap();
        assert!(!fired.get(), "the other loop did not stop this one");
        assert_eq!(caller.join().unwrap().unwrap().unwrap().unwrap(), 5);
    }

    fn run_coroutine_threadsafe_on_a_closing_loop(lp) {
        let handle = lp.handle();
        let queued = handle.run_coroutine_threadsafe(async { 1 }).unwrap();
        lp.close().unwrap();
        assert!(matches!(queued.wait(), Err(Error::Cancelled)), "queued work outlived close()");
        let refused = handle.run_coroutine_threadsafe(async { 2 });
        assert!(matches!(refused, Err(Error::Closed)), "{refused:?}");
    }
}
