//! Recording protocols and the connection helpers that drive them, shared by several test files.

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use ringloop::{AnyProtocol, BaseProtocol, Error, EventLoop, Protocol, Transport};

/// A stream protocol that keeps its transport, the bytes it received and whether the
/// connection was lost.
#[derive(Debug, Default)]
pub struct Received {
    /// The transport given to `connection_made`.
    pub transport: Option<Transport>,
    /// Bytes received.
    pub data: Vec<u8>,
    /// `connection_lost` ran.
    pub lost: bool,
}

impl BaseProtocol for Received {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }
    fn connection_lost(&mut self, _error: Option<Error>) {
        self.lost = true;
    }
}

impl Protocol for Received {
    fn data_received(&mut self, data: &[u8]) {
        self.data.extend_from_slice(data);
    }
}

/// Wraps the connected socket `fd` in a transport driving `protocol`
/// (`connect_accepted_socket` run to completion).
pub fn connect_accepted<K, P: AnyProtocol<K>>(
    event_loop: &EventLoop,
    fd: OwnedFd,
    protocol: P,
) -> (Transport, Rc<RefCell<P>>) {
    let lp = event_loop.clone();
    event_loop
        .run_until_complete(async move { lp.connect_accepted_socket(move || protocol, fd).await })
        .expect("run_until_complete")
        .expect("connect_accepted_socket")
}
