//! Ready callbacks (BEHAVIOURS 13, 14, 26, 29): `call_soon`, `Handle`, FIFO order,
//! cancellation, what a callback captures, and panics in callbacks.
//!
//! Not applicable:
//! - BEHAVIOURS 14, second half ("queueing an already-cancelled handle is a no-op"): there is no
//!   public way to queue an existing `Handle`; every call makes a new one.
//! - BEHAVIOURS 16 (`call_soon(1)`, coroutines passed as callbacks → TypeError): the callback is
//!   `F: FnOnce()`; a non-callable or an `async` block does not compile.
//! - BEHAVIOURS 17 (debug mode: `call_soon`/`call_later`/`call_at` from another thread →
//!   RuntimeError): `EventLoop` is `!Send` and `!Sync`, so no other thread can hold one; other
//!   threads get a `LoopHandle`, which only offers thread-safe calls.
//! - BEHAVIOURS 29, `source_traceback` in debug mode: Rust has no source traceback object; the
//!   context carries the message, the error (`Error::Panic`) and the handle.
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use ringloop::Error;
use uring_tests::{backend_tests, capture_exceptions, log, rec, rec_then_schedule, run_ready};

fn explode(msg: &str) {
    panic!("{msg}")
}

backend_tests! {
    // BEHAVIOURS 13
    fn callbacks_run_in_fifo_order(lp) {
        let order = log();
        for i in 0..100 {
            lp.call_soon(rec(&order, i)).unwrap();
        }
        run_ready(lp);
        assert_eq!(*order.borrow(), (0..100).collect::<Vec<_>>());
    }

    // BEHAVIOURS 13: both APIs mixed on the loop thread; the captured values are the "args".
    fn threadsafe_and_call_soon_mixed_on_the_loop_thread_keep_fifo(lp) {
        let words = Rc::new(RefCell::new(Vec::new()));
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = shared.clone();
        lp.call_soon_threadsafe(move || sink.lock().unwrap().push("hello")).unwrap();
        let (sink, merged) = (shared.clone(), words.clone());
        lp.call_soon(move || {
            sink.lock().unwrap().push("world");
            merged.borrow_mut().extend(sink.lock().unwrap().drain(..));
        })
        .unwrap();
        // The LoopHandle path from the loop thread, then call_soon: still FIFO.
        let sink = shared.clone();
        lp.handle().call_soon_threadsafe(move || sink.lock().unwrap().push("again")).unwrap();
        let (sink, merged) = (shared.clone(), words.clone());
        lp.call_soon(move || {
            sink.lock().unwrap().push("and again");
            merged.borrow_mut().extend(sink.lock().unwrap().drain(..));
        })
        .unwrap();
        run_ready(lp);
        assert_eq!(*words.borrow(), ["hello", "world", "again", "and again"]);
    }

    // BEHAVIOURS 14
    fn cancelled_handle_is_skipped_and_neighbours_keep_their_order(lp) {
        let order = log();
        lp.call_soon(rec(&order, 10)).unwrap();
        let h = lp.call_soon(rec(&order, 2)).unwrap();
        lp.call_soon(rec(&order, 1)).unwrap();
        assert!(!h.cancelled());
        h.cancel();
        assert!(h.cancelled());
        run_ready(lp);
        assert_eq!(*order.borrow(), [10, 1]);
    }

    fn cancel_from_an_earlier_callback_of_the_same_batch(lp) {
        let order = log();
        let later: Rc<RefCell<Option<ringloop::Handle>>> = Rc::new(RefCell::new(None));
        let (target, sink) = (later.clone(), order.clone());
        lp.call_soon(move || {
            sink.borrow_mut().push("first");
            if let Some(handle) = target.borrow().as_ref() {
                handle.cancel();
            }
        })
        .unwrap();
        *later.borrow_mut() = Some(lp.call_soon(rec(&order, "cancelled")).unwrap());
        lp.call_soon(rec(&order, "last")).unwrap();
        run_ready(lp);
        assert_eq!(*order.borrow(), ["first", "last"]);
    }

    fn cancel_is_idempotent_and_does_nothing_after_the_run(lp) {
        let ran = Rc::new(Cell::new(0));
        let count = ran.clone();
        let h = lp.call_soon(move || count.set(count.get() + 1)).unwrap();
        run_ready(lp);
        assert_eq!(ran.get(), 1);
        h.cancel();
        h.cancel();
        run_ready(lp);
        assert_eq!(ran.get(), 1, "exactly once");
        let g = lp.call_soon(|| unreachable!("cancelled")).unwrap();
        g.cancel();
        g.cancel();
        assert!(g.cancelled());
        run_ready(lp);
    }

    fn callbacks_scheduled_by_callbacks_run_at_the_next_iteration(lp) {
        let order = log();
        lp.call_soon(rec_then_schedule(lp, &order, "outer", "inner")).unwrap();
        lp.stop(); // one iteration
        lp.run_forever().unwrap();
        assert_eq!(*order.borrow(), ["outer"]);
        assert_eq!(lp.ready_len(), 1);
        lp.stop();
        lp.run_forever().unwrap();
        assert_eq!(*order.borrow(), ["outer", "inner"]);
    }

    // BEHAVIOURS 26 (for `call_soon` handles)
    fn cancel_drops_what_the_callback_captured_at_once(lp) {
        let captured = Rc::new(());
        let c = captured.clone();
        let h = lp.call_soon(move || drop(c)).unwrap();
        assert_eq!(Rc::strong_count(&captured), 2);
        h.cancel();
        assert_eq!(Rc::strong_count(&captured), 1, "released by cancel, before any iteration");
        assert_eq!(lp.ready_len(), 1, "the handle itself waits in the queue until skipped");
        run_ready(lp);
        assert_eq!(lp.ready_len(), 0);
    }

    // BEHAVIOURS 26
    fn captured_values_are_dropped_once_the_callback_ran(lp) {
        let fut = Rc::new(lp.create_future::<i32>());
        let c = fut.clone();
        let h = lp.call_soon(move || c.set_result(1).unwrap()).unwrap();
        assert_eq!(Rc::strong_count(&fut), 2);
        run_ready(lp);
        assert_eq!(fut.result().unwrap(), 1);
        assert_eq!(Rc::strong_count(&fut), 1, "no leak although the handle is still held");
        drop(h);
    }

    // BEHAVIOURS 29
    fn panic_in_a_callback_calls_the_exception_handler(lp) {
        let reports = capture_exceptions(lp);
        let order = log();
        let h = lp.call_soon(|| explode("boom-29")).unwrap();
        lp.call_soon(rec(&order, "next")).unwrap();
        lp.call_later(0.0, || explode("timer-29")).unwrap();
        let after = order.clone();
        lp.call_later(0.0, rec(&after, "next timer")).unwrap();
        let stopper = lp.clone();
        lp.call_later(0.01, move || stopper.stop()).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(*order.borrow(), ["next", "next timer"], "the loop keeps running");
        assert!(!lp.is_closed());
        let reports = reports.borrow();
        assert_eq!(reports.len(), 2, "{reports:?}");
        for (ctx, msg) in reports.iter().zip(["boom-29", "timer-29"]) {
            assert!(ctx.message.starts_with("Exception in callback"), "{}", ctx.message);
            assert!(
                matches!(&ctx.error, Some(Error::Panic(m)) if m.contains(msg)),
                "{:?}",
                ctx.error
            );
            assert!(ctx.handle.is_some(), "the context names the handle");
        }
        let reported = reports[0].handle.as_ref().unwrap();
        assert_eq!(reported.callback_name(), h.callback_name());
    }

    fn panic_in_a_callback_with_the_default_handler_keeps_running(lp) {
        assert!(lp.get_exception_handler().is_none());
        let order = log();
        lp.call_soon(|| explode("default-handler")).unwrap();
        lp.call_soon(rec(&order, "still running")).unwrap();
        run_ready(lp);
        assert_eq!(*order.borrow(), ["still running"]);
    }
}
