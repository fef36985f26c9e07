//! A TLS echo server on the streams API: [`EventLoop::start_server`] with `ssl` runs
//! `echo_lines(reader, writer)` for each connection once its TLS handshake is done; it writes
//! back every line it receives until the client closes. It prints one
//! `serving on HOST:PORT` line per listening socket (the bound port, so `--port 0` works),
//! then nothing more.
//!
//! ```text
//! $ cargo run --example tls_echo_server -- --cert chain.pem --key key.pem --port 8443
//! serving on 127.0.0.1:8443
//! ```
//!
//! Talk to it with the `tls_echo_client` example, or with OpenSSL:
//! `openssl s_client -connect 127.0.0.1:8443 -CAfile ca.pem -servername localhost`.
//! Options:
//!
//! - `--cert PEM`: the server's certificate chain (its own first), required;
//! - `--key PEM`: its private key (PKCS#8, PKCS#1 or SEC1), required;
//! - `--host HOST` (default `127.0.0.1`), `--port PORT` (default `8443`; 0 picks a free one);
//! - `--backend uring|epoll`: the backend (`epoll` needs `--features fallback`);
//! - `--max-seconds N`: stop serving after `N` seconds (default: serve forever).
//!
//! [`EventLoop::start_server`]: ringloop::EventLoop::start_server

use std::process::ExitCode;

use ringloop::{Error, EventLoop, ServerOptions, StreamReader, StreamWriter};

mod support;
use support::serve::serve_streams;
use support::{Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--cert`, `--key`, `--max-seconds`.
const SPEC: Spec =
    Spec { name: "tls_echo_server", port: 8443, flags: &[Flag::Cert, Flag::Key, Flag::MaxSeconds] };

/// One connection: every line back, until the client closes.
async fn echo_lines(reader: StreamReader, writer: StreamWriter) -> Result<(), Error> {
    loop {
        let line = reader.readline().await?;
        if line.is_empty() {
            break; // the client closed (close_notify)
        }
        writer.write(&line)?;
        writer.drain().await?;
    }
    writer.close();
    writer.wait_closed().await
}

/// Loads the certificate, starts the server, announces it and serves.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let (cert, key) = (args.cert.as_deref().unwrap_or(""), args.key.as_deref().unwrap_or(""));
    let config = support::tls::server_config(cert, key)?;
    serve_streams(event_loop, &args, echo_lines, ServerOptions::new().ssl(config)).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
