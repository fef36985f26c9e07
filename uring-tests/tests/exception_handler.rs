//! The exception handler and debug mode: BEHAVIOURS section 4 (items 34–39), plus item 29's
//! context for a panicking callback.
//!
//! The tests that look at log output use the harness's capturing logger
//! ([`uring_tests::install_logger`]): each reads only its own thread's records (the loop runs on
//! the test's thread), so tests running in parallel do not see each other's logs.
//!
//! Not applicable in Rust:
//! - 34, last part (`set_exception_handler(non-callable)` → TypeError): the handler is a
//!   `F: Fn(&EventLoop, &ExceptionContext)`, so a non-callable does not type-check.
//! - 38, "ignored under `-E`": there is no interpreter flag; `RINGLOOP_DEBUG` stands in for
//!   `PYTHONASYNCIODEBUG` and is always honoured.
//! - 39 (a transport's fatal error from an OSError subclass is not logged): ringloop has no
//!   transports yet, so there is nothing to test; it belongs with the transport tests.
//! - 29's `source_traceback` (debug mode only): Rust has no traceback of the scheduling site.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use ringloop::{Error, EventLoop, ExceptionContext, RuntimeKind};
use uring_tests::{
    backend_tests, capture_exceptions, install_logger, logged, quiet_panic, run_ready, run_until,
    take_my_logs, Captured, LOGGER_PANIC_MARKER,
};

/// No custom handler (the type parameter of `None` is irrelevant).
fn no_handler() -> Option<fn(&EventLoop, &ExceptionContext)> {
    None
}

// ---------------------------------------------------------------------------------------------
// Exception handler
// ---------------------------------------------------------------------------------------------

