//! Tasks: Rust futures driven by the loop (asyncio's `Task`), and the task factory.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use crate::done_callbacks::DoneCallbacks;
use crate::error::{panic_message, Error, Result, StateKind};
use crate::event_loop::{check_awaited_on, EventLoop, ExceptionContext, Inner, Ready};

/// A type-erased future as the loop polls it.
pub type LocalBoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A task factory: receives every future `create_task` wraps and returns the future the task
/// will poll (to instrument, trace or decorate tasks). asyncio's factory builds the task
/// object; in Rust the loop keeps building the task and the factory shapes what it runs.
pub type TaskFactory = Rc<dyn Fn(&EventLoop, LocalBoxFuture) -> LocalBoxFuture>;

/// A task's done callback.
type DoneCallback = Box<dyn FnOnce()>;

static TASK_COUNTER: AtomicU64 = AtomicU64::new(1);

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for a wake.
    Idle,
    /// In the ready queue.
    Scheduled,
    /// Being polled.
    Running,
    /// Being polled, and woken meanwhile: goes back to the ready queue after the poll.
    RunningWoken,
    /// Finished (output, error, or cancelled).
    Done,
}

/// The loop's side of a task.
pub(crate) struct TaskCore {
    /// Slab key in the loop's task table (the waker's identity).
    id: Cell<usize>,
    /// `get_name`/`set_name`.
    name: RefCell<String>,
    /// Lifecycle.
    stage: Cell<Stage>,
    /// `cancel()` was called; the future is dropped at its next step.
    cancel_requested: Cell<bool>,
    /// The future (none while polled, and after completion).
    future: RefCell<Option<LocalBoxFuture>>,
    /// How it ended (`None` while running or on success).
    error: RefCell<Option<Error>>,
    /// The waker handed to the future, made on first poll.
    waker: RefCell<Option<Waker>>,
    /// Tasks and futures awaiting this one.
    join_wakers: RefCell<Vec<Waker>>,
    /// Done callbacks, by id.
    done_callbacks: DoneCallbacks<DoneCallback>,
    /// Live `Task<T>` handles; when none is left a failure is reported at once.
    handles: Cell<usize>,
    /// The result or error was retrieved through a handle.
    retrieved: Cell<bool>,
    /// The loop.
    event_loop: Weak<Inner>,
}

/// Wakes a task from any thread.
struct TaskWaker {
    /// The task's slab key.
    id: usize,
    /// The loop's thread-safe side.
    remote: Arc<crate::event_loop::Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let on_loop = crate::event_loop::with_running_loop(|lp| {
            let same = Arc::ptr_eq(&lp.inner.remote, &self.remote);
            if same {
                lp.wake_task(self.id);
            }
            same
        });
        if on_loop != Some(true) {
            // Another thread, or the loop is not running: the loop picks it up at its next turn.
            let _ = self.remote.push(crate::event_loop::RemoteItem::Wake(self.id));
        }
    }
}

impl TaskCore {
    pub(crate) fn name(&self) -> String {
        self.name.borrow().clone()
    }

    /// Puts the task in the ready queue unless it is already there or finished.
    fn schedule(self: &Rc<Self>, event_loop: &EventLoop) {
        match self.stage.get() {
            Stage::Idle => {
                self.stage.set(Stage::Scheduled);
                event_loop.inner.ready.borrow_mut().push_back(Ready::Task(self.clone()));
            }
            Stage::Running => self.stage.set(Stage::RunningWoken),
            Stage::Scheduled | Stage::RunningWoken | Stage::Done => {}
        }
    }

    /// One step (asyncio's `Task.__step`): poll the future once, or drop it if cancelled.
    pub(crate) fn step(self: &Rc<Self>, event_loop: &EventLoop) {
        if self.stage.get() == Stage::Done {
            return;
        }
        self.stage.set(Stage::Running);
        if self.cancel_requested.get() {
            drop(self.future.borrow_mut().take());
            self.finish(event_loop, Some(Error::Cancelled));
            return;
        }
        let Some(mut future) = self.future.borrow_mut().take() else { return };
        let waker = self.waker(event_loop);
        let started = event_loop.get_debug().then(Instant::now);
        let polled = catch_unwind(AssertUnwindSafe(|| {
            future.as_mut().poll(&mut Context::from_waker(&waker))
        }));
        if let Some(started) = started {
            event_loop.warn_if_slow(&format!("<Task {}>", self.name()), started);
        }
        match polled {
            Ok(Poll::Ready(())) => {
                drop(future);
                self.finish(event_loop, None);
            }
            Ok(Poll::Pending) if self.cancel_requested.get() => {
                drop(future);
                self.finish(event_loop, Some(Error::Cancelled));
            }
            Ok(Poll::Pending) => {
                *self.future.borrow_mut() = Some(future);
                let woken = self.stage.get() == Stage::RunningWoken;
                self.stage.set(Stage::Idle);
                if woken {
                    self.schedule(event_loop);
                }
            }
            Err(payload) => {
                drop(future);
                self.finish(event_loop, Some(Error::Panic(panic_message(&*payload))));
            }
        }
    }

