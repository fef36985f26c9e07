//! Servers: [`EventLoop::create_server`] (TCP, in `tcp.rs`), [`EventLoop::create_unix_server`]
//! (Unix stream sockets, in `unix.rs`) and the [`Server`] both return (asyncio's
//! `loop.create_server`, `loop.create_unix_server` and `Server` object).
//!
//! # Implementation
//!
//! One accept loop task per listening socket awaits a persistent `Op::AcceptMulti` through
//! `EventLoop::accepts` (a multishot accept on io_uring), so both backends share this
//! code. Each accepted socket becomes a
//! [`Transport`] registered in the server's live set; the transport's lost hook removes it and,
//! once the server is closed and the set is empty, wakes the `wait_closed` waiters.
//!
//! `close()` shuts the listening sockets down for reading at once (Linux then refuses new
//! connects and fails pending accepts), cancels the accept tasks, and closes the descriptors
//! in a callback queued after the tasks' steps, so no accept op is still being awaited on a
//! descriptor when it closes. Each listening socket is a `LoopFd` from `start` on: closed
//! there, or when dropped unclosed (the loop closed before that callback ran), through the
//! driver, which closes it once no op names it (see the fd rule in `driver/mod.rs`).
//! A Unix server may also own its socket file: `close()` unlinks it unless it was replaced
//! (`unix::SocketFile`).
//! The tasks hold the server's state strongly: a server keeps accepting when every [`Server`]
//! handle is dropped, as asyncio's does, until it is closed or its loop is.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use slab::Slab;
use socket2::{SockAddr, SockRef};

use crate::error::{Error, Result, RuntimeKind};
use crate::event_loop::LoopFd;
use crate::event_loop::{EventLoop, ExceptionContext, Inner};
use crate::future::Future;
use crate::protocol::adapt;
use crate::protocol::AnyProtocol;
use crate::task::Task;
use crate::tls::TlsSetup;
use crate::toolbox::sleep_on;
use crate::transport::DynProtocol;
use crate::transport::{describe_addr, Transport};

/// How long accepting pauses after running out of descriptors or memory (asyncio's
/// `ACCEPT_RETRY_DELAY`).
const ACCEPT_RETRY_DELAY: f64 = 1.0;

mod options;
mod tcp;
mod unix;
pub use crate::net::address::Hosts;
pub use options::ServerOptions;
pub use unix::UnixServerOptions;

/// Where a server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Listening, not accepting yet (`start_serving=false`): the kernel queues connections
    /// (up to the backlog) until `start_serving` or `serve_forever`.
    Idle,
    /// Accepting: one accept task per socket.
    Serving,
    /// `close()` called: sockets closed; connections may still be live.
    Closed,
}

/// A bound socket, before a server owns it.
struct Listener {
    /// The socket.
    fd: OwnedFd,
    /// Its local address.
    addr: SockAddr,
}

impl Listener {
    /// `listen(2)` with `backlog`: from here on the kernel queues connections, which the
    /// accept tasks take once serving.
    fn listen(&self, backlog: i32) -> Result<()> {
        SockRef::from(&self.fd)
            .listen(backlog)
            .map_err(|e| Error::io(format!("listen on {}", describe_addr(&self.addr)), e))
    }
}

/// A server's listening socket: a [`Listener`] owned with the loop.
struct Listening {
    /// The socket, closed through the driver.
    fd: LoopFd,
    /// Its local address.
    addr: SockAddr,
}

/// Makes the protocol for an accepted connection.
type ProtocolMaker = Box<dyn Fn() -> Rc<DynProtocol>>;

/// How a server serves each connection.
struct Serving {
    /// Makes each connection's protocol.
    make_protocol: ProtocolMaker,
    /// TLS on each connection, if asked.
    tls: Option<TlsSetup>,
    /// `listen(2)` backlog.
    backlog: i32,
    /// Accept at once.
    start_serving: bool,
}

/// The state shared by the [`Server`] handles and the accept tasks.
struct ServerState {
    /// The loop.
    event_loop: Weak<Inner>,
    /// Makes each connection's protocol.
    make_protocol: ProtocolMaker,
    /// TLS on each connection, if asked.
    tls: Option<TlsSetup>,
    /// The listening sockets (empty once closed).
    listeners: RefCell<Vec<Listening>>,
    /// Lifecycle.
    stage: Cell<Stage>,
    /// One accept task per listener while serving.
    accept_tasks: RefCell<Vec<Task<()>>>,
    /// Live accepted connections.
    clients: RefCell<Slab<Transport>>,
    /// `wait_closed` waiters; `None` once closed with no connection left.
    waiters: RefCell<Option<Vec<Future<()>>>>,
    /// The future a running `serve_forever` awaits.
    serving_forever: RefCell<Option<Future<()>>>,
    /// A Unix server's socket file, unlinked at `close()` (`cleanup_socket`).
    socket_file: RefCell<Option<unix::SocketFile>>,
}

