//! ringloop: the event loop of Python's asyncio for Linux, io_uring first.
//!
//! One [`EventLoop`] per thread runs callbacks, timers and tasks (any Rust
//! [`Future`](std::future::Future)) and drives I/O through io_uring, batching submissions and
//! waits into one `io_uring_enter` per iteration. With the `fallback` feature the same loop
//! runs on epoll when the kernel has no io_uring.
//!
//! ```
//! let output = ringloop::run(async {
//!     let event_loop = ringloop::get_running_loop().unwrap();
//!     let fut = event_loop.create_future::<&str>();
//!     let setter = fut.clone();
//!     event_loop.call_later(0.01, move || setter.set_result("Hello World").unwrap()).unwrap();
//!     fut.await.unwrap()
//! })
//! .unwrap();
//! assert_eq!(output, "Hello World");
//! ```
//!
//! # asyncio → ringloop
//!
//! | asyncio | ringloop |
//! |---|---|
//! | `asyncio.run(coro)` | [`run`] (the future may borrow locals) |
//! | `new_event_loop`, `get_running_loop`, `get_event_loop`, `set_event_loop` | free functions of the same names |
//! | `loop.run_forever`, `run_until_complete`, `stop`, `close`, `is_running`, `is_closed` | [`EventLoop`] methods of the same names |
//! | `loop.call_soon`, `call_later`, `call_at`, `time` | same names; delays are `f64` seconds or `Duration` |
//! | `loop.call_soon_threadsafe` | [`LoopHandle::call_soon_threadsafe`] from other threads |
//! | `Handle`, `TimerHandle` | [`Handle`], [`TimerHandle`] |
//! | `loop.create_future`, `Future` | [`EventLoop::create_future`], [`Future`] |
//! | `loop.create_task`, `Task`, task factory | [`EventLoop::create_task`], [`Task`], [`TaskFactory`] |
//! | `loop.add_reader`/`add_writer`/`remove_*` | same names, on a `RawFd` |
//! | `loop.add_signal_handler`, `remove_signal_handler`, signal numbers | [`EventLoop::add_signal_handler`], [`EventLoop::remove_signal_handler`], [`Signal`] |
//! | `loop.run_in_executor`, `ThreadPoolExecutor` | [`EventLoop::run_in_executor`], [`Executor`] |
//! | `loop.getaddrinfo`, `loop.getnameinfo` | [`EventLoop::getaddrinfo`], [`EventLoop::getnameinfo`] |
//! | `Protocol`, `BufferedProtocol`, `Transport`, `connect_accepted_socket` | [`Protocol`], [`BufferedProtocol`], [`Transport`], [`EventLoop::connect_accepted_socket`] |
//! | `host, port` arguments | one [`Address`]: `"127.0.0.1:8080"`, `("localhost", 80)`, a `SocketAddr`, a bare port |
//! | `loop.create_connection` (happy eyeballs included) | [`EventLoop::create_connection`], [`ConnectOptions`] |
//! | `loop.create_datagram_endpoint`, `DatagramProtocol`, `DatagramTransport` | [`EventLoop::create_datagram_endpoint`], [`DatagramOptions`], [`DatagramProtocol`], [`DatagramTransport`] |
//! | `loop.create_server`, `Server` | [`EventLoop::create_server`], [`Server`], [`ServerOptions`] |
//! | `loop.create_unix_connection`, `loop.create_unix_server` | [`EventLoop::create_unix_connection`], [`EventLoop::create_unix_server`], [`UnixPath`], [`UnixConnectOptions`], [`UnixServerOptions`] |
//! | `open_unix_connection`, `start_unix_server` | [`EventLoop::open_unix_connection`], [`EventLoop::start_unix_server`] |
//! | `loop.connect_read_pipe`, `connect_write_pipe`, `ReadTransport`, `WriteTransport` | [`EventLoop::connect_read_pipe`], [`EventLoop::connect_write_pipe`], [`ReadTransport`], [`WriteTransport`] |
//! | `loop.sendfile`, `loop.sock_sendfile`, `SendfileNotAvailableError` | [`EventLoop::sendfile`], [`EventLoop::sock_sendfile`], [`Error::SendfileNotAvailable`] |
//! | `open_connection`, `start_server`, `StreamReader`, `StreamWriter` | [`EventLoop::open_connection`], [`EventLoop::start_server`], [`StreamReader`], [`StreamWriter`] (module [`streams`]) |
//! | `loop.subprocess_exec`, `loop.subprocess_shell`, `SubprocessProtocol`, `SubprocessTransport` | [`EventLoop::subprocess_exec`], [`EventLoop::subprocess_shell`], [`SubprocessProtocol`], [`SubprocessTransport`], [`PipeTransport`] (module [`subprocess`]) |
//! | `asyncio.create_subprocess_exec`, `create_subprocess_shell`, `asyncio.subprocess.Process`, `PIPE`/`DEVNULL`/`STDOUT` | [`create_subprocess_exec`], [`create_subprocess_shell`], [`Process`], [`ProcessOptions`], [`subprocess::Stdio`] |
//! | exception handler and `context` | [`EventLoop::set_exception_handler`], [`ExceptionContext`] |
//! | exceptions | [`Error`] variants |
//! | `SelectorEventLoop` / `ProactorEventLoop` | [`Backend::Epoll`] / [`Backend::Uring`] |
//! | `asyncio.sleep` | [`sleep`]: the loop's own timer, cancelled on drop |
//! | `asyncio.wait_for`, `asyncio.timeout` | [`wait_for`] (limit [`TimeLimit`]: seconds, `Duration` or `None`), [`timeout`] (tokio's argument order) |
//! | `asyncio.gather`, `return_exceptions=True` | [`gather`] (fail fast), [`gather_all`] (every outcome) |
//! | `asyncio.wait`, `FIRST_COMPLETED`/`FIRST_EXCEPTION`/`ALL_COMPLETED` | [`wait`], [`ReturnWhen`], [`Fallible`] |
//! | `asyncio.shield` | [`shield`], [`Shield`] |
//! | `asyncio.create_task` | [`create_task`], alias [`spawn`] |
//! | `asyncio.run_coroutine_threadsafe`, `concurrent.futures.Future` | [`LoopHandle::run_coroutine_threadsafe`] (and `_with`), [`ConcurrentFuture`] |
//! | no equivalent: one loop per thread on several threads, one port (`SO_REUSEPORT`) | [`spawn_loops`], [`LoopMain`], [`LoopSpawner`], [`LoopThreads`], [`reuse_port_listeners`] |
//! | no equivalent: graceful shutdown on SIGINT/SIGTERM (`close`, `wait_closed`, `abort_clients` after a grace period) | [`Server::serve_until_signal`], [`Server::serve_until`], [`Shutdown`] |
//! | no equivalent: hyper's runtime (feature `hyper`) | module `hyper`: `serve_http1`, `HyperIo`, `LoopExecutor`, `LoopTimer` |
//! | no equivalent: tokio's I/O traits (feature `tokio-io`), tokio-util codecs | tokio's `AsyncRead`/`AsyncWrite` on [`StreamReader`], [`StreamWriter`] and [`DuplexStream`] (a reader and writer in one value, for `Framed`) |
//!
//! Not provided: `asyncio.TaskGroup`, `as_completed`, `timeout_at`, `to_thread` (use
//! [`EventLoop::run_in_executor`]), `current_task`/`all_tasks`, and asyncio's queues and
//! synchronization primitives.
//!
//! Not applicable in Rust, by design: `contextvars.Context` arguments, `shutdown_asyncgens`
//! (Rust has no async generators), and `BaseException` escaping callbacks (a panic in a
//! callback or task is caught and reported through the exception handler). See
//! `docs/asyncio-mapping.md`.
//!
//! # Panics in callbacks
//!
//! A panic in a callback, a task or a protocol method is caught (`catch_unwind`) and reported
//! to the loop's exception handler (by default, it logs it, or prints it to stderr when no
//! `log` backend is installed); the loop keeps running, and a protocol whose method panicked
//! has its transport closed with the panic as the error. This needs unwinding: in a build
//! with `panic = "abort"` (a `[profile]` setting) nothing can be caught, and the first panic
//! anywhere ends the process.
//!
//! # Memory
//!
//! Each connection costs about 1.2 KiB of user space when idle (`docs/benchmarks.md`). The
//! io_uring backend receives into one ring of 128 provided buffers of 64 KiB per loop, shared by
//! every connection: its pages are touched only as data is written into them, so it costs up
//! to 8 MiB per loop once fast senders have filled every buffer, and far less while messages
//! are small. The epoll backend keeps up to as many idle 64 KiB read buffers, also touched
//! only as used. A loop with a datagram endpoint adds a second ring, of 64 datagram-sized
//! buffers (about 4 MiB once filled), on io_uring.
#![deny(unsafe_op_in_unsafe_fn, missing_docs, missing_debug_implementations)]

