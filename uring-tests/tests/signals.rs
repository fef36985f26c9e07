//! Unix signals (BEHAVIOURS 17): `add_signal_handler`, `remove_signal_handler`, and close.
//!
//! Signals and their dispositions are process-wide and the tests of this binary run on
//! parallel threads (both backends of one test too), so every test holds [`SERIAL`] for its
//! whole body. No test sends a signal after it restored the default disposition.
//!
//! Not applicable:
//! - 145, a string or a coroutine as the handler → TypeError: the types rule both out.
//! - 148, interrupter shutdown and the wakeup fd: Rust has neither; an `EINVAL` from
//!   `sigaction` is the "cannot be caught" error tested with SIGKILL and SIGSTOP.
//! - 149, KeyboardInterrupt: Rust has none; SIGINT without a handler terminates the process.
//! - 150, fork: not covered here.
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use ringloop::Signal::{self, SIGKILL, SIGSTOP, SIGUSR1, SIGUSR2, SIGWINCH};
use ringloop::{Error, EventLoop};
use uring_tests::{
    backend_tests, capture_exceptions, open_loop, quiet_panic, run_until, spin, watchdog,
};

/// Serialises the tests of this file (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The current disposition of `signal` (`SIG_DFL`, `SIG_IGN` or a handler's address).
fn disposition(signal: Signal) -> libc::sighandler_t {
    // SAFETY: an all-zero sigaction is valid; a null `act` only queries.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `old` is a valid, writable sigaction.
    assert_eq!(unsafe { libc::sigaction(signal as i32, std::ptr::null(), &mut old) }, 0);
    old.sa_sigaction
}

/// Sets `signal`'s disposition to `SIG_DFL` or `SIG_IGN`.
fn set_disposition(signal: Signal, handler: libc::sighandler_t) {
    // SAFETY: setting SIG_DFL/SIG_IGN with an empty mask is always valid for these signals.
    assert_ne!(unsafe { libc::signal(signal as i32, handler) }, libc::SIG_ERR);
}

fn raise(signal: Signal) {
    // SAFETY: only signals a test has a handler for are raised.
    assert_eq!(unsafe { libc::raise(signal as i32) }, 0);
}

fn kill_self(signal: Signal) {
    // SAFETY: as for `raise`.
    assert_eq!(unsafe { libc::kill(libc::getpid(), signal as i32) }, 0);
}

/// A handler that counts its runs and stops the loop.
fn counting_stopper(lp: &EventLoop) -> (Rc<Cell<usize>>, impl FnMut() + 'static) {
    let count = Rc::new(Cell::new(0));
    let (counter, stopper) = (count.clone(), lp.clone());
    (count, move || {
        counter.set(counter.get() + 1);
        stopper.stop();
    })
}

/// Runs `lp` (with only a far-away timer) while `send` delivers `signal` from another thread
/// after 10 ms; asserts the handler woke the loop promptly and ran exactly once.
fn assert_signal_wakes_blocked_loop(
    lp: &EventLoop,
    signal: Signal,
    send: impl FnOnce() + Send + 'static,
) {
    let (count, handler) = counting_stopper(lp);
    lp.add_signal_handler(signal, handler).unwrap();
    let far = lp.call_later(60.0, || {}).unwrap();
    let (dog, bit) = watchdog(lp, 5.0);
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        send();
    });
    let started = Instant::now();
    lp.run_forever().unwrap();
    let waited = started.elapsed();
    sender.join().unwrap();
    assert!(!bit.get(), "the signal did not wake the loop");
    assert!(waited < Duration::from_secs(2), "woken after {waited:?}");
    spin(lp, 0.05);
    assert_eq!(count.get(), 1, "one delivery, one run");
    far.cancel();
    dog.cancel();
    assert!(lp.remove_signal_handler(signal).unwrap());
}