backend_tests! {
    // BEHAVIOURS 34
    fn exception_handler_is_none_by_default(lp) {
        assert!(lp.get_exception_handler().is_none());
    }

    // BEHAVIOURS 34, 29
    fn custom_handler_gets_loop_and_context_for_a_panicking_callback(lp) {
        install_logger();
        take_my_logs();
        lp.set_slow_callback_duration(Duration::from_millis(9876)); // identifies this loop
        let seen = Rc::new(RefCell::new(Vec::new()));
        let sink = seen.clone();
        lp.set_exception_handler(Some(move |lp: &EventLoop, ctx: &ExceptionContext| {
            sink.borrow_mut().push((
                lp.slow_callback_duration() == Duration::from_millis(9876) && lp.is_running(),
                ctx.clone(),
            ));
        }));
        assert!(lp.get_exception_handler().is_some());

        let after = Rc::new(Cell::new(false));
        let a = after.clone();
        let bad = lp.call_soon(|| quiet_panic("callback boom")).unwrap();
        lp.call_soon(move || a.set(true)).unwrap();
        run_ready(lp);

        assert!(after.get(), "the loop did not go on to the next callback");
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:?}");
        let (right_loop, ctx) = &seen[0];
        assert!(right_loop, "the handler was not given the running loop");
        assert!(ctx.message.starts_with("Exception in callback"), "message: {:?}", ctx.message);
        assert!(matches!(ctx.error, Some(Error::Panic(ref m)) if m.contains("callback boom")), "{ctx:?}");
        let handle = ctx.handle.as_ref().expect("context has the handle");
        assert_eq!(handle.callback_name(), bad.callback_name());
        // The custom handler replaces the default one: nothing logged.
        let logs = take_my_logs();
        assert!(logs.iter().all(|r| r.level > log::Level::Warn), "{logs:?}");
        assert!(!lp.is_closed());
    }

    fn custom_handler_for_a_panicking_timer(lp) {
        let seen = capture_exceptions(lp);
        let timer = lp.call_later(0.001, || quiet_panic("timer boom")).unwrap();
        assert!(run_until(lp, 5.0, || !seen.borrow().is_empty()));
        let seen = seen.borrow();
        assert!(seen[0].message.starts_with("Exception in callback"), "{:?}", seen[0].message);
        assert!(matches!(seen[0].error, Some(Error::Panic(ref m)) if m.contains("timer boom")));
        assert_eq!(seen[0].handle.as_ref().unwrap().callback_name(), timer.handle().callback_name());
    }

    // BEHAVIOURS 35, 36 (second half: the default handler gets the original context)
    fn panicking_handler_is_logged_and_the_loop_carries_on(lp) {
        install_logger();
        take_my_logs();
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        lp.set_exception_handler(Some(move |_: &EventLoop, _: &ExceptionContext| {
            c.set(c.get() + 1);
            quiet_panic("handler itself broke");
        }));
        let ran = Rc::new(Cell::new(0));
        let (r1, r2) = (ran.clone(), ran.clone());
        lp.call_soon(|| quiet_panic("first failure")).unwrap();
        lp.call_soon(move || r1.set(r1.get() + 1)).unwrap();
        run_ready(lp);
        lp.call_soon(move || r2.set(r2.get() + 1)).unwrap();
        run_ready(lp);
        assert_eq!(ran.get(), 2, "the loop did not carry on");
        assert_eq!(calls.get(), 1);

        let logs = take_my_logs();
        let report = logged(&logs, "Unhandled error in exception handler");
        assert_eq!(report.level, log::Level::Error);
        assert!(report.text.contains("handler itself broke"), "the handler's panic: {}", report.text);
        assert!(report.text.contains("Exception in callback"), "the original context: {}", report.text);
        assert!(report.text.contains("first failure"), "the original error: {}", report.text);

        // The handler is also protected when called directly.
        lp.call_exception_handler(ExceptionContext::new("direct call"));
        assert_eq!(calls.get(), 2);
        let logs = take_my_logs();
        assert!(logs.iter().any(|r| r.text.contains("Unhandled error in exception handler")
            && r.text.contains("direct call")), "{logs:?}");
    }

    fn call_exception_handler_directly(lp) {
        let seen = capture_exceptions(lp);
        let ctx = ExceptionContext::new("something odd").with_error(Error::runtime(RuntimeKind::Other, "detail"));
        lp.call_exception_handler(ctx);
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].message, "something odd");
        assert!(matches!(seen[0].error, Some(Error::Runtime { message: ref m, .. }) if m == "detail"));
        assert!(seen[0].handle.is_none());
    }

    // BEHAVIOURS 34
    fn setting_none_restores_the_default_handler(lp) {
        install_logger();
        take_my_logs();
        let seen = capture_exceptions(lp);
        lp.set_exception_handler(no_handler());
        assert!(lp.get_exception_handler().is_none());
        lp.call_soon(|| quiet_panic("after reset")).unwrap();
        run_ready(lp);
        assert!(seen.borrow().is_empty(), "the removed handler was called");
        let logs = take_my_logs();
        let logged = logs
            .iter()
            .find(|r| r.text.starts_with("Exception in callback"))
            .unwrap_or_else(|| panic!("the default handler did not log: {logs:?}"));
        assert_eq!(logged.level, log::Level::Error);
        assert!(logged.text.contains("after reset"), "{}", logged.text);
        assert!(!lp.is_closed());
    }

    fn default_exception_handler_callable_directly(lp) {
        install_logger();
        take_my_logs();
        // Even with a custom handler installed, the default one can be called (a custom
        // handler deferring to it).
        let seen = capture_exceptions(lp);
        let ctx = ExceptionContext::new("deferred to default")
            .with_error(Error::runtime(RuntimeKind::Other, "the cause"))
            .with_task("task-x");
        lp.default_exception_handler(&ctx);
        assert!(seen.borrow().is_empty());
        let logs = take_my_logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert_eq!(logs[0].level, log::Level::Error);
        assert_eq!(logs[0].target, "ringloop");
        assert!(logs[0].text.starts_with("deferred to default"), "{}", logs[0].text);
        assert!(logs[0].text.contains("the cause"), "{}", logs[0].text);
        assert!(logs[0].text.contains("task-x"), "{}", logs[0].text);
    }

    // BEHAVIOURS 36
    fn default_handler_failure_is_logged_and_swallowed(lp) {
        install_logger();
        take_my_logs();
        // Default handler in use: its logging fails.
        lp.call_exception_handler(ExceptionContext::new(LOGGER_PANIC_MARKER));
        let logs = take_my_logs();
        assert!(logs.iter().any(|r| r.text.contains("Exception in default exception handler")
            && r.level == log::Level::Error), "{logs:?}");

        // A custom handler fails, then the default handler fails on its report.
        lp.set_exception_handler(Some(|_: &EventLoop, _: &ExceptionContext| quiet_panic("custom broke")));
        lp.call_exception_handler(ExceptionContext::new(LOGGER_PANIC_MARKER));
        let logs = take_my_logs();
        assert!(logs.iter().any(|r| r.text.contains("Exception in default exception handler")), "{logs:?}");

        // Inside the loop too: the loop carries on.
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        lp.set_exception_handler(no_handler());
        lp.call_soon(|| quiet_panic(LOGGER_PANIC_MARKER)).unwrap();
        lp.call_soon(move || r.set(true)).unwrap();
        run_ready(lp);
        assert!(ran.get());
        let logs = take_my_logs();
        assert!(logs.iter().any(|r| r.text.contains("Exception in default exception handler")), "{logs:?}");
    }

    // BEHAVIOURS 37, with the default handler
    fn unretrieved_task_panic_logged_by_default_handler(lp) {
        install_logger();
        take_my_logs();
        drop(lp.create_named_task("forgotten", async { quiet_panic("never looked at") }).unwrap());
        run_ready(lp);
        let logs = take_my_logs();
        let report = logged(&logs, "exception was never retrieved");
        assert_eq!(report.level, log::Level::Error);
        assert!(report.text.contains("forgotten"), "{}", report.text);
        assert!(report.text.contains("never looked at"), "{}", report.text);
    }
}

