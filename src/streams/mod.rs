//! Streams: asyncio's high-level `StreamReader`/`StreamWriter` API over the stream transport
//! (`open_connection`, `start_server`; the Unix socket forms are in `unix.rs`).
//!
//! ```
//! use ringloop::{ConnectOptions, ServerOptions};
//!
//! let reply = ringloop::run(async {
//!     let lp = ringloop::get_running_loop()?;
//!     // An echo server: one task per client, running the callback's future. Written inline,
//!     // the closure needs no types: its arguments are a `StreamReader` and a `StreamWriter`,
//!     // its future's output `()` or `Result<(), ringloop::Error>`.
//!     let server = lp
//!         .start_server(
//!             |reader, writer| async move {
//!                 loop {
//!                     let line = reader.readline().await?;
//!                     if line.is_empty() {
//!                         break; // EOF
//!                     }
//!                     writer.write(&line)?;
//!                     writer.drain().await?;
//!                 }
//!                 writer.close();
//!                 Ok(())
//!             },
//!             "127.0.0.1:0",
//!             ServerOptions::new(),
//!         )
//!         .await?;
//!     let address = server.sockets()[0].as_socket().unwrap();
//!
//!     let (reader, writer) = lp.open_connection(address, ConnectOptions::new()).await?;
//!     writer.write(b"hello\n")?;
//!     writer.drain().await?;
//!     let reply = reader.readline().await?;
//!     writer.close();
//!     writer.wait_closed().await?;
//!     server.close();
//!     server.wait_closed().await;
//!     Ok::<_, ringloop::Error>(reply)
//! })??;
//! assert_eq!(reply, b"hello\n");
//! # Ok::<(), ringloop::Error>(())
//! ```
//!
//! # Implementation
//! One `StreamReaderProtocol` per connection feeds a shared `StreamState` that the reader and
//! the writer read; neither ever borrows the protocol's `RefCell`, so the transport always
//! delivers its callbacks at once. Reads wait on a generation counter bumped by every
//! `feed_data`/`feed_eof`/`set_exception`, so a read future dropped while waiting loses no
//! bytes: the buffer is only taken from once the read can complete.
//!
//! Reading backpressure is asyncio's: `pause_reading` when the buffer grows past
//! `2 * limit`, `resume_reading` when a read brings it back to `limit` or less (or when a read
//! has to wait for more data to find what it looks for).

mod duplex;
mod io;
mod read_source;
mod reader;
mod unix;
mod writer;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

pub use duplex::DuplexStream;
pub(crate) use read_source::ReadSource;
pub use reader::StreamReader;
pub use unix::{open_unix_connection, start_unix_server};
pub use writer::{StreamWriter, WriterTransport};

use crate::error::{panic_message, ArgumentKind, Error, Result};
use crate::event_loop::{EventLoop, ExceptionContext, Inner};
use crate::net::address::Address;
use crate::net::connect::ConnectOptions;
use crate::protocol::{BaseProtocol, Protocol};
use crate::server::{Server, ServerOptions};
use crate::transport::Transport;

/// The reader's default buffer limit (asyncio's `_DEFAULT_LIMIT`): 64 KiB.
pub const DEFAULT_LIMIT: usize = 64 * 1024;

/// A set of wakers, woken all at once.
#[derive(Default)]
pub(crate) struct Wakers(RefCell<Vec<Waker>>);

impl Wakers {
    /// Adds `waker` unless it is there already.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut wakers = self.0.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Wakes every waker, and forgets them. Keeps the list's allocation for the next waiters
    /// (a reader waits once per chunk).
    pub(crate) fn wake(&self) {
        let mut wakers = self.0.take();
        for waker in wakers.drain(..) {
            waker.wake();
        }
        let mut slot = self.0.borrow_mut();
        if slot.is_empty() {
            *slot = wakers;
        }
    }
}

/// The connection as the protocol last heard of it.
#[derive(Debug)]
enum Link {
    /// `connection_lost` not delivered yet.
    Up,
    /// `connection_lost` delivered, with its error (`None`: a clean close).
    Lost(Option<Error>),
}

