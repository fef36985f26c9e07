//! Delivering protocol callbacks without re-entering a protocol that is already running.
//!
//! A transport calls its protocol through a [`Dispatcher`]. If the protocol's `RefCell` is
//! borrowed (the protocol is inside one of its own callbacks and called, say, `write`, which
//! crossed the high-water mark), the event is queued and delivered as soon as the running
//! callback returns, in order; events queued behind it wait their turn.
//!
//! A protocol callback that panics is caught here: the panic is recorded (see
//! [`Dispatcher::take_failures`]) for the transport to turn into a fatal error (asyncio's
//! "Fatal error: protocol.data_received() call failed."), and never unwinds into the loop.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use super::stream::Transport;
use crate::error::{panic_message, Error};
use crate::protocol::{BaseProtocol, Protocol};

/// A protocol callback, as queued when it cannot be delivered at once. `T` is the transport
/// type `connection_made` gets (the stream [`Transport`], or a pipe transport).
pub(crate) enum Event<T = Transport> {
    /// `connection_made`.
    Made(T),
    /// `data_received` (the bytes copied, since the read buffer is recycled).
    Data(Vec<u8>),
    /// `eof_received`, whose answer decides whether the transport closes.
    Eof,
    /// `connection_lost`.
    Lost(Option<Error>),
    /// `pause_writing`.
    PauseWriting,
    /// `resume_writing`.
    ResumeWriting,
}

impl<T> Event<T> {
    /// The protocol method this event calls.
    fn callback(&self) -> &'static str {
        match self {
            Event::Made(_) => "connection_made",
            Event::Data(_) => "data_received",
            Event::Eof => "eof_received",
            Event::Lost(_) => "connection_lost",
            Event::PauseWriting => "pause_writing",
            Event::ResumeWriting => "resume_writing",
        }
    }
}

/// A protocol callback that panicked.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Which method (`"data_received"`, ...).
    pub(crate) callback: &'static str,
    /// The panic's message.
    pub(crate) message: String,
}

/// What delivering an event gave.
pub(crate) enum Delivered<T = Transport> {
    /// Delivered; for `Eof`, `keep_open` is the protocol's answer.
    Done {
        /// `eof_received`'s return value (false for other events).
        keep_open: bool,
    },
    /// The protocol is borrowed: the event comes back.
    Busy(Event<T>),
    /// The callback panicked (the event counts as delivered).
    Panicked(Failure),
}

/// A protocol as a transport sees it (type-erased).
pub(crate) trait StreamProtocol<T = Transport> {
    /// Delivers `event` unless the protocol is borrowed.
    fn deliver(&self, event: Event<T>) -> Delivered<T>;
    /// Delivers `data_received(data)` without copying (a copy comes back in `Busy`).
    fn data(&self, data: &[u8]) -> Delivered<T>;
    /// The user's `Rc<RefCell<P>>`, for `get_protocol`.
    fn as_any(&self) -> Rc<dyn Any>;
}

/// A [`Protocol`] shared with the user.
pub(crate) struct Plain<P>(pub(crate) Rc<RefCell<P>>);

impl<T, P: Protocol<T> + 'static> StreamProtocol<T> for Plain<P> {
    fn deliver(&self, event: Event<T>) -> Delivered<T> {
        let Ok(mut protocol) = self.0.try_borrow_mut() else { return Delivered::Busy(event) };
        let callback = event.callback();
        // The protocol is only ever observed through its own methods after a panic; asyncio
        // likewise goes on calling a protocol whose callback raised (`connection_lost` last).
        let called = catch_unwind(AssertUnwindSafe(|| match event {
            Event::Made(transport) => {
                protocol.connection_made(transport);
                false
            }
            Event::Data(data) => {
                protocol.data_received(&data);
                false
            }
            Event::Eof => protocol.eof_received(),
            Event::Lost(error) => {
                protocol.connection_lost(error);
                false
            }
            Event::PauseWriting => {
                protocol.pause_writing();
                false
            }
            Event::ResumeWriting => {
                protocol.resume_writing();
                false
            }
        }));
        match called {
            Ok(keep_open) => Delivered::Done { keep_open },
            Err(payload) => {
                Delivered::Panicked(Failure { callback, message: panic_message(&*payload) })
            }
        }
    }

    fn data(&self, data: &[u8]) -> Delivered<T> {
        let Ok(mut protocol) = self.0.try_borrow_mut() else {
            return Delivered::Busy(Event::Data(data.to_vec()));
        };
        match catch_unwind(AssertUnwindSafe(|| protocol.data_received(data))) {
            Ok(()) => Delivered::Done { keep_open: false },
            Err(payload) => Delivered::Panicked(Failure {
                callback: "data_received",
                message: panic_message(&*payload),
            }),
        }
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}

/// A [`BaseProtocol`] shared with the user, for transports that never read (write pipes):
/// `data_received` and `eof_received` events are never sent to it.
pub(crate) struct Base<P>(pub(crate) Rc<RefCell<P>>);