// ---------------------------------------------------------------------------------------------
// Debug mode
// ---------------------------------------------------------------------------------------------

/// Serializes the tests that read the default debug mode with the one that sets
/// `RINGLOOP_DEBUG` (the environment is process-wide).
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Sleeps long enough to be "slow" with a zero threshold, and measurably so.
fn slow() {
    thread::sleep(Duration::from_millis(20));
}

fn slow_warnings(logs: &[Captured]) -> Vec<&Captured> {
    logs.iter()
        .filter(|r| {
            r.level == log::Level::Warn
                && r.text.starts_with("Executing ")
                && r.text.contains(" took ")
        })
        .collect()
}

backend_tests! {
    // BEHAVIOURS 38
    fn set_debug_get_debug_round_trip(lp) {
        let _env = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if std::env::var_os("RINGLOOP_DEBUG").is_none() {
            // The loop was made before the lock was taken: only meaningful without the env.
            let fresh = EventLoop::with_backend(lp.backend()).unwrap();
            assert!(!fresh.get_debug(), "debug is off by default");
            fresh.close().unwrap();
        }
        lp.set_debug(true);
        assert!(lp.get_debug());
        lp.set_debug(false);
        assert!(!lp.get_debug());
        assert_eq!(lp.slow_callback_duration(), Duration::from_millis(100), "asyncio's default 0.1 s");
        lp.set_slow_callback_duration(Duration::from_millis(5));
        assert_eq!(lp.slow_callback_duration(), Duration::from_millis(5));
    }

    // BEHAVIOURS 38
    fn slow_callbacks_tasks_and_timers_are_logged_in_debug_mode(lp) {
        install_logger();
        take_my_logs();
        lp.set_debug(true);
        lp.set_slow_callback_duration(Duration::ZERO);

        let cb = lp.call_soon(slow).unwrap();
        run_ready(lp);
        let logs = take_my_logs();
        let warnings = slow_warnings(&logs);
        let handle_warning = warnings
            .iter()
            .find(|r| r.text.contains(cb.callback_name()))
            .unwrap_or_else(|| panic!("no slow-callback warning for the callback: {logs:?}"));
        assert!(handle_warning.text.starts_with("Executing <Handle"), "{}", handle_warning.text);
        assert!(handle_warning.text.contains("seconds"), "{}", handle_warning.text);
        assert_eq!(handle_warning.target, "ringloop");

        let task = lp.create_named_task("slow-task-step", async { slow() }).unwrap();
        assert!(run_until(lp, 5.0, || task.done()));
        let logs = take_my_logs();
        assert!(slow_warnings(&logs).iter().any(|r| r.text.contains("Executing <Task slow-task-step")),
            "no slow-task warning: {logs:?}");

        let timer = lp.call_later(0.001, slow).unwrap();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        lp.call_later(0.002, move || f.set(true)).unwrap();
        assert!(run_until(lp, 5.0, || fired.get()));
        let logs = take_my_logs();
        assert!(slow_warnings(&logs).iter().any(|r| r.text.contains(timer.handle().callback_name())),
            "no slow-callback warning for the timer: {logs:?}");
    }

    // BEHAVIOURS 38 (the other side)
    fn no_slow_warnings_without_debug_or_under_the_threshold(lp) {
        install_logger();
        take_my_logs();
        lp.set_debug(false);
        lp.set_slow_callback_duration(Duration::ZERO);
        lp.call_soon(slow).unwrap();
        let task = lp.create_task(async { slow() }).unwrap();
        assert!(run_until(lp, 5.0, || task.done()));
        let logs = take_my_logs();
        assert!(slow_warnings(&logs).is_empty(), "debug off: {logs:?}");

        lp.set_debug(true);
        lp.set_slow_callback_duration(Duration::from_secs(10));
        lp.call_soon(slow).unwrap();
        run_ready(lp);
        let logs = take_my_logs();
        assert!(slow_warnings(&logs).is_empty(), "under the threshold: {logs:?}");
    }

    fn close_in_debug_mode_warns_about_pending_tasks(lp) {
        install_logger();
        take_my_logs();
        lp.set_debug(true);
        let _task = lp.create_named_task("still-pending", std::future::pending::<()>()).unwrap();
        run_ready(lp);
        lp.close().unwrap();
        let logs = take_my_logs();
        assert!(logs.iter().any(|r| r.level == log::Level::Warn
            && r.text.contains("destroyed but it is pending")
            && r.text.contains("still-pending")), "{logs:?}");
    }
}

