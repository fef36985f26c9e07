//! A file server: every client that connects gets the whole of one file, sent with
//! [`EventLoop::sendfile`] (asyncio's `loop.sendfile`), and then the connection is closed.
//! Nothing is read from the client. It prints one line, the address it serves on (the bound
//! port, so `--port 0` works), and nothing per connection:
//!
//! ```text
//! serving on 127.0.0.1:40213
//! ```
//!
//! The file goes zero-copy: on io_uring as splices through a pipe (file → pipe → socket), on
//! epoll with `sendfile(2)`. A file that cannot (a FIFO, say) is copied through the loop
//! instead (`fallback = true`, asyncio's default).
//!
//! Run it with `cargo run --example sendfile_server -- --file PATH [OPTIONS]` and fetch the
//! file with, for example, `nc 127.0.0.1 PORT > copy`. Options:
//!
//! - `--file PATH` (required): the file to send; it is opened again for every connection,
//!   so a file replaced while serving is sent as it is then;
//! - `--host HOST` (default `127.0.0.1`), `--port PORT` (default 0: a free port);
//! - `--backend uring|epoll`: the backend (`epoll` needs `--features fallback`); without it,
//!   `RINGLOOP_BACKEND` or the best one available;
//! - `--max-seconds N`: after `N` seconds stop serving, abort the transfers still running
//!   and exit (default: serve forever).
//!
//! On Ctrl-C (SIGINT) or SIGTERM it stops listening, lets the transfers in progress run for
//! up to 5 seconds, aborts the rest and exits with status 0 (`Server::serve_until`).
//!
//! [`EventLoop::sendfile`]: ringloop::EventLoop::sendfile

use std::fs::File;
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::{BaseProtocol, EventLoop, Protocol, ServerOptions, Transport};

mod support;
use support::serve::announce_and_serve;
use support::{Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--file`, `--max-seconds`.
const SPEC: Spec =
    Spec { name: "sendfile_server", port: 0, flags: &[Flag::File, Flag::MaxSeconds] };

/// A connection's protocol: sends the file once the connection is made, then closes it.
struct FileSender {
    /// The loop the sending task runs on.
    event_loop: EventLoop,
    /// The file to send.
    path: Rc<str>,
}

impl BaseProtocol for FileSender {
    fn connection_made(&mut self, transport: Transport) {
        let (event_loop, path) = (self.event_loop.clone(), self.path.clone());
        let send = async move {
            match send_file(&event_loop, &transport, &path).await {
                Ok(_) => transport.close(),
                Err(err) => {
                    eprintln!("sendfile_server: sending {path}: {err}");
                    transport.abort();
                }
            }
        };
        if let Err(err) = self.event_loop.create_task(send) {
            eprintln!("sendfile_server: create_task: {err}");
        }
    }
}

/// What the client sends is ignored.
impl Protocol for FileSender {}

/// Sends the whole file at `path` on `transport`; the bytes sent.
async fn send_file(
    event_loop: &EventLoop,
    transport: &Transport,
    path: &str,
) -> ringloop::Result<u64> {
    let file = File::open(path)?;
    event_loop.sendfile(transport, &file, 0, None, true).await
}

/// Creates the server, announces its address and serves until a signal or `--max-seconds`.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let path: Rc<str> = args.file.as_deref().unwrap_or_default().into();
    // A file that cannot be opened is an error now rather than at every connection.
    File::open(&*path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let lp = event_loop.clone();
    let factory = move || FileSender { event_loop: lp.clone(), path: path.clone() };
    let address = args.address();
    let server = event_loop
        .create_server(factory, &address, ServerOptions::new())
        .await
        .map_err(|e| format!("cannot serve on {address}: {e}"))?;
    announce_and_serve(&event_loop, server, args.max_seconds).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