impl<T, P: BaseProtocol<T> + 'static> StreamProtocol<T> for Base<P> {
    fn deliver(&self, event: Event<T>) -> Delivered<T> {
        let Ok(mut protocol) = self.0.try_borrow_mut() else { return Delivered::Busy(event) };
        let callback = event.callback();
        let called = catch_unwind(AssertUnwindSafe(|| match event {
            Event::Made(transport) => protocol.connection_made(transport),
            Event::Lost(error) => protocol.connection_lost(error),
            Event::PauseWriting => protocol.pause_writing(),
            Event::ResumeWriting => protocol.resume_writing(),
            Event::Data(_) | Event::Eof => {
                debug_assert!(false, "a write-only protocol got {callback}")
            }
        }));
        match called {
            Ok(()) => Delivered::Done { keep_open: false },
            Err(payload) => {
                Delivered::Panicked(Failure { callback, message: panic_message(&*payload) })
            }
        }
    }

    fn data(&self, _data: &[u8]) -> Delivered<T> {
        debug_assert!(false, "a write-only protocol got data_received");
        Delivered::Done { keep_open: false }
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}

/// The protocol of a transport and the events waiting for it.
pub(crate) struct Dispatcher<T = Transport> {
    /// The protocol (`None` after `connection_lost`, which breaks the usual
    /// transport → protocol → transport cycle, as asyncio does).
    protocol: RefCell<Option<Rc<dyn StreamProtocol<T>>>>,
    /// Events that met a busy protocol, oldest first.
    deferred: RefCell<VecDeque<Event<T>>>,
    /// Callbacks that panicked, not yet handled by the transport.
    failures: RefCell<Vec<Failure>>,
}

impl<T> Dispatcher<T> {
    pub(crate) fn new(protocol: Rc<dyn StreamProtocol<T>>) -> Dispatcher<T> {
        Dispatcher {
            protocol: RefCell::new(Some(protocol)),
            deferred: RefCell::new(VecDeque::new()),
            failures: RefCell::new(Vec::new()),
        }
    }

    fn protocol(&self) -> Option<Rc<dyn StreamProtocol<T>>> {
        self.protocol.borrow().clone()
    }

    /// Replaces the protocol (`set_protocol`); queued events go to the new one.
    pub(crate) fn set(&self, protocol: Rc<dyn StreamProtocol<T>>) {
        *self.protocol.borrow_mut() = Some(protocol);
    }

    /// The user's protocol object.
    pub(crate) fn get(&self) -> Option<Rc<dyn Any>> {
        self.protocol().map(|p| p.as_any())
    }

    /// Delivers `data_received(data)` now if nothing is queued and the protocol is free,
    /// otherwise queues a copy.
    pub(crate) fn data(&self, data: &[u8]) {
        if !self.deferred.borrow().is_empty() {
            self.deferred.borrow_mut().push_back(Event::Data(data.to_vec()));
            return;
        }
        let Some(protocol) = self.protocol() else { return };
        match protocol.data(data) {
            Delivered::Done { .. } => self.flush(),
            Delivered::Busy(event) => self.deferred.borrow_mut().push_back(event),
            Delivered::Panicked(failure) => {
                self.failures.borrow_mut().push(failure);
                self.flush();
            }
        }
    }

    /// The callbacks that panicked since the last call, oldest first.
    pub(crate) fn take_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failures.borrow_mut())
    }

    /// Delivers `event` (after anything queued); returns `eof_received`'s answer for `Eof`
    /// when it was delivered now (a queued `Eof` counts as "close": the conservative answer).
    pub(crate) fn send(&self, event: Event<T>) -> bool {
        if !self.deferred.borrow().is_empty() {
            self.deferred.borrow_mut().push_back(event);
            self.flush();
            return false;
        }
        let keep_open = self.deliver(event);
        self.flush();
        keep_open
    }

    /// Delivers queued events while the protocol is free.
    pub(crate) fn flush(&self) {
        loop {
            let Some(event) = self.deferred.borrow_mut().pop_front() else { return };
            let lost = matches!(event, Event::Lost(_));
            let Some(protocol) = self.protocol() else { return };
            match protocol.deliver(event) {
                Delivered::Busy(event) => {
                    self.deferred.borrow_mut().push_front(event);
                    return;
                }
                Delivered::Panicked(failure) => {
                    self.failures.borrow_mut().push(failure);
                    if lost {
                        self.protocol.borrow_mut().take();
                    }
                }
                Delivered::Done { .. } if lost => {
                    self.protocol.borrow_mut().take();
                }
                Delivered::Done { .. } => {}
            }
        }
    }

    /// True while events wait for a busy protocol.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.borrow().is_empty()
    }

    fn deliver(&self, event: Event<T>) -> bool {
        let lost = matches!(event, Event::Lost(_));
        let Some(protocol) = self.protocol() else { return false };
        match protocol.deliver(event) {
            Delivered::Done { keep_open } => {
                if lost {
                    self.protocol.borrow_mut().take();
                }
                keep_open
            }
            Delivered::Busy(event) => {
                self.deferred.borrow_mut().push_back(event);
                false
            }
            Delivered::Panicked(failure) => {
                self.failures.borrow_mut().push(failure);
                if lost {
                    self.protocol.borrow_mut().take();
                }
                false
            }
        }
    }
}