/// A TCP or Unix stream server (asyncio's `Server`), from [`EventLoop::create_server`] or
/// [`EventLoop::create_unix_server`]. Cheap to clone; clones refer to the same server.
///
/// Instead of `async with server:` use [`Server::scope`], which closes the server and waits
/// for it on the way out.
#[derive(Clone)]
pub struct Server {
    /// Shared with the accept tasks.
    state: Rc<ServerState>,
    /// The loop (`get_loop`).
    event_loop: EventLoop,
}

impl ServerState {
    fn event_loop(&self) -> Option<EventLoop> {
        self.event_loop.upgrade().map(|inner| EventLoop { inner })
    }

    fn report(&self, event_loop: &EventLoop, message: &str, error: Error, fd: RawFd) {
        let mut context = ExceptionContext::new(message).with_error(error);
        context.fd = Some(fd);
        event_loop.call_exception_handler(context);
    }

    fn start_serving(self: &Rc<Self>) -> Result<()> {
        match self.stage.get() {
            Stage::Serving => return Ok(()),
            Stage::Closed => {
                return Err(Error::runtime(RuntimeKind::ServerClosed, "the server is closed"))
            }
            Stage::Idle => {}
        }
        let event_loop = self.event_loop().ok_or(Error::Closed)?;
        event_loop.check_open()?;
        let fds: Vec<RawFd> = self.listeners.borrow().iter().map(|l| l.fd.raw()).collect();
        self.stage.set(Stage::Serving);
        for fd in fds {
            let task = event_loop
                .create_named_task(format!("accept on fd {fd}"), accept_loop(self.clone(), fd))?;
            self.accept_tasks.borrow_mut().push(task);
        }
        Ok(())
    }

    fn close(&self) {
        if self.stage.get() == Stage::Closed {
            return;
        }
        self.stage.set(Stage::Closed);
        let listeners = std::mem::take(&mut *self.listeners.borrow_mut());
        if let Some(file) = self.socket_file.borrow_mut().take() {
            file.remove_unless_replaced();
        }
        // Stop listening now: Linux refuses new connects (and resets queued ones) on a
        // listening socket shut down for reading, and wakes a pending accept with EINVAL.
        for listener in &listeners {
            listener.fd.with_fd(|fd| SockRef::from(&fd).shutdown(std::net::Shutdown::Read));
        }
        for task in std::mem::take(&mut *self.accept_tasks.borrow_mut()) {
            task.cancel();
        }
        if let Some(waiter) = self.serving_forever.borrow().as_ref() {
            // A normal close ends `serve_forever` with `Ok(())` (asyncio raises CancelledError).
            let _ = waiter.set_result(());
        }
        // Queued behind the cancelled tasks' steps, which drop (and so cancel) their accepts.
        // Without a loop to run it, the sockets close when the closure (or `listeners`) drops.
        if let Some(event_loop) = self.event_loop() {
            let _ = event_loop.call_soon(move || {
                for listener in listeners {
                    listener.fd.close(&[]);
                }
            });
        }
        if self.clients.borrow().is_empty() {
            self.wake_up();
        }
    }

    /// Closed with no connection left: releases every `wait_closed` for good.
    fn wake_up(&self) {
        let waiters = self.waiters.borrow_mut().take();
        for waiter in waiters.into_iter().flatten() {
            let _ = waiter.set_result(());
        }
    }

    fn on_accepted(self: &Rc<Self>, event_loop: &EventLoop, fd: OwnedFd) {
        let raw = fd.as_raw_fd();
        let started = match catch_unwind(AssertUnwindSafe(|| (self.make_protocol)())) {
            Ok(protocol) => match &self.tls {
                None => Transport::start(event_loop, fd, protocol),
                Some(setup) => crate::tls::accept(event_loop, fd, protocol, setup),
            },
            Err(panic) => Err(Error::Panic(crate::error::panic_message(&*panic))),
        };
        let transport = match started {
            Ok(transport) => transport,
            Err(err) => {
                let message = "Error on transport creation for incoming connection";
                return self.report(event_loop, message, err, raw);
            }
        };
        let key = self.clients.borrow_mut().insert(transport.clone());
        let state = Rc::downgrade(self);
        transport.on_connection_lost(move || {
            if let Some(state) = state.upgrade() {
                state.clients.borrow_mut().try_remove(key);
                if state.stage.get() == Stage::Closed && state.clients.borrow().is_empty() {
                    state.wake_up();
                }
            }
        });
    }

