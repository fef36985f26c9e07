//! Delivering protocol callbacks without re-entering a protocol that is already running: the
//! re-entrancy queue every transport calls its protocol through, and the events it carries
//! (`events.rs`). How each kind of protocol takes each event is `crate::protocol`'s business:
//! this module names neither transports nor protocol traits.
//!
//! A transport calls its protocol through a [`Dispatcher`]. If the protocol's `RefCell` is
//! borrowed (the protocol is inside one of its own callbacks and called, say, `write`, which
//! crossed the high-water mark), the event is queued and delivered as soon as the running
//! callback returns, in order; events queued behind it wait their turn.
//!
//! A protocol callback that panics is caught in one place, [`call`], and never unwinds into the
//! loop: the panic is recorded (see [`Dispatcher::report_failures`]) with the name of the
//! callback that was running. In a data callback it is a fatal error for the transport
//! (asyncio's "Fatal error: protocol.data_received() call failed."); in `connection_made`,
//! `pause_writing` or `resume_writing` ([`Role::Notice`]) it is only reported, as asyncio only
//! logs an exception there.

mod events;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

pub(crate) use events::{DatagramEvent, Event};

use crate::error::{panic_message, Error};
use crate::event_loop::ExceptionContext;
#[cfg(doc)]
use crate::event_loop::LoopFd;

/// A protocol callback as a [`Dispatcher`] queues it when it cannot be delivered at once.
pub(crate) trait Deliver: Sized {
    /// Received data as the transport lends it: delivered as is when nothing is queued.
    type Data<'a>;
    /// The event that delivers an owned copy of `data` later.
    fn copied(data: Self::Data<'_>) -> Self;
    /// `connection_lost(error)`.
    fn lost(error: Option<Error>) -> Self;
    /// The protocol method this event calls.
    fn callback(&self) -> &'static str;
    /// What delivering it means for the dispatcher.
    fn role(&self) -> Role;
}

/// What a delivered event means for the dispatcher.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `eof_received`: its answer is recorded.
    Eof,
    /// `connection_lost`: the protocol is dropped after it.
    Lost,
    /// `connection_made`, `pause_writing`, `resume_writing`: asyncio runs them as plain
    /// callbacks, so their failure is reported but does not close the transport.
    Notice,
    /// Anything else (received data: a failure is fatal).
    Other,
}

/// A protocol callback that failed: it panicked, or (`get_buffer`) returned an empty buffer.
#[derive(Debug)]
pub struct Failure {
    /// Which method (`"data_received"`, `"get_buffer"`, ...).
    pub(crate) callback: &'static str,
    /// What went wrong: [`Error::Panic`] with the panic's message, or [`Error::Runtime`].
    pub(crate) error: Error,
}

impl Failure {
    /// `callback` failed with `error`.
    pub(crate) fn new(callback: &'static str, error: Error) -> Failure {
        Failure { callback, error }
    }
}

/// What delivering an event gave.
pub(crate) enum Delivered<E> {
    /// Delivered; for an EOF, `keep_open` is the protocol's answer.
    Done {
        /// `eof_received`'s return value (false for other events).
        keep_open: bool,
    },
    /// The protocol is borrowed: the event comes back.
    Busy(E),
    /// The callback failed (the event counts as delivered).
    Failed(Failure),
}

/// A protocol as a transport sees it (type-erased), taking events of type `E`.
pub(crate) trait ErasedProtocol<E: Deliver> {
    /// Delivers `event` unless the protocol is borrowed.
    fn deliver(&self, event: E) -> Delivered<E>;
    /// Delivers received data without copying it first (a copy comes back in `Busy`).
    fn data(&self, data: E::Data<'_>) -> Delivered<E>;
    /// The user's `Rc<RefCell<P>>`, for `get_protocol`.
    fn as_any(&self) -> Rc<dyn Any>;
    /// The transport below let go of this protocol without `connection_lost`: its loop closed
    /// with it open (see `OpenTransport`). A protocol that is itself a layer (TLS) lets go of
    /// what it holds in turn; a user's protocol is simply dropped.
    fn released(&self) {}
}

/// Which callback is running: set by a protocol adapter before each user method it calls, so
/// that a panic is named after the method that raised it.
pub(crate) type Calling = Cell<&'static str>;

/// Calls `call(protocol, arg, calling)` unless the protocol is borrowed (then `busy(arg)` comes
/// back to be queued). The one place a panic in a protocol callback is caught: it becomes a
/// failure of the callback `calling` names (`callback` unless the adapter said otherwise).
/// The protocol is only ever observed through its own methods after a panic; asyncio likewise
/// goes on calling a protocol whose callback raised (`connection_lost` last).
pub(crate) fn call<P: ?Sized, A, E>(
    protocol: &RefCell<P>,
    callback: &'static str,
    arg: A,
    busy: impl FnOnce(A) -> E,
    call: impl FnOnce(&mut P, A, &Calling) -> Result<bool, Failure>,
) -> Delivered<E> {
    let Ok(mut protocol) = protocol.try_borrow_mut() else { return Delivered::Busy(busy(arg)) };
    let calling = Cell::new(callback);
    match catch_unwind(AssertUnwindSafe(|| call(&mut protocol, arg, &calling))) {
        Ok(Ok(keep_open)) => Delivered::Done { keep_open },
        Ok(Err(failure)) => Delivered::Failed(failure),
        Err(payload) => {
            Delivered::Failed(Failure::new(calling.get(), Error::Panic(panic_message(&*payload))))
        }
    }
}

/// The protocol of a transport and the events waiting for it.
pub(crate) struct Dispatcher<E: Deliver> {
    /// The protocol (`None` after `connection_lost`, which breaks the usual
    /// transport → protocol → transport cycle, as asyncio does).
    protocol: RefCell<Option<Rc<dyn ErasedProtocol<E>>>>,
    /// Events that met a busy protocol, oldest first.
    deferred: RefCell<VecDeque<E>>,
    /// Callbacks that failed, not yet handled by the transport, each with whether it closes
    /// the transport (false for a [`Role::Notice`] callback).
    failures: RefCell<Vec<(Failure, bool)>>,
    /// `eof_received` returned false (now or when a deferred EOF was delivered): the transport
    /// is to close; not yet acted on.
    close_after_eof: Cell<bool>,
}

impl<E: Deliver> Dispatcher<E> {
    pub(crate) fn new(protocol: Rc<dyn ErasedProtocol<E>>) -> Dispatcher<E> {
        Dispatcher {
            protocol: RefCell::new(Some(protocol)),
            deferred: RefCell::new(VecDeque::new()),
            failures: RefCell::new(Vec::new()),
            close_after_eof: Cell::new(false),
        }
    }

