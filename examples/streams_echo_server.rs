//! TCP echo server using streams: the asyncio documentation's "TCP echo server using streams"
//! example, ported. [`EventLoop::start_server`] listens and runs `handle_echo(reader, writer)`
//! as a task for each connection: it reads up to 100 bytes, prints them, writes them back,
//! drains and closes. After one `serving on HOST:PORT` line per listening socket (the bound
//! port, so `--port 0` works) it prints what the Python example prints:
//!
//! ```text
//! serving on 127.0.0.1:8888
//! Received 'Hello World!' from ('127.0.0.1', 50502)
//! Send: 'Hello World!'
//! Close the connection
//! ```
//!
//! Run it with `cargo run --example streams_echo_server -- [OPTIONS]` and talk to it with the
//! `streams_echo_client` example. Options: `--host HOST` (default `127.0.0.1`), `--port PORT`
//! (default `8888`; 0 picks a free port), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without it, `RINGLOOP_BACKEND` or the best one available),
//! `--max-seconds N` (stop serving and exit after `N` seconds; default: serve forever).
//!
//! On Ctrl-C (SIGINT) or SIGTERM it shuts down gracefully ([`Server::serve_until`]): it stops
//! listening, gives the connections still open 5 seconds to finish, aborts the rest and exits
//! with status 0; a second signal aborts them at once.
//!
//! [`EventLoop::start_server`]: ringloop::EventLoop::start_server
//! [`Server::serve_until`]: ringloop::Server::serve_until

use std::fmt::Display;
use std::process::ExitCode;

use ringloop::{Error, EventLoop, ExtraInfo, ServerOptions, StreamReader, StreamWriter};

mod support;
use support::serve::serve_streams;
use support::{py_repr, py_sockaddr, Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--max-seconds`.
const SPEC: Spec = Spec { name: "streams_echo_server", port: 8888, flags: &[Flag::MaxSeconds] };

/// Prints `line` and flushes.
fn print(line: impl Display) -> Result<(), Error> {
    support::print(line).map_err(|e| Error::io("writing to stdout", e))
}

/// One connection: the Python example's `handle_echo`. An error it returns goes to the loop's
/// exception handler and the connection is closed.
async fn handle_echo(reader: StreamReader, writer: StreamWriter) -> Result<(), Error> {
    let data = reader.read(100).await?;
    let message = String::from_utf8_lossy(&data);
    let addr = match writer.get_extra_info("peername") {
        Some(ExtraInfo::Address(addr)) => Some(addr),
        _ => None,
    };
    print(format_args!("Received {} from {}", py_repr(&message), py_sockaddr(addr.as_ref())))?;

    print(format_args!("Send: {}", py_repr(&message)))?;
    writer.write(&data)?;
    writer.drain().await?;

    print("Close the connection")?;
    writer.close();
    writer.wait_closed().await
}

/// Starts the server, announces its addresses and serves until a signal or `--max-seconds`.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    serve_streams(event_loop, &args, handle_echo, ServerOptions::new()).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