    fn transports(&self) -> Vec<Transport> {
        self.clients.borrow().iter().map(|(_, t)| t.clone()).collect()
    }
}

/// Accepts on `fd` until the server closes (or the listener fails for good): one persistent
/// `Op::AcceptMulti` (a multishot accept on io_uring) gives every connection; when it ends
/// with an error, that error is handled as asyncio does and a new one starts.
async fn accept_loop(state: Rc<ServerState>, fd: RawFd) {
    loop {
        let Some(event_loop) = state.event_loop() else { return };
        if state.stage.get() != Stage::Serving {
            return;
        }
        let Ok(mut accepts) = event_loop.accepts(fd) else { return };
        while let Some(accepted) = accepts.next().await {
            if state.stage.get() != Stage::Serving {
                return; // closed meanwhile (by the factory, say): `accepted` is dropped, closing it
            }
            let err = match accepted {
                Ok(conn) => {
                    state.on_accepted(&event_loop, conn);
                    continue;
                }
                Err(err) => err,
            };
            if !on_accept_error(&state, &event_loop, fd, err).await {
                return;
            }
        }
    }
}

/// The exception handler's message when accepting runs out of fds or memory (asyncio:
/// "socket.accept() out of system resource").
const ACCEPT_EXHAUSTED: &str = "accept: out of system resources; accepting pauses, then retries";

/// Handles an accept error as asyncio does; false: the listener failed for good.
async fn on_accept_error(
    state: &ServerState,
    event_loop: &EventLoop,
    fd: RawFd,
    err: io::Error,
) -> bool {
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::ECONNABORTED | libc::EINTR | libc::EPROTO) => true,
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
            let error = Error::io(format!("accept on fd {fd}"), err);
            state.report(event_loop, ACCEPT_EXHAUSTED, error, fd);
            // The timer is cancelled if the accept task is (dropping the sleep).
            if let Ok(pause) = sleep_on(event_loop, ACCEPT_RETRY_DELAY) {
                let _ = pause.await;
            }
            true
        }
        _ => {
            let error = Error::io(format!("accept on fd {fd}"), err);
            state.report(event_loop, "Accept failed on a socket", error, fd);
            false
        }
    }
}

/// Boxes `protocol_factory` into the maker a server calls for each connection.
fn protocol_maker<K, P, F>(protocol_factory: F) -> ProtocolMaker
where
    P: AnyProtocol<K>,
    F: Fn() -> P + 'static,
{
    Box::new(move || adapt(Rc::new(RefCell::new(protocol_factory()))))
}

