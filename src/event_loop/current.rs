//! Per-thread loops: the running loop, the current loop, `get_event_loop` and friends.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::{EventLoop, Inner, LoopState};
use crate::error::{Error, Result, RuntimeKind};

thread_local! {
    /// The loop running on this thread, if any.
    static RUNNING: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
    /// The loop `set_event_loop` made current on this thread.
    static CURRENT: RefCell<Option<EventLoop>> = const { RefCell::new(None) };
}

/// A new event loop (asyncio's `new_event_loop`); see [`EventLoop::new`].
pub fn new_event_loop() -> Result<EventLoop> {
    EventLoop::new()
}

/// The loop running on this thread, or [`Error::Runtime`] when none runs.
pub fn get_running_loop() -> Result<EventLoop> {
    RUNNING
        .with(|running| running.borrow().clone())
        .ok_or_else(|| Error::runtime(RuntimeKind::NoRunningLoop, "no running event loop"))
}

/// The running loop, else the one set with [`set_event_loop`] on this thread, else an error.
pub fn get_event_loop() -> Result<EventLoop> {
    if let Ok(running) = get_running_loop() {
        return Ok(running);
    }
    CURRENT.with(|current| current.borrow().clone()).ok_or_else(|| {
        let thread = std::thread::current();
        Error::runtime(
            RuntimeKind::NoCurrentLoop,
            format!(
                "there is no current event loop in thread {:?}: create one with new_event_loop() \
             and set_event_loop()",
                thread.name().unwrap_or("<unnamed>")
            ),
        )
    })
}

/// Makes `event_loop` this thread's current loop (`None` clears it).
pub fn set_event_loop(event_loop: Option<EventLoop>) {
    CURRENT.with(|current| *current.borrow_mut() = event_loop);
}

/// Calls `f` with the loop running on this thread, if any (no clone, no allocation).
/// `None` also during thread teardown, when the thread-local is already gone.
pub(crate) fn with_running_loop<R>(f: impl FnOnce(&EventLoop) -> R) -> Option<R> {
    RUNNING.try_with(|running| running.borrow().as_ref().map(f)).ok().flatten()
}

/// Refuses to await `what` (a future or task of the loop `owner`) while another loop runs on
/// this thread: a future awaited in a task (or `run_until_complete`) of a loop that is not its
/// own, which asyncio refuses ("Task ... got Future ... attached to a different loop"). Its
/// callbacks and wakers would go to a loop that is not running. With no loop running (another
/// executor polls it) the await is allowed.
pub(crate) fn check_awaited_on(owner: &Weak<Inner>, what: impl FnOnce() -> String) -> Result<()> {
    let elsewhere = with_running_loop(|lp| !std::ptr::eq(Rc::as_ptr(&lp.inner), owner.as_ptr()));
    if elsewhere != Some(true) {
        return Ok(());
    }
    Err(Error::runtime(
        RuntimeKind::DifferentLoop,
        format!(
            "{} is attached to a different event loop than the one running: await it in a \
             task of its own loop",
            what()
        ),
    ))
}

/// Marks a loop running on this thread for the guard's lifetime (also on unwind).
pub(crate) struct RunningGuard {
    /// The loop that runs.
    event_loop: EventLoop,
}

impl RunningGuard {
    /// Errors if `event_loop` is closed or already running, or another loop runs here.
    pub(crate) fn check_can_run(event_loop: &EventLoop) -> Result<()> {
        event_loop.check_open()?;
        if event_loop.is_running() {
            return Err(Error::runtime(
                RuntimeKind::LoopRunning,
                "This event loop is already running",
            ));
        }
        if RUNNING.with(|running| running.borrow().is_some()) {
            return Err(Error::runtime(
                RuntimeKind::OtherLoopRunning,
                "Cannot run the event loop while another loop is running",
            ));
        }
        Ok(())
    }

    pub(crate) fn enter(event_loop: &EventLoop) -> Result<RunningGuard> {
        Self::check_can_run(event_loop)?;
        event_loop.inner.state.set(LoopState::Running);
        RUNNING.with(|running| *running.borrow_mut() = Some(event_loop.clone()));
        Ok(RunningGuard { event_loop: event_loop.clone() })
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.event_loop.submit_queued();
        let inner = &self.event_loop.inner;
        inner.stopping.set(false);
        if inner.state.get() == LoopState::Running {
            inner.state.set(LoopState::Idle);
        }
        let this = Rc::as_ptr(inner);
        RUNNING.with(|running| {
            let mut running = running.borrow_mut();
            if running.as_ref().is_some_and(|l| Rc::as_ptr(&l.inner) == this) {
                *running = None;
            }
        });
    }
}
