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
//! ringloop has no signal handling yet: Ctrl-C (SIGINT) or SIGTERM kills the process.
//!
//! [`EventLoop::create_server`]: ringloop::EventLoop::create_server

use std::cell::RefCell;
use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::{Backend, BaseProtocol, Error, EventLoop, Protocol, ServerOptions, Transport};

mod support;
use support::{parse_backend, parse_value, py_address, py_repr};

const USAGE: &str = "usage: tcp_echo_server [--host HOST] [--port PORT] [--backend uring|epoll] \
                     [--quiet] [--max-seconds N]";

/// The command line.
#[derive(Debug)]
struct Args {
    /// Where to listen.
    host: String,
    /// The port; 0 picks a free one.
    port: u16,
    /// `None`: `RINGLOOP_BACKEND` or the best available.
    backend: Option<Backend>,
    /// No output per connection; echo everything, never close.
    quiet: bool,
    /// Exit after this many seconds.
    max_seconds: Option<f64>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            host: "127.0.0.1".into(),
            port: 8888,
            backend: None,
            quiet: false,
            max_seconds: None,
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--host" => parsed.host = value()?,
                "--port" => parsed.port = parse_value(&arg, &value()?)?,
                "--backend" => parsed.backend = Some(parse_backend(&value()?)?),
                "--quiet" => parsed.quiet = true,
                "--max-seconds" => {
                    let secs: f64 = parse_value(&arg, &value()?)?;
                    if !secs.is_finite() || secs < 0.0 {
                        return Err(format!(
                            "--max-seconds must be a finite number >= 0, not {secs}"
                        ));
                    }
                    parsed.max_seconds = Some(secs);
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(parsed)
    }
}

/// The first error met inside a callback (callbacks cannot return one).
type ErrorSlot = Rc<RefCell<Option<String>>>;

/// Echoes what it receives; unless `quiet`, prints it as the Python example does and closes
/// the connection after the first data.
struct EchoServerProtocol {
    /// Set by `connection_made`.
    transport: Option<Transport>,
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
        let mut stdout = io::stdout().lock();
        if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            self.error.borrow_mut().get_or_insert(format!("writing to stdout: {e}"));
            self.event_loop.stop();
        }
    }
}

impl BaseProtocol for EchoServerProtocol {
    fn connection_made(&mut self, transport: Transport) {
        if !self.quiet {
            let peername = transport.peername().and_then(|a| a.as_socket());
            self.print(format_args!("Connection from {}", py_address(peername)));
        }
        self.transport = Some(transport);
    }

    // Flow control for load tests: a client that sends without reading must not make the
    // write buffer grow without bound, so stop reading while it is over the high-water mark.
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

impl Protocol for EchoServerProtocol {
    fn data_received(&mut self, data: &[u8]) {
        let Some(transport) = self.transport.clone() else { return };
        if self.quiet {
            // Cannot fail before write_eof(), which is never called here.
            let _ = transport.write(data);
            return;
        }
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
    let (quiet, lp, err) = (args.quiet, event_loop.clone(), error.clone());
    let factory = move || EchoServerProtocol {
        transport: None,
        quiet,
        event_loop: lp.clone(),
        error: err.clone(),
    };
    let (host, port) = (args.host.as_str(), args.port);
    let server = event_loop
        .create_server(factory, host, Some(port), ServerOptions::default())
        .await
        .map_err(|e| format!("cannot serve on {host} port {port}: {e}"))?;

    let mut stdout = io::stdout().lock();
    for addr in server.sockets() {
        let addr = addr.as_socket().map_or_else(|| format!("{addr:?}"), |a| a.to_string());
        writeln!(stdout, "serving on {addr}").map_err(|e| format!("writing to stdout: {e}"))?;
    }
    stdout.flush().map_err(|e| format!("writing to stdout: {e}"))?;
    drop(stdout);

    if let Some(secs) = args.max_seconds {
        // Time is up: stop listening and drop the connections still open (a bounded exit even
        // with a client that has stopped reading).
        let closer = server.clone();
        let stop = move || {
            closer.close();
            closer.abort_clients();
        };
        event_loop.call_later(secs, stop).map_err(|e| format!("call_later: {e}"))?;
    }
    // `async with server: await server.serve_forever()`; closing the server ends it.
    match server.scope(|server| async move { server.serve_forever().await }).await {
        Ok(()) | Err(Error::Cancelled) => Ok(()),
        Err(e) => Err(format!("serve_forever: {e}")),
    }
}

fn run(event_loop: &EventLoop, args: Args) -> Result<(), String> {
    let error: ErrorSlot = Rc::new(RefCell::new(None));
    let served = event_loop.run_until_complete(serve(event_loop.clone(), args, error.clone()));
    // A failed print stops the loop, which makes run_until_complete fail: report the cause.
    if let Some(message) = error.borrow_mut().take() {
        return Err(message);
    }
    served.map_err(|e| format!("run_until_complete: {e}"))?
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("tcp_echo_server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    support::run_example(
        "tcp_echo_server",
        || support::open_loop(backend),
        |event_loop| run(event_loop, args),
    )
}
