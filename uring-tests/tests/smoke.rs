//! Smoke: the loop starts, runs a callback and stops, on each backend.
use std::cell::Cell;
use std::rc::Rc;
use uring_tests::backend_tests;

backend_tests! {
    fn call_soon_then_stop_runs_once(lp) {
        let ran = Rc::new(Cell::new(0));
        let r = ran.clone();
        lp.call_soon(move || r.set(r.get() + 1)).unwrap();
        let stopper = lp.clone();
        lp.call_soon(move || stopper.stop()).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(ran.get(), 1);
    }
}
