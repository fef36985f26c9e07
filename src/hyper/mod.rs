//! hyper on ringloop (feature `hyper`): hyper's runtime traits implemented on the loop, and
//! an HTTP/1 connection served in one call.
//!
//! - I/O: [`HyperIo`] makes a stream connection's [`StreamReader`] and [`StreamWriter`]
//!   hyper's `rt::Read + rt::Write`;
//! - timer: [`LoopTimer`] gives hyper sleeps on the loop's own timers, a thread's sleeps
//!   sharing one loop timer (hyper's `header_read_timeout` arms one per request);
//! - executor: [`LoopExecutor`] spawns hyper's background futures as tasks of the running
//!   loop; they need not be `Send` (what HTTP/2, with hyper's `http2` feature, asks for);
//! - [`serve_http1`] serves one connection with a hyper service: with
//!   [`EventLoop::start_server`] a whole HTTP/1.1 server is one line, and
//!   [`serve_http1_until`] also closes the connection gracefully on a [`Shutdown`].
//!
//! Everything runs on the loop's thread, so services and bodies need not be `Send` either.
//!
//! ```
//! use std::convert::Infallible;
//! use std::io::{Read, Write};
//!
//! use http_body_util::Full;
//! use hyper::body::{Bytes, Incoming};
//! use hyper::service::service_fn;
//! use hyper::{Request, Response};
//! use ringloop::{ServerOptions, StreamReader, StreamWriter};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from_static(b"Hello World!"))))
//! }
//!
//! let reply = ringloop::run(async {
//!     let lp = ringloop::get_running_loop()?;
//!     let http = |reader: StreamReader, writer: StreamWriter| {
//!         ringloop::hyper::serve_http1(reader, writer, service_fn(hello))
//!     };
//!     let server = lp.start_server(http, "127.0.0.1:0", ServerOptions::new()).await?;
//!     let port = server.sockets()[0].as_socket().unwrap().port();
//!     let get = move || -> std::io::Result<String> {
//!         let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
//!         stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
//!         let mut reply = String::new();
//!         stream.read_to_string(&mut reply)?;
//!         Ok(reply)
//!     };
//!     let reply = lp.run_in_executor(None, get)?.await?;
//!     server.close();
//!     Ok::<_, ringloop::Error>(reply)
//! })??;
//! let reply = reply.unwrap();
//! assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("Hello World!"));
//! # Ok::<(), ringloop::Error>(())
//! ```
//!
//! [`EventLoop::start_server`]: crate::EventLoop::start_server

mod io;
mod timer;

use std::error::Error as StdError;
use std::future::Future;
use std::pin::{pin, Pin};

use ::hyper::body::{Body, Incoming};
use ::hyper::server::conn::http1;
use ::hyper::service::HttpService;

pub use io::HyperIo;
pub use timer::{LoopSleep, LoopTimer};

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::streams::{StreamReader, StreamWriter};

/// hyper's executor (`hyper::rt::Executor`) on the loop running on the calling thread: each
/// future becomes a task ([`spawn`](crate::spawn)), which need not be `Send`. Where no loop
/// runs, the future is dropped and an error logged.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopExecutor;

impl<F> ::hyper::rt::Executor<F> for LoopExecutor
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        // Dropping the task's handle leaves the task running.
        if let Err(err) = crate::spawn(future) {
            log::error!(target: "ringloop", "hyper's LoopExecutor cannot run a future: {err}");
        }
    }
}

/// hyper's HTTP/1 server builder with [`LoopTimer`] as its timer (so timeouts such as
/// `header_read_timeout` work); otherwise hyper's defaults (keep-alive on).
pub fn http1_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder.timer(LoopTimer);
    builder
}

/// Serves HTTP/1.x on one connection with `service` until the connection ends: hyper's
/// `http1::Builder::serve_connection` with [`http1_builder`]'s settings over
/// [`HyperIo`]. Keep-alive connections serve request after request.
///
/// Fits [`EventLoop::start_server`](crate::EventLoop::start_server)'s callback as is:
/// `lp.start_server(|r, w| serve_http1(r, w, service_fn(handle)), "127.0.0.1:8080", options)`;
/// an error (a malformed request, a connection reset mid-request) then goes to the loop's
/// exception handler.
///
/// # Errors
/// hyper's error, as [`Error::Custom`].
pub async fn serve_http1<S>(reader: StreamReader, writer: StreamWriter, service: S) -> Result<()>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let io = HyperIo::new(reader, writer);
    http1_builder().serve_connection(io, service).await.map_err(Error::custom)
}

/// [`serve_http1`] that also ends gracefully once `shutdown` is requested: an idle
/// keep-alive connection closes at once, a request in progress is answered first (with
/// `Connection: close`), as hyper's `graceful_shutdown` does. With
/// [`Server::serve_until`](crate::Server::serve_until) on the same [`Shutdown`], the server
/// then exits as soon as the last response is out rather than at the end of its grace period.
///
/// # Errors
/// hyper's error, as [`Error::Custom`].
pub async fn serve_http1_until<S>(
    reader: StreamReader,
    writer: StreamWriter,
    service: S,
    shutdown: Shutdown,
) -> Result<()>
where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let builder = http1_builder();
    let mut connection = pin!(builder.serve_connection(HyperIo::new(reader, writer), service));
    let mut requested = Some(shutdown.requested());
    std::future::poll_fn(|cx| {
        if let Some(waiting) = requested.as_mut() {
            if Pin::new(waiting).poll(cx).is_ready() {
                requested = None;
                connection.as_mut().graceful_shutdown();
            }
        }
        connection.as_mut().poll(cx).map_err(Error::custom)
    })
    .await
}