/// The state of one stream connection, shared by its protocol, reader and writer.
pub(crate) struct StreamState {
    /// The reader's buffer limit.
    limit: usize,
    /// Bytes received and not yet read.
    buffer: RefCell<BytesMut>,
    /// `feed_eof` was called: no more bytes will come.
    eof: Cell<bool>,
    /// The error reads (and `drain`) fail with (`set_exception`).
    exception: RefCell<Option<Error>>,
    /// Bumped by every `feed_data`/`feed_eof`/`set_exception`: what read waits on.
    generation: Cell<u64>,
    /// Tasks waiting for data.
    read_wakers: Wakers,
    /// The transport, for reading backpressure (dropped at `connection_lost`, which breaks
    /// the transport → protocol → state → transport cycle): a connection's, or a child's
    /// stdout or stderr pipe.
    transport: RefCell<Option<ReadSource>>,
    /// This side paused the transport's reading.
    reading_paused: Cell<bool>,
    /// The transport called `pause_writing` (and not yet `resume_writing`).
    writing_paused: Cell<bool>,
    /// Bumped by `resume_writing` and `connection_lost`: what `drain` waits on.
    drain_generation: Cell<u64>,
    /// Tasks in `drain`.
    drain_wakers: Wakers,
    /// Whether `connection_lost` was delivered, and how.
    link: RefCell<Link>,
    /// Tasks in `wait_closed`.
    closed_wakers: Wakers,
}

impl StreamState {
    pub(crate) fn new(limit: usize) -> Rc<StreamState> {
        Rc::new(StreamState {
            limit,
            buffer: RefCell::new(BytesMut::new()),
            eof: Cell::new(false),
            exception: RefCell::new(None),
            generation: Cell::new(0),
            read_wakers: Wakers::default(),
            transport: RefCell::new(None),
            reading_paused: Cell::new(false),
            writing_paused: Cell::new(false),
            drain_generation: Cell::new(0),
            drain_wakers: Wakers::default(),
            link: RefCell::new(Link::Up),
            closed_wakers: Wakers::default(),
        })
    }

    fn set_transport(&self, transport: &Transport) {
        self.set_source(ReadSource::Stream(transport.clone()));
    }

    /// The transport to pause and resume, unless one is set or the connection is lost.
    pub(crate) fn set_source(&self, source: ReadSource) {
        let mut slot = self.transport.borrow_mut();
        if slot.is_none() && !self.is_lost() {
            *slot = Some(source);
        }
    }

    fn wake_readers(&self) {
        self.generation.set(self.generation.get() + 1);
        self.read_wakers.wake();
    }

    /// asyncio's `StreamReader.feed_data`.
    pub(crate) fn feed_data(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let len = {
            let mut buffer = self.buffer.borrow_mut();
            buffer.extend_from_slice(data);
            buffer.len()
        };
        self.wake_readers();
        if !self.reading_paused.get() && len > 2 * self.limit {
            if let Some(transport) = self.transport.borrow().as_ref() {
                transport.pause_reading();
                self.reading_paused.set(true);
            }
        }
    }

    /// The transport paused the writer: `drain` waits.
    pub(crate) fn pause_writing(&self) {
        self.writing_paused.set(true);
    }

    /// The transport resumed the writer: `drain`s waiting return.
    pub(crate) fn resume_writing(&self) {
        self.writing_paused.set(false);
        self.drain_generation.set(self.drain_generation.get() + 1);
        self.drain_wakers.wake();
    }

    /// asyncio's `StreamReader.feed_eof`.
    fn feed_eof(&self) {
        self.eof.set(true);
        self.wake_readers();
    }

    /// asyncio's `StreamReader.set_exception`.
    fn set_exception(&self, error: Error) {
        *self.exception.borrow_mut() = Some(error);
        self.wake_readers();
    }

    /// True once `connection_lost` was delivered.
    fn is_lost(&self) -> bool {
        matches!(*self.link.borrow(), Link::Lost(_))
    }

