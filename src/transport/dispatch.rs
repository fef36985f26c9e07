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
//!
//! Both protocol kinds go through the same [`Dispatcher`]: [`Receive`] says how each takes
//! bytes (`data_received`, or `get_buffer`/`buffer_updated` rounds for a `BufferedProtocol`)
//! and EOF, and [`Adapter`] turns either into the type-erased [`StreamProtocol`].

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use super::stream::Transport;
use crate::error::{panic_message, Error};
use crate::protocol::{
    AnyProtocol, BaseProtocol, BufferedKind, BufferedProtocol, Protocol, StreamingKind,
};

/// A protocol callback, as queued when it cannot be delivered at once. `T` is the transport
/// type `connection_made` gets (the stream [`Transport`], or a pipe transport).
pub(crate) enum Event<T = Transport> {
    /// `connection_made`.
    Made(T),
    /// `data_received`, or `get_buffer`/`buffer_updated` (the bytes copied, since the read
    /// buffer is recycled).
    Data(Vec<u8>),
    /// `eof_received`, whose answer decides whether the transport closes (see
    /// [`Dispatcher::take_close_after_eof`]).
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

/// A protocol callback that failed: it panicked, or (`get_buffer`) returned an empty buffer.
#[derive(Debug)]
pub struct Failure {
    /// Which method (`"data_received"`, `"get_buffer"`, ...).
    pub(crate) callback: &'static str,
    /// What went wrong: [`Error::Panic`] with the panic's message, or [`Error::Runtime`].
    pub(crate) error: Error,
}

impl Failure {
    fn panicked(callback: &'static str, payload: &(dyn Any + Send)) -> Failure {
        Failure { callback, error: Error::Panic(panic_message(payload)) }
    }
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
    /// The callback failed (the event counts as delivered).
    Failed(Failure),
}

/// A protocol as a transport sees it (type-erased).
pub(crate) trait StreamProtocol<T = Transport> {
    /// Delivers `event` unless the protocol is borrowed.
    fn deliver(&self, event: Event<T>) -> Delivered<T>;
    /// Delivers received bytes without copying them first (a copy comes back in `Busy`).
    fn data(&self, data: &[u8]) -> Delivered<T>;
    /// The user's `Rc<RefCell<P>>`, for `get_protocol`.
    fn as_any(&self) -> Rc<dyn Any>;
}

/// How each protocol kind takes received bytes and EOF: the seal of
/// [`AnyProtocol`](crate::protocol::AnyProtocol) (nameable only inside the crate).
pub trait Receive<Kind, T = Transport>: BaseProtocol<T> {
    /// Hands `data` (not empty) to the protocol; panics are caught and named.
    #[doc(hidden)]
    fn receive(&mut self, data: &[u8]) -> Result<(), Failure>;
    /// `eof_received`: whether to keep the connection half-open.
    #[doc(hidden)]
    fn receive_eof(&mut self) -> bool;
}

impl<T, P: Protocol<T>> Receive<StreamingKind, T> for P {
    fn receive(&mut self, data: &[u8]) -> Result<(), Failure> {
        catch_unwind(AssertUnwindSafe(|| self.data_received(data)))
            .map_err(|payload| Failure::panicked("data_received", &*payload))
    }

    fn receive_eof(&mut self) -> bool {
        Protocol::eof_received(self)
    }
}

/// asyncio's message for a `get_buffer` that returned nothing to read into.
pub(crate) const EMPTY_BUFFER: &str = "get_buffer() returned an empty buffer";

impl<P: BufferedProtocol> Receive<BufferedKind> for P {
    /// As many `get_buffer(remaining)` / copy / `buffer_updated(n)` rounds as the protocol's
    /// buffers need to take all of `data`. A `get_buffer` that panics or returns an empty
    /// buffer is a failure, and `buffer_updated` is then not called (BEHAVIOURS 116).
    fn receive(&mut self, mut data: &[u8]) -> Result<(), Failure> {
        while !data.is_empty() {
            let copied = catch_unwind(AssertUnwindSafe(|| {
                let buffer = self.get_buffer(data.len());
                let n = buffer.len().min(data.len());
                buffer[..n].copy_from_slice(&data[..n]);
                n
            }))
            .map_err(|payload| Failure::panicked("get_buffer", &*payload))?;
            if copied == 0 {
                let error = Error::Runtime(EMPTY_BUFFER.into());
                return Err(Failure { callback: "get_buffer", error });
            }
            catch_unwind(AssertUnwindSafe(|| self.buffer_updated(copied)))
                .map_err(|payload| Failure::panicked("buffer_updated", &*payload))?;
            data = &data[copied..];
        }
        Ok(())
    }

    fn receive_eof(&mut self) -> bool {
        BufferedProtocol::eof_received(self)
    }
}

/// A protocol of kind `K` shared with the user.
pub(crate) struct Adapter<P, K, T> {
    /// The user's protocol.
    protocol: Rc<RefCell<P>>,
    /// Which [`Receive`] impl delivers its bytes, and to which transport type.
    kind: PhantomData<fn() -> (K, T)>,
}

/// `protocol` as a stream transport drives it.
pub(crate) fn adapt<K: 'static, P: AnyProtocol<K>>(
    protocol: Rc<RefCell<P>>,
) -> Rc<dyn StreamProtocol> {
    adapt_for::<Transport, K, P>(protocol)
}

