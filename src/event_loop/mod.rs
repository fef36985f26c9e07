//! The event loop: asyncio's `BaseEventLoop` (scheduling, timers, running, closing).

mod accepts;
mod current;
mod exception;
mod executor_calls;
mod handle;
mod loop_fd;
mod main_future;
mod op_future;
mod op_target;
mod open_transports;
mod remote;
mod run;
mod signals;
mod timers;
mod watch;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use current::{check_awaited_on, with_running_loop};
pub use current::{get_event_loop, get_running_loop, new_event_loop, set_event_loop};
pub use exception::{ExceptionContext, ExceptionHandler};
pub use handle::{Handle, TimerHandle};
pub(crate) use loop_fd::LoopFd;
pub(crate) use op_future::OpFuture;
#[cfg(test)]
pub(crate) use op_target::nobody;
pub(crate) use op_target::{Completed, OpOwner, OpTarget};
pub(crate) use open_transports::{OpenKey, OpenTransport};
pub use remote::{LoopHandle, ThreadsafeHandle};
pub(crate) use remote::{Remote, RemoteItem};

use crate::driver::any::Driver;
use crate::driver::{Backend, Completion, RecvBuf};
use crate::error::{ArgumentKind, Error, Result};
use crate::executor::Executor;
use crate::task::{TaskCore, TaskFactory};
use timers::TimerHeap;
use watch::FdWatch;

/// Delivers a value sent from another thread to the callback waiting for it on the loop.
pub(crate) type CrossThreadDelivery = Box<dyn FnOnce(Box<dyn std::any::Any + Send>)>;

/// An entry of the ready queue.
pub(crate) enum Ready {
    /// A callback.
    Handle(Handle),
    /// A task step (asyncio's `Task.__step`).
    Task(Rc<TaskCore>),
    /// A poll of the future `run_until_complete` drives in place (ignored unless it is the
    /// one the current run drives).
    Main(Arc<main_future::MainWake>),
}

/// The loop's life: `Idle` ⇄ `Running`, then `Closed` for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoopState {
    /// Not running, not closed.
    Idle,
    /// Inside `run_forever`/`run_until_complete`.
    Running,
    /// `close()` was called.
    Closed,
}

/// Everything a loop owns. Reached through `Rc` by the loop's clones, tasks and futures hold
/// `Weak` references so a loop is never kept alive by its own callbacks after `close`.
pub(crate) struct Inner {
    /// Lifecycle state.
    pub(crate) state: Cell<LoopState>,
    /// asyncio's `_stopping`: finish the current iteration, then return from `run_forever`.
    pub(crate) stopping: Cell<bool>,
    /// Callbacks and task steps ready to run (asyncio's `_ready`).
    pub(crate) ready: RefCell<VecDeque<Ready>>,
    /// Scheduled timers (asyncio's `_scheduled`).
    pub(crate) timers: RefCell<TimerHeap>,
    /// The backend; `None` once closed.
    pub(crate) driver: RefCell<Option<Driver<OpOwner>>>,
    /// Completions buffer reused across iterations.
    pub(crate) completions: RefCell<Vec<Completion<OpOwner>>>,
    /// Which backend runs.
    pub(crate) backend: Backend,
    /// Optional kernel features in use (for logs).
    pub(crate) features: Vec<&'static str>,
    /// The part other threads reach.
    pub(crate) remote: Arc<Remote>,
    /// Live tasks, keyed by task id.
    pub(crate) tasks: RefCell<slab::Slab<Rc<TaskCore>>>,
    /// `add_reader`/`add_writer` registrations.
    pub(crate) watches: RefCell<HashMap<RawFd, FdWatch>>,
    /// Custom exception handler.
    pub(crate) exception_handler: RefCell<Option<ExceptionHandler>>,
    /// Custom task factory.
    pub(crate) task_factory: RefCell<Option<TaskFactory>>,
    /// Debug mode.
    pub(crate) debug: Cell<bool>,
    /// Callbacks running longer than this are logged in debug mode.
    pub(crate) slow_callback_duration: Cell<Duration>,
    /// The default executor for `run_in_executor(None, ..)`, made on first use.
    pub(crate) default_executor: RefCell<Option<Executor>>,
    /// `shutdown_default_executor` was called: the default executor refuses new work.
    pub(crate) executor_shutdown_called: Cell<bool>,
    /// Results from executor threads waiting to be delivered, keyed by call id.
    pub(crate) executor_calls: RefCell<slab::Slab<CrossThreadDelivery>>,
    /// `add_signal_handler` registrations.
    pub(crate) signals: RefCell<signals::SignalHandlers>,
    /// The driver's shutdown left ops in the kernel: an fd closed from now on may still be
    /// named by one, so it is leaked instead (see the fd rule in `driver/mod.rs`).
    pub(crate) kernel_may_hold_fds: Cell<bool>,
    /// While a stream's `data_received` runs on io_uring: a second holder of the receive-ring
    /// slot it was given (see `LoopFd::while_delivering`).
    pub(crate) delivering: Cell<Option<RecvBuf>>,
    /// A batched send queued during this dispatch holds a receive-ring slot: the loop submits
    /// it before the next wait, so that the slot is back when that wait's receives need it.
    pub(crate) sends_hold_slots: Cell<bool>,
    /// Transports started and not finished, released when the loop closes (or drops) with
    /// them open. Last: dropped after the driver, which drains every op first.
    pub(crate) open_transports: open_transports::OpenTransports,
}

