//! TCP servers: [`EventLoop::create_server`] and the [`Server`] it returns (asyncio's
//! `loop.create_server` and `Server` object).
//!
//! # Implementation
//!
//! One accept loop task per listening socket awaits a persistent `Op::AcceptMulti` through
//! `EventLoop::accept_stream` (a multishot accept on io_uring), so both backends share this
//! code. Each accepted socket becomes a
//! [`Transport`] registered in the server's live set; the transport's lost hook removes it and,
//! once the server is closed and the set is empty, wakes the `wait_closed` waiters.
//!
//! `close()` shuts the listening sockets down for reading at once (Linux then refuses new
//! connects and fails pending accepts), cancels the accept tasks, and closes the descriptors
//! in a callback queued after the tasks' steps, so no accept op is still being awaited on a
//! descriptor when it closes.
//! The tasks hold the server's state strongly: a server keeps accepting when every [`Server`]
//! handle is dropped (BEHAVIOURS 92), until it is closed or its loop is.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future as StdFuture;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use slab::Slab;
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::error::{Error, Result};
use crate::event_loop::{EventLoop, ExceptionContext, Inner};
use crate::future::Future;
use crate::net::dns::{AddrInfo, AddrInfoHints};
use crate::protocol::AnyProtocol;
use crate::task::Task;
use crate::transport::dispatch::{adapt, StreamProtocol};
use crate::transport::Transport;

/// How long accepting pauses after running out of descriptors or memory (asyncio's
/// `ACCEPT_RETRY_DELAY`).
const ACCEPT_RETRY_DELAY: f64 = 1.0;

mod options;
pub use options::{Hosts, ServerOptions};

/// Where a server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Bound, not listening yet (`start_serving=false`).
    Idle,
    /// Listening, one accept task per socket.
    Serving,
    /// `close()` called: sockets closed; connections may still be live.
    Closed,
}

/// A listening socket.
struct Listener {
    /// The socket.
    fd: OwnedFd,
    /// Its local address.
    addr: SockAddr,
}

/// Makes the protocol for an accepted connection.
type ProtocolMaker = Box<dyn Fn() -> Rc<dyn StreamProtocol>>;

/// The state shared by the [`Server`] handles and the accept tasks.
struct ServerState {
    /// The loop.
    event_loop: Weak<Inner>,
    /// Makes each connection's protocol.
    make_protocol: ProtocolMaker,
    /// The listening sockets (empty once closed).
    listeners: RefCell<Vec<Listener>>,
    /// `listen(2)` backlog.
    backlog: i32,
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
}

