//! Delivering protocol callbacks without re-entering a protocol that is already running, for
//! every transport (stream, pipes, datagram).
//!
//! A transport calls its protocol through a [`Dispatcher`]. If the protocol's `RefCell` is
//! borrowed (the protocol is inside one of its own callbacks and called, say, `write`, which
//! crossed the high-water mark), the event is queued and delivered as soon as the running
//! callback returns, in order; events queued behind it wait their turn.
//!
//! A protocol callback that panics is caught here and never unwinds into the loop: the panic
//! is recorded (see [`Dispatcher::report_failures`]) and reported. In a data callback it is a
//! fatal error for the transport (asyncio's "Fatal error: protocol.data_received() call
//! failed."); in `connection_made`, `pause_writing` or `resume_writing` ([`Role::Notice`]) it
//! is only reported, as asyncio only logs an exception there.
//!
//! The mechanism is generic over the event type ([`Deliver`]): [`Event`] for stream and pipe
//! transports, [`DatagramEvent`] for datagram transports. Each event type has a borrowed form
//! of received data ([`Deliver::Data`]) that goes to a free protocol without a copy. The
//! protocol behind a dispatcher is type-erased ([`ErasedProtocol`]): [`Adapter`] for a
//! `Protocol` or `BufferedProtocol` ([`Receive`] says how each takes bytes and EOF), [`Base`]
//! for write-only protocols, [`PlainDatagram`] for a `DatagramProtocol`. [`TransportCore`] is
//! what the transports share on top: `notify` and the retry of queued events.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use socket2::SockAddr;

use super::datagram_api::DatagramTransport;
use super::flow_control::FlowEvent;
use super::loop_fd::LoopFd;
use super::stream::Transport;
use crate::error::{panic_message, Error};
use crate::event_loop::{EventLoop, ExceptionContext};
use crate::protocol::{
    AnyProtocol, BaseProtocol, BufferedKind, BufferedProtocol, DatagramProtocol, Protocol,
    StreamingKind,
};

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

    fn panicked(callback: &'static str, payload: &(dyn Any + Send)) -> Failure {
        Failure::new(callback, Error::Panic(panic_message(payload)))
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
}

/// Calls `call(protocol, arg)` unless the protocol is borrowed (then `busy(arg)` comes back
/// to be queued); a panic is caught as a failure of `callback`. The protocol is only ever
/// observed through its own methods after a panic; asyncio likewise goes on calling a
/// protocol whose callback raised (`connection_lost` last).
fn call<P: ?Sized, A, E>(
    protocol: &RefCell<P>,
    callback: &'static str,
    arg: A,
    busy: impl FnOnce(A) -> E,
    call: impl FnOnce(&mut P, A) -> Result<bool, Failure>,
) -> Delivered<E> {
    let Ok(mut protocol) = protocol.try_borrow_mut() else { return Delivered::Busy(busy(arg)) };
    match catch_unwind(AssertUnwindSafe(|| call(&mut protocol, arg))) {
        Ok(Ok(keep_open)) => Delivered::Done { keep_open },
        Ok(Err(failure)) => Delivered::Failed(failure),
        Err(payload) => Delivered::Failed(Failure::panicked(callback, &*payload)),
    }
}

/// [`call`] for a queued event.
fn call_event<P: ?Sized, E: Deliver>(
    protocol: &RefCell<P>,
    event: E,
    deliver: impl FnOnce(&mut P, E) -> Result<bool, Failure>,
) -> Delivered<E> {
    call(protocol, event.callback(), event, |event| event, deliver)
}

/// The protocol of a transport and the events waiting for it.
pub(crate) struct Dispatcher<E: Deliver = Event> {
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
    pub(crate) fn flush(&self) {
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
    /// handler through `fd` ([`LoopFd::report`], with the transport as `transport()`
    /// describes it): asyncio's "Fatal error: protocol.X() call failed." for a fatal one,
    /// "protocol.X() failed" for `connection_made`, `pause_writing` and `resume_writing`,
    /// which asyncio only logs. Returns the first fatal error, which the transport closes
    /// with. Called after every delivery: it costs one borrow when nothing failed.
    pub(crate) fn report_failures(
        &self,
        fd: &LoopFd,
        transport: impl Fn() -> String,
    ) -> Option<Error> {
        if self.failures.borrow().is_empty() {
            return None;
        }
        let failures = std::mem::take(&mut *self.failures.borrow_mut());
        let mut fatal = None;
        for (Failure { callback, error }, closes) in failures {
            let message = match closes {
                true => format!("Fatal error: protocol.{callback}() call failed."),
                false => format!("protocol.{callback}() failed"),
            };
            fd.report(ExceptionContext::new(message).with_error(error.clone()), &transport);
            if closes {
                fatal.get_or_insert(error);
            }
        }
        fatal
    }
}

/// The shared state of a transport, as the dispatcher's users: how protocol calls are made
/// and what follows them, the same for every transport.
pub(crate) trait TransportCore: Sized + 'static {
    /// The callbacks its protocol takes.
    type Event: Deliver + From<FlowEvent>;

