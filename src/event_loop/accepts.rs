//! Awaitable persistent ops: `EventLoop::accepts(fd)` gives the connections an
//! `Op::AcceptMulti` accepts, one `next().await` at a time.
//!
//! Dropping the [`Accepts`] cancels the op (as dropping an `OpFuture` does) and closes the
//! connections accepted but not yet taken.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use super::{Completed, EventLoop, Inner, OpOwner, OpTarget};
use crate::driver::{Op, OpId};
use crate::error::Result;

/// The owner the driver holds for a persistent op awaited by a task.
pub(crate) struct AcceptWaiter {
    /// Results not yet taken, oldest first.
    results: RefCell<VecDeque<io::Result<u32>>>,
    /// The final completion arrived.
    ended: Cell<bool>,
    /// The task awaiting the next result.
    waker: RefCell<Option<Waker>>,
}

impl OpTarget for AcceptWaiter {
    /// Queues one completion's result and wakes the awaiting task.
    fn complete(self: Rc<Self>, done: Completed) {
        let more = done.more();
        self.results.borrow_mut().push_back(done.result);
        if !more {
            self.ended.set(true);
        }
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// The results of a persistent accept, in order; ends after the op's final completion.
pub(crate) struct Accepts {
    /// Shared with the driver's owner slot.
    waiter: Rc<AcceptWaiter>,
    /// The op, for cancellation on drop.
    id: OpId,
    /// The loop whose driver runs the op.
    event_loop: Weak<Inner>,
}

impl EventLoop {
    /// Starts accepting on the listening socket `fd` (`Op::AcceptMulti`).
    pub(crate) fn accepts(&self, fd: RawFd) -> Result<Accepts> {
        self.check_open()?;
        let waiter = Rc::new(AcceptWaiter {
            results: RefCell::new(VecDeque::new()),
            ended: Cell::new(false),
            waker: RefCell::new(None),
        });
        let owner: OpOwner = waiter.clone();
        let op = Op::AcceptMulti { fd };
        let id = self.with_driver(|driver| driver.submit(op, owner)).ok_or(crate::Error::Closed)?;
        Ok(Accepts { waiter, id, event_loop: Rc::downgrade(&self.inner) })
    }
}

impl Accepts {
    /// The next accepted connection (or accept error); `None` once the op has ended.
    pub(crate) async fn next(&mut self) -> Option<io::Result<OwnedFd>> {
        let waiter = self.waiter.clone();
        let result = poll_fn(move |cx| {
            if let Some(result) = waiter.results.borrow_mut().pop_front() {
                return Poll::Ready(Some(result));
            }
            if waiter.ended.get() {
                return Poll::Ready(None);
            }
            *waiter.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        // SAFETY: a successful accept's result is a new descriptor that nothing else owns.
        Some(result.map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }
}

impl Drop for Accepts {
    fn drop(&mut self) {
        if !self.waiter.ended.get() {
            if let Some(inner) = self.event_loop.upgrade() {
                EventLoop { inner }.with_driver(|driver| driver.cancel(self.id));
            }
        }
        for fd in self.waiter.results.borrow_mut().drain(..).flatten() {
            // SAFETY: accepted for this stream and never handed out: closing is its only use.
            drop(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
    }
}