    /// The pending error, if any.
    fn exception(&self) -> Option<Error> {
        self.exception.borrow().clone()
    }

    /// asyncio's `_maybe_resume_transport`: after a read took bytes.
    fn maybe_resume_transport(&self) {
        if self.reading_paused.get() && self.buffer.borrow().len() <= self.limit {
            self.resume_transport();
        }
    }

    /// Resumes reading if this side paused it (also done before waiting for data, which
    /// could otherwise never come).
    fn resume_transport(&self) {
        if self.reading_paused.replace(false) {
            if let Some(transport) = self.transport.borrow().as_ref() {
                transport.resume_reading();
            }
        }
    }

    /// Polls for "more data, EOF or an error since `since`".
    fn poll_data(&self, since: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.generation.get() != since {
            return Poll::Ready(());
        }
        self.wait_for_more(cx);
        Poll::Pending
    }

    /// Registers a reader waiting for more data, resuming the transport if this side paused
    /// it (asyncio's `_wait_for_data`: otherwise the data could never come).
    fn wait_for_more(&self, cx: &mut Context<'_>) {
        self.read_wakers.register(cx.waker());
        self.resume_transport();
    }

    /// asyncio's `_wait_for_data`: resolves once data, EOF or an error arrived.
    async fn wait_for_data(&self) {
        let since = self.generation.get();
        std::future::poll_fn(|cx| self.poll_data(since, cx)).await
    }

    /// `connection_lost`: asyncio's `StreamReaderProtocol.connection_lost` and
    /// `FlowControlMixin.connection_lost`.
    pub(crate) fn connection_lost(&self, error: Option<Error>) {
        match &error {
            None => self.feed_eof(),
            Some(err) => self.set_exception(err.clone()),
        }
        *self.link.borrow_mut() = Link::Lost(error);
        self.transport.borrow_mut().take();
        self.writing_paused.set(false);
        self.drain_generation.set(self.drain_generation.get() + 1);
        self.drain_wakers.wake();
        self.closed_wakers.wake();
    }
}

/// The `ECONNRESET` error of a `drain` or a write once the connection is gone.
fn connection_reset(call: &str) -> Error {
    Error::io(
        format!("{call}: Connection lost"),
        std::io::Error::from_raw_os_error(libc::ECONNRESET),
    )
}

/// A client callback, type-erased: `start_server`'s `client_connected_cb`.
type ClientCallback =
    Rc<dyn Fn(StreamReader, StreamWriter) -> Pin<Box<dyn Future<Output = Option<Error>>>>>;

/// The protocol between a stream transport and its reader and writer (asyncio's
/// `StreamReaderProtocol`, with `FlowControlMixin`).
struct StreamReaderProtocol {
    /// What the reader and writer share.
    state: Rc<StreamState>,
    /// For servers: the callback run as a task at `connection_made`, and its loop.
    client: Option<(ClientCallback, Weak<Inner>)>,
}

impl BaseProtocol for StreamReaderProtocol {
    fn connection_made(&mut self, transport: Transport) {
        self.state.set_transport(&transport);
        let Some((callback, event_loop)) = &self.client else { return };
        let Some(inner) = event_loop.upgrade() else { return };
        let event_loop = EventLoop { inner };
        let reader = StreamReader::new(self.state.clone());
        let writer = StreamWriter::new(transport.clone(), self.state.clone());
        let future = callback(reader, writer);
        let reporter = event_loop.clone();
        let task = event_loop.create_task(async move {
            let error = match CatchUnwind(future).await {
                Ok(None) | Ok(Some(Error::Cancelled)) => return,
                Ok(Some(error)) => error,
                Err(message) => Error::Panic(message),
            };
            let mut context = ExceptionContext::new("Unhandled exception in client_connected_cb")
                .with_error(error);
            context.transport = Some(format!("{transport:?}"));
            reporter.call_exception_handler(context);
            transport.close();
        });
        if let Err(err) = task {
            log::error!(target: "ringloop", "start_server: cannot run client_connected_cb: {err}");
        }
    }

