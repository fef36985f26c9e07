//! More than one core: one loop per thread, several threads. [`spawn_loops`] starts them and
//! [`LoopThreads`] gives back their handles and their results; [`reuse_port_listeners`] makes
//! the sockets for one server per loop on one port (`SO_REUSEPORT`: the kernel spreads the
//! connections over them).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;

use socket2::{Domain, Socket, Type};

use crate::driver::Backend;
use crate::error::{panic_message, ArgumentKind, Error, Result, RuntimeKind};
use crate::event_loop::{EventLoop, LoopHandle};

/// Runs `future` on `event_loop` as [`run`](crate::run) does, and closes the loop: tasks still
/// pending when it finishes are cancelled and given a chance to unwind, the default executor
/// is shut down, then the loop closes.
pub(crate) fn run_and_close<F: Future>(event_loop: EventLoop, future: F) -> Result<F::Output> {
    let result = event_loop.run_until_complete(future);
    event_loop.cancel_all_tasks();
    let shutdown = event_loop.clone();
    let _ = event_loop
        .run_until_complete(async move { shutdown.shutdown_default_executor(None).await });
    event_loop.close()?;
    result
}

/// Starts one thread per item of `inputs`, each running its own loop (the best backend, as
/// [`EventLoop::new`]) with `main(input)` as [`run`](crate::run) does: the loop closes when
/// the future is done. One loop per thread is ringloop's model (its objects are not `Send`);
/// this is how a server uses more than one core. See [`LoopSpawner`] to choose the backend or
/// the threads' names.
///
/// It returns once every loop is created (a loop that cannot be created fails the whole call,
/// and the threads already started end without running `main`). The results come back through
/// [`LoopThreads::join`]; while the loops run, [`LoopThreads::handles`] reach them from the
/// caller's thread ([`LoopHandle::run_coroutine_threadsafe`] gives a value back from a loop
/// at any time).
///
/// For a server on every loop, each loop binds the same port with
/// [`ServerOptions::reuse_port`](crate::ServerOptions::reuse_port), or is given one of
/// [`reuse_port_listeners`]; a [`Shutdown`](crate::Shutdown) shared by the loops stops them
/// all (a signal reaches every loop that handles it).
///
/// ```
/// use std::io::{Read, Write};
/// use ringloop::{Address, ServerOptions, Shutdown, StreamReader, StreamWriter};
///
/// // Four loops, one server each, all on one port.
/// let listeners = ringloop::reuse_port_listeners("127.0.0.1:0".parse().unwrap(), 4).unwrap();
/// let port = listeners[0].local_addr().unwrap().as_socket().unwrap().port();
/// let shutdown = Shutdown::new();
/// let stop = shutdown.clone();
/// let loops = ringloop::spawn_loops(listeners.into_iter().enumerate(), move |(index, sock)| {
///     let shutdown = stop.clone();
///     async move {
///         let lp = ringloop::get_running_loop()?;
///         let greet = move |_: StreamReader, writer: StreamWriter| async move {
///             writer.write(format!("loop {index}\n").as_bytes())
///         };
///         let options = ServerOptions::new().sock(sock);
///         let server = lp.start_server(greet, Address::NONE, options).await?;
///         server.serve_until(&shutdown, 1.0).await
///     }
/// })
/// .unwrap();
/// let mut reply = String::new();
/// std::net::TcpStream::connect(("127.0.0.1", port)).unwrap().read_to_string(&mut reply).unwrap();
/// assert!(reply.starts_with("loop "));
/// shutdown.request();
/// for result in loops.join() {
///     result.unwrap().unwrap();
/// }
/// ```
pub fn spawn_loops<I: Send + 'static, M: LoopMain<I>>(
    inputs: impl IntoIterator<Item = I>,
    main: M,
) -> Result<LoopThreads<M::Value>> {
    LoopSpawner::new().spawn(inputs, main)
}

