//! Unix-socket echo server: [`EventLoop::create_unix_server`] listens on a socket file and
//! each connection gets an `EchoProtocol` that sends back whatever it receives, until the
//! client closes the connection. Once listening it prints one line:
//!
//! ```text
//! serving on /tmp/echo.sock
//! ```
//!
//! On SIGINT (Ctrl-C) or SIGTERM ([`EventLoop::add_signal_handler`]) it closes the server,
//! which removes the socket file (`cleanup_socket`, on by default), aborts the connections
//! still open (so a client that has stopped reading cannot hold up the exit), waits until the
//! server is closed and exits with status 0.
//!
//! Run it with `cargo run --example unix_echo_server -- --path PATH [--backend uring|epoll]`
//! and talk to it with e.g. `socat - UNIX-CONNECT:PATH`. Options:
//!
//! - `--path PATH` (required): where the socket file goes; a stale socket file left there by
//!   a server that died is replaced, any other file is an error;
//! - `--backend uring|epoll`: the backend (`epoll` needs `--features fallback`); without it,
//!   `RINGLOOP_BACKEND` or the best one available.
//!
//! [`EventLoop::create_unix_server`]: ringloop::EventLoop::create_unix_server
//! [`EventLoop::add_signal_handler`]: ringloop::EventLoop::add_signal_handler

use std::process::ExitCode;

use ringloop::{EventLoop, Server, UnixServerOptions};

mod support;
use support::echo::EchoProtocol;
use support::serve::{announce, serve_forever};
use support::{Args, Flag, Spec};

/// The command line: `--path`, `--backend`.
const SPEC: Spec = Spec { name: "unix_echo_server", port: 0, flags: &[Flag::Path] };

/// Makes SIGINT and SIGTERM close `server` (removing its socket file) and abort its
/// connections, which ends [`serve_forever`].
fn close_on_signals(event_loop: &EventLoop, server: &Server) -> Result<(), String> {
    for (signum, signame) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let server = server.clone();
        let close = move || {
            server.close();
            server.abort_clients();
        };
        event_loop
            .add_signal_handler(signum, close)
            .map_err(|e| format!("add_signal_handler({signame}): {e}"))?;
    }
    Ok(())
}

/// Creates the server, makes the signals close it, announces its path and serves until it is
/// closed.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    // `Spec::parse` requires `--path` for this spec.
    let path = args.path.unwrap_or_default();
    let server = event_loop
        .create_unix_server(EchoProtocol::default, path.as_str(), UnixServerOptions::default())
        .await
        .map_err(|e| format!("cannot serve on {path}: {e}"))?;
    // The handlers are in place before the line is printed: a signal sent as soon as it
    // appears is handled.
    if let Err(err) = close_on_signals(&event_loop, &server).and_then(|()| announce(&server)) {
        server.close();
        return Err(err);
    }
    serve_forever(&event_loop, server, None).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
