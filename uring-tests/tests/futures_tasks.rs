//! Futures, tasks and the task factory: BEHAVIOURS section 3 (items 30–33), items 1, 3 and 37
//! of other sections as they concern tasks, and the `Future`/`Task` API itself.
//!
//! Not applicable in Rust:
//! - 30, first half (`set_task_factory(non-callable)` → TypeError): the factory is a
//!   `TaskFactory = Rc<dyn Fn(&EventLoop, LocalBoxFuture) -> LocalBoxFuture>`, so a
//!   non-callable does not type-check. The rest of 30 is tested below.
//! - 33 (async generators finalized by the GC, `shutdown_asyncgens`): Rust has no async
//!   generators, so there is nothing to finalize (see `src/lib.rs`).
//! - `create_task(context=…)`: there are no `contextvars` in Rust.

use std::cell::{Cell, RefCell};
use std::future::Future as StdFuture;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ringloop::{Error, EventLoop, LocalBoxFuture, RuntimeKind, StateKind, Task, TaskFactory};
use uring_tests::{
    backend_tests, capture_exceptions, drop_flag, quiet_panic, run_ready, run_until,
};

/// A future that never completes.
fn pending_forever() -> std::future::Pending<()> {
    std::future::pending()
}

/// What a [`ringloop::Future`] and a [`Task`] share for the cancellation tests: the loop can
/// await them, and they can be cancelled.
trait Cancellable<T>: StdFuture<Output = Result<T, Error>> + Clone + 'static {
    fn cancel(&self) -> bool;
    fn cancelled(&self) -> bool;
}

impl<T: 'static> Cancellable<T> for ringloop::Future<T> {
    fn cancel(&self) -> bool {
        ringloop::Future::cancel(self)
    }
    fn cancelled(&self) -> bool {
        ringloop::Future::cancelled(self)
    }
}

impl<T: 'static> Cancellable<T> for Task<T> {
    fn cancel(&self) -> bool {
        Task::cancel(self)
    }
    fn cancelled(&self) -> bool {
        Task::cancelled(self)
    }
}

/// Cancels `awaited` from a callback while the loop awaits it: the cancel succeeds, the await
/// gives `Cancelled`, and `awaited` is cancelled.
fn check_cancelled_while_awaited<T: std::fmt::Debug>(lp: &EventLoop, awaited: impl Cancellable<T>) {
    let canceller = awaited.clone();
    lp.call_soon(move || assert!(canceller.cancel())).unwrap();
    let got = lp.run_until_complete(awaited.clone()).unwrap();
    assert!(matches!(got, Err(Error::Cancelled)), "{got:?}");
    assert!(awaited.cancelled());
}

/// A task that holds a [`uring_tests::DropFlag`] and waits forever, after its first step (it is
/// blocked); and the flag.
fn blocked_task(lp: &EventLoop) -> (Task<()>, Rc<Cell<bool>>) {
    let (flag, dropped) = drop_flag();
    let task = lp
        .create_task(async move {
            let _guard = flag;
            pending_forever().await;
        })
        .unwrap();
    run_ready(lp);
    (task, dropped)
}

/// The number in a default task name `Task-N`.
fn task_number<T>(task: &Task<T>) -> u64 {
    let name = task.get_name();
    let n = name.strip_prefix("Task-").unwrap_or_else(|| panic!("default name {name:?}"));
    n.parse().unwrap_or_else(|_| panic!("default name {name:?} does not end in a number"))
}

// ---------------------------------------------------------------------------------------------
// Future
// ---------------------------------------------------------------------------------------------

