//! The ringloop sendfile servers: `create_server` with a protocol whose `connection_made`
//! starts a task that sends the file with `EventLoop::sendfile` and then closes the
//! transport, as a user would write it.
//!
//! `ringloop-copy` measures ringloop's chunked fallback (`Op::Read` of 256 KiB into a buffer,
//! then the transport's write path). The library takes it only for a file that cannot go
//! zero-copy: a non-regular file, or a kernel that refuses the splice. This kernel splices
//! every regular file, and the bench adds nothing to the library to force the fallback, so
//! the file reaches the loop through a pipe: a feeder thread per connection splices it into
//! the pipe (`splice(2)` file → pipe, no copy: page references), and the loop reads the pipe
//! as it would read the file. The feeder's work (and its wake-ups) is counted in the
//! server's CPU time; the report shows it apart as the CPU used off the loop's thread.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringloop::{Address, Backend, BaseProtocol, EventLoop, Protocol, ServerOptions, Transport};

use crate::server::ringloop_protocol::serve_with;
use crate::sys;

/// How a server gets the file's bytes to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `sendfile` of the file on the io_uring backend (splices through a pipe of the driver).
    Uring,
    /// `sendfile` of the file on the epoll backend (`sendfile(2)`).
    Epoll,
    /// `sendfile(fallback = true)` of a pipe fed from the file, on io_uring: the chunked copy.
    Copy,
}

/// One connection's protocol: starts the transfer when the connection is made; reads and
/// ignores whatever the client sends.
struct Sender {
    /// The loop the transfer task runs on.
    event_loop: EventLoop,
    /// The file to send.
    path: Rc<PathBuf>,
    /// Whether it goes through a pipe (the copy).
    copy: bool,
}

impl BaseProtocol for Sender {
    fn connection_made(&mut self, transport: Transport) {
        let task = send(self.event_loop.clone(), transport, self.path.clone(), self.copy);
        if let Err(e) = self.event_loop.create_task(task) {
            eprintln!("sendfile server: create_task: {e}");
        }
    }
}

impl Protocol for Sender {}

/// Sends the file on `transport`, then closes it; an error is printed and aborts it (the
/// client sees a short transfer, which stops the run).
async fn send(event_loop: EventLoop, transport: Transport, path: Rc<PathBuf>, copy: bool) {
    match send_whole(&event_loop, &transport, &path, copy).await {
        Ok(()) => transport.close(),
        Err(e) => {
            eprintln!("sendfile server: {}: {e}", path.display());
            transport.abort();
        }
    }
}

/// Sends the whole file at `path`: zero-copy, the file itself with `fallback = false` (an
/// error rather than a silent copy); or with `copy` the chunked copy, a pipe fed from the
/// file with `fallback = true`, to its end.
async fn send_whole(
    event_loop: &EventLoop,
    transport: &Transport,
    path: &Path,
    copy: bool,
) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("open: {e}"))?;
    let size = file.metadata().map_err(|e| format!("fstat: {e}"))?.len();
    let sent = match copy {
        false => event_loop.sendfile(transport, &file, 0, None, false).await,
        true => {
            let pipe = feed(file).map_err(|e| format!("starting the feeder: {e}"))?;
            event_loop.sendfile(transport, &pipe, 0, None, true).await
        }
    };
    whole(sent.map_err(|e| e.to_string())?, size)
}

/// `Ok` when `sent` is the whole file.
fn whole(sent: u64, size: u64) -> Result<(), String> {
    match sent == size {
        true => Ok(()),
        false => Err(format!("sent {sent} of {size} bytes")),
    }
}

/// A pipe's read end (non-blocking, as the loop wants it) that a new thread fills with the
/// whole of `file` by `splice(2)` and then closes.
fn feed(file: File) -> io::Result<OwnedFd> {
    let (read, write) = sys::pipe()?;
    sys::set_nonblocking(&read)?;
    std::thread::Builder::new().name("sendfile-feeder".into()).spawn(move || {
        let mut offset = 0;
        // The end of the file, or an error: the loop reads the end of the pipe, and a short
        // transfer is reported there. (A closed read end, EPIPE, means the transfer failed
        // and was reported already.)
        while matches!(sys::splice(&file, Some(&mut offset), &write, 1 << 20, 0), Ok(1..)) {}
    })?;
    Ok(read)
}

/// Serves `path` from `source` on `listener` until the process exits.
pub fn serve(
    listener: TcpListener,
    path: &Path,
    source: Source,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let backend = match source {
        Source::Uring | Source::Copy => Backend::Uring,
        Source::Epoll => Backend::Epoll,
    };
    let path = Rc::new(path.to_path_buf());
    serve_with(backend, announce, move |event_loop| async move {
        let options = ServerOptions::new().sock(listener).backlog(1024);
        let lp = event_loop.clone();
        let factory = move || Sender {
            event_loop: lp.clone(),
            path: path.clone(),
            copy: source == Source::Copy,
        };
        event_loop.create_server(factory, Address::NONE, options).await
    })
}
