//! UDP echo client: the asyncio documentation's "UDP Echo Client" example, ported.
//! [`EventLoop::create_datagram_endpoint`] connects to `remote_addr`; `EchoClientProtocol`
//! sends the message, prints the reply, closes the endpoint, and `connection_lost` sets the
//! `on_con_lost` future the program awaits. Against the `udp_echo_server` example it prints
//! exactly what the Python example prints:
//!
//! ```text
//! Send: Hello World!
//! Received: Hello World!
//! Close the socket
//! Connection closed
//! ```
//!
//! Start `cargo run --example udp_echo_server` first, then run
//! `cargo run --example udp_echo_client -- [OPTIONS]`. Options: `--host HOST` (default
//! `127.0.0.1`), `--port PORT` (default `9999`), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without the option, `RINGLOOP_BACKEND` or the best one available),
//! `--message TEXT` (default `Hello World!`). With no server listening, the refusal is printed
//! as `Error received: ...` and the client waits, as the Python one does.
//!
//! [`EventLoop::create_datagram_endpoint`]: ringloop::EventLoop::create_datagram_endpoint

use std::cell::RefCell;
use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;
use std::rc::Rc;

use ringloop::{
    Backend, DatagramOptions, DatagramProtocol, DatagramTransport, Error, EventLoop, Future,
};
use socket2::SockAddr;

mod support;
use support::{parse_backend, parse_value};

const USAGE: &str = "usage: udp_echo_client [--host HOST] [--port PORT] [--backend uring|epoll] \
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
            port: 9999,
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

/// Sends `message` once the endpoint is made, prints the reply and closes; resolves
/// `on_con_lost` when the endpoint is closed.
struct EchoClientProtocol {
    /// What to send.
    message: String,
    /// Set by `connection_lost`; `main` waits for it.
    on_con_lost: Future<()>,
    /// Set by `connection_made`.
    transport: Option<DatagramTransport>,
    /// The first failure to print, reported when the program ends.
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

impl DatagramProtocol for EchoClientProtocol {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.print(format_args!("Send: {}", self.message));
        if let Err(e) = transport.sendto(self.message.as_bytes(), None) {
            self.error.borrow_mut().get_or_insert(format!("sendto: {e}"));
        }
        self.transport = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], _addr: Option<SockAddr>) {
        self.print(format_args!("Received: {}", String::from_utf8_lossy(data)));
        self.print("Close the socket");
        if let Some(transport) = &self.transport {
            transport.close();
        }
    }

    fn error_received(&mut self, error: Error) {
        self.print(format_args!("Error received: {error}"));
    }

    fn connection_lost(&mut self, _error: Option<Error>) {
        self.print("Connection closed");
        // Only fails if already done, which connection_lost (called once) rules out.
        let _ = self.on_con_lost.set_result(());
    }
}

/// Creates the endpoint, then waits until the protocol signals that it was closed.
async fn talk(event_loop: EventLoop, args: Args) -> Result<Option<String>, String> {
    let on_con_lost = event_loop.create_future::<()>();
    let error = Rc::new(RefCell::new(None));
    let protocol = EchoClientProtocol {
        message: args.message,
        on_con_lost: on_con_lost.clone(),
        transport: None,
        error: error.clone(),
    };
    let (host, port) = (args.host.as_str(), args.port);
    let options = DatagramOptions::new().remote_addr(host, port);
    let (transport, _protocol) = event_loop
        .create_datagram_endpoint(move || protocol, options)
        .await
        .map_err(|e| format!("cannot reach {host} port {port}: {e}"))?;
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
            eprintln!("udp_echo_client: {err}");
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    support::run_example(
        "udp_echo_client",
        || support::open_loop(backend),
        |event_loop| run(event_loop, args),
    )
}