impl Inner {
    /// Whether a small socket write goes into the iteration's batch (an SQE submitted by the
    /// turn's `io_uring_enter`) rather than a `send(2)` of its own: on io_uring, while the loop
    /// runs, so a turn, or the stop's [`submit_queued`](EventLoop::submit_queued), follows.
    pub(crate) fn batches_sends(&self) -> bool {
        self.backend == Backend::Uring && self.state.get() == LoopState::Running
    }
}

/// An event loop: one per thread, `!Send`. Clones are cheap and refer to the same loop.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// let event_loop = ringloop::EventLoop::new().unwrap();
/// let ran = Rc::new(Cell::new(false));
/// let flag = ran.clone();
/// event_loop.call_soon(move || flag.set(true)).unwrap();
/// let stopper = event_loop.clone();
/// event_loop.call_soon(move || stopper.stop()).unwrap();
/// event_loop.run_forever().unwrap();
/// assert!(ran.get());
/// event_loop.close().unwrap();
/// ```
#[derive(Clone)]
pub struct EventLoop {
    /// The shared state.
    pub(crate) inner: Rc<Inner>,
}

/// A delay for `call_later`: `f64` seconds (negative = as soon as possible) or a `Duration`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delay(f64);

impl Delay {
    /// The delay in seconds (negative = already due).
    pub fn as_secs_f64(self) -> f64 {
        self.0
    }
}

impl From<f64> for Delay {
    fn from(seconds: f64) -> Delay {
        Delay(seconds)
    }
}

impl From<Duration> for Delay {
    fn from(duration: Duration) -> Delay {
        Delay(duration.as_secs_f64())
    }
}

/// Nanoseconds on `CLOCK_MONOTONIC` (the clock of `time.monotonic()`).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Seconds (loop time) to a deadline in ns, rounding up so a timer never fires early.
fn seconds_to_ns(seconds: f64) -> Result<u64> {
    if seconds.is_nan() {
        return Err(Error::invalid_argument(
            ArgumentKind::NotANumber,
            "a timer's time must be a number, not NaN",
        ));
    }
    Ok(ceil_ns(seconds))
}

/// `seconds` (not NaN) in nanoseconds, rounded up: below 0 gives 0, past `u64::MAX` the
/// maximum.
///
/// Rounded up without `f64::ceil` (a libm call on x86_64's baseline): the cast cuts the
/// fraction off, then one more if it did. Below 2^63 ns (292 years) the casts go through `i64`,
/// one instruction each way on x86_64's baseline, where `u64`'s are branchy sequences; `call_later`
/// spends a tenth of its time here otherwise.
#[inline]
fn ceil_ns(seconds: f64) -> u64 {
    /// 2^63: every `f64` below it converts to `i64` exactly in its whole part.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    let ns = seconds * 1e9;
    if (0.0..I64_END).contains(&ns) {
        let whole = ns as i64;
        // `whole` is at most 2^63 - 1024 (the largest `f64` below 2^63): the sum cannot wrap.
        return (whole + i64::from((whole as f64) < ns)) as u64;
    }
    // The casts saturate: below 0 gives 0, past `u64::MAX` the maximum.
    let whole = ns as u64;
    if (whole as f64) < ns {
        whole.saturating_add(1)
    } else {
        whole
    }
}

impl EventLoop {
    /// A new loop on the best backend the kernel has (io_uring; epoll with feature `fallback`
    /// when io_uring is missing). `RINGLOOP_BACKEND=uring|epoll` forces one; `RINGLOOP_DEBUG`
    /// (non-empty) turns debug mode on.
    pub fn new() -> Result<EventLoop> {
        let choice = match std::env::var("RINGLOOP_BACKEND").as_deref() {
            Err(_) | Ok("") => None,
            Ok("uring") => Some(Backend::Uring),
            Ok("epoll") => Some(Backend::Epoll),
            Ok(other) => {
                return Err(Error::invalid_argument(
                    ArgumentKind::Malformed,
                    format!("RINGLOOP_BACKEND must be \"uring\" or \"epoll\", not {other:?}"),
                ))
            }
        };
        Self::open(choice)
    }

