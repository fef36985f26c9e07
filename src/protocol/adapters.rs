//! How each kind of protocol takes each event: the adapters that type-erase a user's protocol
//! for a transport's [`Dispatcher`](crate::dispatch::Dispatcher) — [`ByteProtocol`] for a
//! `Protocol` or a `BufferedProtocol` ([`Receive`] says how each takes bytes and EOF),
//! [`WriteOnlyProtocol`] for a write pipe's `BaseProtocol`, [`DatagramAdapter`] for a
//! `DatagramProtocol` — and the transports' `set_protocol`, which adapts the new protocol.
//!
//! The transports never name a protocol trait: they send [`Event`]s to a type-erased
//! [`ErasedProtocol`], and this module is the one place that turns those into calls of the
//! traits in `super`. So `transport` depends on `dispatch` alone, and `protocol` on both.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::rc::Rc;

use socket2::SockAddr;

use super::{
    AnyProtocol, BaseProtocol, BufferedKind, BufferedProtocol, DatagramProtocol, Protocol,
    StreamingKind,
};
use crate::dispatch::{call, Calling, DatagramEvent, Deliver, Delivered, ErasedProtocol};
use crate::dispatch::{Event, Failure};
use crate::error::{Error, RuntimeKind};
use crate::transport::{DatagramTransport, DynProtocol, ReadTransport, Transport, WriteTransport};

/// [`call`] for an event (handed back as it is when the protocol is busy).
fn call_event<P: ?Sized, E: Deliver>(
    protocol: &RefCell<P>,
    event: E,
    deliver: impl FnOnce(&mut P, E, &Calling) -> Result<bool, Failure>,
) -> Delivered<E> {
    call(protocol, event.callback(), event, |e| e, deliver)
}
/// How each protocol kind takes received bytes and EOF: the seal of
/// [`AnyProtocol`] (nameable only inside the crate).
pub trait Receive<Kind, T = Transport>: BaseProtocol<T> {
    /// `protocol` as a transport of type `T` drives it. Each impl names its own kind, so no
    /// caller has to bound the kind parameter (`K: 'static`) to erase the protocol.
    #[doc(hidden)]
    fn erase(protocol: Rc<RefCell<Self>>) -> Erased<T>
    where
        Self: Sized + 'static,
        T: 'static;
    /// Hands `data` (not empty) to the protocol, naming in `calling` each method it calls.
    #[doc(hidden)]
    fn receive(&mut self, data: &[u8], calling: &Calling) -> Result<(), Failure>;
    /// `eof_received`: whether to keep the connection half-open.
    #[doc(hidden)]
    fn receive_eof(&mut self) -> bool;
}

/// A protocol as [`Receive::erase`] gives it (a public type only to the trait's signature:
/// nameable only inside the crate, like the trait).
pub struct Erased<T>(pub(crate) Rc<DynProtocol<T>>);

impl<T> std::fmt::Debug for Erased<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Erased")
    }
}

impl<T: 'static, P: Protocol<T> + 'static> Receive<StreamingKind, T> for P {
    fn erase(protocol: Rc<RefCell<Self>>) -> Erased<T> {
        ByteProtocol::<P, StreamingKind, T>::erased(protocol)
    }

    fn receive(&mut self, data: &[u8], _: &Calling) -> Result<(), Failure> {
        self.data_received(data);
        Ok(())
    }

    fn receive_eof(&mut self) -> bool {
        Protocol::eof_received(self)
    }
}

/// asyncio's message for a `get_buffer` that returned nothing to read into.
const EMPTY_BUFFER: &str = "get_buffer() returned an empty buffer";

impl<P: BufferedProtocol + 'static> Receive<BufferedKind> for P {
    fn erase(protocol: Rc<RefCell<Self>>) -> Erased<Transport> {
        ByteProtocol::<P, BufferedKind, Transport>::erased(protocol)
    }

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
                return Err(Failure::new(
                    "get_buffer",
                    Error::runtime(RuntimeKind::Other, EMPTY_BUFFER),
                ));
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
pub(crate) fn adapt<K, P: AnyProtocol<K>>(protocol: Rc<RefCell<P>>) -> Rc<DynProtocol> {
    P::erase(protocol).0
}

/// `protocol` as a read pipe transport drives it.
pub(crate) fn adapt_read_pipe<P: Protocol<ReadTransport> + 'static>(
    protocol: Rc<RefCell<P>>,
) -> Rc<DynProtocol<ReadTransport>> {
    Receive::<StreamingKind, _>::erase(protocol).0
}

/// `protocol` as a write pipe transport drives it (it is never given data or EOF).
pub(crate) fn adapt_write_pipe<P: BaseProtocol<WriteTransport> + 'static>(
    protocol: Rc<RefCell<P>>,
) -> Rc<DynProtocol<WriteTransport>> {
    Rc::new(WriteOnlyProtocol(protocol))
}

/// `protocol` as a datagram transport drives it.
pub(crate) fn adapt_datagram<P: DatagramProtocol + 'static>(
    protocol: Rc<RefCell<P>>,
) -> Rc<dyn ErasedProtocol<DatagramEvent<DatagramTransport>>> {
    Rc::new(DatagramAdapter(protocol))
}

impl<P: Receive<K, T> + 'static, K: 'static, T: 'static> ByteProtocol<P, K, T> {
    /// `protocol`, erased.
    fn erased(protocol: Rc<RefCell<P>>) -> Erased<T> {
        Erased(Rc::new(ByteProtocol { protocol, kind: PhantomData::<fn() -> (K, T)> }))
    }
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
struct WriteOnlyProtocol<P>(Rc<RefCell<P>>);

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

/// A [`DatagramProtocol`] shared with the user.
struct DatagramAdapter<P>(Rc<RefCell<P>>);

impl<P: DatagramProtocol + 'static> ErasedProtocol<DatagramEvent<DatagramTransport>>
    for DatagramAdapter<P>
{
    fn deliver(
        &self,
        event: DatagramEvent<DatagramTransport>,
    ) -> Delivered<DatagramEvent<DatagramTransport>> {
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

    fn data(&self, data: (&[u8], Option<SockAddr>)) -> Delivered<DatagramEvent<DatagramTransport>> {
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

impl Transport {
    /// Switches to another protocol, a [`Protocol`] or a [`BufferedProtocol`] (either way
    /// round); later events go to it, and the next bytes received are delivered as the new
    /// protocol's kind wants them.
    pub fn set_protocol<K, P: AnyProtocol<K>>(&self, protocol: Rc<RefCell<P>>) {
        self.replace_protocol(adapt(protocol));
    }
}

impl ReadTransport {
    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P: Protocol<ReadTransport> + 'static>(&self, protocol: Rc<RefCell<P>>) {
        self.replace_protocol(adapt_read_pipe(protocol));
    }
}

impl WriteTransport {
    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P>(&self, protocol: Rc<RefCell<P>>)
    where
        P: BaseProtocol<WriteTransport> + 'static,
    {
        self.replace_protocol(adapt_write_pipe(protocol));
    }
}

impl DatagramTransport {
    /// Switches to another protocol; later events go to it.
    pub fn set_protocol<P: DatagramProtocol + 'static>(&self, protocol: Rc<RefCell<P>>) {
        self.replace_protocol(adapt_datagram(protocol));
    }
}
