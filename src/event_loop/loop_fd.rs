//! [`LoopFd`]: an fd owned by a transport, a server's listener, a `sendfile` transfer or a child's
//! pidfd, and used through its loop's driver, closed through the driver exactly once.
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
//! Closing follows the driver contract ("Fd numbers" in `driver/mod.rs`): only the driver
//! closes an fd it handed to the kernel. [`close`](LoopFd::close) cancels the ops still in the
//! given slots, then hands the fd to the driver's `close_fd`, which closes it once every op
//! naming it was withdrawn before submission or ended in the kernel (a cancelled recv, a server's
//! accept awaited by another task): the number stays allocated until then, so no op can reach a
//! new file that reuses it. Dropping a `LoopFd` that nobody closed does the same. Only with the
//! loop (or its driver) gone is the fd closed at once: the driver drained every op when it was
//! dropped.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

use bytes::Bytes;

use super::{EventLoop, ExceptionContext, Inner, OpOwner};
use crate::driver::{Op, OpId, RecvBuf};
use crate::error::loop_log;

/// An fd registered with a loop and owned by one transport or listener: the ops on it are
/// submitted, cancelled and stopped through it, and it is closed once, by the driver: through
/// [`close`](LoopFd::close), or on drop.
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

    /// Whether a small write goes into the loop's batch for its next turn (see
    /// `Inner::batches_sends`).
    #[inline]
    pub(crate) fn batches_sends(&self) -> bool {
        self.event_loop.upgrade().is_some_and(|inner| inner.batches_sends())
    }

    /// Runs `deliver` (a `data_received`) with `lent`, a second holder of the receive-ring
    /// slot whose bytes it is given, kept by the loop: a write of those bytes to any transport
    /// of the loop (an echo, a proxy's forward) may then hold the slot instead of copying them
    /// (see [`hold_delivered`](Self::hold_delivered)). Unless taken, `lent` is dropped after.
    pub(crate) fn while_delivering(&self, lent: RecvBuf, deliver: impl FnOnce()) {
        let Some(inner) = self.event_loop.upgrade() else { return deliver() };
        let outer = inner.delivering.replace(Some(lent));
        deliver();
        drop(inner.delivering.replace(outer));
    }

    /// `data` as `Bytes` holding the receive-ring slot being delivered (see
    /// [`while_delivering`](Self::while_delivering)), when `data` lies in it: the slot goes
    /// back to the kernel once the `Bytes` and its clones are dropped. Once per delivery. For
    /// a batched send: the loop then submits its batch right after this dispatch, not at the
    /// next turn's wait (see `EventLoop::turn_driver`).
    pub(crate) fn hold_delivered(&self, data: &[u8]) -> Option<Bytes> {
        let inner = self.event_loop.upgrade()?;
        match inner.delivering.take()?.into_bytes_of(data) {
            Ok(held) => {
                inner.sends_hold_slots.set(true);
                Some(held)
            }
            Err(slot) => {
                inner.delivering.set(Some(slot));
                None
            }
        }
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

    /// Submits `op` (an op on this fd) for `owner`; `None` if the fd is closed or the loop or
    /// its driver is gone.
    #[inline]
    pub(crate) fn submit(&self, op: Op, owner: OpOwner) -> Option<OpId> {
        if !self.is_open() {
            return None;
        }
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

    /// Withdraws the one-shot op in `slot` if nothing of it has happened yet (see
    /// `Driver::withdraw`), emptying the slot: true then, or with no op in the slot.
    pub(crate) fn withdraw(&self, slot: &Cell<Option<OpId>>) -> bool {
        slot.get().is_none() || self.take_back(slot).is_some()
    }

    /// Withdraws the one-shot op in `slot` as [`withdraw`](Self::withdraw) does, and hands
    /// it back (a batched send's copy is still to be sent); `None`, leaving the slot as it
    /// was, when the slot is empty or the op not withdrawn.
    pub(crate) fn take_back(&self, slot: &Cell<Option<OpId>>) -> Option<Op> {
        let id = slot.get()?;
        let (_, op) = self.event_loop()?.with_driver(|driver| driver.withdraw(id)).flatten()?;
        slot.set(None);
        Some(op)
    }

    /// Appends `buffers` to the queued send in `slot`, if it holds an owned copy the kernel has
    /// not seen yet (see `Driver::append`); false, with nothing done, otherwise.
    pub(crate) fn append(&self, slot: &Cell<Option<OpId>>, buffers: &[&[u8]]) -> bool {
        let (Some(id), Some(event_loop)) = (slot.get(), self.event_loop()) else { return false };
        event_loop.with_driver(|driver| driver.append(id, buffers)).unwrap_or(false)
    }

    /// Stops the persistent op in `slot`, if any, keeping it there: what the kernel already
    /// took is still delivered, then its final `ECANCELED`.
    pub(crate) fn end_gracefully(&self, slot: &Cell<Option<OpId>>) {
        if let (Some(id), Some(event_loop)) = (slot.get(), self.event_loop()) {
            event_loop.with_driver(|driver| driver.end_gracefully(id));
        }
    }

    /// Closes the fd, once (later calls do nothing): cancels the ops still in the `in_flight`
    /// slots, then hands the fd to the driver, which closes it when no op names it any more.
    /// Without a loop (or driver) the fd is closed here.
    pub(crate) fn close(&self, in_flight: &[&Cell<Option<OpId>>]) {
        for slot in in_flight {
            self.cancel(slot);
        }
        let Some(fd) = self.fd.borrow_mut().take() else { return };
        close_through_driver(&self.event_loop, fd);
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
    /// Closes the fd through the driver if nobody did (see the module docs).
    fn drop(&mut self) {
        if let Some(fd) = self.fd.get_mut().take() {
            close_through_driver(&self.event_loop, fd);
        }
    }
}

/// Hands `fd` to `event_loop`'s driver to close once no op names it, or closes it at once
/// when the loop or its driver is gone (the driver then drained every op when it was dropped).
fn close_through_driver(event_loop: &Weak<Inner>, fd: OwnedFd) {
    let Some(inner) = event_loop.upgrade() else { return drop(fd) };
    // `try_`: a drop inside driver code must not panic. Nothing drops a `LoopFd` there (the
    // driver hands owners back, and drops the ones left only once it is out of the loop), so
    // this is a fallback that closes at once, as before the driver owned closes.
    let Ok(mut driver) = inner.driver.try_borrow_mut() else {
        loop_log!(Error, "fd {} closed while the driver was busy", fd.as_raw_fd());
        return drop(fd);
    };
    match driver.as_mut() {
        Some(driver) => driver.close_fd(fd),
        None if inner.kernel_may_hold_fds.get() => {
            loop_log!(Warn, "fd {} leaked: the kernel may still hold an op on it", fd.as_raw_fd());
            std::mem::forget(fd);
        }
        None => drop(fd),
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
