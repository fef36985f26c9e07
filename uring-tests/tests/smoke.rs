//! Smoke: the loop starts, runs a callback and stops, on each backend.
use uring_tests::{backend_tests, counting_callback, run_ready};

backend_tests! {
    fn call_soon_then_stop_runs_once(lp) {
        let (ran, count) = counting_callback();
        lp.call_soon(count).unwrap();
        run_ready(lp);
        assert_eq!(ran.get(), 1);
    }
}
