//! Delivering [`DatagramProtocol`] callbacks without re-entering a protocol that is running:
//! the datagram twin of `dispatch.rs` (same rules: an event that meets a borrowed protocol is
//! queued and delivered, in order, once it is free; a panic is caught and recorded).

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use socket2::SockAddr;

use super::dispatch::Failure;
use crate::error::{panic_message, Error};
use crate::protocol::DatagramProtocol;
use crate::transport::DatagramTransport;

/// A datagram protocol callback, as queued when it cannot be delivered at once.
pub(crate) enum DatagramEvent {
    /// `connection_made`.
    Made(DatagramTransport),
    /// `datagram_received` (copied: the receive buffer is reused).
    Datagram(Vec<u8>, Option<SockAddr>),
    /// `error_received`.
    Error(Error),
    /// `connection_lost`.
    Lost(Option<Error>),
    /// `pause_writing`.
    PauseWriting,
    /// `resume_writing`.
    ResumeWriting,
}

impl DatagramEvent {
    /// The protocol method this event calls.
    fn callback(&self) -> &'static str {
        match self {
            DatagramEvent::Made(_) => "connection_made",
            DatagramEvent::Datagram(..) => "datagram_received",
            DatagramEvent::Error(_) => "error_received",
            DatagramEvent::Lost(_) => "connection_lost",
            DatagramEvent::PauseWriting => "pause_writing",
            DatagramEvent::ResumeWriting => "resume_writing",
        }
    }
}

/// What delivering an event gave.
pub(crate) enum Outcome {
    /// Delivered.
    Done,
    /// The protocol is borrowed: the event comes back.
    Busy(DatagramEvent),
    /// The callback panicked (the event counts as delivered).
    Panicked(Failure),
}

/// A datagram protocol as the transport sees it (type-erased).
pub(crate) trait ErasedDatagramProtocol {
    /// Delivers `event` unless the protocol is borrowed.
    fn deliver(&self, event: DatagramEvent) -> Outcome;
    /// Delivers `datagram_received` without a copy (a copy comes back in `Busy`).
    fn datagram(&self, data: &[u8], addr: Option<SockAddr>) -> Outcome;
    /// The user's `Rc<RefCell<P>>`, for `get_protocol`.
    fn as_any(&self) -> Rc<dyn Any>;
}

/// A [`DatagramProtocol`] shared with the user.
pub(crate) struct PlainDatagram<P>(pub(crate) Rc<RefCell<P>>);

fn caught(callback: &'static str, call: impl FnOnce()) -> Outcome {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(()) => Outcome::Done,
        Err(payload) => {
            Outcome::Panicked(Failure { callback, error: Error::Panic(panic_message(&*payload)) })
        }
    }
}

impl<P: DatagramProtocol + 'static> ErasedDatagramProtocol for PlainDatagram<P> {
    fn deliver(&self, event: DatagramEvent) -> Outcome {
        let Ok(mut protocol) = self.0.try_borrow_mut() else { return Outcome::Busy(event) };
        caught(event.callback(), || match event {
            DatagramEvent::Made(transport) => protocol.connection_made(transport),
            DatagramEvent::Datagram(data, addr) => protocol.datagram_received(&data, addr),
            DatagramEvent::Error(error) => protocol.error_received(error),
            DatagramEvent::Lost(error) => protocol.connection_lost(error),
            DatagramEvent::PauseWriting => protocol.pause_writing(),
            DatagramEvent::ResumeWriting => protocol.resume_writing(),
        })
    }

    fn datagram(&self, data: &[u8], addr: Option<SockAddr>) -> Outcome {
        let Ok(mut protocol) = self.0.try_borrow_mut() else {
            return Outcome::Busy(DatagramEvent::Datagram(data.to_vec(), addr));
        };
        caught("datagram_received", || protocol.datagram_received(data, addr))
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}

/// The protocol of a datagram transport and the events waiting for it.
pub(crate) struct DatagramDispatcher {
    /// The protocol (`None` after `connection_lost`, which breaks the transport → protocol →
    /// transport cycle).
    protocol: RefCell<Option<Rc<dyn ErasedDatagramProtocol>>>,
    /// Events that met a busy protocol, oldest first.
    deferred: RefCell<VecDeque<DatagramEvent>>,
    /// Callbacks that panicked, not yet handled by the transport.
    failures: RefCell<Vec<Failure>>,
}

impl DatagramDispatcher {
    pub(crate) fn new(protocol: Rc<dyn ErasedDatagramProtocol>) -> DatagramDispatcher {
        DatagramDispatcher {
            protocol: RefCell::new(Some(protocol)),
            deferred: RefCell::new(VecDeque::new()),
            failures: RefCell::new(Vec::new()),
        }
    }

    fn protocol(&self) -> Option<Rc<dyn ErasedDatagramProtocol>> {
        self.protocol.borrow().clone()
    }

    /// Replaces the protocol (`set_protocol`); queued events go to the new one.
    pub(crate) fn set(&self, protocol: Rc<dyn ErasedDatagramProtocol>) {
        *self.protocol.borrow_mut() = Some(protocol);
    }

    /// The user's protocol object.
    pub(crate) fn get(&self) -> Option<Rc<dyn Any>> {
        self.protocol().map(|p| p.as_any())
    }

    /// `datagram_received(data, addr)` now if nothing is queued and the protocol is free,
    /// otherwise a queued copy.
    pub(crate) fn datagram(&self, data: &[u8], addr: Option<SockAddr>) {
        if self.has_deferred() {
            self.deferred.borrow_mut().push_back(DatagramEvent::Datagram(data.to_vec(), addr));
            return;
        }
        let Some(protocol) = self.protocol() else { return };
        let outcome = protocol.datagram(data, addr);
        self.settle(outcome, false);
        self.flush();
    }

    /// Delivers `event` after anything queued.
    pub(crate) fn send(&self, event: DatagramEvent) {
        if self.has_deferred() {
            self.deferred.borrow_mut().push_back(event);
        } else if let Some(protocol) = self.protocol() {
            let lost = matches!(event, DatagramEvent::Lost(_));
            let outcome = protocol.deliver(event);
            self.settle(outcome, lost);
        }
        self.flush();
    }

    /// Delivers queued events while the protocol is free.
    pub(crate) fn flush(&self) {
        loop {
            let Some(event) = self.deferred.borrow_mut().pop_front() else { return };
            let lost = matches!(event, DatagramEvent::Lost(_));
            let Some(protocol) = self.protocol() else { return };
            let outcome = protocol.deliver(event);
            if !self.settle(outcome, lost) {
                return;
            }
        }
    }

    /// Records an outcome; false when the protocol was busy (the event is queued again, first).
    fn settle(&self, outcome: Outcome, lost: bool) -> bool {
        match outcome {
            Outcome::Busy(event) => {
                self.deferred.borrow_mut().push_front(event);
                return false;
            }
            Outcome::Panicked(failure) => self.failures.borrow_mut().push(failure),
            Outcome::Done => {}
        }
        if lost {
            self.protocol.borrow_mut().take();
        }
        true
    }

    /// The callbacks that panicked since the last call, oldest first.
    pub(crate) fn take_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failures.borrow_mut())
    }

    /// True while events wait for a busy protocol.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.borrow().is_empty()
    }
}
