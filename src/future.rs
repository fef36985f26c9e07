//! `Future<T>`: a result set later by callbacks (asyncio's `Future`), awaitable by tasks.

use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use crate::done_callbacks::DoneCallbacks;
use crate::error::{Error, Result, StateKind};
use crate::event_loop::{check_awaited_on, EventLoop, Inner};

/// Where a future is.
enum State<T> {
    /// No result yet.
    Pending,
    /// Result or error set (cancellation is `Err(Error::Cancelled)`).
    Done(Result<T>),
    /// The result was moved out by an await.
    Taken,
}

/// A done callback, called with the future.
type DoneCallback<T> = Box<dyn FnOnce(&Future<T>)>;

/// The shared state of a future.
struct Cell_<T> {
    /// The state.
    state: RefCell<State<T>>,
    /// Tasks awaiting the result.
    wakers: RefCell<Vec<Waker>>,
    /// Done callbacks, by id.
    callbacks: DoneCallbacks<DoneCallback<T>>,
    /// The loop that runs the done callbacks.
    event_loop: Weak<Inner>,
}

/// A placeholder for a result that callbacks set later (asyncio's `Future`). Clones share the
/// same state. Done callbacks run through `call_soon`, never inline. Awaiting gives the
/// result, moving it out: one awaiter receives the value (later awaits get
/// `Error::InvalidState`; use [`result`](Self::result) to read it by clone). Awaiting it while
/// another loop runs on the thread (in a task of that loop) gives `Error::Runtime` of kind
/// [`RuntimeKind::DifferentLoop`](crate::RuntimeKind::DifferentLoop), as asyncio refuses a
/// future attached to a different loop.
pub struct Future<T> {
    /// Shared state.
    inner: Rc<Cell_<T>>,
}

impl EventLoop {
    /// A new pending future attached to this loop (asyncio's `create_future`).
    pub fn create_future<T: 'static>(&self) -> Future<T> {
        Future {
            inner: Rc::new(Cell_ {
                state: RefCell::new(State::Pending),
                wakers: RefCell::new(Vec::new()),
                callbacks: DoneCallbacks::new(),
                event_loop: Rc::downgrade(&self.inner),
            }),
        }
    }
}

impl<T: 'static> Future<T> {
    /// Sets the result; `Error::InvalidState` if already done.
    pub fn set_result(&self, value: T) -> Result<()> {
        self.complete(Ok(value))
    }

    /// Sets the error; `Error::InvalidState` if already done.
    pub fn set_exception(&self, error: Error) -> Result<()> {
        self.complete(Err(error))
    }

    /// Cancels the future; false if it was already done.
    pub fn cancel(&self) -> bool {
        self.complete(Err(Error::Cancelled)).is_ok()
    }

    fn complete(&self, result: Result<T>) -> Result<()> {
        {
            let mut state = self.inner.state.borrow_mut();
            if !matches!(*state, State::Pending) {
                return Err(Error::invalid_state(
                    StateKind::AlreadyDone,
                    "invalid state: the future is already done",
                ));
            }
            *state = State::Done(result);
        }
        for waker in self.inner.wakers.take() {
            waker.wake();
        }
        let callbacks = self.inner.callbacks.take();
        if let Some(inner) = self.inner.event_loop.upgrade() {
            let event_loop = EventLoop { inner };
            for callback in callbacks {
                let future = self.clone();
                let _ = event_loop.call_soon(move || callback(&future));
            }
        }
        Ok(())
    }

    /// True once a result, an error or a cancellation is set.
    pub fn done(&self) -> bool {
        !matches!(*self.inner.state.borrow(), State::Pending)
    }

    /// True if cancelled.
    pub fn cancelled(&self) -> bool {
        matches!(*self.inner.state.borrow(), State::Done(Err(Error::Cancelled)))
    }

    /// The error set (`Ok(None)` on a result); `InvalidState` while pending.
    pub fn exception(&self) -> Result<Option<Error>> {
        match &*self.inner.state.borrow() {
            State::Pending => {
                Err(Error::invalid_state(StateKind::NotDone, "Exception is not set."))
            }
            State::Done(Err(Error::Cancelled)) => Err(Error::Cancelled),
            State::Done(Err(err)) => Ok(Some(err.clone())),
            State::Done(Ok(_)) | State::Taken => Ok(None),
        }
    }

    /// Calls `callback(&future)` through `call_soon` once done (at once if already done);
    /// returns an id for [`remove_done_callback`](Self::remove_done_callback).
    pub fn add_done_callback<F: FnOnce(&Future<T>) + 'static>(&self, callback: F) -> u64 {
        if !self.done() {
            return self.inner.callbacks.add(Box::new(callback));
        }
        if let Some(inner) = self.inner.event_loop.upgrade() {
            let future = self.clone();
            let _ = EventLoop { inner }.call_soon(move || callback(&future));
        }
        self.inner.callbacks.next_id()
    }

    /// Removes a done callback; returns how many were removed (0 or 1).
    pub fn remove_done_callback(&self, id: u64) -> usize {
        self.inner.callbacks.remove(id)
    }
}

impl<T: Clone + 'static> Future<T> {
    /// The result (cloned) or the error; `InvalidState` while pending.
    pub fn result(&self) -> Result<T> {
        match &*self.inner.state.borrow() {
            State::Pending => Err(Error::invalid_state(StateKind::NotDone, "Result is not set.")),
            State::Done(result) => result.clone(),
            State::Taken => Err(taken()),
        }
    }
}

fn taken() -> Error {
    Error::invalid_state(
        StateKind::AlreadyTaken,
        "the result was already moved out by an earlier await",
    )
}

impl<T> std::future::Future for Future<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if let Err(err) = check_awaited_on(&self.inner.event_loop, || format!("{:?}", *self)) {
            return Poll::Ready(Err(err));
        }
        let mut state = self.inner.state.borrow_mut();
        match &*state {
            State::Pending => {
                let mut wakers = self.inner.wakers.borrow_mut();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
            // Errors (cancellation included) stay: every awaiter gets them, and `cancelled()`
            // and `exception()` keep reporting them.
            State::Done(Err(err)) => Poll::Ready(Err(err.clone())),
            State::Done(Ok(_)) => match std::mem::replace(&mut *state, State::Taken) {
                State::Done(Ok(value)) => Poll::Ready(Ok(value)),
                _ => unreachable!("checked to be a value just above"),
            },
            State::Taken => Poll::Ready(Err(taken())),
        }
    }
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Future<T> {
        Future { inner: self.inner.clone() }
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.inner.state.borrow() {
            State::Pending => "pending",
            State::Done(Ok(_)) | State::Taken => "finished",
            State::Done(Err(Error::Cancelled)) => "cancelled",
            State::Done(Err(_)) => "failed",
        };
        write!(f, "<Future {state}>")
    }
}