/// `protocol` as a transport of type `T` (a stream or a read pipe) drives it.
pub(crate) fn adapt_for<T: 'static, K: 'static, P: Receive<K, T> + 'static>(
    protocol: Rc<RefCell<P>>,
) -> Rc<dyn StreamProtocol<T>> {
    Rc::new(Adapter { protocol, kind: PhantomData::<fn() -> (K, T)> })
}

impl<T: 'static, K: 'static, P: Receive<K, T> + 'static> StreamProtocol<T> for Adapter<P, K, T> {
    fn deliver(&self, event: Event<T>) -> Delivered<T> {
        let Ok(mut protocol) = self.protocol.try_borrow_mut() else {
            return Delivered::Busy(event);
        };
        let callback = event.callback();
        // The protocol is only ever observed through its own methods after a panic; asyncio
        // likewise goes on calling a protocol whose callback raised (`connection_lost` last).
        let called = catch_unwind(AssertUnwindSafe(|| match event {
            Event::Made(transport) => {
                protocol.connection_made(transport);
                Ok(false)
            }
            Event::Data(data) => protocol.receive(&data).map(|()| false),
            Event::Eof => Ok(protocol.receive_eof()),
            Event::Lost(error) => {
                protocol.connection_lost(error);
                Ok(false)
            }
            Event::PauseWriting => {
                protocol.pause_writing();
                Ok(false)
            }
            Event::ResumeWriting => {
                protocol.resume_writing();
                Ok(false)
            }
        }));
        match called {
            Ok(Ok(keep_open)) => Delivered::Done { keep_open },
            Ok(Err(failure)) => Delivered::Failed(failure),
            Err(payload) => Delivered::Failed(Failure::panicked(callback, &*payload)),
        }
    }

    fn data(&self, data: &[u8]) -> Delivered<T> {
        let Ok(mut protocol) = self.protocol.try_borrow_mut() else {
            return Delivered::Busy(Event::Data(data.to_vec()));
        };
        match protocol.receive(data) {
            Ok(()) => Delivered::Done { keep_open: false },
            Err(failure) => Delivered::Failed(failure),
        }
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.protocol.clone()
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
            Err(payload) => Delivered::Failed(Failure::panicked(callback, &*payload)),
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
    /// Callbacks that failed, not yet handled by the transport.
    failures: RefCell<Vec<Failure>>,
    /// `eof_received` returned false (now or when a deferred EOF was delivered): the transport
    /// is to close; not yet acted on.
    close_after_eof: Cell<bool>,
}

impl<T> Dispatcher<T> {
    pub(crate) fn new(protocol: Rc<dyn StreamProtocol<T>>) -> Dispatcher<T> {
        Dispatcher {
            protocol: RefCell::new(Some(protocol)),
            deferred: RefCell::new(VecDeque::new()),
            failures: RefCell::new(Vec::new()),
            close_after_eof: Cell::new(false),
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

    /// Delivers received bytes now if nothing is queued and the protocol is free, otherwise
    /// queues a copy.
    pub(crate) fn data(&self, data: &[u8]) {
        if !self.deferred.borrow().is_empty() {
            self.deferred.borrow_mut().push_back(Event::Data(data.to_vec()));
            return;
        }
        let Some(protocol) = self.protocol() else { return };
        let delivered = protocol.data(data);
        if let Some(event) = self.settle(Kind::Other, delivered) {
            self.deferred.borrow_mut().push_back(event);
            return;
        }
        self.flush();
    }

    /// The callbacks that failed since the last call, oldest first.
    pub(crate) fn take_failures(&self) -> Vec<Failure> {
        std::mem::take(&mut *self.failures.borrow_mut())
    }

    /// True once: `eof_received` answered "close" (false) since the last call. An EOF that met
    /// a busy protocol is delivered later like any event, and only its answer decides.
    pub(crate) fn take_close_after_eof(&self) -> bool {
        self.close_after_eof.take()
    }

    /// Delivers `event` after anything queued.
    pub(crate) fn send(&self, event: Event<T>) {
        self.deferred.borrow_mut().push_back(event);
        self.flush();
    }

    /// Delivers queued events while the protocol is free.
    pub(crate) fn flush(&self) {
        loop {
            let Some(event) = self.deferred.borrow_mut().pop_front() else { return };
            let kind = Kind::of(&event);
            let Some(protocol) = self.protocol() else {
                // After `connection_lost` nothing more is delivered.
                self.deferred.borrow_mut().clear();
                return;
            };
            if let Some(event) = self.settle(kind, protocol.deliver(event)) {
                self.deferred.borrow_mut().push_front(event);
                return;
            }
        }
    }

    /// True while events wait for a busy protocol.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.borrow().is_empty()
    }

    /// Records what delivering an event of `kind` gave; the event back if the protocol was
    /// busy.
    fn settle(&self, kind: Kind, delivered: Delivered<T>) -> Option<Event<T>> {
        match delivered {
            Delivered::Busy(event) => return Some(event),
            Delivered::Done { keep_open } => {
                if kind == Kind::Eof && !keep_open {
                    self.close_after_eof.set(true);
                }
            }
            Delivered::Failed(failure) => self.failures.borrow_mut().push(failure),
        }
        if kind == Kind::Lost {
            self.protocol.borrow_mut().take();
        }
        None
    }
}

/// What a delivered event means for the dispatcher.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `eof_received`: its answer is recorded.
    Eof,
    /// `connection_lost`: the protocol is dropped after it.
    Lost,
    /// Anything else.
    Other,
}

impl Kind {
    fn of<T>(event: &Event<T>) -> Kind {
        match event {
            Event::Eof => Kind::Eof,
            Event::Lost(_) => Kind::Lost,
            _ => Kind::Other,
        }
    }
}