backend_tests! {
    fn handler_runs_on_the_loop_with_its_args(lp) {
        let _serial = serial();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let (sink, name, number) = (seen.clone(), String::from("usr1"), 42);
        lp.add_signal_handler(SIGUSR1, move || sink.borrow_mut().push((name.clone(), number)))
            .unwrap();
        raise(SIGUSR1);
        assert!(seen.borrow().is_empty(), "the callback runs on the loop, not in the handler");
        assert!(run_until(lp, 5.0, || seen.borrow().len() == 1));
        kill_self(SIGUSR1);
        assert!(run_until(lp, 5.0, || seen.borrow().len() == 2));
        spin(lp, 0.02);
        assert_eq!(*seen.borrow(), vec![("usr1".to_string(), 42); 2]);
        assert!(lp.remove_signal_handler(SIGUSR1).unwrap());
    }

    fn signal_from_another_thread_wakes_a_blocked_loop(lp) {
        let _serial = serial();
        assert_signal_wakes_blocked_loop(lp, SIGUSR2, || kill_self(SIGUSR2));
    }

    fn signal_interrupting_the_loop_thread_wakes_it(lp) {
        let _serial = serial();
        // SAFETY: pthread_self has no preconditions.
        let loop_thread = unsafe { libc::pthread_self() };
        assert_signal_wakes_blocked_loop(lp, SIGUSR1, move || {
            // SAFETY: the loop thread is alive: it joins this thread before it returns.
            assert_eq!(unsafe { libc::pthread_kill(loop_thread, SIGUSR1 as i32) }, 0);
        });
    }

    fn numbers_that_are_not_signals_have_no_signal_value(_lp) {
        // asyncio's "sig N out of range" ValueError: the argument's type rules it out.
        for signum in [0, -1, 65, 1000, i32::MIN] {
            assert!(Signal::try_from(signum).is_err(), "{signum} is a Signal");
        }
    }

    fn sigkill_and_sigstop_cannot_be_caught(lp) {
        let _serial = serial();
        for signum in [SIGKILL, SIGSTOP] {
            match lp.add_signal_handler(signum, || {}) {
                Err(Error::Runtime { message: msg, .. }) => assert_eq!(msg, format!("sig {signum} cannot be caught")),
                other => panic!("add_signal_handler({signum}): {other:?}"),
            }
            assert_eq!(disposition(signum), libc::SIG_DFL);
        }
        assert!(!lp.remove_signal_handler(SIGKILL).unwrap());
        // The failures left the loop able to handle other signals.
        let (count, handler) = counting_stopper(lp);
        lp.add_signal_handler(SIGUSR1, handler).unwrap();
        raise(SIGUSR1);
        assert!(run_until(lp, 5.0, || count.get() == 1));
        assert!(lp.remove_signal_handler(SIGUSR1).unwrap());
    }

    fn remove_returns_true_then_false_and_restores_sig_dfl(lp) {
        let _serial = serial();
        assert_eq!(disposition(SIGUSR2), libc::SIG_DFL);
        let token = Rc::new(());
        let held = token.clone();
        lp.add_signal_handler(SIGUSR2, move || {
            let _ = &held;
        }).unwrap();
        let installed = disposition(SIGUSR2);
        assert!(installed != libc::SIG_DFL && installed != libc::SIG_IGN);
        assert!(lp.remove_signal_handler(SIGUSR2).unwrap());
        assert_eq!(disposition(SIGUSR2), libc::SIG_DFL);
        assert_eq!(Rc::strong_count(&token), 1, "the callback was dropped");
        assert!(!lp.remove_signal_handler(SIGUSR2).unwrap());
    }

    fn remove_restores_a_disposition_the_program_had_set(lp) {
        let _serial = serial();
        let signal = SIGWINCH;
        set_disposition(signal, libc::SIG_IGN);
        lp.add_signal_handler(signal, || {}).unwrap();
        assert_ne!(disposition(signal), libc::SIG_IGN);
        assert!(lp.remove_signal_handler(signal).unwrap());
        assert_eq!(disposition(signal), libc::SIG_IGN);
        set_disposition(signal, libc::SIG_DFL);
    }

    fn close_removes_every_handler(lp) {
        let _serial = serial();
        let signals = [SIGUSR1, SIGUSR2, SIGWINCH];
        let token = Rc::new(());
        for signum in signals {
            let held = token.clone();
            lp.add_signal_handler(signum, move || {
            let _ = &held;
        }).unwrap();
            assert_ne!(disposition(signum), libc::SIG_DFL);
        }
        lp.close().unwrap();
        for signum in signals {
            assert_eq!(disposition(signum), libc::SIG_DFL, "signal {signum}");
        }
        assert_eq!(Rc::strong_count(&token), 1, "the callbacks were dropped");
        assert!(!lp.remove_signal_handler(SIGUSR1).unwrap());
        assert!(matches!(lp.add_signal_handler(SIGUSR1, || {}), Err(Error::Closed)));
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL);
    }

    fn a_loop_without_handlers_leaves_signals_alone(lp) {
        let _serial = serial();
        set_disposition(SIGUSR1, libc::SIG_IGN);
        let (count, handler) = counting_stopper(lp);
        lp.call_soon(handler).unwrap();
        lp.run_forever().unwrap();
        assert_eq!(count.get(), 1);
        assert!(!lp.remove_signal_handler(SIGUSR1).unwrap());
        lp.close().unwrap();
        assert_eq!(disposition(SIGUSR1), libc::SIG_IGN);
        set_disposition(SIGUSR1, libc::SIG_DFL);
    }

    fn a_panicking_handler_goes_to_the_exception_handler(lp) {
        let _serial = serial();
        let errors = capture_exceptions(lp);
        let count = Rc::new(Cell::new(0));
        let counter = count.clone();
        lp.add_signal_handler(SIGUSR2, move || {
            counter.set(counter.get() + 1);
            quiet_panic("boom");
        })
        .unwrap();
        raise(SIGUSR2);
        assert!(run_until(lp, 5.0, || errors.borrow().len() == 1));
        {
            let errors = errors.borrow();
            assert!(errors[0].message.starts_with("Exception in callback"), "{}", errors[0].message);
            assert!(matches!(&errors[0].error, Some(Error::Panic(msg)) if msg == "boom"));
        }
        raise(SIGUSR2);
        assert!(run_until(lp, 5.0, || count.get() == 2), "the handler stays after a panic");
        assert!(lp.remove_signal_handler(SIGUSR2).unwrap());
    }

    fn a_second_add_replaces_the_handler(lp) {
        let _serial = serial();
        let (first, second) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let counter = first.clone();
        lp.add_signal_handler(SIGUSR1, move || counter.set(counter.get() + 1)).unwrap();
        let counter = second.clone();
        lp.add_signal_handler(SIGUSR1, move || counter.set(counter.get() + 1)).unwrap();
        assert_eq!(Rc::strong_count(&first), 1, "the replaced callback was dropped");
        raise(SIGUSR1);
        assert!(run_until(lp, 5.0, || second.get() == 1));
        assert_eq!(first.get(), 0);
        assert!(lp.remove_signal_handler(SIGUSR1).unwrap());
        assert!(!lp.remove_signal_handler(SIGUSR1).unwrap());
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL);
    }

    fn a_handler_may_remove_itself(lp) {
        let _serial = serial();
        // The handler's assert panics into the exception handler: seen here.
        let reports = capture_exceptions(lp);
        let count = Rc::new(Cell::new(0));
        let (counter, this_loop) = (count.clone(), lp.clone());
        lp.add_signal_handler(SIGUSR2, move || {
            counter.set(counter.get() + 1);
            assert!(this_loop.remove_signal_handler(SIGUSR2).unwrap());
        })
        .unwrap();
        raise(SIGUSR2);
        assert!(run_until(lp, 5.0, || count.get() == 1));
        spin(lp, 0.02);
        assert_eq!(count.get(), 1);
        assert_eq!(disposition(SIGUSR2), libc::SIG_DFL);
        assert!(reports.borrow().is_empty(), "{:?}", reports.borrow());
    }

    fn a_signal_reaches_every_loop_that_handles_it(lp) {
        let _serial = serial();
        let backend = lp.backend();
        let (ready_tx, ready_rx) = mpsc::channel();
        let other = thread::spawn(move || {
            let Some(other) = open_loop(backend, "a_signal_reaches_every_loop_that_handles_it") else {
                ready_tx.send(()).unwrap();
                return None;
            };
            let (count, handler) = counting_stopper(&other);
            other.add_signal_handler(SIGUSR1, handler).unwrap();
            let (_dog, bit) = watchdog(&other, 5.0);
            ready_tx.send(()).unwrap();
            other.run_forever().unwrap();
            other.close().unwrap();
            Some((count.get(), bit.get()))
        });
        ready_rx.recv().unwrap();
        let (count, handler) = counting_stopper(lp);
        lp.add_signal_handler(SIGUSR1, handler).unwrap();
        kill_self(SIGUSR1);
        assert!(run_until(lp, 5.0, || count.get() == 1));
        if let Some((other_count, other_dog)) = other.join().unwrap() {
            assert!(!other_dog, "the other loop was not woken");
            assert_eq!(other_count, 1);
        }
        // The other loop closed: the handler stays installed for this one.
        assert_ne!(disposition(SIGUSR1), libc::SIG_DFL);
        raise(SIGUSR1);
        assert!(run_until(lp, 5.0, || count.get() == 2));
        assert!(lp.remove_signal_handler(SIGUSR1).unwrap());
        assert_eq!(disposition(SIGUSR1), libc::SIG_DFL);
    }
}
