//! An HTTP/1.1 hello-world server: hyper on ringloop (feature `hyper`). Every request gets
//! `200 OK` and `Hello World!`; connections stay open for more requests (keep-alive). It
//! prints one line, the address it serves on (the bound port, so `--port 0` works):
//!
//! ```text
//! serving on 127.0.0.1:8080
//! ```
//!
//! Serving a connection is one call, [`ringloop::hyper::serve_http1_until`] (or
//! `serve_http1`), in [`EventLoop::start_server`]'s callback: hyper's I/O, timer and executor
//! traits are implemented on the loop.
//!
//! Run it with `cargo run --features hyper --example http_server -- [OPTIONS]` and try
//! `curl http://127.0.0.1:8080/` or `wrk http://127.0.0.1:8080/`. Options: `--host HOST`
//! (default `127.0.0.1`), `--port PORT` (default `8080`; 0 picks a free port), `--backend
//! uring|epoll` (`epoll` needs `--features fallback`; without it, `RINGLOOP_BACKEND` or the
//! best one available), `--max-seconds N` (stop after `N` seconds; default: serve forever).
//!
//! On Ctrl-C (SIGINT) or SIGTERM it shuts down gracefully: it stops listening, closes idle
//! keep-alive connections, answers the requests in progress (for up to 5 seconds) and exits
//! with status 0; a second signal aborts the connections at once.
//!
//! [`EventLoop::start_server`]: ringloop::EventLoop::start_server

use std::convert::Infallible;
use std::process::ExitCode;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use ringloop::hyper::serve_http1_until;
use ringloop::{EventLoop, ServerOptions, StreamReader, StreamWriter};

mod support;
use support::serve::{announce_and_serve_until, shutdown_on_signals};
use support::{Args, Flag, Spec};

/// The command line: `--host`, `--port`, `--backend`, `--max-seconds`.
const SPEC: Spec = Spec { name: "http_server", port: 8080, flags: &[Flag::MaxSeconds] };

/// The service: the same answer to every request.
async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"Hello World!"))))
}

/// Starts the server, announces its address and serves until a signal or `--max-seconds`.
async fn serve(event_loop: EventLoop, args: Args) -> Result<(), String> {
    let shutdown = shutdown_on_signals(&event_loop)?;
    let closing = shutdown.clone();
    let http = move |reader: StreamReader, writer: StreamWriter| {
        serve_http1_until(reader, writer, service_fn(hello), closing.clone())
    };
    let address = args.address();
    let server = event_loop
        .start_server(http, &address, ServerOptions::new())
        .await
        .map_err(|e| format!("cannot serve on {address}: {e}"))?;
    announce_and_serve_until(&event_loop, server, args.max_seconds, &shutdown).await
}

fn main() -> ExitCode {
    support::run_async(&SPEC, serve)
}
