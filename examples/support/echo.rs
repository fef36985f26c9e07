//! The echo servers' protocol: whatever arrives is sent back, with flow control.

use ringloop::{BaseProtocol, Protocol, Transport};

/// Sends back what it receives, until the client closes the connection.
#[derive(Default)]
pub struct EchoProtocol {
    /// Set by `connection_made`.
    pub transport: Option<Transport>,
}

impl BaseProtocol for EchoProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.transport = Some(transport);
    }

    // Flow control: a client that sends without reading must not make the write buffer grow
    // without bound, so stop reading while it is over the high-water mark.
    fn pause_writing(&mut self) {
        if let Some(transport) = &self.transport {
            transport.pause_reading();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(transport) = &self.transport {
            transport.resume_reading();
        }
    }
}

impl Protocol for EchoProtocol {
    fn data_received(&mut self, data: &[u8]) {
        if let Some(transport) = &self.transport {
            // Cannot fail before write_eof(), which is never called here.
            let _ = transport.write(data);
        }
    }
}
