//! The streams of a child process (asyncio's `SubprocessStreamProtocol`): a protocol that
//! feeds a [`StreamReader`] from the child's stdout and stderr pipes and stands behind a
//! [`StreamWriter`] on its stdin, for [`Process`](super::Process).

use std::rc::Rc;

use super::{PipeTransport, SubprocessProtocol, SubprocessTransport};
use crate::error::{Error, Result};
use crate::protocol::BaseProtocol;
use crate::streams::{check_limit, ReadSource, StreamReader, StreamState, StreamWriter};
use crate::transport::WriteTransport;

/// The protocol of a child whose piped streams are [`StreamReader`]s and a [`StreamWriter`]
/// (asyncio's `SubprocessStreamProtocol`). Clones share the streams' states.
#[derive(Clone)]
pub(crate) struct SubprocessStreamProtocol {
    /// The state of each piped stream, by the child's fd (0, 1, 2).
    states: [Option<Rc<StreamState>>; 3],
}

impl SubprocessStreamProtocol {
    /// Streams for the child's fds that are `piped`, the readers' buffer limit `limit`
    /// (`Error::InvalidArgument` for 0).
    pub(crate) fn new(piped: [bool; 3], limit: usize) -> Result<SubprocessStreamProtocol> {
        check_limit(limit)?;
        Ok(SubprocessStreamProtocol { states: piped.map(|p| p.then(|| StreamState::new(limit))) })
    }

    /// The stdin writer and the stdout and stderr readers over `transport`'s pipes.
    pub(crate) fn streams(
        &self,
        transport: &SubprocessTransport,
    ) -> (Option<StreamWriter<WriteTransport>>, Option<StreamReader>, Option<StreamReader>) {
        let [stdin, stdout, stderr] = self.states.clone();
        let pipe = transport.get_pipe_transport(0);
        let writer = match (stdin, pipe) {
            (Some(state), Some(PipeTransport::Write(pipe))) => Some(StreamWriter::new(pipe, state)),
            _ => None,
        };
        (writer, stdout.map(StreamReader::new), stderr.map(StreamReader::new))
    }

    fn state(&self, fd: i32) -> Option<&Rc<StreamState>> {
        self.states.get(usize::try_from(fd).ok()?)?.as_ref()
    }
}

impl BaseProtocol<SubprocessTransport> for SubprocessStreamProtocol {
    /// Gives the readers their pipes, for reading backpressure.
    fn connection_made(&mut self, transport: SubprocessTransport) {
        for fd in [1, 2] {
            if let (Some(state), Some(PipeTransport::Read(pipe))) =
                (self.state(fd), transport.get_pipe_transport(fd))
            {
                state.set_source(ReadSource::Pipe(pipe));
            }
        }
    }

    fn pause_writing(&mut self) {
        if let Some(stdin) = self.state(0) {
            stdin.pause_writing();
        }
    }

    fn resume_writing(&mut self) {
        if let Some(stdin) = self.state(0) {
            stdin.resume_writing();
        }
    }
}

impl SubprocessProtocol for SubprocessStreamProtocol {
    fn pipe_data_received(&mut self, fd: i32, data: &[u8]) {
        if let Some(state) = self.state(fd) {
            state.feed_data(data);
        }
    }

    /// EOF (or the error) for a reader; for stdin, what `drain` and `wait_closed` wait for.
    fn pipe_connection_lost(&mut self, fd: i32, error: Option<Error>) {
        if let Some(state) = self.state(fd) {
            state.connection_lost(error);
        }
    }
}
