//! TCP echo client using the protocol API: the asyncio documentation's "TCP Echo Client"
//! example, ported. [`EventLoop::create_connection`] connects; `EchoClientProtocol` sends the
//! message, prints what comes back, and when the server closes the connection sets the
//! `on_con_lost` future the program awaits. Against the `tcp_echo_server` example it prints
//! exactly what the Python example prints:
//!
//! ```text
//! Data sent: 'Hello World!'
//! Data received: 'Hello World!'
//! The server closed the connection
//! ```
//!
//! Start `cargo run --example tcp_echo_server` first, then run
//! `cargo run --example tcp_echo_client -- [OPTIONS]`. Options: `--host HOST` (default
//! `127.0.0.1`), `--port PORT` (default `8888`), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without the option, `RINGLOOP_BACKEND` or the best one available),
//! `--message TEXT` (default `Hello World!`).
//!
//! [`EventLoop::create_connection`]: ringloop::EventLoop::create_connection

use std::cell::RefCell;
use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::{
    Backend, BaseProtocol, ConnectOptions, Error, EventLoop, Future, Protocol, Transport,
};

mod support;
use support::{parse_backend, parse_value, py_repr};

const USAGE: &str = "usage: tcp_echo_client [--host HOST] [--port PORT] [--backend uring|epoll] \
                     [--message TEXT]";

/// The command line.
#[derive(Debug)]
struct Args {
    /// The server's host.
    host: String,
    /// The server's port.
    port: u16,
    /// `None`: `RINGLOOP_BACKEND` or the best available.
    backend: Option<Backend>,
    /// What to send.
    message: String,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            host: "127.0.0.1".into(),
            port: 8888,
            backend: None,
            message: "Hello World!".into(),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--host" => parsed.host = value()?,
                "--port" => parsed.port = parse_value(&arg, &value()?)?,
                "--backend" => parsed.backend = Some(parse_backend(&value()?)?),
                "--message" => parsed.message = value()?,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(parsed)
    }
}

/// Sends `message` once connected, prints what comes back, and resolves `on_con_lost` when
/// the connection is gone.
struct EchoClientProtocol {
    /// What to send.
    message: String,
    /// Set by `connection_lost`; `main` waits for it.
    on_con_lost: Future<()>,
    /// The first failure to print or write, reported when the program ends.
    error: Rc<RefCell<Option<String>>>,
}

impl EchoClientProtocol {
    /// Prints `line` and flushes; a failure is kept for the end.
    fn print(&self, line: impl Display) {
        let mut stdout = io::stdout().lock();
        if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
            self.error.borrow_mut().get_or_insert(format!("writing to stdout: {e}"));
        }
    }
}

impl BaseProtocol for EchoClientProtocol {
    fn connection_made(&mut self, transport: Transport) {
        if let Err(e) = transport.write(self.message.as_bytes()) {
            self.error.borrow_mut().get_or_insert(format!("write: {e}"));
        }
        self.print(format_args!("Data sent: {}", py_repr(&self.message)));
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.print("The server closed the connection");
        // Only fails if already done, which connection_lost (called once) rules out.
        let _ = self.on_con_lost.set_result(());
    }
}

impl Protocol for EchoClientProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.print(format_args!("Data received: {}", py_repr(&String::from_utf8_lossy(data))));
    }
}

/// Connects, then waits until the protocol signals that the connection was lost.
async fn talk(event_loop: EventLoop, args: Args) -> Result<Option<String>, String> {
    let on_con_lost = event_loop.create_future::<()>();
    let error = Rc::new(RefCell::new(None));
    let protocol = EchoClientProtocol {
        message: args.message,
        on_con_lost: on_con_lost.clone(),
        error: error.clone(),
    };
    let (host, port) = (args.host.as_str(), args.port);
    let (transport, _protocol) = event_loop
        .create_connection(move || protocol, Some(host), Some(port), ConnectOptions::new())
        .await
        .map_err(|e| format!("cannot connect to {host} port {port}: {e}"))?;
    // Wait until the protocol signals that the connection is lost and close the transport.
    let lost = on_con_lost.await;
    transport.close();
    lost.map_err(|e| format!("waiting for on_con_lost: {e}"))?;
    let failed = error.borrow_mut().take();
    Ok(failed)
}

fn run(event_loop: &EventLoop, args: Args) -> Result<(), String> {
    let talked = event_loop
        .run_until_complete(talk(event_loop.clone(), args))
        .map_err(|e| format!("run_until_complete: {e}"))?;
    talked?.map_or(Ok(()), Err)
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("tcp_echo_client: {err}");
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    support::run_example(
        "tcp_echo_client",
        || support::open_loop(backend),
        |event_loop| run(event_loop, args),
    )
}