    /// A new loop on `backend`, or an error saying why that backend is unavailable.
    pub fn with_backend(backend: Backend) -> Result<EventLoop> {
        Self::open(Some(backend))
    }

    fn open(choice: Option<Backend>) -> Result<EventLoop> {
        let driver = Driver::open(choice)?;
        let debug = std::env::var_os("RINGLOOP_DEBUG").is_some_and(|v| !v.is_empty());
        let inner = Inner {
            state: Cell::new(LoopState::Idle),
            stopping: Cell::new(false),
            ready: RefCell::new(VecDeque::with_capacity(64)),
            timers: RefCell::new(TimerHeap::new()),
            backend: driver.backend(),
            features: driver.features(),
            remote: Arc::new(Remote::new(driver.waker())),
            driver: RefCell::new(Some(driver)),
            completions: RefCell::new(Vec::with_capacity(64)),
            tasks: RefCell::new(slab::Slab::new()),
            watches: RefCell::new(HashMap::new()),
            exception_handler: RefCell::new(None),
            task_factory: RefCell::new(None),
            debug: Cell::new(debug),
            slow_callback_duration: Cell::new(Duration::from_millis(100)),
            default_executor: RefCell::new(None),
            executor_shutdown_called: Cell::new(false),
            executor_calls: RefCell::new(slab::Slab::new()),
            signals: RefCell::new(signals::SignalHandlers::default()),
            kernel_may_hold_fds: Cell::new(false),
            delivering: Cell::new(None),
            sends_hold_slots: Cell::new(false),
            open_transports: open_transports::OpenTransports::default(),
        };
        Ok(EventLoop { inner: Rc::new(inner) })
    }

    /// The backend this loop runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The optional kernel features the backend uses (`"defer_taskrun"`, `"ext_arg"`, ...).
    pub fn features(&self) -> &[&'static str] {
        &self.inner.features
    }

    /// A `Send + Sync` handle for other threads (`call_soon_threadsafe`, `stop`).
    pub fn handle(&self) -> LoopHandle {
        LoopHandle { remote: self.inner.remote.clone() }
    }

    /// The loop's time: seconds on the monotonic clock, as `f64` (asyncio's `loop.time()`).
    pub fn time(&self) -> f64 {
        monotonic_ns() as f64 / 1e9
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.state.get() == LoopState::Closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Moves callbacks queued by other threads into the ready queue (keeps FIFO across both).
    #[inline]
    fn absorb_remote(&self) {
        if self.inner.remote.has_pending() {
            self.drain_remote();
        }
    }

    /// Schedules `callback` to run at the next iteration, after those already scheduled
    /// (asyncio's `call_soon`).
    pub fn call_soon<F: FnOnce() + 'static>(&self, callback: F) -> Result<Handle> {
        self.check_open()?;
        self.absorb_remote();
        let handle = Handle::once(callback, None);
        self.inner.ready.borrow_mut().push_back(Ready::Handle(handle.clone()));
        Ok(handle)
    }