    fn waker(&self, event_loop: &EventLoop) -> Waker {
        self.waker
            .borrow_mut()
            .get_or_insert_with(|| {
                Waker::from(Arc::new(TaskWaker {
                    id: self.id.get(),
                    remote: event_loop.inner.remote.clone(),
                }))
            })
            .clone()
    }

    fn finish(self: &Rc<Self>, event_loop: &EventLoop, error: Option<Error>) {
        self.stage.set(Stage::Done);
        let report = matches!(error, Some(Error::Panic(_))) && self.handles.get() == 0;
        *self.error.borrow_mut() = error;
        {
            let mut tasks = event_loop.inner.tasks.borrow_mut();
            if tasks.get(self.id.get()).is_some_and(|t| Rc::ptr_eq(t, self)) {
                tasks.remove(self.id.get());
            }
        }
        for waker in self.join_wakers.take() {
            waker.wake();
        }
        for callback in self.done_callbacks.take() {
            let _ = event_loop.call_soon(callback);
        }
        if report {
            self.report_unretrieved(event_loop);
        }
    }

    fn report_unretrieved(&self, event_loop: &EventLoop) {
        let error = self.error.borrow().clone();
        let context = ExceptionContext {
            error,
            ..ExceptionContext::new("Task exception was never retrieved").with_task(self.name())
        };
        event_loop.call_exception_handler(context);
    }

    /// The loop closed with this task unfinished: drop its future, mark it cancelled.
    pub(crate) fn abandon(&self) {
        drop(self.future.borrow_mut().take());
        self.stage.set(Stage::Done);
        *self.error.borrow_mut() = Some(Error::Cancelled);
        self.done_callbacks.clear();
        for waker in self.join_wakers.take() {
            waker.wake();
        }
    }
}

/// A future scheduled on the loop (asyncio's `Task`). Awaiting it gives the future's output,
/// or the error that ended it (`Error::Cancelled`, `Error::Panic`). Dropping the handle does
/// not stop the task. Awaiting it while another loop runs on the thread gives `Error::Runtime`
/// of kind [`RuntimeKind::DifferentLoop`](crate::RuntimeKind::DifferentLoop).
pub struct Task<T> {
    /// The loop's side.
    core: Rc<TaskCore>,
    /// Where the future's output lands.
    output: Rc<RefCell<Option<T>>>,
}

impl EventLoop {
    /// Wraps `future` in a task and schedules its first step (asyncio's `create_task`).
    pub fn create_task<F>(&self, future: F) -> Result<Task<F::Output>>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let name = format!("Task-{}", TASK_COUNTER.fetch_add(1, Ordering::Relaxed));
        self.create_named_task(name, future)
    }

    /// [`create_task`](Self::create_task) with a name (asyncio's `name=`).
    pub fn create_named_task<F>(
        &self,
        name: impl Into<String>,
        future: F,
    ) -> Result<Task<F::Output>>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.check_open()?;
        let output = Rc::new(RefCell::new(None));
        let slot = output.clone();
        let mut boxed: LocalBoxFuture = Box::pin(async move {
            let value = future.await;
            *slot.borrow_mut() = Some(value);
        });
        let factory = self.inner.task_factory.borrow().clone();
        if let Some(factory) = factory {
            boxed = factory(self, boxed);
        }
        let core = Rc::new(TaskCore {
            id: Cell::new(0),
            name: RefCell::new(name.into()),
            stage: Cell::new(Stage::Idle),
            cancel_requested: Cell::new(false),
            future: RefCell::new(Some(boxed)),
            error: RefCell::new(None),
            waker: RefCell::new(None),
            join_wakers: RefCell::new(Vec::new()),
            done_callbacks: DoneCallbacks::new(),
            handles: Cell::new(1),
            retrieved: Cell::new(false),
            event_loop: Rc::downgrade(&self.inner),
        });
        let id = self.inner.tasks.borrow_mut().insert(core.clone());
        core.id.set(id);
        core.schedule(self);
        Ok(Task { core, output })
    }

    /// Sets the task factory (`None` restores the default).
    pub fn set_task_factory(&self, factory: Option<TaskFactory>) {
        *self.inner.task_factory.borrow_mut() = factory;
    }

    /// The task factory in use, if any.
    pub fn get_task_factory(&self) -> Option<TaskFactory> {
        self.inner.task_factory.borrow().clone()
    }

    /// Schedules the task with slab key `id` (a waker fired).
    pub(crate) fn wake_task(&self, id: usize) {
        let task = self.inner.tasks.borrow().get(id).cloned();
        if let Some(task) = task {
            task.schedule(self);
        }
    }
}