// BEHAVIOURS 38: the default comes from the environment (asyncio's PYTHONASYNCIODEBUG).
// The environment is process-wide: ENV_LOCK keeps the default-off check above from racing
// with this test; other tests in this file set debug mode explicitly when it matters.
#[test]
fn ringloop_debug_env_turns_debug_on_for_new_loops() {
    let _env = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let saved = std::env::var_os("RINGLOOP_DEBUG");
    let test = "ringloop_debug_env_turns_debug_on_for_new_loops";
    let Some(backend) = uring_tests::built_backends()
        .into_iter()
        .find(|&b| uring_tests::open_loop(b, test).is_some_and(|lp| lp.close().is_ok()))
    else {
        return; // no backend on this kernel: open_loop printed the skip
    };
    let debug_of_new_loop = || {
        let lp = EventLoop::with_backend(backend).unwrap();
        let debug = lp.get_debug();
        lp.close().unwrap();
        debug
    };
    std::env::set_var("RINGLOOP_DEBUG", "1");
    let on = debug_of_new_loop();
    std::env::set_var("RINGLOOP_DEBUG", "");
    let empty = debug_of_new_loop();
    std::env::remove_var("RINGLOOP_DEBUG");
    let unset = debug_of_new_loop();
    match saved {
        Some(v) => std::env::set_var("RINGLOOP_DEBUG", v),
        None => std::env::remove_var("RINGLOOP_DEBUG"),
    }
    assert!(on, "RINGLOOP_DEBUG=1 did not turn debug mode on");
    assert!(!empty, "an empty RINGLOOP_DEBUG turned debug mode on");
    assert!(!unset, "debug mode on without RINGLOOP_DEBUG");
}