/// Closes the server when dropped (a cancelled `serve_forever` or `scope`).
struct CloseOnDrop(Rc<ServerState>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Server {
    /// A server on bound `listeners`, serving at once if `start_serving`; on failure to start
    /// it is closed (the sockets, and `socket_file`, with it).
    fn start(
        event_loop: &EventLoop,
        listeners: Vec<Listener>,
        serving: Serving,
        socket_file: Option<unix::SocketFile>,
    ) -> Result<Server> {
        let Serving { make_protocol, tls, backlog, start_serving } = serving;
        let listened = listeners.iter().try_for_each(|l| l.listen(backlog));
        let state = Rc::new(ServerState {
            event_loop: Rc::downgrade(&event_loop.inner),
            make_protocol,
            tls,
            listeners: RefCell::new(
                listeners
                    .into_iter()
                    .map(|l| Listening { fd: LoopFd::new(event_loop, l.fd), addr: l.addr })
                    .collect(),
            ),
            stage: Cell::new(Stage::Idle),
            accept_tasks: RefCell::new(Vec::new()),
            clients: RefCell::new(Slab::new()),
            waiters: RefCell::new(Some(Vec::new())),
            serving_forever: RefCell::new(None),
            socket_file: RefCell::new(socket_file),
        });
        let server = Server { state, event_loop: event_loop.clone() };
        let started = listened.and_then(|()| match start_serving {
            true => server.start_serving(),
            false => Ok(()),
        });
        if let Err(err) = started {
            server.close();
            return Err(err);
        }
        Ok(server)
    }

    /// Stops listening: the accept tasks end and the listening sockets close; accepted
    /// connections stay open. A Unix server made with `cleanup_socket` unlinks its socket
    /// file now, unless another file has replaced it. Cancels a running [`serve_forever`](Self::serve_forever).
    /// Idempotent.
    pub fn close(&self) {
        self.state.close();
    }

    /// Closes every accepted connection (each flushes its buffer first).
    pub fn close_clients(&self) {
        for transport in self.state.transports() {
            transport.close();
        }
    }

    /// Aborts every accepted connection (buffers are dropped).
    pub fn abort_clients(&self) {
        for transport in self.state.transports() {
            transport.abort();
        }
    }

    /// The loop the server runs on.
    pub fn get_loop(&self) -> EventLoop {
        self.event_loop.clone()
    }

    /// Starts accepting if not yet (asyncio's `start_serving`, which is a coroutine there; here
    /// accepting starts with the loop's next iteration). The sockets listen from creation on,
    /// so connections made before this call wait in the backlog and are accepted now (asyncio
    /// calls `listen` here, and refuses them meanwhile). Idempotent;
    /// `Error::Runtime` of [`RuntimeKind::ServerClosed`] on a closed server.
    pub fn start_serving(&self) -> Result<()> {
        self.state.start_serving().map_err(|err| match err {
            Error::Runtime { kind: RuntimeKind::ServerClosed, .. } => {
                Error::runtime(RuntimeKind::ServerClosed, format!("server {self:?} is closed"))
            }
            other => other,
        })
    }

    /// Serves until the server is closed (asyncio's `serve_forever`), starting to serve
    /// first. Returns `Ok(())` when [`close`](Self::close) ends it: a normal close is not an
    /// error here, where asyncio raises `CancelledError`. Dropping this future (cancelling the
    /// task awaiting it) closes the server. Unlike asyncio it does not then wait for the
    /// connections: call [`wait_closed`](Self::wait_closed) for that.
    ///
    /// # Errors
    ///
    /// `Error::Runtime` if the server is closed ([`RuntimeKind::ServerClosed`]) or another
    /// `serve_forever` is running ([`RuntimeKind::AlreadyServing`]).
    pub async fn serve_forever(&self) -> Result<()> {
        if self.state.serving_forever.borrow().is_some() {
            let message = format!("server {self:?} is already being awaited on serve_forever()");
            return Err(Error::runtime(RuntimeKind::AlreadyServing, message));
        }
        if self.state.stage.get() == Stage::Closed {
            return Err(Error::runtime(
                RuntimeKind::ServerClosed,
                format!("server {self:?} is closed"),
            ));
        }
        self.start_serving()?;
        let waiter = self.event_loop.create_future::<()>();
        *self.state.serving_forever.borrow_mut() = Some(waiter.clone());
        struct Serving(CloseOnDrop);
        impl Drop for Serving {
            fn drop(&mut self) {
                self.0 .0.serving_forever.borrow_mut().take();
            }
        }
        let _serving = Serving(CloseOnDrop(self.state.clone()));
        waiter.await
    }

    /// True while listening and accepting.
    pub fn is_serving(&self) -> bool {
        self.state.stage.get() == Stage::Serving
    }

    /// Waits until the server is closed **and** every accepted connection is gone; returns at
    /// once from then on (asyncio 3.12's `wait_closed`).
    pub async fn wait_closed(&self) {
        let waiter = match self.state.waiters.borrow_mut().as_mut() {
            None => return,
            Some(waiters) => {
                let waiter = self.event_loop.create_future::<()>();
                waiters.push(waiter.clone());
                waiter
            }
        };
        let _ = waiter.await;
    }

    /// The local addresses of the listening sockets; empty once closed.
    pub fn sockets(&self) -> Vec<SockAddr> {
        self.state.listeners.borrow().iter().map(|l| l.addr.clone()).collect()
    }

    /// The listening sockets' descriptors (same order as [`sockets`](Self::sockets)); they
    /// stay owned by the server.
    pub fn fds(&self) -> Vec<RawFd> {
        self.state.listeners.borrow().iter().map(|l| l.fd.raw()).collect()
    }

    /// Live accepted connections.
    pub fn connection_count(&self) -> usize {
        self.state.clients.borrow().len()
    }

    /// Runs `body` with the server, then closes it and waits until it is closed (asyncio's
    /// `async with server:`). If the returned future is dropped early the server is closed.
    pub async fn scope<T, Fut>(&self, body: impl FnOnce(Server) -> Fut) -> T
    where
        Fut: std::future::Future<Output = T>,
    {
        let _close = CloseOnDrop(self.state.clone());
        let output = body(self.clone()).await;
        self.close();
        self.wait_closed().await;
        output
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.sockets().iter().map(describe_addr).collect();
        write!(
            f,
            "<Server sockets=[{}] {:?} connections={}>",
            addrs.join(", "),
            self.state.stage.get(),
            self.connection_count()
        )
    }
}
