//! Running, stopping and closing the loop; `run_once` is the only place callbacks run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::current::RunningGuard;
use super::main_future::MainFuture;
use super::remote::RemoteItem;
use super::{monotonic_ns, Completed, EventLoop, LoopState, OpOwner, Ready};
use crate::driver::any::Driver;
use crate::driver::Completion;
use crate::error::{panic_message, Error, Result, RuntimeKind};
use crate::event_loop::ExceptionContext;

/// The longest single wait in the kernel; a loop with only far-away timers wakes this often.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// The cap on one wait in the kernel: [`MAX_WAIT`], or `RINGLOOP_MAX_WAIT_MS` when set.
///
/// The variable is a debugging knob for tools that serialise threads and do not know that
/// `io_uring_enter` blocks (valgrind 3.19 keeps its big lock across it, so no other thread runs
/// while the loop waits): with a cap of a few milliseconds the loop lets them in.
fn max_wait() -> Duration {
    static CAP: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("RINGLOOP_MAX_WAIT_MS")
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(MAX_WAIT, Duration::from_millis)
    })
}

impl EventLoop {
    /// Runs until [`stop`](Self::stop) is called. `stop()` called before lets one iteration
    /// run (I/O polled with a zero timeout, ready callbacks run) and returns.
    pub fn run_forever(&self) -> Result<()> {
        self.run_loop(None)
    }

    /// `run_forever`'s loop; `main` is the future a `run_until_complete` call polls in place.
    pub(crate) fn run_loop(&self, mut main: Option<&mut MainFuture<'_>>) -> Result<()> {
        let _running = RunningGuard::enter(self)?;
        loop {
            self.run_once(main.as_deref_mut())?;
            if self.inner.stopping.get() {
                break;
            }
        }
        Ok(())
    }