    /// `call_soon` for a callback that is `Send`, as asyncio's `call_soon_threadsafe`; from
    /// other threads use [`LoopHandle::call_soon_threadsafe`].
    pub fn call_soon_threadsafe<F: FnOnce() + Send + 'static>(
        &self,
        callback: F,
    ) -> Result<Handle> {
        self.call_soon(callback)
    }

    /// Schedules `callback` after `delay` (seconds as `f64`, or a `Duration`). A delay of zero
    /// or less runs it at the next iteration, ordered by its (past) deadline.
    pub fn call_later<F: FnOnce() + 'static>(
        &self,
        delay: impl Into<Delay>,
        callback: F,
    ) -> Result<TimerHandle> {
        let Delay(delay) = delay.into();
        if delay.is_nan() {
            return Err(Error::invalid_argument(
                ArgumentKind::NotANumber,
                "call_later: the delay must not be NaN",
            ));
        }
        let now = monotonic_ns();
        let deadline = if delay >= 0.0 {
            now.saturating_add(ceil_ns(delay))
        } else {
            now.saturating_sub(ceil_ns(-delay))
        };
        self.schedule_at(deadline, deadline as f64 / 1e9, callback)
    }

    /// Schedules `callback` at `when` in loop time ([`time`](Self::time) seconds).
    pub fn call_at<F: FnOnce() + 'static>(&self, when: f64, callback: F) -> Result<TimerHandle> {
        let deadline = seconds_to_ns(when)?;
        self.schedule_at(deadline, when, callback)
    }

    fn schedule_at<F: FnOnce() + 'static>(
        &self,
        deadline: u64,
        when: f64,
        callback: F,
    ) -> Result<TimerHandle> {
        self.check_open()?;
        let mut timers = self.inner.timers.borrow_mut();
        let handle = Handle::once(callback, Some(timers.link()));
        timers.insert(deadline, handle.clone());
        Ok(TimerHandle { handle, when })
    }

    /// Ready callbacks and task steps waiting to run.
    pub fn ready_len(&self) -> usize {
        self.inner.ready.borrow().len()
    }

    /// Timers in the heap (cancelled ones included until purged) and how many are cancelled.
    pub fn scheduled_timers(&self) -> (usize, usize) {
        let timers = self.inner.timers.borrow();
        (timers.len(), timers.cancelled_count())
    }

    /// Debug mode (asyncio's `get_debug`).
    pub fn get_debug(&self) -> bool {
        self.inner.debug.get()
    }

    /// Turns debug mode on or off: slow-callback warnings and task lifecycle warnings.
    pub fn set_debug(&self, enabled: bool) {
        self.inner.debug.set(enabled);
    }

    /// Callbacks running longer than this are logged in debug mode (default 100 ms).
    pub fn slow_callback_duration(&self) -> Duration {
        self.inner.slow_callback_duration.get()
    }

    /// Sets [`slow_callback_duration`](Self::slow_callback_duration).
    pub fn set_slow_callback_duration(&self, duration: Duration) {
        self.inner.slow_callback_duration.set(duration);
    }

    /// Runs `f` with the driver, or returns `None` when the loop is closed.
    pub(crate) fn with_driver<R>(&self, f: impl FnOnce(&mut Driver<OpOwner>) -> R) -> Option<R> {
        self.inner.driver.borrow_mut().as_mut().map(f)
    }

    /// Hands the kernel the ops queued since the last turn, without waiting: what the loop
    /// does as it stops running, so a write batched for the next turn is on the socket when
    /// `run_forever` returns. What that completes is dispatched by the next run.
    pub(crate) fn submit_queued(&self) {
        let (Ok(mut driver), Ok(mut out)) =
            (self.inner.driver.try_borrow_mut(), self.inner.completions.try_borrow_mut())
        else {
            return;
        };
        if let Some(Err(e)) = driver.as_mut().map(|d| d.submit_queued(&mut out)) {
            log::debug!(target: "ringloop", "submitting queued ops as the loop stops: {e}");
        }
    }

    /// Ops in flight in the driver (diagnostics and tests).
    pub fn ops_in_flight(&self) -> usize {
        self.with_driver(|d| d.in_flight()).unwrap_or(0)
    }

    /// Tasks not yet finished.
    pub fn pending_tasks(&self) -> usize {
        self.inner.tasks.borrow().len()
    }
}

impl fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLoop")
            .field("backend", &self.inner.backend)
            .field("state", &self.inner.state.get())
            .field("debug", &self.inner.debug.get())
            .finish()
    }
}

#[cfg(test)]
mod time_tests {
    use super::seconds_to_ns;

    #[test]
    fn seconds_round_up_to_whole_nanoseconds_and_saturate() {
        assert_eq!(seconds_to_ns(0.0).unwrap(), 0);
        assert_eq!(seconds_to_ns(1.0).unwrap(), 1_000_000_000);
        assert_eq!(seconds_to_ns(1.5e-9).unwrap(), 2, "a fraction rounds up: never early");
        assert_eq!(seconds_to_ns(2.5).unwrap(), 2_500_000_000);
        assert_eq!(seconds_to_ns(-1.0).unwrap(), 0);
        assert_eq!(seconds_to_ns(f64::INFINITY).unwrap(), u64::MAX);
        assert_eq!(seconds_to_ns(1e30).unwrap(), u64::MAX);
        assert!(seconds_to_ns(f64::NAN).is_err());
        // Either side of 2^63 ns, where the conversion changes path, and the fraction's step.
        assert_eq!(seconds_to_ns(9_223_372_036.854_774).unwrap(), 9_223_372_036_854_774_784);
        assert_eq!(seconds_to_ns(9_223_372_036.854_776).unwrap(), 9_223_372_036_854_775_808);
        assert_eq!(seconds_to_ns(3_600.500_000_000_1).unwrap(), 3_600_500_000_001);
    }
}
