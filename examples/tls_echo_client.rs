//! A TLS echo client on the streams API: [`EventLoop::open_connection`] with `ssl` connects
//! and does the handshake, then it sends `--message` as a line, prints what comes back, and
//! closes (sending `close_notify`). Against the `tls_echo_server` example:
//!
//! ```text
//! $ cargo run --example tls_echo_client -- --port 8443 --cafile ca.pem --server-hostname localhost
//! Send: 'Hello World!'
//! Received: 'Hello World!'
//! Close the connection (TLSv1.3, TLS13_AES_256_GCM_SHA384)
//! ```
//!
//! Options: `--host HOST` (default `127.0.0.1`), `--port PORT` (default `8443`), `--backend
//! uring|epoll`, `--message TEXT` (default `Hello World!`), `--cafile PEM` (the certificates
//! to trust; default: Mozilla's roots, asyncio's `ssl=True`), `--server-hostname NAME` (the
//! name the server's certificate must have; default: `--host`).
//!
//! [`EventLoop::open_connection`]: ringloop::EventLoop::open_connection

use std::process::ExitCode;

use ringloop::{ConnectOptions, EventLoop, ExtraInfo};

mod support;
use support::{print, py_repr, stdout_error, Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--message`, `--cafile`,
/// `--server-hostname`.
const SPEC: Spec = Spec {
    name: "tls_echo_client",
    port: 8443,
    flags: &[Flag::Message, Flag::CaFile, Flag::ServerHostname],
};

/// Connects, sends one line, prints the echo, closes.
async fn talk(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let address = args.address();
    let mut options =
        ConnectOptions::new().ssl(support::tls::client_config(args.cafile.as_deref())?);
    options.server_hostname = args.server_hostname;
    let (reader, writer) = event_loop
        .open_connection(&address, options)
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let say = |line: std::fmt::Arguments<'_>| print(line).map_err(stdout_error);
    say(format_args!("Send: {}", py_repr(&args.message)))?;
    writer.write(format!("{}\n", args.message).as_bytes()).map_err(|e| e.to_string())?;
    writer.drain().await.map_err(|e| e.to_string())?;
    let line = reader.readline().await.map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&line);
    say(format_args!("Received: {}", py_repr(reply.trim_end_matches('\n'))))?;
    let session = match writer.get_extra_info("cipher") {
        Some(ExtraInfo::Cipher { name, version, .. }) => format!(" ({version}, {name})"),
        _ => String::new(),
    };
    say(format_args!("Close the connection{session}"))?;
    writer.close();
    writer.wait_closed().await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    support::run_async(&SPEC, talk)
}
