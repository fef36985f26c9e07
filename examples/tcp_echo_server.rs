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
//!   exit (default: serve forever);
//! - `--loops N`: serve with `N` loops on `N` threads (default 1), one listening socket each
//!   on the same port (`SO_REUSEPORT`: the kernel spreads the connections over them), through
//!   [`ringloop::spawn_loops`] and [`ringloop::reuse_port_listeners`]. `--host` is then
//!   resolved to its first address, and `serving on` is printed once.
//!
//! On Ctrl-C (SIGINT) or SIGTERM it shuts down gracefully ([`Server::serve_until`]): it stops
//! listening at once (the port is free for a new server), gives the connections still open
//! 5 seconds to finish, aborts the rest and exits with status 0; a second signal aborts them
//! at once.
//!
//! [`EventLoop::create_server`]: ringloop::EventLoop::create_server
//! [`Server::serve_until`]: ringloop::Server::serve_until

use std::fmt::Display;
use std::net::ToSocketAddrs;
use std::process::ExitCode;

use ringloop::{Address, BaseProtocol, EventLoop, LoopSpawner, Protocol, ServerOptions, Transport};
use socket2::Socket;

mod support;
use support::echo::EchoProtocol;
use support::serve::{announce_and_serve, stop_after, GRACE_SECONDS};
use support::{print, py_repr, py_sockaddr, Args, ErrorSlot, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--quiet`, `--max-seconds`, `--loops`.
const SPEC: Spec = Spec {
    name: "tcp_echo_server",
    port: 8888,
    flags: &[Flag::Quiet, Flag::MaxSeconds, Flag::Loops],
};

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

/// A factory of [`EchoServerProtocol`]s on `event_loop`.
fn factory(
    event_loop: &EventLoop,
    quiet: bool,
    error: &ErrorSlot,
) -> impl Fn() -> EchoServerProtocol + 'static {
    let (lp, error) = (event_loop.clone(), error.clone());
    move || EchoServerProtocol {
        echo: EchoProtocol::default(),
        quiet,
        event_loop: lp.clone(),
        error: error.clone(),
    }
}

/// Creates the server, announces its addresses and serves until a signal or `--max-seconds`.
async fn serve(event_loop: EventLoop, args: Args, error: ErrorSlot) -> Result<(), String> {
    let address = args.address();
    let factory = factory(&event_loop, args.quiet, &error);
    let server = event_loop
        .create_server(factory, &address, ServerOptions::new())
        .await
        .map_err(|e| format!("cannot serve on {address}: {e}"))?;
    announce_and_serve(&event_loop, server, args.max_seconds).await
}

/// One of the `--loops` servers, on `sock`: serves until a signal or `--max-seconds`.
async fn serve_on(sock: Socket, quiet: bool, max_seconds: Option<f64>) -> Result<(), String> {
    let event_loop = ringloop::get_running_loop().map_err(|e| e.to_string())?;
    let error = ErrorSlot::default();
    let options = ServerOptions::new().sock(sock);
    let server = event_loop
        .create_server(factory(&event_loop, quiet, &error), Address::NONE, options)
        .await
        .map_err(|e| format!("create_server: {e}"))?;
    stop_after(&event_loop, &server, max_seconds)?;
    let served = server.serve_until_signal(GRACE_SECONDS).await;
    error.take()?;
    served.map(drop).map_err(|e| format!("serve_until_signal: {e}"))
}

/// `--loops N`: `N` listening sockets on one port, one loop thread serving each.
fn serve_on_loops(args: Args) -> Result<(), String> {
    let (host, port) = (args.host.as_str(), args.port);
    let mut addrs =
        (host, port).to_socket_addrs().map_err(|e| format!("{host} port {port}: {e}"))?;
    let addr = addrs.next().ok_or_else(|| format!("{host} port {port}: no address"))?;
    let listeners = ringloop::reuse_port_listeners(addr, args.loops)
        .map_err(|e| format!("cannot serve on {addr}: {e}"))?;
    let bound = listeners[0].local_addr().ok().and_then(|a| a.as_socket()).unwrap_or(addr);
    // The sockets listen already: connections made from here on wait for their loop.
    print(format_args!("serving on {bound}")).map_err(support::stdout_error)?;
    let spawner = match args.backend {
        Some(backend) => LoopSpawner::new().backend(backend),
        None => LoopSpawner::new(),
    };
    let (quiet, max_seconds) = (args.quiet, args.max_seconds);
    let loops = spawner
        .spawn(listeners, move |sock| serve_on(sock, quiet, max_seconds))
        .map_err(|e| format!("starting {} loops: {e}", args.loops))?;
    for (index, result) in loops.join().into_iter().enumerate() {
        result
            .map_err(|e| format!("loop {index}: {e}"))?
            .map_err(|e| format!("loop {index}: {e}"))?;
    }
    Ok(())
}

fn run(event_loop: &EventLoop, args: Args) -> Result<(), String> {
    if args.loops > 1 {
        // This thread's loop stays idle; the loops of the threads serve.
        return serve_on_loops(args);
    }
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