backend_tests! {
    // As asyncio's "Task ... got Future ... attached to a different loop": a future or task
    // of loop A awaited in a task of loop B (on the same thread) fails the await with a typed
    // error, at once: no panic, no hang.
    fn awaiting_a_future_of_another_loop_is_refused(lp) {
        let other = EventLoop::with_backend(lp.backend()).unwrap();
        let foreign = other.create_future::<u32>();
        let foreign_task = other.create_task(async { 7 }).unwrap();
        let task = lp.create_task(async move { foreign.await.map(|v| v + 1) }).unwrap();
        let got = lp.run_until_complete(task).unwrap().expect("the task ran to its end");
        let err = got.expect_err("a future of another loop");
        assert_eq!(err.runtime_kind(), Some(RuntimeKind::DifferentLoop), "{err}");
        let want = "<Future pending> is attached to a different event loop than the one running";
        assert!(err.to_string().starts_with(want), "{err}");
        // The task of the other loop, awaited by the main future of this one.
        let got = lp.run_until_complete(foreign_task).unwrap();
        let err = got.expect_err("a task of another loop");
        assert!(matches!(err, Error::Runtime { kind: RuntimeKind::DifferentLoop, .. }), "{err}");
        assert!(err.to_string().starts_with("<Task "), "{err}");
        // On its own loop the same kind of await works.
        let own = other.create_future::<u32>();
        own.set_result(5).unwrap();
        assert_eq!(other.run_until_complete(own).unwrap().unwrap(), 5);
        other.close().unwrap();
    }

    fn future_set_result_then_state_queries(lp) {
        let fut = lp.create_future::<u32>();
        assert!(!fut.done());
        assert!(!fut.cancelled());
        let not_done = Some(StateKind::NotDone);
        assert_eq!(fut.result().err().and_then(|e| e.state_kind()), not_done, "result() while pending");
        assert_eq!(fut.exception().err().and_then(|e| e.state_kind()), not_done, "exception() while pending");

        fut.set_result(42).unwrap();
        assert!(fut.done());
        assert!(!fut.cancelled());
        assert_eq!(fut.result().unwrap(), 42);
        assert!(matches!(fut.exception(), Ok(None)));

        // Setting anything a second time is an InvalidState error and changes nothing.
        assert!(matches!(fut.set_result(7), Err(Error::InvalidState { kind: StateKind::AlreadyDone, .. })));
        assert!(matches!(fut.set_exception(Error::runtime(RuntimeKind::Other, "late")), Err(Error::InvalidState { .. })));
        assert!(!fut.cancel(), "cancel() of a done future returns false");
        assert!(!fut.cancelled());
        assert_eq!(fut.result().unwrap(), 42);
    }

    fn future_set_exception(lp) {
        let fut = lp.create_future::<u32>();
        fut.set_exception(Error::runtime(RuntimeKind::Other, "it broke")).unwrap();
        assert!(fut.done());
        assert!(!fut.cancelled());
        assert!(matches!(fut.result(), Err(Error::Runtime { message: ref m, .. }) if m == "it broke"));
        assert!(matches!(fut.exception(), Ok(Some(Error::Runtime { message: ref m, .. })) if m == "it broke"));
        assert!(matches!(fut.set_exception(Error::Cancelled), Err(Error::InvalidState { .. })));
        assert!(matches!(fut.set_result(1), Err(Error::InvalidState { .. })));
    }

    fn future_cancel(lp) {
        let fut = lp.create_future::<u32>();
        assert!(fut.cancel());
        assert!(fut.done());
        assert!(fut.cancelled());
        assert!(!fut.cancel(), "second cancel returns false");
        assert!(matches!(fut.result(), Err(Error::Cancelled)));
        // asyncio's exception() raises CancelledError on a cancelled future.
        assert!(matches!(fut.exception(), Err(Error::Cancelled)));
        assert!(matches!(fut.set_result(1), Err(Error::InvalidState { .. })));
    }

    fn future_done_callbacks_run_later_in_order_with_the_future(lp) {
        let fut = lp.create_future::<&'static str>();
        let order = Rc::new(RefCell::new(Vec::new()));
        for i in 1..=3 {
            let order = order.clone();
            fut.add_done_callback(move |f| {
                assert!(f.done(), "the callback gets the finished future");
                order.borrow_mut().push((i, f.result().unwrap()));
            });
        }
        // Set from inside a callback: the done callbacks go through call_soon, so they run in
        // the next iteration, not inline and not in this one.
        let setter = fut.clone();
        let order_at_set = order.clone();
        let ran_inline = Rc::new(Cell::new(true));
        let inline_flag = ran_inline.clone();
        lp.call_soon(move || {
            setter.set_result("v").unwrap();
            inline_flag.set(!order_at_set.borrow().is_empty());
        })
        .unwrap();
        run_ready(lp);
        assert!(!ran_inline.get(), "done callbacks ran inline inside set_result");
        assert!(order.borrow().is_empty(), "done callbacks ran in the iteration of set_result");
        run_ready(lp);
        assert_eq!(*order.borrow(), [(1, "v"), (2, "v"), (3, "v")]);
    }

    fn future_done_callbacks_set_outside_the_loop(lp) {
        // set_result while the loop is not running queues the callbacks for its next run.
        let fut = lp.create_future::<u8>();
        let ran = Rc::new(Cell::new(0));
        let r = ran.clone();
        fut.add_done_callback(move |f| r.set(f.result().unwrap()));
        fut.set_result(9).unwrap();
        assert_eq!(ran.get(), 0, "ran inline");
        run_ready(lp);
        assert_eq!(ran.get(), 9);
    }

    fn future_remove_done_callback(lp) {
        let fut = lp.create_future::<()>();
        let ran = Rc::new(RefCell::new(Vec::new()));
        let (a, b) = (ran.clone(), ran.clone());
        let id_a = fut.add_done_callback(move |_| a.borrow_mut().push("a"));
        let _id_b = fut.add_done_callback(move |_| b.borrow_mut().push("b"));
        assert_eq!(fut.remove_done_callback(id_a), 1);
        assert_eq!(fut.remove_done_callback(id_a), 0);
        fut.set_result(()).unwrap();
        run_ready(lp);
        assert_eq!(*ran.borrow(), ["b"]);
    }

    fn future_callback_added_after_done_runs_via_call_soon(lp) {
        let fut = lp.create_future::<u8>();
        fut.set_result(3).unwrap();
        let ran = Rc::new(Cell::new(0));
        let r = ran.clone();
        fut.add_done_callback(move |f| r.set(f.result().unwrap()));
        assert_eq!(ran.get(), 0, "a callback added to a done future ran inline");
        run_ready(lp);
        assert_eq!(ran.get(), 3);
    }

    fn future_cancel_runs_done_callbacks(lp) {
        let fut = lp.create_future::<u8>();
        let saw = Rc::new(Cell::new(false));
        let s = saw.clone();
        fut.add_done_callback(move |f| s.set(f.cancelled()));
        assert!(fut.cancel());
        run_ready(lp);
        assert!(saw.get());
    }

    fn future_awaited_by_a_task_gets_the_result(lp) {
        let fut = lp.create_future::<String>();
        let setter = fut.clone();
        lp.call_later(0.01, move || setter.set_result("hello".to_string()).unwrap()).unwrap();
        let got = lp.run_until_complete(fut).unwrap();
        assert_eq!(got.unwrap(), "hello");
    }

    fn future_awaited_gets_the_exception(lp) {
        let fut = lp.create_future::<u8>();
        let setter = fut.clone();
        lp.call_soon(move || setter.set_exception(Error::runtime(RuntimeKind::Other, "nope")).unwrap()).unwrap();
        let got = lp.run_until_complete(fut.clone()).unwrap();
        assert!(matches!(got, Err(Error::Runtime { message: ref m, .. }) if m == "nope"), "{got:?}");
    }

    fn future_awaiting_a_cancelled_future_gives_cancelled(lp) {
        check_cancelled_while_awaited(lp, lp.create_future::<u8>());
    }

    fn future_awaiting_a_failed_future_keeps_its_error(lp) {
        // asyncio: every awaiter of a failed future gets the exception, and the future keeps
        // it. Only a successful value is moved out by an await (documented); an error is
        // `Clone` and must stay.
        let fut = lp.create_future::<u8>();
        let t1 = lp.create_task(fut.clone()).unwrap();
        let t2 = lp.create_task(fut.clone()).unwrap();
        run_ready(lp);
        fut.set_exception(Error::runtime(RuntimeKind::Other, "shared failure")).unwrap();
        let (r1, r2) = lp.run_until_complete(async move { (t1.await, t2.await) }).unwrap();
        for r in [&r1, &r2] {
            assert!(
                matches!(r, Ok(Err(Error::Runtime { message: ref m, .. })) if m == "shared failure"),
                "an awaiter did not get the error: {r1:?} / {r2:?}"
            );
        }
        assert!(
            matches!(fut.exception(), Ok(Some(Error::Runtime { .. }))),
            "the error was lost by the await: {:?}",
            fut.exception()
        );
        assert!(matches!(fut.result(), Err(Error::Runtime { .. })), "{:?}", fut.result());
    }

    fn future_awaited_by_several_tasks(lp) {
        // Every awaiter is woken; one receives the value (documented: the await moves it out).
        let fut = lp.create_future::<u8>();
        let t1 = lp.create_task(fut.clone()).unwrap();
        let t2 = lp.create_task(fut.clone()).unwrap();
        run_ready(lp);
        assert!(!t1.done() && !t2.done());
        fut.set_result(5).unwrap();
        assert!(run_until(lp, 5.0, || t1.done() && t2.done()), "awaiters not woken");
        let results = lp.run_until_complete(async move { (t1.await, t2.await) }).unwrap();
        let oks = [&results.0, &results.1].iter().filter(|r| matches!(r, Ok(Ok(5)))).count();
        assert_eq!(oks, 1, "{results:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

/// A future completed by another thread: it stores the waker, and the thread sets the flag
/// and wakes it.
struct CrossThread {
    state: CrossState,
    registered: Option<mpsc::Sender<()>>,
}

impl StdFuture for CrossThread {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.lock().unwrap();
        if state.0 {
            return Poll::Ready(());
        }
        state.1 = Some(cx.waker().clone());
        drop(state);
        if let Some(tx) = self.registered.take() {
            let _ = tx.send(());
        }
        Poll::Pending
    }
}

/// What [`CrossThread`] and the thread completing it share: the flag and the stored waker.
type CrossState = Arc<Mutex<(bool, Option<Waker>)>>;

/// A new [`CrossThread`], its shared state, and the receiver told when it is first polled.
fn cross_thread() -> (CrossThread, CrossState, mpsc::Receiver<()>) {
    let state = Arc::new(Mutex::new((false, None::<Waker>)));
    let (registered_tx, registered_rx) = mpsc::channel();
    (CrossThread { state: state.clone(), registered: Some(registered_tx) }, state, registered_rx)
}

/// Completes a [`CrossThread`] (from another thread): sets the flag and wakes the stored waker.
fn complete_cross_thread(state: &CrossState) {
    let waker = {
        let mut state = state.lock().unwrap();
        state.0 = true;
        state.1.take().expect("no waker stored")
    };
    waker.wake();
}

backend_tests! {
    fn create_task_output_via_run_until_complete(lp) {
        let task = lp.create_task(async { 6 * 7 }).unwrap();
        assert!(!task.done(), "a task does not run before the loop does");
        assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 42);
        // run_until_complete wraps a plain future in a task too.
        assert_eq!(lp.run_until_complete(async { "plain" }).unwrap(), "plain");
    }

    // BEHAVIOURS 31
    fn task_names(lp) {
        let a = lp.create_task(async {}).unwrap();
        let b = lp.create_task(async {}).unwrap();
        let (na, nb) = (task_number(&a), task_number(&b));
        assert!(nb > na, "Task-N numbers increase: {na} then {nb}");

        let named = lp.create_named_task("fetcher", async {}).unwrap();
        assert_eq!(named.get_name(), "fetcher");
        named.set_name("renamed");
        assert_eq!(named.get_name(), "renamed");
        // A clone of the handle sees the same task.
        assert_eq!(named.clone().get_name(), "renamed");
        lp.run_until_complete(async move {
            a.await.unwrap();
            b.await.unwrap();
            named.await.unwrap();
        })
        .unwrap();
    }

    fn task_exception_and_done(lp) {
        let task = lp.create_task(async { 1 }).unwrap();
        assert!(!task.done());
        assert!(!task.cancelled());
        let pending = task.exception();
        assert!(matches!(pending, Err(Error::InvalidState { kind: StateKind::NotDone, .. })), "exception() while pending");
        assert!(run_until(lp, 5.0, || task.done()));
        assert!(matches!(task.exception(), Ok(None)));
        assert!(!task.cancelled());
    }

    fn task_cancel_drops_the_future_at_its_next_step(lp) {
        let (task, dropped) = blocked_task(lp); // first step: the task is now blocked
        assert!(!task.done());
        assert!(!dropped.get());

        assert!(task.cancel());
        assert!(!dropped.get(), "cancel() drops the future at the next step, not inline");
        assert!(!task.cancelled(), "not cancelled until the step has run");
        run_ready(lp);
        assert!(dropped.get(), "the future was not dropped at the task's next step");
        assert!(task.done());
        assert!(task.cancelled());
        assert!(matches!(task.exception(), Ok(Some(Error::Cancelled))));
        assert!(!task.cancel(), "cancel() of a done task returns false");

        let got = lp.run_until_complete(task).unwrap();
        assert!(matches!(got, Err(Error::Cancelled)), "{got:?}");
    }

    fn task_cancelled_before_its_first_step_is_never_polled(lp) {
        let polled = Rc::new(Cell::new(false));
        let p = polled.clone();
        let (flag, dropped) = drop_flag();
        let task = lp.create_task(async move {
            let _guard = flag;
            p.set(true);
        })
        .unwrap();
        assert!(task.cancel());
        run_ready(lp);
        assert!(!polled.get());
        assert!(dropped.get());
        assert!(task.cancelled());
    }

    fn task_cancel_of_a_done_task_returns_false(lp) {
        let task = lp.create_task(async { 5 }).unwrap();
        assert!(run_until(lp, 5.0, || task.done()));
        assert!(!task.cancel());
        assert!(!task.cancelled());
        assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 5);
    }

    fn task_awaiting_a_cancelled_task_gets_cancelled(lp) {
        check_cancelled_while_awaited(lp, lp.create_task(pending_forever()).unwrap());
    }

    fn task_awaits_another_task(lp) {
        let inner_lp = lp.clone();
        let got = lp
            .run_until_complete(async move {
                let fut = inner_lp.create_future::<u32>();
                let setter = fut.clone();
                inner_lp.call_later(0.005, move || setter.set_result(20).unwrap()).unwrap();
                let inner = inner_lp.create_task(async move { fut.await.unwrap() + 1 }).unwrap();
                inner.await.unwrap() * 2
            })
            .unwrap();
        assert_eq!(got, 42);
    }

    fn task_woken_from_another_thread_wakes_a_blocked_loop(lp) {
        let (future, state, registered_rx) = cross_thread();
        let task = lp.create_task(future).unwrap();
        let waker_thread = std::thread::spawn(move || {
            registered_rx.recv_timeout(Duration::from_secs(10)).expect("task never polled");
            // Give the loop time to block in the kernel (it has nothing else to do).
            std::thread::sleep(Duration::from_millis(50));
            complete_cross_thread(&state);
        });
        // Watchdog: if the wake does not reach the loop, stop it instead of hanging.
        let stopper = lp.clone();
        let watchdog = lp.call_later(10.0, move || stopper.stop()).unwrap();
        let started = Instant::now();
        let got = lp.run_until_complete(task);
        watchdog.cancel();
        waker_thread.join().unwrap();
        assert!(matches!(got, Ok(Ok(()))), "the cross-thread wake did not reach the loop: {got:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "woken by the watchdog, not the waker");
    }

    fn task_waker_fired_before_the_loop_runs(lp) {
        // A wake from another thread that arrives while the loop is idle is kept for its next run.
        let (future, state, registered_rx) = cross_thread();
        let task = lp.create_task(future).unwrap();
        run_ready(lp);
        registered_rx.try_recv().expect("the task was not polled in the first iteration");
        std::thread::spawn(move || complete_cross_thread(&state)).join().unwrap();
        assert!(run_until(lp, 5.0, || task.done()), "the wake was lost");
    }

    fn task_panic_gives_error_panic_and_the_loop_keeps_running(lp) {
        let seen = capture_exceptions(lp);
        let task = lp.create_task(async { quiet_panic("task went boom") }).unwrap();
        let got = lp.run_until_complete(task.clone()).unwrap();
        assert!(matches!(got, Err(Error::Panic(ref m)) if m.contains("task went boom")), "{got:?}");
        assert!(task.done());
        assert!(!task.cancelled());
        assert!(matches!(task.exception(), Ok(Some(Error::Panic(_)))));
        // The loop still works.
        assert_eq!(lp.run_until_complete(async { 3 }).unwrap(), 3);
        drop(task);
        assert!(seen.borrow().is_empty(), "a retrieved panic was reported: {:?}", seen.borrow());
    }

    fn run_until_complete_of_a_panicking_future(lp) {
        // The panic is returned to the caller, so nobody else hears of it.
        let seen = capture_exceptions(lp);
        let got = lp.run_until_complete(async { quiet_panic("ruc boom") });
        assert!(matches!(got, Err(Error::Panic(ref m)) if m.contains("ruc boom")), "{got:?}");
        assert!(!lp.is_closed());
        assert_eq!(lp.run_until_complete(async { 1 }).unwrap(), 1);
        assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
    }

    // BEHAVIOURS 37
    fn unretrieved_task_panic_reported_when_handle_dropped_first(lp) {
        let seen = capture_exceptions(lp);
        let task = lp.create_named_task("lost-panic", async { quiet_panic("nobody looks") }).unwrap();
        drop(task);
        run_ready(lp);
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].message, "Task exception was never retrieved");
        assert_eq!(seen[0].task.as_deref(), Some("lost-panic"));
        assert!(matches!(seen[0].error, Some(Error::Panic(ref m)) if m.contains("nobody looks")), "{:?}", seen[0]);
    }

    // BEHAVIOURS 37
    fn unretrieved_task_panic_reported_when_handle_dropped_after(lp) {
        let seen = capture_exceptions(lp);
        let task = lp.create_named_task("late-drop", async { quiet_panic("dropped later") }).unwrap();
        let clone = task.clone();
        assert!(run_until(lp, 5.0, || task.done()));
        assert!(seen.borrow().is_empty(), "reported while a handle is alive: {:?}", seen.borrow());
        drop(task);
        assert!(seen.borrow().is_empty(), "reported while a clone is alive: {:?}", seen.borrow());
        drop(clone);
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].message, "Task exception was never retrieved");
        assert_eq!(seen[0].task.as_deref(), Some("late-drop"));
        assert!(matches!(seen[0].error, Some(Error::Panic(ref m)) if m.contains("dropped later")));
    }

    // BEHAVIOURS 37 (the other side: nothing to report)
    fn retrieved_cancelled_or_successful_tasks_are_not_reported(lp) {
        let seen = capture_exceptions(lp);
        // Retrieved through exception().
        let t1 = lp.create_task(async { quiet_panic("looked at") }).unwrap();
        assert!(run_until(lp, 5.0, || t1.done()));
        assert!(matches!(t1.exception(), Ok(Some(Error::Panic(_)))));
        drop(t1);
        // Succeeded, handle dropped.
        drop(lp.create_task(async { 1 }).unwrap());
        // Cancelled, handle dropped.
        let t3 = lp.create_task(pending_forever()).unwrap();
        t3.cancel();
        drop(t3);
        for _ in 0..3 {
            run_ready(lp);
        }
        assert_eq!(lp.pending_tasks(), 0);
        assert!(seen.borrow().is_empty(), "{:?}", seen.borrow());
    }

    fn tasks_run_in_fifo_order_of_scheduling(lp) {
        let order = Rc::new(RefCell::new(Vec::new()));
        let push = |tag: &'static str| {
            let order = order.clone();
            move || order.borrow_mut().push(tag)
        };
        lp.call_soon(push("cb1")).unwrap();
        let t1 = push("task1");
        let _t1 = lp.create_task(async move { t1() }).unwrap();
        lp.call_soon(push("cb2")).unwrap();
        let t2 = push("task2");
        let _t2 = lp.create_task(async move { t2() }).unwrap();
        let t3 = push("task3");
        let _t3 = lp.create_task(async move { t3() }).unwrap();
        run_ready(lp);
        assert_eq!(*order.borrow(), ["cb1", "task1", "cb2", "task2", "task3"]);
    }

    fn task_wakeups_are_fifo(lp) {
        // Tasks woken in order a, b, c run their next step in that order.
        let order = Rc::new(RefCell::new(Vec::new()));
        let futs: Vec<_> = (0..3).map(|_| lp.create_future::<()>()).collect();
        let mut tasks = Vec::new();
        for (i, fut) in futs.iter().enumerate() {
            let (fut, order) = (fut.clone(), order.clone());
            tasks.push(lp.create_task(async move {
                fut.await.unwrap();
                order.borrow_mut().push(i);
            }).unwrap());
        }
        run_ready(lp);
        for i in [2, 0, 1] {
            futs[i].set_result(()).unwrap();
        }
        run_ready(lp);
        assert_eq!(*order.borrow(), [2, 0, 1]);
    }

    fn task_done_callbacks(lp) {
        let fut = lp.create_future::<()>();
        let waiter = fut.clone();
        let task = lp.create_task(async move { waiter.await.unwrap() }).unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let (a, b, c) = (order.clone(), order.clone(), order.clone());
        task.add_done_callback(move || a.borrow_mut().push("a"));
        let id_b = task.add_done_callback(move || b.borrow_mut().push("b"));
        task.add_done_callback(move || c.borrow_mut().push("c"));
        assert!(task.remove_done_callback(id_b));
        assert!(!task.remove_done_callback(id_b));
        run_ready(lp);
        assert!(order.borrow().is_empty());

        // The task finishes in the next iteration; its callbacks go through call_soon and run
        // in the iteration after that.
        fut.set_result(()).unwrap();
        run_ready(lp);
        assert!(task.done());
        assert!(order.borrow().is_empty(), "done callbacks ran inline: {:?}", order.borrow());
        run_ready(lp);
        assert_eq!(*order.borrow(), ["a", "c"]);

        // Added after done: still through call_soon.
        let d = order.clone();
        task.add_done_callback(move || d.borrow_mut().push("d"));
        assert_eq!(order.borrow().len(), 2, "ran inline");
        run_ready(lp);
        assert_eq!(*order.borrow(), ["a", "c", "d"]);
    }

    fn task_done_callbacks_run_on_cancel_and_panic(lp) {
        let hits = Rc::new(RefCell::new(Vec::new()));
        let _seen = capture_exceptions(lp);
        let cancelled = lp.create_task(pending_forever()).unwrap();
        let panicked = lp.create_task(async { quiet_panic("cb panic") }).unwrap();
        let (h1, h2) = (hits.clone(), hits.clone());
        let c2 = cancelled.clone();
        cancelled.add_done_callback(move || h1.borrow_mut().push(("cancelled", c2.cancelled())));
        let p2 = panicked.clone();
        panicked.add_done_callback(move || h2.borrow_mut().push(("panicked", p2.cancelled())));
        cancelled.cancel();
        assert!(run_until(lp, 5.0, || hits.borrow().len() == 2));
        let mut hits = hits.borrow().clone();
        hits.sort();
        assert_eq!(hits, [("cancelled", true), ("panicked", false)]);
    }

    // BEHAVIOURS 30 (the TypeError half is not applicable: see the top of the file)
    fn task_factory_set_get_and_reset(lp) {
        assert!(lp.get_task_factory().is_none(), "default factory is None");
        let calls = Rc::new(Cell::new(0));
        let wrapped_polls = Rc::new(Cell::new(0));
        let saw_loop = Rc::new(Cell::new(false));
        lp.set_slow_callback_duration(Duration::from_millis(4321)); // identifies this loop
        let (c, w, s) = (calls.clone(), wrapped_polls.clone(), saw_loop.clone());
        let factory: TaskFactory = Rc::new(move |lp: &EventLoop, fut: LocalBoxFuture| -> LocalBoxFuture {
            c.set(c.get() + 1);
            s.set(lp.slow_callback_duration() == Duration::from_millis(4321));
            let w = w.clone();
            Box::pin(async move {
                w.set(w.get() + 1);
                fut.await
            })
        });
        lp.set_task_factory(Some(factory.clone()));
        let got = lp.get_task_factory().expect("factory set");
        assert!(Rc::ptr_eq(&got, &factory), "get_task_factory returns the factory set");
        drop(got);

        let t1 = lp.create_task(async { 1 }).unwrap();
        let t2 = lp.create_named_task("two", async { 2 }).unwrap();
        assert_eq!(calls.get(), 2);
        assert!(saw_loop.get(), "the factory was not given this loop");
        // A task made for run_until_complete goes through the factory as well (a plain
        // future given to run_until_complete is polled in place, as tokio's block_on does).
        let main = lp.create_task(async move { t1.await.unwrap() + t2.await.unwrap() }).unwrap();
        let sum = lp.run_until_complete(main).unwrap().unwrap();
        assert_eq!(sum, 3, "the wrapped futures still deliver their output");
        assert_eq!(calls.get(), 3);
        assert_eq!(wrapped_polls.get(), 3, "tasks did not run the future the factory returned");

        lp.set_task_factory(None);
        assert!(lp.get_task_factory().is_none());
        assert_eq!(lp.run_until_complete(async { 4 }).unwrap(), 4);
        assert_eq!(calls.get(), 3, "the factory is still used after set_task_factory(None)");
        assert_eq!(wrapped_polls.get(), 3);
    }

    // BEHAVIOURS 31
    fn create_named_task_with_custom_factory(lp) {
        let factory: TaskFactory = Rc::new(|_: &EventLoop, fut: LocalBoxFuture| fut);
        lp.set_task_factory(Some(factory));
        let task = lp.create_named_task("custom-named", async { 8 }).unwrap();
        assert_eq!(task.get_name(), "custom-named");
        let unnamed = lp.create_task(async {}).unwrap();
        task_number(&unnamed);
        assert_eq!(lp.run_until_complete(task).unwrap().unwrap(), 8);
    }

    // BEHAVIOURS 32
    fn create_task_on_closed_loop_drops_the_future(lp) {
        let factory_calls = Rc::new(Cell::new(0));
        let fc = factory_calls.clone();
        lp.set_task_factory(Some(Rc::new(move |_: &EventLoop, fut: LocalBoxFuture| -> LocalBoxFuture {
            fc.set(fc.get() + 1);
            fut
        })));
        lp.close().unwrap();
        let probe = Rc::new(());
        let p = probe.clone();
        let got = lp.create_task(async move {
            let _keep = p;
        });
        assert!(matches!(got, Err(Error::Closed)), "{got:?}");
        assert_eq!(Rc::strong_count(&probe), 1, "the future was not dropped");

        let p = probe.clone();
        let got = lp.create_named_task("n", async move {
            let _keep = p;
        });
        assert!(matches!(got, Err(Error::Closed)), "{got:?}");
        assert_eq!(Rc::strong_count(&probe), 1);

        let p = probe.clone();
        let got = lp.run_until_complete(async move {
            let _keep = p;
        });
        assert!(matches!(got, Err(Error::Closed)), "{got:?}");
        assert_eq!(Rc::strong_count(&probe), 1);
        assert_eq!(factory_calls.get(), 0, "the factory was called on a closed loop");
    }

    fn close_drops_pending_tasks(lp) {
        let (task, dropped) = blocked_task(lp);
        lp.close().unwrap();
        assert!(dropped.get(), "close() kept a pending task's future alive");
        assert!(task.done());
    }

    // BEHAVIOURS 3
    fn run_until_complete_stopped_before_the_future_completes(lp) {
        let stopper = lp.clone();
        lp.call_soon(move || stopper.stop()).unwrap();
        let never = lp.create_future::<()>();
        let got = lp.run_until_complete(never.clone());
        match got {
            Err(Error::Runtime { message: msg, .. }) => {
                assert!(msg.contains("stopped before Future completed"), "message: {msg:?}")
            }
            other => panic!("expected Error::Runtime, got {other:?}"),
        }
        assert!(!lp.is_running());
        // No stale stop is left: the loop runs normally afterwards.
        let fut = lp.create_future::<u8>();
        let setter = fut.clone();
        lp.call_later(0.01, move || setter.set_result(1).unwrap()).unwrap();
        assert_eq!(lp.run_until_complete(fut).unwrap().unwrap(), 1);
    }

    // BEHAVIOURS 1
    fn nested_run_until_complete_is_an_error(lp) {
        let inner_lp = lp.clone();
        let probe = Rc::new(());
        let p = probe.clone();
        let (nested, forever) = lp
            .run_until_complete(async move {
                let nested = inner_lp.run_until_complete(async move {
                    let _keep = p;
                });
                let forever = inner_lp.run_forever();
                (nested, forever)
            })
            .unwrap();
        assert!(matches!(nested, Err(Error::Runtime { .. })), "nested run_until_complete: {nested:?}");
        assert!(matches!(forever, Err(Error::Runtime { .. })), "nested run_forever: {forever:?}");
        assert_eq!(Rc::strong_count(&probe), 1, "the refused future was kept");
        // The outer run was not disturbed.
        assert_eq!(lp.run_until_complete(async { 2 }).unwrap(), 2);
    }
}