    /// The protocol and the re-entrancy guard around it.
    fn dispatcher(&self) -> &Dispatcher<Self::Event>;

    /// The loop, while it exists.
    fn event_loop(&self) -> Option<EventLoop>;

    /// Acts on what the protocol calls just made asked for: a failed callback is fatal
    /// (see [`Dispatcher::report_failures`]); an `eof_received` that answered "close" closes.
    fn report_protocol_failures(self: &Rc<Self>);

    /// Closes the fd through the driver ([`LoopFd::close`](super::loop_fd::LoopFd::close)),
    /// cancelling the transport's ops still in flight first.
    fn close_fd(&self);

    /// Runs once `connection_lost` was called and the fd closed (nothing by default).
    fn after_lost(&self) {}

    /// Schedules `connection_lost(error)` for the next iteration, then the close of the fd
    /// and [`after_lost`](Self::after_lost); a `connection_lost` that met a borrowed protocol
    /// is retried until delivered. Without a loop (or once it is closed) the fd is closed at
    /// once and no `connection_lost` comes.
    fn schedule_lost(self: &Rc<Self>, error: Option<Error>) {
        let Some(event_loop) = self.event_loop() else { return self.close_fd() };
        let core = self.clone();
        let scheduled = event_loop.call_soon(move || {
            core.notify(Self::Event::lost(error));
            core.close_fd();
            core.after_lost();
            core.flush_deferred_later();
        });
        if scheduled.is_err() {
            self.close_fd();
        }
    }

    /// Calls the protocol (through the dispatcher), then handles a failure in it.
    fn notify(self: &Rc<Self>, event: Self::Event) {
        self.dispatcher().send(event);
        self.report_protocol_failures();
    }

    /// `pause_writing` or `resume_writing`, when a change of the write buffer says so.
    fn notify_flow(self: &Rc<Self>, flow: Option<FlowEvent>) {
        if let Some(flow) = flow {
            self.notify(flow.into());
        }
    }

    /// Events that met a protocol borrowed outside its callbacks (user code holding the
    /// `RefCell` borrow) are retried next iteration until delivered: none is ever lost.
    fn flush_deferred_later(self: &Rc<Self>) {
        if !self.dispatcher().has_deferred() {
            return;
        }
        let Some(event_loop) = self.event_loop() else { return };
        let core = self.clone();
        let _ = event_loop.call_soon(move || {
            core.dispatcher().flush();
            core.report_protocol_failures();
            core.flush_deferred_later();
        });
    }
}

/// A protocol callback of a stream or pipe transport. `T` is the transport type
/// `connection_made` gets (the stream [`Transport`], or a pipe transport).
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

impl<T> Deliver for Event<T> {
    type Data<'a> = &'a [u8];

    fn copied(data: &[u8]) -> Self {
        Event::Data(data.to_vec())
    }

    fn lost(error: Option<Error>) -> Self {
        Event::Lost(error)
    }

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

    fn role(&self) -> Role {
        match self {
            Event::Eof => Role::Eof,
            Event::Lost(_) => Role::Lost,
            Event::Made(_) | Event::PauseWriting | Event::ResumeWriting => Role::Notice,
            Event::Data(_) => Role::Other,
        }
    }
}

impl<T> From<FlowEvent> for Event<T> {
    fn from(flow: FlowEvent) -> Self {
        match flow {
            FlowEvent::Pause => Event::PauseWriting,
            FlowEvent::Resume => Event::ResumeWriting,
        }
    }
}

/// A protocol as a stream transport (or, with `T`, a pipe transport) sees it.
pub(crate) type StreamProtocol<T = Transport> = dyn ErasedProtocol<Event<T>>;

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
                return Err(Failure::new("get_buffer", error));
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
pub(crate) fn adapt<K: 'static, P: AnyProtocol<K>>(protocol: Rc<RefCell<P>>) -> Rc<StreamProtocol> {
    adapt_for::<Transport, K, P>(protocol)
}

/// `protocol` as a transport of type `T` (a stream or a read pipe) drives it.
pub(crate) fn adapt_for<T: 'static, K: 'static, P: Receive<K, T> + 'static>(
    protocol: Rc<RefCell<P>>,
) -> Rc<StreamProtocol<T>> {
    Rc::new(Adapter { protocol, kind: PhantomData::<fn() -> (K, T)> })
}

