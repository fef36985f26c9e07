//! The future `run_until_complete` polls in place, as tokio's `block_on` does: it may borrow the
//! caller's locals because it never outlives the call.
//!
//! # Implementation
//! Its polls go through the ready queue as [`Ready::Main`] entries, exactly where a task step
//! of the same future would run, so callbacks and tasks see the order asyncio gives (the main
//! future is a task there). The entry carries the run's [`MainWake`]; `run_once` polls through
//! the [`MainFuture`] its run was given, and an entry left over from an earlier run (stopped
//! before its future completed) names another `MainWake` and is skipped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use super::current::RunningGuard;
use super::{with_running_loop, EventLoop, Ready, Remote, RemoteItem};
use crate::error::{panic_message, Error, Result, RuntimeKind};

/// The waker of a main future: queues one [`Ready::Main`] entry at a time, from any thread.
pub(crate) struct MainWake {
    /// An entry is in the ready queue, or on its way there from another thread.
    queued: AtomicBool,
    /// The loop's thread-safe side: tells the loop apart, and reaches it from other threads.
    remote: Arc<Remote>,
}

impl MainWake {
    fn push(self: &Arc<Self>, event_loop: &EventLoop) {
        event_loop.inner.ready.borrow_mut().push_back(Ready::Main(self.clone()));
    }
}

impl Wake for MainWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let on_loop = with_running_loop(|lp| {
            let same = Arc::ptr_eq(&lp.inner.remote, &self.remote);
            if same {
                self.push(lp);
            }
            same
        });
        if on_loop != Some(true) {
            let me = self.clone();
            // A closed loop refuses the push, and then there is nothing left to poll.
            let _ = self.remote.push(RemoteItem::WithLoop(Box::new(move |lp| me.push(lp))));
        }
    }
}

/// The future one `run_until_complete` call drives, as `run_once` sees it.
pub(crate) struct MainFuture<'a> {
    /// This run's waker state: identifies its ready-queue entries.
    wake: Arc<MainWake>,
    /// Polls the future once (nothing once it has completed).
    poll: &'a mut dyn FnMut(),
}

impl MainFuture<'_> {
    /// Polls the future if `entry` is this run's (an entry of an earlier run is dropped).
    pub(crate) fn step(&mut self, entry: &Arc<MainWake>) {
        if Arc::ptr_eq(entry, &self.wake) {
            self.wake.queued.store(false, Ordering::Release);
            (self.poll)();
        }
    }
}

impl EventLoop {
    /// `run_until_complete`'s body: runs the loop, polling `future` in place, until the loop
    /// stops; the output if the future completed by then.
    pub(crate) fn run_in_place<F: std::future::Future>(&self, future: F) -> Result<F::Output> {
        RunningGuard::check_can_run(self)?;
        let mut future = std::pin::pin!(future);
        let wake =
            Arc::new(MainWake { queued: AtomicBool::new(true), remote: self.inner.remote.clone() });
        wake.push(self);
        let waker = Waker::from(wake.clone());
        let mut outcome = None;
        let mut poll = || {
            if outcome.is_none() {
                outcome = self.poll_main(future.as_mut(), &waker);
            }
        };
        self.run_loop(Some(&mut MainFuture { wake, poll: &mut poll }))?;
        outcome.unwrap_or_else(|| {
            Err(Error::runtime(
                RuntimeKind::StoppedBeforeComplete,
                "Event loop stopped before Future completed.",
            ))
        })
    }

    /// Polls the main future once. When it completes (or panics) the loop is asked to stop
    /// through `call_soon`, as asyncio's done callback `_run_until_complete_cb` does.
    fn poll_main<F: std::future::Future>(
        &self,
        future: Pin<&mut F>,
        waker: &Waker,
    ) -> Option<Result<F::Output>> {
        let started = self.get_debug().then(Instant::now);
        let polled =
            catch_unwind(AssertUnwindSafe(|| future.poll(&mut Context::from_waker(waker))));
        if let Some(started) = started {
            self.warn_if_slow("<the future of run_until_complete>", started);
        }
        let outcome = match polled {
            Ok(Poll::Pending) => return None,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(Error::Panic(panic_message(&*payload))),
        };
        let stopper = self.clone();
        let _ = self.call_soon(move || stopper.stop());
        Some(outcome)
    }
}