    /// Lets go of the protocol, and of the events it has not taken, without delivering them
    /// (the transport's loop closed with it open: see `OpenTransport`).
    pub(crate) fn release(&self) {
        let protocol = self.protocol.borrow_mut().take();
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        // Outside the borrows: a protocol's drop may call back into its transport.
        if let Some(protocol) = &protocol {
            protocol.released();
        }
        drop((protocol, deferred));
    }

    fn protocol(&self) -> Option<Rc<dyn ErasedProtocol<E>>> {
        self.protocol.borrow().clone()
    }

    /// Replaces the protocol (`set_protocol`); queued events go to the new one.
    pub(crate) fn set(&self, protocol: Rc<dyn ErasedProtocol<E>>) {
        *self.protocol.borrow_mut() = Some(protocol);
    }

    /// The user's protocol object.
    pub(crate) fn get(&self) -> Option<Rc<dyn Any>> {
        self.protocol().map(|p| p.as_any())
    }

    /// Delivers received data now if nothing is queued and the protocol is free, otherwise
    /// queues a copy.
    pub(crate) fn data(&self, data: E::Data<'_>) {
        if self.has_deferred() {
            self.deferred.borrow_mut().push_back(E::copied(data));
            return;
        }
        let Some(protocol) = self.protocol() else { return };
        let delivered = protocol.data(data);
        if let Some(event) = self.settle(Role::Other, delivered) {
            self.deferred.borrow_mut().push_back(event);
            return;
        }
        self.flush();
    }

    /// True once: `eof_received` answered "close" (false) since the last call. An EOF that met
    /// a busy protocol is delivered later like any event, and only its answer decides.
    pub(crate) fn take_close_after_eof(&self) -> bool {
        self.close_after_eof.take()
    }

    /// Delivers `event` after anything queued.
    pub(crate) fn send(&self, event: E) {
        self.deferred.borrow_mut().push_back(event);
        self.flush();
    }

    /// Delivers queued events while the protocol is free.
    #[inline]
    pub(crate) fn flush(&self) {
        if self.has_deferred() {
            self.deliver_deferred();
        }
    }

    /// [`flush`](Self::flush) with events queued (out of line: the hot path has none).
    #[cold]
    fn deliver_deferred(&self) {
        loop {
            let Some(event) = self.deferred.borrow_mut().pop_front() else { return };
            let role = event.role();
            let Some(protocol) = self.protocol() else {
                // After `connection_lost` nothing more is delivered.
                self.deferred.borrow_mut().clear();
                return;
            };
            if let Some(event) = self.settle(role, protocol.deliver(event)) {
                self.deferred.borrow_mut().push_front(event);
                return;
            }
        }
    }

    /// True while events wait for a busy protocol.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.borrow().is_empty()
    }

    /// Records what delivering an event of `role` gave; the event back if the protocol was
    /// busy.
    fn settle(&self, role: Role, delivered: Delivered<E>) -> Option<E> {
        match delivered {
            Delivered::Busy(event) => return Some(event),
            Delivered::Done { keep_open } => {
                if role == Role::Eof && !keep_open {
                    self.close_after_eof.set(true);
                }
            }
            Delivered::Failed(failure) => {
                self.failures.borrow_mut().push((failure, role != Role::Notice));
            }
        }
        if role == Role::Lost {
            self.protocol.borrow_mut().take();
        }
        None
    }

    /// Sends each callback that failed since the last call, oldest first, to the exception
    /// handler through `report` (a transport's [`LoopFd::report`], which names the
    /// transport and its fd): asyncio's "Fatal error: protocol.X() call failed." for a fatal
    /// one, "protocol.X() failed" for `connection_made`, `pause_writing` and
    /// `resume_writing`, which asyncio only logs. Returns the first fatal error, which the
    /// transport closes with. Called after every delivery: it costs one borrow when nothing
    /// failed.
    #[inline]
    pub(crate) fn report_failures(&self, report: impl Fn(ExceptionContext)) -> Option<Error> {
        if self.failures.borrow().is_empty() {
            return None;
        }
        self.report_each_failure(&report)
    }

    /// [`report_failures`](Self::report_failures) with failures recorded.
    #[cold]
    fn report_each_failure(&self, report: &dyn Fn(ExceptionContext)) -> Option<Error> {
        let failures = std::mem::take(&mut *self.failures.borrow_mut());
        let mut fatal = None;
        for (Failure { callback, error }, closes) in failures {
            let message = match closes {
                true => format!("Fatal error: protocol.{callback}() call failed."),
                false => format!("protocol.{callback}() failed"),
            };
            report(ExceptionContext::new(message).with_error(error.clone()));
            if closes {
                fatal.get_or_insert(error);
            }
        }
        fatal
    }
}
