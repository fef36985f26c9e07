//! `run_coroutine_threadsafe`: submit a future to a loop from another thread, and get a
//! [`ConcurrentFuture`] to block on, poll from another runtime, or cancel.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::time_limit::TimeLimit;
use crate::error::{panic_message, Error, Result, StateKind};
use crate::event_loop::LoopHandle;

impl LoopHandle {
    /// Submits `future` to the loop from any thread, to run there as a task (asyncio's
    /// `asyncio.run_coroutine_threadsafe`), and returns a [`ConcurrentFuture`] for its output.
    ///
    /// The future must be `Send` to cross threads, which rules out holding loop objects
    /// (`Rc`-based) across an await; [`run_coroutine_threadsafe_with`] builds the future on
    /// the loop thread instead and has no such limit. [`Error::Closed`] once the loop is closed.
    ///
    /// ```
    /// let event_loop = ringloop::EventLoop::new().unwrap();
    /// let handle = event_loop.handle();
    /// let caller = std::thread::spawn(move || {
    ///     let answer = handle.run_coroutine_threadsafe(async { 6 * 7 }).unwrap().wait();
    ///     handle.stop().unwrap();
    ///     answer
    /// });
    /// event_loop.run_forever().unwrap();
    /// assert_eq!(caller.join().unwrap().unwrap(), 42);
    /// ```
    ///
    /// [`run_coroutine_threadsafe_with`]: Self::run_coroutine_threadsafe_with
    pub fn run_coroutine_threadsafe<F>(&self, future: F) -> Result<ConcurrentFuture<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.run_coroutine_threadsafe_with(move || future)
    }

    /// [`run_coroutine_threadsafe`](Self::run_coroutine_threadsafe) for a future made on the
    /// loop thread by `make_future`: only the closure and the output cross threads, so the
    /// future may use the loop (`sleep`, tasks, transports).
    ///
    /// ```
    /// let event_loop = ringloop::EventLoop::new().unwrap();
    /// let handle = event_loop.handle();
    /// let caller = std::thread::spawn(move || {
    ///     let slept = handle.run_coroutine_threadsafe_with(|| async {
    ///         ringloop::sleep(0.001).await.map(|()| "slept")
    ///     });
    ///     let answer = slept.unwrap().wait();
    ///     handle.stop().unwrap();
    ///     answer
    /// });
    /// event_loop.run_forever().unwrap();
    /// assert_eq!(caller.join().unwrap().unwrap().unwrap(), "slept");
    /// ```
    pub fn run_coroutine_threadsafe_with<M, F>(
        &self,
        make_future: M,
    ) -> Result<ConcurrentFuture<F::Output>>
    where
        M: FnOnce() -> F + Send + 'static,
        F: std::future::Future + 'static,
        F::Output: Send + 'static,
    {
        let shared = Arc::new(Shared::new());
        let delivery = Delivery(shared.clone());
        self.call_with_loop(move |event_loop| {
            // A refused task drops the delivery, which reports the cancellation.
            let _ = event_loop.create_task(delivery.run(make_future));
        })?;
        Ok(ConcurrentFuture { shared })
    }
}

/// A future's output on its way from the loop to another thread (asyncio's
/// `concurrent.futures.Future`): block on it with [`wait`](Self::wait) or
/// [`result`](Self::result), await it from any runtime (it is a `std::future::Future`), or
/// [`cancel`](Self::cancel) it. Dropping it does not stop the work.
pub struct ConcurrentFuture<T> {
    /// Shared with the task on the loop.
    shared: Arc<Shared<T>>,
}

impl<T> ConcurrentFuture<T> {
    /// Blocks this thread until the work is done, and gives its output or error
    /// ([`Error::Cancelled`] when cancelled or when its loop closed first).
    pub fn wait(self) -> Result<T> {
        self.result(None)
    }

    /// Blocks this thread for at most `timeout` (`None`: for as long as it takes) and gives the
    /// output. [`Error::Timeout`] when the work is not done by then; it keeps running and
    /// may be waited for again. The output is moved out: a second call after a success is
    /// [`Error::InvalidState`]. Never call it on the loop's own thread with a limit longer
    /// than you can afford: the loop cannot run while its thread is blocked.
    pub fn result(&self, timeout: impl Into<TimeLimit>) -> Result<T> {
        let limit = timeout.into();
        let deadline = limit.as_duration("ConcurrentFuture::result")?.map(|d| Instant::now() + d);
        let mut state = self.shared.lock();
        loop {
            if let Some(outcome) = state.take_outcome() {
                return outcome;
            }
            state = match deadline {
                None => self.shared.wait(state),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::Timeout(format!(
                            "ConcurrentFuture::result: the work did not complete within \
                             {limit}; it keeps running (cancel() stops it)"
                        )));
                    }
                    self.shared.wait_timeout(state, left)
                }
            };
        }
    }

    /// Cancels the work: the future is dropped on the loop at the task's next step, and this
    /// handle completes with [`Error::Cancelled`] at once. False if it was already done.
    pub fn cancel(&self) -> bool {
        self.shared.complete(Err(Error::Cancelled), |state| {
            state.cancel_requested = true;
            state.task.take()
        })
    }

    /// True once the work is done (finished, failed or cancelled).
    pub fn done(&self) -> bool {
        !matches!(self.shared.lock().outcome, Outcome::Pending)
    }

    /// True if cancelled (by [`cancel`](Self::cancel), or its loop closed before it finished).
    pub fn cancelled(&self) -> bool {
        matches!(self.shared.lock().outcome, Outcome::Done(Err(Error::Cancelled)))
    }
}