/// What each thread of [`spawn_loops`] runs: a function, shared by the threads, from one input
/// to the future its loop runs to completion, whose value comes back through
/// [`LoopThreads::join`].
///
/// A blanket impl covers every `Fn(I) -> Fut + Send + Sync + 'static` whose `Fut` is
/// `'static` and gives a `Send` value, so callers pass a closure and never name this trait;
/// the closure's argument type is inferred from the inputs. The future need not be `Send`: it
/// is made on the loop's thread and stays there.
pub trait LoopMain<I>: Fn(I) -> <Self as LoopMain<I>>::Future + Send + Sync + 'static {
    /// The future `main(input)` returns.
    type Future: Future<Output = Self::Value> + 'static;
    /// What that future gives.
    type Value: Send + 'static;
}

impl<I, F, Fut> LoopMain<I> for F
where
    F: Fn(I) -> Fut + Send + Sync + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    type Future = Fut;
    type Value = Fut::Output;
}

/// How [`spawn_loops`] starts its threads: the backend, the threads' names. `Default`: the best
/// backend (`RINGLOOP_BACKEND` honoured), threads named `ringloop-0`, `ringloop-1`, ...
#[derive(Clone, Debug, Default)]
pub struct LoopSpawner {
    /// `None`: [`EventLoop::new`]'s choice.
    backend: Option<Backend>,
    /// The threads' names are this, `-`, and their index.
    name: Option<String>,
}

impl LoopSpawner {
    /// The defaults.
    pub fn new() -> LoopSpawner {
        LoopSpawner::default()
    }

    setters! {
        /// Every loop on `backend` (an error from [`spawn`](Self::spawn) if the kernel or the
        /// build lacks it).
        backend: Some(Backend),
        /// Names the threads `{name}-{index}`.
        name: Some(into String),
    }

    /// [`spawn_loops`] with these settings.
    pub fn spawn<I: Send + 'static, M: LoopMain<I>>(
        self,
        inputs: impl IntoIterator<Item = I>,
        main: M,
    ) -> Result<LoopThreads<M::Value>> {
        let main = std::sync::Arc::new(main);
        let prefix = self.name.as_deref().unwrap_or("ringloop");
        let mut starting = Vec::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let (opened_tx, opened_rx) = mpsc::channel();
            let (go_tx, go_rx) = mpsc::channel::<bool>();
            let (backend, main) = (self.backend, main.clone());
            let thread = std::thread::Builder::new()
                .name(format!("{prefix}-{index}"))
                .spawn(move || {
                    let event_loop = match open(backend) {
                        Ok(event_loop) => event_loop,
                        Err(err) => {
                            let _ = opened_tx.send(Err(err.clone()));
                            return Err(err);
                        }
                    };
                    let _ = opened_tx.send(Ok(event_loop.handle()));
                    if !go_rx.recv().unwrap_or(false) {
                        let _ = event_loop.close();
                        return Err(Error::Cancelled);
                    }
                    run_and_close(event_loop, main(input))
                })
                .map_err(|e| Error::io(format!("spawning thread {prefix}-{index}"), e));
            starting.push((thread, opened_rx, go_tx));
        }
        start_all(starting)
    }
}

/// A loop thread being started: the thread, the loop's handle (or why there is no loop) when
/// it is created, and the go-ahead to run `main`.
type Starting<T> =
    (Result<JoinHandle<Result<T>>>, mpsc::Receiver<Result<LoopHandle>>, mpsc::Sender<bool>);

/// Waits until every loop is created, then lets them all run; or, if one failed, tells the
/// others to close and returns that failure.
fn start_all<T>(starting: Vec<Starting<T>>) -> Result<LoopThreads<T>> {
    let mut loops = Vec::new();
    let mut failure = None;
    let mut go = Vec::new();
    for (thread, opened, go_tx) in starting {
        let opened = match thread {
            Ok(thread) => opened
                .recv()
                .unwrap_or_else(|_| {
                    Err(Error::runtime(RuntimeKind::Other, "a loop thread died at start"))
                })
                .map(|handle| (handle, thread)),
            Err(err) => Err(err),
        };
        match opened {
            Ok((handle, thread)) => loops.push(LoopThread { handle, thread }),
            Err(err) => {
                failure.get_or_insert(err);
            }
        }
        go.push(go_tx);
    }
    let ok = failure.is_none();
    for go_tx in go {
        let _ = go_tx.send(ok);
    }
    match failure {
        None => Ok(LoopThreads { loops }),
        Some(err) => {
            for lp in loops {
                let _ = lp.thread.join();
            }
            Err(err)
        }
    }
}

