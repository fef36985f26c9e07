//! The HTTP hello-world on hyper 1 (HTTP/1.1, keep-alive): on ringloop (`ringloop::hyper`,
//! `start_server` + `serve_http1`) and on tokio's current_thread runtime (hyper-util's
//! `TokioIo` and `TokioTimer`), with the same service and the same builder settings (a
//! timer for hyper's header-read timeout, nothing else changed).

use std::convert::Infallible;
use std::net::TcpListener;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use ringloop::{Address, Backend, ServerOptions, StreamReader, StreamWriter};

use super::tokio_server::Timers;
use crate::http::BODY;

/// The service: `200 OK` and [`BODY`] to every request (hyper adds `content-length` and
/// `date`).
async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(BODY))))
}

/// hyper on ringloop's `backend` until the process exits.
pub fn serve_ringloop(
    listener: TcpListener,
    backend: Backend,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let connection = |reader: StreamReader, writer: StreamWriter| {
        ringloop::hyper::serve_http1(reader, writer, service_fn(hello))
    };
    super::ringloop_protocol::serve_with(backend, announce, move |event_loop| async move {
        let options = ServerOptions::new().sock(listener).backlog(1024);
        event_loop.start_server(connection, Address::NONE, options).await
    })
}

/// hyper on tokio's current_thread runtime until the process exits.
pub fn serve_tokio(
    listener: TcpListener,
    announce: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    super::tokio_server::serve_each(listener, announce, Timers::On, |stream| async move {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new());
        let _ = builder.serve_connection(TokioIo::new(stream), service_fn(hello)).await;
    })
}
