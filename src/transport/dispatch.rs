//! Delivering protocol callbacks without re-entering a protocol that is already running.
//!
//! A transport calls its protocol through a [`Dispatcher`]. If the protocol's `RefCell` is
//! borrowed (the protocol is inside one of its own callbacks and called, say, `write`, which
//! crossed the high-water mark), the event is queued and delivered as soon as the running
//! callback returns, in order; events queued behind it wait their turn.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::stream::Transport;
use crate::error::Error;
use crate::protocol::Protocol;

/// A protocol callback, as queued when it cannot be delivered at once.
pub(crate) enum Event {
    /// `connection_made`.
    Made(Transport),
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

/// What delivering an event gave.
pub(crate) enum Delivered {
    /// Delivered; for `Eof`, `keep_open` is the protocol's answer.
    Done {
        /// `eof_received`'s return value (false for other events).
        keep_open: bool,
    },
    /// The protocol is borrowed: the event comes back.
    Busy(Event),
}

/// A protocol as a transport sees it (type-erased).
pub(crate) trait StreamProtocol {
    /// Delivers `event` unless the protocol is borrowed.
    fn deliver(&self, event: Event) -> Delivered;
    /// Delivers `data_received(data)` without copying; false if the protocol is borrowed.
    fn data(&self, data: &[u8]) -> bool;
    /// The user's `Rc<RefCell<P>>`, for `get_protocol`.
    fn as_any(&self) -> Rc<dyn Any>;
}

/// A [`Protocol`] shared with the user.
pub(crate) struct Plain<P>(pub(crate) Rc<RefCell<P>>);

impl<P: Protocol + 'static> StreamProtocol for Plain<P> {
    fn deliver(&self, event: Event) -> Delivered {
        let Ok(mut protocol) = self.0.try_borrow_mut() else { return Delivered::Busy(event) };
        let mut keep_open = false;
        match event {
            Event::Made(transport) => protocol.connection_made(transport),
            Event::Data(data) => protocol.data_received(&data),
            Event::Eof => keep_open = protocol.eof_received(),
            Event::Lost(error) => protocol.connection_lost(error),
            Event::PauseWriting => protocol.pause_writing(),
            Event::ResumeWriting => protocol.resume_writing(),
        }
        Delivered::Done { keep_open }
    }

    fn data(&self, data: &[u8]) -> bool {
        let Ok(mut protocol) = self.0.try_borrow_mut() else { return false };
        protocol.data_received(data);
        true
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}

/// The protocol of a transport and the events waiting for it.
pub(crate) struct Dispatcher {
    /// The protocol (`None` after `connection_lost`, which breaks the usual
    /// transport → protocol → transport cycle, as asyncio does).
    protocol: RefCell<Option<Rc<dyn StreamProtocol>>>,
    /// Events that met a busy protocol, oldest first.
    deferred: RefCell<VecDeque<Event>>,
}

impl Dispatcher {
    pub(crate) fn new(protocol: Rc<dyn StreamProtocol>) -> Dispatcher {
        Dispatcher {
            protocol: RefCell::new(Some(protocol)),
            deferred: RefCell::new(VecDeque::new()),
        }
    }

    fn protocol(&self) -> Option<Rc<dyn StreamProtocol>> {
        self.protocol.borrow().clone()
    }

    /// Replaces the protocol (`set_protocol`); queued events go to the new one.
    pub(crate) fn set(&self, protocol: Rc<dyn StreamProtocol>) {
        *self.protocol.borrow_mut() = Some(protocol);
    }

    /// The user's protocol object.
    pub(crate) fn get(&self) -> Option<Rc<dyn Any>> {
        self.protocol().map(|p| p.as_any())
    }

    /// Delivers `data_received(data)` now if nothing is queued and the protocol is free,
    /// otherwise queues a copy.
    pub(crate) fn data(&self, data: &[u8]) {
        if self.deferred.borrow().is_empty() {
            if let Some(protocol) = self.protocol() {
                if protocol.data(data) {
                    self.flush();
                    return;
                }
            }
        }
        self.deferred.borrow_mut().push_back(Event::Data(data.to_vec()));
    }

    /// Delivers `event` (after anything queued); returns `eof_received`'s answer for `Eof`
    /// when it was delivered now (a queued `Eof` counts as "close": the conservative answer).
    pub(crate) fn send(&self, event: Event) -> bool {
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

    fn deliver(&self, event: Event) -> bool {
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
        }
    }
}
