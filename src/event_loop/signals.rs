//! Unix signals on the loop: asyncio's `add_signal_handler` and `remove_signal_handler`.

use std::collections::BTreeMap;

use nix::sys::signal::Signal;

use super::{EventLoop, Handle, Ready};
use crate::error::{Error, Result};
use crate::signal::{signals_in, Registration};

/// A loop's signal handlers: the callbacks, and its entry in the process-wide table while it
/// has at least one.
#[derive(Default)]
pub(crate) struct SignalHandlers {
    /// The process-wide registration; `None` while the loop handles no signal, so a loop that
    /// never adds a handler never touches the process's signal state.
    registration: Option<Registration>,
    /// The callback of each handled signal, as a repeating handle.
    handlers: BTreeMap<Signal, Handle>,
}

impl EventLoop {
    /// Runs `callback` on the loop each time `signal` is delivered to the process
    /// (asyncio's `add_signal_handler`; arguments are whatever the closure captures). A
    /// handler for the same signal replaces the previous one.
    ///
    /// The callback runs as a `call_soon` callback on this loop's thread: a panic goes to the
    /// exception handler. Deliveries that arrive before the loop gets to them are coalesced:
    /// the callback runs once per burst (the kernel coalesces pending standard signals too). A
    /// signal arriving while the loop waits in the kernel wakes it at once. When several loops
    /// handle the same signal, every one of them runs its callback.
    ///
    /// `signal` is a [`Signal`](crate::Signal) (nix's, re-exported): only real signals can be
    /// named. The real-time signals (`SIGRTMIN..=SIGRTMAX`) have no `Signal` value and cannot
    /// be handled here.
    ///
    /// Errors: [`Error::Runtime`] (`"sig SIGKILL cannot be caught"`) for SIGKILL and SIGSTOP;
    /// [`Error::Closed`] on a closed loop.
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use ringloop::Signal;
    ///
    /// let event_loop = ringloop::EventLoop::new().unwrap();
    /// let (stopper, caught) = (event_loop.clone(), Rc::new(Cell::new(0)));
    /// let count = caught.clone();
    /// event_loop
    ///     .add_signal_handler(Signal::SIGUSR1, move || {
    ///         count.set(count.get() + 1);
    ///         stopper.stop();
    ///     })
    ///     .unwrap();
    /// nix::sys::signal::raise(Signal::SIGUSR1).unwrap();
    /// event_loop.run_forever().unwrap();
    /// assert_eq!(caught.get(), 1);
    /// assert!(event_loop.remove_signal_handler(Signal::SIGUSR1).unwrap());
    /// event_loop.close().unwrap();
    /// ```
    pub fn add_signal_handler<F>(&self, signal: Signal, callback: F) -> Result<()>
    where
        F: FnMut() + 'static,
    {
        self.check_open()?;
        let eventfd = self.with_driver(|driver| driver.waker()).ok_or(Error::Closed)?;
        let mut signals = self.inner.signals.borrow_mut();
        let registration = signals.registration.get_or_insert_with(|| Registration::new(eventfd));
        let added = registration.add(signal);
        let (replaced, unused) = match added {
            Ok(()) => (signals.handlers.insert(signal, Handle::repeating(callback)), None),
            Err(_) if signals.handlers.is_empty() => (None, signals.registration.take()),
            Err(_) => (None, None),
        };
        drop(signals);
        // Dropped after the borrow ends: a closure's captures may call back into the loop.
        drop(unused);
        if let Some(replaced) = replaced {
            replaced.cancel();
        }
        added
    }

    /// Removes the handler of `signal` (asyncio's `remove_signal_handler`): `Ok(true)` if
    /// there was one, `Ok(false)` otherwise (also for SIGKILL). The callback is dropped and
    /// will not run again, even for a delivery not yet processed.
    ///
    /// When no loop handles the signal any more, its disposition is put back to what it was
    /// before ringloop installed its handler: `SIG_DFL` unless the program had changed it
    /// (Rust programs start with SIGPIPE ignored, and it stays ignored). For SIGINT that is
    /// the process default, termination: Rust has no `KeyboardInterrupt`.
    pub fn remove_signal_handler(&self, signal: Signal) -> Result<bool> {
        let mut signals = self.inner.signals.borrow_mut();
        let Some(handle) = signals.handlers.remove(&signal) else { return Ok(false) };
        let removed = match signals.registration.as_mut() {
            Some(registration) => registration.remove(signal),
            None => Ok(()),
        };
        let unused = if signals.handlers.is_empty() { signals.registration.take() } else { None };
        drop(signals);
        drop(unused);
        handle.cancel();
        removed.map(|()| true)
    }

    /// Queues the handlers of the signals delivered since the last iteration (loop thread,
    /// after each driver turn).
    pub(crate) fn dispatch_signals(&self) {
        let signals = self.inner.signals.borrow();
        let Some(registration) = &signals.registration else { return };
        for signal in signals_in(registration.take_pending()) {
            if let Some(handle) = signals.handlers.get(&signal) {
                self.inner.ready.borrow_mut().push_back(Ready::Handle(handle.clone()));
            }
        }
    }

    /// Removes every signal handler (loop close), restoring the dispositions.
    pub(crate) fn remove_all_signal_handlers(&self) {
        let signals = std::mem::take(&mut *self.inner.signals.borrow_mut());
        for handle in signals.handlers.values() {
            handle.cancel();
        }
        drop(signals);
    }
}