    fn connection_lost(&mut self, error: Option<Error>) {
        self.state.connection_lost(error);
    }

    fn pause_writing(&mut self) {
        self.state.pause_writing();
    }

    fn resume_writing(&mut self) {
        self.state.resume_writing();
    }
}

impl Protocol for StreamReaderProtocol {
    fn data_received(&mut self, data: &[u8]) {
        self.state.feed_data(data);
    }

    /// Keeps the connection half-open, as asyncio does: the writer may still write, and
    /// closes it.
    fn eof_received(&mut self) -> bool {
        self.state.feed_eof();
        true
    }
}

/// Polls a future, turning a panic into its message (the callback's panic is reported, not
/// left to the task).
struct CatchUnwind<F: ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

/// What a `start_server` callback's future may give: `()`, or a `Result<(), Error>` whose
/// error is reported to the exception handler as "Unhandled exception in client_connected_cb"
/// (an `Err(Error::Cancelled)` — the callback cancelled itself — reports nothing).
///
/// Only [`Error`] as the error type, so that a closure's `Ok(())` needs no annotation (with a
/// second `Result` impl the compiler could not pick the error type); an `io::Error` or any
/// error `Error` converts from goes through `?` inside the callback.
pub trait ClientCallbackOutput {
    /// The error to report, if any.
    fn into_error(self) -> Option<Error>;
}

impl ClientCallbackOutput for () {
    fn into_error(self) -> Option<Error> {
        None
    }
}

impl ClientCallbackOutput for Result<()> {
    fn into_error(self) -> Option<Error> {
        self.err()
    }
}

/// A streams server's `client_connected` callback (asyncio's `client_connected_cb`): any
/// `Fn(StreamReader, StreamWriter) -> Fut` whose future gives a [`ClientCallbackOutput`]
/// (implemented for every such function and closure; only ever named as a bound).
///
/// A closure written inline in the call needs no type annotations: `start_server(|reader,
/// writer| async move { ...; Ok(()) }, ...)` infers its arguments from this bound (a closure
/// first bound to a variable, then passed, does need them: Rust infers a closure's argument
/// types only where it is written against the bound).
pub trait ClientConnected:
    Fn(StreamReader, StreamWriter) -> <Self as ClientConnected>::Fut + 'static
{
    /// The future the callback returns, run as a task.
    type Fut: Future<Output: ClientCallbackOutput> + 'static;
}

impl<F, Fut> ClientConnected for F
where
    F: Fn(StreamReader, StreamWriter) -> Fut + 'static,
    Fut: Future + 'static,
    Fut::Output: ClientCallbackOutput,
{
    type Fut = Fut;
}

/// `Error::InvalidArgument` for a buffer limit of 0.
pub(crate) fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        return Err(Error::invalid_argument(
            ArgumentKind::OutOfRange,
            "the stream buffer limit must be at least 1 byte",
        ));
    }
    Ok(())
}

impl EventLoop {
    /// Connects to `address` (`"127.0.0.1:8080"`, `("localhost", 80)`, a `SocketAddr`: see
    /// [`Address`]) and returns the connection's reader and writer (asyncio's
    /// `open_connection`): [`create_connection`](Self::create_connection) with a stream
    /// protocol, the reader's limit [`DEFAULT_LIMIT`].
    pub async fn open_connection(
        &self,
        address: impl Into<Address>,
        options: ConnectOptions,
    ) -> Result<(StreamReader, StreamWriter)> {
        self.open_connection_with_limit(address, DEFAULT_LIMIT, options).await
    }

    /// [`open_connection`](Self::open_connection) with the reader's buffer limit (asyncio's
    /// `limit=`); `Error::InvalidArgument` for 0.
    pub async fn open_connection_with_limit(
        &self,
        address: impl Into<Address>,
        limit: usize,
        options: ConnectOptions,
    ) -> Result<(StreamReader, StreamWriter)> {
        let (state, protocol) = client_protocol(limit)?;
        let (transport, _) = self.create_connection(move || protocol, address, options).await?;
        Ok(reader_and_writer(state, transport))
    }

