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

use std::process::ExitCode;

use ringloop::{ConnectOptions, EventLoop};

mod support;
use support::{print, py_repr, stdout_error, Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--message`.
const SPEC: Spec = Spec { name: "streams_echo_client", port: 8888, flags: &[Flag::Message] };

/// The Python example's `tcp_echo_client(message)`.
async fn tcp_echo_client(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let address = args.address();
    let (reader, writer) = event_loop
        .open_connection(&address, ConnectOptions::new())
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;

    print(format_args!("Send: {}", py_repr(&args.message))).map_err(stdout_error)?;
    writer.write(args.message.as_bytes()).map_err(|e| format!("write: {e}"))?;
    writer.drain().await.map_err(|e| format!("drain: {e}"))?;

    let data = reader.read(100).await.map_err(|e| format!("read: {e}"))?;
    let received = py_repr(&String::from_utf8_lossy(&data));
    print(format_args!("Received: {received}")).map_err(stdout_error)?;

    print("Close the connection").map_err(stdout_error)?;
    writer.close();
    writer.wait_closed().await.map_err(|e| format!("wait_closed: {e}"))
}

fn main() -> ExitCode {
    support::run_async(&SPEC, tcp_echo_client)
}