/// A TCP server (asyncio's `Server`), from [`EventLoop::create_server`]. Cheap to clone;
/// clones refer to the same server.
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
            Stage::Closed => return Err(Error::Runtime("the server is closed".into())),
            Stage::Idle => {}
        }
        let event_loop = self.event_loop().ok_or(Error::Closed)?;
        event_loop.check_open()?;
        let fds: Vec<RawFd> = self.listeners.borrow().iter().map(|l| l.fd.as_raw_fd()).collect();
        for listener in self.listeners.borrow().iter() {
            SockRef::from(&listener.fd)
                .listen(self.backlog)
                .map_err(|e| Error::io(format!("listen on {}", describe(&listener.addr)), e))?;
        }
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
        // Stop listening now: Linux refuses new connects (and resets queued ones) on a
        // listening socket shut down for reading, and wakes a pending accept with EINVAL.
        for listener in &listeners {
            let _ = SockRef::from(&listener.fd).shutdown(std::net::Shutdown::Read);
        }
        for task in std::mem::take(&mut *self.accept_tasks.borrow_mut()) {
            task.cancel();
        }
        if let Some(waiter) = self.serving_forever.borrow().as_ref() {
            waiter.cancel();
        }
        // Queued behind the cancelled tasks' steps, which drop (and so cancel) their accepts.
        let weak = self.event_loop.clone();
        if let Some(event_loop) = self.event_loop() {
            let _ = event_loop.call_soon(move || {
                let event_loop = weak.upgrade().map(|inner| EventLoop { inner });
                for listener in listeners {
                    if let Some(event_loop) = &event_loop {
                        event_loop.with_driver(|d| d.forget_fd(listener.fd.as_raw_fd()));
                    }
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
            Ok(protocol) => Transport::start(event_loop, fd, protocol),
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
        let Ok(mut accepts) = event_loop.accept_stream(fd) else { return };
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
            state.report(event_loop, "socket.accept() out of system resource", error, fd);
            sleep(event_loop, ACCEPT_RETRY_DELAY).await;
            true
        }
        _ => {
            let error = Error::io(format!("accept on fd {fd}"), err);
            state.report(event_loop, "Accept failed on a socket", error, fd);
            false
        }
    }
}

/// Sleeps `secs` seconds of loop time (the timer is cancelled if the sleep is dropped).
async fn sleep(event_loop: &EventLoop, secs: f64) {
    struct CancelOnDrop(crate::event_loop::TimerHandle);
    impl Drop for CancelOnDrop {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    let done = event_loop.create_future::<()>();
    let setter = done.clone();
    let Ok(timer) = event_loop.call_later(secs, move || {
        let _ = setter.set_result(());
    }) else {
        return;
    };
    let _timer = CancelOnDrop(timer);
    let _ = done.await;
}

/// An address as asyncio prints it: `('127.0.0.1', 8000)` or `('::1', 8000, 0, 0)`.
fn describe_ip(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("('{}', {})", a.ip(), a.port()),
        SocketAddr::V6(a) => {
            format!("('{}', {}, {}, {})", a.ip(), a.port(), a.flowinfo(), a.scope_id())
        }
    }
}

fn describe(addr: &SockAddr) -> String {
    addr.as_socket().map_or_else(|| format!("{addr:?}"), |a| describe_ip(&a))
}

/// Creates, configures and binds a socket for `info`; `Ok(None)` when the family is not
/// supported here (skipped, as asyncio does).
fn bind_socket(info: &AddrInfo, options: &ServerOptions) -> Result<Option<Socket>> {
    let kind = Type::STREAM.nonblocking().cloexec();
    let protocol = (info.protocol != 0).then(|| socket2::Protocol::from(info.protocol));
    let socket = match Socket::new(Domain::from(info.family), kind, protocol) {
        Ok(socket) => socket,
        Err(err) => {
            log::debug!(target: "ringloop", "create_server: no socket for {:?}: {err}", info.addr);
            return Ok(None);
        }
    };
    let what = describe_ip(&info.addr);
    let option_error = |name: &str, e: io::Error| Error::io(format!("{name} on {what}"), e);
    socket.set_reuse_address(options.reuse_address).map_err(|e| option_error("SO_REUSEADDR", e))?;
    if options.reuse_port {
        socket.set_reuse_port(true).map_err(|e| option_error("SO_REUSEPORT", e))?;
    }
    if options.keep_alive {
        socket.set_keepalive(true).map_err(|e| option_error("SO_KEEPALIVE", e))?;
    }
    if info.family == libc::AF_INET6 {
        // Lets the IPv4 wildcard bind the same port (asyncio does the same).
        socket.set_only_v6(true).map_err(|e| option_error("IPV6_V6ONLY", e))?;
    }
    socket
        .bind(&info.addr.into())
        .map_err(|e| Error::io(format!("error while attempting to bind on address {what}"), e))?;
    Ok(Some(socket))
}

impl EventLoop {
    /// Creates a TCP server listening on `host` and `port` (asyncio's `loop.create_server`);
    /// each accepted connection gets a [`Transport`] driving a fresh `protocol_factory()`.
    ///
    /// `host` is anything [`Hosts`] converts from (`None`/`""`: every interface); `port` 0
    /// picks a free port per socket. With [`ServerOptions::sock`], `host` must be `None` and
    /// `port` is ignored. Sockets are resolved with `AI_PASSIVE` and `SOCK_STREAM`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a host with `sock`, no host/port/sock at all, or a
    /// `sock` that is not `SOCK_STREAM`; [`Error::Dns`] from resolution; [`Error::Io`] naming
    /// the address when a bind fails (every socket created so far is closed).
    ///
    /// # Example
    ///
    /// An echo server on a free port and a blocking client on a thread:
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use ringloop::{BaseProtocol, Protocol, ServerOptions, Transport};
    ///
    /// #[derive(Default)]
    /// struct Echo(Option<Transport>);
    /// impl BaseProtocol for Echo {
    ///     fn connection_made(&mut self, transport: Transport) {
    ///         self.0 = Some(transport);
    ///     }
    /// }
    /// impl Protocol for Echo {
    ///     fn data_received(&mut self, data: &[u8]) {
    ///         let _ = self.0.as_ref().unwrap().write(data);
    ///     }
    /// }
    ///
    /// let reply = ringloop::run(async {
    ///     let lp = ringloop::get_running_loop()?;
    ///     let options = ServerOptions::default();
    ///     let server = lp.create_server(Echo::default, "127.0.0.1", Some(0), options).await?;
    ///     let port = server.sockets()[0].as_socket().unwrap().port();
    ///     let client = move || -> std::io::Result<Vec<u8>> {
    ///         let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    ///         stream.write_all(b"hello")?;
    ///         let mut reply = [0; 5];
    ///         stream.read_exact(&mut reply)?;
    ///         Ok(reply.to_vec())
    ///     };
    ///     let reply = lp.run_in_executor(None, client)?.await?;
    ///     server.close();
    ///     server.wait_closed().await; // the client has disconnected
    ///     Ok::<_, ringloop::Error>(reply)
    /// })??;
    /// assert_eq!(reply.unwrap(), b"hello");
    /// # Ok::<(), ringloop::Error>(())
    /// ```
    pub async fn create_server<K, P, F>(
        &self,
        protocol_factory: F,
        host: impl Into<Hosts>,
        port: Option<u16>,
        mut options: ServerOptions,
    ) -> Result<Server>
    where
        K: 'static,
        P: AnyProtocol<K>,
        F: Fn() -> P + 'static,
    {
        self.check_open()?;
        let hosts = host.into();
        let listeners = match options.sock.take() {
            Some(_) if hosts != Hosts::Any => {
                return Err(Error::InvalidArgument(
                    "host/port and sock can not be specified at the same time".into(),
                ));
            }
            Some(sock) => vec![adopt_socket(sock)?],
            None if hosts == Hosts::Any && port.is_none() => {
                return Err(Error::InvalidArgument(
                    "Neither host/port nor sock were specified".into(),
                ))
            }
            None => self.bind_all(&hosts, port.unwrap_or(0), &options).await?,
        };
        let make_protocol: ProtocolMaker = Box::new(move || {
            let protocol = Rc::new(RefCell::new(protocol_factory()));
            adapt(protocol)
        });
        let state = Rc::new(ServerState {
            event_loop: Rc::downgrade(&self.inner),
            make_protocol,
            listeners: RefCell::new(listeners),
            backlog: options.backlog,
            stage: Cell::new(Stage::Idle),
            accept_tasks: RefCell::new(Vec::new()),
            clients: RefCell::new(Slab::new()),
            waiters: RefCell::new(Some(Vec::new())),
            serving_forever: RefCell::new(None),
        });
        let server = Server { state, event_loop: self.clone() };
        if options.start_serving {
            if let Err(err) = server.start_serving() {
                server.close();
                return Err(err);
            }
        }
        Ok(server)
    }

    /// Resolves every host and binds one socket per unique address.
    async fn bind_all(
        &self,
        hosts: &Hosts,
        port: u16,
        options: &ServerOptions,
    ) -> Result<Vec<Listener>> {
        let hints = AddrInfoHints::new()
            .family(options.family)
            .socktype(libc::SOCK_STREAM)
            .flags(libc::AI_PASSIVE | options.flags);
        let names: Vec<Option<&str>> = match hosts {
            Hosts::Any => vec![None],
            Hosts::List(list) => {
                list.iter().map(|h| Some(h.as_str()).filter(|h| !h.is_empty())).collect()
            }
        };
        let mut infos: Vec<AddrInfo> = Vec::new();
        for name in names {
            let found = self.getaddrinfo(name, port, hints).await?;
            if found.is_empty() {
                let error = io::Error::other("getaddrinfo returned an empty list");
                return Err(Error::io(format!("getaddrinfo({name:?})"), error));
            }
            for info in found {
                let same = |i: &AddrInfo| {
                    (i.family, i.protocol, i.addr) == (info.family, info.protocol, info.addr)
                };
                if !infos.iter().any(same) {
                    infos.push(info);
                }
            }
        }
        let mut listeners = Vec::new();
        for info in &infos {
            // On error, the sockets bound so far are dropped (closed) with `listeners`.
            if let Some(socket) = bind_socket(info, options)? {
                let addr = socket.local_addr().map_err(|e| Error::io("getsockname", e))?;
                listeners.push(Listener { fd: socket.into(), addr });
            }
        }
        if listeners.is_empty() {
            let error = io::Error::from_raw_os_error(libc::EAFNOSUPPORT);
            return Err(Error::io("create_server: no socket could be created", error));
        }
        Ok(listeners)
    }
}

/// Checks and prepares a user-supplied socket (`ServerOptions::sock`).
fn adopt_socket(sock: OwnedFd) -> Result<Listener> {
    let fd = sock.as_raw_fd();
    let socket = SockRef::from(&sock);
    let kind = socket.r#type().map_err(|e| Error::io(format!("create_server(sock fd {fd})"), e))?;
    if kind != Type::STREAM {
        return Err(Error::InvalidArgument(format!(
            "A Stream Socket was expected, got fd {fd} of type {kind:?}"
        )));
    }
    socket.set_nonblocking(true).map_err(|e| Error::io("create_server: set_nonblocking", e))?;
    let addr = socket.local_addr().map_err(|e| Error::io(format!("getsockname(fd {fd})"), e))?;
    Ok(Listener { fd: sock, addr })
}

/// Closes the server when dropped (a cancelled `serve_forever` or `scope`).
struct CloseOnDrop(Rc<ServerState>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Server {
    /// Stops listening: the accept tasks end and the listening sockets close; accepted
    /// connections stay open. Cancels a running [`serve_forever`](Self::serve_forever).
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

    /// Starts listening and accepting if not yet (asyncio's `start_serving`, which is a
    /// coroutine there; here accepting starts with the loop's next iteration). Idempotent;
    /// `Error::Runtime` on a closed server.
    pub fn start_serving(&self) -> Result<()> {
        self.state.start_serving().map_err(|err| match err {
            Error::Runtime(_) => Error::Runtime(format!("server {self:?} is closed")),
            other => other,
        })
    }

    /// Serves until the server is closed (asyncio's `serve_forever`), starting to serve
    /// first. Returns `Err(Error::Cancelled)` when [`close`](Self::close) ends it (asyncio's
    /// `CancelledError`); dropping this future (cancelling the task awaiting it) closes the
    /// server. Unlike asyncio it does not then wait for the connections: call
    /// [`wait_closed`](Self::wait_closed) for that.
    ///
    /// # Errors
    ///
    /// `Error::Runtime` if the server is closed or another `serve_forever` is running.
    pub async fn serve_forever(&self) -> Result<()> {
        if self.state.serving_forever.borrow().is_some() {
            let message = format!("server {self:?} is already being awaited on serve_forever()");
            return Err(Error::Runtime(message));
        }
        if self.state.stage.get() == Stage::Closed {
            return Err(Error::Runtime(format!("server {self:?} is closed")));
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
        self.state.listeners.borrow().iter().map(|l| l.fd.as_raw_fd()).collect()
    }

    /// Live accepted connections.
    pub fn connection_count(&self) -> usize {
        self.state.clients.borrow().len()
    }

    /// Runs `body` with the server, then closes it and waits until it is closed (asyncio's
    /// `async with server:`). If the returned future is dropped early the server is closed.
    pub async fn scope<T, Fut>(&self, body: impl FnOnce(Server) -> Fut) -> T
    where
        Fut: StdFuture<Output = T>,
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
        let addrs: Vec<String> = self.sockets().iter().map(describe).collect();
        write!(
            f,
            "<Server sockets=[{}] {:?} connections={}>",
            addrs.join(", "),
            self.state.stage.get(),
            self.connection_count()
        )
    }
}
