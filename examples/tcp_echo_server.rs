//! TCP echo server using the protocol API: the asyncio documentation's "TCP Echo Server"
//! example, ported. [`EventLoop::create_server`] listens; each connection gets an
//! `EchoServerProtocol` that prints what it receives, sends it back and closes the connection.
//! It prints exactly what the Python example prints, after one `serving on HOST:PORT` line per
//! listening socket (the bound port, so `--port 0` works):
//!
//! ```text
//! serving on 127.0.0.1:8888
//! Connection from ('127.0.0.1', 50502)
//! Data received: 'Hello World!'
//! Send: 'Hello World!'
//! Close the client socket
//! ```
//!
//! Run it with `cargo run --example tcp_echo_server -- [OPTIONS]` and talk to it with the
//! `tcp_echo_client` example. Options:
//!
//! - `--host HOST` (default `127.0.0.1`), `--port PORT` (default `8888`; 0 picks a free port);
//! - `--backend uring|epoll`: the backend (`epoll` needs `--features fallback`); without it,
//!   `RINGLOOP_BACKEND` or the best one available;
//! - `--quiet`: a pure echo server for load tests: no per-connection output, everything is
//!   echoed and connections stay open until the client closes them;
//! - `--max-seconds N`: after `N` seconds stop serving, abort the connections still open and
//!   exit (default: serve forever).
//!
//! It installs no signal handlers: Ctrl-C (SIGINT) or SIGTERM ends the process at once (see
//! `unix_echo_server` and `signals` for examples that close cleanly on a signal).
//!
//! [`EventLoop::create_server`]: ringloop::EventLoop::create_server

use std::fmt::Display;
use std::process::ExitCode;

use ringloop::{BaseProtocol, EventLoop, Protocol, ServerOptions, Transport};

mod support;
use support::echo::EchoProtocol;
use support::serve::{announce, serve_forever};
use support::{py_repr, py_sockaddr, Args, ErrorSlot, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--quiet`, `--max-seconds`.
const SPEC: Spec =
    Spec { name: "tcp_echo_server", port: 8888, flags: &[Flag::Quiet, Flag::MaxSeconds] };

/// Echoes what it receives; unless `quiet`, prints it as the Python example does and closes
/// the connection after the first data.
struct EchoServerProtocol {
    /// The pure echo with its flow control; holds the transport.
    echo: EchoProtocol,
    /// Pure echo: no output, the connection stays open.
    quiet: bool,
    /// Stopped when printing fails.
    event_loop: EventLoop,
    /// Where that failure is kept.
    error: ErrorSlot,
}

impl EchoServerProtocol {
    /// Prints `line` and flushes; a failure is kept and stops the loop.
    fn print(&self, line: impl Display) {
        if !self.error.print(line) {
            self.event_loop.stop();
        }
    }
}

impl BaseProtocol for EchoServerProtocol {
    fn connection_made(&mut self, transport: Transport) {
        if !self.quiet {
            let peername = transport.peername();
            self.print(format_args!("Connection from {}", py_sockaddr(peername.as_ref())));
        }
        self.echo.connection_made(transport);
    }

    // Flow control for load tests, as the pure echo does it.
    fn pause_writing(&mut self) {
        self.echo.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.echo.resume_writing();
    }
}

impl Protocol for EchoServerProtocol {
    fn data_received(&mut self, data: &[u8]) {
        if self.quiet {
            self.echo.data_received(data);
            return;
        }
        let Some(transport) = self.echo.transport.clone() else { return };
        let message = String::from_utf8_lossy(data);
        self.print(format_args!("Data received: {}", py_repr(&message)));

        self.print(format_args!("Send: {}", py_repr(&message)));
        let _ = transport.write(data);

        self.print("Close the client socket");
        transport.close();
    }
}

/// Creates the server, announces its addresses and serves until `--max-seconds` pass.
async fn serve(event_loop: EventLoop, args: Args, error: ErrorSlot) -> Result<(), String> {
    let (quiet, lp) = (args.quiet, event_loop.clone());
    let factory = move || EchoServerProtocol {
        echo: EchoProtocol::default(),
        quiet,
        event_loop: lp.clone(),
        error: error.clone(),
    };
    let (host, port) = (args.host.as_str(), args.port);
    let server = event_loop
        .create_server(factory, host, Some(port), ServerOptions::default())
        .await
        .map_err(|e| format!("cannot serve on {host} port {port}: {e}"))?;
    announce(&server)?;
    serve_forever(&event_loop, server, args.max_seconds).await
}

fn run(event_loop: &EventLoop, args: Args) -> Result<(), String> {
    let error = ErrorSlot::default();
    let served =
        support::run_until_complete(event_loop, serve(event_loop.clone(), args, error.clone()));
    // A failed print stops the loop, which makes run_until_complete fail: report the cause.
    error.take()?;
    served?
}

fn main() -> ExitCode {
    support::run_with_args(&SPEC, run)
}
