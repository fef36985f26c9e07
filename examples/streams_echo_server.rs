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
//! ringloop has no signal handling yet: Ctrl-C (SIGINT) or SIGTERM kills the process.
//!
//! [`EventLoop::start_server`]: ringloop::EventLoop::start_server

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use ringloop::{Backend, Error, EventLoop, ExtraInfo, ServerOptions, StreamReader, StreamWriter};

mod support;
use support::{parse_backend, parse_value, py_address, py_repr};

const USAGE: &str = "usage: streams_echo_server [--host HOST] [--port PORT] \
                     [--backend uring|epoll] [--max-seconds N]";

/// The command line.
#[derive(Debug)]
struct Args {
    /// Where to listen.
    host: String,
    /// The port; 0 picks a free one.
    port: u16,
    /// `None`: `RINGLOOP_BACKEND` or the best available.
    backend: Option<Backend>,
    /// Exit after this many seconds.
    max_seconds: Option<f64>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed =
            Args { host: "127.0.0.1".into(), port: 8888, backend: None, max_seconds: None };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--host" => parsed.host = value()?,
                "--port" => parsed.port = parse_value(&arg, &value()?)?,
                "--backend" => parsed.backend = Some(parse_backend(&value()?)?),
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

/// Prints `line` and flushes.
fn print(line: impl Display) -> Result<(), Error> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::io("writing to stdout", e))
}

/// One connection: the Python example's `handle_echo`. An error it returns goes to the loop's
/// exception handler and the connection is closed.
async fn handle_echo(reader: StreamReader, writer: StreamWriter) -> Result<(), Error> {
    let data = reader.read(100).await?;
    let message = String::from_utf8_lossy(&data);
    let addr = match writer.get_extra_info("peername") {
        Some(ExtraInfo::Address(addr)) => addr.as_socket(),
        _ => None,
    };
    print(format_args!("Received {} from {}", py_repr(&message), py_address(addr)))?;

    print(format_args!("Send: {}", py_repr(&message)))?;
    writer.write(&data)?;
    writer.drain().await?;

    print("Close the connection")?;
    writer.close();
    writer.wait_closed().await
}

/// Starts the server, announces its addresses and serves until `--max-seconds` pass.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let (host, port) = (args.host.as_str(), args.port);
    let server = event_loop
        .start_server(handle_echo, host, Some(port), ServerOptions::default())
        .await
        .map_err(|e| format!("cannot serve on {host} port {port}: {e}"))?;

    for addr in server.sockets() {
        let addr = addr.as_socket().map_or_else(|| format!("{addr:?}"), |a| a.to_string());
        print(format_args!("serving on {addr}")).map_err(|e| e.to_string())?;
    }

    if let Some(secs) = args.max_seconds {
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
    event_loop
        .run_until_complete(serve(event_loop.clone(), args))
        .map_err(|e| format!("run_until_complete: {e}"))?
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("streams_echo_server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    support::run_example(
        "streams_echo_server",
        || support::open_loop(backend),
        |event_loop| run(event_loop, args),
    )
}
