//! UDP echo server: the asyncio documentation's "UDP Echo Server" example, ported.
//! [`EventLoop::create_datagram_endpoint`] binds `local_addr`; `EchoServerProtocol` prints each
//! datagram and sends it back to its sender. It prints what the Python example prints, with
//! one `serving on HOST:PORT` line once bound (the bound port, so `--port 0` works):
//!
//! ```text
//! Starting UDP server
//! serving on 127.0.0.1:9999
//! Received 'Hello World!' from ('127.0.0.1', 50502)
//! Send 'Hello World!' to ('127.0.0.1', 50502)
//! ```
//!
//! Run it with `cargo run --example udp_echo_server -- [OPTIONS]` and talk to it with the
//! `udp_echo_client` example. Options: `--host HOST` (default `127.0.0.1`), `--port PORT`
//! (default `9999`; 0 picks a free port), `--backend uring|epoll` (`epoll` needs
//! `--features fallback`; without it, `RINGLOOP_BACKEND` or the best one available),
//! `--max-seconds N` (serve this long; default 3600, as the Python example's hour).
//!
//! [`EventLoop::create_datagram_endpoint`]: ringloop::EventLoop::create_datagram_endpoint

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

use ringloop::{Backend, DatagramOptions, DatagramProtocol, DatagramTransport, EventLoop};
use socket2::SockAddr;

mod support;
use support::{parse_backend, parse_value, py_repr, py_sockaddr};

const USAGE: &str =
    "usage: udp_echo_server [--host HOST] [--port PORT] [--backend uring|epoll] [--max-seconds N]";

/// The command line.
#[derive(Debug)]
struct Args {
    /// Where to bind.
    host: String,
    /// The port; 0 picks a free one.
    port: u16,
    /// `None`: `RINGLOOP_BACKEND` or the best available.
    backend: Option<Backend>,
    /// How long to serve.
    max_seconds: f64,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed =
            Args { host: "127.0.0.1".into(), port: 9999, backend: None, max_seconds: 3600.0 };
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
                    parsed.max_seconds = secs;
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(parsed)
    }
}

/// Prints `line` and flushes.
fn print(line: impl Display) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}

/// Prints each datagram and echoes it to its sender.
struct EchoServerProtocol {
    /// Set by `connection_made`.
    transport: Option<DatagramTransport>,
    /// Stopped when printing fails.
    event_loop: EventLoop,
}

impl DatagramProtocol for EchoServerProtocol {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
    }

    fn datagram_received(&mut self, data: &[u8], addr: Option<SockAddr>) {
        let message = py_repr(&String::from_utf8_lossy(data));
        let from = py_sockaddr(addr.as_ref());
        let printed = print(format_args!("Received {message} from {from}"))
            .and_then(|()| print(format_args!("Send {message} to {from}")));
        if let Err(e) = printed {
            eprintln!("udp_echo_server: writing to stdout: {e}");
            self.event_loop.stop();
        }
        if let Some(transport) = &self.transport {
            // Only an address other than remote_addr is refused; this endpoint has none.
            let _ = transport.sendto(data, addr.as_ref());
        }
    }
}

/// Binds, announces the address, serves for `--max-seconds`, then closes the endpoint.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let stdout_error = |e: io::Error| format!("writing to stdout: {e}");
    print("Starting UDP server").map_err(stdout_error)?;
    let lp = event_loop.clone();
    let factory = move || EchoServerProtocol { transport: None, event_loop: lp };
    let options = DatagramOptions::new().local_addr(args.host.as_str(), args.port);
    let (transport, _protocol) = event_loop
        .create_datagram_endpoint(factory, options)
        .await
        .map_err(|e| format!("cannot serve on {} port {}: {e}", args.host, args.port))?;
    let bound = transport.sockname().and_then(|a| a.as_socket());
    let bound = bound.map_or_else(|| "?".into(), |a| a.to_string());
    print(format_args!("serving on {bound}")).map_err(stdout_error)?;
    // `await asyncio.sleep(3600)`, then `transport.close()` in `finally`.
    let slept = sleep(&event_loop, args.max_seconds).await;
    transport.close();
    slept.map_err(|e| format!("sleep: {e}"))
}

/// `asyncio.sleep(secs)`: a future the loop resolves after `secs`.
async fn sleep(event_loop: &EventLoop, secs: f64) -> ringloop::Result<()> {
    let done = event_loop.create_future::<()>();
    let setter = done.clone();
    // Fails only if already done, which nothing else does.
    event_loop.call_later(secs, move || drop(setter.set_result(())))?;
    done.await
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("udp_echo_server: {err}");
            return ExitCode::FAILURE;
        }
    };
    let backend = args.backend;
    support::run_example(
        "udp_echo_server",
        || support::open_loop(backend),
        |event_loop| {
            event_loop
                .run_until_complete(serve(event_loop.clone(), args))
                .map_err(|e| format!("run_until_complete: {e}"))?
        },
    )
}