    /// Runs until `future` completes and returns its output (asyncio's `run_until_complete`).
    ///
    /// The future is polled in place on this thread, as tokio's `block_on` does, so it may
    /// borrow locals; only the tasks it spawns must be `'static`. Its polls take their turn in
    /// the ready queue as a task's steps would. If the loop is stopped before the future
    /// completes, the result is an [`Error::Runtime`] and the future is dropped. To keep
    /// asyncio's behaviour, where the work stays pending for a later run, pass a [`Task`]
    /// (`create_task(fut)?`): dropping a task's handle does not stop the task.
    ///
    /// ```
    /// let event_loop = ringloop::EventLoop::new().unwrap();
    /// let words = vec!["borrowed", "locals"];
    /// let joined = event_loop.run_until_complete(async { words.join(" ") }).unwrap();
    /// assert_eq!(joined, "borrowed locals");
    /// event_loop.close().unwrap();
    /// ```
    ///
    /// [`Task`]: crate::Task
    pub fn run_until_complete<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        self.run_in_place(future)
    }

    /// Stops the loop after the current batch of callbacks (asyncio's `stop`).
    pub fn stop(&self) {
        self.inner.stopping.set(true);
    }

    /// True while the loop runs.
    pub fn is_running(&self) -> bool {
        self.inner.state.get() == LoopState::Running
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.state.get() == LoopState::Closed
    }

    /// Closes the loop: signal handlers removed (dispositions restored), pending callbacks and
    /// timers discarded, unfinished tasks dropped (their futures released), fd watches
    /// removed, the default executor shut down without waiting, the backend (ring or epoll
    /// fd, eventfd) closed, and transports still open released: each closes its fd and drops
    /// its protocol without a `connection_lost` (a protocol that keeps its transport would
    /// otherwise keep both, and the fd, forever). A running loop cannot be closed; closing
    /// twice does nothing.
    pub fn close(&self) -> Result<()> {
        match self.inner.state.get() {
            LoopState::Running => {
                return Err(Error::runtime(
                    RuntimeKind::CloseRunningLoop,
                    "Cannot close a running event loop",
                ))
            }
            LoopState::Closed => return Ok(()),
            LoopState::Idle => {}
        }
        self.inner.state.set(LoopState::Closed);
        self.remove_all_signal_handlers();
        // Everything is taken out first and dropped after the borrows end: dropping user
        // closures and futures may call back into the loop.
        let ready = std::mem::take(&mut *self.inner.ready.borrow_mut());
        let timers = self.inner.timers.borrow_mut().clear();
        let remote = self.inner.remote.close();
        let watches = std::mem::take(&mut *self.inner.watches.borrow_mut());
        // What the stop's `submit_queued` reaped and no run dispatched.
        let reaped = std::mem::take(&mut *self.inner.completions.borrow_mut());
        let tasks: Vec<_> = self.inner.tasks.borrow_mut().drain().collect();
        if self.get_debug() {
            for task in &tasks {
                log::warn!(target: "ringloop", "Task was destroyed but it is pending: {}", task.name());
            }
        }
        drop((ready, timers, remote, watches, reaped));
        for task in tasks {
            task.abandon();
        }
        drop(std::mem::take(&mut *self.inner.executor_calls.borrow_mut()));
        if let Some(executor) = self.inner.default_executor.borrow_mut().take() {
            executor.shutdown(false, None);
        }
        let mut driver = self.inner.driver.borrow_mut().take();
        if let Some((clean, owners)) = driver.as_mut().map(Driver::shut_down) {
            // Owners are dropped once the kernel handed every op back: a transport's fd then
            // closes at once (the driver is gone). If it did not, their fds must not close.
            self.inner.kernel_may_hold_fds.set(!clean);
            drop(owners);
        }
        drop(driver);
        // Transports still open: each closes its fd (at once: the driver is gone) and lets go
        // of its protocol, which may hold it (no `connection_lost`: the loop is closed).
        self.inner.open_transports.release_all();
        Ok(())
    }

    /// One iteration (asyncio's `_run_once`).
    ///
    /// 1. drop cancelled timers (rebuild the heap when mostly cancelled);
    /// 2. timeout = 0 if callbacks are ready or the loop is stopping, else the time to the
    ///    earliest live timer, else none;
    /// 3. one driver turn: submit queued ops and wait for completions;
    /// 4. dispatch completions (then submit, without waiting, the sends that dispatch queued
    ///    holding receive buffers, and dispatch what that completed: `turn_driver`) and work
    ///    queued by other threads;
    /// 5. move due timers to the ready queue;
    /// 6. run exactly the callbacks that were ready when this step began: callbacks they
    ///    schedule run at the next iteration. Task steps and polls of `main` (the future a
    ///    `run_until_complete` call drives in place) are entries of the same queue.
    pub(crate) fn run_once(&self, mut main: Option<&mut MainFuture<'_>>) -> Result<()> {
        self.absorb_remote();
        let timeout = self.poll_timeout();
        self.turn_driver(timeout)?;
        self.dispatch_signals();
        self.absorb_remote();
        self.inner.timers.borrow_mut().pop_due(monotonic_ns, |handle| {
            self.inner.ready.borrow_mut().push_back(Ready::Handle(handle))
        });
        let ntodo = self.inner.ready.borrow().len();
        for _ in 0..ntodo {
            let Some(item) = self.inner.ready.borrow_mut().pop_front() else { break };
            match item {
                Ready::Handle(handle) => self.run_handle(&handle),
                Ready::Task(task) => task.step(self),
                Ready::Main(entry) => {
                    if let Some(main) = main.as_deref_mut() {
                        main.step(&entry)
                    }
                }
            }
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let mut timers = self.inner.timers.borrow_mut();
        timers.purge_cancelled();
        if !self.inner.ready.borrow().is_empty() || self.inner.stopping.get() {
            return Some(Duration::ZERO);
        }
        let cap = max_wait();
        let Some(deadline) = timers.next_deadline() else {
            return (cap < MAX_WAIT).then_some(cap);
        };
        let wait = Duration::from_nanos(deadline.saturating_sub(monotonic_ns()));
        Some(wait.min(cap))
    }

    /// One driver turn and the dispatch of its completions. When that dispatch queued sends
    /// holding receive-ring slots (an echo's or a proxy's writes, see `LoopFd::hold_delivered`),
    /// they are submitted at once, without waiting, and what the socket took whole completes
    /// and is dispatched here too: their slots are back in the ring before the next turn's
    /// wait, when the kernel picks buffers for the receives it completes. (Submitted by that
    /// wait instead, they would still be out then, and a ring lending to every connection of a
    /// busy server would run dry.)
    fn turn_driver(&self, timeout: Option<Duration>) -> Result<()> {
        let mut completions = std::mem::take(&mut *self.inner.completions.borrow_mut());
        let turned = self.with_driver(|driver| driver.turn(timeout, &mut completions));
        // Completions collected before an error are dispatched all the same.
        hand_out(&mut completions);
        let submitted = self.inner.sends_hold_slots.take().then(|| {
            let submitted = self.with_driver(|driver| driver.submit_queued(&mut completions));
            hand_out(&mut completions);
            submitted
        });
        *self.inner.completions.borrow_mut() = completions;
        match (turned, submitted.flatten()) {
            (Some(Err(err)), _) => Err(Error::io("waiting for I/O completions", err)),
            (_, Some(Err(err))) => Err(Error::io("submitting sends", err)),
            _ => Ok(()),
        }
    }

    /// Runs one callback, catching a panic and reporting it; logs slow callbacks in debug.
    fn run_handle(&self, handle: &super::Handle) {
        if handle.cancelled() {
            return;
        }
        let started = self.get_debug().then(Instant::now);
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handle.run())) {
            let context = ExceptionContext::new(format!("Exception in callback {handle:?}"))
                .with_error(Error::Panic(panic_message(&*payload)))
                .with_handle(handle.clone());
            self.call_exception_handler(context);
        }
        if let Some(started) = started {
            self.warn_if_slow(&format!("{handle:?}"), started);
        }
    }

    /// Debug mode: warns when a callback or task step ran longer than allowed.
    pub(crate) fn warn_if_slow(&self, what: &str, started: Instant) {
        let took = started.elapsed();
        if took >= self.slow_callback_duration() {
            log::warn!(target: "ringloop", "Executing {what} took {:.3} seconds", took.as_secs_f64());
        }
    }

    /// Handles everything other threads queued.
    pub(crate) fn drain_remote(&self) {
        for item in self.inner.remote.take() {
            match item {
                RemoteItem::Callback(callback) => {
                    let handle = super::Handle::once(move || callback.run(), None);
                    self.inner.ready.borrow_mut().push_back(Ready::Handle(handle));
                }
                RemoteItem::WithLoop(f) => {
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                        self.call_exception_handler(
                            ExceptionContext::new("Exception in a cross-thread completion")
                                .with_error(Error::Panic(panic_message(&*payload))),
                        );
                    }
                }
                RemoteItem::Wake(task_id) => self.wake_task(task_id),
                // Queued like `call_soon_threadsafe(loop.stop)`: callbacks queued before it run
                // first. Weak, so a queued stop never keeps a loop alive.
                RemoteItem::Stop => {
                    let inner = std::rc::Rc::downgrade(&self.inner);
                    let stop = super::Handle::once(
                        move || {
                            if let Some(inner) = inner.upgrade() {
                                inner.stopping.set(true);
                            }
                        },
                        None,
                    );
                    self.inner.ready.borrow_mut().push_back(Ready::Handle(stop));
                }
            }
        }
    }
}

/// Hands each completion to its owner.
fn hand_out(completions: &mut Vec<Completion<OpOwner>>) {
    for completion in completions.drain(..) {
        // Taken apart at once, so that the `Completion` (128 bytes) is not moved again.
        let Completion { id, owner, result, op, data } = completion;
        owner.complete(Completed { id, result, op, data });
    }
}