    /// Starts a server whose every connection runs `client_connected(reader, writer)`'s future
    /// as a task (asyncio's `start_server`), listening on `address` (`"127.0.0.1:8080"`, a bare
    /// port for every interface, ...: see [`Address`]): [`create_server`](Self::create_server)
    /// with a stream protocol, the readers' limit [`DEFAULT_LIMIT`]. A panic in the callback, or an
    /// error it returns, goes to the exception handler as "Unhandled exception in
    /// client_connected_cb" and the connection is closed.
    pub async fn start_server<F: ClientConnected>(
        &self,
        client_connected: F,
        address: impl Into<Address>,
        options: ServerOptions,
    ) -> Result<Server> {
        self.start_server_with_limit(client_connected, address, DEFAULT_LIMIT, options).await
    }

    /// [`start_server`](Self::start_server) with the readers' buffer limit (asyncio's
    /// `limit=`); `Error::InvalidArgument` for 0.
    pub async fn start_server_with_limit<F: ClientConnected>(
        &self,
        client_connected: F,
        address: impl Into<Address>,
        limit: usize,
        options: ServerOptions,
    ) -> Result<Server> {
        let factory = self.server_protocol_factory(client_connected, limit)?;
        self.create_server(factory, address, options).await
    }

    /// The protocol factory of a streams server: each protocol runs `client_connected`; its
    /// readers' buffer limit is `limit` (`Error::InvalidArgument` for 0).
    fn server_protocol_factory<F: ClientConnected>(
        &self,
        client_connected: F,
        limit: usize,
    ) -> Result<impl Fn() -> StreamReaderProtocol + 'static> {
        check_limit(limit)?;
        let client_connected = Rc::new(client_connected);
        let callback: ClientCallback = Rc::new(move |reader, writer| {
            // The callback itself is called inside the task, so a panic in it is caught too.
            let client_connected = client_connected.clone();
            Box::pin(async move { client_connected(reader, writer).await.into_error() })
        });
        let event_loop = Rc::downgrade(&self.inner);
        Ok(move || StreamReaderProtocol {
            state: StreamState::new(limit),
            client: Some((callback.clone(), event_loop.clone())),
        })
    }
}

/// A client connection's stream protocol, its reader's buffer limit `limit`
/// (`Error::InvalidArgument` for 0), and the state it shares with the reader and writer.
fn client_protocol(limit: usize) -> Result<(Rc<StreamState>, StreamReaderProtocol)> {
    check_limit(limit)?;
    let state = StreamState::new(limit);
    Ok((state.clone(), StreamReaderProtocol { state, client: None }))
}

/// The reader and writer of a client connection whose protocol shares `state`.
fn reader_and_writer(state: Rc<StreamState>, transport: Transport) -> (StreamReader, StreamWriter) {
    state.set_transport(&transport);
    (StreamReader::new(state.clone()), StreamWriter::new(transport, state))
}

/// [`EventLoop::open_connection`] on the running loop.
pub async fn open_connection(
    address: impl Into<Address>,
    options: ConnectOptions,
) -> Result<(StreamReader, StreamWriter)> {
    crate::get_running_loop()?.open_connection(address, options).await
}

/// [`EventLoop::start_server`] on the running loop.
pub async fn start_server<F: ClientConnected>(
    client_connected: F,
    address: impl Into<Address>,
    options: ServerOptions,
) -> Result<Server> {
    crate::get_running_loop()?.start_server(client_connected, address, options).await
}

impl fmt::Debug for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamState")
            .field("limit", &self.limit)
            .field("buffered", &self.buffer.borrow().len())
            .field("eof", &self.eof.get())
            .field("exception", &*self.exception.borrow())
            .field("reading_paused", &self.reading_paused.get())
            .field("writing_paused", &self.writing_paused.get())
            .field("lost", &self.is_lost())
            .finish()
    }
}
