//! [`LoopFd`]: an fd owned by a transport (or a server's listener) and used through its loop's
//! driver, closed through the driver exactly once.
//!
//! # Implementation
//! Every transport core used to carry the same four pieces by hand: the `Weak` loop handle,
//! the fd (`RefCell<Option<OwnedFd>>`, `None` once closed) and its number, submit/cancel
//! helpers and a `close_fd`. `LoopFd` is those pieces once. Its methods cost what the
//! hand-written ones did: `submit` and `cancel` upgrade the `Weak` and borrow the driver (the
//! owner's `Rc` is the caller's); [`raw`](LoopFd::raw) is a plain field read, so building an
//! op never touches the `RefCell`; [`with_fd`](LoopFd::with_fd) borrows it once for a direct
//! syscall.
//!
//! Closing follows the driver contract ("Fd numbers" in `driver/mod.rs`): the ops in flight
//! on the fd are cancelled first ([`close`](LoopFd::close) takes their slots), then an
//! `Op::Close` takes the fd. The driver forgets the fd (epoll drops its registration) and
//! orders the close after every op submitted before it, also the cancelled ones still in the
//! kernel, so none of them can reach a file that reuses the number. Without a loop (or with
//! its driver gone) the fd is closed by `close(2)` at once.
//!
//! Dropping a `LoopFd` that nobody closed tells the driver (`forget_fd`) and closes the fd
//! with `close(2)` at once, which is what dropping the `OwnedFd` did before, plus the forget
//! the contract asks for. Not an `Op::Close`: that one must come after every op on the fd,
//! and while the owner's own ops cannot be in flight then (each holds the owner alive), ops
//! submitted by someone else can: a server's listener is dropped unclosed when the loop
//! closes, before the accept tasks (and their `AcceptMulti`) are. `forget_fd` leaves an fd
//! that ops still wait on alone.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use crate::driver::{Op, OpId};
use crate::event_loop::{EventLoop, ExceptionContext, Inner, OpOwner};

/// An fd registered with a loop and owned by one transport or listener: the ops on it are
/// submitted, cancelled and stopped through it, and it is closed once: by
/// [`close`](LoopFd::close) (an `Op::Close`), or on drop (`forget_fd` and `close(2)`).
pub(crate) struct LoopFd {
    /// The loop whose driver runs the ops on the fd.
    event_loop: Weak<Inner>,
    /// The fd; `None` once its close was submitted (or done).
    fd: RefCell<Option<OwnedFd>>,
    /// Its number, for ops and messages (also after the close).
    raw: RawFd,
}

impl LoopFd {
    /// Takes `fd` for `event_loop`'s driver.
    pub(crate) fn new(event_loop: &EventLoop, fd: OwnedFd) -> LoopFd {
        LoopFd {
            event_loop: Rc::downgrade(&event_loop.inner),
            raw: fd.as_raw_fd(),
            fd: RefCell::new(Some(fd)),
        }
    }

    /// The fd's number, for ops and messages (still the old number once closed).
    #[inline]
    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }

    /// The loop, unless it is gone.
    #[inline]
    pub(crate) fn event_loop(&self) -> Option<EventLoop> {
        self.event_loop.upgrade().map(|inner| EventLoop { inner })
    }

    /// Whether the fd is still open (its close not yet submitted).
    pub(crate) fn is_open(&self) -> bool {
        self.fd.borrow().is_some()
    }

    /// The fd's number while it is open (`get_extra_info("socket")`, `"pipe"`).
    pub(crate) fn open_fd(&self) -> Option<RawFd> {
        self.is_open().then_some(self.raw)
    }

    /// Runs `f` on the fd (a direct syscall); `None` once it is closed. `f` must not close
    /// this `LoopFd` (the fd is borrowed meanwhile).
    #[inline]
    pub(crate) fn with_fd<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        self.fd.borrow().as_ref().map(|fd| f(fd.as_fd()))
    }

    /// Submits `op` (an op on this fd) for `owner`; `None` if the loop or its driver is gone.
    #[inline]
    pub(crate) fn submit(&self, op: Op, owner: impl Into<OpOwner>) -> Option<OpId> {
        let owner = owner.into();
        self.event_loop()?.with_driver(|driver| driver.submit(op, owner))
    }

    /// Cancels the op in `slot`, if any, and empties the slot (its owner is dropped: no
    /// completion comes for it).
    #[inline]
    pub(crate) fn cancel(&self, slot: &Cell<Option<OpId>>) {
        if let Some(id) = slot.take() {
            if let Some(event_loop) = self.event_loop() {
                event_loop.with_driver(|driver| driver.cancel(id));
            }
        }
    }

    /// Stops the persistent op in `slot`, if any, keeping it there: what the kernel already
    /// took is still delivered, then its final `ECANCELED`.
    pub(crate) fn stop(&self, slot: &Cell<Option<OpId>>) {
        if let (Some(id), Some(event_loop)) = (slot.get(), self.event_loop()) {
            event_loop.with_driver(|driver| driver.stop(id));
        }
    }

    /// Closes the fd, once (later calls do nothing): cancels the ops still in the `in_flight`
    /// slots, then submits an `Op::Close`, which the driver orders after every op submitted
    /// before it. Any other op on the fd must be finished or cancelled already. Without a loop
    /// (or driver) the fd is closed here.
    pub(crate) fn close(&self, in_flight: &[&Cell<Option<OpId>>]) {
        for slot in in_flight {
            self.cancel(slot);
        }
        let Some(fd) = self.fd.borrow_mut().take() else { return };
        self.close_through_driver(fd);
    }

    /// Hands `fd` to an `Op::Close`, or closes it at once when the loop or its driver is
    /// gone.
    fn close_through_driver(&self, fd: OwnedFd) {
        let Some(event_loop) = self.event_loop() else { return drop(fd) };
        // The op owns the fd from here on and closes it; if the driver is gone, the closure
        // (and the fd with it) is dropped unused, which closes it.
        event_loop.with_driver(move |driver| {
            driver.submit(Op::Close { fd: fd.into_raw_fd() }, OpOwner::Close)
        });
    }

    /// Sends `context` (with `transport` and this fd filled in) to the exception handler.
    pub(crate) fn report(&self, mut context: ExceptionContext, transport: impl Fn() -> String) {
        let Some(event_loop) = self.event_loop() else { return };
        context.transport = Some(transport());
        context.fd = Some(self.raw);
        event_loop.call_exception_handler(context);
    }
}

impl Drop for LoopFd {
    /// Closes the fd if nobody did: `forget_fd`, then `close(2)` (see the module docs).
    fn drop(&mut self) {
        let Some(fd) = self.fd.get_mut().take() else { return };
        if let Some(inner) = self.event_loop.upgrade() {
            // `try_`: a drop inside driver code (the driver dropping an owner) must not panic;
            // the driver is done with the fd's ops then anyway.
            if let Ok(mut driver) = inner.driver.try_borrow_mut() {
                if let Some(driver) = driver.as_mut() {
                    driver.forget_fd(self.raw);
                }
            }
        }
        drop(fd);
    }
}

impl fmt::Debug for LoopFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.is_open() { "open" } else { "closed" };
        write!(f, "LoopFd({} {state})", self.raw)
    }
}

#[cfg(test)]
mod tests;
