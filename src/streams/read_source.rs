//! [`ReadSource`]: the transport a stream reader pauses and resumes.

use crate::transport::{ReadTransport, Transport};

/// The transport a reader pauses and resumes (reading backpressure): a connection's, or a
/// child's stdout or stderr pipe.
pub(crate) enum ReadSource {
    /// A stream connection.
    Stream(Transport),
    /// A child's stdout or stderr.
    Pipe(ReadTransport),
}

impl ReadSource {
    pub(crate) fn pause_reading(&self) {
        match self {
            ReadSource::Stream(transport) => transport.pause_reading(),
            ReadSource::Pipe(transport) => transport.pause_reading(),
        }
    }

    pub(crate) fn resume_reading(&self) {
        match self {
            ReadSource::Stream(transport) => transport.resume_reading(),
            ReadSource::Pipe(transport) => transport.resume_reading(),
        }
    }
}