#[macro_use]
mod setters;
mod dispatch;
mod done_callbacks;
pub(crate) mod driver;
mod error;
mod event_loop;
mod executor;
mod flow_control;
mod future;
#[cfg(test)]
mod layering_tests;
#[macro_use]
pub mod tls;
#[cfg(feature = "hyper")]
pub mod hyper;
mod loop_threads;
pub mod net;
mod pipes;
mod protocol;
mod sendfile;
pub mod server;
mod shutdown;
mod signal;
pub mod streams;
pub mod subprocess;
mod sys;
mod task;
#[cfg(test)]
mod test_support;
mod toolbox;
mod transport;

pub use driver::Backend;
pub use error::{ArgumentKind, DnsErrorKind, Error, Result, RuntimeKind, StateKind, TlsErrorKind};
pub use event_loop::{
    get_event_loop, get_running_loop, new_event_loop, set_event_loop, Delay, EventLoop,
    ExceptionContext, ExceptionHandler, Handle, LoopHandle, ThreadsafeHandle, TimerHandle,
};
pub use executor::Executor;
pub use future::Future;
pub use loop_threads::{reuse_port_listeners, spawn_loops, LoopMain, LoopSpawner, LoopThreads};
pub use net::accepted::AcceptedSocketOptions;
pub use net::address::Address;
pub use net::connect::ConnectOptions;
pub use net::datagram::{DatagramOptions, EndpointAddr};
pub use net::unix::{UnixConnectOptions, UnixPath};
/// A Unix signal (nix's type), as `add_signal_handler`, `send_signal` and [`Shutdown`] take it.
pub use nix::sys::signal::Signal;
pub use protocol::{
    AnyProtocol, BaseProtocol, BufferedKind, BufferedProtocol, DatagramProtocol, Protocol,
    StreamingKind,
};
pub use server::UnixServerOptions;
pub use server::{Hosts, Server, ServerOptions};
pub use shutdown::{Requested, Shutdown};
pub use streams::{
    open_connection, open_unix_connection, start_server, start_unix_server, ClientCallbackOutput,
    ClientConnected, DuplexStream, StreamReader, StreamWriter, DEFAULT_LIMIT,
};
pub use subprocess::{
    create_subprocess_exec, create_subprocess_shell, PipeTransport, Process, ProcessOptions,
    SubprocessProtocol, SubprocessTransport,
};
pub use task::{LocalBoxFuture, Task, TaskFactory};
pub use tls::{StartTlsOptions, TlsConfig};
pub use toolbox::{
    create_task, gather, gather_all, shield, sleep, spawn, timeout, wait, wait_for,
    ConcurrentFuture, Fallible, ReturnWhen, Shield, Sleep, TimeLimit,
};
pub use transport::DatagramTransport;
pub use transport::{ExtraInfo, Transport};
pub use transport::{ReadTransport, WriteTransport};

/// Runs `future` on a new loop and closes it (asyncio's `asyncio.run`): the loop becomes this
/// thread's running loop, tasks still pending when `future` finishes are cancelled and given a
/// chance to unwind, and the default executor is shut down before the loop closes. `future`
/// is polled in place, so it may borrow locals (see [`EventLoop::run_until_complete`]).
pub fn run<F: std::future::Future>(future: F) -> Result<F::Output> {
    loop_threads::run_and_close(EventLoop::new()?, future)
}
