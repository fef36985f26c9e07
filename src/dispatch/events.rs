//! The events a transport sends its protocol through a [`Dispatcher`](super::Dispatcher):
//! [`Event`] for byte transports (streams and pipes), [`DatagramEvent`] for datagram
//! endpoints. Each is generic over the transport type `connection_made` gets, so this module
//! names no transport; the transports build the events, the protocol adapters
//! (`crate::protocol`) take them apart.

use socket2::SockAddr;

use super::{Deliver, Role};
use crate::error::Error;

/// A protocol callback of a byte transport (stream or pipe). `T` is the transport type
/// `connection_made` gets (the stream `Transport`, or a pipe transport).
pub(crate) enum Event<T> {
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

/// A protocol callback of a datagram transport. `T` is the transport type `connection_made`
/// gets (`DatagramTransport`).
pub(crate) enum DatagramEvent<T> {
    /// `connection_made`.
    Made(T),
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

impl<T> Deliver for DatagramEvent<T> {
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
