//! TCP echo client using streams: the asyncio documentation's "TCP echo client using streams"
//! example, ported. [`EventLoop::open_connection`] connects; the client writes the message,
//! drains, reads up to 100 bytes back and closes. Against the `streams_echo_server` (or
//! `tcp_echo_server`) example it prints exactly what the Python example prints:
//!
//! ```text
//! Send: 'Hello World!'
//! Received: 'Hello World!'
//! Close the connection
//! ```
//!
//! Start `cargo run --example streams_echo_server` first, then run
//! `cargo run --example streams_echo_client -- [OPTIONS]`. Options: `--host HOST` (default
//! `127.0.0.1`), `--port PORT` (default `8888`), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without the option, `RINGLOOP_BACKEND` or the best one available),
//! `--message TEXT` (default `Hello World!`).
//!
//! [`EventLoop::open_connection`]: ringloop::EventLoop::open_connection

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use ringloop::{Backend, ConnectOptions, EventLoop};

mod support;
use support::{parse_backend, parse_value, py_repr};

const USAGE: &str = "usage: streams_echo_client [--host HOST] [--port PORT] \
                     [--backend uring|epoll] [--message TEXT]";

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

/// Prints `line` and flushes.
fn print(line: impl Display) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing to stdout: {e}"))
}

/// The Python example's `tcp_echo_client(message)`.
async fn tcp_echo_client(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let (host, port) = (args.host.as_str(), args.port);
    let (reader, writer) = event_loop
        .open_connection(Some(host), Some(port), ConnectOptions::new())
        .await
        .map_err(|e| format!("cannot connect to {host} port {port}: {e}"))?;

    print(format_args!("Send: {}", py_repr(&args.message)))?;
    writer.write(args.message.as_bytes()).map_err(|e| format!("write: {e}"))?;
    writer.drain().await.map_err(|e| format!("drain: {e}"))?;

    let data = reader.read(100).await.map_err(|e| format!("read: {e}"))?;
    print(format_args!("Received: {}", py_repr(&String::from_utf8_lossy(&data))))?;

    print("Close the connection")?;
    writer.close();
    writer.wait_closed().await.map_err(|e| format!("wait_closed: {e}"))
}

fn run(event_loop: &EventLoop, args: Args) -> Result<(), String> {
    event_loop
        .run_until_complete(tcp_echo_client(event_loop.clone(), args))
        .map_err(|e| format!("run_until_complete: {e}"))?
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("streams_echo_client: {err}");
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    support::run_example(
        "streams_echo_client",
        || support::open_loop(backend),
        |event_loop| run(event_loop, args),
    )
}
