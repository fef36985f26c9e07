//! How each kind of protocol takes each event: the events ([`Event`] for byte transports,
//! [`DatagramEvent`] for datagram endpoints) and the adapters that type-erase a user's protocol
//! for the [`Dispatcher`](super::Dispatcher): [`ByteProtocol`] for a `Protocol` or a
//! `BufferedProtocol` ([`Receive`] says how each takes bytes and EOF), [`WriteOnlyProtocol`]
//! for a write pipe's `BaseProtocol`, [`DatagramAdapter`] for a `DatagramProtocol`.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use socket2::SockAddr;

use super::{call, Calling, Deliver, Delivered, ErasedProtocol, Failure, Role};

/// [`call`] for an event (handed back as it is when the protocol is busy).
fn call_event<P: ?Sized, E: Deliver>(
    protocol: &RefCell<P>,
    event: E,
    deliver: impl FnOnce(&mut P, E, &Calling) -> Result<bool, Failure>,
) -> Delivered<E> {
    call(protocol, event.callback(), event, |e| e, deliver)
}
use crate::error::Error;
use crate::protocol::{
    AnyProtocol, BaseProtocol, BufferedKind, BufferedProtocol, DatagramProtocol, Protocol,
    StreamingKind,
};
use crate::transport::flow_control::FlowEvent;
use crate::transport::{DatagramTransport, Transport};

/// A protocol callback of a byte transport (stream or pipe). `T` is the transport type
/// `connection_made` gets (the stream [`Transport`], or a pipe transport).
pub(crate) enum Event<T = Transport> {
    /// `connection_made`.
    Made(T),
    /// `data_received`, or `get_buffer`/`buffer_updated` (the bytes copied, since the read
    /// buffer is recycled).
    Data(Vec<u8>),
    /// `eof_received`, whose answer decides whether a stream closes.
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

/// A byte transport's protocol, type-erased (the stream transport's, or with `T`, a pipe's).
pub(crate) type DynProtocol<T = Transport> = dyn ErasedProtocol<Event<T>>;

/// How each protocol kind takes received bytes and EOF: the seal of
/// [`AnyProtocol`](crate::protocol::AnyProtocol) (nameable only inside the crate).
pub trait Receive<Kind, T = Transport>: BaseProtocol<T> {
    /// Hands `data` (not empty) to the protocol, naming in `calling` each method it calls.
    #[doc(hidden)]
    fn receive(&mut self, data: &[u8], calling: &Calling) -> Result<(), Failure>;
    /// `eof_received`: whether to keep the connection half-open.
    #[doc(hidden)]
    fn receive_eof(&mut self) -> bool;
}

impl<T, P: Protocol<T>> Receive<StreamingKind, T> for P {
    fn receive(&mut self, data: &[u8], _: &Calling) -> Result<(), Failure> {
        self.data_received(data);
        Ok(())
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
    /// buffer is a failure, and `buffer_updated` is then not called, as in asyncio.
    fn receive(&mut self, mut data: &[u8], calling: &Calling) -> Result<(), Failure> {
        while !data.is_empty() {
            calling.set("get_buffer");
            let buffer = self.get_buffer(data.len());
            let copied = buffer.len().min(data.len());
            buffer[..copied].copy_from_slice(&data[..copied]);
            if copied == 0 {
                return Err(Failure::new("get_buffer", Error::Runtime(EMPTY_BUFFER.into())));
            }
            calling.set("buffer_updated");
            self.buffer_updated(copied);
            data = &data[copied..];
        }
        Ok(())
    }

    fn receive_eof(&mut self) -> bool {
        BufferedProtocol::eof_received(self)
    }
}

/// A `Protocol` or `BufferedProtocol` of kind `K`, shared with the user, as a byte transport
/// of type `T` drives it.
pub(crate) struct ByteProtocol<P, K, T> {
    /// The user's protocol.
    protocol: Rc<RefCell<P>>,
    /// Which [`Receive`] impl delivers its bytes, and to which transport type.
    kind: PhantomData<fn() -> (K, T)>,
}

/// `protocol` as a stream transport drives it.
pub(crate) fn adapt<K: 'static, P: AnyProtocol<K>>(protocol: Rc<RefCell<P>>) -> Rc<DynProtocol> {
    adapt_for::<Transport, K, P>(protocol)
}

/// `protocol` as a transport of type `T` (a stream or a read pipe) drives it.
pub(crate) fn adapt_for<T: 'static, K: 'static, P: Receive<K, T> + 'static>(
    protocol: Rc<RefCell<P>>,
) -> Rc<DynProtocol<T>> {
    Rc::new(ByteProtocol { protocol, kind: PhantomData::<fn() -> (K, T)> })
}

impl<T: 'static, K: 'static, P: Receive<K, T> + 'static> ErasedProtocol<Event<T>>
    for ByteProtocol<P, K, T>
{
    fn deliver(&self, event: Event<T>) -> Delivered<Event<T>> {
        call_event(&self.protocol, event, |protocol, event, calling| {
            match event {
                Event::Made(transport) => protocol.connection_made(transport),
                Event::Data(data) => protocol.receive(&data, calling)?,
                Event::Eof => return Ok(protocol.receive_eof()),
                Event::Lost(error) => protocol.connection_lost(error),
                Event::PauseWriting => protocol.pause_writing(),
                Event::ResumeWriting => protocol.resume_writing(),
            }
            Ok(false)
        })
    }

    fn data(&self, data: &[u8]) -> Delivered<Event<T>> {
        call(&self.protocol, "data_received", data, Event::copied, |protocol, data, calling| {
            protocol.receive(data, calling).map(|()| false)
        })
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.protocol.clone()
    }
}

/// A [`BaseProtocol`] shared with the user, for transports that never read (write pipes):
/// `data_received` and `eof_received` events are never sent to it.
pub(crate) struct WriteOnlyProtocol<P>(pub(crate) Rc<RefCell<P>>);

impl<T, P: BaseProtocol<T> + 'static> ErasedProtocol<Event<T>> for WriteOnlyProtocol<P> {
    fn deliver(&self, event: Event<T>) -> Delivered<Event<T>> {
        call_event(&self.0, event, |protocol, event, _| {
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

/// A [`DatagramProtocol`] shared with the user.
pub(crate) struct DatagramAdapter<P>(pub(crate) Rc<RefCell<P>>);

impl<P: DatagramProtocol + 'static> ErasedProtocol<DatagramEvent> for DatagramAdapter<P> {
    fn deliver(&self, event: DatagramEvent) -> Delivered<DatagramEvent> {
        call_event(&self.0, event, |protocol, event, _| {
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
        call(&self.0, "datagram_received", data, copy, |protocol, (data, addr), _| {
            protocol.datagram_received(data, addr);
            Ok(false)
        })
    }

    fn as_any(&self) -> Rc<dyn Any> {
        self.0.clone()
    }
}