impl<T: 'static, K: 'static, P: Receive<K, T> + 'static> ErasedProtocol<Event<T>>
    for Adapter<P, K, T>
{
    fn deliver(&self, event: Event<T>) -> Delivered<Event<T>> {
        call_event(&self.protocol, event, |protocol, event| {
            match event {
                Event::Made(transport) => protocol.connection_made(transport),
                Event::Data(data) => protocol.receive(&data)?,
                Event::Eof => return Ok(protocol.receive_eof()),
                Event::Lost(error) => protocol.connection_lost(error),
                Event::PauseWriting => protocol.pause_writing(),
                Event::ResumeWriting => protocol.resume_writing(),
            }
            Ok(false)
        })
    }

    fn data(&self, data: &[u8]) -> Delivered<Event<T>> {
        call(&self.protocol, "data_received", data, Event::copied, |protocol, data| {
            protocol.receive(data).map(|()| false)
        })
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.protocol.clone()
    }
}

/// A [`BaseProtocol`] shared with the user, for transports that never read (write pipes):
/// `data_received` and `eof_received` events are never sent to it.
pub(crate) struct Base<P>(pub(crate) Rc<RefCell<P>>);

impl<T, P: BaseProtocol<T> + 'static> ErasedProtocol<Event<T>> for Base<P> {
    fn deliver(&self, event: Event<T>) -> Delivered<Event<T>> {
        call_event(&self.0, event, |protocol, event| {
            match event {
                Event::Made(transport) => protocol.connection_made(transport),
                Event::Lost(error) => protocol.connection_lost(error),
                Event::PauseWriting => protocol.pause_writing(),
                Event::ResumeWriting => protocol.resume_writing(),
                Event::Data(_) | Event::Eof => {
                    debug_assert!(false, "a write-only protocol got a read event")
                }
            }
            Ok(false)
        })
    }

    fn data(&self, _data: &[u8]) -> Delivered<Event<T>> {
        debug_assert!(false, "a write-only protocol got data_received");
        Delivered::Done { keep_open: false }
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}

/// A protocol callback of a datagram transport.
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

impl Deliver for DatagramEvent {
    /// One datagram and its sender.
    type Data<'a> = (&'a [u8], Option<SockAddr>);

    fn copied((data, addr): (&[u8], Option<SockAddr>)) -> Self {
        DatagramEvent::Datagram(data.to_vec(), addr)
    }

    fn lost(error: Option<Error>) -> Self {
        DatagramEvent::Lost(error)
    }

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

    fn role(&self) -> Role {
        match self {
            DatagramEvent::Lost(_) => Role::Lost,
            DatagramEvent::Made(_) | DatagramEvent::PauseWriting | DatagramEvent::ResumeWriting => {
                Role::Notice
            }
            DatagramEvent::Datagram(..) | DatagramEvent::Error(_) => Role::Other,
        }
    }
}

impl From<FlowEvent> for DatagramEvent {
    fn from(flow: FlowEvent) -> Self {
        match flow {
            FlowEvent::Pause => DatagramEvent::PauseWriting,
            FlowEvent::Resume => DatagramEvent::ResumeWriting,
        }
    }
}

impl Dispatcher<DatagramEvent> {
    /// `datagram_received(data, addr)`, as [`data`](Self::data).
    pub(crate) fn datagram(&self, data: &[u8], addr: Option<SockAddr>) {
        self.data((data, addr));
    }
}

/// A [`DatagramProtocol`] shared with the user.
pub(crate) struct PlainDatagram<P>(pub(crate) Rc<RefCell<P>>);

impl<P: DatagramProtocol + 'static> ErasedProtocol<DatagramEvent> for PlainDatagram<P> {
    fn deliver(&self, event: DatagramEvent) -> Delivered<DatagramEvent> {
        call_event(&self.0, event, |protocol, event| {
            match event {
                DatagramEvent::Made(transport) => protocol.connection_made(transport),
                DatagramEvent::Datagram(data, addr) => protocol.datagram_received(&data, addr),
                DatagramEvent::Error(error) => protocol.error_received(error),
                DatagramEvent::Lost(error) => protocol.connection_lost(error),
                DatagramEvent::PauseWriting => protocol.pause_writing(),
                DatagramEvent::ResumeWriting => protocol.resume_writing(),
            }
            Ok(false)
        })
    }

    fn data(&self, data: (&[u8], Option<SockAddr>)) -> Delivered<DatagramEvent> {
        let copy = DatagramEvent::copied;
        call(&self.0, "datagram_received", data, copy, |protocol, (data, addr)| {
            protocol.datagram_received(data, addr);
            Ok(false)
        })
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}
