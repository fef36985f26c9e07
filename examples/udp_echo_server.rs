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
//! On Ctrl-C (SIGINT) or SIGTERM it closes the endpoint and exits with status 0 (a
//! [`Shutdown`](ringloop::Shutdown) that the signals request).
//!
//! [`EventLoop::create_datagram_endpoint`]: ringloop::EventLoop::create_datagram_endpoint

use std::process::ExitCode;

use ringloop::{BaseProtocol, DatagramOptions, DatagramProtocol, DatagramTransport, EventLoop};
use socket2::SockAddr;

mod support;
use support::serve::shutdown_on_signals;
use support::{print, py_repr, py_sockaddr, stdout_error, Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--max-seconds`.
const SPEC: Spec = Spec { name: "udp_echo_server", port: 9999, flags: &[Flag::MaxSeconds] };

/// Prints each datagram and echoes it to its sender.
struct EchoServerProtocol {
    /// Set by `connection_made`.
    transport: Option<DatagramTransport>,
    /// Stopped when printing fails.
    event_loop: EventLoop,
}

impl BaseProtocol<DatagramTransport> for EchoServerProtocol {
    fn connection_made(&mut self, transport: DatagramTransport) {
        self.transport = Some(transport);
    }
}

impl DatagramProtocol for EchoServerProtocol {
    fn datagram_received(&mut self, data: &[u8], addr: Option<SockAddr>) {
        let message = py_repr(&String::from_utf8_lossy(data));
        let from = py_sockaddr(addr.as_ref());
        let printed = print(format_args!("Received {message} from {from}"))
            .and_then(|()| print(format_args!("Send {message} to {from}")));
        if let Err(e) = printed {
            eprintln!("{}: {}", SPEC.name, stdout_error(e));
            self.event_loop.stop();
        }
        if let Some(transport) = &self.transport {
            // Only an address other than remote_addr is refused; this endpoint has none.
            let _ = transport.sendto(data, addr.as_ref());
        }
    }
}

/// Binds, announces the address, serves for `--max-seconds` (default an hour, as the Python
/// example's) or until a signal, then closes the endpoint.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    print("Starting UDP server").map_err(stdout_error)?;
    let shutdown = shutdown_on_signals(&event_loop)?;
    let lp = event_loop.clone();
    let factory = move || EchoServerProtocol { transport: None, event_loop: lp };
    let options = DatagramOptions::new().local_addr(args.address());
    let (transport, _protocol) = event_loop
        .create_datagram_endpoint(factory, options)
        .await
        .map_err(|e| format!("cannot serve on {}: {e}", args.address()))?;
    let bound = transport.sockname().and_then(|a| a.as_socket());
    let bound = bound.map_or_else(|| "?".into(), |a| a.to_string());
    print(format_args!("serving on {bound}")).map_err(stdout_error)?;
    // `await asyncio.sleep(3600)` (cut short by a signal), then `transport.close()` in
    // `finally`.
    let slept = ringloop::timeout(args.max_seconds.unwrap_or(3600.0), shutdown.requested()).await;
    transport.close();
    match slept {
        Ok(()) | Err(ringloop::Error::Timeout(_)) => Ok(()),
        Err(e) => Err(format!("sleep: {e}")),
    }
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