/// A loop on `backend`, or on the best one.
fn open(backend: Option<Backend>) -> Result<EventLoop> {
    match backend {
        Some(backend) => EventLoop::with_backend(backend),
        None => EventLoop::new(),
    }
}

/// Loops running on threads of their own, from [`spawn_loops`]: their handles, and their
/// `main`s' results once they are done.
pub struct LoopThreads<T> {
    /// In the order of the inputs.
    loops: Vec<LoopThread<T>>,
}

/// One of [`LoopThreads`].
struct LoopThread<T> {
    /// Its loop, from other threads.
    handle: LoopHandle,
    /// Gives `main`'s result.
    thread: JoinHandle<Result<T>>,
}

impl<T> LoopThreads<T> {
    /// How many loops there are.
    pub fn len(&self) -> usize {
        self.loops.len()
    }

    /// True when there are none (`spawn_loops` was given no input).
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }

    /// The loops' handles, in the order of the inputs: `call_soon_threadsafe`,
    /// `run_coroutine_threadsafe`, and `stop` (which ends `main` early: its result is then
    /// [`Error::Runtime`], "stopped before the future completed").
    pub fn handles(&self) -> Vec<LoopHandle> {
        self.loops.iter().map(|lp| lp.handle.clone()).collect()
    }

    /// Waits for every thread to end and returns each `main`'s result, in the order of the
    /// inputs: `Ok(output)`, [`Error::Runtime`] if its loop was stopped before `main` was
    /// done, [`Error::Panic`] if `main` panicked.
    pub fn join(self) -> Vec<Result<T>> {
        let joined = self.loops.into_iter().map(|lp| lp.thread.join());
        joined
            .map(|r| r.unwrap_or_else(|panic| Err(Error::Panic(panic_message(&*panic)))))
            .collect()
    }
}

impl<T> fmt::Debug for LoopThreads<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.loops.iter().map(|lp| lp.thread.thread().name()).collect();
        f.debug_struct("LoopThreads").field("threads", &names).finish()
    }
}

/// `count` TCP sockets bound to `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`), listening
/// (backlog 100; a server's [`backlog`](crate::ServerOptions::backlog) then
/// replaces it): one per loop, for [`ServerOptions::sock`](crate::ServerOptions::sock). Port
/// 0 picks a free port for the first and binds the others to the same one. The kernel hashes
/// every new connection (by its addresses and ports) to one of the listening sockets, so each
/// connection is accepted by exactly one loop; one made before its loop serves waits in that
/// socket's backlog.
///
/// [`Error::Io`] naming the address and the call that failed; [`Error::InvalidArgument`] for
/// a `count` of 0.
pub fn reuse_port_listeners(addr: SocketAddr, count: usize) -> Result<Vec<Socket>> {
    if count == 0 {
        return Err(Error::invalid_argument(
            ArgumentKind::OutOfRange,
            "reuse_port_listeners: count must be at least 1",
        ));
    }
    let mut bound_to = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = reuse_port_socket(bound_to)?;
        if bound_to.port() == 0 {
            let local =
                socket.local_addr().map_err(|e| Error::io(format!("getsockname on {addr}"), e));
            bound_to = local?.as_socket().unwrap_or(addr);
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// The backlog [`reuse_port_listeners`] listens with (`create_server`'s default too).
const LISTEN_BACKLOG: i32 = 100;

/// A non-blocking, close-on-exec TCP socket listening on `addr` with `SO_REUSEPORT`.
fn reuse_port_socket(addr: SocketAddr) -> Result<Socket> {
    let fail = |call: &'static str| move |e| Error::io(format!("{call} on {addr}"), e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), None)
        .map_err(fail("socket"))?;
    socket.set_reuse_address(true).map_err(fail("SO_REUSEADDR"))?;
    socket.set_reuse_port(true).map_err(fail("SO_REUSEPORT"))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail("IPV6_V6ONLY"))?;
    }
    socket.bind(&addr.into()).map_err(fail("bind"))?;
    socket.listen(LISTEN_BACKLOG).map_err(fail("listen"))?;
    Ok(socket)
}