impl<T> Task<T> {
    /// Requests cancellation: the future is dropped at the task's next step and the task ends
    /// with `Error::Cancelled`. False if the task is already done.
    pub fn cancel(&self) -> bool {
        let core = &self.core;
        if core.stage.get() == Stage::Done {
            return false;
        }
        core.cancel_requested.set(true);
        if let Some(inner) = core.event_loop.upgrade() {
            core.schedule(&EventLoop { inner });
        }
        true
    }

    /// True once the task finished, whatever the outcome.
    pub fn done(&self) -> bool {
        self.core.stage.get() == Stage::Done
    }

    /// True if the task ended by cancellation.
    pub fn cancelled(&self) -> bool {
        self.done() && matches!(*self.core.error.borrow(), Some(Error::Cancelled))
    }

    /// The task's name.
    pub fn get_name(&self) -> String {
        self.core.name()
    }

    /// Renames the task.
    pub fn set_name(&self, name: impl Into<String>) {
        *self.core.name.borrow_mut() = name.into();
    }

    /// The error that ended the task (`Ok(None)` on success); `Error::InvalidState` while it
    /// runs.
    pub fn exception(&self) -> Result<Option<Error>> {
        if !self.done() {
            return Err(Error::invalid_state(StateKind::NotDone, "Exception is not set."));
        }
        self.core.retrieved.set(true);
        Ok(self.core.error.borrow().clone())
    }

    /// Calls `callback` (through `call_soon`, never inline) once the task is done; returns an
    /// id for [`remove_done_callback`](Self::remove_done_callback).
    pub fn add_done_callback<F: FnOnce() + 'static>(&self, callback: F) -> u64 {
        if !self.done() {
            return self.core.done_callbacks.add(Box::new(callback));
        }
        if let Some(inner) = self.core.event_loop.upgrade() {
            let _ = EventLoop { inner }.call_soon(callback);
        }
        self.core.done_callbacks.next_id()
    }

    /// Removes a done callback; true if it was still registered.
    pub fn remove_done_callback(&self, id: u64) -> bool {
        self.core.done_callbacks.remove(id) != 0
    }

    /// Ready once the task is done, without taking its output (for `wait`): the waker is
    /// woken when it finishes.
    pub(crate) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done() {
            return Poll::Ready(());
        }
        self.register_join_waker(cx.waker());
        Poll::Pending
    }

    /// True if the task ended with an error other than cancellation (it panicked); does not
    /// count as retrieving it.
    pub(crate) fn ended_with_error(&self) -> bool {
        self.done() && !matches!(*self.core.error.borrow(), None | Some(Error::Cancelled))
    }

    /// Calls `f` with the output, if the task produced one and it was not taken yet.
    pub(crate) fn peek_output<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.output.borrow().as_ref())
    }

    fn register_join_waker(&self, waker: &Waker) {
        let mut wakers = self.core.join_wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// The output, moved out (for awaiting the task).
    pub(crate) fn take_output(&self) -> Result<T> {
        self.core.retrieved.set(true);
        if let Some(err) = self.core.error.borrow().clone() {
            return Err(err);
        }
        self.output.borrow_mut().take().ok_or_else(|| {
            Error::invalid_state(
                StateKind::AlreadyTaken,
                "the task's output was already taken by an earlier await",
            )
        })
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if let Err(err) = check_awaited_on(&self.core.event_loop, || format!("{:?}", *self)) {
            return Poll::Ready(Err(err));
        }
        if self.done() {
            return Poll::Ready(self.take_output());
        }
        self.register_join_waker(cx.waker());
        Poll::Pending
    }
}

impl<T> Clone for Task<T> {
    fn clone(&self) -> Task<T> {
        self.core.handles.set(self.core.handles.get() + 1);
        Task { core: self.core.clone(), output: self.output.clone() }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        let core = &self.core;
        core.handles.set(core.handles.get() - 1);
        let unretrieved_panic = core.handles.get() == 0
            && core.stage.get() == Stage::Done
            && !core.retrieved.get()
            && matches!(*core.error.borrow(), Some(Error::Panic(_)));
        if unretrieved_panic {
            if let Some(inner) = core.event_loop.upgrade() {
                core.report_unretrieved(&EventLoop { inner });
            }
        }
    }
}

impl<T> fmt::Debug for Task<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Task {} {:?}>", self.core.name(), self.core.stage.get())
    }
}

impl EventLoop {
    /// Cancels every unfinished task and runs the loop until they have all finished
    /// (what `asyncio.run` does before closing).
    pub(crate) fn cancel_all_tasks(&self) {
        let tasks: Vec<Rc<TaskCore>> =
            self.inner.tasks.borrow().iter().map(|(_, t)| t.clone()).collect();
        if tasks.is_empty() {
            return;
        }
        for task in &tasks {
            task.cancel_requested.set(true);
            task.schedule(self);
        }
        let _ = self.run_until_complete(std::future::poll_fn(move |cx| {
            match tasks.iter().find(|t| t.stage.get() != Stage::Done) {
                None => Poll::Ready(()),
                Some(pending) => {
                    pending.join_wakers.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            }
        }));
    }
}
