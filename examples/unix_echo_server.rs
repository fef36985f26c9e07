//! Unix-socket echo server: [`EventLoop::create_unix_server`] listens on a socket file and
//! each connection gets an `EchoProtocol` that sends back whatever it receives, until the
//! client closes the connection. Once listening it prints one line:
//!
//! ```text
//! serving on /tmp/echo.sock
//! ```
//!
//! On SIGINT (Ctrl-C) or SIGTERM it shuts down gracefully ([`Server::serve_until`], the
//! signals through [`EventLoop::add_signal_handler`]): it closes the server at once, which
//! removes the socket file (`cleanup_socket`, on by default), gives the connections still open
//! 5 seconds to finish, aborts the rest (so a client that has stopped reading cannot hold up
//! the exit for longer) and exits with status 0; a second signal aborts them at once.
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
//! [`Server::serve_until`]: ringloop::Server::serve_until

use std::process::ExitCode;

use ringloop::{EventLoop, UnixServerOptions};

mod support;
use support::echo::EchoProtocol;
use support::serve::announce_and_serve;
use support::{Args, Flag, Spec};

/// The command line: `--path`, `--backend`.
const SPEC: Spec = Spec { name: "unix_echo_server", port: 0, flags: &[Flag::Path] };

/// Creates the server, announces its path and serves until a signal.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    // `Spec::parse` requires `--path` for this spec.
    let path = args.path.unwrap_or_default();
    let server = event_loop
        .create_unix_server(EchoProtocol::default, path.as_str(), UnixServerOptions::new())
        .await
        .map_err(|e| format!("cannot serve on {path}: {e}"))?;
    announce_and_serve(&event_loop, server, None).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