impl<T> std::future::Future for ConcurrentFuture<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut state = self.shared.lock();
        if let Some(outcome) = state.take_outcome() {
            return Poll::Ready(outcome);
        }
        if !state.awaiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.awaiter = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<T> fmt::Debug for ConcurrentFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.shared.lock().outcome {
            Outcome::Pending => "pending",
            Outcome::Done(Err(Error::Cancelled)) => "cancelled",
            Outcome::Done(Err(_)) => "failed",
            Outcome::Done(Ok(_)) | Outcome::Taken => "finished",
        };
        write!(f, "<ConcurrentFuture {state}>")
    }
}

/// Where the work is, as both sides see it.
enum Outcome<T> {
    /// Running (or not started).
    Pending,
    /// Finished, failed or cancelled.
    Done(Result<T>),
    /// The output was moved out to the caller.
    Taken,
}

/// What the loop side and the caller share.
struct State<T> {
    /// The outcome.
    outcome: Outcome<T>,
    /// The caller's waker when it awaits from a runtime.
    awaiter: Option<Waker>,
    /// The loop task's waker, to deliver a cancellation.
    task: Option<Waker>,
    /// `cancel()` was called: the task drops the future at its next step.
    cancel_requested: bool,
}

impl<T> State<T> {
    /// The outcome if there is one to hand over (an error stays for later calls).
    fn take_outcome(&mut self) -> Option<Result<T>> {
        match &self.outcome {
            Outcome::Pending => None,
            Outcome::Done(Err(err)) => Some(Err(err.clone())),
            Outcome::Taken => Some(Err(Error::invalid_state(
                StateKind::AlreadyTaken,
                "the output was already taken by an earlier wait, result or await",
            ))),
            Outcome::Done(Ok(_)) => match std::mem::replace(&mut self.outcome, Outcome::Taken) {
                Outcome::Done(Ok(output)) => Some(Ok(output)),
                _ => unreachable!("checked to be an output just above"),
            },
        }
    }
}

/// The state behind a mutex, and a condition variable for blocked callers.
struct Shared<T> {
    /// The state.
    state: Mutex<State<T>>,
    /// Signalled when the outcome is set.
    completed: Condvar,
}

impl<T> Shared<T> {
    fn new() -> Shared<T> {
        Shared {
            state: Mutex::new(State {
                outcome: Outcome::Pending,
                awaiter: None,
                task: None,
                cancel_requested: false,
            }),
            completed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock (only in `T`'s drop) leaves the state usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State<T>>) -> MutexGuard<'a, State<T>> {
        self.completed.wait(guard).unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_timeout<'a>(
        &self,
        guard: MutexGuard<'a, State<T>>,
        timeout: std::time::Duration,
    ) -> MutexGuard<'a, State<T>> {
        match self.completed.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// Sets the outcome unless one is set, then wakes whoever waits; false if one was set.
    /// `and_then` runs under the same lock when this call sets it, and may return another
    /// waker to wake.
    fn complete(
        &self,
        result: Result<T>,
        and_then: impl FnOnce(&mut State<T>) -> Option<Waker>,
    ) -> bool {
        let wakers = {
            let mut state = self.lock();
            if !matches!(state.outcome, Outcome::Pending) {
                return false;
            }
            state.outcome = Outcome::Done(result);
            [state.awaiter.take(), and_then(&mut state)]
        };
        self.completed.notify_all();
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
        true
    }
}

/// The loop side's duty to report an outcome: a delivery dropped without one (the task was
/// dropped, its loop closed, or the task was refused) reports [`Error::Cancelled`].
struct Delivery<T>(Arc<Shared<T>>);

impl<T> Delivery<T> {
    /// The task's future: makes the user's future and runs it until it finishes or the caller
    /// cancels; a panic becomes [`Error::Panic`] for the caller.
    async fn run<M, F>(self, make_future: M)
    where
        M: FnOnce() -> F,
        F: std::future::Future<Output = T>,
    {
        if self.0.lock().cancel_requested {
            return;
        }
        let mut future = std::pin::pin!(make_future());
        let outcome = std::future::poll_fn(|cx| {
            if !self.listen_for_cancel(cx.waker()) {
                return Poll::Ready(None);
            }
            match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(output)) => Poll::Ready(Some(Ok(output))),
                Err(payload) => Poll::Ready(Some(Err(Error::Panic(panic_message(&*payload))))),
            }
        })
        .await;
        if let Some(outcome) = outcome {
            self.0.complete(outcome, |_| None);
        }
    }

    /// Leaves `waker` for a cancellation; false if one was already requested.
    fn listen_for_cancel(&self, waker: &Waker) -> bool {
        let mut state = self.0.lock();
        if state.cancel_requested {
            return false;
        }
        if !state.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            state.task = Some(waker.clone());
        }
        true
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        self.0.complete(Err(Error::Cancelled), |_| None);
    }
}
